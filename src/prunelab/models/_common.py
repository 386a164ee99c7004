"""Shared helpers for the model constructors: input-shape checks and weight initialisation."""

from __future__ import annotations

import torch
from torch import nn

from prunelab.errors import PrunelabError, invalid_choice
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


#: Per-scheme rules ``(conv weight, conv bias, linear weight, linear bias)``. ``fan_out``/``fan_in``:
#: Kaiming normal with ReLU gain, ``N(0, sqrt(2 / fan))``; ``normal_0.01``: ``N(0, 0.01)``; ``zero``: 0;
#: ``default``: whatever PyTorch's ``reset_parameters`` drew when the layer was built (Kaiming
#: uniform with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for weights and biases).
_INIT_RULES: dict[str, tuple[str, str, str, str]] = {
    "conv_fan_out_linear_normal_0.01": ("fan_out", "zero", "normal_0.01", "zero"),
    "conv_fan_out_linear_default_zero_bias": ("fan_out", "zero", "default", "zero"),
    "conv_fan_out_linear_default": ("fan_out", "zero", "default", "default"),
    "conv_fan_in_linear_normal_0.01": ("fan_in", "zero", "normal_0.01", "zero"),
    "conv_linear_fan_in": ("fan_in", "default", "fan_in", "default"),
    "torch_default": ("default", "default", "default", "default"),
}

#: Initialisation schemes of the CIFAR VGGs, ResNets, PreResNet and DenseNet (option ``init``), each
#: with its formula and whose code uses it. ``k`` is the kernel size, ``C_in``/``C_out`` a conv's
#: in/out channels, ``n_in`` a linear layer's input features. BatchNorm is always ``gamma = 1``,
#: ``beta = 0`` (a model's ``bn_gamma`` option may then change ``gamma``).
INIT_SCHEMES: dict[str, str] = {
    "conv_fan_out_linear_normal_0.01": (
        "conv N(0, sqrt(2/(k*k*C_out))) (Kaiming normal fan_out), conv bias 0; linear N(0, 0.01), bias 0 "
        "(prunelab's VGG default; Su et al.'s ResNets; Random_Pruning's VGGs; Liu et al. 2019's VGGs)"
    ),
    "conv_fan_out_linear_default_zero_bias": (
        "conv N(0, sqrt(2/(k*k*C_out))), conv bias 0; linear U(-1/sqrt(n_in), 1/sqrt(n_in)) (PyTorch "
        "default), bias 0 (prunelab's ResNet default)"
    ),
    "conv_fan_out_linear_default": (
        "conv N(0, sqrt(2/(k*k*C_out))), conv bias 0; linear weight and bias U(-1/sqrt(n_in), "
        "1/sqrt(n_in)) (PyTorch default) (Liu et al. 2019's ResNet, PreResNet and DenseNet)"
    ),
    "conv_fan_in_linear_normal_0.01": (
        "conv N(0, sqrt(2/(k*k*C_in))), conv bias 0; linear N(0, 0.01), bias 0 "
        "(Su et al.'s VGG; Liu et al. 2019's weight-level vgg19_bn)"
    ),
    "conv_linear_fan_in": (
        "every conv and linear weight N(0, sqrt(2/fan_in)) (fan_in = k*k*C_in or n_in), biases PyTorch "
        "default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Random_Pruning's CIFAR ResNets, kaiming_normal_)"
    ),
    "torch_default": (
        "every conv and linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's "
        "reset_parameters, untouched)"
    ),
}


def init_scheme(value: object, model: str) -> str:
    """Validate a model's ``init`` option: one of :data:`INIT_SCHEMES` (case-insensitive)."""
    name = str(value).lower()
    if name not in _INIT_RULES:
        raise invalid_choice(f"{model} init", value, _INIT_RULES)
    return name


def _init_weight_(weight: torch.Tensor, rule: str) -> None:
    if rule == "fan_out":
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    elif rule == "fan_in":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    elif rule == "normal_0.01":
        nn.init.normal_(weight, 0.0, 0.01)


def init_weights_(model: nn.Module, scheme: str) -> None:
    """Initialise ``model`` in place by :data:`INIT_SCHEMES` entry ``scheme`` (see there for formulas).

    Modules are visited in registration order and each random draw happens in the same order as in
    :func:`init_conv_bn_linear_`, so ``conv_fan_out_linear_normal_0.01`` equals
    ``init_conv_bn_linear_(model, linear_std=0.01)`` and ``conv_fan_out_linear_default_zero_bias``
    equals ``init_conv_bn_linear_(model, linear_std=None)`` bit for bit (run hashes rely on this).
    """
    conv_w, conv_b, linear_w, linear_b = _INIT_RULES[init_scheme(scheme, type(model).__name__)]
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            _init_weight_(module.weight, conv_w)
            if module.bias is not None and conv_b == "zero":
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            _init_weight_(module.weight, linear_w)
            if module.bias is not None and linear_b == "zero":
                nn.init.zeros_(module.bias)
