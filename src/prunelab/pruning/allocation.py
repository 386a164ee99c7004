"""Allocation: how many weights each prunable layer keeps, given a target density.

Every rule returns exact integer keep counts ``{layer name: count}``. Rules that only need layer
shapes (uniform, uniform+, ER, ERK, smart ratios, like-another-mask) ignore the scores; the global
rule ranks all scores together. Selection inside a layer is a separate step (:func:`select_top`).

Rounding: unless a paper's code floors explicitly (smart ratios), fractional keep counts are
rounded by largest remainder so that the total is exactly ``round(density * N)``; ties in scores
are broken towards the earlier layer and the lower flat index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from prunelab.errors import PrunelabError, check_density
from prunelab.pruning.mask import Mask
from prunelab.pruning.prunable import Layer
from prunelab.registry import Registry

Counts = dict[str, int]


@dataclass(frozen=True)
class AllocationContext:
    """Inputs of an allocation rule.

    Attributes:
        layers: the layers to allocate over, in order.
        density: target kept fraction over ``layers``.
        scores: keep-scores per layer (only the global rule needs them).
        family: model family (``"resnet"``, ``"vgg"``, ...), used by smart ratios.
    """

    layers: list[Layer]
    density: float
    scores: Mapping[str, Tensor] | None = None
    family: str = "unknown"


AllocationFn = Callable[[AllocationContext], Counts]


@dataclass(frozen=True)
class Allocation:
    """A registered allocation rule."""

    name: str
    fn: AllocationFn
    needs_scores: bool
    description: str
    paper: str


ALLOCATIONS: Registry[Allocation] = Registry("allocation")


def register_allocation(
    name: str, *, needs_scores: bool = False, description: str = "", paper: str = ""
) -> Callable[[AllocationFn], AllocationFn]:
    """Decorator registering an allocation rule ``fn(ctx) -> counts``."""

    def decorate(fn: AllocationFn) -> AllocationFn:
        ALLOCATIONS.add(name, Allocation(name, fn, needs_scores, description, paper))
        return fn

    return decorate


def target_count(layers: list[Layer], density: float) -> int:
    """``round(density * N)`` over ``layers`` (N = their total weight count)."""
    return int(round(density * sum(layer.numel for layer in layers)))


def round_to_total(layers: list[Layer], fractional: Mapping[str, float], total: int) -> Counts:
    """Round fractional keep counts to integers summing to ``total`` (largest remainder method).

    Counts are clipped to ``[0, N_l]``; remainders are handed out in descending order, ties to the
    earlier layer.
    """
    counts = {l.name: min(l.numel, max(0, math.floor(fractional[l.name]))) for l in layers}
    missing = total - sum(counts.values())
    order = sorted(
        range(len(layers)),
        key=lambda i: (-(fractional[layers[i].name] - math.floor(fractional[layers[i].name])), i),
    )
    while missing > 0:
        progressed = False
        for i in order:
            layer = layers[i]
            if missing == 0:
                break
            if counts[layer.name] < layer.numel:
                counts[layer.name] += 1
                missing -= 1
                progressed = True
        if not progressed:
            break
    return counts


# ---------------------------------------------------------------------------------------------
@register_allocation(
    "global",
    needs_scores=True,
    description="one threshold over all prunable weights (top density*N scores kept)",
    paper="SNIP / GraSP / SynFlow / magnitude (Su et al. 2020; Lee et al. 2019)",
)
def global_allocation(ctx: AllocationContext) -> Counts:
    if ctx.scores is None:
        raise PrunelabError("the 'global' allocation needs scores")
    flat = torch.cat([ctx.scores[l.name].detach().flatten().double().cpu() for l in ctx.layers])
    keep = top_k_flat(flat, target_count(ctx.layers, ctx.density))
    counts: Counts = {}
    offset = 0
    for layer in ctx.layers:
        counts[layer.name] = int(keep[offset : offset + layer.numel].sum())
        offset += layer.numel
    return counts


@register_allocation(
    "uniform",
    description="every layer keeps the same fraction",
    paper="Random_Pruning (Liu et al. 2022); Su et al. 2020 ablation",
)
def uniform_allocation(ctx: AllocationContext) -> Counts:
    fractional = {l.name: ctx.density * l.numel for l in ctx.layers}
    return round_to_total(ctx.layers, fractional, target_count(ctx.layers, ctx.density))


@register_allocation(
    "uniform_plus",
    description="uniform, first layer dense, last layer at least 20% dense; total density exact",
    paper="Gale et al. 2019 via Random_Pruning (Liu et al. 2022)",
)
def uniform_plus_allocation(ctx: AllocationContext) -> Counts:
    """Uniform+ (Gale et al. 2019, as in Random_Pruning's ``uniform_plus``).

    The first layer is dense; the last layer keeps ``max(0.2, d')``; every other layer keeps
    ``d'``, solved so the overall density is exactly the target. (Random_Pruning's code divides by
    the full weight count and so lands slightly below the target; prunelab hits it exactly.)
    """
    layers = ctx.layers
    if len(layers) < 3:
        return uniform_allocation(ctx)
    first, middle, last = layers[0], layers[1:-1], layers[-1]
    budget = ctx.density * sum(l.numel for l in layers) - first.numel
    n_middle = sum(l.numel for l in middle)
    rest = budget / (n_middle + last.numel)
    last_density = rest
    if rest < 0.2:
        last_density = 0.2
        rest = (budget - 0.2 * last.numel) / n_middle
    if rest < 0:
        raise PrunelabError(
            f"density {ctx.density} is too low for uniform_plus: the dense first layer and the "
            "20% floor of the last layer alone exceed it"
        )
    rest = min(rest, 1.0)
    fractional = {first.name: float(first.numel), last.name: min(1.0, last_density) * last.numel}
    fractional.update({l.name: rest * l.numel for l in middle})
    return round_to_total(layers, fractional, target_count(layers, ctx.density))


def erdos_renyi_densities(layers: list[Layer], density: float, raw: Mapping[str, float]) -> dict[str, float]:
    """Per-layer densities ``eps * raw_l`` with the dense-layer loop (RigL / Random_Pruning).

    ``eps`` is solved so the expected overall density is exactly ``density``; whenever a layer
    would exceed density 1, every layer with the current largest ``raw`` is made dense and ``eps``
    is solved again.
    """
    total = sum(l.numel for l in layers)
    dense: set[str] = set()
    while True:
        free = [l for l in layers if l.name not in dense]
        if not free:
            break
        budget = density * total - sum(l.numel for l in layers if l.name in dense)
        eps = budget / sum(raw[l.name] * l.numel for l in free)
        if all(eps * raw[l.name] <= 1.0 for l in free):
            break
        top = max(raw[l.name] for l in free)
        dense |= {l.name for l in free if raw[l.name] == top}
    return {l.name: 1.0 if l.name in dense else eps * raw[l.name] for l in layers}


def _er_raw(layer: Layer) -> float:
    n_out, n_in = layer.shape[0], layer.shape[1]
    return (n_out + n_in) / (n_out * n_in)


def _erk_raw(layer: Layer) -> float:
    return sum(layer.shape) / layer.numel


def _erdos_renyi_counts(ctx: AllocationContext, raw_fn: Callable[[Layer], float]) -> Counts:
    densities = erdos_renyi_densities(ctx.layers, ctx.density, {l.name: raw_fn(l) for l in ctx.layers})
    fractional = {l.name: densities[l.name] * l.numel for l in ctx.layers}
    return round_to_total(ctx.layers, fractional, target_count(ctx.layers, ctx.density))


@register_allocation(
    "er",
    description="Erdos-Renyi: density proportional to (n_out + n_in) / (n_out * n_in)",
    paper="Mocanu et al. 2018 via Random_Pruning (Liu et al. 2022)",
)
def er_allocation(ctx: AllocationContext) -> Counts:
    return _erdos_renyi_counts(ctx, _er_raw)


@register_allocation(
    "erk",
    description="Erdos-Renyi-Kernel: density proportional to sum(shape) / prod(shape)",
    paper="Evci et al. 2020 via Random_Pruning (Liu et al. 2022)",
)
def erk_allocation(ctx: AllocationContext) -> Counts:
    return _erdos_renyi_counts(ctx, _erk_raw)


def smart_ratio_keep_fractions(
    layers: list[Layer], density: float, *, variant: str, last_keep: float = 0.3
) -> tuple[dict[str, float], int]:
    """Su et al.'s smart-ratio keep fractions before flooring, and the last layer's keep count.

    Layer ``l = 1..L`` (``L`` = number of layers, the last one being the classifier) gets the raw
    score ``q_l = (L-l+1)^2 + (L-l+1)``, divided by ``l^2`` in the VGG variant. The classifier's
    keep ratio is fixed at ``last_keep`` (0.3). The remaining budget
    ``G = int(N*d) - int(N_last*last_keep)`` is spread as ``keep_l = G * q_l / sum_l int(N_l q_l)``;
    a layer above 1 is saturated and its excess carried to the next unsaturated layers.
    (Su et al.'s models have exactly one linear layer, the classifier; prunelab fixes the last
    layer, which is the same layer there and keeps the rule meaningful for MLPs.)
    """
    if variant not in ("resnet", "vgg"):
        raise PrunelabError(f"unknown smart-ratio variant {variant!r}; valid choices: resnet, vgg")
    n_layers = len(layers)
    total = sum(l.numel for l in layers)
    last = layers[-1]
    body = layers[:-1]
    budget_total = int(total * density)
    last_count = min(int(last.numel * last_keep), budget_total)
    if not body:
        return {}, min(last.numel, budget_total)
    raw: dict[str, float] = {}
    for position, layer in enumerate(body, start=1):
        depth_from_end = n_layers - position + 1
        q = float(depth_from_end**2 + depth_from_end)
        if variant == "vgg":
            q /= position**2
        raw[layer.name] = q
    budget = budget_total - last_count
    scale = budget / sum(int(l.numel * raw[l.name]) for l in body)
    keep = {l.name: scale * raw[l.name] for l in body}
    carry = 0
    for layer in body:
        if keep[layer.name] >= 1.0:
            carry += int((keep[layer.name] - 1.0) * layer.numel)
            keep[layer.name] = 1.0
        elif carry > 0:
            room = int((1.0 - keep[layer.name]) * layer.numel)
            if carry > room:
                keep[layer.name] = 1.0
                carry -= room
            else:
                keep[layer.name] += carry / layer.numel
                carry = 0
    return keep, last_count


@register_allocation(
    "smart_ratio",
    description="Su et al.'s data-free ratios: quadratic decay with depth, classifier fixed at 30%",
    paper="Su et al. 2020 (random tickets)",
)
def smart_ratio_allocation(ctx: AllocationContext) -> Counts:
    variant = "resnet" if ctx.family in ("resnet", "wrn") else "vgg"
    keep, last_count = smart_ratio_keep_fractions(ctx.layers, ctx.density, variant=variant)
    counts = {
        l.name: l.numel if keep[l.name] >= 1.0 else int(keep[l.name] * l.numel) for l in ctx.layers[:-1]
    }
    counts[ctx.layers[-1].name] = last_count
    return counts


def like_mask(reference: Mask) -> AllocationFn:
    """An allocation that copies ``reference``'s per-layer keep counts (density is ignored)."""

    def allocate(ctx: AllocationContext) -> Counts:
        counts = reference.counts()
        missing = [l.name for l in ctx.layers if l.name not in counts]
        if missing:
            raise PrunelabError(f"the reference mask has no layer {missing[0]!r}")
        return {l.name: counts[l.name] for l in ctx.layers}

    return allocate


# ---------------------------------------------------------------------------------------------
def top_k_flat(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest entries of a 1-D tensor; ties go to the lower index.

    NaN counts as the lowest score. Runs in O(n) via a threshold rather than a full sort.
    """
    n = scores.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return keep
    if k >= n:
        return keep.fill_(True)
    values = torch.nan_to_num(scores, nan=-math.inf)
    threshold = torch.topk(values, k, sorted=False).values.min()
    above = values > threshold
    keep |= above
    need = k - int(above.sum())
    if need > 0:
        ties = torch.nonzero(values == threshold).flatten()[:need]
        keep[ties] = True
    return keep


def select_top(layers: list[Layer], scores: Mapping[str, Tensor], counts: Mapping[str, int]) -> Mask:
    """The mask keeping, in each layer, its ``counts[layer]`` highest-scoring weights."""
    tensors = {}
    for layer in layers:
        flat = scores[layer.name].detach().flatten()
        tensors[layer.name] = top_k_flat(flat, int(counts[layer.name])).view(layer.shape)
    return Mask(tensors)


def resolve_allocation(allocation: str | AllocationFn) -> tuple[AllocationFn, bool]:
    """``(fn, needs_scores)`` for a registry name or a user callable."""
    if callable(allocation):
        return allocation, False
    entry = ALLOCATIONS.get(allocation)
    return entry.fn, entry.needs_scores


def allocate(
    layers: list[Layer],
    density: float,
    allocation: str | AllocationFn,
    *,
    scores: Mapping[str, Tensor] | None = None,
    family: str = "unknown",
    last_layer_density: float | None = None,
) -> Counts:
    """Keep counts for every layer under ``allocation`` at overall ``density`` (kept fraction).

    With ``last_layer_density`` the last layer's count is fixed to ``round(f * N_last)`` and the
    rule runs over the other layers at the density that keeps the overall target.
    """
    density = check_density(density)
    fn, _ = resolve_allocation(allocation)
    if last_layer_density is None or len(layers) < 2:
        return fn(AllocationContext(layers, density, scores, family))
    last = layers[-1]
    fixed = int(round(last_layer_density * last.numel))
    rest_layers = layers[:-1]
    rest_total = sum(l.numel for l in rest_layers)
    rest_density = (target_count(layers, density) - fixed) / rest_total
    if not (0.0 < rest_density <= 1.0):
        raise PrunelabError(
            f"density {density} cannot be met with the last layer fixed at {last_layer_density}"
        )
    counts = fn(AllocationContext(rest_layers, rest_density, scores, family))
    counts[last.name] = fixed
    return counts
