"""What a sanity-check study found: accuracy per variant and density, a verdict per method and check,
random-ticket comparisons. Built by :func:`prunelab.studies.sanity.summarize`, rendered by
:mod:`prunelab.report.sanity`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prunelab.pruning.methods import METHODS
from prunelab.spec.studies import SanityStudy
from prunelab.summaries.stats import INCONCLUSIVE, AdjustedP, Estimate, PairedTest, PairedVerdict


def ticket_family(method: str, allocation: str | None = None) -> str:
    """Su et al.'s families: initial tickets (scored or kept at init), partially-trained tickets
    (kept trained or early-rewound weights), hybrid tickets, random tickets."""
    entry = METHODS.get(method)
    if method == "random":
        return "random ticket"
    if entry.ticket is None:
        return "initial ticket"
    if (allocation or entry.allocation).startswith("smart_ratio"):
        return "hybrid ticket"
    return "initial ticket" if entry.ticket.get("keep") == 0 else "partially-trained ticket"


@dataclass(frozen=True)
class Variant:
    """What a run is within the study: ``group`` is "method", "random_ticket" or "dense"."""

    group: str
    method: str
    check: str  # "none" for the unchecked method
    allocation: str

    @property
    def label(self) -> str:
        if self.group == "dense":
            return "dense"
        if self.group == "random_ticket":
            return f"random ticket ({self.allocation})"
        return self.method if self.check == "none" else f"{self.method} + {self.check}"


@dataclass(frozen=True)
class Cell:
    """One variant at one density: test accuracy (fraction) over seeds."""

    variant: Variant
    density: float
    accuracy: Estimate
    values: tuple[float, ...]


@dataclass(frozen=True)
class Verdict(PairedVerdict):
    """Does ``check`` hurt ``method``? Paired over (density, seed) against the unchecked method.

    Attributes:
        test: the paired t-test of checked minus unchecked accuracy (its ``p_value`` is the raw p).
        n_pairs: the (density, seed) pairs the test used.
        p: the raw and the adjusted p-value within the study's family of verdicts; ``passes`` and
            ``conclusion`` are decided on the adjusted one.
    """

    method: str
    check: str
    test: PairedTest
    n_pairs: int
    p: AdjustedP

    @property
    def conclusion(self) -> str:
        diff = self.test.diff.mean
        if self.inconclusive:
            return INCONCLUSIVE
        if self.p.significant and diff < 0:
            return "hurts: the method uses this information"
        if self.p.significant and diff > 0:
            return "helps: the check improves on the method"
        return "no significant effect: the method does not rely on it"

    @property
    def passes(self) -> bool:
        """True when the check significantly hurts (adjusted p), i.e. the method passes this check."""
        return not self.inconclusive and self.p.significant and self.test.diff.mean < 0


@dataclass
class SanitySummary:
    """Everything the report shows.

    ``ticket_comparison`` rows hold ``method``, ``ticket`` (label), ``test`` (paired t-test of method
    minus ticket), ``n_pairs`` and ``p`` (:class:`AdjustedP` within the family of ticket comparisons,
    adjusted separately from the verdicts with the study's correction).
    """

    study: SanityStudy
    cells: list[Cell]
    verdicts: list[Verdict]
    dense: Estimate | None
    per_layer: dict[tuple[str, float], list[tuple[str, float]]] = field(default_factory=dict)
    missing: int = 0
    ticket_comparison: list[dict[str, Any]] = field(default_factory=list)
    #: (variant label, density) -> layers left with no weight at all (layer collapse), any seed
    collapsed: dict[tuple[str, float], list[str]] = field(default_factory=dict)
    #: :func:`~prunelab.summaries.provenance.provenance_summary` of the study's finished runs
    provenance: dict[str, Any] = field(default_factory=dict)
    #: warnings for the report and the CLI, e.g. too few seeds for the verdicts' test
    notes: list[str] = field(default_factory=list)
    #: (variant label, density) -> metric name -> mean over seeds (when the study evaluates beyond accuracy)
    metrics: dict[tuple[str, float], dict[str, Estimate]] = field(default_factory=dict)

    def cell(self, label: str, density: float) -> Cell | None:
        for c in self.cells:
            if c.variant.label == label and math.isclose(c.density, density):
                return c
        return None
