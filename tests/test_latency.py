"""Latency and comparison helpers: structure and sanity only, never wall-clock values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.evaluation import LatencyRecord, compare_models, count_flops, count_params, measure_latency
from prunelab.evaluation import latency as latency_module
from prunelab.models import build_model

FAST = {"warmup": 1, "repeats": 3, "min_repeat_ms": 1.0}


def test_measure_latency_records() -> None:
    model = build_model("cnn2d", (1, 8, 8), 10, seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records = measure_latency(model, (1, 8, 8), batch_sizes=(1, 4), **FAST)
    assert [r.batch_size for r in records] == [1, 4]
    for record in records:
        assert isinstance(record, LatencyRecord)
        # repeats is the least: more follow until the spread settles (or the budget is spent)
        assert record.device == "cpu" and record.repeats >= 3 and record.inner >= 1
        assert record.median_ms > 0 and record.iqr_ms >= 0
        assert math.isclose(record.throughput, record.batch_size / (record.median_ms / 1e3))
        assert math.isclose(record.rel_iqr, record.iqr_ms / record.median_ms)
        assert record.unreliable == (record.rel_iqr > latency_module.UNRELIABLE_SPREAD)
    # The caller's model is untouched: still training, same weights and BN statistics.
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compare_models_rows() -> None:
    full = build_model("cnn2d", (1, 8, 8), 10, seed=0)
    pruned = build_model("cnn2d", (1, 8, 8), 10, seed=0, widths=[8, 16, 32])
    rows = compare_models(full, pruned, (1, 8, 8), batch_sizes=(2,), **FAST)
    assert len(rows) == 1
    row = rows[0]
    assert row.batch_size == 2 and row.device == "cpu"
    assert (row.params_full, row.params_pruned) == (count_params(full), count_params(pruned))
    assert (row.flops_full, row.flops_pruned) == (
        count_flops(full, (1, 8, 8)),
        count_flops(pruned, (1, 8, 8)),
    )
    assert math.isclose(row.flops_reduction, 1 - row.flops_pruned / row.flops_full)
    assert math.isclose(row.params_reduction, 1 - row.params_pruned / row.params_full)
    assert 0 < row.flops_reduction < 1
    assert row.full.batch_size == row.pruned.batch_size == 2
    assert math.isclose(row.speedup, row.full.median_ms / row.pruned.median_ms)
    assert row.unreliable == (row.full.unreliable or row.pruned.unreliable)


def test_bad_arguments() -> None:
    model = nn.Linear(4, 2)
    with pytest.raises(PrunelabError, match="batch_sizes"):
        measure_latency(model, (4,), batch_sizes=())
    with pytest.raises(PrunelabError, match="positive"):
        measure_latency(model, (4,), batch_sizes=(0,))
    with pytest.raises(PrunelabError, match="repeats"):
        measure_latency(model, (4,), repeats=0)
    with pytest.raises(PrunelabError, match="max_repeats"):
        measure_latency(model, (4,), repeats=5, max_repeats=4)
    with pytest.raises(PrunelabError, match="valid choices"):
        measure_latency(model, (4,), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PrunelabError, match="CUDA is not available"):
            measure_latency(model, (4,), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_records() -> None:
    records = measure_latency(nn.Linear(4, 2), (4,), batch_sizes=(1,), device="cuda", **FAST)
    assert records[0].device.startswith("cuda") and records[0].median_ms > 0


# A fake clock that only the timed models move: deterministic "timings" without asserting on wall time.
CLOCK = [0.0]


class Ticking(nn.Module):
    """Each forward takes the next of ``steps_ms`` on the fake clock, cycling."""

    def __init__(self, *steps_ms: float) -> None:
        super().__init__()
        self.steps = [s / 1e3 for s in steps_ms]
        self.calls = 0
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CLOCK[0] += self.steps[self.calls % len(self.steps)]
        self.calls += 1
        return self.linear(x)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    CLOCK[0] = 0.0
    monkeypatch.setattr(latency_module, "time", SimpleNamespace(perf_counter=lambda: CLOCK[0]))


TICKS = {"warmup": 0, "min_repeat_ms": 0.0}  # one forward per repeat


def test_a_steady_model_stops_at_the_least_repeats(fake_clock: None) -> None:
    (record,) = measure_latency(Ticking(1.0), (2,), batch_sizes=(1,), repeats=5, **TICKS)
    assert record.repeats == 5 and record.median_ms == pytest.approx(1.0)
    assert record.iqr_ms == pytest.approx(0.0) and record.rel_iqr == pytest.approx(0.0)
    assert not record.unreliable


def test_a_noisy_model_repeats_until_the_cap_and_is_flagged(fake_clock: None) -> None:
    # 1, 3, 1, 3, ... ms: the IQR never settles below the target
    (record,) = measure_latency(Ticking(1.0, 3.0), (2,), batch_sizes=(1,), repeats=4, max_repeats=12, **TICKS)
    assert record.repeats == 12
    assert record.rel_iqr > latency_module.UNRELIABLE_SPREAD and record.unreliable


def test_the_time_budget_ends_a_noisy_measurement(fake_clock: None) -> None:
    (record,) = measure_latency(
        Ticking(1.0, 3.0), (2,), batch_sizes=(1,), repeats=4, max_repeats=1000, time_budget_s=0.02, **TICKS
    )
    # 2 ms per repeat on average: the budget of 20 ms stops it after about 10 repeats, flagged
    assert 4 <= record.repeats <= 12 and record.unreliable


def test_too_few_repeats_are_unreliable(fake_clock: None) -> None:
    (record,) = measure_latency(Ticking(1.0), (2,), batch_sizes=(1,), repeats=2, max_repeats=2, **TICKS)
    assert record.repeats == 2 and record.rel_iqr == 0.0 and record.unreliable  # no quartiles from 2


def test_compare_models_flags_a_speedup_on_a_noisy_measurement(fake_clock: None) -> None:
    (row,) = compare_models(
        Ticking(2.0, 6.0), Ticking(1.0), (2,), batch_sizes=(1,), repeats=4, max_repeats=8, **TICKS
    )
    assert row.full.unreliable and not row.pruned.unreliable and row.unreliable
    assert row.full.repeats == row.pruned.repeats == 8  # interleaved: both timed equally often
    assert row.speedup == pytest.approx(row.full.median_ms / row.pruned.median_ms)
