"""What the Rethinking study found: per structured method, accuracy of the large, pruned, fine-tuned
and scratch-trained models, their cost, and scratch vs fine-tune verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prunelab.spec.studies import RethinkingStudy
from prunelab.summaries.stats import SIGNIFICANCE, Estimate, PairedTest
from prunelab.training.protocols import PROTOCOLS, finetune_config

#: Rows of a method's table, in order: the large model, the pruned model before training, protocols.
ROWS = ("large", "pruned", *PROTOCOLS)
ROW_LABELS = {
    "large": "large model",
    "pruned": "pruned, no training",
    "finetune": "fine-tuned",
    "scratch_e": "Scratch-E",
    "scratch_b": "Scratch-B",
}


@dataclass(frozen=True)
class Comparison:
    """Scratch (E or B) against fine-tune for one method, paired over seeds.

    Attributes:
        test: paired t-test (two-sided) of scratch − fine-tune final test accuracy (fractions).
        n_pairs: seeds with both runs finished.
        ci_overlap: whether the two protocols' own 95% CIs (over seeds) overlap.
    """

    method: str
    protocol: str
    test: PairedTest
    n_pairs: int
    ci_overlap: bool

    @property
    def conclusion(self) -> str:
        p, diff = self.test.p_value, self.test.diff.mean
        if math.isnan(p):
            return "inconclusive (fewer than 2 seeds)"
        if p < SIGNIFICANCE and diff > 0:
            return "scratch better than fine-tune"
        if p < SIGNIFICANCE and diff < 0:
            return "scratch worse than fine-tune"
        return "scratch matches fine-tune (no significant difference)"

    @property
    def supports_paper(self) -> bool | None:
        """The paper's claim (scratch is not worse than fine-tune) holds; None when inconclusive."""
        if math.isnan(self.test.p_value):
            return None
        return not (self.test.p_value < SIGNIFICANCE and self.test.diff.mean < 0)


@dataclass
class MethodSummary:
    """One method's table: accuracy per row, cost of the large and the pruned model, comparisons.

    ``params`` / ``flops`` are means over seeds (automatically found architectures differ by seed);
    ``epochs`` maps a row to the epochs each seed trained (Scratch-B differs when FLOPs do).
    ``latency`` is ``{device: {"full"|"pruned": [record dict per batch size]}}`` from the first seed.
    """

    method: str
    accuracy: dict[str, Estimate]
    values: dict[str, dict[int, float]]
    epochs: dict[str, list[int]]
    params: dict[str, float]
    flops: dict[str, float]
    masked: bool
    latency: dict[str, Any]
    comparisons: list[Comparison]
    architecture: dict[str, Any] | None = None

    @property
    def flops_reduction(self) -> float:
        """FLOPs(full) / FLOPs(pruned) (nonzero-aware for masked models)."""
        return self.flops["full"] / self.flops["pruned"] if self.flops.get("pruned") else math.nan

    @property
    def params_density(self) -> float:
        """Kept fraction of all parameters (pruned / full)."""
        return self.params["pruned"] / self.params["full"] if self.params.get("full") else math.nan


@dataclass
class RethinkingSummary:
    """Everything the report shows."""

    study: RethinkingStudy
    methods: list[MethodSummary]
    missing: int = 0
    notes: list[str] = field(default_factory=list)
    #: :func:`~prunelab.summaries.provenance.provenance_summary` of the study's finished runs
    provenance: dict[str, Any] = field(default_factory=dict)


def latency_ms(record: dict[str, Any]) -> float:
    """Milliseconds per batch of a latency record (median when recorded, else mean)."""
    for key in ("median_ms", "mean_ms", "ms", "latency_ms"):
        if key in record and record[key] is not None:
            return float(record[key])
    return math.nan


def latency_speedups(latency: dict[str, Any]) -> list[tuple[str, int, float, float, float]]:
    """``(device, batch size, full ms, pruned ms, speedup = full / pruned)`` per device and batch size."""
    out = []
    for device, pair in latency.items():
        for full, pruned in zip(pair.get("full", []), pair.get("pruned", []), strict=False):
            f, p = latency_ms(full), latency_ms(pruned)
            out.append((device, int(full.get("batch_size", 0)), f, p, f / p if p else math.nan))
    return out


def finetune_epochs_of(study: RethinkingStudy) -> int:
    """The fine-tune epochs the study uses (its own setting or a quarter of the large epochs)."""
    return finetune_config(study.train, epochs=study.finetune_epochs).epochs
