"""Small statistics for summaries: means with t confidence intervals and paired tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

#: The significance level of every study's tests (two-sided).
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values with the half-width of its two-sided t confidence interval."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean and t-interval half-width; a single value has an infinite-free half-width of 0."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, 0.0, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return Estimate(mean, t * math.sqrt(var / n), n)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison ``treated - control`` over matched pairs.

    Attributes:
        diff: mean difference with its confidence interval.
        p_value: two-sided p-value of the paired t-test (NaN with fewer than 2 pairs or no variance).
        test: the test's name, as reports print it.
    """

    diff: Estimate
    p_value: float
    test: str = "paired t-test (two-sided)"


def paired_test(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> PairedTest:
    """Paired t-test of ``treated`` against ``control`` (same length, matched by position)."""
    if len(treated) != len(control):
        raise ValueError("paired samples must have the same length")
    diffs = [a - b for a, b in zip(treated, control, strict=True)]
    est = mean_ci(diffs, confidence)
    if len(diffs) < 2:
        return PairedTest(est, math.nan)
    if all(d == diffs[0] for d in diffs):
        return PairedTest(est, 0.0 if diffs[0] != 0 else 1.0)
    result = stats.ttest_rel(treated, control)
    return PairedTest(est, float(result.pvalue))
