"""The global-selection benchmark's core runs (tiny; benchmarks never assert on time)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import global_select  # noqa: E402


def test_global_select_benchmark_core_runs_tiny() -> None:
    rows = global_select.selection_times("cnn2d", [0.5], 1, torch.device("cpu"))
    assert rows[0]["weights"] > 0 and rows[0]["per_layer_topk_s"] > 0 and rows[0]["threshold_s"] > 0
