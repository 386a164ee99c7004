"""Evaluation beyond accuracy: parameter and FLOP counts (:mod:`.flops`), latency and throughput
(:mod:`.latency`), calibration (:mod:`.calibration`), out-of-distribution detection (:mod:`.ood`) and
adversarial robustness (:mod:`.adversarial`). The stored evaluation of a run is
:mod:`prunelab.runs.evaluation`."""

from __future__ import annotations

from prunelab.evaluation.adversarial import ATTACKS, PixelSpace, adversarial_accuracy, fgsm, pgd
from prunelab.evaluation.calibration import CalibrationMetrics, calibration_metrics
from prunelab.evaluation.flops import count_flops, count_params, flops_by_module
from prunelab.evaluation.latency import ComparisonRow, LatencyRecord, compare_models, measure_latency
from prunelab.evaluation.ood import OOD_SCORES, OODMetrics, ood_detection, ood_score

__all__ = [
    "ATTACKS",
    "OOD_SCORES",
    "CalibrationMetrics",
    "ComparisonRow",
    "LatencyRecord",
    "OODMetrics",
    "PixelSpace",
    "adversarial_accuracy",
    "calibration_metrics",
    "compare_models",
    "count_flops",
    "count_params",
    "flops_by_module",
    "fgsm",
    "measure_latency",
    "ood_detection",
    "ood_score",
    "pgd",
]
