"""The executor of a :class:`~prunelab.spec.structured.StructuredRunSpec` (Liu et al. 2019's protocol):

- ``large``: train the large model (with the method's training hooks when its registry entry has
  them: slimming's L1 on BN scales, SSS's proximal block factors, SFP's soft filter zeroing);
- ``prune``: prune the trained large model, save the pruned model, count its parameters and FLOPs and
  time it against the large one (kept in the driver process so timings have the machine);
- ``finetune`` / ``scratch_e`` / ``scratch_b``: train the pruned architecture by that protocol
  (:mod:`prunelab.training.protocols`), from the pruned weights or a fresh initialisation.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunelab.data import DataBundle
from prunelab.models import build_model
from prunelab.pruning.mask import Mask
from prunelab.runs.executors import Executor, RunContext, register_executor
from prunelab.runs.training import check_model_fits, dataset_for, resolve_device, train_through_store
from prunelab.seeding import derive_seed, generator
from prunelab.spec.structured import SEARCH_STAGES, StructuredRunSpec, trains_large_model
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import protocol_config

#: Folder (inside a prune run's directory) holding the pruned model as written by ``save_pruned``
#: (architecture JSON, safetensors weights, the mask for weight-level pruning).
PRUNED_DIR = "pruned"

#: How latency is timed in prune runs (``compare_models``' arguments): short, as a study times
#: every pruned model; medians over interleaved repeats keep the full/pruned ratio fair on a busy CPU.
LATENCY_TIMING: dict[str, Any] = {"warmup": 3, "repeats": 15, "min_repeat_ms": 10.0}


def _load_weights(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model


def _records(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Latency records (dataclasses or pydantic models) as plain dicts for result.json."""
    out = []
    for record in records:
        if is_dataclass(record) and not isinstance(record, type):
            out.append(asdict(record))
        elif hasattr(record, "model_dump"):
            out.append(record.model_dump())
        else:
            out.append(dict(vars(record)))
    return out


def _latency(
    full: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], batch_sizes: Sequence[int]
) -> dict[str, Any]:
    """Measured forward latency of the large and the pruned model, timed alternately (same conditions):
    ``{device: {"full": [record], "pruned": [record]}}``, CPU always, CUDA when present."""
    from prunelab.evaluation.latency import compare_models

    out: dict[str, Any] = {}
    for name in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        rows = compare_models(
            full, pruned, input_shape, batch_sizes=batch_sizes, device=name, **LATENCY_TIMING
        )
        out[name] = {"full": _records([r.full for r in rows]), "pruned": _records([r.pruned for r in rows])}
    return out


def _count_params(model: nn.Module, mask: Any) -> int:
    """Parameters of ``model``; for a masked model only the kept (nonzero-allowed) ones."""
    from prunelab.evaluation.flops import count_params

    total = int(count_params(model))
    if mask is not None:  # pruned weights are zeros held in a dense tensor: not counted
        total -= int(mask.num_total - mask.num_kept)
    return total


def _identity(spec: StructuredRunSpec) -> dict[str, Any]:
    """The head of every structured run's ``result.json``."""
    return {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "stage": spec.stage,
        "method": spec.method,
    }


def _fresh_large(spec: StructuredRunSpec, data: DataBundle, dev: torch.device) -> nn.Module:
    return build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    ).to(dev)


def _trained_large(
    spec: StructuredRunSpec, store: RunStore, data: DataBundle, dev: torch.device
) -> nn.Module:
    """The large model ``spec`` prunes, with its trained weights (method extras such as SSS block
    factors installed first, so the state dict loads)."""
    large = _fresh_large(spec, data, dev)
    if trains_large_model(spec.method):
        from prunelab.pruning.structured import large_model_hooks

        assert spec.method is not None
        large_model_hooks(spec.method, large, spec.options)
    parent = spec.parent()
    assert parent is not None
    return _load_weights(large, store.run_dir(parent) / "model.safetensors")


def _run_prune(
    spec: StructuredRunSpec, store: RunStore, context: RunContext, latency_batch_sizes: Sequence[int] | None
) -> dict[str, Any]:
    from prunelab.evaluation.flops import count_flops
    from prunelab.pruning.structured import prune_structured, save_pruned
    from prunelab.training.trainer import evaluate

    assert spec.method is not None
    began, dev = time.perf_counter(), resolve_device(context.device)
    data = dataset_for(spec, context.data_dir, dev)
    run_dir = store.begin(spec)
    large = _trained_large(spec, store, data, dev)
    store.record_execution(spec, 0)
    large.eval()
    _, large_acc = evaluate(large, data)
    t0 = time.perf_counter()
    pruned = prune_structured(large, spec.method, data=data, seed=spec.seed, options=spec.options)
    prune_seconds = time.perf_counter() - t0
    model = pruned.model.to(dev)
    masked = pruned.mask is not None
    _, pruned_acc = evaluate(model, data)
    batch_sizes = list(latency_batch_sizes or (1, spec.train.batch_size))
    latency = _latency(large, model, data.input_shape, batch_sizes)
    # written to a temporary folder and renamed: a kill leaves no half-written pruned model behind
    tmp, final = run_dir / (PRUNED_DIR + ".tmp"), run_dir / PRUNED_DIR
    for stale in (tmp, final):
        shutil.rmtree(stale, ignore_errors=True)
    save_pruned(tmp, pruned)
    os.replace(tmp, final)
    result: dict[str, Any] = {
        **_identity(spec),
        "epochs": 0,
        "large_test_acc": large_acc,
        "final_test_acc": pruned_acc,  # the pruned model before any training
        "architecture": pruned.architecture,
        "kept": pruned.kept,
        "masked": masked,
        "mask_density": pruned.mask.density() if pruned.mask is not None else None,
        "params": {"full": _count_params(large, None), "pruned": _count_params(model, pruned.mask)},
        "flops": {
            "full": int(count_flops(large, data.input_shape)),
            "pruned": int(count_flops(model, data.input_shape, nonzero_only=masked)),
            "nonzero_only": masked,
        },
        "latency": latency,
        "latency_batch_sizes": batch_sizes,
        "prune_seconds": prune_seconds,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, model.state_dict())
    return result


@dataclass
class _Setup:
    """What a training stage trains: the model, its mask, its recipe and the hooks of its regime."""

    model: nn.Module
    config: TrainConfig
    mask: Mask | None = None
    after_backward: list[Callable[[], None]] = field(default_factory=list)
    after_step: list[Callable[[float], None]] = field(default_factory=list)
    epoch_end: list[Callable[[Any, Any], None]] = field(default_factory=list)
    #: what else the result records (a searched architecture and how it was found)
    extra: dict[str, Any] = field(default_factory=dict)


def _large_setup(spec: StructuredRunSpec, data: DataBundle, dev: torch.device) -> _Setup:
    setup = _Setup(_fresh_large(spec, data, dev), spec.train)
    if spec.method is not None:
        from prunelab.pruning.structured import large_model_hooks

        hooks = large_model_hooks(spec.method, setup.model, spec.options)
        setup.after_backward, setup.after_step = list(hooks.after_backward), list(hooks.after_step)
        setup.epoch_end = hooks.epoch_callbacks()
    return setup


def _protocol_setup(spec: StructuredRunSpec, store: RunStore, dev: torch.device) -> _Setup:
    """Fine-tune: the pruned weights. Scratch: the pruned architecture, freshly initialised; a
    masked model gets He init with each layer's effective fan-in (the paper's scratch re-init for
    weight-level pruning and SFP)."""
    from prunelab.pruning.checks import effective_fan_reinit
    from prunelab.pruning.structured import build_architecture, load_pruned

    parent = spec.parent()
    assert parent is not None
    prune_result = store.result(parent)
    assert prune_result is not None
    pruned = load_pruned(store.run_dir(parent) / PRUNED_DIR)
    mask = pruned.mask.to(dev) if pruned.mask is not None else None
    config = protocol_config(
        spec.stage,
        spec.train,
        flops_full=prune_result["flops"]["full"],
        flops_pruned=prune_result["flops"]["pruned"],
        finetune_epochs=spec.finetune_epochs,
        finetune_lr=spec.finetune_lr,
        max_ratio=spec.max_ratio,
    )
    if spec.stage == "finetune":
        return _Setup(pruned.model.to(dev), config, mask)
    model = build_architecture(pruned.architecture, derive_seed(spec.seed, "reinit")).to(dev)
    if mask is not None:
        with torch.no_grad():
            effective_fan_reinit(model, mask, generator(spec.seed, "reinit_fan"))  # its own stream
    return _Setup(model, config, mask)


def _search_setup(spec: StructuredRunSpec, store: RunStore, data: DataBundle, dev: torch.device) -> _Setup:
    """The uniform or guided architecture (:mod:`prunelab.runs.search`), freshly initialised, with
    the large recipe (Scratch-E); ``extra`` records how it was chosen."""
    from prunelab.pruning.structured import build_architecture
    from prunelab.runs import search

    fresh = _fresh_large(spec, data, torch.device("cpu"))
    found = [store.result(p) or {} for p in spec.parents()]
    if spec.stage == "uniform":
        target = float(found[0]["params"]["pruned"])
        pruned, ratio = search.uniform_matching(fresh, target)
        extra: dict[str, Any] = {"target_params": target, "uniform_ratio": ratio}
    else:
        pruned = search.guided(fresh, data.input_shape, [f.get("kept", {}) for f in found])
        extra = {
            "guide_seeds": list(spec.guide_seeds),
            "kept_per_conv": {k: len(v) for k, v in pruned.kept.items()},
        }
    model = build_architecture(pruned.architecture, derive_seed(spec.seed, "reinit")).to(dev)
    setup = _Setup(model, spec.train)
    setup.extra = {**extra, "architecture": pruned.architecture}
    return setup


def _cost(setup: _Setup, data: DataBundle) -> dict[str, Any]:
    """Parameters and FLOPs of what a stage trained (nonzero-aware for masked models)."""
    from prunelab.evaluation.flops import count_flops

    masked = setup.mask is not None
    return {
        "params": _count_params(setup.model, setup.mask),
        "flops": int(count_flops(setup.model, data.input_shape, nonzero_only=masked)),
    }


def _run_training_stage(spec: StructuredRunSpec, store: RunStore, context: RunContext) -> dict[str, Any]:
    began, dev = time.perf_counter(), resolve_device(context.device)
    data = dataset_for(spec, context.data_dir, dev)
    store.begin(spec)
    if spec.stage == "large":
        setup = _large_setup(spec, data, dev)
    elif spec.stage in SEARCH_STAGES:
        setup = _search_setup(spec, store, data, dev)
    else:
        setup = _protocol_setup(spec, store, dev)
    accuracy = train_through_store(
        spec,
        store,
        setup.model,
        data,
        setup.config,
        mask=setup.mask,
        resume=store.load_checkpoint(spec),
        seed=spec.seed,
        progress=context.progress,
        stop_after_epoch=context.stop_after_epoch,
        # soft pruning before the checkpoint, so a checkpoint holds the weights after it
        epoch_hooks=setup.epoch_end,
        after_backward=setup.after_backward,
        after_step=setup.after_step,
    )
    if accuracy is None:
        return {"status": "stopped", "epochs": context.stop_after_epoch}
    result: dict[str, Any] = {
        **_identity(spec),
        **accuracy,
        "train": setup.config.model_dump(mode="json"),
        "density": setup.mask.density() if setup.mask is not None else 1.0,
        **_cost(setup, data),
        **setup.extra,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, setup.model.state_dict())
    return result


def run_structured(
    spec: StructuredRunSpec,
    store: RunStore,
    context: RunContext,
    *,
    latency_batch_sizes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Execute ``spec`` (its parent is finished) and return its result record: ``final_test_acc``
    (fraction), ``epochs``, the derived ``train`` recipe; prune runs add ``params``, ``flops`` (full
    and pruned) and ``latency`` (timed at ``latency_batch_sizes``, default 1 and the batch size)."""
    if spec.stage == "prune":
        return _run_prune(spec, store, context, latency_batch_sizes)
    return _run_training_stage(spec, store, context)


def validate_structured(spec: StructuredRunSpec, context: RunContext) -> None:
    """Before anything runs: the large model fits the data, the method's training hooks accept it
    (slimming needs BatchNorm), and a data-free method can prune it (tried on a fresh model)."""
    from prunelab.errors import PrunelabError
    from prunelab.pruning.structured import STRUCTURED_METHODS, large_model_hooks, prune_structured

    data = check_model_fits(spec, context.data_dir)
    if spec.method is None:
        return
    entry = STRUCTURED_METHODS.get(spec.method)
    key = spec.model_copy(update={"stage": "prune", "seed": 0}).canonical()
    if key in _PRUNABLE:
        return
    model = build_model(spec.model.name, data.input_shape, data.num_classes, seed=0, **spec.model.options)
    if entry.trains_large_model:
        large_model_hooks(spec.method, model, spec.options)
    if not entry.needs_data:
        try:
            prune_structured(model, spec.method, seed=0, options=spec.options)
        except PrunelabError:
            raise
        except Exception as exc:
            raise PrunelabError(
                f"structured method {spec.method!r} cannot prune model {spec.model.name!r}: {exc}"
            ) from None
    _PRUNABLE[key] = None


_PRUNABLE: dict[str, None] = {}


def _parents(spec: StructuredRunSpec) -> list[tuple[Any, str]]:
    if spec.stage in SEARCH_STAGES:
        return [(parent, "found architecture") for parent in spec.parents()]
    parent = spec.parent()
    if parent is None:
        return []
    return [(parent, "large model" if spec.stage == "prune" else "pruned model")]


def trained_structured_model(
    spec: StructuredRunSpec, store: RunStore, result: dict[str, Any], data: DataBundle, device: torch.device
) -> nn.Module:
    """A finished structured run's model: the large model, the pruned model of a prune run, or the
    pruned architecture (from its prune run, or the one a search arm recorded) with the run's final
    weights."""
    from prunelab.pruning.structured import build_architecture, load_pruned

    if spec.stage == "prune":
        return load_pruned(store.run_dir(spec) / PRUNED_DIR).model.to(device)
    if spec.stage == "large":
        model = _fresh_large(spec, data, device)
    elif spec.stage in SEARCH_STAGES:
        model = build_architecture(result["architecture"], 0)
    else:
        parent = spec.parent()
        assert parent is not None
        model = build_architecture(load_pruned(store.run_dir(parent) / PRUNED_DIR).architecture, 0)
    model.load_state_dict(store.load_weights(spec))
    return model.to(device)


STRUCTURED = register_executor(
    Executor(
        "structured",
        StructuredRunSpec,
        run=run_structured,
        parents=_parents,
        inline=lambda spec: spec.stage == "prune",
        validate=validate_structured,
        trained_model=trained_structured_model,
    )
)
