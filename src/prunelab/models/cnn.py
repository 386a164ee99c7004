"""Small convolutional networks for the small datasets: the MNIST-1D 1-D CNN and an 8x8-digits 2-D CNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int, sequence_shape
from prunelab.models.registry import register_model


class CNN1d(nn.Module):
    """The MNIST-1D reference CNN (Greydanus 2020, ``ConvBase``).

    Three ``Conv1d(stride=2, padding=1)`` + ReLU layers (kernels 5, 3, 3 by default), then flatten and
    ``Linear(channels * L_out, num_classes)``. Input ``(B, C, L)``, or ``(B, L)`` when ``C == 1``;
    output ``(B, num_classes)``. On MNIST-1D (L = 40) ``L_out = 5`` and the linear layer takes 125
    features, as in the reference. PyTorch's default init is kept, as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_classes: int,
        channels: int = 25,
        kernel_sizes: Sequence[int] = (5, 3, 3),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        convs: list[nn.Module] = []
        fan_in, out_length = in_channels, length
        for i, kernel in enumerate(kernel_sizes):
            convs += [nn.Conv1d(fan_in, channels, kernel, stride=2, padding=1), nn.ReLU(inplace=True)]
            fan_in = channels
            out_length = (out_length + 2 - kernel) // 2 + 1
            if out_length < 1:
                raise PrunelabError(
                    f"cnn1d: input length {length} is too short for conv layer {i + 1} (kernel {kernel})"
                )
        self.features = nn.Sequential(*convs)
        self.classifier = nn.Linear(channels * out_length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, L)`` or ``(B, L)`` -> logits ``(B, num_classes)``."""
        if x.dim() == 2:  # (B, L) examples: one channel
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))


@register_model(
    "cnn1d", family="cnn1d", input_rank=1, description="MNIST-1D reference 1-D CNN (3 conv + linear)"
)
def cnn1d(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: int = 25,
    kernel_sizes: Sequence[int] = (5, 3, 3),
) -> nn.Module:
    """1-D CNN for sequences ``(C, L)`` or ``(L,)``; ``channels`` per conv layer."""
    in_channels, length = sequence_shape(input_shape, "cnn1d")
    if isinstance(kernel_sizes, str | bytes) or not isinstance(kernel_sizes, Sequence) or not kernel_sizes:
        raise PrunelabError(f"cnn1d option kernel_sizes must be a non-empty list, got {kernel_sizes!r}")
    kernels = [positive_int(k, "cnn1d kernel size") for k in kernel_sizes]
    return CNN1d(
        in_channels,
        length,
        positive_int(num_classes, "num_classes"),
        positive_int(channels, "channels"),
        kernels,
    )


class CNN2d(nn.Module):
    """Small 2-D CNN for 8x8 digit images (works on any image size).

    ``conv3x3(C, w)-BN-ReLU, conv3x3(w, 2w)-BN-ReLU, maxpool 2, conv3x3(2w, 4w)-BN-ReLU``, adaptive
    average pool to 1x1, ``Linear(4w, num_classes)``. Convs have no bias (BN follows). The max-pool is
    left out when the image is smaller than 2x2. Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    Init: conv Kaiming normal (fan_out), BN 1/0, linear PyTorch default weights with zero bias.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        channels, height, img_width = input_shape
        w = width
        layers: list[nn.Module] = [
            nn.Conv2d(channels, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
        ]
        if min(height, img_width) >= 2:
            layers.append(nn.MaxPool2d(2))
        layers += [
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)
        init_conv_bn_linear_(self, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("cnn2d", family="cnn2d", input_rank=2, description="small 3-conv 2-D CNN for 8x8 digits")
def cnn2d(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Module:
    """2-D CNN with channels ``width, 2*width, 4*width`` for images ``(C, H, W)``."""
    shape = image_shape(input_shape, "cnn2d")
    return CNN2d(shape, positive_int(num_classes, "num_classes"), positive_int(width, "width"))
