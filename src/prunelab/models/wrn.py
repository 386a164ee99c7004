"""Wide ResNets (Zagoruyko & Komodakis 2016) with pre-activation basic blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int
from prunelab.models.registry import ModelConstructor, register_model

#: (depth, widen_factor) pairs registered as ``wrn{depth}_{widen_factor}``.
WRN_VARIANTS = ((16, 4), (16, 8), (28, 2), (28, 10))


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise PrunelabError(f"Wide ResNet depth must be 6n + 4, n >= 1 (16, 22, 28, ...), got {depth!r}")


class WideBasicBlock(nn.Module):
    """Pre-activation block: ``conv2(dropout(relu(bn2(conv1(relu(bn1(x))))))) + shortcut``.

    Input ``(B, in_planes, H, W)``, output ``(B, planes, H / stride, W / stride)``. When the shape
    changes the shortcut is a 1x1 conv applied to the pre-activated input ``relu(bn1(x))`` (as in the
    authors' code), else the identity on ``x``. Modules are registered bn1, conv1, bn2, conv2,
    shortcut, so the convs come in the order conv1, conv2, shortcut.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, planes, H', W')``."""
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: ``n = (depth - 4) / 6`` wide blocks per stage.

    Stem ``conv3x3(C, 16)``; stages ``layer1..3`` of widths ``16k, 32k, 64k`` with strides 1, 2, 2;
    final BN-ReLU, global average pool, ``fc = Linear(64k, num_classes)``. Input ``(B, C, H, W)``,
    output ``(B, num_classes)``. Init as the authors' code: conv Kaiming normal (fan_out), BN 1/0,
    linear PyTorch default weights with zero bias.
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        input_shape: tuple[int, int, int],
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_depth(depth)
        if not 0.0 <= dropout < 1.0:
            raise PrunelabError(f"Wide ResNet dropout must be in [0, 1), got {dropout!r}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        self.layer1 = self._stage(widths[0], widths[1], blocks, 1, dropout)
        self.layer2 = self._stage(widths[1], widths[2], blocks, 2, dropout)
        self.layer3 = self._stage(widths[2], widths[3], blocks, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn_linear_(self, linear_std=None)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes, planes, stride, dropout)]
        layers += [WideBasicBlock(planes, planes, 1, dropout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(self.pool(out).flatten(1))


def wide_resnet(depth: int, widen_factor: int) -> ModelConstructor:
    """A constructor ``(input_shape, num_classes, *, dropout=0.0)`` for WRN-``depth``-``widen_factor``.

    Register more variants with ``register_model("wrn40_2", family="wrn", input_rank=2,
    description=...)(wide_resnet(40, 2))``.
    """
    positive_int(widen_factor, "widen_factor")
    _check_depth(depth)
    name = f"wrn{depth}_{widen_factor}"

    def construct(input_shape: tuple[int, ...], num_classes: int, *, dropout: float = 0.0) -> nn.Module:
        return WideResNet(
            depth,
            widen_factor,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            float(dropout),
        )

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = f"WRN-{depth}-{widen_factor} for images ``(C, H, W)``; ``dropout`` inside blocks."
    return construct


for _depth, _k in WRN_VARIANTS:
    register_model(
        f"wrn{_depth}_{_k}",
        family="wrn",
        input_rank=2,
        description=f"Wide ResNet WRN-{_depth}-{_k} (Zagoruyko & Komodakis), pre-activation blocks",
    )(wide_resnet(_depth, _k))
del _depth, _k
