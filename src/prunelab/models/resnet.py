"""CIFAR ResNets (He et al. 2016): projection shortcuts as used by Su et al. 2020 and Liu et al. 2022,
or the parameter-free option-A shortcuts of Li et al. 2017 / Liu et al. 2019 (``res56prune.py``).

Options describe every width and block, so a physically pruned ResNet is ``resnet56`` + ``widths``
(+ ``blocks``) + an ordinary state dict (module names do not change with the widths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError, invalid_choice
from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.options import as_int, as_shape

RESNET_DEPTHS = (20, 32, 44, 56, 110)

#: ``B``: 1x1 conv + BN projection where the stride or width changes, else identity (the default).
#: ``A``: parameter-free; 2x2 average pool where the stride is 2, then zero channels appended.
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: ``(B, C_in, H, W)`` -> ``(B, planes, H / stride, W / stride)``, no parameters.

    Downsamples with a 2x2 average pool (stride 2), as ``downsample_basic_block`` in Liu et al.'s
    ``cifar/l1-norm-pruning/models/resnet.py`` does (He et al.'s original takes every other pixel),
    then appends ``planes - C_in`` zero channels. Both are functional calls, not submodules, so a
    leaf-module FLOP counter charges nothing for them, as the reference counter does.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise PrunelabError(f"option-A shortcut cannot narrow {in_planes} to {planes} channels")
        self.extra = planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool by ``stride`` and zero-pad channels to ``planes``."""
        if self.stride != 1:
            x = F.avg_pool2d(x, self.stride, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Input ``(B, in_planes, H, W)``, output ``(B, planes, H / stride, W / stride)``. ``conv1`` has
    ``mid_planes`` out-channels (``planes`` unless pruned; L1-norm filter pruning of ResNets prunes
    only this conv, since block outputs are tied to the residual path). The shortcut is a 1x1 conv +
    BN projection when the stride or width changes (option B), the parameter-free
    :class:`ZeroPadShortcut` there (option A), else the identity. Modules are registered conv1, bn1,
    conv2, bn2, shortcut (conv, bn): layer-wise ratio rules rely on this order.
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        mid_planes: int | None = None,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        mid = planes if mid_planes is None else mid_planes
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
            else:
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
    width" one. ``blocks`` (per stage, default ``(n, n, n)``) and ``widths`` (out-channels of each
    block's ``conv1``, in block order; default the stage width) describe pruned networks; a stage
    with 0 blocks is empty (the next stage's first block then takes its input). Init: conv Kaiming
    normal (fan_out), BN 1/0, linear PyTorch default weights (Kaiming uniform) with zero bias.
    """

    def __init__(
        self,
        depth: int,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        *,
        blocks: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise PrunelabError(f"CIFAR ResNet depth must be 6n + 2, n >= 1 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        per_stage = list(blocks) if blocks is not None else [n, n, n]
        planes = (width, 2 * width, 4 * width)
        mids = (
            list(widths)
            if widths is not None
            else [p for p, k in zip(planes, per_stage, strict=True) for _ in range(k)]
        )
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes, start = width, 0
        stages = []
        for planes_s, count, stride in zip(planes, per_stage, (1, 2, 2), strict=True):
            stage_mids = mids[start : start + count]
            start += count
            stages.append(self._stage(in_planes, planes_s, stage_mids, stride, shortcut))
            if count:
                in_planes = planes_s
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_conv_bn_linear_(self, linear_std=None)

    @staticmethod
    def _stage(in_planes: int, planes: int, mids: Sequence[int], stride: int, shortcut: str) -> nn.Sequential:
        layers = []
        for i, mid in enumerate(mids):
            first = i == 0
            layers.append(
                BasicBlock(
                    in_planes if first else planes,
                    planes,
                    stride if first else 1,
                    mid_planes=mid,
                    shortcut=shortcut,
                )
            )
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.pool(out).flatten(1))


def block_conv1_names(model: nn.Module) -> list[str]:
    """Module names of every BasicBlock's ``conv1`` in ``model``, in block order."""
    return [f"{name}.conv1" for name, m in model.named_modules() if isinstance(m, BasicBlock)]


def cifar_resnet(depth: int) -> ModelConstructor:
    """A constructor for the CIFAR ResNet-``depth``; options listed in its docstring."""
    name = f"resnet{depth}"
    n = (depth - 2) // 6

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int = 16,
        shortcut: str = "B",
        blocks: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
    ) -> nn.Module:
        kind = str(shortcut).upper()
        if kind not in SHORTCUTS:
            raise invalid_choice(f"{name} shortcut", shortcut, SHORTCUTS)
        per_stage = [n, n, n]
        if blocks is not None:
            if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence) or len(blocks) != 3:
                raise PrunelabError(
                    f"{name} option blocks must list 3 block counts (one per stage), got {blocks!r}"
                )
            per_stage = [as_int(b, f"{name} option blocks", minimum=0) for b in blocks]
            if sum(per_stage) == 0:
                raise PrunelabError(f"{name} option blocks must keep at least one block, got {blocks!r}")
        mids = None
        if widths is not None:
            mids = list(as_shape(widths, f"{name} option widths"))
            if len(mids) != sum(per_stage):
                raise PrunelabError(
                    f"{name} option widths must give {sum(per_stage)} widths (one per block's conv1), "
                    f"got {len(mids)}: {widths!r}"
                )
        return CifarResNet(
            depth,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            positive_int(width, "width"),
            blocks=per_stage,
            widths=mids,
            shortcut=kind,
        )

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (
        f"CIFAR ResNet-{depth} for images ``(C, H, W)``.\n\n"
        "Options: ``width`` (first stage's width, 16), ``shortcut`` (``B``: projection, the default; "
        "``A``: avg-pool + zero-pad, Li et al. / Liu et al.'s res56prune), ``blocks`` (blocks per stage, "
        f"[{n}, {n}, {n}]), ``widths`` (out-channels of each block's conv1, one per block)."
    )
    return construct


for _depth in RESNET_DEPTHS:
    register_model(
        f"resnet{_depth}",
        family="resnet",
        input_rank=2,
        description=f"CIFAR ResNet-{_depth} (He et al.), shortcut B (projection) or A, option width=16",
    )(cifar_resnet(_depth))
del _depth
