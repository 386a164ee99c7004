"""ImageNet ResNets, Wide ResNets and VGG-16-BN, built exactly as torchvision builds them.

Same layers, same module names and the same construction and initialisation order as
``torchvision.models`` (ResNet v1.5: the stride sits on the bottleneck's 3x3 conv), so parameter
counts equal the published ones at 1000 classes and torchvision state dicts load into them:

=====================================  ===========  ==================================
registered name                        parameters   blocks per stage
=====================================  ===========  ==================================
``imagenet_resnet18``                  11,689,512   basic 2, 2, 2, 2
``imagenet_resnet34``                  21,797,672   basic 3, 4, 6, 3
``imagenet_resnet50``                  25,557,032   bottleneck 3, 4, 6, 3
``imagenet_resnet101``                 44,549,160   bottleneck 3, 4, 23, 3
``imagenet_resnet152``                 60,192,808   bottleneck 3, 8, 36, 3
``imagenet_wide_resnet50_2``           68,883,240   bottleneck 3, 4, 6, 3, base width 128
``imagenet_wide_resnet101_2``          126,886,696  bottleneck 3, 4, 23, 3, base width 128
``imagenet_vgg16_bn``                  138,365,992  13 conv3x3-BN-ReLU, 3 linear
=====================================  ===========  ==================================

The wide variants are Random_Pruning's ``WideResNet50_2`` / ``WideResNet101_2`` (torchvision's
``width_per_group=128``: the bottleneck's inner 1x1 and 3x3 convs are twice as wide, its output is
not). The input channel count comes from the data's example shape and every network ends in
adaptive pooling, so any image size works (64x64 Tiny-ImageNet as well as 224x224 ImageNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_scheme, init_weights_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.options import as_bool, as_number, as_shape

#: torchvision's ResNet init: conv Kaiming normal (fan_out, ReLU gain), BN 1/0, and the fc left at
#: PyTorch's default (``U(-1/sqrt(n_in), 1/sqrt(n_in))`` weight and bias).
RESNET_INIT = "conv_fan_out_linear_default"
#: torchvision's VGG init: conv Kaiming normal (fan_out), conv bias 0, BN 1/0, linear ``N(0, 0.01)``, bias 0.
VGG_INIT = "conv_fan_out_linear_normal_0.01"

#: Configuration D of Simonyan & Zisserman: an int is a conv3x3 width, "M" a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ImageNetBasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``.

    Input ``(B, inplanes, H, W)``, output ``(B, planes, H / stride, W / stride)``. ``downsample`` is a
    1x1 conv + BN where the shape changes, else ``None`` (identity).
    """

    expansion = 1
    #: The module ending the residual branch (what ``zero_init_residual`` zeroes).
    branch_end = "bn2"

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, inplanes, H, W)`` -> ``(B, planes, H', W')``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ImageNetBottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5): 1x1 ``inplanes -> width``, 3x3 ``width -> width``
    with the stride, 1x1 ``width -> 4 * planes``, plus ``downsample(x)``, then ReLU.

    ``width = int(planes * base_width / 64)``: ``base_width`` 64 is the plain ResNet, 128 the wide one.
    Input ``(B, inplanes, H, W)``, output ``(B, 4 * planes, H / stride, W / stride)``.
    """

    expansion = 4
    branch_end = "bn3"

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, inplanes, H, W)`` -> ``(B, 4 * planes, H', W')``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ImageNetResNet(nn.Module):
    """torchvision's ``ResNet``: stem ``conv7x7/2(C, 64)-BN-ReLU-maxpool3x3/2``, four stages of widths
    64, 128, 256, 512 (times the block's expansion at the outputs) with strides 1, 2, 2, 2, global
    average pool, ``fc = Linear(512 * expansion, num_classes)``.

    Input ``(B, C, H, W)`` (224x224 on ImageNet; any size works), output ``(B, num_classes)``. Init:
    scheme ``init`` (default torchvision's, :data:`RESNET_INIT`); ``zero_init_residual`` then sets the
    last BN scale of every block to 0, so each block starts as the identity (Goyal et al. 2017).
    """

    def __init__(
        self,
        block: type[ImageNetBasicBlock] | type[ImageNetBottleneck],
        layers: Sequence[int],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        init: str = RESNET_INIT,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(input_shape[0], self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_weights_(self, init)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, ImageNetBasicBlock | ImageNetBottleneck):
                    nn.init.zeros_(getattr(module, module.branch_end).weight)

    def _make_layer(
        self,
        block: type[ImageNetBasicBlock] | type[ImageNetBottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
    ) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            # Built before the block, as torchvision does, so a seeded build draws in its order.
            downsample = nn.Sequential(_conv1x1(self.inplanes, out, stride), nn.BatchNorm2d(out))
        layers: list[nn.Module] = []
        for i in range(blocks):
            first = i == 0
            if block is ImageNetBottleneck:
                layers.append(
                    ImageNetBottleneck(
                        self.inplanes,
                        planes,
                        stride if first else 1,
                        downsample if first else None,
                        base_width=self.base_width,
                    )
                )
            else:
                layers.append(
                    ImageNetBasicBlock(
                        self.inplanes, planes, stride if first else 1, downsample if first else None
                    )
                )
            self.inplanes = out
        return nn.Sequential(*layers)

    def structure_options(self, *args: object) -> dict[str, list[int]]:
        """Not supported: the structured-pruning rebuild describes the CIFAR ResNets only.

        Raises:
            PrunelabError: always, in one line (instead of a wrong architecture further on).
        """
        raise PrunelabError(
            f"structured pruning cannot rebuild {type(self).__name__} (an ImageNet ResNet); "
            "prune it unstructured (prunelab.prune) instead"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ImageNetVGG(nn.Module):
    """torchvision's ``vgg16_bn``: ``features`` (13 conv3x3-BN-ReLU with conv biases, 5 max-pools),
    ``avgpool = AdaptiveAvgPool2d(7)``, ``classifier = Linear(512*7*7, 4096)-ReLU-Dropout-
    Linear(4096, 4096)-ReLU-Dropout-Linear(4096, num_classes)``.

    Input ``(B, C, H, W)``, output ``(B, num_classes)``. ``widths`` (one per conv) replaces the 13
    conv widths (a physically pruned network). A max-pool whose input map (computed from
    ``input_shape``) would be under 2x2 is an ``nn.Identity`` instead, keeping module indices, so tiny
    test inputs work; at 32x32 and above the network is torchvision's. Init: scheme ``init`` (default
    torchvision's, :data:`VGG_INIT`).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        widths: Sequence[int] | None = None,
        dropout: float = 0.5,
        init: str = VGG_INIT,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        conv_index = 0
        for item in VGG16_CONFIG:
            if item == "M":
                if min(height, width) >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    height, width = height // 2, width // 2
                else:
                    layers.append(nn.Identity())
                continue
            out = int(widths[conv_index]) if widths is not None else int(item)
            conv_index += 1
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights_(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


#: name suffix -> (block, blocks per stage, default width_per_group, published count at 1000 classes).
RESNET_VARIANTS: dict[
    str, tuple[type[ImageNetBasicBlock] | type[ImageNetBottleneck], tuple[int, ...], int, int]
] = {
    "resnet18": (ImageNetBasicBlock, (2, 2, 2, 2), 64, 11_689_512),
    "resnet34": (ImageNetBasicBlock, (3, 4, 6, 3), 64, 21_797_672),
    "resnet50": (ImageNetBottleneck, (3, 4, 6, 3), 64, 25_557_032),
    "resnet101": (ImageNetBottleneck, (3, 4, 23, 3), 64, 44_549_160),
    "resnet152": (ImageNetBottleneck, (3, 8, 36, 3), 64, 60_192_808),
    "wide_resnet50_2": (ImageNetBottleneck, (3, 4, 6, 3), 128, 68_883_240),
    "wide_resnet101_2": (ImageNetBottleneck, (3, 4, 23, 3), 128, 126_886_696),
}
#: Published parameter count of torchvision's ``vgg16_bn`` at 1000 classes.
VGG16_BN_PARAMS = 138_365_992


def imagenet_resnet(variant: str) -> ModelConstructor:
    """A constructor for ``imagenet_<variant>`` (a key of :data:`RESNET_VARIANTS`)."""
    block, layers, default_width, _ = RESNET_VARIANTS[variant]
    name = f"imagenet_{variant}"

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        zero_init_residual: bool = False,
        width_per_group: int = default_width,
        init: str = RESNET_INIT,
    ) -> nn.Module:
        group_width = positive_int(width_per_group, f"{name} option width_per_group")
        if block is ImageNetBasicBlock and group_width != 64:
            raise PrunelabError(
                f"{name} option width_per_group must be 64 (basic blocks have no inner width), got {width_per_group!r}"
            )
        return ImageNetResNet(
            block,
            layers,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            width_per_group=group_width,
            zero_init_residual=as_bool(zero_init_residual, f"{name} option zero_init_residual"),
            init=init_scheme(init, name),
        )

    construct.__name__ = construct.__qualname__ = name
    kind = "bottleneck" if block is ImageNetBottleneck else "basic"
    construct.__doc__ = (
        f"torchvision's {variant} for images ``(C, H, W)``: {kind} blocks {list(layers)} per stage.\n\n"
        f"Options: ``zero_init_residual`` (False: zero each block's last BN scale), ``width_per_group`` "
        f"({default_width}; bottleneck inner width per 64 planes), ``init`` (``{RESNET_INIT}``: conv Kaiming "
        "normal fan_out, BN 1/0, fc PyTorch default)."
    )
    return construct


def imagenet_vgg16_bn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    widths: Sequence[int] | None = None,
    dropout: float = 0.5,
    init: str = VGG_INIT,
) -> nn.Module:
    """torchvision's VGG-16-BN for images ``(C, H, W)``.

    Options: ``widths`` (out-channels of each of the 13 convs; default the configuration's),
    ``dropout`` (0.5, before the 2nd and 3rd linear layers), ``init`` (``conv_fan_out_linear_normal_0.01``:
    conv Kaiming normal fan_out with zero bias, BN 1/0, linear ``N(0, 0.01)`` with zero bias).
    """
    name = "imagenet_vgg16_bn"
    exact = None
    if widths is not None:
        exact = list(as_shape(widths, f"{name} option widths"))
        expected = sum(1 for item in VGG16_CONFIG if item != "M")
        if len(exact) != expected:
            raise PrunelabError(
                f"{name} option widths must give {expected} conv widths (one per conv), got {len(exact)}: {widths!r}"
            )
    rate = as_number(dropout, f"{name} option dropout", valid="in [0, 1)", accept=lambda p: 0.0 <= p < 1.0)
    return ImageNetVGG(
        image_shape(input_shape, name),
        positive_int(num_classes, "num_classes"),
        widths=exact,
        dropout=rate,
        init=init_scheme(init, name),
    )


for _variant, (_block, _layers, _width, _count) in RESNET_VARIANTS.items():
    _wide = _variant.startswith("wide_")
    register_model(
        f"imagenet_{_variant}",
        family="wrn" if _wide else "resnet",
        input_rank=2,
        description=(
            f"ImageNet {'Wide ' if _wide else ''}ResNet-{_variant.split('resnet')[1].split('_')[0]}"
            f"{'-2' if _wide else ''} (torchvision layout, {_count / 1e6:.1f}M params at 1000 classes)"
        ),
    )(imagenet_resnet(_variant))
del _variant, _block, _layers, _width, _count, _wide

register_model(
    "imagenet_vgg16_bn",
    family="vgg",
    input_rank=2,
    description=f"ImageNet VGG-16 with BatchNorm (torchvision layout, {VGG16_BN_PARAMS / 1e6:.1f}M params at 1000 classes)",
)(imagenet_vgg16_bn)
