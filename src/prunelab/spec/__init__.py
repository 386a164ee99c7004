"""Typed, validated experiment specs. A run's canonical JSON (non-default fields only, sorted keys)
is hashed into the name of its run directory, so re-running a spec finds, resumes or skips it.

Backward compatibility rule: a new field must default to the old behaviour, so old specs keep
their canonical form and their hash (``tests/test_spec.py`` pins literal hashes).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prunelab.errors import PrunelabError, check_density
from prunelab.pruning.allocation import ALLOCATIONS
from prunelab.pruning.checks import CHECKS
from prunelab.pruning.methods import METHODS
from prunelab.pruning.prunable import PrunableSet
from prunelab.registry import Registry
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import FINETUNE_LR, finetune_epochs_default

SPEC_VERSION = "prunelab-run-v1"
OptionValue = int | float | str | bool | list[int] | list[float]


class _RegistryEntrySpec(BaseModel):
    """A registry name (validated against the registry, lower-cased) and its options."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    options: dict[str, OptionValue] = Field(default_factory=dict)

    #: ``"module:ATTRIBUTE"`` of the registry the name must be in (imported lazily: no cycles).
    registry_path: ClassVar[str]

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        module, attribute = cls.registry_path.split(":")
        registry: Registry[Any] = getattr(importlib.import_module(module), attribute)
        registry.get(value)
        return value.lower()


class DataSpec(_RegistryEntrySpec):
    """Which dataset (a registry name) and its options."""

    registry_path: ClassVar[str] = "prunelab.data:DATASETS"
    name: str = "mnist1d"


class ModelSpec(_RegistryEntrySpec):
    """Which model (a registry name) and its constructor options.

    A model factory (any callable returning an ``nn.Module``, e.g. a function or an ``nn.Module``
    class) may stand in for the name, here or wherever a spec takes a model: it is registered under
    its ``__name__`` (see :func:`prunelab.plugins.model_factory_name`), which then names the runs.
    """

    registry_path: ClassVar[str] = "prunelab.models:MODELS"
    name: str = "mlp"

    @model_validator(mode="before")
    @classmethod
    def _factory(cls, data: Any) -> Any:
        from prunelab.plugins import model_factory_name

        if callable(data):
            return {"name": model_factory_name(data)}
        if isinstance(data, dict) and callable(data.get("name")):
            return {**data, "name": model_factory_name(data["name"])}
        return data


def canonical_density(density: float) -> float:
    """``density`` to 10 significant digits, so 0.8**3 and 0.512 name the same run."""
    return float(f"{density:.10g}")


#: A training-data corruption a run (a dense trunk or an IMP level feeding a data check) can train on:
#: the name of a check with a data transform (random_labels, random_pixels, or a registered one).
TrainingCorruption = str


class TicketSpec(BaseModel):
    """The time points of a trained-weights method (DESIGN.md), relative to a dense *trunk* run
    with the same data, model, training recipe and seed.

    Attributes:
        score: the trunk epoch whose weights are scored (0 = init) or ``"end"``; with IMP
            (``rounds > 1``) every round after the first scores the previous round's trained ticket.
        keep: what the kept weights are rewound to: a trunk epoch (0 = the initialisation: lottery
            ticket; k > 0: weight rewinding) or ``"end"`` (the weights that were scored, i.e. the
            trained ones: learning-rate rewinding and fine-tuning).
        retrain: ``"restart"`` the full lr schedule (lottery ticket, lr rewinding), ``"continue"``
            it from epoch ``keep`` (weight rewinding trains epochs keep..E-1), or ``"finetune"`` at
            the constant ``finetune_lr`` for ``finetune_epochs``.
        rounds: IMP rounds k: train, prune, rewind, k times; round j keeps density ``d**(j/k)``
            of the prunable weights, so a fixed fraction ``1 - d**(1/k)`` of the remaining weights
            goes each round (20% for ``d = 0.8**k``). 1 = one-shot.
        finetune_lr: the fine-tuning learning rate.
        finetune_epochs: fine-tuning epochs; None = a quarter of the training epochs (40 of 160).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    score: int | Literal["end"] = "end"
    keep: int | Literal["end"] = 0
    retrain: Literal["restart", "continue", "finetune"] = "restart"
    rounds: int = Field(1, ge=1)
    finetune_lr: float = Field(FINETUNE_LR, gt=0)
    finetune_epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> TicketSpec:
        for name in ("score", "keep"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must be an epoch >= 0 or 'end', got {value}")
        if self.retrain == "continue" and not (isinstance(self.keep, int) and self.keep > 0):
            raise ValueError(
                f"retrain 'continue' resumes the schedule at the rewound epoch, so keep must be an "
                f"epoch > 0, got {self.keep!r}; valid: keep=k with retrain=continue, or retrain=restart"
            )
        if self.rounds > 1 and self.score != "end":
            raise ValueError(
                f"IMP (rounds={self.rounds}) scores each round's trained ticket, so score must be "
                f"'end', got {self.score!r}"
            )
        return self

    def finetune_epochs_for(self, epochs: int) -> int:
        """Fine-tuning epochs for a recipe of ``epochs`` training epochs."""
        return self.finetune_epochs if self.finetune_epochs is not None else finetune_epochs_default(epochs)


class PruningSpec(BaseModel):
    """How to prune: method, density (kept fraction of prunable weights), allocation, checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: str
    density: float
    allocation: str | None = None
    checks: tuple[str, ...] = ()
    prunable: PrunableSet = Field(default_factory=PrunableSet)
    options: dict[str, OptionValue] = Field(default_factory=dict)
    ticket: TicketSpec | None = None
    #: How a random method's positions are drawn: ``exact`` per-layer counts (Su et al.) or
    #: ``bernoulli`` per weight with the layer's density (Random_Pruning's masks).
    sampling: Literal["exact", "bernoulli"] = "exact"
    #: SHA-256 of the mask file of a ``like:FILE`` allocation, filled in when the spec is made, so
    #: the run's hash names the mask's content, not its path (a changed file is a different run).
    like_sha256: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_ticket(cls, data: Any) -> Any:
        # Fields given for a trained-weights method override its defaults, so ``lr_rewinding``
        # with ``{rounds: 3}`` stays learning-rate rewinding.
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            try:
                method = METHODS.get(data["method"])
            except PrunelabError:
                return data
            given = data.get("ticket")
            if method.ticket is not None and (given is None or isinstance(given, dict)):
                data = {**data, "ticket": {**method.ticket, **(given or {})}}
        return data

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return METHODS.get(value).name

    @field_validator("density")
    @classmethod
    def _density(cls, value: float) -> float:
        return canonical_density(check_density(value))

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        out: list[str] = []
        for name in names:
            if name:
                canonical = CHECKS.get(name).name
                if canonical not in out:
                    out.append(canonical)
        return tuple(out)

    @model_validator(mode="after")
    def _resolve_allocation(self) -> PruningSpec:
        # The method's own default is spelled out, so "snip" and "snip + global" are one run.
        method = METHODS.get(self.method)
        if self.allocation is None:
            object.__setattr__(self, "allocation", method.allocation)
        elif not self.allocation.lower().startswith("like:"):
            object.__setattr__(self, "allocation", ALLOCATIONS.get(self.allocation).name)
        else:
            self._pin_like_file(self.allocation[5:])
        method.resolve_options(self.options, self.allocation)
        if self.sampling == "bernoulli" and (not method.random_positions or self.ticket is not None):
            raise ValueError(
                f"sampling 'bernoulli' draws positions at random: it applies to method 'random', not "
                f"{self.method!r}; valid: sampling 'exact'"
            )
        return self

    def _pin_like_file(self, path: str) -> None:
        from prunelab.integrity import file_sha256

        if not Path(path).is_file():
            raise ValueError(f"allocation like:{path}: no such mask file")
        digest = file_sha256(Path(path))
        if self.like_sha256 is None:
            object.__setattr__(self, "like_sha256", digest)
        elif self.like_sha256 != digest:
            raise ValueError(
                f"allocation like:{path}: the mask file changed since this run was specified "
                f"(sha256 {self.like_sha256[:12]}..., now {digest[:12]}...)"
            )

    @property
    def trained(self) -> bool:
        """Whether this mask comes from a trained trunk (a ticket) rather than the initialisation."""
        return self.ticket is not None


class RunSpec(BaseModel):
    """One training run: data, model, optional pruning, training recipe, seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: The executor kind (:mod:`prunelab.runs`).
    kind: ClassVar[str] = "training"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    pruning: PruningSpec | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    #: Train this run on corrupted data (a trunk, or an IMP level, whose trained weights are
    #: scored under the random-labels / random-pixels sanity check). Evaluation stays clean.
    training_corruption: TrainingCorruption | None = None

    @field_validator("training_corruption")
    @classmethod
    def _corruption(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check = CHECKS.get(value)
        if check.stage != "data":
            valid = [name for name, c in CHECKS.items() if c.stage == "data"]
            raise ValueError(f"training_corruption {value!r} is not a data check; valid: {', '.join(valid)}")
        return check.name

    @model_validator(mode="after")
    def _checkpoint_has_validation(self) -> RunSpec:
        if self.train.checkpoint == "best_validation" and "validation" not in self.data.options:
            raise ValueError(
                "train.checkpoint 'best_validation' selects an epoch on a validation hold-out: set "
                "data.options.validation (e.g. 5000, the last 5,000 training images), or use checkpoint 'final'"
            )
        return self

    @model_validator(mode="after")
    def _time_points_within_training(self) -> RunSpec:
        # A ticket that scores or rewinds at epoch k needs a trunk that trains past k; rewinding to
        # the last epoch and continuing would train 0 epochs (a silent non-result).
        ticket = self.pruning.ticket if self.pruning is not None else None
        if ticket is None:
            return self
        epochs = self.train.epochs
        for name in ("score", "keep"):
            point = getattr(ticket, name)
            if isinstance(point, int) and point > epochs:
                raise ValueError(f"ticket.{name}={point} is past the end of training ({epochs} epochs)")
        if ticket.retrain == "continue" and isinstance(ticket.keep, int) and ticket.keep >= epochs:
            raise ValueError(
                f"ticket.keep={ticket.keep} with retrain 'continue' leaves {epochs - ticket.keep} of {epochs} "
                f"epochs to train; use more epochs (train.epochs > {ticket.keep}) or an earlier keep"
            )
        return self

    def canonical(self) -> str:
        """Canonical JSON: non-default fields only, sorted keys, no whitespace."""
        body = self.model_dump(mode="json", exclude_defaults=True)
        if self.pruning is not None:
            # method and density have no defaults; keep the pruning block even if all else is default
            body["pruning"] = self.pruning.model_dump(mode="json", exclude_defaults=True)
            body["pruning"]["method"] = self.pruning.method
            body["pruning"]["density"] = self.pruning.density
            body["pruning"]["allocation"] = self.pruning.allocation
        return json.dumps({"v": SPEC_VERSION, **body}, sort_keys=True, separators=(",", ":"))

    def run_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def run_name(self) -> str:
        """Readable and unique: ``<data>-<model>-<method>-d<density>[-<checks>]-s<seed>-<hash>``."""
        parts = [self.data.name, self.model.name]
        if self.pruning is None:
            parts.append("dense")
        else:
            parts.append(self.pruning.method)
            if (
                self.pruning.allocation
                and self.pruning.allocation != METHODS.get(self.pruning.method).allocation
            ):
                parts.append(self.pruning.allocation.replace("like:", "like-").replace("/", "_")[:24])
            parts.append(f"d{self.pruning.density:g}")
            if self.pruning.ticket is not None and self.pruning.ticket.rounds > 1:
                parts.append(f"r{self.pruning.ticket.rounds}")
            parts.extend(self.pruning.checks)
        if self.training_corruption is not None:
            parts.append(f"trained-on-{self.training_corruption}")
        parts.append(f"s{self.seed}")
        parts.append(self.run_hash())
        return "-".join(parts)


def _field_names(cls: Any, seen: set[int] | None = None) -> set[str]:
    """Every field name of a pydantic model and of the models nested in it."""
    seen = seen if seen is not None else set()
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or id(cls) in seen:
        return set()
    seen.add(id(cls))
    names = set(cls.model_fields)
    for info in cls.model_fields.values():
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            names |= _field_names(arg, seen)
    return names


def format_validation_error(exc: ValidationError, cls: Any = None) -> str:
    """One line from a pydantic error: every problem (``path: message``, joined by ``; ``), with
    the likely intended field for a misspelt one when ``cls`` (the model validated) is given."""
    import difflib

    known = _field_names(cls)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden" and known:
            close = difflib.get_close_matches(str(err["loc"][-1]), sorted(known), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_model(cls: type[BaseModel], payload: Any, source: str = "spec") -> Any:
    """Validate ``payload`` as ``cls``; any problem becomes a one-line PrunelabError."""
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise PrunelabError(f"invalid {source}: {format_validation_error(exc, cls)}") from None


def load_yaml(path: str | Path) -> Any:
    """Read a YAML (or JSON) file with the safe loader; errors are one line."""
    path = Path(path)
    if not path.is_file():
        raise PrunelabError(f"spec file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PrunelabError(f"spec file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PrunelabError(f"spec file {str(path)!r} cannot be read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PrunelabError(
            f"spec file {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
