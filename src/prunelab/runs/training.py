"""The executor of a :class:`~prunelab.spec.RunSpec`: data -> model -> [prune] -> masked training ->
evaluation, through the store, so a finished run is never recomputed and a killed run resumes from
its last epoch.

A trained-weights ticket builds on other runs (its dense trunk, with the rewinding checkpoints it
needs, and the previous IMP round; see :mod:`prunelab.runs.lineage`), which :func:`prunelab.runs.execute`
finishes first; this executor then scores their trained weights, rewinds the kept weights and
retrains per the ticket's time points.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from prunelab.data import DataBundle, load_dataset
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.pruning.api import apply_weight_checks, prune, resolve_checks
from prunelab.pruning.checks import corrupt_training_data
from prunelab.pruning.mask import Mask
from prunelab.runs.executors import Executor, RunContext, register_executor, spec_from_json
from prunelab.runs.lineage import parent_spec, trunk_rewind_epochs, trunk_spec
from prunelab.seeding import derive_seed, generator, seed_table
from prunelab.spec import RunSpec
from prunelab.store import RunStore, StoredSpec
from prunelab.training import distributed
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import finetune_config
from prunelab.training.trainer import EpochCallback, EpochRecord, TrainState, evaluate, train


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
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise PrunelabError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if resolved.type not in ("cpu", "cuda"):
        backend = getattr(torch.backends, resolved.type, None)
        if backend is None or not backend.is_available():
            raise PrunelabError(
                f"device {device!r} is not available here; valid choices: auto, cpu, cuda, cuda:N"
            )
    return resolved


@functools.lru_cache(maxsize=4)
def _cached_dataset(
    name: str, options: tuple[tuple[str, Any], ...], data_dir: str | None, device: str
) -> DataBundle:
    return load_dataset(name, data_dir=data_dir, device=device, **dict(options))


def dataset_for(spec: Any, data_dir: str | Path | None, device: torch.device) -> DataBundle:
    """The dataset of ``spec.data``, loaded once per process and kept on ``device``; a run with a
    ``training_corruption`` gets its training split corrupted with its ``check`` stream."""
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.data.options.items()))
    data = _cached_dataset(spec.data.name, options, None if data_dir is None else str(data_dir), str(device))
    corruption = getattr(spec, "training_corruption", None)
    if corruption is not None:
        data = corrupt_training_data(data, corruption, generator(spec.seed, "check"))
    return data


_FITTING: dict[str, None] = {}


def check_model_fits(spec: Any, data_dir: str | Path | None) -> DataBundle:
    """Load ``spec.data`` (on CPU, cached) and check, once per (data, model) pair and process, that
    ``spec.model`` builds with its options, accepts the data and outputs one logit per class (a
    forward pass of two test examples). Returns the data.

    Raises:
        PrunelabError: a bad model option, or a model that does not fit the data (one line).
    """
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.data.options.items()))
    data = _cached_dataset(spec.data.name, options, None if data_dir is None else str(data_dir), "cpu")
    key = json.dumps([spec.data.model_dump(mode="json"), spec.model.model_dump(mode="json")], sort_keys=True)
    if key in _FITTING:
        return data
    model = build_model(spec.model.name, data.input_shape, data.num_classes, seed=0, **spec.model.options)
    try:
        with torch.no_grad():
            out = model.eval()(next(iter(data.test_batches(2)))[0].cpu())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunelabError(
            f"model {spec.model.name!r} does not fit dataset {spec.data.name!r} "
            f"(examples of shape {tuple(data.input_shape)}): {first}"
        ) from None
    if tuple(out.shape) != (2, data.num_classes):
        raise PrunelabError(
            f"model {spec.model.name!r} outputs shape {tuple(out.shape[1:])} per example on dataset "
            f"{spec.data.name!r}, which has {data.num_classes} classes"
        )
    _FITTING[key] = None
    return data


def validate_training(spec: RunSpec, context: RunContext) -> None:
    """Before anything runs: the model builds with its options and fits the data; a run over
    several processes has a device that can (gloo on CPU, nccl with one GPU per process)."""
    check_model_fits(spec, context.data_dir)
    if spec.train.nproc > 1 and distributed.torchrun_world_size() is None:
        distributed.check_launch(spec.train.nproc, resolve_device(context.device))


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
    return finetune_config(spec.train, epochs=ticket.finetune_epochs, lr=ticket.finetune_lr), 0


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
        allow_trained=True,  # the model holds the parent's trained weights here
    )
    model.load_state_dict(weights_at(ticket.score if ticket.keep == "end" else ticket.keep))
    apply_weight_checks(model, mask, checks, spec.seed)
    mask.apply_(model)
    return mask


def _mask_at_init(spec: RunSpec, model: torch.nn.Module, data: DataBundle) -> Mask:
    """Prune ``model`` at initialisation per ``spec.pruning`` (checks included), in place."""
    assert spec.pruning is not None
    return prune(
        model,
        spec.pruning.method,
        spec.pruning.density,
        data=data,
        allocation=spec.pruning.allocation,
        check=list(spec.pruning.checks),
        seed=spec.seed,
        prunable=spec.pruning.prunable,
        options=spec.pruning.options,
        sampling=spec.pruning.sampling,
    )


class _Stop(Exception):
    """Raised by the epoch callback to stop a run as if it were killed (tests)."""


def train_through_store(
    spec: StoredSpec,
    store: RunStore | None,
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
    shard: distributed.Shard | None = None,
) -> dict[str, Any] | None:
    """Train ``model`` as run ``spec``: every epoch's metrics line and checkpoint go to the store
    (after ``epoch_hooks``, so a checkpoint holds what they did), the weights after each epoch in
    ``save_epochs`` are kept for rewinding, and the execution is recorded. Data order and
    augmentation come from the ``data_order`` stream of ``seed``.

    ``shard``: this process's rank in a run over ``config.nproc`` processes; only rank 0 writes
    (the other ranks pass ``store=None``), every rank stops at ``stop_after_epoch``.

    Returns the accuracy part of the result (fractions: final/best test, final train; epochs), or
    None when stopped by ``stop_after_epoch``; ``{}`` on a rank other than 0.
    """
    writer = store if shard is None or shard.leads else None
    if (shard is None or shard.leads) and writer is None:
        raise PrunelabError(f"run {spec.run_name()}: the writing rank needs the store")
    best = (
        begin_epochs(writer, spec, config, resume, start_epoch)
        if writer is not None
        else BestOnValidation(False, [])
    )

    def stop(record: EpochRecord, state: Callable[[], TrainState]) -> None:
        # On every rank (after rank 0 wrote the epoch), so no rank waits for the others' next step.
        if stop_after_epoch is not None and record.epoch >= stop_after_epoch:
            raise _Stop

    writing = [epoch_writer(writer, spec, save_epochs, best)] if writer is not None else []
    try:
        train(
            model,
            data,
            config,
            mask=mask,
            generator=generator(seed, "data_order"),
            resume=resume,
            callbacks=[*epoch_hooks, *writing, stop],
            progress=progress,
            start_epoch=start_epoch,
            after_backward=after_backward,
            after_step=after_step,
            shard=shard,
        )
    except _Stop:
        return None
    if writer is None:
        return {}
    return stored_accuracy(writer, spec, config, best, model, data)


def begin_epochs(
    store: RunStore, spec: StoredSpec, config: TrainConfig, resume: TrainState | None, start_epoch: int
) -> BestOnValidation:
    """Before a run's first epoch of this execution: drop metrics lines past the checkpoint,
    record the execution, and return the best-on-validation tracker primed with the kept lines."""
    history = store.truncate_metrics(spec, resume.epoch if resume is not None else 0)
    store.record_execution(spec, resume.epoch if resume is not None else start_epoch)
    return BestOnValidation(config.checkpoint == "best_validation", history)


def epoch_writer(
    store: RunStore, spec: StoredSpec, save_epochs: Collection[int], best: BestOnValidation
) -> EpochCallback:
    """The epoch callback that writes a run: its metrics line, the rewinding point of an epoch in
    ``save_epochs``, the best-on-validation weights, then the checkpoint (last, so a checkpoint
    never runs ahead of what it implies was written)."""

    def on_epoch(record: EpochRecord, state: Callable[[], TrainState]) -> None:
        store.append_metrics(spec, record.as_dict())
        snapshot = state()
        if record.epoch in save_epochs:
            store.save_rewind_point(spec, record.epoch, snapshot.model_state)
        best.update(store, spec, record, snapshot.model_state, save_epochs)
        store.save_checkpoint(spec, snapshot)

    return on_epoch


def stored_accuracy(
    store: RunStore,
    spec: StoredSpec,
    config: TrainConfig,
    best: BestOnValidation,
    model: torch.nn.Module,
    data: DataBundle,
) -> dict[str, Any]:
    """The accuracy part of a finished run's result, read back from its metrics file (fractions:
    final/best test, final train; epochs; the reported checkpoint's accuracy)."""
    history = store.read_metrics(spec)
    final = history[-1] if history else {}
    accuracy = {
        "epochs": len(history),
        "final_test_acc": final.get("test_acc"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "final_train_acc": final.get("train_acc"),
        "checkpoint": config.checkpoint,
        "reported_acc": final.get("test_acc"),
    }
    if best.enabled:
        accuracy.update(best.report(store, spec, model, data))
    return accuracy


class BestOnValidation:
    """Tracks the epoch with the best accuracy on the validation hold-out (the data's evaluation
    split; ties keep the earlier epoch) and keeps its weights as a rewinding point, so a resumed
    run still has them; at the end, that checkpoint is evaluated once on the held-out test split."""

    def __init__(self, enabled: bool, history: Sequence[Mapping[str, Any]]) -> None:
        self.enabled = enabled
        self.epoch, self.acc = 0, -1.0
        for row in history:
            self._consider(int(row["epoch"]), float(row["test_acc"]))

    def _consider(self, epoch: int, acc: float) -> bool:
        if acc > self.acc:
            self.epoch, self.acc = epoch, acc
            return True
        return False

    def update(
        self,
        store: RunStore,
        spec: StoredSpec,
        record: EpochRecord,
        weights: Mapping[str, torch.Tensor],
        keep: Collection[int],
    ) -> None:
        previous = self.epoch
        if self.enabled and self._consider(record.epoch, record.test_acc):
            store.save_rewind_point(spec, record.epoch, weights)
            if previous > 0 and previous not in keep:
                store.rewind_path(spec, previous).unlink(missing_ok=True)

    def report(
        self, store: RunStore, spec: StoredSpec, model: torch.nn.Module, data: DataBundle
    ) -> dict[str, Any]:
        """The selected epoch, its validation accuracy and its test accuracy (evaluated here, once)."""
        if self.epoch == 0:
            raise PrunelabError(f"run {spec.run_name()} trained no epoch to select a checkpoint from")
        final_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(store.load_weights(spec, self.epoch))
        _, test_acc = evaluate(model, data, split="heldout")
        model.load_state_dict(final_state)
        return {
            "selected_epoch": self.epoch,
            "valid_acc": self.acc,
            "test_acc": test_acc,
            "reported_acc": test_acc,
        }


def prepare_mask_and_resume(
    spec: RunSpec, store: RunStore, model: torch.nn.Module, data: DataBundle, needed: set[int]
) -> tuple[Mask | None, TrainState | None, float]:
    """The run's mask (loaded on resume, else computed), the checkpoint to resume from (None: start
    over), and the seconds spent pruning."""
    resume = store.load_checkpoint(spec)
    if resume is not None and any(
        e <= resume.epoch and not store.rewind_path(spec, e).is_file() for e in needed
    ):
        resume = None  # a rewinding point the checkpoint is already past was never saved
    if spec.pruning is None:
        return None, resume, 0.0
    mask_path = store.run_dir(spec) / "mask.safetensors"
    if resume is not None and mask_path.is_file():
        return Mask.load(mask_path).to(data.device), resume, 0.0  # the checkpoint carries the checks
    began = time.perf_counter()
    parent, trunk = parent_spec(spec), trunk_spec(spec)
    if parent is not None and trunk is not None:
        mask = _ticket_mask(spec, parent, trunk, model, data, store)
    else:
        mask = _mask_at_init(spec, model, data)
    mask.save(mask_path, {"run": spec.run_name()})
    return mask, None, time.perf_counter() - began


def run_result(
    spec: RunSpec,
    mask: Mask | None,
    model: torch.nn.Module,
    config: TrainConfig,
    start_epoch: int,
    accuracy: Mapping[str, Any],
    *,
    needed: Collection[int],
    prune_seconds: float,
    seconds: float,
    device: str,
) -> dict[str, Any]:
    """A finished run's ``result.json``: its identity, densities, per-layer table, size, seeds and
    recipe, then ``accuracy`` (:func:`stored_accuracy`), the rewinding epochs kept, and timing."""
    parent, trunk = parent_spec(spec), trunk_spec(spec)
    return {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "density": mask.density() if mask is not None else 1.0,
        "model_density": mask.model_density(model) if mask is not None else 1.0,
        "per_layer": [
            {"name": row.name, "shape": list(row.shape), "kept": row.kept, "total": row.total}
            for row in (mask.per_layer() if mask is not None else [])
        ],
        "size": model_size(model),
        "seeds": {"seed": spec.seed, **seed_table(spec.seed)},
        "parent": parent.run_name() if parent is not None else None,
        "trunk": trunk.run_name() if trunk is not None else None,
        "train": {
            "epochs": config.epochs,
            "start_epoch": start_epoch,
            "lr": config.lr,
            "schedule": config.schedule,
        },
        **accuracy,
        "rewind_epochs": sorted(needed),
        "prune_seconds": prune_seconds,
        "seconds": seconds,
        "device": device,
    }


def epochs_to_keep(spec: RunSpec, store: RunStore | None, save_epochs: Collection[int]) -> set[int]:
    """The epochs whose weights this execution keeps for rewinding: ``save_epochs`` and, for a run
    finished without one of them (it is then reset to train again), those it kept before."""
    needed = {int(e) for e in save_epochs if int(e) > 0}
    if store is not None:
        existing = store.result(spec)
        if existing is not None:
            needed |= set(existing.get("rewind_epochs", []))
            store.reset(spec)
    return needed


def initial_model(spec: RunSpec, data: DataBundle, device: torch.device) -> torch.nn.Module:
    """The run's network at initialisation (its ``init`` seed stream), on ``device``."""
    return build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    ).to(device)


def model_size(model: torch.nn.Module) -> dict[str, int]:
    """Parameters and FLOPs of one forward pass (one example), all and nonzero (pruned weights are
    exactly zero); the FLOPs follow :func:`prunelab.evaluation.count_flops`'s Rethinking convention."""
    from prunelab.evaluation.flops import count_flops, count_params

    build = getattr(model, "prunelab_build", None)
    out = {"params": count_params(model), "nonzero_params": count_params(model, nonzero_only=True)}
    if isinstance(build, dict) and "input_shape" in build:
        shape = tuple(build["input_shape"])
        out["flops"] = count_flops(model, shape)
        out["nonzero_flops"] = count_flops(model, shape, nonzero_only=True)
    return out


def run_training(
    spec: RunSpec, store: RunStore, context: RunContext, *, save_epochs: Collection[int] = ()
) -> dict[str, Any]:
    """Execute ``spec`` (its parents are finished) and return its result record: final/best test
    accuracy (fractions), densities, the per-layer table, seeds, timings.

    ``save_epochs``: epochs after which to keep the weights for rewinding (dense trunks). A trunk
    that finished without one of them is trained again, deterministically, to add it.

    With ``spec.train.nproc > 1`` the run trains in that many processes (started here, or the ranks
    of the torchrun world this process leads; :mod:`prunelab.training.distributed`), rank 0 writing.
    """
    if spec.train.nproc == 1:
        return _train_spec(spec, store, context, save_epochs, None)
    args = (
        type(spec).kind,
        spec.model_dump_json(),
        str(store.root),
        None if context.data_dir is None else str(context.data_dir),
        context.device,
        context.stop_after_epoch,
        context.threads,
        sorted({int(e) for e in save_epochs}),
    )
    if distributed.torchrun_world_size() is not None:
        return distributed.lead_job(_train_rank, args, context.progress)
    return distributed.launch(
        _train_rank,
        spec.train.nproc,
        args,
        device=resolve_device(context.device),
        threads=context.threads,
        progress=context.progress,
    )


def _train_rank(
    shard: distributed.Shard,
    kind: str,
    spec_json: str,
    root: str,
    data_dir: str | None,
    device: str,
    stop_after_epoch: int | None,
    threads: int,
    save_epochs: list[int],
) -> dict[str, Any]:
    """One rank of a run over several processes (its process group is up); rank 0 opens the store."""
    torch.set_num_threads(threads)
    spec = spec_from_json(kind, spec_json)
    context = RunContext(data_dir, device, shard.report, stop_after_epoch, threads)
    return _train_spec(spec, RunStore(root) if shard.leads else None, context, save_epochs, shard)


def _train_spec(
    spec: RunSpec,
    store: RunStore | None,
    context: RunContext,
    save_epochs: Collection[int],
    shard: distributed.Shard | None,
) -> dict[str, Any]:
    """:func:`run_training` in this process: alone (``shard`` None) or as one rank, where rank 0
    (holding the store) prepares the mask and the resume state, shares them, and alone writes."""
    leads = shard is None or shard.leads
    if leads and store is None:
        raise PrunelabError(f"run {spec.run_name()}: the writing rank needs the store")
    needed = epochs_to_keep(spec, store if leads else None, save_epochs)
    began = time.perf_counter()
    dev = resolve_device(context.device) if shard is None else shard.device
    data = dataset_for(spec, context.data_dir, dev)
    model = initial_model(spec, data, dev)
    mask: Mask | None = None
    resume: TrainState | None = None
    prune_seconds = 0.0
    if store is not None and leads:
        store.begin(spec)
        mask, resume, prune_seconds = prepare_mask_and_resume(spec, store, model, data, needed)
    digests: list[str] = []
    if shard is not None:
        # Rank 0's mask and checkpoint on every rank (the weights follow when DDP wraps the model);
        # then every rank hashes the mask it will train with, and all refuse on a mismatch.
        mask, resume = shard.share((None if mask is None else mask.to("cpu"), resume))
        mask = None if mask is None else mask.to(dev)
        digests = distributed.agree_on_mask(shard, mask)
    config, start_epoch = retrain_schedule(spec)
    accuracy = train_through_store(
        spec,
        store if leads else None,
        model,
        data,
        config,
        mask=mask,
        resume=resume,
        seed=spec.seed,
        start_epoch=start_epoch,
        progress=context.progress,
        stop_after_epoch=context.stop_after_epoch,
        save_epochs=needed,
        shard=shard,
    )
    if accuracy is None:
        return {"status": "stopped", "epochs": context.stop_after_epoch}
    if store is None or not leads:
        return {"status": "done", "rank": shard.rank if shard is not None else 0}
    result = run_result(
        spec,
        mask,
        model,
        config,
        start_epoch,
        accuracy,
        needed=needed,
        prune_seconds=prune_seconds,
        seconds=time.perf_counter() - began,
        device=str(dev),
    )
    if shard is not None:
        result["distributed"] = {"nproc": shard.world, "backend": shard.backend, "mask_sha256": digests}
    store.finish(spec, result, model.state_dict())
    return result


def _parents(spec: RunSpec) -> list[tuple[Any, str]]:
    parent, trunk = parent_spec(spec), trunk_spec(spec)
    if parent is None or trunk is None:
        return []
    if parent.run_hash() == trunk.run_hash():
        return [(trunk, "trunk")]
    return [(trunk, "trunk"), (parent, "previous round")]


def _plan(specs: Sequence[RunSpec]) -> dict[str, dict[str, Any]]:
    """Each trunk keeps the weights of every epoch some ticket among ``specs`` rewinds to."""
    return {key: {"save_epochs": sorted(epochs)} for key, epochs in trunk_rewind_epochs(specs).items()}


def _finished(spec: RunSpec, store: RunStore, options: Mapping[str, Any]) -> dict[str, Any] | None:
    result = store.verified_result(spec)
    wanted = [int(e) for e in options.get("save_epochs", ()) if int(e) > 0]
    if result is None or not all(store.rewind_path(spec, e).is_file() for e in wanted):
        return None
    return result


def trained_training_model(
    spec: RunSpec, store: RunStore, result: Mapping[str, Any], data: DataBundle, device: torch.device
) -> torch.nn.Module:
    """The finished run's model with its reported weights (the best-validation epoch's, or the final)."""
    from prunelab.runs.results import reported_weights

    model = build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    ).to(device)
    model.load_state_dict(reported_weights(store, spec, result))
    return model


TRAINING = register_executor(
    Executor(
        "training",
        RunSpec,
        run=run_training,
        parents=_parents,
        plan=_plan,
        finished=_finished,
        validate=validate_training,
        trained_model=trained_training_model,
    )
)


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
    threads: int = 1,
) -> dict[str, Any]:
    """Run ``spec`` (its trunk and earlier IMP rounds first) to completion, resume it, or read it
    back; returns the contents of ``result.json``. The same as :func:`prunelab.runs.execute` with a
    :class:`RunContext`; ``save_epochs`` adds rewinding epochs to keep (dense trunks)."""
    from prunelab.runs.executors import execute

    context = RunContext(data_dir, device or "cpu", progress, stop_after_epoch, threads)
    options = {"save_epochs": sorted({int(e) for e in save_epochs})} if save_epochs else None
    return execute(spec, store, context, force=force, options=options)


__all__ = ["dataset_for", "execute_run", "resolve_device", "retrain_schedule", "run_training"]
