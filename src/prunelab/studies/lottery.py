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
from dataclasses import replace
from typing import Any

from prunelab.presets import lottery_preset
from prunelab.report.lottery import write_lottery_report
from prunelab.spec import RunSpec
from prunelab.spec.studies import LotteryStudy
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.studies.sanity import (
    adjust_verdicts,
    family_line,
    study_runs,
    summarize,
    verdict_line,
    verdict_notes,
)
from prunelab.summaries.lottery import LotterySummary
from prunelab.summaries.provenance import provenance_summary


def lottery_runs(study: LotteryStudy) -> list[RunSpec]:
    """Every run of every learning rate's sanity study, each once, in order."""
    seen: dict[str, RunSpec] = {}
    for _, _, sub in study.arms():
        for run in study_runs(sub):
            seen.setdefault(run.spec.run_hash(), run.spec)
    return list(seen.values())


def summarize_lottery(study: LotteryStudy, results: Mapping[str, dict[str, Any] | None]) -> LotterySummary:
    """Summaries per lr from finished results keyed by run hash (a missing key = not finished).

    The verdicts of all learning rates (and of the one-shot arm) are one family: their p-values are
    adjusted together with the study's correction (each lr's own summary would otherwise count a
    family of one)."""
    arms = [(lr, one_shot, summarize(sub, results)) for lr, one_shot, sub in study.arms()]
    adjusted = iter(
        adjust_verdicts([v for *_, sub in arms for v in sub.verdicts], study.correction, study.alpha)
    )
    arms = [(lr, one, replace(sub, verdicts=[next(adjusted) for _ in sub.verdicts])) for lr, one, sub in arms]
    notes = verdict_notes(
        [v for *_, sub in arms for v in sub.verdicts],
        [f"lr {lr:g}{' one-shot' if one else ''}: " for lr, one, sub in arms for _ in sub.verdicts],
    )
    for *_, sub in arms:
        sub.notes = notes
    return LotterySummary(
        study,
        [(lr, sub) for lr, one, sub in arms if not one],
        provenance=provenance_summary(results.get(spec.run_hash()) for spec in lottery_runs(study)),
        notes=notes,
        one_shot=[(lr, sub) for lr, one, sub in arms if one],
    )


def _conclusions(summary: LotterySummary) -> list[str]:
    arms = [("", summary.per_lr), (" one-shot", summary.one_shot)]
    verdicts = [v for _, group in arms for _, sub in group for v in sub.verdicts]
    lines = [
        f"  lr {lr:g}{label}: {v.method} + {v.check}: {verdict_line(v)}"
        for label, group in arms
        for lr, sub in group
        for v in sub.verdicts
    ]
    if verdicts:
        lines.append(family_line(verdicts, summary.study.correction, summary.study.alpha))
    return lines + [f"  warning: {note}" for note in summary.notes]


LOTTERY = register_study(
    StudyKind(
        "lottery",
        LotteryStudy,
        runs=lottery_runs,
        summarize=summarize_lottery,
        report=write_lottery_report,
        description="Liu et al. 2019: winning-ticket init vs random re-init over IMP levels, at two lrs",
        preset=lottery_preset,
        presets=("default", "paper"),
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
