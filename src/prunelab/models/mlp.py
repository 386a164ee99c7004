"""Multi-layer perceptron (the MNIST-1D reference MLP by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models._common import positive_int
from prunelab.models.registry import register_model
from prunelab.options import as_bool


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Input ``(B, *input_shape)`` is flattened to ``(B, prod(input_shape))``; output ``(B, num_classes)``.
    Layers are ``Linear(in, h1) - ReLU - ... - Linear(h_last, num_classes)``, all with bias, named
    ``layers.0``, ``layers.2``, ... inside one ``nn.Sequential``. With ``bn`` every hidden linear is
    followed by ``BatchNorm1d`` (weight 1, bias 0) before its ReLU, so the linears are ``layers.0``,
    ``layers.3``, ... PyTorch's default init is kept otherwise, as in the MNIST-1D reference code.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (100, 100), *, bn: bool = False
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(nn.Linear(fan_in, fan_out))
            if bn:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> logits ``(B, num_classes)``."""
        return self.layers(x.flatten(1))


@register_model(
    "mlp", family="mlp", input_rank=0, description="MLP on flattened inputs (MNIST-1D: 40-100-100-10)"
)
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Sequence[int] = (100, 100),
    bn: bool = False,
) -> nn.Module:
    """MLP for examples of any ``input_shape``.

    Options: ``hidden`` (hidden widths, may be empty; [100, 100]), ``bn`` (BatchNorm1d after each hidden
    linear, False).
    """
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise PrunelabError(f"mlp option hidden must be a list of positive integers, got {hidden!r}")
    widths = [positive_int(h, "mlp hidden width") for h in hidden]
    in_features = math.prod(positive_int(d, "mlp input dimension") for d in input_shape)
    return MLP(in_features, positive_int(num_classes, "num_classes"), widths, bn=as_bool(bn, "mlp option bn"))
