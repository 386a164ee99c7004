"""Small statistics for summaries: means with t confidence intervals, paired tests, and the
multiple-comparison corrections that turn a family of p-values into adjusted ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

#: The default significance level of every study's tests (two-sided); a study's ``alpha`` overrides it.
SIGNIFICANCE = 0.05
#: The fewest pairs a paired t-test needs: with one pair there is no variance to test against.
MIN_PAIRS = 2
#: Multiple-comparison corrections a study may ask for (its ``correction`` field).
CORRECTIONS = ("holm", "bonferroni", "none")
#: What every report and CLI line says when a test had too few pairs to run.
INCONCLUSIVE = "inconclusive (n too small)"


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values with the half-width of its two-sided t confidence interval.

    ``half_width`` is NaN when there is no interval (fewer than 2 values): a single value says
    nothing about its spread, and a ``± 0`` would claim it is exact.
    """

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def has_interval(self) -> bool:
        """True when there is a finite confidence interval (at least 2 values)."""
        return self.n >= 2 and math.isfinite(self.half_width)

    def clipped(self, lower: float = -math.inf, upper: float = math.inf) -> tuple[float, float]:
        """The interval clipped to ``[lower, upper]`` for display (an accuracy cannot leave [0, 1]);
        ``(mean, mean)`` when there is no interval. The estimate itself keeps the unclipped numbers."""
        if not self.has_interval:
            return self.mean, self.mean
        return max(lower, self.low), min(upper, self.high)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean and t-interval half-width; fewer than 2 values have no interval (NaN half-width)."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, math.nan, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return Estimate(mean, t * math.sqrt(var / n), n)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison ``treated - control`` over matched pairs.

    Attributes:
        diff: mean difference with its confidence interval.
        p_value: two-sided p-value of the paired t-test (NaN with fewer than 2 pairs; 0 or 1 when
            every pair differs by the same amount).
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
    if len(diffs) < MIN_PAIRS:
        return PairedTest(est, math.nan)
    if all(d == diffs[0] for d in diffs):
        return PairedTest(est, 0.0 if diffs[0] != 0 else 1.0)
    result = stats.ttest_rel(treated, control)
    return PairedTest(est, float(result.pvalue))


def adjust_p_values(p_values: Sequence[float], correction: str = "holm") -> list[float]:
    """Adjusted p-values of a family of tests, in the order given.

    The family is the p-values that exist: NaN entries (tests with too few pairs, never run) stay
    NaN and do not count towards its size ``m``.

    * ``"holm"`` (Holm-Bonferroni step-down): sort ascending, ``p_(i) * (m - i + 1)`` for i = 1..m,
      made non-decreasing by a running maximum and capped at 1. Controls the family-wise error rate
      like Bonferroni, never less powerful.
    * ``"bonferroni"``: ``min(1, m * p)``.
    * ``"none"``: the raw p-values (each test at alpha on its own).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; valid choices: {', '.join(CORRECTIONS)}")
    out = [float(p) for p in p_values]
    present = [i for i, p in enumerate(out) if not math.isnan(p)]
    m = len(present)
    if correction == "bonferroni":
        for i in present:
            out[i] = min(1.0, m * out[i])
    elif correction == "holm":
        running = 0.0
        # Stable sort: ties keep their order, and get the same adjusted value via the running max.
        for rank, i in enumerate(sorted(present, key=lambda j: out[j])):
            running = max(running, min(1.0, (m - rank) * out[i]))
            out[i] = running
    return out


@dataclass(frozen=True)
class AdjustedP:
    """One test's p-value within its family: raw, adjusted, and how it was adjusted.

    Attributes:
        raw: the test's own p-value (NaN when it had too few pairs to run).
        adjusted: the p-value after ``correction`` over the family (NaN when ``raw`` is).
        correction: ``"holm"``, ``"bonferroni"`` or ``"none"``.
        family: the number of tests in the family (those with a p-value).
        alpha: the family-wise significance level ``adjusted`` is compared with.
    """

    raw: float
    adjusted: float
    correction: str = "none"
    family: int = 1
    alpha: float = SIGNIFICANCE

    @property
    def significant(self) -> bool:
        """``adjusted < alpha`` (False when there is no p-value)."""
        return not math.isnan(self.adjusted) and self.adjusted < self.alpha


def adjust(
    p_values: Sequence[float], correction: str = "holm", alpha: float = SIGNIFICANCE
) -> list[AdjustedP]:
    """:func:`adjust_p_values` with each result wrapped as an :class:`AdjustedP` of the family."""
    adjusted = adjust_p_values(p_values, correction)
    family = sum(1 for p in p_values if not math.isnan(p))
    return [
        AdjustedP(float(raw), adj, correction, family, alpha)
        for raw, adj in zip(p_values, adjusted, strict=True)
    ]


def describe_correction(correction: str, family: int, alpha: float) -> str:
    """One phrase for reports and the CLI, e.g. ``Holm-Bonferroni correction over 5 tests (family-wise
    alpha = 0.05)``."""
    tests = f"{family} test{'s' if family != 1 else ''}"
    if family == 0:
        return f"no test had enough pairs to run, so no correction applied (alpha = {alpha:g})"
    if correction == "none":
        return f"no multiple-comparison correction: {tests}, each at alpha = {alpha:g}"
    name = {"holm": "Holm-Bonferroni", "bonferroni": "Bonferroni"}.get(correction, correction)
    return f"{name} correction over {tests} (family-wise alpha = {alpha:g})"


def small_n_note(small: Sequence[tuple[str, int]], pairs: str = "pairs") -> str | None:
    """The warning a summary carries when some tests had too few pairs: which ones, and their n.

    Args:
        small: ``(what was tested, n pairs)`` of each test with fewer than :data:`MIN_PAIRS` pairs.
        pairs: what a pair is, e.g. ``"(density, seed) pairs"``.
    """
    if not small:
        return None
    listed = ", ".join(f"{label} (n = {n})" for label, n in small)
    return (
        f"too few seeds: the paired t-test needs at least {MIN_PAIRS} {pairs}, so these verdicts are "
        f"{INCONCLUSIVE}: {listed}"
    )


class PairedVerdict:
    """What every verdict over a paired test shares (a mixin for dataclasses with ``test``,
    ``n_pairs`` and ``p`` fields): the raw and adjusted p-values and whether n is too small."""

    test: PairedTest
    n_pairs: int
    p: AdjustedP

    @property
    def p_raw(self) -> float:
        return self.p.raw

    @property
    def p_adjusted(self) -> float:
        return self.p.adjusted

    @property
    def inconclusive(self) -> bool:
        """Too few pairs for the paired t-test (it needs at least ``MIN_PAIRS``)."""
        return self.n_pairs < MIN_PAIRS or math.isnan(self.p.adjusted)
