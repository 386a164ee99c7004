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
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prunelab.errors import PrunelabError, check_density
from prunelab.pruning.allocation import ALLOCATIONS
from prunelab.pruning.checks import CHECKS
from prunelab.pruning.methods import METHODS
from prunelab.pruning.prunable import PrunableSet
from prunelab.registry import Registry
from prunelab.training.config import TrainConfig

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
    """Which model (a registry name) and its constructor options."""

    registry_path: ClassVar[str] = "prunelab.models:MODELS"
    name: str = "mlp"


class PruningSpec(BaseModel):
    """How to prune: method, density (kept fraction of prunable weights), allocation, checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: str
    density: float
    allocation: str | None = None
    checks: tuple[str, ...] = ()
    prunable: PrunableSet = Field(default_factory=PrunableSet)
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return METHODS.get(value).name

    @field_validator("density")
    @classmethod
    def _density(cls, value: float) -> float:
        return check_density(value)

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
        method.resolve_options(self.options)
        return self


class RunSpec(BaseModel):
    """One training run: data, model, optional pruning, training recipe, seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    pruning: PruningSpec | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0

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
            parts.extend(self.pruning.checks)
        parts.append(f"s{self.seed}")
        parts.append(self.run_hash())
        return "-".join(parts)


def format_validation_error(exc: ValidationError) -> str:
    """One line from a pydantic error: the field path, the message and the offending value."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
    message = str(err.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"{where}: {message}"


def parse_model(cls: type[BaseModel], payload: Any, source: str = "spec") -> Any:
    """Validate ``payload`` as ``cls``; any problem becomes a one-line PrunelabError."""
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise PrunelabError(f"invalid {source}: {format_validation_error(exc)}") from None


def load_yaml(path: str | Path) -> Any:
    """Read a YAML (or JSON) file with the safe loader; errors are one line."""
    path = Path(path)
    if not path.is_file():
        raise PrunelabError(f"spec file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PrunelabError(
            f"spec file {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
