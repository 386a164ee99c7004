"""Execute one :class:`RunSpec`: data -> model -> [prune] -> masked training -> evaluation, through
the store, so a finished run is never recomputed and a killed run resumes from its last epoch."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from prunelab.data import DataBundle, load_dataset
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.pruning.api import prune
from prunelab.pruning.mask import Mask
from prunelab.seeding import derive_seed, generator, seed_table
from prunelab.spec import RunSpec
from prunelab.store import RunStore
from prunelab.training.trainer import EpochRecord, TrainState, train


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/None -> CUDA when present, else CPU; otherwise the named device (validated)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise PrunelabError(f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PrunelabError(f"device {device!r} requested but CUDA is not available; use cpu")
    return resolved


@functools.lru_cache(maxsize=4)
def _cached_dataset(
    name: str, options: tuple[tuple[str, Any], ...], data_dir: str | None, device: str
) -> DataBundle:
    return load_dataset(name, data_dir=data_dir, device=device, **dict(options))


def dataset_for(spec: RunSpec, data_dir: str | Path | None, device: torch.device) -> DataBundle:
    """The spec's dataset, loaded once per process and kept on ``device``."""
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.data.options.items()))
    return _cached_dataset(spec.data.name, options, None if data_dir is None else str(data_dir), str(device))


def execute_run(
    spec: RunSpec,
    store: RunStore,
    *,
    data_dir: str | Path | None = None,
    device: str | None = "cpu",
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Run ``spec`` to completion (or resume it) and return its result record.

    Args:
        spec: what to run.
        store: where runs live.
        data_dir: dataset cache directory (default: ``prunelab.data.default_data_dir()``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        force: recompute even if the run finished before.
        progress: ``progress(epochs_done, epochs_total)`` after each epoch.
        stop_after_epoch: stop (as if killed) once this many epochs are done; for tests.

    Returns:
        The contents of ``result.json``: final/best test accuracy (fractions), densities, the
        per-layer table, seeds, timings.
    """
    if force:
        store.reset(spec)
    existing = store.result(spec)
    if existing is not None:
        return existing
    began = time.perf_counter()
    dev = resolve_device(device)
    data = dataset_for(spec, data_dir, dev)
    run_dir = store.begin(spec)

    model = build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    ).to(dev)

    mask: Mask | None = None
    resume = store.load_checkpoint(spec)
    mask_path = run_dir / "mask.safetensors"
    prune_seconds = 0.0
    if spec.pruning is not None:
        if resume is not None and mask_path.is_file():
            mask = Mask.load(mask_path).to(dev)  # the checkpoint's weights already carry checks
        else:
            resume = None
            t0 = time.perf_counter()
            mask = prune(
                model,
                spec.pruning.method,
                spec.pruning.density,
                data=data,
                allocation=spec.pruning.allocation,
                check=list(spec.pruning.checks),
                seed=spec.seed,
                prunable=spec.pruning.prunable,
                options=spec.pruning.options,
            )
            prune_seconds = time.perf_counter() - t0
            mask.save(mask_path, {"run": spec.run_name()})
    if resume is not None:
        store.truncate_metrics(spec, resume.epoch)
    else:
        store.truncate_metrics(spec, 0)

    class _Stop(Exception):
        pass

    def on_epoch(record: EpochRecord, state: Callable[[], TrainState]) -> None:
        store.append_metrics(spec, record.as_dict())
        store.save_checkpoint(spec, state())
        if stop_after_epoch is not None and record.epoch >= stop_after_epoch:
            raise _Stop

    try:
        train(
            model,
            data,
            spec.train,
            mask=mask,
            generator=generator(spec.seed, "data_order"),
            resume=resume,
            callbacks=[on_epoch],
            progress=progress,
        )
    except _Stop:
        return {"status": "stopped", "epochs": stop_after_epoch}

    history = store.read_metrics(spec)
    final = history[-1] if history else {}
    result: dict[str, Any] = {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "epochs": len(history),
        "final_test_acc": final.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "final_train_acc": final.get("train_acc"),
        "density": mask.density() if mask is not None else 1.0,
        "model_density": mask.model_density(model) if mask is not None else 1.0,
        "per_layer": [
            {"name": row.name, "shape": list(row.shape), "kept": row.kept, "total": row.total}
            for row in (mask.per_layer() if mask is not None else [])
        ],
        "seeds": {"seed": spec.seed, **seed_table(spec.seed)},
        "prune_seconds": prune_seconds,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, model.state_dict())
    return result
