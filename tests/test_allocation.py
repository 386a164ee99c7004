"""Allocation rules pinned to hand-computed keep counts on a three-layer toy.

Layers: A conv (4, 2, 3, 3) N=72; B conv (8, 4, 3, 3) N=288; C linear (10, 8) N=80; total 440.
"""

from __future__ import annotations

import math

import pytest
import torch

from prunelab.errors import PrunelabError
from prunelab.pruning.allocation import (
    allocate,
    erdos_renyi_densities,
    select_top,
    smart_ratio_keep_fractions,
    top_k_flat,
)
from prunelab.pruning.prunable import Layer

A = Layer("a.weight", "conv", (4, 2, 3, 3), 0)
B = Layer("b.weight", "conv", (8, 4, 3, 3), 1)
C = Layer("c.weight", "linear", (10, 8), 2)
LAYERS = [A, B, C]


def counts(rule: str, density: float, **kw: object) -> list[int]:
    got = allocate(LAYERS, density, rule, **kw)  # type: ignore[arg-type]
    return [got[layer.name] for layer in LAYERS]


def test_uniform_keeps_same_fraction_per_layer() -> None:
    assert counts("uniform", 0.5) == [36, 144, 40]
    assert sum(counts("uniform", 0.3)) == round(0.3 * 440)


def test_erk_dense_layer_loop_by_hand() -> None:
    # raw = sum(shape)/prod(shape): A 12/72, B 18/288, C 18/80 = 0.225.
    # eps = 220 / (12 + 18 + 18) = 4.583 makes C's density 1.03 > 1, so C (largest raw) goes dense;
    # then eps = (220 - 80) / (12 + 18) = 4.667: A 0.7778 * 72 = 56, B 0.29167 * 288 = 84.
    assert counts("erk", 0.5) == [56, 84, 80]
    dens = erdos_renyi_densities(LAYERS, 0.5, {A.name: 12 / 72, B.name: 18 / 288, C.name: 0.225})
    assert dens[C.name] == 1.0
    assert dens[A.name] == pytest.approx(140 / 30 / 6)


def test_er_by_hand() -> None:
    # raw = (n_out + n_in)/(n_out n_in): A 0.75, B 0.375, C 0.225; eps = 220/180 -> 66, 132, 22.
    assert counts("er", 0.5) == [66, 132, 22]


def test_erk_overall_density_exact_across_densities() -> None:
    for density in (0.01, 0.05, 0.1, 0.37, 0.9, 1.0):
        assert sum(counts("erk", density)) == round(density * 440)


def test_uniform_plus_by_hand() -> None:
    # d=0.5: first dense (72); rest = (220-72)/(288+80) = 0.4022 >= 0.2 -> 115.8, 32.2 -> 116, 32.
    assert counts("uniform_plus", 0.5) == [72, 116, 32]
    # d=0.25: rest would be 0.103 < 0.2, so the last layer keeps 20% (16) and B gets (110-72-16)=22.
    assert counts("uniform_plus", 0.25) == [72, 22, 16]
    with pytest.raises(PrunelabError, match="too low for uniform_plus"):
        counts("uniform_plus", 0.1)


def test_smart_ratio_resnet_variant_by_hand() -> None:
    # L=3: q1 = 3^2+3 = 12, q2 = 2^2+2 = 6; last layer fixed at int(0.3*80) = 24.
    # G = int(440*0.5) - 24 = 196; TEST = int(72*12) + int(288*6) = 2592; k = 196/2592.
    # keep1 = 12k = 0.9074 -> int(65.33) = 65; keep2 = 6k = 0.4537 -> int(130.67) = 130.
    assert counts("smart_ratio", 0.5, family="resnet") == [65, 130, 24]
    keep, last = smart_ratio_keep_fractions(LAYERS, 0.5, variant="resnet")
    assert last == 24
    assert keep[A.name] == pytest.approx(12 * 196 / 2592)


def test_smart_ratio_vgg_variant_saturates_and_carries_overflow() -> None:
    # VGG divides by l^2: q1 = 12, q2 = 6/4 = 1.5; TEST = 864 + 432 = 1296; k = 196/1296.
    # keep1 = 1.8148 >= 1 -> layer A dense, carry int(0.8148*72) = 58 to B;
    # keep2 = 0.22685 + 58/288 = 0.42824 -> int(123.33) = 123.
    assert counts("smart_ratio", 0.5, family="vgg") == [72, 123, 24]


def test_global_threshold_with_ties_goes_to_earlier_layer() -> None:
    scores = {
        A.name: torch.full(A.shape, 1.0),
        B.name: torch.full(B.shape, 2.0),
        C.name: torch.full(C.shape, 1.0),
    }
    # 0.75*440 = 330 kept: all 288 of B (score 2), then 42 ties at 1.0 -> the earliest: layer A.
    assert counts("global", 0.75, scores=scores) == [42, 288, 0]


def test_last_layer_density_fixed_and_total_kept() -> None:
    # C keeps round(0.3*80) = 24; A and B share 196 at density 196/360: 39.2 and 156.8 -> 39, 157.
    assert counts("uniform", 0.5, last_layer_density=0.3) == [39, 157, 24]


def test_top_k_flat_exact_count_and_nan_last() -> None:
    scores = torch.tensor([0.5, float("nan"), 0.5, 0.9, 0.1])
    keep = top_k_flat(scores, 2)
    assert keep.tolist() == [True, False, False, True, False]
    assert int(top_k_flat(scores, 5).sum()) == 5
    assert int(top_k_flat(scores, 0).sum()) == 0


def test_select_top_per_layer() -> None:
    scores = {layer.name: torch.arange(layer.numel, dtype=torch.float).view(layer.shape) for layer in LAYERS}
    mask = select_top(LAYERS, scores, {A.name: 3, B.name: 0, C.name: 80})
    assert mask[A.name].flatten()[-3:].all() and int(mask[A.name].sum()) == 3
    assert int(mask[B.name].sum()) == 0 and bool(mask[C.name].all())


def test_unknown_allocation_and_bad_density() -> None:
    with pytest.raises(PrunelabError, match="unknown allocation 'erkk'.*erk"):
        counts("erkk", 0.5)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(PrunelabError, match=r"\(0, 1\]"):
            counts("uniform", bad)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_top_k_by_threshold_equals_a_stable_sort(n: int) -> None:
    """The threshold selection (from the short end) keeps exactly what a stable descending sort
    keeps: the k largest, ties to the lower index, NaN lowest, for every k."""
    from prunelab.pruning.allocation import kth_largest, top_k_flat

    gen = torch.Generator().manual_seed(n)
    values = torch.randint(0, 5, (n,), generator=gen).double()  # many ties
    if n > 3:
        values[2] = float("nan")
    ranked = torch.nan_to_num(values, nan=-math.inf)
    order = sorted(range(n), key=lambda i: (-float(ranked[i]), i))
    for k in range(0, n + 1, max(1, n // 37)):
        expected = torch.zeros(n, dtype=torch.bool)
        expected[order[:k]] = True
        assert torch.equal(top_k_flat(values, k), expected), k
        if k:
            assert float(kth_largest(ranked, k)) == float(ranked[order[k - 1]])


def test_the_global_rules_own_selection_equals_counts_then_select_top() -> None:
    """One threshold cut back into layers keeps exactly what the counts + per-layer top-k kept."""
    from prunelab.pruning.allocation import allocate_mask, select_top
    from prunelab.pruning.prunable import Layer

    layers = [
        Layer("a", "conv", (4, 3, 3, 3), 0),
        Layer("b", "conv", (8, 4, 3, 3), 1),
        Layer("c", "linear", (5, 8), 2),
    ]
    gen = torch.Generator().manual_seed(0)
    scores = {l.name: torch.randint(0, 6, l.shape, generator=gen).double() for l in layers}  # many ties
    for density in (0.05, 0.3, 0.5, 0.77, 1.0):
        fast = allocate_mask(layers, density, "global", scores=scores)
        slow = select_top(layers, scores, allocate(layers, density, "global", scores=scores))
        assert all(torch.equal(fast[l.name], slow[l.name]) for l in layers), density
