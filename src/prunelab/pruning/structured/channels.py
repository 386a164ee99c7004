"""Which conv filters can be removed on their own, and their physical removal (torch-pruning).

A conv's output channels are *independently prunable* when removing one touches no other conv's or
linear layer's outputs: its dependency group (torch-pruning's ``DependencyGraph``) holds only the
conv itself, the BN after it, element-wise ops, and the input channels of the layer that consumes
it. In a VGG or the small CNNs that is every conv; in a ResNet it is the first conv of each block
(the others feed the residual sum, whose channels every block of the stage shares, so block outputs
are never pruned; this holds for option-A and option-B shortcuts alike). The analysis is generic, so
any model whose graph torch-pruning can trace works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.errors import PrunelabError

_CONVS = (nn.Conv1d, nn.Conv2d)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ChannelLayer:
    """One conv whose output channels (filters) may be removed.

    Attributes:
        conv: module name of the conv, e.g. ``"features.0"`` or ``"layer1.0.conv1"``.
        bn: module name of the BatchNorm normalising its output, or None.
        consumer: module name of the conv/linear layer that reads these channels.
        channels: the conv's output channel count ``C_out``.
    """

    conv: str
    bn: str | None
    consumer: str
    channels: int


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A random batch ``(batch, *input_shape)`` for tracing a registry model (``prunelab_build``)."""
    build = getattr(model, "prunelab_build", None)
    if not isinstance(build, dict):
        raise PrunelabError(
            "structured pruning needs a registry model (built by prunelab.build_model), got "
            f"{type(model).__name__}"
        )
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    return torch.randn((batch, *build["input_shape"]), generator=gen).to(device)


def dependency_graph(model: nn.Module) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, traced in eval mode (BN needs no batch stats)."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # torch-pruning traces the autograd graph
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input(model), verbose=False
            )
    finally:
        model.train(was_training)
    return graph


def _handler_name(handler: object) -> str:
    return str(getattr(handler, "__name__", ""))


def channel_layers(model: nn.Module, graph: tp.DependencyGraph | None = None) -> list[ChannelLayer]:
    """Every independently prunable conv of ``model``, in registration order.

    A model whose class sets ``fixed_conv_filters = True`` (DenseNet: every layer adds exactly
    ``growth`` channels to the concatenation) has none by declaration.

    Raises:
        PrunelabError: if the model has no such conv.
    """
    if getattr(model, "fixed_conv_filters", False):
        raise PrunelabError(
            f"model {type(model).__name__} fixes every conv's filter count; of the channel methods only "
            "network slimming ('slimming') prunes it, through its channel selections"
        )
    graph = graph or dependency_graph(model)
    names = {module: name for name, module in model.named_modules()}
    layers: list[ChannelLayer] = []
    for name, module in model.named_modules():
        if not isinstance(module, _CONVS) or module.groups != 1:
            continue
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, idxs=[0])
        coupled = False
        bn: str | None = None
        consumers: list[str] = []
        for dep, _ in group:
            target = dep.target.module
            handler = _handler_name(dep.handler)
            if isinstance(target, _WEIGHTED) and handler == "prune_out_channels" and target is not module:
                coupled = True  # another layer's outputs share these channels (a residual sum)
            elif isinstance(target, _WEIGHTED) and handler == "prune_in_channels":
                consumers.append(names[target])
            elif isinstance(target, _BatchNorm) and bn is None:
                bn = names[target]
        if coupled or len(consumers) != 1:
            continue  # no consumer = a model output; several = a branch point: not handled
        layers.append(ChannelLayer(name, bn, consumers[0], int(module.out_channels)))
    if not layers:
        raise PrunelabError(
            f"model {type(model).__name__} has no conv whose filters can be removed on their own"
        )
    return layers


def keep_count(channels: int, ratio: float) -> int:
    """Filters kept of ``channels`` at keep fraction ``ratio``: ``C - int(C * (1 - ratio))``, >= 1.

    This is Soft Filter Pruning's rounding (it zeros ``int(C * (1 - rate))`` filters); the tiny
    epsilon stops float error (``10 * (1 - 0.9) = 0.99999...``) from keeping one filter too many.
    """
    return max(1, channels - int(channels * (1.0 - ratio) + 1e-9))


def top_k(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest ``scores``, ties to the lower index, returned sorted ascending."""
    order = torch.sort(-scores.detach().double().cpu(), stable=True).indices
    return sorted(int(i) for i in order[:k])


def remove_channels(
    model: nn.Module, keep: Mapping[str, Sequence[int]], graph: tp.DependencyGraph | None = None
) -> None:
    """Physically remove, in place, every output channel of each conv ``keep`` does not list.

    ``keep`` maps conv module names (from :func:`channel_layers`) to the channel indices to keep.
    torch-pruning slices the conv, its BN and the consumer's input channels (and, through a
    flatten, the matching linear columns) together. ``graph`` may pass in the model's dependency
    graph when it is already built (structure unchanged since); building one costs ~1 s for a ResNet-20.

    Raises:
        PrunelabError: for a name that is not an independently prunable conv, out-of-range
            indices, or an empty keep list.
    """
    graph = graph or dependency_graph(model)
    prunable = {layer.conv: layer for layer in channel_layers(model, graph)}
    modules = dict(model.named_modules())
    for name, kept in keep.items():
        if name not in prunable:
            raise PrunelabError(
                f"conv {name!r} cannot be pruned on its own; prunable convs: {', '.join(prunable)}"
            )
        channels = prunable[name].channels
        kept_set = {int(i) for i in kept}
        if not kept_set or min(kept_set) < 0 or max(kept_set) >= channels:
            raise PrunelabError(
                f"conv {name!r}: kept channels must be a non-empty subset of 0..{channels - 1}, got {list(kept)}"
            )
        removed = [i for i in range(channels) if i not in kept_set]
        if removed:
            graph.get_pruning_group(modules[name], tp.prune_conv_out_channels, idxs=removed).prune()
