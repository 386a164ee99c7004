"""What a sanity-check study found: accuracy per variant and density, a verdict per method and check,
random-ticket comparisons. Built by :func:`prunelab.studies.sanity.summarize`, rendered by
:mod:`prunelab.report.sanity`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prunelab.pruning.methods import METHODS
from prunelab.spec.studies import SanityStudy
from prunelab.summaries.stats import SIGNIFICANCE, Estimate, PairedTest


def ticket_family(method: str, allocation: str | None = None) -> str:
    """Su et al.'s families: initial tickets (scored or kept at init), partially-trained tickets
    (kept trained or early-rewound weights), hybrid tickets, random tickets."""
    entry = METHODS.get(method)
    if method == "random":
        return "random ticket"
    if entry.ticket is None:
        return "initial ticket"
    if (allocation or entry.allocation) == "smart_ratio":
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
class Verdict:
    """Does ``check`` hurt ``method``? Paired over (density, seed) against the unchecked method."""

    method: str
    check: str
    test: PairedTest
    n_pairs: int

    @property
    def conclusion(self) -> str:
        p, diff = self.test.p_value, self.test.diff.mean
        if math.isnan(p):
            return "inconclusive (too few pairs)"
        if p < SIGNIFICANCE and diff < 0:
            return "hurts: the method uses this information"
        if p < SIGNIFICANCE and diff > 0:
            return "helps: the check improves on the method"
        return "no significant effect: the method does not rely on it"

    @property
    def passes(self) -> bool:
        """True when the check significantly hurts, i.e. the method passes this sanity check."""
        return self.test.p_value < SIGNIFICANCE and self.test.diff.mean < 0


@dataclass
class SanitySummary:
    """Everything the report shows."""

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

    def cell(self, label: str, density: float) -> Cell | None:
        for c in self.cells:
            if c.variant.label == label and math.isclose(c.density, density):
                return c
        return None
