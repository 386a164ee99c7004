"""What the lottery-ticket study (Liu et al. 2019, Section 6) found: one sanity summary per lr."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunelab.spec.studies import LotteryStudy
from prunelab.summaries.sanity import SanitySummary


@dataclass
class LotterySummary:
    """One sanity summary per learning rate; their verdicts form one family, corrected together."""

    study: LotteryStudy
    per_lr: list[tuple[float, SanitySummary]]
    #: :func:`~prunelab.summaries.provenance.provenance_summary` of the study's finished runs
    provenance: dict[str, Any] = field(default_factory=dict)
    #: warnings for the report and the CLI, e.g. too few seeds for the verdicts' test
    notes: list[str] = field(default_factory=list)
    #: the one-shot arm (``study.one_shot``): per lr, the tickets pruned at once from the trained trunk
    one_shot: list[tuple[float, SanitySummary]] = field(default_factory=list)
