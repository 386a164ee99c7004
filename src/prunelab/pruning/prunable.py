"""Which parameters may be pruned: the prunable-set policy and the ordered list of prunable layers.

Default (the three papers' common ground): every conv and linear *weight*, in module registration
order; biases and normalisation parameters never. ``nn.MultiheadAttention``'s projection weights
count as linear layers: its packed ``in_proj_weight`` (``(3E, E)``: query, key and value stacked;
or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` when key/value widths differ) and its
``out_proj.weight`` (an ``nn.Linear``). Before, ``in_proj_weight`` (a bare Parameter, not a Linear's
weight) was silently never pruned. Options cover the papers' variants: conv only
(Rethinking's weight-level pruning, LT in Su et al.), the first layer kept dense, and the last
layer's keep ratio fixed (Su et al.'s linear layer at 0.3, Random_Pruning's uniform+ floor).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx
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
        stacked: how many independent weight matrices are stacked along dim 0 (3 for
            ``nn.MultiheadAttention.in_proj_weight``: query, key, value), so that fan-based
            allocations (ER, ERK) see each projection's own ``(out, in)``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    index: int
    stacked: int = 1

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def fan_shape(self) -> tuple[int, ...]:
        """The shape of one stacked block: ``(out / stacked, in, *kernel)``; ``shape`` if not stacked."""
        return (self.shape[0] // self.stacked, *self.shape[1:])


def _param_name(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def all_weight_layers(model: nn.Module) -> list[Layer]:
    """Every conv and linear weight of ``model`` in registration order (before any policy).

    An ``nn.MultiheadAttention`` contributes its input projection(s) where it is visited, then
    its ``out_proj`` (a child ``nn.Linear``) right after.
    """
    layers: list[Layer] = []
    for module_name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):
            layers.append(
                Layer(_param_name(module_name, "weight"), "conv", tuple(module.weight.shape), len(layers))
            )
        elif isinstance(module, nn.Linear):
            layers.append(
                Layer(_param_name(module_name, "weight"), "linear", tuple(module.weight.shape), len(layers))
            )
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:  # packed q/k/v: three (E, E) maps in one tensor
                shape = tuple(module.in_proj_weight.shape)
                layers.append(
                    Layer(_param_name(module_name, "in_proj_weight"), "linear", shape, len(layers), 3)
                )
            else:  # kdim/vdim differ from embed_dim: three separate projections
                for attr in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    weight = getattr(module, attr)
                    layers.append(
                        Layer(_param_name(module_name, attr), "linear", tuple(weight.shape), len(layers))
                    )
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


#: Call targets that add two tensors, as torch.fx records ``a + b``, ``a += b``, ``torch.add(a, b)``.
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
#: Calls whose result describes a tensor's shape rather than its values (``x.size(0) + 1`` is no
#: residual connection).
_META_METHODS = ("size", "dim", "numel")


def find_residual_addition(model: nn.Module) -> tuple[bool, str | None]:
    """``(traced, node)``: whether ``torch.fx`` could trace ``model``, and the first node (in graph
    order) that adds two distinct tensors which both depend on the input, i.e. a residual
    connection ``out + shortcut(x)``; ``None`` if there is none (a VGG-like chain, a DenseNet's
    concatenations). Modules of ``torch.nn`` are leaves, so e.g. ``nn.MultiheadAttention``'s
    internals do not count. ``model`` is not modified.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises many types on data-dependent control flow
        return False, None
    live: set[torch.fx.Node] = set()  # depends on an input tensor's values
    meta: set[torch.fx.Node] = set()  # depends on the input only through its shape
    for node in graph.nodes:
        if node.op == "placeholder":
            live.add(node)
            continue
        inputs = [n for n in node.all_input_nodes if n in live or n in meta]
        if not inputs:
            continue
        shape_only = (node.op == "call_method" and node.target in _META_METHODS) or (
            node.op == "call_function" and node.target is getattr
        )
        if shape_only or all(n in meta for n in inputs):
            meta.add(node)
            continue
        live.add(node)
        is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        if is_add:
            operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node) and a in live]
            if len(operands) == 2 and operands[0] is not operands[1]:
                return True, node.name
    return True, None
