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

Scoring data: ``ctx.batches`` holds one batch per scoring iteration (method option ``iterations``,
Su et al.'s "1 per class x 10 iterations" for deep ResNets and Tiny-ImageNet); SNIP and GraSP sum
their gradients over the batches, as the reference code accumulates them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from prunelab.errors import PrunelabError
from prunelab.options import as_bool
from prunelab.pruning.prunable import Layer

#: A batch of scoring data: inputs ``(B, *input_shape)`` and integer targets ``(B,)``.
Batch = tuple[Tensor, Tensor]


@dataclass
class ScoreContext:
    """Everything a score function may use.

    Attributes:
        model: a private copy of the network, pruned weights already zero; free to modify.
        layers: the prunable layers, in order.
        batches: scoring data (already transformed by data sanity checks), one batch per
            scoring iteration, or ``None`` if the method is data-free.
        input_shape: shape of one example (without batch), or ``None`` where neither the caller,
            the data nor a registry model tells it (only methods that run a forward pass without
            data need it: see :meth:`require_input_shape`).
        generator: the mask random stream (CPU), for random scores.
        options: method options (e.g. ``temperature`` for GraSP), defaults already filled in.
    """

    model: nn.Module
    layers: list[Layer]
    batches: list[Batch] | None
    input_shape: tuple[int, ...] | None
    generator: torch.Generator
    options: Mapping[str, Any] = field(default_factory=dict)

    def weights(self) -> dict[str, nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {layer.name: params[layer.name] for layer in self.layers}

    def require_batches(self, method: str) -> list[Batch]:
        if not self.batches:
            raise PrunelabError(f"method {method!r} needs scoring data; pass data=...")
        return self.batches

    def require_input_shape(self, method: str) -> tuple[int, ...]:
        """The example shape, or a one-line error saying how to give it."""
        if self.input_shape is None:
            raise PrunelabError(
                f"method {method!r} runs the network without data and needs the example shape: "
                "pass input_shape=... (one example, no batch dimension) or data=..."
            )
        return self.input_shape

    def choice(self, method: str, option: str, default: str, valid: Sequence[str]) -> str:
        """A string option validated against ``valid`` (one-line error naming the choices)."""
        value = str(self.options.get(option, default)).lower()
        if value not in valid:
            raise PrunelabError(
                f"method {method!r} option {option} must be one of {', '.join(valid)}; got {value!r}"
            )
        return value


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


BN_MODES = ("train", "eval")


def _set_bn_mode(ctx: ScoreContext, method: str) -> None:
    """Option ``bn_mode``: ``train`` (default; batch statistics, as the reference code scores a
    freshly built net) or ``eval`` (running statistics, i.e. their initial 0/1 at init)."""
    mode = ctx.choice(method, "bn_mode", "train", BN_MODES)
    ctx.model.train(mode == "train")


def snip_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``|w * dL/dw|``, gradients summed over the scoring batches
    (one per iteration, as ``loss.backward()`` accumulates them in the reference code)."""
    batches = ctx.require_batches("snip")
    weights = ctx.weights()
    _set_bn_mode(ctx, "snip")
    grads = _cross_entropy_grads(ctx.model, list(weights.values()), batches)
    return {name: (w.detach() * g).abs() for (name, w), g in zip(weights.items(), grads, strict=True)}


def sort_by_class(batch: Batch) -> Batch:
    """The batch reordered by label, stably (examples of one class keep their order)."""
    x, y = batch
    order = torch.sort(y, stable=True).indices
    return x.index_select(0, order), y.index_select(0, order)


def _halves(batches: list[Batch]) -> list[Batch]:
    """Each batch sorted by class, then cut in two halves (classes 0-4 and 5-9 for 10 per class of
    CIFAR-10), as the reference code's per-class fetch orders it, whatever the data source."""
    halves: list[Batch] = []
    for batch in batches:
        x, y = sort_by_class(batch)
        cut = max(1, x.shape[0] // 2)
        halves.append((x[:cut], y[:cut]))
        if cut < x.shape[0]:
            halves.append((x[cut:], y[cut:]))
    return halves


@torch.no_grad()
def _xavier_linear_(model: nn.Module, generator: torch.Generator) -> None:
    """Every ``nn.Linear`` weight redrawn as ``xavier_normal`` (std ``sqrt(2 / (fan_in + fan_out))``);
    weights that are exactly zero (already pruned) stay zero."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))
            fresh = torch.randn(w.shape, generator=generator, dtype=torch.float32) * std
            w.copy_(fresh.to(w.device, w.dtype) * (w != 0))


def grasp_scores(ctx: ScoreContext) -> dict[str, Tensor]:
    """GraSP keep-scores ``w * (H g)`` (the negative of the paper's ``S``; see the module doc).

    As in the reference code each scoring batch is sorted by class and split into two halves;
    ``g`` is the gradient of the temperature-scaled loss summed over the halves (of every
    iteration's batch), and ``H g`` is accumulated by differentiating ``<stop_grad(g), grad L_half>``
    for each half. (Before, a tuple or DataLoader batch was halved in the order given.)

    Options: ``temperature`` (200); ``bn_mode`` (``train``); ``reinit_linear`` (False): redraw
    the linear layers of the scoring copy with ``xavier_normal`` first, as the reference code's
    ``reinit=True`` does (from the mask stream). Attention runs on the math SDPA kernel, the one
    that supports the second derivative.
    """
    batches = _halves(ctx.require_batches("grasp"))
    temperature = float(ctx.options.get("temperature", 200.0))
    if as_bool(ctx.options.get("reinit_linear", False), "method 'grasp' option reinit_linear"):
        _xavier_linear_(ctx.model, ctx.generator)
    weights = ctx.weights()
    params = list(weights.values())
    _set_bn_mode(ctx, "grasp")
    # The fused attention kernels (flash, memory-efficient) have no double backward.
    with sdpa_kernel(SDPBackend.MATH):
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
    The per-round count and tie rules (options ``count_rule``, ``tie_rule``) act in
    :func:`prunelab.pruning.api.compute_mask`.
    """
    model = ctx.model
    shape = ctx.require_input_shape("synflow")
    # as_bool: options may arrive from YAML or the CLI as strings ("false" must not mean True)
    double = as_bool(ctx.options.get("float64", False), "method 'synflow' option float64")
    dtype = torch.float64 if double else torch.float32
    model.to(dtype)
    model.eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    weights = ctx.weights()
    device = next(iter(weights.values())).device
    ones = torch.ones((1, *shape), dtype=dtype, device=device)
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
