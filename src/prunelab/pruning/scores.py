"""Score functions: a number per prunable weight, **higher = more important = kept first**.

Each function takes a :class:`ScoreContext` and returns ``{layer name: score tensor}`` with each
tensor shaped like its weight. They never modify ``ctx.model``'s weights in ways that outlive the
call: the pipeline hands them a private copy whose pruned weights are already zero.

Sign conventions (pinned by tests):

- SNIP (Lee et al. 2019): ``|w * dL/dw|`` with cross-entropy on the scoring batch.
- GraSP (Wang et al. 2020): the paper's score is ``S = -w * (H g)``, and GraSP removes the
  *largest* ``S``. prunelab's keep-score is therefore ``-S = w * (H g)``, where ``g`` is the loss
  gradient on the scoring data (logits divided by the temperature ``T = 200``) and ``H g`` the
  Hessian-gradient product.
- SynFlow (Tanaka et al. 2020): ``|w * dR/dw|`` with ``R = sum(f(1; |θ|))``, the network run on
  an all-ones input with every parameter and buffer replaced by its absolute value, BN in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.pruning.prunable import Layer

#: A batch of scoring data: inputs ``(B, *input_shape)`` and integer targets ``(B,)``.
Batch = tuple[Tensor, Tensor]


@dataclass
class ScoreContext:
    """Everything a score function may use.

    Attributes:
        model: a private copy of the network, pruned weights already zero; free to modify.
        layers: the prunable layers, in order.
        batches: scoring data (already transformed by data sanity checks), or ``None`` if the
            method is data-free.
        input_shape: shape of one example (without batch), for data-free methods.
        generator: the mask random stream (CPU), for random scores.
        options: method options (e.g. ``temperature`` for GraSP), defaults already filled in.
    """

    model: nn.Module
    layers: list[Layer]
    batches: list[Batch] | None
    input_shape: tuple[int, ...]
    generator: torch.Generator
    options: Mapping[str, Any] = field(default_factory=dict)

    def weights(self) -> dict[str, nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {layer.name: params[layer.name] for layer in self.layers}

    def require_batches(self, method: str) -> list[Batch]:
        if not self.batches:
            raise PrunelabError(f"method {method!r} needs scoring data; pass data=...")
        return self.batches


ScoreFn = Callable[[ScoreContext], dict[str, Tensor]]


def random_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """I.i.d. uniform scores: top-k of them is a uniformly random subset of exactly k weights."""
    out = {}
    for name, w in ctx.weights().items():
        out[name] = torch.rand(w.shape, generator=ctx.generator).to(w.device)
    return out


def magnitude_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """``|w|`` of the current weights."""
    return {name: w.detach().abs().clone() for name, w in ctx.weights().items()}


def _cross_entropy_grads(
    model: nn.Module, weights: list[nn.Parameter], batches: list[Batch], temperature: float = 1.0
) -> list[Tensor]:
    grads = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        loss = F.cross_entropy(model(x) / temperature, y)
        for acc, g in zip(grads, torch.autograd.grad(loss, weights), strict=True):
            acc.add_(g)
    return grads


def snip_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``|w * dL/dw|``, gradients summed over the scoring batches."""
    batches = ctx.require_batches("snip")
    weights = ctx.weights()
    ctx.model.train()  # batch statistics, as in the reference code (scored right after init)
    grads = _cross_entropy_grads(ctx.model, list(weights.values()), batches)
    return {name: (w.detach() * g).abs() for (name, w), g in zip(weights.items(), grads, strict=True)}


def _halves(batches: list[Batch]) -> list[Batch]:
    halves: list[Batch] = []
    for x, y in batches:
        cut = max(1, x.shape[0] // 2)
        halves.append((x[:cut], y[:cut]))
        if cut < x.shape[0]:
            halves.append((x[cut:], y[cut:]))
    return halves


def grasp_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """GraSP keep-scores ``w * (H g)`` (the negative of the paper's ``S``; see the module doc).

    As in the reference code each scoring batch is split into two halves; ``g`` is the gradient
    of the temperature-scaled loss summed over halves, and ``H g`` is accumulated by
    differentiating ``<stop_grad(g), grad L_half>`` for each half.
    """
    batches = _halves(ctx.require_batches("grasp"))
    temperature = float(ctx.options.get("temperature", 200.0))
    weights = ctx.weights()
    params = list(weights.values())
    ctx.model.train()
    g = _cross_entropy_grads(ctx.model, params, batches, temperature)
    hg = [torch.zeros_like(w) for w in params]
    for x, y in batches:
        loss = F.cross_entropy(ctx.model(x) / temperature, y)
        grad_f = torch.autograd.grad(loss, params, create_graph=True)
        z = sum((gi.detach() * gf).sum() for gi, gf in zip(g, grad_f, strict=True))
        assert isinstance(z, Tensor)
        for acc, h in zip(hg, torch.autograd.grad(z, params), strict=True):
            acc.add_(h)
    return {name: w.detach() * h for (name, w), h in zip(weights.items(), hg, strict=True)}


def synflow_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """SynFlow synaptic saliency ``|w * dR/dw|`` on the linearised (absolute-valued) network.

    Option ``float64`` runs the pass in double precision, which avoids overflow in deep nets.
    """
    model = ctx.model
    dtype = torch.float64 if ctx.options.get("float64", False) else torch.float32
    model.to(dtype)
    model.eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    weights = ctx.weights()
    device = next(iter(weights.values())).device
    ones = torch.ones((1, *ctx.input_shape), dtype=dtype, device=device)
    model.zero_grad(set_to_none=True)
    model(ones).sum().backward()
    out = {}
    for name, w in weights.items():
        assert w.grad is not None
        out[name] = (w.grad * w).detach().abs().to(torch.float64)
    return out


BUILTIN_SCORES: dict[str, ScoreFn] = {
    "random": random_scores,
    "magnitude": magnitude_scores,
    "snip": snip_scores,
    "grasp": grasp_scores,
    "synflow": synflow_scores,
}
