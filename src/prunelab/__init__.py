"""prunelab: honest, fast neural-network pruning research.

The public API::

    import prunelab
    data = prunelab.load_dataset("mnist1d")
    model = prunelab.build_model("mlp", data.input_shape, data.num_classes, seed=0)
    mask = prunelab.prune(model, "snip", density=0.1, data=data)      # density = kept fraction
    result = prunelab.train(model, data, prunelab.TrainConfig(epochs=20), mask=mask)

Density is always the kept fraction of the prunable weights; sparsity = 1 - density.
"""

from prunelab.data import DataBundle, load_dataset, register_dataset
from prunelab.errors import PrunelabError
from prunelab.models import build_model, register_model
from prunelab.pruning import (
    ALLOCATIONS,
    CHECKS,
    METHODS,
    Mask,
    PrunableSet,
    PruningWarning,
    ScoreContext,
    allocate,
    prune,
    register_allocation,
    register_method,
)
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec
from prunelab.training import TrainConfig, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "ALLOCATIONS",
    "CHECKS",
    "METHODS",
    "DataBundle",
    "DataSpec",
    "Mask",
    "ModelSpec",
    "PrunableSet",
    "PrunelabError",
    "PruningSpec",
    "PruningWarning",
    "RunSpec",
    "ScoreContext",
    "TrainConfig",
    "allocate",
    "build_model",
    "evaluate",
    "execute_run",
    "load_dataset",
    "prune",
    "register_allocation",
    "register_dataset",
    "register_method",
    "register_model",
    "run_study",
    "rebuild_report",
    "runs_frame",
    "train",
]


def __getattr__(name: str) -> object:
    # Heavier entry points (store, runners, report with matplotlib, pandas) load on first use.
    if name == "execute_run":
        from prunelab.runs import execute_run

        return execute_run
    if name in ("run_study", "rebuild_report"):
        import prunelab.studies

        return getattr(prunelab.studies, name)
    if name == "runs_frame":
        from prunelab.browse import runs_frame

        return runs_frame
    raise AttributeError(f"module 'prunelab' has no attribute {name!r}")
