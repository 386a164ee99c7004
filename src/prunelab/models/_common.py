"""Shared helpers for the model constructors: input-shape checks and weight initialisation."""

from __future__ import annotations

from torch import nn

from prunelab.errors import PrunelabError
from prunelab.options import as_int


def positive_int(value: object, what: str) -> int:
    """``value`` as an int >= 1 (see :func:`prunelab.options.as_int`)."""
    return as_int(value, what, minimum=1)


def image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """Validate an image example shape ``(C, H, W)`` and return it."""
    if len(input_shape) != 3:
        raise PrunelabError(f"model {model!r} takes images (C, H, W), got example shape {tuple(input_shape)}")
    channels, height, width = (positive_int(d, f"{model} input dimension") for d in input_shape)
    return channels, height, width


def sequence_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int]:
    """Validate a sequence example shape ``(C, L)`` or ``(L,)`` (meaning ``C = 1``); return ``(C, L)``."""
    if len(input_shape) == 1:
        return 1, positive_int(input_shape[0], f"{model} input length")
    if len(input_shape) != 2:
        raise PrunelabError(
            f"model {model!r} takes sequences (C, L) or (L,), got example shape {tuple(input_shape)}"
        )
    return positive_int(input_shape[0], f"{model} input channels"), positive_int(
        input_shape[1], f"{model} input length"
    )


def init_conv_bn_linear_(model: nn.Module, *, linear_std: float | None) -> None:
    """Initialise ``model`` in place, the way the CIFAR pruning papers' code does.

    Conv weights: Kaiming normal, ``mode='fan_out'``, ReLU gain; conv biases 0. BatchNorm: weight 1,
    bias 0. Linear: ``N(0, linear_std)`` weights and zero bias when ``linear_std`` is given, otherwise
    PyTorch's default (Kaiming uniform, ``a = sqrt(5)``) weights and zero bias.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
