"""DenseNet for CIFAR (Huang et al. 2017), as in Liu et al. 2017/2019's network slimming code
(``cifar/network-slimming/models/densenet.py``): DenseNet-40 with growth rate 12.

Basic (non-bottleneck) dense layers ``bn1 -> select -> relu -> conv1 (3x3, growth filters)``, their
output concatenated to their input; transitions ``bn1 -> select -> relu -> conv1 (1x1, no
compression) -> 2x2 average pool``; after the last block ``bn -> select -> relu``, global average pool,
``fc``. Every BN sits before a conv and reads the concatenation that later layers share, so network
slimming prunes BN channels only through the :class:`~prunelab.models.selection.ChannelSelection`
after it: the conv that follows reads fewer channels, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_scheme, init_weights_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.models.selection import (
    ChannelSelection,
    selected_count,
    selected_option,
    selection_entries,
)
from prunelab.options import as_positive_float

DENSENET_DEPTHS = (40,)
#: Liu et al.'s network-slimming models: conv ``N(0, sqrt(2/(k*k*C_out)))``, linear left at PyTorch's
#: default, BN scales 0.5.
DENSENET_INIT = "conv_fan_out_linear_default"
DENSENET_BN_GAMMA = 0.5


class DenseLayer(nn.Module):
    """``cat(x, conv1(relu(select(bn1(x)))))``: ``(B, C, H, W)`` -> ``(B, C + growth, H, W)``."""

    def __init__(self, in_planes: int, growth: int, selected: Sequence[int] | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = ChannelSelection(in_planes, selected)
        self.conv1 = nn.Conv2d(selected_count(selected, in_planes), growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C + growth, H, W)``."""
        return torch.cat((x, self.conv1(F.relu(self.select(self.bn1(x))))), 1)


class Transition(nn.Module):
    """``avg_pool2(conv1(relu(select(bn1(x)))))`` with a 1x1 conv: ``(B, C, H, W)`` -> ``(B, out, H/2, W/2)``."""

    def __init__(self, in_planes: int, out_planes: int, selected: Sequence[int] | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = ChannelSelection(in_planes, selected)
        self.conv1 = nn.Conv2d(selected_count(selected, in_planes), out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, out, H / 2, W / 2)`` (a map of 1 pixel is not pooled)."""
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        return F.avg_pool2d(out, 2) if min(out.shape[-2:]) >= 2 else out


class DenseNet(nn.Module):
    """DenseNet-``depth`` (``depth = 3n + 4``): 3 dense blocks of ``n`` layers, growth ``growth``.

    Stem ``conv3x3(C, stem)`` (``stem = 2 * growth`` by default); ``dense1, trans1, dense2, trans2, dense3`` (transitions keep the
    width: Liu et al.'s ``compressionRate = 1``); ``bn -> select -> relu``; global average pool; ``fc =
    Linear(selected, num_classes)``. Input ``(B, C, H, W)``, output ``(B, num_classes)``. ``selected``
    gives each selection layer's kept channels, in module order (every dense layer and transition,
    then the final one). Init: scheme ``init``, then every BN2d scale ``bn_gamma``.
    """

    #: Each layer adds exactly ``growth`` channels, so no conv's filters can be removed (structured
    #: pruning reads this; network slimming prunes through the channel selections instead).
    fixed_conv_filters = True

    def __init__(
        self,
        depth: int,
        input_shape: tuple[int, int, int],
        num_classes: int,
        growth: int = 12,
        *,
        stem: int | None = None,
        selected: Sequence[Sequence[int] | None] | None = None,
        init: str = DENSENET_INIT,
        bn_gamma: float = DENSENET_BN_GAMMA,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 3
        chosen = list(selected) if selected is not None else [None] * (3 * n + 3)
        channels, index = 2 * growth if stem is None else stem, 0
        self.conv1 = nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for block in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth, chosen[index]))
                channels += growth
                index += 1
            stages.append(nn.Sequential(*layers))
            if block < 2:
                stages.append(Transition(channels, channels, chosen[index]))
                index += 1
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.select = ChannelSelection(channels, chosen[index])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(selected_count(chosen[index], channels), num_classes)
        init_weights_(self, init)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, bn_gamma)

    def structure_options(self) -> dict[str, list[list[int] | None]]:
        """The ``selected`` option describing this (pruned) network."""
        return {"selected": selection_entries(self)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = self.trans1(self.dense1(self.conv1(x)))
        out = self.dense3(self.trans2(self.dense2(out)))
        out = F.relu(self.select(self.bn(out)))
        return self.fc(self.pool(out).flatten(1))


def _selection_channels(depth: int, growth: int, stem: int) -> list[int]:
    """Input channels of each selection layer, in module order."""
    n = (depth - 4) // 3
    counts, channels = [], stem
    for block in range(3):
        for _ in range(n):
            counts.append(channels)
            channels += growth
        if block < 2:
            counts.append(channels)
    return [*counts, channels]


def densenet(depth: int) -> ModelConstructor:
    """A constructor for the CIFAR DenseNet-``depth`` (``depth = 3n + 4``); options in its docstring."""
    if depth < 7 or (depth - 4) % 3:
        raise PrunelabError(f"DenseNet depth must be 3n + 4, n >= 1 (7, 10, ..., 40), got {depth!r}")
    name = f"densenet{depth}"
    n = (depth - 4) // 3

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        growth: int = 12,
        stem: int | None = None,
        selected: Sequence[Sequence[int] | None] | None = None,
        init: str = DENSENET_INIT,
        bn_gamma: float = DENSENET_BN_GAMMA,
    ) -> nn.Module:
        rate = positive_int(growth, f"{name} option growth")
        first = 2 * rate if stem is None else positive_int(stem, f"{name} option stem")
        return DenseNet(
            depth,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            rate,
            stem=first,
            selected=selected_option(selected, _selection_channels(depth, rate, first), name),
            init=init_scheme(init, name),
            bn_gamma=as_positive_float(bn_gamma, f"{name} option bn_gamma"),
        )

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (
        f"DenseNet-{depth} for images ``(C, H, W)``: 3 dense blocks of {n} basic layers, transitions without "
        "compression, as Liu et al.'s network-slimming densenet.\n\n"
        "Options: ``growth`` (growth rate, 12), ``stem`` (the first conv's filters, 2 * growth as Liu et "
        "al.'s PyTorch code; Huang et al.'s and the slimming paper's Torch DenseNet-40 use 16), ``selected`` (per channel selection layer, in module order: "
        "kept channel indices or null for all), "
        f"``init`` (``{DENSENET_INIT}``: conv ``N(0, sqrt(2/(k*k*C_out)))``, fc weight and bias PyTorch "
        "default ``U(-1/sqrt(n_in), 1/sqrt(n_in))``; other schemes as for the ResNets), ``bn_gamma`` "
        f"(every BN2d's initial scale, {DENSENET_BN_GAMMA} as Liu et al.)."
    )
    return construct


for _depth in DENSENET_DEPTHS:
    register_model(
        f"densenet{_depth}",
        # Closest known family: no residual blocks (so no block removal) and, for Su et al.'s smart
        # ratios, the non-ResNet rule (their code gives every arch but 'resnet' the VGG variant).
        family="vgg",
        input_rank=2,
        description=f"CIFAR DenseNet-{_depth} (growth 12) with channel selection (network slimming)",
    )(densenet(_depth))
del _depth
