"""The registry of structured methods (Liu et al. 2019, "Rethinking the Value of Network Pruning").

Each entry carries its behaviour: ``prune`` turns a trained large model into a pruned one and,
for methods that train the large model specially, ``training_hooks`` says what that training needs.
Options are shared by both (:func:`~prunelab.pruning.structured.large_model_hooks` and
:func:`~prunelab.pruning.structured.prune_structured` resolve them the same way), so one options
mapping describes a method run end to end. The built-ins are registered by :mod:`.builtin`; a new
method is one :class:`StructuredMethod` passed to :func:`register_structured_method` (a channel
method only needs a keep function, see :func:`~prunelab.pruning.structured.channel_method`).

Keep fractions are called ``ratio`` everywhere (the fraction of a layer's filters kept); network
slimming's ``percent`` is, as in its paper's code, the fraction of BN channels *pruned*; weight-level
pruning takes a ``density`` (fraction of conv weights kept), as the rest of prunelab does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError
from prunelab.options import as_int, as_number, merge_options
from prunelab.registry import Registry

if TYPE_CHECKING:
    from prunelab.pruning.structured.api import PrunedModel
    from prunelab.pruning.structured.hooks import TrainingHooks

#: What ``prune_structured(data=...)`` passes on: a bundle, an ``(inputs, targets)`` pair, or None.
StructuredData = DataBundle | tuple[Tensor, Tensor] | None
#: ``(model, resolved options, data, seed) -> PrunedModel``; must not modify ``model``.
PruneFn = Callable[[nn.Module, dict[str, Any], StructuredData, int], "PrunedModel"]
#: ``(large model, resolved options) -> TrainingHooks`` for the large model's training.
HooksFn = Callable[[nn.Module, dict[str, Any]], "TrainingHooks"]

KINDS = ("channel", "block", "weight")


@dataclass(frozen=True)
class StructuredMethod:
    """A registered structured (or Rethinking weight-level) pruning method.

    Attributes:
        name: registry name, e.g. ``"l1norm"``.
        kind: ``"channel"`` (filters/channels physically removed), ``"block"`` (residual blocks
            removed) or ``"weight"`` (a mask over conv weights; the model keeps its shape).
        needs_data: the selection looks at sampled training data (ThiNet, regression);
            :func:`~prunelab.pruning.structured.prune_structured` then requires ``data``.
        options: option names and defaults.
        description: one line.
        paper: where it comes from.
        prune: ``(model, resolved options, data, seed) -> PrunedModel`` (keyword-only).
        training_hooks: ``(large model, resolved options) -> TrainingHooks`` for methods whose
            large model trains specially (penalties, soft zeroing); None for the others.
    """

    name: str
    kind: str
    needs_data: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    prune: PruneFn = field(kw_only=True)
    training_hooks: HooksFn | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PrunelabError(f"structured method {self.name!r}: kind must be one of {', '.join(KINDS)}")
        if not callable(self.prune):
            raise PrunelabError(f"structured method {self.name!r}: prune must be callable")

    @property
    def trains_large_model(self) -> bool:
        """Whether the large model needs special training (``training_hooks`` is set)."""
        return self.training_hooks is not None

    def resolve_options(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with ``overrides``, each validated; unknown names raise a one-line error."""
        merged = merge_options(self.options, overrides, f"method {self.name!r}")
        for key, value in list(merged.items()):
            check = _VALIDATORS.get(key)
            if check is not None and value is not None:
                merged[key] = check(value, f"{self.name} option {key}")
        return merged


def _keep_fraction(value: object, what: str) -> float:
    """A keep fraction in (0, 1]."""
    return as_number(value, what, valid="in (0, 1] (fraction kept)", accept=lambda x: 0.0 < x <= 1.0)


def _prune_fraction(value: object, what: str) -> float:
    """A pruned fraction in [0, 1)."""
    return as_number(value, what, valid="in [0, 1) (fraction pruned)", accept=lambda x: 0.0 <= x < 1.0)


def _non_negative(value: object, what: str) -> float:
    return as_number(value, what, valid=">= 0", accept=lambda x: x >= 0.0)


def _positive_int(value: object, what: str) -> int:
    return as_int(value, what, minimum=1)


def _config_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PrunelabError(f"{what} must be the name of a predefined configuration, got {value!r}")
    return value


_VALIDATORS: dict[str, Callable[[object, str], Any]] = {
    "ratio": _keep_fraction,
    "density": _keep_fraction,
    "percent": _prune_fraction,
    "strength": _non_negative,
    "threshold": _non_negative,
    "min_channels": _positive_int,
    "samples_per_class": _positive_int,
    "positions": _positive_int,
    "config": _config_name,
}

STRUCTURED_METHODS: Registry[StructuredMethod] = Registry("structured method")


def register_structured_method(method: StructuredMethod, *, overwrite: bool = False) -> StructuredMethod:
    """Register ``method`` under its name, for :func:`prune_structured` and :func:`large_model_hooks`.

    Returns ``method``.

    Raises:
        PrunelabError: if the name is taken and ``overwrite`` is false.
    """
    return STRUCTURED_METHODS.add(method.name, method, overwrite=overwrite)
