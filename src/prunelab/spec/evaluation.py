"""What ``prunelab evaluate`` measures beyond accuracy (:class:`EvaluationConfig`) and the stored unit
of work that measures it on one finished run (:class:`EvaluationSpec`, run kind ``evaluation``):
computed once, stored beside the runs under its own hash, resumable and never recomputed unless asked.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunelab.spec import DataSpec, RunSpec
from prunelab.spec.structured import StructuredRunSpec

EVALUATION_VERSION = "prunelab-eval-v1"


class EvaluationConfig(BaseModel):
    """What ``prunelab evaluate`` measures beyond accuracy (defaults: calibration only).

    Attributes:
        calibration: ECE (``bins`` equal-width confidence bins), NLL and Brier score, with the
            reliability-diagram bins.
        bins: calibration bins (15, the standard).
        ood: out-of-distribution sets (dataset names, e.g. ``svhn`` against a CIFAR-10 model, or
            ``mnist1d_ood``); their test split is scored with ``ood_scores``.
        ood_scores: ``msp`` (maximum softmax probability) and/or ``energy``.
        attacks: ``fgsm`` and/or ``pgd``, each at every epsilon in ``epsilons``.
        epsilons: L-inf attack sizes in input pixel units before normalisation (e.g. 2/255, 8/255
            for images in [0, 1]; MNIST-1D's signals are unnormalised floats).
        pgd_steps: PGD iterations.
        pgd_step_size: PGD step (None: 2.5 * epsilon / steps).
        attack_examples: how many test examples the attacks use (the first N; None = all).
        shift: shifted test sets with the same labels (e.g. ``mnist1d_shift``, ``cifar10c``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    calibration: bool = True
    bins: int = Field(15, ge=1)
    ood: tuple[DataSpec, ...] = ()
    ood_scores: tuple[Literal["msp", "energy"], ...] = ("msp", "energy")
    attacks: tuple[Literal["fgsm", "pgd"], ...] = ()
    epsilons: tuple[float, ...] = ()
    pgd_steps: int = Field(10, ge=1)
    pgd_step_size: float | None = Field(None, gt=0)
    attack_examples: int | None = Field(1000, ge=1)
    shift: tuple[DataSpec, ...] = ()

    @field_validator("ood", "shift", mode="before")
    @classmethod
    def _bare_data(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @field_validator("epsilons")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [e for e in value if not e >= 0]
        if bad:
            raise ValueError(f"epsilon must be >= 0 (pixel units), got {bad[0]}")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _attacks_need_epsilons(self) -> EvaluationConfig:
        if self.attacks and not self.epsilons:
            raise ValueError(f"attacks {list(self.attacks)} need epsilons (e.g. [0.0, 0.1])")
        return self

    @property
    def metrics(self) -> list[str]:
        """The metric columns a study report compares (each: higher or lower is better, see
        :func:`prunelab.runs.evaluation.metric_direction`)."""
        out: list[str] = []
        if self.calibration:
            out += ["ece", "nll", "brier"]
        for data in self.ood:
            out += [f"auroc_{score}@{data.name}" for score in self.ood_scores]
            out += [f"fpr95_{score}@{data.name}" for score in self.ood_scores]
        for attack in self.attacks:
            out += [f"{attack}@{eps:g}" for eps in self.epsilons if eps > 0]
        out += [f"shift_acc@{data.name}" for data in self.shift]
        return out


class EvaluationSpec(BaseModel):
    """Metrics beyond accuracy of one finished training run (its reported checkpoint).

    The canonical form names the evaluated run by its hash and the metrics by their non-default
    fields, so the same evaluation of the same run is found again, and a re-trained run (another
    hash) gets a new one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: The executor kind (:mod:`prunelab.runs`).
    kind: ClassVar[str] = "evaluation"
    #: The evaluated run: a training run (dense, pruned at init, a ticket) or a structured one.
    run: RunSpec | StructuredRunSpec
    metrics: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def canonical(self) -> str:
        """Canonical JSON: the evaluated run's hash and the non-default metric settings."""
        body = {
            "v": EVALUATION_VERSION,
            "run": self.run.run_hash(),
            "metrics": self.metrics.model_dump(mode="json", exclude_defaults=True),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def run_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def run_name(self) -> str:
        """``eval-<evaluated run name>-<hash>``."""
        return f"eval-{self.run.run_name()}-{self.run_hash()}"
