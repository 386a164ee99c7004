"""Allocation: how many weights each prunable layer keeps, given a target density.

Every rule returns exact integer keep counts ``{layer name: count}``. Rules that only need layer
shapes (uniform, uniform+, ER, ERK, smart ratios, like-another-mask) ignore the scores; the global
rule ranks all scores together. Selection inside a layer is a separate step (:func:`select_top`).

Rounding: unless a paper's code floors explicitly (smart ratios), fractional keep counts are
rounded by largest remainder so that the total is exactly ``round(density * N)``; ties in scores
are broken towards the earlier layer and the lower flat index.

Options: a rule may declare options with defaults (``register_allocation(options=...)``); they
reach it as ``ctx.options``. Through ``prune(options=...)`` they share one dict with the method's
options, each name going to whichever of the two declares it. A rule may note what it decided
in ``ctx.record`` (e.g. the smart-ratio variant); ``prune()`` copies that into ``Mask.info``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import PrunelabError, check_density, invalid_choice
from prunelab.options import as_number, merge_options
from prunelab.pruning.mask import Mask, PruningWarning
from prunelab.pruning.prunable import Layer, find_residual_addition
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
        options: the rule's options, defaults filled in.
        model: the network being pruned, where known (smart ratios inspect an unknown family's
            structure); never modified.
        record: what the rule decided, for ``Mask.info`` (the rule writes into it).
        data: the scoring data given to ``prune()`` (a DataBundle, an ``(inputs, targets)`` pair or a
            loader), for rules that run another method's scoring (``snip_ratio``, ``grasp_ratio``).
        input_shape: one example's shape, where known (``synflow_ratio`` runs the network on ones).
        seed: the run seed; a rule draws its own random stream from it.
    """

    layers: list[Layer]
    density: float
    scores: Mapping[str, Tensor] | None = None
    family: str = "unknown"
    options: Mapping[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    record: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0


AllocationFn = Callable[[AllocationContext], Counts]


@dataclass(frozen=True)
class Allocation:
    """A registered allocation rule.

    Attributes:
        needs_data: the rule scores the model on data itself (a method's layer-wise ratios), so
            ``prune()`` insists on ``data=`` even for a data-free method such as ``random``.
        needs_input_shape: the rule runs the network without data and needs one example's shape.
        fixes_last_layer: the rule sets the last layer's density itself (``erk_plus``: the
            classifier), so it cannot be combined with the prunable set's ``last_layer_density``.
        select: the rule's mask directly (the positions it ranks, not only counts), when it can
            give them faster than counts followed by :func:`select_top` (the global rule).
    """

    name: str
    fn: AllocationFn
    needs_scores: bool
    description: str
    paper: str
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_data: bool = False
    needs_input_shape: bool = False
    fixes_last_layer: bool = False
    select: Callable[[AllocationContext], Mask] | None = None


ALLOCATIONS: Registry[Allocation] = Registry("allocation")


def register_allocation(
    name: str,
    *,
    needs_scores: bool = False,
    description: str = "",
    paper: str = "",
    options: Mapping[str, Any] | None = None,
    needs_data: bool = False,
    needs_input_shape: bool = False,
    fixes_last_layer: bool = False,
    select: Callable[[AllocationContext], Mask] | None = None,
) -> Callable[[AllocationFn], AllocationFn]:
    """Decorator registering an allocation rule ``fn(ctx) -> counts``; ``options`` are its option
    names and defaults (read from ``ctx.options``); the flags are :class:`Allocation`'s."""

    def decorate(fn: AllocationFn) -> AllocationFn:
        entry = Allocation(
            name,
            fn,
            needs_scores,
            description,
            paper,
            dict(options or {}),
            needs_data=needs_data,
            needs_input_shape=needs_input_shape,
            fixes_last_layer=fixes_last_layer,
            select=select,
        )
        ALLOCATIONS.add(name, entry)
        return fn

    return decorate


def allocation_option_defaults(allocation: str | AllocationFn | None) -> dict[str, Any]:
    """The option defaults of a registered allocation; ``{}`` for a callable, ``like:PATH`` or None."""
    if not isinstance(allocation, str) or allocation.lower().startswith("like:"):
        return {}
    return dict(ALLOCATIONS.get(allocation).options)


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
def global_selection(ctx: AllocationContext) -> Mask:
    """The global rule's mask itself: one threshold over all scores (the ``round(d N)`` largest kept,
    ties to the earlier layer and lower index), cut back into layers. Keeping exactly these is what
    :func:`select_top` would do with the rule's counts, without a second selection per layer."""
    if ctx.scores is None:
        raise PrunelabError("the 'global' allocation needs scores")
    # On the scores' device (a GPU selects there); float64 so ties and tiny SynFlow scores rank exactly,
    # except where the device has no float64 (MPS).
    device = ctx.scores[ctx.layers[0].name].device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    flat = torch.cat([ctx.scores[l.name].detach().flatten().to(device, dtype) for l in ctx.layers])
    keep = top_k_flat(flat, target_count(ctx.layers, ctx.density))
    parts = keep.split([layer.numel for layer in ctx.layers])
    return Mask({layer.name: part.view(layer.shape) for layer, part in zip(ctx.layers, parts, strict=True)})


@register_allocation(
    "global",
    needs_scores=True,
    description="one threshold over all prunable weights (top density*N scores kept)",
    paper="SNIP / GraSP / SynFlow / magnitude (Su et al. 2020; Lee et al. 2019)",
    select=global_selection,
)
def global_allocation(ctx: AllocationContext) -> Counts:
    return global_selection(ctx).counts()


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
    # fan_shape: a stacked weight (attention's packed q/k/v) is three (E, E) maps, not one (3E, E).
    n_out, n_in = layer.fan_shape[0], layer.fan_shape[1]
    return (n_out + n_in) / (n_out * n_in)


def _erk_raw(layer: Layer) -> float:
    return sum(layer.fan_shape) / math.prod(layer.fan_shape)


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


@register_allocation(
    "erk_plus",
    description="ERK+: the classifier (last layer) at fc_density (1 = dense), ERK over the rest; total exact",
    paper="Random_Pruning (Liu et al. 2022), ImageNet code",
    options={"fc_density": 1.0},
    fixes_last_layer=True,
)
def erk_plus_allocation(ctx: AllocationContext) -> Counts:
    """ERK+ (Random_Pruning's ImageNet ``ERK_plus``): the last prunable layer (the classifier) keeps
    ``fc_density`` of its weights; ERK runs over the other layers at
    ``d' = (d N_total - fc_density N_fc) / (N_total - N_fc)``, so the overall density is ``d``."""
    layers = ctx.layers
    fc_density = as_number(
        ctx.options.get("fc_density", 1.0),
        "erk_plus option fc_density",
        valid="in (0, 1]",
        accept=lambda v: 0.0 < v <= 1.0,
    )
    if len(layers) < 2:
        return erk_allocation(ctx)
    last, rest = layers[-1], layers[:-1]
    total = target_count(layers, ctx.density)
    fixed = int(round(fc_density * last.numel))
    n_rest = sum(l.numel for l in rest)
    rest_density = (total - fixed) / n_rest
    if not 0.0 < rest_density <= 1.0:
        raise PrunelabError(
            f"density {ctx.density:g} cannot be met by erk_plus with the classifier {last.name!r} at "
            f"fc_density {fc_density:g} (it alone keeps {fixed} of the {total} weights the density allows); "
            "use a higher density or a lower fc_density"
        )
    counts = _erdos_renyi_counts(AllocationContext(rest, rest_density, family=ctx.family), _erk_raw)
    counts[last.name] = fixed
    return counts


#: Shapes of the layer-wise decay of Su et al.'s smart ratio (``pruner/SmartRatio.py``): the default
#: and the ablation flags ``--linear_decay``, ``--ascend``, ``--cubic`` and ``--uniform``.
SMART_RATIO_DECAYS = ("quadratic", "linear", "ascend", "cubic", "uniform")
SMART_RATIO_VARIANTS = ("resnet", "vgg")


def _smart_ratio_raw(decay: str, position: int, n_layers: int) -> float:
    """Raw score ``q_l`` of layer ``l = position`` (1-based) of ``L = n_layers``; ``k = L - l + 1``."""
    k = n_layers - position + 1
    if decay == "quadratic":
        return float(k * k + k)
    if decay == "linear":
        return float(k)
    if decay == "ascend":
        return float(position * position + position)
    if decay == "cubic":
        return float(k**3)
    raise invalid_choice("smart-ratio decay", decay, SMART_RATIO_DECAYS)


def smart_ratio_keep_fractions(
    layers: list[Layer],
    density: float,
    *,
    variant: str,
    last_keep: float = 0.3,
    decay: str = "quadratic",
) -> tuple[dict[str, float], int]:
    """Su et al.'s smart-ratio keep fractions before flooring, and the last layer's keep count.

    Layer ``l = 1..L`` (``L`` = number of layers, the last one being the classifier) gets the raw
    score ``q_l``; with ``k = L - l + 1``:

    ============  =====================  ==========================================
    decay         ``q_l``                reference-code flag
    ============  =====================  ==========================================
    quadratic     ``k^2 + k``            default
    linear        ``k``                  ``--linear_decay``
    ascend        ``l^2 + l``            ``--ascend`` (increasing with depth)
    cubic         ``k^3``                ``--cubic``
    uniform       (same for all)         ``--uniform``
    ============  =====================  ==========================================

    The VGG variant divides every ``q_l`` by ``l^2`` (the reference code does so for any
    ``--arch`` other than ``resnet``, whatever the decay). The classifier's keep ratio is fixed at
    ``last_keep`` (``--linear_keep_ratio``, 0.3). The remaining budget
    ``G = int(N*d) - int(N_last*last_keep)`` is spread as ``keep_l = G * q_l / sum_l int(N_l q_l)``
    (``uniform``: ``keep_l = G / (N - N_last)`` for every layer). Then, walking the layers in
    order, a layer above 1 is saturated and its excess ``int((keep_l - 1) N_l)`` carried into the
    next unsaturated layers; **as in the reference code, the walk stops at the first layer after
    which nothing is carried**, so an excess arising later is dropped (the density then falls short
    of the target; only increasing decays such as ``ascend`` meet this). Before this change the walk
    went on past such a layer, which could differ only when a saturated layer carried less than
    one weight.
    (Su et al.'s models have exactly one linear layer, the classifier; prunelab fixes the last
    layer, which is the same layer there and keeps the rule meaningful for MLPs.)
    """
    if variant not in SMART_RATIO_VARIANTS:
        raise invalid_choice("smart-ratio variant", variant, SMART_RATIO_VARIANTS)
    if decay not in SMART_RATIO_DECAYS:
        raise invalid_choice("smart-ratio decay", decay, SMART_RATIO_DECAYS)
    n_layers = len(layers)
    total = sum(l.numel for l in layers)
    last = layers[-1]
    body = layers[:-1]
    budget_total = int(total * density)
    last_count = min(int(last.numel * last_keep), budget_total)
    if not body:
        return {}, min(last.numel, budget_total)
    budget = budget_total - last_count
    if decay == "uniform":
        balance = budget / sum(l.numel for l in body)
        return {l.name: balance for l in body}, last_count
    raw: dict[str, float] = {}
    for position, layer in enumerate(body, start=1):
        q = _smart_ratio_raw(decay, position, n_layers)
        if variant == "vgg":
            q /= position**2
        raw[layer.name] = q
    spread = sum(int(l.numel * raw[l.name]) for l in body)
    if spread <= 0:
        raise PrunelabError(
            f"smart ratio ({decay}, {variant}): the layers are too small to spread weights over"
        )
    scale = budget / spread
    keep = {l.name: scale * raw[l.name] for l in body}
    carry = 0
    for layer in body:
        if keep[layer.name] >= 1.0:
            carry += int((keep[layer.name] - 1.0) * layer.numel)
            keep[layer.name] = 1.0
        else:
            room = int((1.0 - keep[layer.name]) * layer.numel)
            if room >= carry:
                keep[layer.name] += carry / layer.numel
                carry = 0
            else:
                carry -= room
                keep[layer.name] = 1.0
        if carry == 0:
            break
    return keep, last_count


def smart_ratio_variant(ctx: AllocationContext) -> tuple[str, str]:
    """``(variant, why)``: the smart-ratio variant for ``ctx`` and how it was chosen.

    Option ``variant`` ``"resnet"`` or ``"vgg"`` is taken as given. ``"auto"`` (the default) uses
    the registry family (``resnet``/``wrn`` -> resnet, any other known family -> vgg, as before);
    for a model not built by prunelab it traces the model with ``torch.fx`` and picks resnet when
    the graph adds two input-dependent tensors (a residual connection). Before, such a model
    always got the VGG variant. An untraceable model gets vgg with a :class:`PruningWarning`.
    """
    chosen = str(ctx.options.get("variant", "auto")).lower()
    if chosen in SMART_RATIO_VARIANTS:
        return chosen, "option variant"
    if chosen != "auto":
        raise invalid_choice("smart-ratio variant", chosen, ("auto", *SMART_RATIO_VARIANTS))
    if ctx.family in ("resnet", "wrn"):
        return "resnet", f"model family {ctx.family!r}"
    if ctx.family != "unknown":
        return "vgg", f"model family {ctx.family!r}"
    if ctx.model is None:
        return "vgg", "model family unknown, no model to inspect"
    traced, node = find_residual_addition(ctx.model)
    if not traced:
        warnings.warn(
            "smart ratio: torch.fx could not trace the model to tell a ResNet from a VGG-like net; "
            "using the VGG variant (divided by l^2). Pass options={'variant': 'resnet'} or 'vgg' to choose.",
            PruningWarning,
            stacklevel=2,
        )
        return "vgg", "torch.fx could not trace the model"
    if node is not None:
        return "resnet", f"residual addition {node!r} found by torch.fx"
    return "vgg", "no residual addition found by torch.fx"


def _smart_ratio_counts(ctx: AllocationContext, decay: str) -> Counts:
    variant, why = smart_ratio_variant(ctx)
    last_keep = as_number(
        ctx.options.get("linear_keep_ratio", 0.3),
        "smart-ratio option linear_keep_ratio",
        valid="in [0, 1]",
        accept=lambda x: 0.0 <= x <= 1.0,
    )
    keep, last_count = smart_ratio_keep_fractions(
        ctx.layers, ctx.density, variant=variant, last_keep=last_keep, decay=decay
    )
    counts = {
        l.name: l.numel if keep[l.name] >= 1.0 else int(keep[l.name] * l.numel) for l in ctx.layers[:-1]
    }
    counts[ctx.layers[-1].name] = last_count
    ctx.record.update(
        {
            "smart_ratio_variant": variant,
            "smart_ratio_variant_source": why,
            "smart_ratio_decay": decay,
            "linear_keep_ratio": last_keep,
        }
    )
    return counts


_SMART_RATIO_OPTIONS = {"variant": "auto", "linear_keep_ratio": 0.3}

#: Su et al.'s smart ratios and their ablations: (name, decay of q_l, description, paper).
_SMART_RATIO_VARIANTS = (
    (
        "smart_ratio",
        "quadratic",
        "Su et al.'s data-free ratios: quadratic decay with depth, classifier fixed at 30%",
        "Su et al. 2020 (random tickets)",
    ),
    (
        "smart_ratio_linear_decay",
        "linear",
        "smart-ratio ablation: q_l = L-l+1 (linear decay), classifier fixed at 30%",
        "Su et al. 2020 (--linear_decay ablation)",
    ),
    (
        "smart_ratio_ascend",
        "ascend",
        "smart-ratio ablation: q_l = l^2+l (increasing with depth), classifier fixed at 30%",
        "Su et al. 2020 (--ascend ablation)",
    ),
    (
        "smart_ratio_cubic",
        "cubic",
        "smart-ratio ablation: q_l = (L-l+1)^3 (cubic decay), classifier fixed at 30%",
        "Su et al. 2020 (--cubic ablation)",
    ),
    (
        "smart_ratio_uniform",
        "uniform",
        "smart-ratio ablation: every non-classifier layer the same ratio, classifier fixed at 30%",
        "Su et al. 2020 (--uniform ablation)",
    ),
)


def _smart_ratio_rule(decay: str) -> AllocationFn:
    def rule(ctx: AllocationContext) -> Counts:
        return _smart_ratio_counts(ctx, decay)

    return rule


for _name, _decay, _description, _paper in _SMART_RATIO_VARIANTS:
    register_allocation(_name, description=_description, paper=_paper, options=_SMART_RATIO_OPTIONS)(
        _smart_ratio_rule(_decay)
    )


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
def kth_largest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th largest entry of a 1-D tensor (0-d tensor on its device), ``1 <= k <= n``.

    Selected from whichever end is shorter (the ``k`` largest, or the ``n - k + 1`` smallest), so a
    round keeping 97 % of the weights (SynFlow's early rounds) selects 3 %, not 97 %. On CPU
    ``torch.topk`` of the short end; elsewhere ``torch.kthvalue`` (one selection, no top-k buffer).
    """
    n = values.numel()
    if values.device.type != "cpu":
        return torch.kthvalue(values, n - k + 1).values
    if k <= n - k + 1:
        return torch.topk(values, k, sorted=False).values.min()
    return torch.topk(values, n - k + 1, largest=False, sorted=False).values.max()


def top_k_flat(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest entries of a 1-D tensor; ties go to the lower index.

    NaN counts as the lowest score. Runs in O(n) after one selection of the threshold
    (:func:`kth_largest`) rather than a full sort, on the scores' device.
    """
    n = scores.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return keep
    if k >= n:
        return keep.fill_(True)
    values = torch.nan_to_num(scores, nan=-math.inf)
    threshold = kth_largest(values, k)
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


def bernoulli_select(
    layers: list[Layer], counts: Mapping[str, int], generator: torch.Generator, device: torch.device
) -> Mask:
    """Random positions drawn independently per weight: layer ``l`` keeps each weight with
    probability ``counts[l] / N_l``, so its kept count is binomial around ``counts[l]`` (Random_Pruning's
    ``torch.rand(shape) < density``), not exact as with :func:`select_top` on random scores."""
    tensors = {}
    for layer in layers:
        probability = int(counts[layer.name]) / layer.numel
        tensors[layer.name] = (torch.rand(layer.shape, generator=generator) < probability).to(device)
    return Mask(tensors)


#: How a random method's positions are drawn: ``exact`` per-layer counts (Su et al.'s randperm) or
#: ``bernoulli`` per weight (Random_Pruning).
SAMPLINGS = ("exact", "bernoulli")


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
    options: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    record: dict[str, Any] | None = None,
    data: Any = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> Counts:
    """Keep counts for every layer under ``allocation`` at overall ``density`` (kept fraction).

    With ``last_layer_density`` the last layer's count is fixed to ``round(f * N_last)`` and the
    rule runs over the other layers at the density that keeps the overall target. ``options``
    are the rule's options (a registered rule's defaults fill the gaps; unknown names raise);
    ``model`` lets a rule inspect the network; ``record`` receives what the rule decided;
    ``data``, ``input_shape`` and ``seed`` reach rules that score the model themselves.
    """
    density = check_density(density)
    fn, _ = resolve_allocation(allocation)
    if isinstance(allocation, str):
        opts = merge_options(allocation_option_defaults(allocation), options, f"allocation {allocation!r}")
        if last_layer_density is not None and ALLOCATIONS.get(allocation).fixes_last_layer:
            raise PrunelabError(
                f"allocation {allocation!r} sets the last layer's density itself; drop the prunable "
                f"set's last_layer_density ({last_layer_density:g}) or use another allocation"
            )
    else:
        opts = dict(options or {})
    rec = record if record is not None else {}

    def context(over: list[Layer], at: float) -> AllocationContext:
        return AllocationContext(over, at, scores, family, opts, model, rec, data, input_shape, seed)

    if last_layer_density is None or len(layers) < 2:
        return fn(context(layers, density))
    last = layers[-1]
    fixed = int(round(last_layer_density * last.numel))
    rest_layers = layers[:-1]
    rest_total = sum(l.numel for l in rest_layers)
    rest_density = (target_count(layers, density) - fixed) / rest_total
    if not (0.0 < rest_density <= 1.0):
        raise PrunelabError(
            f"density {density} cannot be met with the last layer fixed at {last_layer_density}"
        )
    counts = fn(context(rest_layers, rest_density))
    counts[last.name] = fixed
    return counts


def allocate_mask(
    layers: list[Layer],
    density: float,
    allocation: str | AllocationFn,
    *,
    scores: Mapping[str, Tensor],
    family: str = "unknown",
    last_layer_density: float | None = None,
    options: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    record: dict[str, Any] | None = None,
    data: Any = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> Mask:
    """The mask keeping the highest ``scores`` under ``allocation`` at ``density``: the rule's own
    selection where it has one (the global rule: one threshold, no second selection per layer),
    else :func:`allocate`'s counts filled by :func:`select_top`. The same mask either way."""
    rule = ALLOCATIONS.get(allocation) if isinstance(allocation, str) else None
    if rule is not None and rule.select is not None and last_layer_density is None:
        opts = merge_options(allocation_option_defaults(allocation), options, f"allocation {allocation!r}")
        rec = record if record is not None else {}
        ctx = AllocationContext(
            layers, check_density(density), scores, family, opts, model, rec, data, input_shape, seed
        )
        return rule.select(ctx)
    counts = allocate(
        layers,
        density,
        allocation,
        scores=scores,
        family=family,
        last_layer_density=last_layer_density,
        options=options,
        model=model,
        record=record,
        data=data,
        input_shape=input_shape,
        seed=seed,
    )
    return select_top(layers, scores, counts)
