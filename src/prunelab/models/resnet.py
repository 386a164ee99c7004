"""CIFAR ResNets (He et al. 2016): projection shortcuts as used by Su et al. 2020 and Liu et al. 2022,
or the parameter-free option-A shortcuts of Li et al. 2017 / Liu et al. 2019 (``res56prune.py``).

``resnet<depth>`` is He et al.'s network (basic blocks, width 16 by default); ``su_resnet<depth>`` is
Su et al. 2020's ``models/resnet.py``: doubled widths 32/64/128, option-B shortcuts, basic blocks
below depth 54 and bottleneck blocks (``n = (depth - 2) / 6`` per stage, expansion 4) from 54 on,
so their "ResNet-56" is a bottleneck net.

Options describe every width and block, so a physically pruned ResNet is ``resnet56`` + ``widths``
(+ ``blocks``) + an ordinary state dict (module names do not change with the widths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunelab.errors import PrunelabError, invalid_choice
from prunelab.models._common import image_shape, init_scheme, init_weights_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.options import as_int, as_shape

RESNET_DEPTHS = (20, 32, 44, 56, 110)
#: Depths registered as ``su_resnet<depth>`` (Su et al. 2020 use ResNet-32; 56 is their bottleneck net);
#: register others with ``register_model(..., family="resnet", ...)(su_resnet(depth))``.
SU_RESNET_DEPTHS = (32, 56)
#: Su et al.'s ``models/resnet.py`` switches to bottleneck blocks at this depth (``depth >= 54``).
SU_BOTTLENECK_DEPTH = 54

#: Today's ResNet init (the default of ``resnet<depth>``): conv Kaiming normal fan_out, linear PyTorch
#: default weights with zero bias. Su et al.'s ResNets use ``conv_fan_out_linear_normal_0.01``.
RESNET_INIT = "conv_fan_out_linear_default_zero_bias"
SU_RESNET_INIT = "conv_fan_out_linear_normal_0.01"

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

    #: The module ending the residual branch (sparse structure selection scales its output).
    branch_end = "bn2"
    #: Block output width = ``expansion * planes``.
    expansion = 1

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
        self.shortcut = _projection_or_pad(in_planes, planes, stride, shortcut)

    def prunable_widths(self) -> list[int]:
        """Out-channels of the convs whose filters can be removed on their own: ``[conv1]``."""
        return [int(self.conv1.out_channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, planes, H', W')``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _projection_or_pad(in_planes: int, out_planes: int, stride: int, shortcut: str) -> nn.Module:
    """The shortcut of a block: identity, option-A zero padding or an option-B 1x1 conv + BN."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class Bottleneck(nn.Module):
    """Post-activation bottleneck block (Su et al.'s ``models/resnet.py``, He et al. 2016):
    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``.

    ``conv1`` is 1x1 (``in_planes -> mid1``), ``conv2`` 3x3 with the stride (``mid1 -> mid2``),
    ``conv3`` 1x1 (``mid2 -> 4 * planes``); ``(mid1, mid2)`` is ``mid_planes`` (``(planes, planes)``
    unless pruned). Input ``(B, in_planes, H, W)``, output ``(B, 4 * planes, H / stride, W / stride)``.
    The shortcut is a 1x1 conv + BN where the stride or width changes (option B, as Su et al.), the
    option-A :class:`ZeroPadShortcut` there, else the identity. Modules are registered conv1, bn1,
    conv2, bn2, conv3, bn3, shortcut, so the convs come conv1, conv2, conv3, then the shortcut conv.
    """

    branch_end = "bn3"
    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        mid_planes: tuple[int, int] | None = None,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        mid1, mid2 = (planes, planes) if mid_planes is None else mid_planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, mid1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid1)
        self.conv2 = nn.Conv2d(mid1, mid2, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _projection_or_pad(in_planes, out, stride, shortcut)

    def prunable_widths(self) -> list[int]:
        """Out-channels of the convs whose filters can be removed on their own: ``[conv1, conv2]``."""
        return [int(self.conv1.out_channels), int(self.conv2.out_channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, 4 * planes, H', W')``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for CIFAR: ``n = (depth - 2) / 6`` residual blocks per stage.

    Stem ``conv3x3(C, w)-BN-ReLU``; stages ``layer1..3`` of widths ``w, 2w, 4w`` with strides 1, 2, 2
    (times 4 at the block outputs for bottleneck blocks); global average pool; ``fc =
    Linear(4w * expansion, num_classes)``. Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    ``width = 16`` is He et al.'s network, ``width = 32`` Su et al.'s "double width" one.
    ``block`` is ``basic`` (:class:`BasicBlock`, ``6n + 2`` weighted layers) or ``bottleneck``
    (:class:`Bottleneck`, as Su et al.'s code for depth >= 54). ``blocks`` (per stage, default
    ``(n, n, n)``) and ``widths`` (the prunable convs' out-channels in block order: each basic block's
    ``conv1``, or each bottleneck's ``conv1`` and ``conv2``; default the stage width) describe pruned
    networks; a stage with 0 blocks is empty (the next stage's first block then takes its input).
    Init: scheme ``init`` (:data:`~prunelab.models._common.INIT_SCHEMES`).
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
        block: str = "basic",
        init: str = RESNET_INIT,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise PrunelabError(f"CIFAR ResNet depth must be 6n + 2, n >= 1 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        kind = Bottleneck if block == "bottleneck" else BasicBlock
        per_block = 2 if kind is Bottleneck else 1  # prunable widths per block
        per_stage = list(blocks) if blocks is not None else [n, n, n]
        planes = (width, 2 * width, 4 * width)
        flat = (
            list(widths)
            if widths is not None
            else [p for p, k in zip(planes, per_stage, strict=True) for _ in range(k * per_block)]
        )
        mids = [flat[i : i + per_block] for i in range(0, len(flat), per_block)]
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes, start = width, 0
        stages = []
        for planes_s, count, stride in zip(planes, per_stage, (1, 2, 2), strict=True):
            stage_mids = mids[start : start + count]
            start += count
            stages.append(self._stage(kind, in_planes, planes_s, stage_mids, stride, shortcut))
            if count:
                in_planes = planes_s * kind.expansion
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width * kind.expansion, num_classes)
        init_weights_(self, init)

    @staticmethod
    def _stage(
        kind: type[BasicBlock] | type[Bottleneck],
        in_planes: int,
        planes: int,
        mids: Sequence[Sequence[int]],
        stride: int,
        shortcut: str,
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, mid in enumerate(mids):
            first = i == 0
            fan_in = in_planes if first else planes * kind.expansion
            step = stride if first else 1
            if kind is Bottleneck:
                layers.append(
                    Bottleneck(fan_in, planes, step, mid_planes=(mid[0], mid[1]), shortcut=shortcut)
                )
            else:
                layers.append(BasicBlock(fan_in, planes, step, mid_planes=mid[0], shortcut=shortcut))
        return nn.Sequential(*layers)

    def structure_options(self, kept: Mapping[str, Sequence[int]] | None = None) -> dict[str, list[int]]:
        """The ``widths`` and ``blocks`` options describing this (possibly pruned) network.

        With ``kept`` (stage name -> kept block indices, e.g. from sparse structure selection) they
        describe the network made of only those blocks.
        """
        widths: list[int] = []
        counts: list[int] = []
        for stage_name in ("layer1", "layer2", "layer3"):
            stage = getattr(self, stage_name)
            chosen = range(len(stage)) if kept is None else kept[stage_name]
            counts.append(len(chosen))
            for i in chosen:
                block = stage[i]
                assert isinstance(block, BasicBlock | Bottleneck)
                widths += block.prunable_widths()
        return {"widths": widths, "blocks": counts}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.pool(out).flatten(1))


def block_conv1_names(model: nn.Module) -> list[str]:
    """Module names of every BasicBlock's ``conv1`` in ``model``, in block order."""
    return [f"{name}.conv1" for name, m in model.named_modules() if isinstance(m, BasicBlock)]


def _blocks_option(blocks: object, name: str, n: int) -> list[int]:
    """Validate a ``blocks`` option: 3 block counts >= 0, not all 0 (default ``[n, n, n]``)."""
    if blocks is None:
        return [n, n, n]
    if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence) or len(blocks) != 3:
        raise PrunelabError(f"{name} option blocks must list 3 block counts (one per stage), got {blocks!r}")
    per_stage = [as_int(b, f"{name} option blocks", minimum=0) for b in blocks]
    if sum(per_stage) == 0:
        raise PrunelabError(f"{name} option blocks must keep at least one block, got {blocks!r}")
    return per_stage


def _widths_option(widths: object, name: str, count: int, what: str) -> list[int] | None:
    """Validate a ``widths`` option: exactly ``count`` positive ints (``what`` says which convs)."""
    if widths is None:
        return None
    mids = list(as_shape(widths, f"{name} option widths"))
    if len(mids) != count:
        raise PrunelabError(
            f"{name} option widths must give {count} widths ({what}), got {len(mids)}: {widths!r}"
        )
    return mids


_INIT_DOC = (
    "``init`` schemes (k = kernel size; BN gamma 1 / beta 0 in all):\n\n"
    "- ``conv_fan_out_linear_default_zero_bias``: conv ``N(0, sqrt(2/(k*k*C_out)))``; fc PyTorch default "
    "``U(-1/sqrt(n_in), 1/sqrt(n_in))``, fc bias 0 (``resnet<depth>``'s default).\n"
    "- ``conv_fan_out_linear_normal_0.01``: conv ``N(0, sqrt(2/(k*k*C_out)))``; fc ``N(0, 0.01)``, bias 0 "
    "(Su et al.'s ResNets; ``su_resnet<depth>``'s default).\n"
    "- ``conv_linear_fan_in``: conv and fc weights ``N(0, sqrt(2/fan_in))``, fc bias PyTorch default "
    "(Random_Pruning's ``cifar_resnet``, ``kaiming_normal_``).\n"
    "- ``conv_fan_out_linear_default``: conv ``N(0, sqrt(2/(k*k*C_out)))``; fc weight and bias PyTorch "
    "default (Liu et al. 2019's ``l1-norm-pruning/models/resnet.py``).\n"
    "- ``conv_fan_in_linear_normal_0.01``: conv ``N(0, sqrt(2/(k*k*C_in)))``; fc ``N(0, 0.01)``, bias 0.\n"
    "- ``torch_default``: PyTorch's ``reset_parameters`` for every conv and the fc."
)


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
        init: str = RESNET_INIT,
    ) -> nn.Module:
        kind = str(shortcut).upper()
        if kind not in SHORTCUTS:
            raise invalid_choice(f"{name} shortcut", shortcut, SHORTCUTS)
        per_stage = _blocks_option(blocks, name, n)
        mids = _widths_option(widths, name, sum(per_stage), "one per block's conv1")
        return CifarResNet(
            depth,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            positive_int(width, "width"),
            blocks=per_stage,
            widths=mids,
            shortcut=kind,
            init=init_scheme(init, name),
        )

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (
        f"CIFAR ResNet-{depth} for images ``(C, H, W)``.\n\n"
        "Options: ``width`` (first stage's width, 16), ``shortcut`` (``B``: projection, the default; "
        "``A``: avg-pool + zero-pad, Li et al. / Liu et al.'s res56prune), ``blocks`` (blocks per stage, "
        f"[{n}, {n}, {n}]), ``widths`` (out-channels of each block's conv1, one per block), ``init`` "
        f"(``{RESNET_INIT}``).\n\n" + _INIT_DOC
    )
    return construct


def su_resnet(depth: int) -> ModelConstructor:
    """A constructor for Su et al. 2020's CIFAR ResNet-``depth`` (``models/resnet.py``)."""
    if depth < 8 or (depth - 2) % 6:
        raise PrunelabError(f"Su et al.'s ResNet depth must be 6n + 2, n >= 1 (20, 32, 56, ...), got {depth}")
    name = f"su_resnet{depth}"
    n = (depth - 2) // 6
    block = "bottleneck" if depth >= SU_BOTTLENECK_DEPTH else "basic"
    per_block = 2 if block == "bottleneck" else 1
    what = "each block's conv1 and conv2" if per_block == 2 else "one per block's conv1"

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int = 32,
        blocks: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        init: str = SU_RESNET_INIT,
    ) -> nn.Module:
        per_stage = _blocks_option(blocks, name, n)
        mids = _widths_option(widths, name, per_block * sum(per_stage), what)
        return CifarResNet(
            depth,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            positive_int(width, "width"),
            blocks=per_stage,
            widths=mids,
            shortcut="B",
            block=block,
            init=init_scheme(init, name),
        )

    construct.__name__ = construct.__qualname__ = name
    layout = (
        f"{n} bottleneck blocks per stage (1x1, 3x3, 1x1; outputs 4x the stage width)"
        if block == "bottleneck"
        else f"{n} basic blocks per stage"
    )
    construct.__doc__ = (
        f"Su et al. 2020's CIFAR ResNet-{depth} for images ``(C, H, W)``: {layout}, option-B (1x1 conv + "
        "BN) shortcuts, convs registered conv1, conv2[, conv3], shortcut in each block.\n\n"
        "Options: ``width`` (first stage's width, 32: Su et al.'s doubled 32/64/128), ``blocks`` "
        f"(blocks per stage, [{n}, {n}, {n}]), ``widths`` (prunable out-channels: {what}), ``init`` "
        f"(``{SU_RESNET_INIT}``).\n\n" + _INIT_DOC
    )
    return construct


for _depth in RESNET_DEPTHS:
    register_model(
        f"resnet{_depth}",
        family="resnet",
        input_rank=2,
        description=f"CIFAR ResNet-{_depth} (He et al.), shortcut B (projection) or A, option width=16",
    )(cifar_resnet(_depth))
for _depth in SU_RESNET_DEPTHS:
    _kind = "bottleneck" if _depth >= SU_BOTTLENECK_DEPTH else "basic"
    register_model(
        f"su_resnet{_depth}",
        family="resnet",
        input_rank=2,
        description=f"Su et al. 2020's CIFAR ResNet-{_depth}: {_kind} blocks, widths 32/64/128, shortcut B",
    )(su_resnet(_depth))
del _depth, _kind
