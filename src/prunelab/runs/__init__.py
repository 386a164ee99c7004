"""One run pipeline: every unit of work is a typed spec run by the executor registered for its kind.

``execute(spec, store)`` runs any spec (its unfinished ancestors first); ``waves(specs)`` orders many
for the runners (:mod:`prunelab.runners`). Built-in kinds: ``training`` (:class:`~prunelab.spec.RunSpec`:
dense runs, pruning at init, tickets and IMP rounds) and ``structured``
(:class:`~prunelab.spec.structured.StructuredRunSpec`: large model, structured prune, fine-tune and
scratch runs) and ``evaluation`` (:class:`~prunelab.spec.evaluation.EvaluationSpec`: calibration,
OOD, adversarial and shift metrics of a finished run). A new kind registers an :class:`Executor` and plugs into the same runners, store,
resume and lineage code.
"""

from prunelab.runs.evaluation import run_evaluation
from prunelab.runs.executors import (
    EXECUTORS,
    Executor,
    RunContext,
    ancestors,
    execute,
    executor_for,
    plan_options,
    register_executor,
    spec_from_json,
    torch_threads,
    validate_all,
    waves,
)
from prunelab.runs.structured import PRUNED_DIR, run_structured
from prunelab.runs.training import dataset_for, execute_run, resolve_device, retrain_schedule, run_training

__all__ = [
    "EXECUTORS",
    "PRUNED_DIR",
    "Executor",
    "RunContext",
    "ancestors",
    "dataset_for",
    "execute",
    "execute_run",
    "executor_for",
    "plan_options",
    "register_executor",
    "resolve_device",
    "retrain_schedule",
    "run_evaluation",
    "run_structured",
    "run_training",
    "spec_from_json",
    "torch_threads",
    "validate_all",
    "waves",
]
