"""Latency and comparison helpers: structure and sanity only, never wall-clock values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.evaluation import LatencyRecord, compare_models, count_flops, count_params, measure_latency
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
        assert record.device == "cpu" and record.repeats == 3 and record.inner >= 1
        assert record.median_ms > 0 and record.iqr_ms >= 0
        assert math.isclose(record.throughput, record.batch_size / (record.median_ms / 1e3))
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


def test_bad_arguments() -> None:
    model = nn.Linear(4, 2)
    with pytest.raises(PrunelabError, match="batch_sizes"):
        measure_latency(model, (4,), batch_sizes=())
    with pytest.raises(PrunelabError, match="positive"):
        measure_latency(model, (4,), batch_sizes=(0,))
    with pytest.raises(PrunelabError, match="repeats"):
        measure_latency(model, (4,), repeats=0)
    with pytest.raises(PrunelabError, match="valid choices"):
        measure_latency(model, (4,), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PrunelabError, match="CUDA is not available"):
            measure_latency(model, (4,), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_records() -> None:
    records = measure_latency(nn.Linear(4, 2), (4,), batch_sizes=(1,), device="cuda", **FAST)
    assert records[0].device.startswith("cuda") and records[0].median_ms > 0
