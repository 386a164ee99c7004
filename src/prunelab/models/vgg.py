"""VGG with BatchNorm for CIFAR-sized images (as in SNIP/GraSP, Su et al. 2020, Liu et al. 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.options import as_positive_float

#: Simonyan & Zisserman's configurations A, B, D, E; an int is a conv3x3 width, "M" a 2x2 max-pool.
#: The CIFAR pruning code drops the fifth, last pool: the 32x32 map is 2x2 after the features and is
#: then averaged (AvgPool2d(2)); adaptive average pooling to 1x1 does the same and fits any size.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """CIFAR VGG-BN: ``features`` (conv3x3-BN-ReLU and max-pools), global average pool, one linear.

    Input ``(B, C, H, W)``, output ``(B, num_classes)``. Convs are 3x3 with padding 1; a max-pool is
    built only while the map (as computed from ``input_shape``) is at least 2x2, so 8x8 inputs work.
    Channel counts are the configuration's times ``width`` (rounded, at least 1); the classifier is
    ``Linear(last_channels, num_classes)``. Init: conv Kaiming normal (fan_out), BN 1/0, linear
    ``N(0, 0.01)`` with zero bias.
    """

    def __init__(
        self,
        config: Sequence[int | str],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        conv_bias: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        channels, height, img_width = input_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                if min(height, img_width) >= 2:  # pooling a 1-pixel map would leave nothing
                    layers.append(nn.MaxPool2d(2))
                    height, img_width = height // 2, img_width // 2
                continue
            out = max(1, round(int(item) * width))
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=conv_bias),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_bn_linear_(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg(depth: int) -> ModelConstructor:
    """A constructor ``(input_shape, num_classes, *, conv_bias=False, width=1.0)`` for VGG-``depth``."""
    config = VGG_CONFIGS[depth]

    def construct(
        input_shape: tuple[int, ...], num_classes: int, *, conv_bias: bool = False, width: float = 1.0
    ) -> nn.Module:
        return VGG(
            config,
            image_shape(input_shape, f"vgg{depth}"),
            positive_int(num_classes, "num_classes"),
            conv_bias=bool(conv_bias),
            width=as_positive_float(width, "width"),
        )

    construct.__name__ = construct.__qualname__ = f"vgg{depth}"
    construct.__doc__ = f"VGG-{depth} with BatchNorm for images ``(C, H, W)``."
    return construct


for _depth in VGG_CONFIGS:
    _convs = sum(1 for item in VGG_CONFIGS[_depth] if item != "M")
    register_model(
        f"vgg{_depth}",
        family="vgg",
        input_rank=2,
        description=f"CIFAR VGG-{_depth} with BatchNorm ({_convs} conv + 1 linear)",
    )(vgg(_depth))
del _depth, _convs
