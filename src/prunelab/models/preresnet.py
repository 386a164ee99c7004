"""Pre-activation bottleneck ResNet for CIFAR (He et al. 2016b), as in Liu et al. 2017/2019's network
slimming code (``cifar/network-slimming/models/preresnet.py``): PreResNet-164.

Each block is ``bn1 -> select -> relu -> conv1 (1x1) -> bn2 -> relu -> conv2 (3x3, stride) -> bn3 ->
relu -> conv3 (1x1)`` plus the shortcut of the *raw* input ``x`` (identity, or a bare 1x1 conv, no BN,
where the stride or width changes). ``select`` is a :class:`~prunelab.models.selection.ChannelSelection`:
network slimming prunes ``bn1``'s channels only for ``conv1``, the residual path keeps them. After the
last stage: ``bn -> select -> relu``, global average pool, ``fc``.

Options describe a pruned network completely (``widths``, ``selected``, ``blocks``), so a pruned
PreResNet is ``preresnet164`` + options + an ordinary state dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_scheme, init_weights_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.models.selection import ChannelSelection, selected_count, selected_option
from prunelab.options import as_int, as_positive_float, as_shape

PRERESNET_DEPTHS = (164,)
#: Liu et al.'s network-slimming models: conv ``N(0, sqrt(2/(k*k*C_out)))``, linear left at PyTorch's
#: default, BN scales 0.5.
PRERESNET_INIT = "conv_fan_out_linear_default"
PRERESNET_BN_GAMMA = 0.5


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block with a channel selection after ``bn1``.

    Input ``(B, in_planes, H, W)``, output ``(B, 4 * planes, H / stride, W / stride)``. ``conv1`` reads
    the ``selected`` channels of ``bn1``'s output (all by default) and has ``mid_planes[0]`` filters,
    ``conv2`` ``mid_planes[1]`` (``planes`` each unless pruned), ``conv3`` ``4 * planes``. Modules are
    registered bn1, select, conv1, bn2, conv2, bn3, conv3, shortcut, as in Liu et al.'s code.
    """

    #: The module ending the residual branch (sparse structure selection scales its output).
    branch_end = "conv3"
    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        mid_planes: tuple[int, int] | None = None,
        selected: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        mid1, mid2 = (planes, planes) if mid_planes is None else mid_planes
        out = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.select = ChannelSelection(in_planes, selected)
        self.conv1 = nn.Conv2d(selected_count(selected, in_planes), mid1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid1)
        self.conv2 = nn.Conv2d(mid1, mid2, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, out, 1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Conv2d(in_planes, out, 1, stride=stride, bias=False)

    def prunable_widths(self) -> list[int]:
        """Out-channels of the convs whose filters can be removed on their own: ``[conv1, conv2]``."""
        return [int(self.conv1.out_channels), int(self.conv2.out_channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, 4 * planes, H', W')``."""
        out = self.conv1(F.relu(self.select(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + self.shortcut(x)


class PreResNet(nn.Module):
    """PreResNet-``depth`` (``depth = 9n + 2``): ``n`` bottleneck blocks per stage.

    Stem ``conv3x3(C, w)`` (no BN: the first block's ``bn1`` follows); stages ``layer1..3`` with
    ``planes`` ``w, 2w, 4w`` (outputs ``4w, 8w, 16w``) and strides 1, 2, 2; ``bn -> select -> relu``;
    global average pool; ``fc = Linear(selected, num_classes)``. Input ``(B, C, H, W)``, output
    ``(B, num_classes)``. ``w = 16`` is Liu et al.'s network (their default cfg
    ``[16, 16, 16], [64, 16, 16] * (n - 1), [64, 32, 32], ...``).

    ``blocks`` (per stage, default ``(n, n, n)``), ``widths`` (``conv1`` and ``conv2`` filters of each
    block, flat) and ``selected`` (per selection layer, the blocks' then the final one) describe a
    pruned network. Init: scheme ``init`` (:data:`~prunelab.models._common.INIT_SCHEMES`), then every
    BN2d scale ``bn_gamma``.
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
        selected: Sequence[Sequence[int] | None] | None = None,
        init: str = PRERESNET_INIT,
        bn_gamma: float = PRERESNET_BN_GAMMA,
    ) -> None:
        super().__init__()
        n = (depth - 2) // 9
        per_stage = list(blocks) if blocks is not None else [n, n, n]
        total = sum(per_stage)
        planes = (width, 2 * width, 4 * width)
        flat = (
            list(widths)
            if widths is not None
            else [p for p, k in zip(planes, per_stage, strict=True) for _ in range(2 * k)]
        )
        chosen = list(selected) if selected is not None else [None] * (total + 1)
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        in_planes, index = width, 0
        stages = []
        for planes_s, count, stride in zip(planes, per_stage, (1, 2, 2), strict=True):
            layers = []
            for i in range(count):
                layers.append(
                    PreActBottleneck(
                        in_planes,
                        planes_s,
                        stride if i == 0 else 1,
                        mid_planes=(flat[2 * index], flat[2 * index + 1]),
                        selected=chosen[index],
                    )
                )
                in_planes = planes_s * PreActBottleneck.expansion
                index += 1
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.select = ChannelSelection(in_planes, chosen[-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(selected_count(chosen[-1], in_planes), num_classes)
        init_weights_(self, init)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, bn_gamma)

    def structure_options(
        self, kept: Mapping[str, Sequence[int]] | None = None
    ) -> dict[str, list[int] | list[list[int] | None]]:
        """The ``widths``, ``blocks`` and ``selected`` options describing this (pruned) network.

        With ``kept`` (stage name -> kept block indices, e.g. from sparse structure selection) they
        describe the network made of only those blocks.
        """
        widths: list[int] = []
        counts: list[int] = []
        selected: list[list[int] | None] = []
        for stage_name in ("layer1", "layer2", "layer3"):
            stage = getattr(self, stage_name)
            chosen = range(len(stage)) if kept is None else kept[stage_name]
            counts.append(len(chosen))
            for i in chosen:
                block = stage[i]
                assert isinstance(block, PreActBottleneck)
                widths += block.prunable_widths()
                selected.append(None if block.select.full else block.select.selected())
        selected.append(None if self.select.full else self.select.selected())
        return {"widths": widths, "blocks": counts, "selected": selected}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.select(self.bn(out)))
        return self.fc(self.pool(out).flatten(1))


def _selection_channels(width: int, per_stage: Sequence[int]) -> list[int]:
    """Input channels of each selection layer: every block's ``bn1``, then the final ``bn``."""
    counts, in_planes = [], width
    for planes, count in zip((width, 2 * width, 4 * width), per_stage, strict=True):
        for _ in range(count):
            counts.append(in_planes)
            in_planes = 4 * planes
    return [*counts, in_planes]


def preresnet(depth: int) -> ModelConstructor:
    """A constructor for the CIFAR PreResNet-``depth`` (``depth = 9n + 2``); options in its docstring."""
    if depth < 11 or (depth - 2) % 9:
        raise PrunelabError(f"PreResNet depth must be 9n + 2, n >= 1 (11, 20, ..., 164), got {depth!r}")
    name = f"preresnet{depth}"
    n = (depth - 2) // 9

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int = 16,
        blocks: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        selected: Sequence[Sequence[int] | None] | None = None,
        init: str = PRERESNET_INIT,
        bn_gamma: float = PRERESNET_BN_GAMMA,
    ) -> nn.Module:
        base = positive_int(width, f"{name} option width")
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
            if len(mids) != 2 * sum(per_stage):
                raise PrunelabError(
                    f"{name} option widths must give {2 * sum(per_stage)} widths (each block's conv1 and "
                    f"conv2), got {len(mids)}: {widths!r}"
                )
        return PreResNet(
            depth,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            base,
            blocks=per_stage,
            widths=mids,
            selected=selected_option(selected, _selection_channels(base, per_stage), name),
            init=init_scheme(init, name),
            bn_gamma=as_positive_float(bn_gamma, f"{name} option bn_gamma"),
        )

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (
        f"Pre-activation bottleneck ResNet-{depth} for images ``(C, H, W)`` ({n} blocks per stage), as "
        "Liu et al.'s network-slimming preresnet.\n\n"
        "Options: ``width`` (first stage's bottleneck width, 16; outputs 4x), ``blocks`` (blocks per stage, "
        f"[{n}, {n}, {n}]), ``widths`` (each block's conv1 and conv2 filters, flat), ``selected`` (per "
        "channel selection layer, each block's then the final one: kept channel indices or null for all), "
        f"``init`` (``{PRERESNET_INIT}``: conv ``N(0, sqrt(2/(k*k*C_out)))``, fc weight and bias PyTorch "
        "default ``U(-1/sqrt(n_in), 1/sqrt(n_in))``; other schemes as for the ResNets), ``bn_gamma`` "
        f"(every BN2d's initial scale, {PRERESNET_BN_GAMMA} as Liu et al.)."
    )
    return construct


for _depth in PRERESNET_DEPTHS:
    register_model(
        f"preresnet{_depth}",
        family="resnet",
        input_rank=2,
        description=f"CIFAR pre-activation bottleneck ResNet-{_depth} with channel selection (network slimming)",
    )(preresnet(_depth))
del _depth
