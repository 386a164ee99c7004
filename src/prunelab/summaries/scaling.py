"""What the size-scaling study (Liu et al. 2022) found: per size, scheme and density, random pruning
against the dense twin, and per family, from which size on random pruning matches dense."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from prunelab.spec.studies import ScalingStudy
from prunelab.summaries.stats import MIN_PAIRS, AdjustedP, Estimate, PairedTest, PairedVerdict

#: How "matches" is decided, as reports name the test.
NONINFERIORITY_TEST = "one-sided paired t-test of non-inferiority"


def noninferiority_p(diffs: Sequence[float], margin: float) -> float:
    """One-sided p-value of H0 "mean(diffs) <= -margin" (random worse than dense by the margin or
    more) against H1 "mean(diffs) > -margin", by a paired t-test on ``diffs = sparse - dense``.

    NaN with fewer than :data:`MIN_PAIRS` pairs; with no spread, 0 when every difference is above
    ``-margin`` and 1 otherwise.
    """
    n = len(diffs)
    if n < MIN_PAIRS:
        return math.nan
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    if var == 0:
        return 0.0 if mean > -margin else 1.0
    t = (mean + margin) / math.sqrt(var / n)
    return float(stats.t.sf(t, n - 1))


@dataclass(frozen=True)
class MetricComparison(PairedVerdict):
    """A metric beyond accuracy of the sparse runs against their dense twins at one point.

    Attributes:
        name: the flat metric name (``ece``, ``auroc_msp@mnist1d_ood``, ``fgsm@0.1``...).
        higher_is_better: the metric's direction.
        sparse, dense: the means with their confidence intervals.
        test: paired t-test of sparse minus dense.
        n_pairs: seeds with both.
        p: the test's p-value adjusted over the study's family of metric tests.
    """

    name: str
    higher_is_better: bool
    sparse: Estimate
    dense: Estimate
    test: PairedTest
    n_pairs: int
    p: AdjustedP

    @property
    def sparse_better(self) -> bool | None:
        """True/False when the difference is significant; None when it is not (or inconclusive)."""
        if self.inconclusive or not self.p.significant:
            return None
        return (self.test.diff.mean > 0) == self.higher_is_better


@dataclass(frozen=True)
class SizePoint(PairedVerdict):
    """Random pruning at one (family, size, scheme, density) against the dense model of that size.

    Attributes:
        family, axis, value: the size family, its axis (depth/width) and this model's size on it.
        model: the model's label (name and options).
        scheme: the layer-wise ratio scheme; density: the kept fraction of prunable weights.
        sparse, dense: accuracy means (fractions) over seeds with their confidence intervals.
        test: paired t-test of sparse minus dense accuracy (two-sided).
        n_pairs: seeds with both runs finished.
        p: ``test``'s p-value adjusted over the study's family of two-sided tests.
        noninferior: the non-inferiority p-value (margin ``study.margin``), adjusted over its family.
        size: the sparse net's sizes: ``params``, ``nonzero_params``, ``flops``, ``nonzero_flops``.
        metrics: the beyond-accuracy comparisons, by metric name.
    """

    family: str
    axis: str
    value: float
    model: str
    scheme: str
    density: float
    sparse: Estimate
    dense: Estimate
    test: PairedTest
    n_pairs: int
    p: AdjustedP
    noninferior: AdjustedP
    size: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, MetricComparison] = field(default_factory=dict)

    @property
    def matches(self) -> bool:
        """Random pruning matches dense here: non-inferior within the margin (adjusted p < alpha)."""
        return self.noninferior.significant

    @property
    def worse(self) -> bool:
        """Random pruning is significantly worse than dense here (two-sided, adjusted)."""
        return self.p.significant and self.test.diff.mean < 0


@dataclass(frozen=True)
class TrendVerdict:
    """Along one size family, for one scheme and density: from which size on random matches dense.

    Attributes:
        matches_from: the smallest size from which every larger size matches (None: never at the
            largest size).
        gaps: ``(size, sparse minus dense accuracy mean)`` along the family, smallest first.
        closing: the gap at the largest size is smaller in magnitude than at the smallest.
        text: the one-line verdict.
    """

    family: str
    axis: str
    scheme: str
    density: float
    matches_from: float | None
    gaps: list[tuple[float, float]]
    closing: bool | None
    text: str


@dataclass
class ScalingSummary:
    """Every point, every trend verdict, the layer-wise densities of each scheme, and provenance."""

    study: ScalingStudy
    points: list[SizePoint]
    trends: list[TrendVerdict]
    #: ``{(model label, scheme, density): [(layer name, density), ...]}`` from seed 0's mask (or the first finished seed)
    layer_densities: dict[tuple[str, str, float], list[tuple[str, float]]] = field(default_factory=dict)
    missing: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
