"""Network slimming on BN-before-conv models (PreResNet, DenseNet), as Liu et al.'s ``resprune.py`` and
``denseprune.py`` do it.

In these models a BN normalises the input of a block (PreResNet) or the running concatenation
(DenseNet), which other layers share, so its channels cannot be removed. A
:class:`~prunelab.models.selection.ChannelSelection` after such a BN lets the one conv (or the
classifier) that reads it take only the kept channels: that layer's input columns are sliced and the
selection records which channels it passes on; the BN and the shared path keep every channel. A BN
that follows a conv whose filters can be removed on their own (the bottleneck's ``bn2``, ``bn3``) is
pruned physically with that conv, as everywhere else (:func:`~.channels.remove_channels`).

One global threshold over the ``|gamma|`` of every such BN decides both (Liu et al. pool every BN2d of
the model, and in these models every BN2d is one of the two kinds).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.errors import PrunelabError
from prunelab.models.selection import ChannelSelection
from prunelab.pruning.structured.channels import (
    ChannelLayer,
    channel_layers,
    dependency_graph,
    example_input,
    remove_channels,
)
from prunelab.pruning.structured.criteria import slimming_keep


@dataclass(frozen=True)
class SelectionSite:
    """A channel selection with the BN it selects from and the layer reading its output.

    Attributes:
        bn: module name of the BatchNorm right before the selection.
        select: module name of the :class:`ChannelSelection`.
        consumer: module name of the conv or linear layer that reads the selected channels.
    """

    bn: str
    select: str
    consumer: str


_LEAVES = (_BatchNorm, ChannelSelection, nn.Conv1d, nn.Conv2d, nn.Linear)


@torch.no_grad()
def selection_sites(model: nn.Module) -> list[SelectionSite]:
    """Every channel selection of ``model``, in execution order (empty for a model without any).

    Found by running one example batch (eval mode) and recording the order in which BNs,
    selections, convs and linear layers run: a selection's BN is the layer that ran just before it,
    its consumer the first conv/linear after it.

    Raises:
        PrunelabError: when a selection does not follow a BN of its width or feed a layer reading
            exactly the selected channels.
    """
    names = {module: name for name, module in model.named_modules()}
    if not any(isinstance(m, ChannelSelection) for m in names):
        return []
    order: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda module, _inputs: order.append(module))
        for m in names
        if isinstance(m, _LEAVES)
    ]
    was_training = model.training
    model.eval()
    try:
        model(example_input(model))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    sites: list[SelectionSite] = []
    for i, module in enumerate(order):
        if not isinstance(module, ChannelSelection):
            continue
        before = order[i - 1] if i > 0 else None
        after = next((m for m in order[i + 1 :] if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)), None)
        width = int(module.kept.numel())
        reads = (
            after.in_features
            if isinstance(after, nn.Linear)
            else after.in_channels
            if isinstance(after, nn.Conv1d | nn.Conv2d) and after.groups == 1
            else None
        )
        if not isinstance(before, _BatchNorm) or before.num_features != module.channels or reads != width:
            raise PrunelabError(
                f"channel selection {names[module]!r} must follow a BatchNorm of {module.channels} channels "
                f"and feed one conv/linear layer reading its {width} channels"
            )
        sites.append(SelectionSite(names[before], names[module], names[after]))
    return sites


@torch.no_grad()
def narrow_input_(layer: nn.Module, positions: list[int]) -> None:
    """Keep only input channels ``positions`` of a conv (groups 1) or linear layer, in place."""
    if not isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
        raise PrunelabError(f"cannot narrow the input of {type(layer).__name__}")
    old = layer.weight
    index = torch.as_tensor(positions, dtype=torch.long, device=old.device)
    layer.weight = nn.Parameter(old.detach().index_select(1, index).clone(), requires_grad=old.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.in_features = len(positions)
    else:
        layer.in_channels = len(positions)


def slim_with_selections(
    model: nn.Module, percent: float, min_channels: int
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Network slimming of a model with channel selections; returns (pruned copy, kept indices).

    The BNs pooled for the threshold are every selection's BN (only its currently selected
    channels) and the BN after every independently removable conv. Channels with ``|gamma| >
    threshold`` are kept, at least ``min_channels`` per BN (see :func:`.criteria.slimming_keep`).
    Removable convs lose their other filters physically; a selection passes on only its kept
    channels and its consumer's input is sliced to match. ``model`` is not modified.

    Returns:
        the pruned copy, and kept indices: per removed-from conv (into its filters) and per
        selection module (into its BN's channels).
    """
    work = copy.deepcopy(model)
    sites = selection_sites(work)
    site_bns = {site.bn for site in sites}
    physical: list[ChannelLayer] = []
    graph = None
    if not getattr(work, "fixed_conv_filters", False):
        graph = dependency_graph(work)
        try:
            found = channel_layers(work, graph)
        except PrunelabError:
            found = []  # every BN is a selection's: nothing to remove physically
        physical = [layer for layer in found if layer.bn is not None and layer.bn not in site_bns]
    modules = dict(work.named_modules())
    gammas: dict[str, Tensor] = {}
    for site in sites:
        select = modules[site.select]
        assert isinstance(select, ChannelSelection)
        gammas[site.bn] = modules[site.bn].weight.detach()[select.kept]
    for layer in physical:
        gammas[str(layer.bn)] = modules[str(layer.bn)].weight.detach()
    if not gammas:
        raise PrunelabError(f"network slimming found no BatchNorm to prune in {type(model).__name__}")
    by_bn, _ = slimming_keep(gammas, percent, min_channels)
    # Physical removal first: the dependency graph describes the model before any input is narrowed.
    kept: dict[str, list[int]] = {layer.conv: by_bn[str(layer.bn)] for layer in physical}
    if kept and graph is not None:
        remove_channels(work, kept, graph)
    for site in sites:
        select = modules[site.select]
        assert isinstance(select, ChannelSelection)
        positions = by_bn[site.bn]  # positions among the currently selected channels
        current = select.selected()
        select.select_([current[p] for p in positions])
        if len(positions) < len(current):
            narrow_input_(modules[site.consumer], positions)
        kept[site.select] = select.selected()
    return work, kept
