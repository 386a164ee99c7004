"""The studies' typed specs: the grid each study kind runs, validated as a whole before anything is
created or trained. The runs of a grid, its summary and its report live in :mod:`prunelab.studies`,
:mod:`prunelab.summaries` and :mod:`prunelab.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunelab.errors import check_density
from prunelab.pruning.checks import CHECKS
from prunelab.pruning.methods import METHODS
from prunelab.pruning.prunable import PrunableSet
from prunelab.spec import DataSpec, ModelSpec, OptionValue, PruningSpec, canonical_density
from prunelab.spec.evaluation import EvaluationConfig
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import FINETUNE_LR

ALL_CHECKS = ("random_labels", "random_pixels", "shuffle_mask", "shuffle_weights", "reinit", "invert")
RANDOM_TICKETS = ("uniform", "erk", "smart_ratio")
#: Default methods of the Rethinking study, in report order.
STRUCTURED_DEFAULTS = ("l1norm", "slimming", "thinet", "regression", "sfp", "sss", "weight_level")
#: Multiple-comparison corrections over a study's family of verdicts (``prunelab.summaries.stats``).
Correction = Literal["holm", "bonferroni", "none"]


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
        correction: multiple-comparison correction over the study's family of verdicts: Holm
            (default), Bonferroni or none; verdicts are decided on the adjusted p-values.
        alpha: family-wise significance level of the verdicts.
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
    #: Which weights every pruned run of the study may prune (default: every conv and linear weight;
    #: Su et al.'s lottery ticket and the Rethinking lottery code prune conv weights only).
    prunable: PrunableSet = Field(default_factory=PrunableSet)
    #: Per-method prunable sets overriding ``prunable`` (Su et al.'s code prunes conv weights only
    #: for the lottery ticket, but conv and linear weights for SNIP, GraSP and smart ratios).
    method_prunable: dict[str, PrunableSet] = Field(default_factory=dict)
    correction: Correction = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    #: How the random tickets' positions are drawn: exact per-layer counts (Su et al.) or Bernoulli
    #: per weight (Random_Pruning).
    sampling: Literal["exact", "bernoulli"] = "exact"
    #: Metrics beyond accuracy (calibration, OOD, adversarial, shift) for every run, as report columns.
    evaluate: EvaluationConfig | None = None

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
        return PruningSpec(
            method=method, density=density, checks=checks, ticket=ticket, prunable=self.prunable
        )

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
    return [canonical_density((1 - fraction) ** k) for k in levels]


class LotteryStudy(BaseModel):
    """The grid: learning rates x IMP levels x seeds, winning ticket vs random re-init.

    Attributes:
        train: the recipe; its ``lr`` is replaced by each of ``learning_rates``.
        learning_rates: the large and the small initial lr (Liu et al.: 0.1 and 0.01).
        levels: IMP levels k; level k keeps density ``(1 - imp_fraction) ** k``.
        imp_fraction: fraction of the remaining weights removed per round (20%).
        correction: multiple-comparison correction over the study's family of verdicts (one per
            lr): Holm (default), Bonferroni or none; verdicts are decided on the adjusted p-values.
        alpha: family-wise significance level of the verdicts.
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
    correction: Correction = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    #: Also prune each level in one shot from the trained trunk (Liu et al. 2019 compare both).
    one_shot: bool = False
    #: Which weights the tickets prune (Liu et al. 2019's lottery code: conv weights only).
    prunable: PrunableSet = Field(default_factory=PrunableSet)

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

    def at_lr(self, lr: float, *, one_shot: bool = False) -> SanityStudy:
        """The sanity study of the winning ticket vs ``reinit_fan`` at initial lr ``lr``: iterative
        pruning (IMP) to each level, or, with ``one_shot``, pruning the trained trunk at once."""
        return SanityStudy(
            name=f"{self.name}-lr{lr:g}" + ("-oneshot" if one_shot else ""),
            data=self.data,
            model=self.model,
            train=self.train.model_copy(update={"lr": lr}),
            methods=("lottery",),
            densities=tuple(imp_densities(self.levels, self.imp_fraction)),
            seeds=self.seeds,
            checks=("reinit_fan",),
            random_tickets=(),
            include_dense=True,
            imp_fraction=None if one_shot else self.imp_fraction,
            correction=self.correction,
            alpha=self.alpha,
            prunable=self.prunable,
        )

    def arms(self) -> list[tuple[float, bool, SanityStudy]]:
        """``(lr, one_shot, sanity study)`` for every learning rate, iterative first, then one-shot."""
        out = [(lr, False, self.at_lr(lr)) for lr in self.learning_rates]
        if self.one_shot:
            out += [(lr, True, self.at_lr(lr, one_shot=True)) for lr in self.learning_rates]
        return out


def _structured_methods() -> Any:
    # Imported lazily: the structured-pruning package pulls in torch-pruning.
    from prunelab.pruning.structured import STRUCTURED_METHODS

    return STRUCTURED_METHODS


class MethodSpec(BaseModel):
    """A structured pruning method (``prunelab.pruning.structured.STRUCTURED_METHODS``) and its options.

    Options not given take the method's defaults; only given ones enter run hashes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        registry = _structured_methods()
        registry.get(value)  # raises PrunelabError naming the valid choices
        return value.lower()

    @model_validator(mode="after")
    def _options(self) -> MethodSpec:
        _structured_methods().get(self.name).resolve_options(self.options)  # unknown/bad options raise
        return self

    @property
    def kind(self) -> str:
        """``"channel"``, ``"block"`` or ``"weight"`` (the registry's)."""
        return str(_structured_methods().get(self.name).kind)

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value, ...)`` when options are given (report rows)."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in sorted(self.options.items()))})"

    @property
    def large_regime(self) -> bool:
        """True when the method trains its own large model (its registry entry has training hooks)."""
        return bool(_structured_methods().get(self.name).trains_large_model)


class RethinkingStudy(BaseModel):
    """The study's grid and recipes.

    Attributes:
        name: names the report folder.
        data, model: dataset and the (large) model; the model must carry what the methods need
            (BN layers for slimming, residual blocks for sss).
        train: the large model's recipe; Scratch-E uses it as is, Scratch-B stretches it.
        methods: structured methods with options (a bare name means the method's defaults).
        seeds: run seeds; each seed is one large model and one pruned model per method.
        finetune_epochs: fine-tune epochs (default a quarter of ``train.epochs``: 40 of 160).
        finetune_lr: constant fine-tune learning rate (0.001 in the paper).
        max_ratio: cap on the Scratch-B FLOPs ratio (None = the CIFAR scripts: no cap).
        correction: multiple-comparison correction over the study's family of verdicts (method x
            scratch protocol): Holm (default), Bonferroni or none; verdicts are decided on the
            adjusted p-values.
        alpha: family-wise significance level of the verdicts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "rethinking"
    data: DataSpec = Field(default_factory=lambda: DataSpec(name="mnist1d"))
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="cnn1d", options={"bn": True}))
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[MethodSpec, ...] = Field(
        default_factory=lambda: tuple(MethodSpec(name=m) for m in STRUCTURED_DEFAULTS)
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_epochs: int | None = Field(None, ge=1)
    finetune_lr: float = Field(FINETUNE_LR, gt=0)
    max_ratio: float | None = Field(None, gt=0)
    correction: Correction = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    #: Pruning as architecture search (Liu et al. 2019, section 5) for these methods (names; every
    #: configured variant of each): per seed, the found architecture (Scratch-E) against a uniformly
    #: pruned one of the same parameter count and a guided one (per-stage average widths), each
    #: trained from scratch. Empty: off.
    architecture_search: tuple[str, ...] = ()

    @field_validator("methods", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        # "l1norm" and {"name": "l1norm"} are the same method; a comma-separated string is a list.
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @model_validator(mode="after")
    def _non_empty(self) -> RethinkingStudy:
        if not self.methods:
            raise ValueError("at least one method is needed")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods are listed twice: {labels}")
        names = {m.name for m in self.methods}
        for name in self.architecture_search:
            if name not in names:
                raise ValueError(
                    f"architecture_search names {name!r}, which is not among the methods {sorted(names)}"
                )
            if _structured_methods().get(name).kind != "channel":
                raise ValueError(
                    f"architecture_search needs a channel method (it compares widths), got {name!r}"
                )
        return self


#: Ratio schemes of the scaling study by default: the uniform baseline and the paper's booster.
SCALING_SCHEMES = ("uniform", "erk")


class SizeAxis(BaseModel):
    """One line of the size-scaling plot: a family of models that grows along one axis.

    Attributes:
        family: the line's label, e.g. ``"resnet"`` or ``"cnn1d"``.
        axis: ``"depth"`` or ``"width"``: which plot the line belongs to.
        models: the models, smallest first (a bare registry name or ``{name, options}``).
        values: each model's size on the axis (layers for depth, a width or multiplier for width),
            in the same order; they label the x axis.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    family: str
    axis: Literal["depth", "width"]
    models: tuple[ModelSpec, ...]
    values: tuple[float, ...]

    @field_validator("models", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @model_validator(mode="after")
    def _aligned(self) -> SizeAxis:
        if not self.models:
            raise ValueError(f"size axis {self.family!r} has no models")
        if len(self.models) != len(self.values):
            raise ValueError(
                f"size axis {self.family!r}: {len(self.models)} models but {len(self.values)} values; "
                "give one size value per model"
            )
        if list(self.values) != sorted(set(self.values)):
            raise ValueError(f"size axis {self.family!r}: values must increase, got {list(self.values)}")
        return self


class ScalingStudy(BaseModel):
    """Liu et al. 2022's size-scaling study: random pruning at init against the dense twin of each
    size, over model sizes (depth and width families) x densities x ratio schemes x seeds.

    Attributes:
        sizes: the size families (see :class:`SizeAxis`).
        densities: kept fractions of the prunable weights.
        schemes: layer-wise ratio schemes (allocation names: uniform, uniform_plus, er, erk,
            erk_plus, snip_ratio, grasp_ratio, synflow_ratio, ...), positions random.
        sampling: ``exact`` per-layer counts or ``bernoulli`` per weight (Random_Pruning's masks).
        prunable: which weights are pruned (Random_Pruning: every conv and linear weight).
        seeds: run seeds; seed s of a sparse run pairs with seed s of its dense twin.
        margin: the non-inferiority margin (accuracy fraction): random "matches" dense at a size
            when a one-sided paired t-test rejects "random is worse by margin or more".
        evaluate: metrics beyond accuracy for every run (None: accuracy only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "scaling"
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sizes: tuple[SizeAxis, ...]
    densities: tuple[float, ...] = (0.1,)
    schemes: tuple[str, ...] = SCALING_SCHEMES
    sampling: Literal["exact", "bernoulli"] = "exact"
    prunable: PrunableSet = Field(default_factory=PrunableSet)
    seeds: tuple[int, ...] = (0, 1, 2)
    margin: float = Field(0.01, ge=0, lt=1)
    correction: Correction = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    evaluate: EvaluationConfig | None = None

    @field_validator("densities")
    @classmethod
    def _densities(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(canonical_density(check_density(d)) for d in value)

    @field_validator("schemes", mode="before")
    @classmethod
    def _schemes(cls, value: Any) -> Any:
        from prunelab.pruning.allocation import ALLOCATIONS

        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        out = []
        for name in names:
            entry = ALLOCATIONS.get(name)
            if entry.needs_scores:
                raise ValueError(
                    f"scheme {name!r} ranks scores, so its positions are not random; valid: layer-wise "
                    "schemes such as uniform, erk, erk_plus, snip_ratio"
                )
            out.append(entry.name)
        return tuple(out)

    @model_validator(mode="after")
    def _non_empty(self) -> ScalingStudy:
        for what in ("sizes", "densities", "schemes", "seeds"):
            if not getattr(self, what):
                raise ValueError(f"{what} must not be empty")
        families = [(s.family, s.axis) for s in self.sizes]
        if len(set(families)) != len(families):
            raise ValueError(f"a (family, axis) pair is listed twice: {families}")
        return self

    def pruning(self, scheme: str, density: float) -> PruningSpec:
        """The random-pruning spec of ``scheme`` at ``density``."""
        return PruningSpec(
            method="random",
            density=density,
            allocation=scheme,
            prunable=self.prunable,
            sampling=self.sampling,
        )
