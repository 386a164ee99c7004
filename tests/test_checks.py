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


def test_effective_fan_reinit_is_he_with_nnz_over_c_in_on_convs_only() -> None:
    # Liu et al.'s scratch re-init: each conv ~ N(0, sqrt(2/n)), n = nnz(mask) / C_in, then * mask;
    # linear layers are not touched (the reference code loops over nn.Conv2d only).
    from prunelab.pruning.checks import effective_fan_reinit
    from prunelab.pruning.mask import Mask

    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 32, 3, bias=False),  # C_in 8 != C_out 32
        torch.nn.Conv2d(32, 8, 3, bias=False),  # C_in 32 != C_out 8
        torch.nn.Conv2d(4, 4, 1, bias=False),  # keeps nothing
        torch.nn.Flatten(),
        torch.nn.Linear(40, 10),
    )
    keep0 = torch.zeros(32, 8, 3, 3, dtype=torch.bool)
    keep0[:, :4] = True  # nnz 1152: n = 1152/8 = 144, std 0.11785 (old nnz/C_out = 36: 0.2357)
    keep1 = torch.zeros(2304, dtype=torch.bool)
    keep1[torch.randperm(2304, generator=torch.Generator().manual_seed(1))[:576]] = True
    keep1 = keep1.view(8, 32, 3, 3)  # nnz 576: n = 576/32 = 18, std 0.33333 (old 576/8 = 72: 0.1667)
    keep_linear = torch.zeros(10, 40, dtype=torch.bool)
    keep_linear[:, :5] = True
    mask = Mask(
        {
            "0.weight": keep0,
            "1.weight": keep1,
            "2.weight": torch.zeros(4, 4, 1, 1, dtype=torch.bool),
            "4.weight": keep_linear,
        }
    )
    linear_before = model[4].weight.detach().clone()
    effective_fan_reinit(model, mask, torch.Generator().manual_seed(0))
    w0, w1 = model[0].weight.detach(), model[1].weight.detach()
    assert bool((w0[~keep0] == 0).all()) and bool((w1[~keep1] == 0).all())
    # sampling error of the std: 0.11785/sqrt(2*1152) = 0.0025 and 0.3333/sqrt(2*576) = 0.0098
    assert abs(float(w0[keep0].std()) - (2 / 144) ** 0.5) < 0.01
    assert abs(float(w1[keep1].std()) - (2 / 18) ** 0.5) < 0.04
    assert bool((model[2].weight == 0).all())
    assert torch.equal(model[4].weight.detach(), linear_before)  # untouched, pruned entries included


def test_reinit_fan_check_is_a_fresh_model_with_effective_fan_convs() -> None:
    original = prunelab.build_model("cnn2d", (1, 8, 8), 4, seed=0)
    model = prunelab.build_model("cnn2d", (1, 8, 8), 4, seed=0)
    mask = prunelab.prune(model, "random", 0.5, check="reinit_fan")
    assert mask == prunelab.prune(prunelab.build_model("cnn2d", (1, 8, 8), 4, seed=0), "random", 0.5)
    params, before = dict(model.named_parameters()), dict(original.named_parameters())
    for name in mask:
        kept = mask[name]
        assert (params[name][~kept] == 0).all()
        assert not torch.allclose(params[name][kept], before[name][kept])  # linear included: fresh
    again = prunelab.build_model("cnn2d", (1, 8, 8), 4, seed=0)
    prunelab.prune(again, "random", 0.5, check="reinit_fan")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
