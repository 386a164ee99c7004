"""The lottery-ticket experiment of Liu et al. 2019 (Section 6): at each IMP level, the winning
ticket (the IMP mask with the original initialisation) against a random re-initialisation of the
same mask (He init with each layer's effective fan-in), at a large and at a small learning rate.

Their finding: at the large (standard) lr the winning-ticket initialisation brings no improvement
over random re-initialisation; only at the small lr does it help, and the small lr is worse
overall. Each learning rate is a :class:`~prunelab.studies.sanity.SanityStudy` with the
``lottery`` method under the ``reinit_fan`` check, so the verdict is a paired t-test over
(level, seed) pairs; the IMP chain is shared between the two, round by round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunelab.runners import run_specs
from prunelab.spec import DataSpec, ModelSpec
from prunelab.studies.sanity import (
    SanityStudy,
    SanitySummary,
    StudyRun,
    imp_densities,
    study_runs,
    summarize,
)
from prunelab.training.config import TrainConfig


class LotteryStudy(BaseModel):
    """The grid: learning rates x IMP levels x seeds, winning ticket vs random re-init.

    Attributes:
        train: the recipe; its ``lr`` is replaced by each of ``learning_rates``.
        learning_rates: the large and the small initial lr (Liu et al.: 0.1 and 0.01).
        levels: IMP levels k; level k keeps density ``(1 - imp_fraction) ** k``.
        imp_fraction: fraction of the remaining weights removed per round (20%).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "lottery"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    learning_rates: tuple[float, ...] = (0.1, 0.01)
    levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    imp_fraction: float = Field(0.2, gt=0, lt=1)
    seeds: tuple[int, ...] = (0, 1, 2)

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(k < 1 for k in value):
            raise ValueError(f"levels must be IMP rounds >= 1, got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("learning_rates")
    @classmethod
    def _lrs(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not (lr > 0 and math.isfinite(lr)) for lr in value):
            raise ValueError(f"learning_rates must be positive, got {list(value)}")
        return value

    def at_lr(self, lr: float) -> SanityStudy:
        """The sanity study of the winning ticket vs ``reinit_fan`` at initial lr ``lr``."""
        return SanityStudy(
            name=f"{self.name}-lr{lr:g}",
            data=self.data,
            model=self.model,
            train=self.train.model_copy(update={"lr": lr}),
            methods=("lottery",),
            densities=tuple(imp_densities(self.levels, self.imp_fraction)),
            seeds=self.seeds,
            checks=("reinit_fan",),
            random_tickets=(),
            include_dense=True,
            imp_fraction=self.imp_fraction,
        )


@dataclass
class LotterySummary:
    """One sanity summary per learning rate."""

    study: LotteryStudy
    per_lr: list[tuple[float, SanitySummary]]


def lottery_runs(study: LotteryStudy) -> list[tuple[float, SanityStudy, list[StudyRun]]]:
    """Per learning rate: its sanity study and that study's runs."""
    return [(lr, sub, study_runs(sub)) for lr, sub in ((lr, study.at_lr(lr)) for lr in study.learning_rates)]


def summarize_lottery(study: LotteryStudy, results: Mapping[str, dict[str, Any] | None]) -> LotterySummary:
    """Summaries per lr from finished results keyed by run hash (a missing key = not finished)."""
    return LotterySummary(
        study,
        [
            (lr, summarize(sub, runs, [results.get(r.spec.run_hash()) for r in runs]))
            for lr, sub, runs in lottery_runs(study)
        ],
    )


def run_lottery_study(
    study: LotteryStudy,
    runs_dir: str | Path,
    *,
    report_dir: str | Path | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> tuple[LotterySummary, Path]:
    """Run (or resume) every run of ``study``, summarise per lr and write the report.

    Returns the summary and the path of ``report.html`` (``report_dir``, default
    ``<runs_dir>/reports/<study name>``).
    """
    from prunelab.report.lottery import write_lottery_report
    from prunelab.studies import record_study

    specs = [r.spec for _, _, runs in lottery_runs(study) for r in runs]
    results = run_specs(
        specs,
        runs_dir,
        workers=workers,
        data_dir=data_dir,
        device=device,
        force=force,
        progress=progress,
        description=study.name,
    )
    summary = summarize_lottery(
        study, {spec.run_hash(): result for spec, result in zip(specs, results, strict=True)}
    )
    out = record_study(study, runs_dir, report_dir, [spec.run_name() for spec in specs], kind="lottery")
    return summary, write_lottery_report(summary, out)
