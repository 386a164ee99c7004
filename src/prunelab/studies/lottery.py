"""The lottery-ticket experiment of Liu et al. 2019 (Section 6): at each IMP level, the winning
ticket (the IMP mask with the original initialisation) against a random re-initialisation of the
same mask (He init with each layer's effective fan-in), at a large and at a small learning rate.

Their finding: at the large (standard) lr the winning-ticket initialisation brings no improvement
over random re-initialisation; only at the small lr does it help, and the small lr is worse
overall. Each learning rate is a :class:`~prunelab.spec.studies.SanityStudy` with the ``lottery``
method under the ``reinit_fan`` check, so the verdict is a paired t-test over (level, seed) pairs;
the IMP chain is shared between the two, round by round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prunelab.presets import lottery_preset
from prunelab.report.lottery import write_lottery_report
from prunelab.spec import RunSpec
from prunelab.spec.studies import LotteryStudy
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.studies.sanity import study_runs, summarize
from prunelab.summaries.lottery import LotterySummary
from prunelab.summaries.provenance import provenance_summary


def lottery_runs(study: LotteryStudy) -> list[RunSpec]:
    """Every run of every learning rate's sanity study, each once, in order."""
    seen: dict[str, RunSpec] = {}
    for lr in study.learning_rates:
        for run in study_runs(study.at_lr(lr)):
            seen.setdefault(run.spec.run_hash(), run.spec)
    return list(seen.values())


def summarize_lottery(study: LotteryStudy, results: Mapping[str, dict[str, Any] | None]) -> LotterySummary:
    """Summaries per lr from finished results keyed by run hash (a missing key = not finished)."""
    return LotterySummary(
        study,
        [(lr, summarize(study.at_lr(lr), results)) for lr in study.learning_rates],
        provenance=provenance_summary(results.get(spec.run_hash()) for spec in lottery_runs(study)),
    )


def _conclusions(summary: LotterySummary) -> list[str]:
    return [
        f"  lr {lr:g}: {v.method} + {v.check}: {v.conclusion}"
        for lr, sub in summary.per_lr
        for v in sub.verdicts
    ]


LOTTERY = register_study(
    StudyKind(
        "lottery",
        LotteryStudy,
        runs=lottery_runs,
        summarize=summarize_lottery,
        report=write_lottery_report,
        description="Liu et al. 2019: winning-ticket init vs random re-init over IMP levels, at two lrs",
        preset=lottery_preset,
        flags=(
            Flag("dataset", "Dataset name (default mnist1d)."),
            Flag("model", "Model name (default: the dataset's preset)."),
            Flag("lrs", "The large and the small initial learning rate.", "floats"),
            Flag("levels", "IMP levels 1..N.", "int"),
            Flag("imp_fraction", "Fraction of remaining weights pruned per round.", "float"),
            Flag("seeds", "Number of seeds (0..N-1).", "int"),
            Flag("epochs", "Epochs per run (default: the dataset preset's).", "int"),
            Flag("name", "Study name (names the report folder)."),
        ),
        conclusions=_conclusions,
    )
)
