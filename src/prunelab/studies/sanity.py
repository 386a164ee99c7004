"""The sanity-check study (Su et al. 2020): each method as is and under each sanity check, the
random-ticket baselines (random masks with uniform, ERK and smart-ratio layer-wise densities) and the
dense model, over densities and seeds; then a summary with confidence intervals and a verdict per
method and check."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunelab.errors import check_density
from prunelab.pruning.checks import CHECKS
from prunelab.pruning.methods import METHODS
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec
from prunelab.studies.stats import Estimate, PairedTest, mean_ci, paired_test
from prunelab.training.config import TrainConfig

ALL_CHECKS = ("random_labels", "random_pixels", "shuffle_mask", "shuffle_weights", "reinit", "invert")
RANDOM_TICKETS = ("uniform", "erk", "smart_ratio")
SIGNIFICANCE = 0.05


class SanityStudy(BaseModel):
    """The study's grid.

    Attributes:
        methods: methods to check.
        densities: kept fractions of prunable weights.
        seeds: run seeds (each seed pairs every variant at a density).
        checks: checks to apply; data checks are skipped for data-free methods.
        random_tickets: allocations for the random-mask baselines.
        include_dense: also train the unpruned model per seed (it is also the trunk that the
            trained-weights tickets score, so it is trained once either way).
        imp_fraction: when set, trained-weights methods (lottery, rewinding, ...) reach each
            density by iterative magnitude pruning, removing this fraction of the remaining
            weights per round; every density must then be ``(1 - imp_fraction) ** k``. None: one-shot.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "sanity"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[str, ...] = ("snip", "grasp", "synflow", "magnitude")
    densities: tuple[float, ...] = (0.1, 0.02)
    seeds: tuple[int, ...] = (0, 1, 2)
    checks: tuple[str, ...] = ALL_CHECKS
    random_tickets: tuple[str, ...] = RANDOM_TICKETS
    include_dense: bool = True
    imp_fraction: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _imp_levels(self) -> SanityStudy:
        for density in self.densities:
            self.imp_rounds(density)
        return self

    def imp_rounds(self, density: float) -> int:
        """IMP rounds k with ``(1 - imp_fraction) ** k == density`` (1 when one-shot)."""
        if self.imp_fraction is None:
            return 1
        rounds = max(1, round(math.log(density) / math.log(1 - self.imp_fraction)))
        if not math.isclose((1 - self.imp_fraction) ** rounds, density, rel_tol=1e-6):
            raise ValueError(
                f"density {density:g} is not an IMP level of fraction {self.imp_fraction:g}; "
                f"valid: (1 - {self.imp_fraction:g})**k, e.g. {imp_densities(range(1, 4), self.imp_fraction)}"
            )
        return rounds

    def pruning(self, method: str, density: float, checks: tuple[str, ...] = ()) -> PruningSpec:
        """The method's pruning spec at ``density`` (with IMP rounds for trained-weights methods)."""
        ticket = {"rounds": self.imp_rounds(density)} if METHODS.get(method).ticket is not None else None
        return PruningSpec(method=method, density=density, checks=checks, ticket=ticket)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(METHODS.get(m).name for m in value)

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(CHECKS.get(c).name for c in value)

    @field_validator("densities")
    @classmethod
    def _densities(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(check_density(d) for d in value)

    def applicable_checks(self, method: str) -> list[str]:
        """Data checks only for methods whose mask can depend on data (scoring batch or trunk)."""
        uses_data = METHODS.get(method).uses_training_data
        return [c for c in self.checks if uses_data or not CHECKS.get(c).needs_data]


def imp_densities(levels: Sequence[int] | range, fraction: float = 0.2) -> list[float]:
    """Densities after ``k`` IMP rounds removing ``fraction`` of the remaining weights each."""
    from prunelab.spec import canonical_density

    return [canonical_density((1 - fraction) ** k) for k in levels]


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
class StudyRun:
    variant: Variant
    density: float
    seed: int
    spec: RunSpec


def study_runs(study: SanityStudy) -> list[StudyRun]:
    """Every run of the study, deduplicated by spec hash, in a stable order."""
    runs: list[StudyRun] = []
    seen: set[str] = set()

    def add(variant: Variant, density: float, seed: int, pruning: PruningSpec | None) -> None:
        spec = RunSpec(data=study.data, model=study.model, pruning=pruning, train=study.train, seed=seed)
        if spec.run_hash() not in seen:
            seen.add(spec.run_hash())
            runs.append(StudyRun(variant, density, seed, spec))

    for seed in study.seeds:
        if study.include_dense:
            add(Variant("dense", "dense", "none", "none"), 1.0, seed, None)
        for density in study.densities:
            for allocation in study.random_tickets:
                pruning = PruningSpec(method="random", density=density, allocation=allocation)
                add(
                    Variant("random_ticket", "random", "none", pruning.allocation or allocation),
                    density,
                    seed,
                    pruning,
                )
            for method in study.methods:
                default_alloc = METHODS.get(method).allocation
                add(
                    Variant("method", method, "none", default_alloc),
                    density,
                    seed,
                    study.pruning(method, density),
                )
                for check in study.applicable_checks(method):
                    add(
                        Variant("method", method, check, default_alloc),
                        density,
                        seed,
                        study.pruning(method, density, (check,)),
                    )
    return runs


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

    def cell(self, label: str, density: float) -> Cell | None:
        for c in self.cells:
            if c.variant.label == label and math.isclose(c.density, density):
                return c
        return None


def summarize(
    study: SanityStudy, runs: Sequence[StudyRun], results: Sequence[dict[str, Any] | None]
) -> SanitySummary:
    """Aggregate finished runs (``results[i]`` belongs to ``runs[i]``; None = not finished)."""
    acc: dict[tuple[Variant, float], dict[int, float]] = defaultdict(dict)
    per_layer: dict[tuple[str, float], list[tuple[str, float]]] = {}
    dense_values: list[float] = []
    collapsed: dict[tuple[str, float], list[str]] = {}
    missing = 0
    for run, result in zip(runs, results, strict=True):
        if not result or result.get("status") != "done" or result.get("final_test_acc") is None:
            missing += 1
            continue
        value = float(result["final_test_acc"])
        if run.variant.group == "dense":
            dense_values.append(value)
            continue
        acc[(run.variant, run.density)][run.seed] = value
        key = (run.variant.label, run.density)
        empty = [row["name"] for row in result.get("per_layer", []) if row["kept"] == 0]
        if empty:
            collapsed.setdefault(key, sorted(set(collapsed.get(key, [])) | set(empty)))
        if run.variant.check in ("none", "shuffle_mask") and key not in per_layer and result.get("per_layer"):
            per_layer[key] = [(row["name"], row["kept"] / row["total"]) for row in result["per_layer"]]

    cells = [
        Cell(variant, density, mean_ci(list(values.values())), tuple(values.values()))
        for (variant, density), values in acc.items()
    ]
    method_order = {m: i for i, m in enumerate(study.methods)}
    check_order = {c: i for i, c in enumerate(("none", *study.checks))}
    cells.sort(
        key=lambda c: (
            c.variant.group != "method",
            method_order.get(c.variant.method, len(method_order)),
            check_order.get(c.variant.check, len(check_order)),
            c.variant.allocation,
            -c.density,
        )
    )

    verdicts: list[Verdict] = []
    for method in study.methods:
        base_variant = Variant("method", method, "none", METHODS.get(method).allocation)
        for check in study.applicable_checks(method):
            treated_variant = Variant("method", method, check, base_variant.allocation)
            treated, control = [], []
            for density in study.densities:
                base = acc.get((base_variant, density), {})
                other = acc.get((treated_variant, density), {})
                for seed in sorted(set(base) & set(other)):
                    treated.append(other[seed])
                    control.append(base[seed])
            if control:
                verdicts.append(Verdict(method, check, paired_test(treated, control), len(control)))

    comparison: list[dict[str, Any]] = []
    for method in study.methods:
        base_variant = Variant("method", method, "none", METHODS.get(method).allocation)
        for allocation in study.random_tickets:
            ticket = Variant("random_ticket", "random", "none", allocation)
            treated, control = [], []
            for density in study.densities:
                mine, theirs = acc.get((base_variant, density), {}), acc.get((ticket, density), {})
                for seed in sorted(set(mine) & set(theirs)):
                    treated.append(mine[seed])
                    control.append(theirs[seed])
            if control:
                comparison.append(
                    {
                        "method": method,
                        "ticket": ticket.label,
                        "test": paired_test(treated, control),
                        "n_pairs": len(control),
                    }
                )

    return SanitySummary(
        study=study,
        cells=cells,
        verdicts=verdicts,
        dense=mean_ci(dense_values) if dense_values else None,
        per_layer=per_layer,
        missing=missing,
        ticket_comparison=comparison,
        collapsed=collapsed,
    )
