"""Packed execution of training runs: which runs of a wave can train together, preparing each
through the training executor's own pieces (data, model, mask at init or a ticket's mask from its
parents, resume from its checkpoint), training them as one packed model
(:mod:`prunelab.training.packed`), and writing each member to the store exactly as its solo run
would: its own directory under its own spec hash, metrics line and checkpoint per epoch, rewinding
points, ``result.json`` with the solo keys. Packing shows only in the result's provenance
(``provenance.packed``: the pack's size and kernels) and in the last bits of the numbers.

Compatible runs: kind ``training``, one data spec, one model spec, one recipe and first epoch (as
:func:`~prunelab.runs.training.retrain_schedule` gives them), a recipe packed training supports
(:func:`~prunelab.training.packed.config_refusal`) and a model it can pack (a probe). They may
differ in seed (initialisation, data order), pruning (method, density, checks, a ticket's parents:
its mask is computed from its finished parents as the solo run computes it) and training-data
corruption. Members resume from their own checkpoints; members at different epochs train in
separate packs, one per epoch (a lone member trains solo), so a killed pack resumes as a pack.

Every member's claim (:meth:`~prunelab.store.RunStore.claim`) is held, in run-hash order, from
before it is prepared until the pack ends: another process asking for a member waits, then finds
it finished.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunelab.data import DataBundle
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.provenance import provenance
from prunelab.pruning.mask import Mask
from prunelab.runs.executors import (
    RunContext,
    ancestors,
    execute,
    executor_for,
    spec_from_json,
    torch_threads,
)
from prunelab.runs.training import (
    BestOnValidation,
    begin_epochs,
    dataset_for,
    epoch_writer,
    epochs_to_keep,
    initial_model,
    prepare_mask_and_resume,
    resolve_device,
    retrain_schedule,
    run_result,
    stored_accuracy,
    train_through_store,
)
from prunelab.seeding import generator
from prunelab.spec import RunSpec
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig
from prunelab.training.packed import (
    Member,
    NotPackable,
    config_refusal,
    member_bytes,
    probe,
    train_packed,
)
from prunelab.training.trainer import EpochCallback, EpochRecord, TrainState

#: Largest pack ``pack="auto"`` forms: on CPU, measured on 2 cores (the demo's 35 runs of seed 0,
#: one worker: solo 163-166 s, packs of 8 102 s, of 16 112 s, of 35 153 s: past a few members a
#: pack's activations leave the caches, and past 32 MiB per block glibc maps and re-faults them
#: every step); on CUDA, a cap on memory use.
AUTO_CAP = {"cpu": 8, "cuda": 32}
#: Share of the free memory (CUDA) or of the available RAM (CPU, split between workers) that
#: ``pack="auto"`` lets one pack use.
AUTO_BUDGET = 0.5


def pack_refusal(spec: Any, data_dir: str | Path | None = None) -> str | None:
    """Why ``spec`` cannot train packed (one line), or None when it can."""
    if not isinstance(spec, RunSpec) or type(spec).kind != "training":
        return f"a {getattr(type(spec), 'kind', type(spec).__name__)} run trains solo"
    try:
        config, _ = retrain_schedule(spec)
    except PrunelabError as exc:
        return str(exc)
    why = config_refusal(config)
    if why is not None:
        return why
    return _model_refusal(
        spec.data.model_dump_json(), spec.model.model_dump_json(), None if data_dir is None else str(data_dir)
    )


@functools.lru_cache(maxsize=32)
def _model_refusal(data_json: str, model_json: str, data_dir: str | None) -> str | None:
    """The probe of :func:`prunelab.training.packed.probe` on two members of this (data, model),
    once per process; the reason it fails, or None."""
    spec = RunSpec.model_validate({"data": json.loads(data_json), "model": json.loads(model_json)})
    data = dataset_for(spec, data_dir, torch.device("cpu"))
    models = [
        build_model(spec.model.name, data.input_shape, data.num_classes, seed=s, **spec.model.options)
        for s in (0, 1)
    ]
    try:
        probe(models, data.input_shape)
    except NotPackable as exc:
        return f"model {spec.model.name!r}: {exc}"
    return None


def pack_key(spec: Any, data_dir: str | Path | None = None) -> str | None:
    """What runs must share to train in one pack (data, model, recipe, first epoch), as a string;
    None for a run that trains solo (:func:`pack_refusal`)."""
    if pack_refusal(spec, data_dir) is not None:
        return None
    config, start = retrain_schedule(spec)
    return json.dumps(
        {
            "data": spec.data.model_dump(mode="json"),
            "model": spec.model.model_dump(mode="json"),
            "train": config.model_dump(mode="json"),
            "start_epoch": start,
        },
        sort_keys=True,
    )


def available_memory(device: torch.device) -> int:
    """Free bytes: CUDA's free device memory, or the host's available RAM (``MemAvailable``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_pack_size(spec: RunSpec, device: str, workers: int = 1, data_dir: str | Path | None = None) -> int:
    """The pack size ``pack="auto"`` picks for runs like ``spec``: as many members as fit in
    :data:`AUTO_BUDGET` of the free memory (each member: weights, gradients, momentum and mask,
    plus three times a batch's activations; :func:`prunelab.training.packed.member_bytes`; on
    CPU the RAM is shared by ``workers`` processes), capped at :data:`AUTO_CAP`. On CPU a model
    with 2-D convolutions trains solo (1): packing measured 0.7-1.0x there (bench/packed.py,
    ResNet-20), as its convolutions dominate a step."""
    dev = resolve_device(device)
    data = dataset_for(spec, data_dir, torch.device("cpu"))
    model = build_model(spec.model.name, data.input_shape, data.num_classes, seed=0, **spec.model.options)
    if dev.type == "cpu" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return 1
    config, _ = retrain_schedule(spec)
    per_member = max(1, member_bytes(model, data.input_shape, config.batch_size))
    budget = AUTO_BUDGET * available_memory(dev) / (max(1, workers) if dev.type == "cpu" else 1)
    cap = AUTO_CAP.get(dev.type, AUTO_CAP["cuda"])
    return int(max(1, min(cap, budget // per_member)))


def plan_packs(
    specs: Sequence[Any],
    pack: int | str,
    *,
    device: str = "cpu",
    workers: int = 1,
    data_dir: str | Path | None = None,
) -> list[list[int]]:
    """Group the runs of one wave into packs: indices into ``specs``, each group a pack of up to
    ``pack`` compatible runs (``"auto"``: :func:`auto_pack_size` per group), runs that train solo
    as groups of one. A compatible set of n runs is split into ``ceil(n / K)`` packs of as even
    sizes as can be, in the given order (so the composition depends on the runs and K alone, never
    on the worker count). Groups come in order of their first run.
    """
    size = check_pack(pack)
    by_key: dict[str, list[int]] = {}
    groups: list[list[int]] = []
    for i, spec in enumerate(specs):
        key = pack_key(spec, data_dir) if size != 1 else None
        if key is None:
            groups.append([i])
        else:
            if key not in by_key:
                by_key[key] = []
                groups.append(by_key[key])
            by_key[key].append(i)
    out: list[list[int]] = []
    for group in groups:
        k = size if size is not None else auto_pack_size(specs[group[0]], device, workers, data_dir)
        count = math.ceil(len(group) / max(1, k))
        base, extra = divmod(len(group), count)
        start = 0
        for c in range(count):
            stop = start + base + (1 if c < extra else 0)
            out.append(group[start:stop])
            start = stop
    return out


def check_pack(pack: int | str) -> int | None:
    """``pack`` as a pack size (None for ``"auto"``); a one-line error for anything else."""
    if isinstance(pack, str):
        text = pack.strip().lower()
        if text == "auto":
            return None
        if not text.isdigit():
            raise PrunelabError(f"--pack must be a positive integer or auto, got {pack!r}")
        pack = int(text)
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise PrunelabError(f"--pack must be a positive integer or auto, got {pack!r}")
    return pack


# -- execution -------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """One member, ready to train: what :func:`prunelab.runs.training._train_spec` prepares."""

    spec: RunSpec
    model: torch.nn.Module
    data: DataBundle
    mask: Mask | None
    resume: TrainState | None
    config: TrainConfig
    start_epoch: int
    needed: set[int]
    prune_seconds: float
    prepare_seconds: float

    @property
    def epoch(self) -> int:
        return self.resume.epoch if self.resume is not None else self.start_epoch


def run_packed(
    specs: Sequence[RunSpec],
    store: RunStore,
    context: RunContext | None = None,
    *,
    options: Sequence[Mapping[str, Any]] | None = None,
    forced: Sequence[bool] | None = None,
    conv: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Run compatible training runs as a pack (finished ones are read back; unfinished parents run
    first); returns ``{run hash: result}`` (what ``result.json`` holds, or ``{"status": "stopped",
    ...}`` after ``context.stop_after_epoch``).

    Args:
        specs: runs sharing one :func:`pack_key`.
        store: where the runs live.
        context: data directory, device, threads, progress (per epoch of the pack), stop.
        options: per run, the executor options (``save_epochs``: rewinding epochs to keep).
        forced: per run, recompute it even when finished.
        conv: how packed convolutions are computed (:data:`prunelab.training.packed.CONV_MODES`).

    Raises:
        PrunelabError: runs that cannot share a pack, or a member that fails (that member is
            marked failed in the store).
    """
    context = context or RunContext()
    options = list(options) if options is not None else [{} for _ in specs]
    forced = list(forced) if forced is not None else [False for _ in specs]
    if not len(specs) == len(options) == len(forced):
        raise ValueError("specs, options and forced must have one entry per run")
    for spec in specs:
        why = pack_refusal(spec, context.data_dir)
        if why is not None:
            raise PrunelabError(f"run {spec.run_name()} cannot train packed: {why}")
    if len({pack_key(spec, context.data_dir) for spec in specs}) > 1:
        raise PrunelabError(
            f"runs {', '.join(s.run_name() for s in specs[:3])} cannot share a pack: they differ in "
            "data, model, recipe or first epoch"
        )
    # Members in run-hash order: claims are taken in one global order (no deadlock between two
    # processes packing overlapping sets), and a pack's composition never depends on input order.
    order = sorted(range(len(specs)), key=lambda i: specs[i].run_hash())
    quiet = RunContext(context.data_dir, context.device, threads=context.threads)
    for i in order:
        for parent in ancestors(specs[i]):
            execute(parent, store, quiet)
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as claims:
        claims.enter_context(torch_threads(context.threads))
        prepared: list[_Prepared] = []
        for i in order:
            spec = specs[i]
            claims.enter_context(store.claim(spec))
            executor = executor_for(spec)
            if forced[i]:
                store.reset(spec)
            else:
                done = executor.finished(spec, store, options[i])
                if done is not None:
                    results[spec.run_hash()] = done
                    continue
            for parent, role in executor.parents(spec):
                store.link(spec, parent, role)
            try:
                prepared.append(_prepare_member(spec, store, context, options[i]))
            except Exception as exc:
                store.fail(spec, f"{type(exc).__name__}: {exc}")
                raise
        by_epoch: dict[int, list[_Prepared]] = {}
        for member in prepared:
            by_epoch.setdefault(member.epoch, []).append(member)
        for group in by_epoch.values():
            results.update(_train_group(group, store, context, conv))
    return results


def _prepare_member(
    spec: RunSpec, store: RunStore, context: RunContext, options: Mapping[str, Any]
) -> _Prepared:
    """Data, model, mask and resume state of one member, as the solo executor prepares them."""
    needed = epochs_to_keep(spec, store, options.get("save_epochs", ()))
    began = time.perf_counter()
    device = resolve_device(context.device)
    data = dataset_for(spec, context.data_dir, device)
    model = initial_model(spec, data, device)
    store.begin(spec)
    mask, resume, prune_seconds = prepare_mask_and_resume(spec, store, model, data, needed)
    config, start_epoch = retrain_schedule(spec)
    return _Prepared(
        spec,
        model,
        data,
        mask,
        resume,
        config,
        start_epoch,
        needed,
        prune_seconds,
        time.perf_counter() - began,
    )


def _train_group(
    group: list[_Prepared], store: RunStore, context: RunContext, conv: str
) -> dict[str, dict[str, Any]]:
    """Train members at one epoch: packed (a lone member, or a model that fails the probe: solo,
    through the solo executor's own loop); finish each in the store."""
    if len(group) > 1:
        try:
            return _train_packed_group(group, store, context, conv)
        except NotPackable as exc:
            warnings.warn(f"training {len(group)} runs solo: {exc}", stacklevel=2)
    out = {}
    for member in group:
        began = time.perf_counter()
        accuracy = train_through_store(
            member.spec,
            store,
            member.model,
            member.data,
            member.config,
            mask=member.mask,
            resume=member.resume,
            seed=member.spec.seed,
            start_epoch=member.start_epoch,
            progress=context.progress,
            stop_after_epoch=context.stop_after_epoch,
            save_epochs=member.needed,
        )
        seconds = member.prepare_seconds + time.perf_counter() - began
        out[member.spec.run_hash()] = _finish(member, store, accuracy, seconds, None)
    return out


def _train_packed_group(
    group: list[_Prepared], store: RunStore, context: RunContext, conv: str
) -> dict[str, dict[str, Any]]:
    # Before anything is written: a model the pack cannot follow trains solo, recorded once.
    probe([m.model for m in group], group[0].data.input_shape, conv)
    members: list[Member] = []
    bests: list[BestOnValidation] = []
    shares = [0.0 for _ in group]
    for i, member in enumerate(group):
        best = begin_epochs(store, member.spec, member.config, member.resume, member.start_epoch)
        bests.append(best)
        write = epoch_writer(store, member.spec, member.needed, best)
        members.append(
            Member(
                member.model,
                member.data,
                member.mask,
                generator(member.spec.seed, "data_order"),
                member.resume,
                [_timed(write, shares, i)],
            )
        )
    config, start = group[0].config, group[0].start_epoch
    engine = {"members": len(group), "conv": conv}
    try:
        histories = train_packed(
            members,
            config,
            start_epoch=start,
            progress=context.progress,
            stop_after_epoch=context.stop_after_epoch,
            conv=conv,
            check=False,
        )
    except Exception as exc:
        for member in group:
            store.fail(member.spec, f"{type(exc).__name__}: {exc} (in a pack of {len(group)})")
        raise
    out = {}
    for i, (member, trained) in enumerate(zip(group, histories, strict=True)):
        done = member.epoch + len(trained.history)
        if done < config.epochs:  # stopped by stop_after_epoch, as if killed
            out[member.spec.run_hash()] = {"status": "stopped", "epochs": context.stop_after_epoch}
            continue
        accuracy = stored_accuracy(store, member.spec, config, bests[i], member.model, member.data)
        seconds = member.prepare_seconds + shares[i]
        out[member.spec.run_hash()] = _finish(member, store, accuracy, seconds, engine)
    return out


def _timed(write: EpochCallback, shares: list[float], index: int) -> EpochCallback:
    """``write`` (the solo run's epoch writer), adding the member's share of the epoch's time."""

    def on_epoch(record: EpochRecord, state: Callable[[], TrainState]) -> None:
        shares[index] += record.seconds
        write(record, state)

    return on_epoch


def _finish(
    member: _Prepared,
    store: RunStore,
    accuracy: dict[str, Any] | None,
    seconds: float,
    engine: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write the member's result (the solo executor's keys) and final weights; a stopped member
    (``accuracy`` None) reports ``stopped``."""
    if accuracy is None:
        return {"status": "stopped", "epochs": member.epoch}
    device = str(member.data.device)
    result = run_result(
        member.spec,
        member.mask,
        member.model,
        member.config,
        member.start_epoch,
        accuracy,
        needed=member.needed,
        prune_seconds=member.prune_seconds,
        seconds=seconds,
        device=device,
    )
    if engine is not None:
        # Provenance: how it was computed (the pack's size and kernels), never what.
        result["provenance"] = {**provenance(device), "packed": engine}
    store.finish(member.spec, result, member.model.state_dict())
    return result


def run_packed_job(
    specs_json: Sequence[str],
    root: str,
    data_dir: str | Path | None,
    device: str,
    forced: Sequence[bool],
    options: Sequence[Mapping[str, Any]],
    threads: int = 1,
) -> dict[str, dict[str, Any]]:
    """A pack as a runner job (picklable arguments; in a worker process or inline):
    ``{run hash: result}``."""
    specs = [spec_from_json("training", text) for text in specs_json]
    context = RunContext(data_dir, device, threads=threads)
    return run_packed(specs, RunStore(root), context, options=options, forced=forced)


__all__ = [
    "auto_pack_size",
    "check_pack",
    "pack_key",
    "pack_refusal",
    "plan_packs",
    "run_packed",
    "run_packed_job",
]
