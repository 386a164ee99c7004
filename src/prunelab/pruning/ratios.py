"""Layer-wise ratios borrowed from a scoring method: ``snip_ratio``, ``grasp_ratio`` and ``synflow_ratio``.

Random_Pruning (Liu et al. 2022) asks whether the per-layer densities a pruning-at-init method
chooses are what makes it work: it runs the method once, keeps only its per-layer densities and
draws the positions at random. Here each is an *allocation*: it scores a private copy of the model
with the method, allocates globally, and returns the per-layer counts; the pruning method (usually
``random``) then places that many weights per layer. Faithful to Random_Pruning's CIFAR code
(``sparselearning/snip.py``):

- ``snip_ratio``: every conv and linear weight of the copy redrawn ``xavier_normal`` first (option
  ``ratio_reinit``), one uniformly random training batch of 128 (``ratio_batch_size``), ``|g * w|``.
- ``grasp_ratio``: 25 examples per class, one iteration, temperature 200, no re-initialisation, as
  ``GraSP(..., samples_per_class=25, num_iters=1, T=200)`` is called there.
- ``synflow_ratio``: SynFlow's own recipe (100 rounds); Random_Pruning ships no working SynFlow, so
  this follows Tanaka et al. 2020.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError, invalid_choice
from prunelab.options import as_int
from prunelab.pruning.allocation import AllocationContext, Counts, register_allocation
from prunelab.pruning.scores import Batch
from prunelab.seeding import generator

RATIO_REINITS = ("xavier_normal", "none")


@torch.no_grad()
def _xavier_normal_(model: nn.Module, gen: torch.Generator) -> None:
    """Every conv and linear weight redrawn ``N(0, 2 / (fan_in + fan_out))`` (``nn.init.xavier_normal_``'s
    law, drawn from ``gen`` so the ratio is reproducible)."""
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            w = module.weight
            receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
            std = math.sqrt(2.0 / (w.shape[1] * receptive + w.shape[0] * receptive))
            w.copy_((torch.randn(w.shape, generator=gen) * std).to(w.device, w.dtype))


def _random_batch(data: Any, size: int, gen: torch.Generator, device: torch.device) -> list[Batch]:
    """One uniformly random training batch of ``size`` (a bundle), the pair itself, or a loader's first batch."""
    if isinstance(data, DataBundle):  # the first batch of a shuffled epoch (a streamed set decodes only it)
        x, y = next(iter(data.train_batches(size, gen, augment=False)))
        return [(x.to(device), y.to(device))]
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return [(data[0][:size].to(device), data[1][:size].to(device))]
    for batch in data:
        return [(batch[0][:size].to(device), batch[1][:size].to(device))]
    raise PrunelabError("the data loader yielded no examples to score on")


def _borrowed_counts(
    ctx: AllocationContext, method_name: str, options: Mapping[str, Any], batches: list[Batch] | None
) -> Counts:
    """Per-layer counts of ``method_name`` with global allocation at ``ctx.density`` on a copy of the model."""
    from prunelab.pruning.api import compute_mask
    from prunelab.pruning.methods import METHODS

    if ctx.model is None:
        raise PrunelabError(f"allocation '{method_name}_ratio' scores the model: it needs prune()'s model")
    method = METHODS.get(method_name)
    work = copy.deepcopy(ctx.model)
    reinit = str(ctx.options.get("ratio_reinit", "none")).lower()
    if reinit not in RATIO_REINITS:
        raise invalid_choice("ratio_reinit", reinit, RATIO_REINITS)
    if reinit == "xavier_normal":
        _xavier_normal_(work, generator(ctx.seed, "ratio_reinit"))
    mask = compute_mask(
        work,
        method,
        ctx.density,
        ctx.layers,
        "global",
        batches=batches,
        input_shape=ctx.input_shape,
        options=method.resolve_options(options, "global"),
        mask_generator=generator(ctx.seed, "ratio_mask"),
    )
    ctx.record["ratio_source"] = method_name
    counts = mask.counts()
    return {layer.name: counts[layer.name] for layer in ctx.layers}


def _model_device(ctx: AllocationContext) -> torch.device:
    assert ctx.model is not None
    return next(ctx.model.parameters()).device


def _require_data(ctx: AllocationContext, name: str) -> Any:
    if ctx.data is None:
        raise PrunelabError(f"allocation {name!r} scores the model on data: pass data=...")
    return ctx.data


@register_allocation(
    "snip_ratio",
    description="SNIP's per-layer densities (xavier re-init, one random batch of 128), positions chosen by the method",
    paper="Random_Pruning (Liu et al. 2022), CIFAR code",
    options={"ratio_batch_size": 128, "ratio_reinit": "xavier_normal"},
    needs_data=True,
)
def snip_ratio_allocation(ctx: AllocationContext) -> Counts:
    data = _require_data(ctx, "snip_ratio")
    size = as_int(ctx.options.get("ratio_batch_size", 128), "snip_ratio option ratio_batch_size", minimum=1)
    batches = _random_batch(data, size, generator(ctx.seed, "ratio_data"), _model_device(ctx))
    return _borrowed_counts(ctx, "snip", {"bn_mode": "train"}, batches)


@register_allocation(
    "grasp_ratio",
    description="GraSP's per-layer densities (25 per class, T = 200), positions chosen by the method",
    paper="Random_Pruning (Liu et al. 2022), CIFAR code",
    options={"ratio_samples_per_class": 25, "ratio_reinit": "none"},
    needs_data=True,
)
def grasp_ratio_allocation(ctx: AllocationContext) -> Counts:
    from prunelab.pruning.api import scoring_batches

    data = _require_data(ctx, "grasp_ratio")
    per_class = as_int(
        ctx.options.get("ratio_samples_per_class", 25),
        "grasp_ratio option ratio_samples_per_class",
        minimum=1,
    )
    batches, _ = scoring_batches(data, per_class, generator(ctx.seed, "ratio_data"), _model_device(ctx))
    return _borrowed_counts(ctx, "grasp", {"temperature": 200.0, "bn_mode": "train"}, batches)


@register_allocation(
    "synflow_ratio",
    description="SynFlow's per-layer densities (100 rounds, data-free), positions chosen by the method",
    paper="Liu et al. 2022 (ratio ablation); SynFlow: Tanaka et al. 2020",
    options={"ratio_rounds": 100, "ratio_reinit": "none"},
    needs_input_shape=True,
)
def synflow_ratio_allocation(ctx: AllocationContext) -> Counts:
    rounds = as_int(ctx.options.get("ratio_rounds", 100), "synflow_ratio option ratio_rounds", minimum=1)
    if ctx.input_shape is None:
        raise PrunelabError(
            "allocation 'synflow_ratio' runs the network without data and needs the example shape: "
            "pass input_shape=... or data=..."
        )
    return _borrowed_counts(ctx, "synflow", {"rounds": rounds}, None)
