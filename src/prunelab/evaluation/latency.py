"""Inference latency and throughput, and a side-by-side comparison of a full and a pruned model.

Measurements, not tests: nothing here asserts on time. Models are timed in eval mode without autograd,
on a private copy moved to ``device`` (the caller's model is never moved or switched to eval), with
``torch.cuda.synchronize`` around every timed region on CUDA. After ``warmup`` untimed forwards, each
repeat times ``inner`` consecutive forwards (blocked timing: ``inner`` is chosen so a repeat lasts at
least ``min_repeat_ms``, as one forward of a small model is near the clock's resolution) and records
the mean per forward. Reported: median and interquartile range (IQR) over repeats.

Repeats are adaptive: after the first ``repeats``, more follow until the relative IQR (IQR / median)
is at most ``target_spread``, or ``max_repeats`` or the ``time_budget_s`` is reached. A measurement
that ends with a relative IQR above ``unreliable_spread`` (or with fewer than
:data:`MIN_SPREAD_REPEATS` repeats, too few for quartiles) is flagged ``unreliable``: on a busy
machine the same model can time anywhere from 0.5 to 100 ms, and such a number must not be read as a
speedup.

:func:`compare_models` interleaves the two models repeat by repeat, so slow drift in machine speed
hits both alike. That is why the timing loop is our own: ``torch.utils.benchmark.Timer`` (whose
``adaptive_autorange`` does the same warm-up, blocked timing and IQR-based stopping) times one
statement at a time, and by default on one thread.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.evaluation.flops import count_flops, count_params

#: Stop repeating once the relative IQR (IQR / median) of every timed model is at most this.
TARGET_SPREAD = 0.05
#: A measurement whose relative IQR ends above this is flagged unreliable.
UNRELIABLE_SPREAD = 0.10
#: Unless ``max_repeats`` says otherwise, at most this many times ``repeats`` timed repeats per batch
#: size (a caller asking for few repeats wants a quick measurement, a flagged one if need be).
MAX_REPEATS_FACTOR = 10
#: Fewer repeats than this give no usable quartiles: such a measurement is always unreliable.
MIN_SPREAD_REPEATS = 4


@dataclass(frozen=True)
class LatencyRecord:
    """Forward-pass timing of one model at one batch size.

    Attributes:
        batch_size: examples per forward.
        median_ms: median over repeats of the wall-clock time of one forward, milliseconds.
        iqr_ms: interquartile range (75th - 25th percentile) of the same, milliseconds.
        throughput: ``batch_size / median`` in examples (images) per second.
        device: the device timed on, e.g. ``"cpu"`` or ``"cuda:0"``.
        repeats: number of timed repeats (adaptive: see the module docstring).
        inner: forwards per repeat (``median_ms`` is per forward).
        rel_iqr: ``iqr_ms / median_ms``, the measurement's spread (NaN when not measured).
        unreliable: True when ``rel_iqr`` is above the threshold it was measured against, or there
            were fewer than :data:`MIN_SPREAD_REPEATS` repeats; reports mark such numbers.
    """

    batch_size: int
    median_ms: float
    iqr_ms: float
    throughput: float
    device: str
    repeats: int = 0
    inner: int = 1
    rel_iqr: float = math.nan
    unreliable: bool = False


@dataclass(frozen=True)
class ComparisonRow:
    """A full and a pruned model side by side at one batch size.

    ``flops_*`` are :func:`~prunelab.evaluation.flops.count_flops` of one example (the Rethinking
    convention); ``flops_reduction = 1 - flops_pruned / flops_full`` and ``params_reduction`` likewise
    (fractions); ``speedup = full.median_ms / pruned.median_ms`` (> 1: the pruned model is faster).
    """

    batch_size: int
    device: str
    params_full: int
    params_pruned: int
    params_reduction: float
    flops_full: int
    flops_pruned: int
    flops_reduction: float
    full: LatencyRecord
    pruned: LatencyRecord
    speedup: float

    @property
    def unreliable(self) -> bool:
        """The speedup rests on at least one unreliable measurement."""
        return self.full.unreliable or self.pruned.unreliable


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise PrunelabError(f"unknown device {device!r}; valid choices: cpu, cuda, cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PrunelabError(f"device {device!r} requested but CUDA is not available; valid choices: cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise PrunelabError(f"unsupported device {device!r}; valid choices: cpu, cuda, cuda:N")
    return resolved


def _check_counts(
    batch_sizes: Sequence[int], warmup: int, repeats: int, max_repeats: int | None = None
) -> list[int]:
    if isinstance(batch_sizes, int) or not batch_sizes:
        raise PrunelabError(f"batch_sizes must be a non-empty list of positive ints, got {batch_sizes!r}")
    sizes = [int(b) for b in batch_sizes]
    if any(b < 1 for b in sizes):
        raise PrunelabError(f"batch_sizes must be positive, got {list(batch_sizes)!r}")
    if warmup < 0 or repeats < 1:
        raise PrunelabError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if max_repeats is not None and max_repeats < repeats:
        raise PrunelabError(f"need max_repeats >= repeats, got max_repeats={max_repeats}, repeats={repeats}")
    return sizes


def _most_repeats(repeats: int, max_repeats: int | None) -> int:
    return MAX_REPEATS_FACTOR * repeats if max_repeats is None else max_repeats


def _private_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode copy on ``device``, so timing never moves or mutates the caller's model."""
    twin = copy.deepcopy(model).to(device)
    twin.eval()
    return twin


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _spread(values: Sequence[float]) -> float:
    """Relative IQR (IQR / median) of ``values``; inf with too few values to tell."""
    if len(values) < MIN_SPREAD_REPEATS:
        return math.inf
    median = statistics.median(values)
    low, high = _quartiles(values)
    return (high - low) / median if median > 0 else math.inf


def _time_interleaved(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    min_repeat_ms: float,
    max_repeats: int,
    time_budget_s: float,
    target_spread: float,
    unreliable_spread: float,
) -> list[LatencyRecord]:
    """Time ``models`` (already on ``device``, eval) on input ``x``, repeats interleaved, adaptively
    (at least ``repeats``; then until every spread is at most ``target_spread``, ``max_repeats`` or
    ``time_budget_s`` seconds of timed repeats)."""

    def run(model: nn.Module, times: int) -> float:
        _synchronize(device)
        began = time.perf_counter()
        for _ in range(times):
            model(x)
        _synchronize(device)
        return (time.perf_counter() - began) * 1e3

    with torch.no_grad():
        inners = []
        for model in models:
            for _ in range(warmup):
                model(x)
            single = run(model, 1)  # calibrate: enough forwards per repeat to beat clock noise
            inners.append(max(1, math.ceil(min_repeat_ms / max(single, 1e-6))))
        per_forward: list[list[float]] = [[] for _ in models]
        began = time.perf_counter()
        r = 0
        while r < max_repeats:
            order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
            for i in order:
                per_forward[i].append(run(models[i], inners[i]) / inners[i])
            r += 1
            if r < repeats:
                continue
            # Settled, or out of budget: a noisy machine gets a flagged measurement, not an endless one.
            if max(_spread(t) for t in per_forward) <= target_spread:
                break
            if time.perf_counter() - began >= time_budget_s:
                break
    batch = int(x.shape[0])
    records = []
    for times, inner in zip(per_forward, inners, strict=True):
        median = statistics.median(times)
        low, high = _quartiles(times)
        rel_iqr = (high - low) / median if median > 0 else math.inf
        records.append(
            LatencyRecord(
                batch_size=batch,
                median_ms=median,
                iqr_ms=high - low,
                throughput=batch / (median / 1e3) if median > 0 else math.inf,
                device=str(device),
                repeats=len(times),
                inner=inner,
                rel_iqr=rel_iqr,
                unreliable=len(times) < MIN_SPREAD_REPEATS or not rel_iqr <= unreliable_spread,
            )
        )
    return records


def _input(model: nn.Module, batch: int, input_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_shape), generator=generator, dtype=dtype).to(device)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    warmup: int = 5,
    repeats: int = 20,
    min_repeat_ms: float = 20.0,
    max_repeats: int | None = None,
    time_budget_s: float = 2.0,
    target_spread: float = TARGET_SPREAD,
    unreliable_spread: float = UNRELIABLE_SPREAD,
) -> list[LatencyRecord]:
    """Forward latency and throughput of ``model`` for examples of ``input_shape`` (no batch dim).

    Args:
        model: timed on a private eval-mode copy on ``device`` under ``torch.no_grad``.
        input_shape: one example's shape, e.g. ``(3, 32, 32)``; inputs are standard normal.
        batch_sizes: one :class:`LatencyRecord` per batch size, in this order.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (CUDA is synchronised around every timing).
        warmup: untimed forwards per batch size before timing.
        repeats: the fewest timed repeats per batch size (median and IQR are over all repeats).
        min_repeat_ms: each repeat runs enough forwards to last at least this long.
        max_repeats: the most timed repeats per batch size (default ``10 * repeats``;
            ``max_repeats=repeats`` gives a fixed count, as before adaptive repeats).
        time_budget_s: seconds of timed repeats per batch size after which no further repeat starts
            (the first ``repeats`` always run).
        target_spread: stop early once the relative IQR (IQR / median) is at most this.
        unreliable_spread: flag the record ``unreliable`` when its relative IQR ends above this.
    """
    sizes = _check_counts(batch_sizes, warmup, repeats, max_repeats)
    dev = _resolve_device(device)
    twin = _private_copy(model, dev)
    return [
        _time_interleaved(
            [twin],
            _input(twin, b, tuple(input_shape), dev),
            dev,
            warmup=warmup,
            repeats=repeats,
            min_repeat_ms=min_repeat_ms,
            max_repeats=_most_repeats(repeats, max_repeats),
            time_budget_s=time_budget_s,
            target_spread=target_spread,
            unreliable_spread=unreliable_spread,
        )[0]
        for b in sizes
    ]


def compare_models(
    full: nn.Module,
    pruned: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    warmup: int = 5,
    repeats: int = 20,
    min_repeat_ms: float = 20.0,
    max_repeats: int | None = None,
    time_budget_s: float = 2.0,
    target_spread: float = TARGET_SPREAD,
    unreliable_spread: float = UNRELIABLE_SPREAD,
) -> list[ComparisonRow]:
    """Parameters, FLOPs, latency and speedup of ``pruned`` against ``full``, one row per batch size.

    The two models are timed alternately, repeat by repeat (see the module docstring); the other
    arguments are those of :func:`measure_latency`. Counts are of the models as given (dense counts:
    for masked models use ``count_flops(..., nonzero_only=True)`` yourself; masks do not speed up
    dense kernels, which is the point of measuring). Repeats continue until both models' spreads
    are at most ``target_spread`` (or the budget is spent); ``row.unreliable`` flags a speedup that
    rests on an unreliable measurement.
    """
    sizes = _check_counts(batch_sizes, warmup, repeats, max_repeats)
    dev = _resolve_device(device)
    params_full, params_pruned = count_params(full), count_params(pruned)
    flops_full = count_flops(full, tuple(input_shape))
    flops_pruned = count_flops(pruned, tuple(input_shape))
    twins = [_private_copy(full, dev), _private_copy(pruned, dev)]
    rows = []
    for b in sizes:
        x = _input(twins[0], b, tuple(input_shape), dev)
        rec_full, rec_pruned = _time_interleaved(
            twins,
            x,
            dev,
            warmup=warmup,
            repeats=repeats,
            min_repeat_ms=min_repeat_ms,
            max_repeats=_most_repeats(repeats, max_repeats),
            time_budget_s=time_budget_s,
            target_spread=target_spread,
            unreliable_spread=unreliable_spread,
        )
        rows.append(
            ComparisonRow(
                batch_size=b,
                device=str(dev),
                params_full=params_full,
                params_pruned=params_pruned,
                params_reduction=1.0 - params_pruned / params_full if params_full else 0.0,
                flops_full=flops_full,
                flops_pruned=flops_pruned,
                flops_reduction=1.0 - flops_pruned / flops_full if flops_full else 0.0,
                full=rec_full,
                pruned=rec_pruned,
                speedup=rec_full.median_ms / rec_pruned.median_ms if rec_pruned.median_ms > 0 else math.inf,
            )
        )
    return rows
