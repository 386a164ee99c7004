"""Evaluation beyond accuracy: parameter and FLOP counts (:mod:`.flops`), latency and throughput
(:mod:`.latency`)."""

from __future__ import annotations

from prunelab.evaluation.flops import count_flops, count_params, flops_by_module
from prunelab.evaluation.latency import ComparisonRow, LatencyRecord, compare_models, measure_latency

__all__ = [
    "ComparisonRow",
    "LatencyRecord",
    "compare_models",
    "count_flops",
    "count_params",
    "flops_by_module",
    "measure_latency",
]
