"""Execute one :class:`RunSpec`: data -> model -> [prune] -> masked training -> evaluation, through
the store, so a finished run is never recomputed and a killed run resumes from its last epoch.

A trained-weights ticket first makes sure the runs it builds on are finished (its dense trunk, with
the rewinding checkpoints it needs, and the previous IMP round; see :mod:`prunelab.lineage`),
then scores their trained weights, rewinds the kept weights and retrains per its time points."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from prunelab.data import DataBundle, load_dataset
from prunelab.errors import PrunelabError
from prunelab.lineage import parent_spec, rewind_epochs, trunk_spec
from prunelab.models import build_model
from prunelab.pruning.api import apply_weight_checks, prune, resolve_checks
from prunelab.pruning.checks import corrupt_training_data
from prunelab.pruning.mask import Mask
from prunelab.seeding import derive_seed, generator, seed_table
from prunelab.spec import RunSpec
from prunelab.store import RunStore, StoredSpec
from prunelab.training.config import TrainConfig
from prunelab.training.trainer import EpochCallback, EpochRecord, TrainState, train


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
    data = _cached_dataset(spec.data.name, options, None if data_dir is None else str(data_dir), str(device))
    if spec.training_corruption is not None:
        data = corrupt_training_data(data, spec.training_corruption, generator(spec.seed, "check"))
    return data


def retrain_schedule(spec: RunSpec) -> tuple[TrainConfig, int]:
    """The recipe a run trains with and its first epoch: the spec's own for dense runs and pruning
    at init; for tickets, per ``ticket.retrain``: the full schedule restarted, the schedule
    continued from the rewound epoch, or fine-tuning at a small constant lr."""
    ticket = spec.pruning.ticket if spec.pruning is not None else None
    if ticket is None or ticket.retrain == "restart":
        return spec.train, 0
    if ticket.retrain == "continue":
        assert isinstance(ticket.keep, int)
        if ticket.keep > spec.train.epochs:
            raise PrunelabError(
                f"ticket.keep={ticket.keep} rewinds past the end of training ({spec.train.epochs} epochs)"
            )
        return spec.train, ticket.keep
    finetune = spec.train.model_copy(
        update={
            "lr": ticket.finetune_lr,
            "schedule": "constant",
            "epochs": ticket.finetune_epochs_for(spec.train.epochs),
        }
    )
    return finetune, 0


def _ticket_mask(
    spec: RunSpec, parent: RunSpec, trunk: RunSpec, model: torch.nn.Module, data: DataBundle, store: RunStore
) -> Mask:
    """Score the parent's (or trunk's) trained weights, rewind ``model`` to the kept weights, apply
    the weight checks and the mask; returns the mask. ``model`` holds the initialisation on entry."""
    pruning = spec.pruning
    assert pruning is not None and pruning.ticket is not None
    ticket = pruning.ticket
    init_state = {k: v.clone() for k, v in model.state_dict().items()}

    def weights_at(point: int | str) -> dict[str, torch.Tensor]:
        if point == "end":
            return store.load_weights(parent)
        assert isinstance(point, int)
        return init_state if point == 0 else store.load_weights(trunk, point)

    model.load_state_dict(weights_at(ticket.score))
    within = None
    if parent.pruning is not None:
        within = Mask.load(store.run_dir(parent) / "mask.safetensors").to(data.device)
    checks = resolve_checks(list(pruning.checks))
    mask = prune(
        model,
        pruning.method,
        pruning.density,
        data=data,
        allocation=pruning.allocation,
        # Data checks acted on the trunk's training; weight checks act on the rewound weights below.
        check=[c.name for c in checks if c.stage in ("scores", "mask")],
        seed=spec.seed,
        prunable=pruning.prunable,
        options=pruning.options,
        within=within,
    )
    model.load_state_dict(weights_at(ticket.score if ticket.keep == "end" else ticket.keep))
    apply_weight_checks(model, mask, checks, spec.seed)
    mask.apply_(model)
    return mask


class _Stop(Exception):
    """Raised by the epoch callback to stop a run as if it were killed (tests)."""


def train_through_store(
    spec: StoredSpec,
    store: RunStore,
    model: torch.nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    mask: Mask | None,
    resume: TrainState | None,
    seed: int,
    start_epoch: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stop_after_epoch: int | None = None,
    save_epochs: Collection[int] = (),
    epoch_hooks: Sequence[EpochCallback] = (),
    after_backward: Sequence[Callable[[], None]] = (),
    after_step: Sequence[Callable[[float], None]] = (),
) -> dict[str, Any] | None:
    """Train ``model`` as run ``spec``: every epoch's metrics line and checkpoint go to the store
    (after ``epoch_hooks``, so a checkpoint holds what they did), the weights after each epoch in
    ``save_epochs`` are kept for rewinding, and the execution is recorded. Data order and
    augmentation come from the ``data_order`` stream of ``seed``.

    Returns the accuracy part of the result (fractions: final/best test, final train; epochs), or
    None when stopped by ``stop_after_epoch``.
    """
    store.truncate_metrics(spec, resume.epoch if resume is not None else 0)
    store.record_execution(spec, resume.epoch if resume is not None else start_epoch)

    def on_epoch(record: EpochRecord, state: Callable[[], TrainState]) -> None:
        store.append_metrics(spec, record.as_dict())
        snapshot = state()
        if record.epoch in save_epochs:
            store.save_rewind_point(spec, record.epoch, snapshot.model_state)
        store.save_checkpoint(spec, snapshot)
        if stop_after_epoch is not None and record.epoch >= stop_after_epoch:
            raise _Stop

    try:
        train(
            model,
            data,
            config,
            mask=mask,
            generator=generator(seed, "data_order"),
            resume=resume,
            callbacks=[*epoch_hooks, on_epoch],
            progress=progress,
            start_epoch=start_epoch,
            after_backward=after_backward,
            after_step=after_step,
        )
    except _Stop:
        return None
    history = store.read_metrics(spec)
    final = history[-1] if history else {}
    return {
        "epochs": len(history),
        "final_test_acc": final.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "final_train_acc": final.get("train_acc"),
    }


def execute_run(
    spec: RunSpec,
    store: RunStore,
    *,
    data_dir: str | Path | None = None,
    device: str | None = "cpu",
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop_after_epoch: int | None = None,
    save_epochs: Collection[int] = (),
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
        save_epochs: epochs after which to keep the weights for rewinding (dense trunks). A trunk
            that finished without one of them is trained again, deterministically, to add it.

    Returns:
        The contents of ``result.json``: final/best test accuracy (fractions), densities, the
        per-layer table, seeds, timings.
    """
    needed = {int(e) for e in save_epochs if int(e) > 0}
    if force:
        store.reset(spec)
    existing = store.result(spec)
    if existing is not None:
        if all(store.rewind_path(spec, e).is_file() for e in needed):
            return existing
        needed |= set(existing.get("rewind_epochs", []))
        store.reset(spec)
    began = time.perf_counter()
    dev = resolve_device(device)
    data = dataset_for(spec, data_dir, dev)

    parent = parent_spec(spec)
    trunk = trunk_spec(spec)
    if parent is not None and trunk is not None:
        execute_run(trunk, store, data_dir=data_dir, device=device, save_epochs=rewind_epochs(spec))
        if parent.run_hash() != trunk.run_hash():
            execute_run(parent, store, data_dir=data_dir, device=device)
            store.link(spec, parent, "previous round")
        store.link(spec, trunk, "trunk")
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
    if resume is not None and any(
        e <= resume.epoch and not store.rewind_path(spec, e).is_file() for e in needed
    ):
        resume = None  # a rewinding point the checkpoint is already past was never saved
    if spec.pruning is not None:
        if resume is not None and mask_path.is_file():
            mask = Mask.load(mask_path).to(dev)  # the checkpoint's weights already carry checks
        elif parent is not None and trunk is not None:
            resume = None
            t0 = time.perf_counter()
            mask = _ticket_mask(spec, parent, trunk, model, data, store)
            prune_seconds = time.perf_counter() - t0
            mask.save(mask_path, {"run": spec.run_name()})
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
    config, start_epoch = retrain_schedule(spec)
    accuracy = train_through_store(
        spec,
        store,
        model,
        data,
        config,
        mask=mask,
        resume=resume,
        seed=spec.seed,
        start_epoch=start_epoch,
        progress=progress,
        stop_after_epoch=stop_after_epoch,
        save_epochs=needed,
    )
    if accuracy is None:
        return {"status": "stopped", "epochs": stop_after_epoch}
    result: dict[str, Any] = {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        **accuracy,
        "density": mask.density() if mask is not None else 1.0,
        "model_density": mask.model_density(model) if mask is not None else 1.0,
        "per_layer": [
            {"name": row.name, "shape": list(row.shape), "kept": row.kept, "total": row.total}
            for row in (mask.per_layer() if mask is not None else [])
        ],
        "seeds": {"seed": spec.seed, **seed_table(spec.seed)},
        "rewind_epochs": sorted(needed),
        "parent": parent.run_name() if parent is not None else None,
        "trunk": trunk.run_name() if trunk is not None else None,
        "train": {
            "epochs": config.epochs,
            "start_epoch": start_epoch,
            "lr": config.lr,
            "schedule": config.schedule,
        },
        "prune_seconds": prune_seconds,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, model.state_dict())
    return result
