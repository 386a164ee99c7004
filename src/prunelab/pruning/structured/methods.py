"""The structured methods of Liu et al. 2019 ("Rethinking the Value of Network Pruning"), as a registry.

Each entry says what a method removes (``kind``), whether it looks at data, and its option defaults.
Options are shared by :func:`~prunelab.pruning.structured.large_model_hooks` (what training the large
model needs) and :func:`~prunelab.pruning.structured.prune_structured` (the pruning itself), so one
options mapping describes a method run end to end.

Keep fractions are called ``ratio`` everywhere (the fraction of a layer's filters kept); network
slimming's ``percent`` is, as in its paper's code, the fraction of BN channels *pruned*; weight-level
pruning takes a ``density`` (fraction of conv weights kept), as the rest of prunelab does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prunelab.errors import PrunelabError
from prunelab.options import as_int, as_number, merge_options
from prunelab.registry import Registry

KINDS = ("channel", "block", "weight")


@dataclass(frozen=True)
class StructuredMethod:
    """A registered structured (or Rethinking weight-level) pruning method.

    Attributes:
        name: registry name, e.g. ``"l1norm"``.
        kind: ``"channel"`` (filters/channels physically removed), ``"block"`` (residual blocks
            removed) or ``"weight"`` (a mask over conv weights; the model keeps its shape).
        needs_data: the selection looks at sampled training data (ThiNet, regression).
        options: option names and defaults.
        description: one line.
        paper: where it comes from.
    """

    name: str
    kind: str
    needs_data: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""

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

for _method in (
    StructuredMethod(
        "l1norm",
        "channel",
        False,
        {"ratio": 0.5, "config": None},
        "keep each prunable conv's filters of largest L1 norm sum|W| over (C_in, k, k); a predefined "
        "per-layer config (e.g. vgg16-a, resnet56-b) or the same keep ratio in every prunable conv",
        "Li et al. 2017, Pruning Filters for Efficient ConvNets",
    ),
    StructuredMethod(
        "slimming",
        "channel",
        False,
        {"strength": 1e-4, "percent": 0.7, "min_channels": 1},
        "train with an L1 penalty on every BN scale (grad += strength*sign(gamma)); prune the BN "
        "channels with |gamma| <= one global threshold (the percent-quantile), at least min_channels "
        "kept per layer",
        "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming",
    ),
    StructuredMethod(
        "thinet",
        "channel",
        True,
        {"ratio": 0.5, "config": None, "samples_per_class": 10, "positions": 10},
        "per layer, greedily remove the input channels of the next layer whose summed contribution "
        "to its sampled outputs has the smallest squared norm",
        "Luo et al. 2017, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression",
    ),
    StructuredMethod(
        "regression",
        "channel",
        True,
        # 50 images per class x 10 locations: enough equations for the least-squares refit of a
        # 512-wide layer kept at half (256 x 3 x 3 = 2304 unknowns per output) on CIFAR-10.
        {"ratio": 0.5, "config": None, "samples_per_class": 50, "positions": 10},
        "per layer, LASSO regression selects the next layer's input channels that reconstruct its "
        "sampled outputs, then least squares refits the next layer's weights",
        "He et al. 2017, Channel Pruning for Accelerating Very Deep Neural Networks",
    ),
    StructuredMethod(
        "sfp",
        "channel",
        False,
        {"ratio": 0.7},
        "after every epoch zero each prunable conv's filters of smallest L2 norm (they may regrow); "
        "finally remove them, keeping the ratio of filters",
        "He et al. 2018, Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks",
    ),
    StructuredMethod(
        "sss",
        "block",
        False,
        {"strength": 1e-2, "threshold": 1e-2},
        "train a scale factor on each residual block's branch with an L1 penalty (grad += "
        "strength*sign); remove the blocks whose |factor| <= threshold",
        "Huang & Wang 2018, Data-Driven Sparse Structure Selection for Deep Neural Networks",
    ),
    StructuredMethod(
        "weight_level",
        "weight",
        False,
        {"density": 0.7},
        "one-shot global magnitude pruning of the conv weights of the trained network (linear dense); "
        "a mask, not a smaller model",
        "Han et al. 2015, Learning both Weights and Connections for Efficient Neural Networks",
    ),
):
    STRUCTURED_METHODS.add(_method.name, _method)
del _method
