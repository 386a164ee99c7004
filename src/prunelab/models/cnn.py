"""Small convolutional networks for the small datasets: the MNIST-1D 1-D CNN and an 8x8-digits 2-D CNN.

Options describe every width (``widths``, one per conv), so a physically pruned CNN is its registry
name + options + an ordinary state dict; ``bn`` adds (cnn1d) or removes (cnn2d) BatchNorm, whose
scales network slimming needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import image_shape, init_conv_bn_linear_, positive_int, sequence_shape
from prunelab.models.registry import register_model
from prunelab.options import as_bool, as_shape


def _widths_option(value: object, model: str, count: int) -> list[int]:
    """Validate a ``widths`` option: exactly ``count`` positive ints, one per conv layer."""
    widths = list(as_shape(value, f"{model} option widths"))
    if len(widths) != count:
        raise PrunelabError(
            f"{model} option widths must give {count} conv widths (one per conv layer), "
            f"got {len(widths)}: {value!r}"
        )
    return widths


class CNN1d(nn.Module):
    """The MNIST-1D reference CNN (Greydanus 2020, ``ConvBase``).

    Three ``Conv1d(stride=2, padding=1)`` + ReLU layers (kernels 5, 3, 3 by default), then flatten and
    ``Linear(channels * L_out, num_classes)``. Input ``(B, C, L)``, or ``(B, L)`` when ``C == 1``;
    output ``(B, num_classes)``. On MNIST-1D (L = 40) ``L_out = 5`` and the linear layer takes 125
    features, as in the reference. PyTorch's default init is kept, as in the reference.

    ``widths`` gives each conv's out-channels (default ``channels`` for all). With ``bn`` each conv is
    followed by ``BatchNorm1d`` (weight 1, bias 0) and has no bias of its own (BN's shift replaces it).
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_classes: int,
        channels: int = 25,
        kernel_sizes: Sequence[int] = (5, 3, 3),
        *,
        widths: Sequence[int] | None = None,
        bn: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        outs = list(widths) if widths is not None else [channels] * len(kernel_sizes)
        if len(outs) != len(kernel_sizes):
            raise PrunelabError(f"cnn1d: {len(outs)} widths for {len(kernel_sizes)} conv layers")
        convs: list[nn.Module] = []
        fan_in, out_length = in_channels, length
        for i, (kernel, out) in enumerate(zip(kernel_sizes, outs, strict=True)):
            convs.append(nn.Conv1d(fan_in, out, kernel, stride=2, padding=1, bias=not bn))
            if bn:
                convs.append(nn.BatchNorm1d(out))
            convs.append(nn.ReLU(inplace=True))
            fan_in = out
            out_length = (out_length + 2 - kernel) // 2 + 1
            if out_length < 1:
                raise PrunelabError(
                    f"cnn1d: input length {length} is too short for conv layer {i + 1} (kernel {kernel})"
                )
        self.features = nn.Sequential(*convs)
        self.classifier = nn.Linear(fan_in * out_length, num_classes)

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
    channels: int | None = None,
    kernel_sizes: Sequence[int] = (5, 3, 3),
    widths: Sequence[int] | None = None,
    bn: bool = False,
) -> nn.Module:
    """1-D CNN for sequences ``(C, L)`` or ``(L,)``.

    Options: ``channels`` (every conv's width, 25), ``kernel_sizes`` ([5, 3, 3]), ``widths`` (each
    conv's width, one per kernel; instead of ``channels``), ``bn`` (BatchNorm1d after each conv, False).
    """
    in_channels, length = sequence_shape(input_shape, "cnn1d")
    if isinstance(kernel_sizes, str | bytes) or not isinstance(kernel_sizes, Sequence) or not kernel_sizes:
        raise PrunelabError(f"cnn1d option kernel_sizes must be a non-empty list, got {kernel_sizes!r}")
    kernels = [positive_int(k, "cnn1d kernel size") for k in kernel_sizes]
    exact = None
    if widths is not None:
        if channels is not None:
            raise PrunelabError(f"cnn1d: give either widths or channels, not both (channels={channels!r})")
        exact = _widths_option(widths, "cnn1d", len(kernels))
    return CNN1d(
        in_channels,
        length,
        positive_int(num_classes, "num_classes"),
        positive_int(25 if channels is None else channels, "channels"),
        kernels,
        widths=exact,
        bn=as_bool(bn, "cnn1d option bn"),
    )


class CNN2d(nn.Module):
    """Small 2-D CNN for 8x8 digit images (works on any image size).

    ``conv3x3(C, w1)-BN-ReLU, conv3x3(w1, w2)-BN-ReLU, maxpool 2, conv3x3(w2, w3)-BN-ReLU``, adaptive
    average pool to 1x1, ``Linear(w3, num_classes)``; ``(w1, w2, w3) = (w, 2w, 4w)`` for ``width = w``
    unless ``widths`` gives them. Convs have no bias while BN follows; with ``bn=False`` the BNs are
    left out and the convs get biases. The max-pool is left out when the image is smaller than 2x2.
    Input ``(B, C, H, W)``, output ``(B, num_classes)``. Init: conv Kaiming normal (fan_out), BN 1/0,
    linear PyTorch default weights with zero bias.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        *,
        widths: Sequence[int] | None = None,
        bn: bool = True,
    ) -> None:
        super().__init__()
        channels, height, img_width = input_shape
        outs = list(widths) if widths is not None else [width, 2 * width, 4 * width]
        if len(outs) != 3:
            raise PrunelabError(f"cnn2d: needs 3 conv widths, got {outs!r}")

        def block(fan_in: int, out: int) -> list[nn.Module]:
            if bn:
                return [
                    nn.Conv2d(fan_in, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
            return [nn.Conv2d(fan_in, out, 3, padding=1), nn.ReLU(inplace=True)]

        layers: list[nn.Module] = [*block(channels, outs[0]), *block(outs[0], outs[1])]
        if min(height, img_width) >= 2:
            layers.append(nn.MaxPool2d(2))
        layers += block(outs[1], outs[2])
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(outs[2], num_classes)
        init_conv_bn_linear_(self, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("cnn2d", family="cnn2d", input_rank=2, description="small 3-conv 2-D CNN for 8x8 digits")
def cnn2d(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int | None = None,
    widths: Sequence[int] | None = None,
    bn: bool = True,
) -> nn.Module:
    """2-D CNN for images ``(C, H, W)``.

    Options: ``width`` (channels ``width, 2*width, 4*width``, 16), ``widths`` (the 3 conv widths
    exactly; instead of ``width``), ``bn`` (BatchNorm2d after each conv, True).
    """
    shape = image_shape(input_shape, "cnn2d")
    exact = None
    if widths is not None:
        if width is not None:
            raise PrunelabError(f"cnn2d: give either widths or width, not both (width={width!r})")
        exact = _widths_option(widths, "cnn2d", 3)
    return CNN2d(
        shape,
        positive_int(num_classes, "num_classes"),
        positive_int(16 if width is None else width, "width"),
        widths=exact,
        bn=as_bool(bn, "cnn2d option bn"),
    )
