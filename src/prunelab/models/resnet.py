"""CIFAR ResNets (He et al. 2016) with projection shortcuts, as used by Su et al. 2020 and Liu et al. 2022."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int
from prunelab.models.registry import ModelConstructor, register_model

RESNET_DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Input ``(B, in_planes, H, W)``, output ``(B, planes, H / stride, W / stride)``. The shortcut is
    a 1x1 conv + BN projection when the stride or width changes (option B), else the identity.
    Modules are registered conv1, bn1, conv2, bn2, shortcut (conv, bn): layer-wise ratio rules
    rely on this order.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, planes, H', W')``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for CIFAR: ``6n + 2`` weighted layers, ``n = (depth - 2) / 6`` blocks per stage.

    Stem ``conv3x3(C, w)-BN-ReLU``; stages ``layer1..3`` of widths ``w, 2w, 4w`` with strides 1, 2, 2;
    global average pool; ``fc = Linear(4w, num_classes)``. Input ``(B, C, H, W)``, output
    ``(B, num_classes)``. ``width = 16`` is He et al.'s network, ``width = 32`` Su et al.'s "double
    width" one. Init: conv Kaiming normal (fan_out), BN 1/0, linear PyTorch default weights
    (Kaiming uniform) with zero bias.
    """

    def __init__(
        self, depth: int, input_shape: tuple[int, int, int], num_classes: int, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise PrunelabError(f"CIFAR ResNet depth must be 6n + 2, n >= 1 (20, 32, 56, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, width, blocks, stride=1)
        self.layer2 = self._stage(width, 2 * width, blocks, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, blocks, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_conv_bn_linear_(self, linear_std=None)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.pool(out).flatten(1))


def cifar_resnet(depth: int) -> ModelConstructor:
    """A constructor ``(input_shape, num_classes, *, width=16)`` for the CIFAR ResNet-``depth``."""

    def construct(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Module:
        return CifarResNet(
            depth,
            image_shape(input_shape, f"resnet{depth}"),
            positive_int(num_classes, "num_classes"),
            positive_int(width, "width"),
        )

    construct.__name__ = construct.__qualname__ = f"resnet{depth}"
    construct.__doc__ = f"CIFAR ResNet-{depth} for images ``(C, H, W)``; ``width`` is the first stage's."
    return construct


for _depth in RESNET_DEPTHS:
    register_model(
        f"resnet{_depth}",
        family="resnet",
        input_rank=2,
        description=f"CIFAR ResNet-{_depth} (He et al.), projection shortcuts, option width=16",
    )(cifar_resnet(_depth))
del _depth
