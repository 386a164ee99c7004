"""Sanity-check transforms: properties that must hold whatever the randomness."""

from __future__ import annotations

import pytest
import torch

import prunelab
from prunelab.data import load_dataset
from prunelab.pruning.checks import random_labels, random_pixels, shuffle_mask, shuffle_weights


@pytest.fixture(scope="module")
def data() -> prunelab.DataBundle:
    return load_dataset("synthetic", num_classes=4, input_shape=(1, 16))


def fresh(seed: int = 0) -> torch.nn.Module:
    return prunelab.build_model("mlp", (1, 16), 4, seed=seed, hidden=(32, 32))


def test_shuffle_mask_keeps_per_layer_counts_and_moves_positions(data: prunelab.DataBundle) -> None:
    base = prunelab.prune(fresh(), "snip", 0.2, data=data)
    shuffled = shuffle_mask(base, torch.Generator().manual_seed(0))
    assert base.counts() == shuffled.counts()
    assert base != shuffled
    via_api = prunelab.prune(fresh(), "snip", 0.2, data=data, check="shuffle_mask")
    assert via_api.counts() == base.counts() and via_api != base


def test_shuffle_weights_permutes_kept_values_within_layer(data: prunelab.DataBundle) -> None:
    model = fresh()
    mask = prunelab.prune(model, "magnitude", 0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shuffle_weights(model, mask, torch.Generator().manual_seed(0))
    after = dict(model.named_parameters())
    for name in mask:
        kept = mask[name]
        assert torch.equal(
            torch.sort(before[name][kept]).values, torch.sort(after[name][kept].detach()).values
        )
        assert not torch.equal(before[name][kept], after[name][kept].detach())
        assert (after[name][~kept] == 0).all()


def test_reinit_changes_weights_and_keeps_mask(data: prunelab.DataBundle) -> None:
    plain_model, reinit_model = fresh(), fresh()
    plain = prunelab.prune(plain_model, "snip", 0.2, data=data)
    checked = prunelab.prune(reinit_model, "snip", 0.2, data=data, check="reinit")
    assert plain == checked
    for name in plain:
        a, b = dict(plain_model.named_parameters())[name], dict(reinit_model.named_parameters())[name]
        assert not torch.allclose(a[plain[name]], b[plain[name]])
        assert (b[~plain[name]] == 0).all()


def test_invert_reverses_ranks() -> None:
    normal_model, inverted_model = fresh(), fresh()
    normal = prunelab.prune(normal_model, "magnitude", 0.3, allocation="uniform")
    inverted = prunelab.prune(inverted_model, "magnitude", 0.3, allocation="uniform", check="invert")
    original = fresh()
    for name, weight in original.named_parameters():
        if name in normal:
            # inverted keeps the smallest |w| in each layer: all of them below every normally kept one
            assert weight[inverted[name]].abs().max() <= weight[normal[name]].abs().min()
            assert normal.counts()[name] == inverted.counts()[name]


def test_random_labels_and_pixels_transform_only_what_they_say() -> None:
    x = torch.arange(24, dtype=torch.float).view(4, 1, 6)
    y = torch.tensor([0, 1, 2, 3])
    ((lx, ly),) = random_labels([(x, y)], 4, torch.Generator().manual_seed(0))
    assert torch.equal(lx, x) and ly.shape == y.shape and ((ly >= 0) & (ly < 4)).all()
    ((px, _),) = random_pixels([(x, y)], 4, torch.Generator().manual_seed(0))
    assert not torch.equal(px, x)
    for i in range(4):  # each example's values are a permutation of its own values
        assert torch.equal(torch.sort(px[i].flatten()).values, x[i].flatten())


def test_data_checks_change_data_dependent_masks(data: prunelab.DataBundle) -> None:
    base = prunelab.prune(fresh(), "snip", 0.2, data=data)
    labels = prunelab.prune(fresh(), "snip", 0.2, data=data, check="random_labels")
    pixels = prunelab.prune(fresh(), "snip", 0.2, data=data, check="random_pixels")
    assert base != labels and base != pixels


def test_data_check_on_data_free_method_is_a_clear_error() -> None:
    with pytest.raises(prunelab.PrunelabError, match="'random_labels'.*'synflow' uses none"):
        prunelab.prune(fresh(), "synflow", 0.2, check="random_labels")


def test_unknown_check_lists_choices() -> None:
    with pytest.raises(prunelab.PrunelabError, match="unknown check 'shuffle'.*shuffle_mask"):
        prunelab.prune(fresh(), "random", 0.2, check="shuffle")


def test_effective_fan_reinit_scales_by_kept_inputs_per_unit() -> None:
    from prunelab.pruning.checks import effective_fan_reinit
    from prunelab.pruning.mask import Mask

    layer = torch.nn.Linear(400, 50, bias=False)
    model = torch.nn.Sequential(layer)
    keep = torch.zeros(50, 400, dtype=torch.bool)
    keep[:, :100] = True  # 100 kept inputs per unit: n_eff = 100, std = sqrt(2/100)
    mask = Mask({"0.weight": keep})
    effective_fan_reinit(model, mask, torch.Generator().manual_seed(0))
    w = layer.weight.detach()
    assert bool((w[:, 100:] == 0).all())
    std = float(w[:, :100].std())
    assert abs(std - (2 / 100) ** 0.5) < 0.01  # 5000 draws: sampling error of the std ~ 0.0014
