"""What the Rethinking study found: per structured method, accuracy of the large, pruned, fine-tuned
and scratch-trained models, their cost, and scratch vs fine-tune verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prunelab.evaluation.latency import UNRELIABLE_SPREAD
from prunelab.spec.studies import RethinkingStudy
from prunelab.summaries.stats import INCONCLUSIVE, AdjustedP, Estimate, PairedTest, PairedVerdict
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
class Comparison(PairedVerdict):
    """Scratch (E or B) against fine-tune for one method, paired over seeds.

    Attributes:
        test: paired t-test (two-sided) of scratch − fine-tune final test accuracy (fractions); its
            ``p_value`` is the raw p.
        n_pairs: seeds with both runs finished.
        ci_overlap: whether the two protocols' own 95% CIs (over seeds) overlap; None when either
            has no interval (fewer than 2 seeds).
        p: the raw and the adjusted p-value within the study's family of comparisons (method x
            scratch protocol); ``conclusion`` and ``supports_paper`` are decided on the adjusted one.
    """

    method: str
    protocol: str
    test: PairedTest
    n_pairs: int
    ci_overlap: bool | None
    p: AdjustedP

    @property
    def conclusion(self) -> str:
        diff = self.test.diff.mean
        if self.inconclusive:
            return INCONCLUSIVE
        if self.p.significant and diff > 0:
            return "scratch better than fine-tune"
        if self.p.significant and diff < 0:
            return "scratch worse than fine-tune"
        return "scratch matches fine-tune (no significant difference)"

    @property
    def supports_paper(self) -> bool | None:
        """The paper's claim (scratch is not worse than fine-tune) holds; None when inconclusive."""
        if self.inconclusive:
            return None
        return not (self.p.significant and self.test.diff.mean < 0)


@dataclass
class MethodSummary:
    """One method's table: accuracy per row, cost of the large and the pruned model, comparisons.

    ``params`` / ``flops`` are means over seeds (automatically found architectures differ by seed);
    ``epochs`` maps a row to the epochs each seed trained (Scratch-B differs when FLOPs do).
    ``latency`` is ``{device: {"full"|"pruned": [record dict per batch size]}}`` from the first seed
    (records of :class:`~prunelab.evaluation.latency.LatencyRecord`; see :func:`latency_measurements`).
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


#: The arms of pruning as architecture search: the method's found architecture trained from scratch
#: (Scratch-E), a uniformly pruned one of the same parameter count, a guided one.
SEARCH_ARMS = ("found", "uniform", "guided")
SEARCH_LABELS = {
    "found": "found (Scratch-E)",
    "uniform": "uniform, same params",
    "guided": "guided (stage widths)",
}


@dataclass
class SearchSummary:
    """One method's pruning-as-architecture-search result (Liu et al. 2019, section 5).

    Attributes:
        method: the method label.
        accuracy: per arm, final test accuracy (fraction) over seeds.
        params: per arm, mean parameter count of the trained architecture.
        versus_uniform: per other arm, the paired t-test (over seeds) of that arm minus uniform.
    """

    method: str
    accuracy: dict[str, Estimate]
    params: dict[str, float]
    versus_uniform: dict[str, PairedTest]


@dataclass
class RethinkingSummary:
    """Everything the report shows."""

    study: RethinkingStudy
    methods: list[MethodSummary]
    missing: int = 0
    #: warnings for the report and the CLI: too few seeds for the verdicts' test, unreliable latency
    notes: list[str] = field(default_factory=list)
    #: :func:`~prunelab.summaries.provenance.provenance_summary` of the study's finished runs
    provenance: dict[str, Any] = field(default_factory=dict)
    #: pruning as architecture search, per searched method (``study.architecture_search``)
    search: list[SearchSummary] = field(default_factory=list)


def latency_ms(record: dict[str, Any]) -> float:
    """Milliseconds per batch of a latency record (median when recorded, else mean)."""
    for key in ("median_ms", "mean_ms", "ms", "latency_ms"):
        if key in record and record[key] is not None:
            return float(record[key])
    return math.nan


def latency_spread(record: dict[str, Any]) -> float:
    """Relative IQR (IQR / median) of a latency record: its own ``rel_iqr``, else computed from
    ``iqr_ms`` and the median (records from before it was stored); NaN when unknown."""
    if record.get("rel_iqr") is not None:
        return float(record["rel_iqr"])
    median, iqr = latency_ms(record), record.get("iqr_ms")
    if iqr is None or not median > 0:
        return math.nan
    return float(iqr) / median


def latency_unreliable(record: dict[str, Any]) -> bool:
    """The record's own ``unreliable`` flag, else whether its spread is above
    :data:`~prunelab.evaluation.latency.UNRELIABLE_SPREAD` (unknown spread: not flagged)."""
    if record.get("unreliable") is not None:
        return bool(record["unreliable"])
    spread = latency_spread(record)
    return not math.isnan(spread) and spread > UNRELIABLE_SPREAD


@dataclass(frozen=True)
class Speedup:
    """A full and a pruned model's measured latency at one batch size on one device.

    Attributes:
        full_ms, pruned_ms: median milliseconds per batch; ``*_iqr_ms`` their interquartile ranges.
        speedup: ``full_ms / pruned_ms``.
        spread: the larger relative IQR (IQR / median) of the two measurements.
        unreliable: either measurement is flagged unreliable; reports mark the speedup.
    """

    device: str
    batch_size: int
    full_ms: float
    pruned_ms: float
    full_iqr_ms: float
    pruned_iqr_ms: float
    speedup: float
    spread: float
    unreliable: bool


def latency_measurements(latency: dict[str, Any]) -> list[Speedup]:
    """One :class:`Speedup` per device and batch size of a method's ``latency``."""
    out = []
    for device, pair in latency.items():
        for full, pruned in zip(pair.get("full", []), pair.get("pruned", []), strict=False):
            f, p = latency_ms(full), latency_ms(pruned)
            spreads = [x for x in (latency_spread(full), latency_spread(pruned)) if not math.isnan(x)]
            out.append(
                Speedup(
                    device=device,
                    batch_size=int(full.get("batch_size", 0)),
                    full_ms=f,
                    pruned_ms=p,
                    full_iqr_ms=float(full.get("iqr_ms", math.nan)),
                    pruned_iqr_ms=float(pruned.get("iqr_ms", math.nan)),
                    speedup=f / p if p else math.nan,
                    spread=max(spreads) if spreads else math.nan,
                    unreliable=latency_unreliable(full) or latency_unreliable(pruned),
                )
            )
    return out


def latency_speedups(latency: dict[str, Any]) -> list[tuple[str, int, float, float, float]]:
    """``(device, batch size, full ms, pruned ms, speedup = full / pruned)`` per device and batch size."""
    return [
        (m.device, m.batch_size, m.full_ms, m.pruned_ms, m.speedup) for m in latency_measurements(latency)
    ]


def finetune_epochs_of(study: RethinkingStudy) -> int:
    """The fine-tune epochs the study uses (its own setting or a quarter of the large epochs)."""
    return finetune_config(study.train, epochs=study.finetune_epochs).epochs
