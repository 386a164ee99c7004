"""Pruning as architecture search (Liu et al. 2019, section 5): the architectures behind the
``uniform`` and ``guided`` stages of a :class:`~prunelab.spec.structured.StructuredRunSpec`.

- ``uniform``: the large model pruned by one keep ratio in every prunable conv, the ratio found by
  bisection so the parameter count matches the architecture the method found (its prune run);
- ``guided``: each *stage* (the prunable convs whose outputs have one spatial size) keeps the average
  fraction of filters the method kept in that stage over the guide seeds' prune runs.

Both are built on a fresh model of the study's architecture; the executor trains them from scratch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunelab.errors import PrunelabError


def _uniform(model: nn.Module, ratio: float) -> Any:
    from prunelab.pruning.structured import prune_structured

    return prune_structured(model, "l1norm", options={"ratio": ratio})


def uniform_matching(model: nn.Module, target_params: float, *, steps: int = 14) -> tuple[Any, float]:
    """The uniformly pruned ``model`` (one keep ratio in every prunable conv) whose parameter count
    is closest to ``target_params``; returns ``(PrunedModel, ratio)``. Bisection on the ratio: the
    count grows with it."""
    from prunelab.evaluation.flops import count_params

    low, high = 1e-3, 1.0
    best: tuple[float, Any, float] | None = None
    for _ in range(steps):
        mid = (low + high) / 2
        pruned = _uniform(model, mid)
        params = float(count_params(pruned.model))
        if best is None or abs(params - target_params) < best[0]:
            best = (abs(params - target_params), pruned, mid)
        if params > target_params:
            high = mid
        else:
            low = mid
    assert best is not None
    return best[1], best[2]


def stage_of_convs(
    model: nn.Module, input_shape: Sequence[int], convs: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """``{conv name: spatial size of its output}`` from one shape-only forward pass (batch of 1)."""
    modules = dict(model.named_modules())
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[2:]))
        )
        for name in convs
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def guided_keep_counts(
    model: nn.Module, input_shape: Sequence[int], found: Sequence[Mapping[str, Sequence[int]]]
) -> dict[str, int]:
    """Per prunable conv of ``model``, the filters to keep: its stage's average kept fraction over
    ``found`` (each a prune run's ``{conv: kept filter indices}``), times its own filter count."""
    from prunelab.pruning.structured import channel_layers, keep_count

    layers = channel_layers(model)
    stages = stage_of_convs(model, input_shape, [layer.conv for layer in layers])
    fractions: dict[tuple[int, ...], list[float]] = defaultdict(list)
    for kept in found:
        for layer in layers:
            if layer.conv in kept:
                fractions[stages[layer.conv]].append(len(kept[layer.conv]) / layer.channels)
    if not fractions:
        raise PrunelabError(
            "the found architectures keep no channel layer of this model: nothing to guide by"
        )
    return {
        layer.conv: keep_count(
            layer.channels, sum(fractions[stages[layer.conv]]) / len(fractions[stages[layer.conv]])
        )
        for layer in layers
        if stages[layer.conv] in fractions
    }


def guided(model: nn.Module, input_shape: Sequence[int], found: Sequence[Mapping[str, Sequence[int]]]) -> Any:
    """``model`` pruned to the guided widths (:func:`guided_keep_counts`), keeping each conv's first
    filters (the weights are re-initialised anyway)."""
    from prunelab.pruning.structured import prune_channels

    counts = guided_keep_counts(model, input_shape, found)

    def first(
        work: nn.Module, layers: Any, options: dict[str, Any], data: Any, seed: int
    ) -> dict[str, list[int]]:
        return {layer.conv: list(range(counts.get(layer.conv, layer.channels))) for layer in layers}

    return prune_channels(model, first, {})
