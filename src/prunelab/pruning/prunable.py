"""Which parameters may be pruned: the prunable-set policy and the ordered list of prunable layers.

Default (the three papers' common ground): every conv and linear *weight*, in module registration
order; biases and normalisation parameters never. Options cover the papers' variants: conv only
(Rethinking's weight-level pruning, LT in Su et al.), the first layer kept dense, and the last
layer's keep ratio fixed (Su et al.'s linear layer at 0.3, Random_Pruning's uniform+ floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from prunelab.errors import PrunelabError, check_density

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class PrunableSet(BaseModel):
    """The prunable-set policy.

    Attributes:
        scope: ``"conv_linear"`` (every conv and linear weight) or ``"conv"`` (conv weights only).
        first_layer_dense: exclude the first conv/linear layer from pruning (it stays dense).
        last_layer_density: if set, the last prunable layer keeps exactly this fraction of its
            weights and the allocation spreads the rest of the budget over the other layers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Literal["conv_linear", "conv"] = "conv_linear"
    first_layer_dense: bool = False
    last_layer_density: float | None = None

    @field_validator("last_layer_density")
    @classmethod
    def _valid_density(cls, value: float | None) -> float | None:
        return None if value is None else check_density(value, what="last_layer_density")


@dataclass(frozen=True)
class Layer:
    """One prunable weight tensor.

    Attributes:
        name: parameter name in ``model.named_parameters()``, e.g. ``"layer1.0.conv1.weight"``.
        kind: ``"conv"`` or ``"linear"``.
        shape: weight shape, ``(out, in, *kernel)`` for convs and ``(out, in)`` for linear layers.
        index: position among all conv/linear layers of the model (0 = first), registration order.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    index: int

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def all_weight_layers(model: nn.Module) -> list[Layer]:
    """Every conv and linear weight of ``model`` in registration order (before any policy)."""
    layers: list[Layer] = []
    for module_name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            kind = "conv"
        elif isinstance(module, nn.Linear):
            kind = "linear"
        else:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        layers.append(Layer(name, kind, tuple(module.weight.shape), len(layers)))
    return layers


def prunable_layers(model: nn.Module, policy: PrunableSet | None = None) -> list[Layer]:
    """The layers ``policy`` allows to prune, in registration order.

    Raises:
        PrunelabError: if the policy leaves nothing to prune, or fixes the last layer's density
            while that layer is outside the prunable set.
    """
    policy = policy or PrunableSet()
    layers = all_weight_layers(model)
    if not layers:
        raise PrunelabError("the model has no conv or linear weights to prune")
    selected = [layer for layer in layers if policy.scope == "conv_linear" or layer.kind == "conv"]
    if policy.first_layer_dense:
        selected = [layer for layer in selected if layer.index != 0]
    if not selected:
        raise PrunelabError(f"the prunable-set policy {policy.model_dump()} leaves no layer to prune")
    if policy.last_layer_density is not None and selected[-1].index != layers[-1].index:
        raise PrunelabError(
            "last_layer_density is set but the model's last layer is not prunable under scope "
            f"{policy.scope!r}; use scope 'conv_linear'"
        )
    return selected
