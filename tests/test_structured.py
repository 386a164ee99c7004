"""Structured pruning: every selection criterion pinned on hand-computed values, the physical removal
(outputs unchanged when the removed channels contribute nothing), the training hooks, and save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.pruning.structured import (
    STRUCTURED_METHODS,
    PrunedModel,
    TrainingHooks,
    build_architecture,
    channel_layers,
    install_block_scales,
    keep_count,
    large_model_hooks,
    load_pruned,
    prune_structured,
    save_pruned,
    soft_prune_,
)
from prunelab.pruning.structured.criteria import (
    l1_filter_norms,
    lasso_select,
    least_squares_weights,
    slimming_keep,
    thinet_greedy,
)
from prunelab.pruning.structured.reconstruction import consumer_weight, sample_fields, select_by_data

IMG = (3, 8, 8)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@torch.no_grad()
def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode outputs test the BN slicing."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))


@torch.no_grad()
def silence_channels(model: nn.Module, channels: dict[str, list[int]]) -> None:
    """Make the given output channels of each conv exactly zero after its BN/ReLU (filter, bias, BN
    scale and shift all zero): removing them must then leave every output unchanged."""
    modules = dict(model.named_modules())
    for layer in channel_layers(model):
        idx = channels.get(layer.conv, [])
        conv = modules[layer.conv]
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        conv.weight[idx] = 0.0
        if conv.bias is not None:
            conv.bias[idx] = 0.0
        if layer.bn is not None:
            bn = modules[layer.bn]
            assert isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d)
            bn.weight[idx] = 0.0
            bn.bias[idx] = 0.0


# -- criteria, hand-computed ----------------------------------------------------------------------


def test_l1_filter_norms_and_l1norm_keeps_largest_filters() -> None:
    weight = torch.zeros(4, 2, 3, 3)
    weight[0, 0, 0, 0] = 1.0  # sum|W| = 1
    weight[1] = -0.25  # 18 * 0.25 = 4.5
    weight[2, 1] = 0.3  # 9 * 0.3 = 2.7
    weight[3, :, 1, 1] = torch.tensor([2.0, -2.5])  # 4.5: ties with filter 1
    assert l1_filter_norms(weight).tolist() == pytest.approx([1.0, 4.5, 2.7, 4.5])

    model = build_model("cnn2d", (2, 4, 4), 3, seed=0, width=4)  # convs of 4, 8, 16 filters
    with torch.no_grad():
        model.features[0].weight.copy_(weight)
    pruned = prune_structured(model, "l1norm", options={"ratio": 0.5})
    assert pruned.kept["features.0"] == [1, 3]  # the two 4.5s
    assert pruned.kept["features.0"] == sorted(pruned.kept["features.0"])
    assert pruned.architecture["options"]["widths"] == [2, 4, 8]
    assert model.features[0].out_channels == 4  # the input model is untouched
    # ratio 0.75 of 4 keeps 3: the 2.7 filter beats the 1.0 one
    assert prune_structured(model, "l1norm", options={"ratio": 0.75}).kept["features.0"] == [1, 2, 3]


def test_keep_count_rounding() -> None:
    assert keep_count(16, 0.5) == 8
    assert keep_count(10, 0.7) == 7
    assert keep_count(10, 0.9) == 9  # 10 * (1 - 0.9) = 0.999..., not 0
    assert keep_count(3, 0.1) == 1  # never empty
    assert keep_count(64, 1.0) == 64


def test_slimming_global_threshold_and_empty_layer_guard() -> None:
    gammas = {
        "a": torch.tensor([0.9, -0.1, 0.5, 0.05]),
        "b": torch.tensor([0.2, 0.02, 0.01]),  # all below the threshold
        "c": torch.tensor([0.7, -0.3, 0.15]),
    }
    # sorted |gamma| = .01 .02 .05 .1 .15 .2 .3 .5 .7 .9; percent 0.5 -> thr = sorted[5] = 0.2
    kept, thr = slimming_keep(gammas, 0.5)
    assert thr == pytest.approx(0.2)
    assert kept["a"] == [0, 2]
    assert kept["c"] == [0, 1]
    assert kept["b"] == [0]  # |gamma| > 0.2 leaves none: the guard keeps the largest (0.2)
    kept2, _ = slimming_keep(gammas, 0.5, min_channels=2)
    assert kept2["b"] == [0, 1]
    assert kept2["a"] == [0, 2]
    # percent 0 -> thr = the smallest |gamma|, which is itself pruned (strict >)
    kept0, thr0 = slimming_keep(gammas, 0.0)
    assert thr0 == pytest.approx(0.01)
    assert sum(len(v) for v in kept0.values()) == 9


def test_slimming_on_a_model_and_its_penalty_hook() -> None:
    model = build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2)  # BN widths 2, 4, 8
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        bns[0].weight.copy_(torch.tensor([0.01, 0.02]))  # the smallest two: would empty the layer
        bns[1].weight.copy_(torch.tensor([1.0, -0.9, 0.05, 0.8]))
        bns[2].weight.copy_(torch.tensor([0.5, 0.6, 0.03, 0.04, 0.7, 0.06, 0.4, 0.3]))
    pruned = prune_structured(model, "slimming", options={"percent": 0.5})
    # 14 scales sorted: .01 .02 .03 .04 .05 .06 .3 .4 ...; sorted[int(14 * 0.5)] = 0.4 -> keep |gamma| > 0.4;
    # layer 0 has none left and keeps its top-1 (index 1, 0.02)
    assert pruned.kept == {"features.0": [1], "features.3": [0, 1, 3], "features.7": [0, 1, 4]}
    assert pruned.architecture["options"]["widths"] == [1, 3, 3]

    hooks = large_model_hooks("slimming", model, {"strength": 0.1})
    for bn in bns:
        bn.weight.grad = torch.full_like(bn.weight, 0.5)
    for hook in hooks.after_backward:
        hook()
    expected = 0.5 + 0.1 * torch.sign(bns[1].weight.detach())
    assert torch.allclose(bns[1].weight.grad, expected)
    assert not hooks.epoch_end

    no_bn = build_model("cnn1d", (1, 16), 3, seed=0, channels=4)
    with pytest.raises(PrunelabError, match="BatchNorm"):
        prune_structured(no_bn, "slimming")
    with pytest.raises(PrunelabError, match="BatchNorm"):
        large_model_hooks("slimming", no_bn, {})


def test_thinet_greedy_prefers_cancelling_channels() -> None:
    # columns = channels' contributions to M = 2 sampled outputs.
    x = torch.tensor([[1.0, -1.2, 0.0], [0.0, 0.0, 1.1]])
    # step 1 costs |x_c|^2 = 1.00, 1.44, 1.21 -> remove 0; step 2: (1 - 1.2)^2 = 0.04 < 1 + 1.21 ->
    # remove 1. Keeping channel 2 although channel 1 has the largest norm: 0 and 1 cancel.
    assert thinet_greedy(x, keep=1) == [2]
    assert thinet_greedy(x, keep=2) == [1, 2]
    assert thinet_greedy(x, keep=3) == [0, 1, 2]
    # ties go to removing the lower index first
    assert thinet_greedy(torch.ones(3, 4), keep=2) == [2, 3]


def test_lasso_selects_the_informative_channels() -> None:
    gen = torch.Generator().manual_seed(0)
    design = torch.randn(400, 6, generator=gen, dtype=torch.float64)
    target = (
        2.0 * design[:, 1] - 1.5 * design[:, 4] + 0.01 * torch.randn(400, generator=gen, dtype=torch.float64)
    )
    assert lasso_select(design, target, keep=2) == [1, 4]
    # the stronger channel enters the path first
    assert lasso_select(design, target, keep=1) == [1]
    assert len(lasso_select(design, target, keep=4)) == 4


def test_least_squares_reconstructs_exactly_when_possible() -> None:
    gen = torch.Generator().manual_seed(1)
    patches = torch.randn(50, 4, 3, generator=gen, dtype=torch.float64)  # M, C, K
    weight = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)  # O, C, K
    weight[:, [0, 2]] = 0.0  # the output depends on channels 1 and 3 only
    target = torch.einsum("mck,ock->mo", patches, weight)
    refit = least_squares_weights(patches, target, [1, 3])
    assert torch.allclose(refit, weight[:, [1, 3]], atol=1e-10)


def test_regression_refits_a_duplicated_channel_exactly() -> None:
    """Channel 3 of the first conv duplicates channel 1: LASSO drops one of the pair and least squares
    moves its weight onto the other, so the network's output is unchanged, also after surgery."""
    model = build_model("cnn1d", (1, 24), 3, seed=0, widths=[4, 5, 5], kernel_sizes=[3, 3, 3])
    conv = model.features[0]
    with torch.no_grad():
        conv.weight[3] = conv.weight[1]
        conv.bias[3] = conv.bias[1]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 1, 24, generator=gen)
    model.eval()
    before = model(x)
    work = build_model("cnn1d", (1, 24), 3, seed=0, widths=[4, 5, 5], kernel_sizes=[3, 3, 3])
    work.load_state_dict(model.state_dict())
    work.eval()
    kept = select_by_data(
        work, channel_layers(work), {"features.0": 3}, x, method="regression", positions=8, generator=gen
    )
    assert kept["features.0"] in ([0, 1, 2], [0, 2, 3])
    assert torch.allclose(work(x), before, atol=1e-5)


def test_thinet_and_regression_remove_a_dead_channel_end_to_end() -> None:
    model = build_model("cnn2d", (1, 6, 6), 3, seed=0, width=2)  # 2, 4, 8 filters
    gen = torch.Generator().manual_seed(3)
    randomise_bn(model, gen)
    silence_channels(model, {"features.0": [0], "features.3": [2], "features.7": [5]})
    data = (torch.randn(24, 1, 6, 6, generator=gen), torch.zeros(24, dtype=torch.long))
    model.eval()
    for method in ("thinet", "regression"):
        options = {"ratio": 0.5, "positions": 5}  # keeps 1 of 2, 2 of 4, 4 of 8
        pruned = prune_structured(model, method, data=data, options=options)
        assert 0 not in pruned.kept["features.0"]
        assert 2 not in pruned.kept["features.3"]
        assert 5 not in pruned.kept["features.7"]
        assert pruned.architecture["options"]["widths"] == [1, 2, 4]
    with pytest.raises(PrunelabError, match="data"):
        prune_structured(model, "thinet")


# -- soft filter pruning --------------------------------------------------------------------------


def test_sfp_zeroes_smallest_l2_filters_which_regrow_and_are_removed_at_the_end() -> None:
    model = build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2)  # 2, 4, 8 filters
    conv = model.features[3]
    with torch.no_grad():
        model.features[4].bias.fill_(1.0)  # BN shift > 0: a zeroed filter's ReLU passes gradient
        conv.weight.zero_()
        for i, scale in enumerate([3.0, 0.5, 2.0, 0.1]):  # L2 norms proportional to scale
            conv.weight[i] = scale
    hooks = large_model_hooks("sfp", model, {"ratio": 0.5})
    assert not hooks.after_backward and len(hooks.epoch_end) == 1
    callbacks = hooks.epoch_callbacks()

    class Record:
        epoch = 1

    callbacks[0](Record(), None)  # the trainer's callback signature
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    assert norms[[1, 3]].tolist() == [0.0, 0.0]  # the two smallest L2 norms, zeroed
    assert norms[[0, 2]].min() > 0
    # gradients are not masked: one SGD step revives the zeroed filters
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 1, 4, 4)).square().sum().backward()
    opt.step()
    assert conv.weight.detach()[[1, 3]].abs().sum() > 0
    # the zeroing and the final removal agree: re-zero, then prune
    zeroed = soft_prune_(model, 0.5, ["features.0", "features.3", "features.7"])
    pruned = prune_structured(model, "sfp", options={"ratio": 0.5})
    for name, idx in zeroed.items():
        assert set(idx).isdisjoint(pruned.kept[name])
        assert len(idx) + len(pruned.kept[name]) == dict(model.named_modules())[name].out_channels


def test_sfp_zeroes_filters_before_the_first_epoch_too() -> None:
    # He et al. mask once before training. Without it, on cnn1d with BN the first zeroing hits a
    # trained net: zeroed filters whose BN shift is > 0 get ~1/sqrt(eps)-scaled gradients, blow up
    # to huge norms, outrank the healthy filters, and training stalls (~56% vs ~95% on MNIST-1D).
    model = build_model("cnn1d", (1, 40), 10, seed=0, bn=True)
    modules = dict(model.named_modules())
    init_norms = {
        layer.conv: modules[layer.conv].weight.detach().flatten(1).norm(dim=1).clone()
        for layer in channel_layers(model)
    }
    assert list(init_norms) == ["features.0", "features.3", "features.6"]
    hooks = large_model_hooks("sfp", model, {"ratio": 0.7})
    for name, norms in init_norms.items():
        now = modules[name].weight.detach().flatten(1).norm(dim=1)
        zeroed = sorted(int(i) for i in torch.nonzero(now == 0).flatten())
        assert zeroed == sorted(int(i) for i in torch.argsort(norms)[:7])  # int(25 * 0.3) smallest
        assert torch.equal(now[now > 0], norms[now > 0])  # the rest untouched
    for bn in ("features.1", "features.4", "features.7"):  # BN left alone
        assert torch.equal(modules[bn].weight.detach(), torch.ones(25))

    class Record:
        epoch = 1

    hooks.epoch_callbacks()[0](Record(), None)  # with no training between, the same set stays zeroed
    for name in init_norms:
        assert int((modules[name].weight.detach().flatten(1).norm(dim=1) == 0).sum()) == 7


# -- sparse structure selection -------------------------------------------------------------------


def test_sss_removes_blocks_with_zero_factor_and_outputs_are_unchanged(tmp_path: Path) -> None:
    model = build_model("resnet20", IMG, 4, seed=0, width=2, shortcut="A")
    gen = torch.Generator().manual_seed(0)
    randomise_bn(model, gen)
    hooks = large_model_hooks("sss", model, {"strength": 0.1})
    scales = install_block_scales(model)  # idempotent: the same parameters
    # identity-shortcut blocks only: stage heads of layer2/3 change shape and keep no factor
    assert list(scales) == [
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer3.1",
        "layer3.2",
    ]
    assert "layer1.1.bn2.sss_scale" in model.state_dict()
    with torch.no_grad():
        scales["layer1.1"].fill_(0.0)
        scales["layer2.2"].fill_(0.0)
        scales["layer3.1"].fill_(-0.4)  # kept, folded into bn2
    # the proximal L1 step at lr 0.5: lambda <- sign(lambda) * max(|lambda| - 0.5 * 0.1, 0)
    assert not hooks.after_backward and len(hooks.after_step) == 1
    with torch.no_grad():
        scales["layer3.1"].fill_(-0.45)
        scales["layer1.2"].fill_(0.03)
    hooks.after_step[0](0.5)
    assert float(scales["layer3.1"].detach()) == pytest.approx(-0.4)  # shrunk towards zero by 0.05
    assert float(scales["layer1.2"].detach()) == 0.0  # crosses zero: exactly zero, not negative
    assert float(scales["layer1.1"].detach()) == 0.0  # stays at zero
    with torch.no_grad():
        scales["layer1.2"].fill_(1.0)  # restore: only layer1.1 and layer2.2 are to be removed

    model.eval()
    x = torch.randn(5, *IMG, generator=gen)
    before = model(x)
    pruned = prune_structured(model, "sss")
    assert pruned.kept == {"layer1": [0, 2], "layer2": [0, 1], "layer3": [0, 1, 2]}
    assert pruned.architecture["options"]["blocks"] == [2, 2, 3]
    assert not any("sss_scale" in k for k in pruned.model.state_dict())
    pruned.model.eval()
    assert torch.allclose(pruned.model(x), before, atol=1e-5)
    assert n_params(pruned.model) < n_params(model)
    save_pruned(tmp_path / "sss", pruned)
    loaded = load_pruned(tmp_path / "sss")
    loaded.model.eval()
    assert torch.equal(loaded.model(x), pruned.model(x))
    assert loaded.kept == pruned.kept


def test_sss_needs_trained_factors_and_a_resnet() -> None:
    with pytest.raises(PrunelabError, match="factors"):
        prune_structured(build_model("resnet20", IMG, 4, seed=0, width=2), "sss")
    with pytest.raises(PrunelabError, match="ResNet"):
        large_model_hooks("sss", build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2), {})


# -- physical removal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("vgg16", IMG, {"width": 0.0625, "classifier": "rethinking", "classifier_hidden": 8}),
        ("resnet20", IMG, {"width": 4, "shortcut": "A"}),
        ("cnn1d", (1, 24), {"channels": 6}),
        ("cnn1d", (1, 24), {"channels": 6, "bn": True}),
        ("cnn2d", (1, 6, 6), {"width": 3}),
    ],
)
def test_surgery_keeps_outputs_when_removed_channels_are_silent(
    name: str, shape: tuple[int, ...], options: dict[str, object], tmp_path: Path
) -> None:
    model = build_model(name, shape, 5, seed=0, **options)
    gen = torch.Generator().manual_seed(0)
    randomise_bn(model, gen)
    layers = channel_layers(model)
    # silence the first half of each prunable conv's filters: L1 norm 0, so L1-norm pruning removes them
    silent = {layer.conv: list(range(layer.channels - keep_count(layer.channels, 0.5))) for layer in layers}
    silence_channels(model, silent)
    model.eval()
    x = torch.randn(6, *shape, generator=gen)
    before = model(x)
    pruned = prune_structured(model, "l1norm", options={"ratio": 0.5})
    for layer in layers:
        assert set(pruned.kept[layer.conv]).isdisjoint(silent[layer.conv])
    pruned.model.eval()
    assert torch.allclose(pruned.model(x), before, atol=1e-5)
    assert n_params(pruned.model) < n_params(model)

    # the architecture describes the result exactly: a fresh build has the same keys and shapes
    fresh = build_architecture(pruned.architecture, seed=1)
    assert state_shapes(fresh) == state_shapes(pruned.model)

    # save -> load: identical outputs, no pickles
    save_pruned(tmp_path / "p", pruned)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "architecture.json",
        "kept.json",
        "model.safetensors",
    ]
    loaded = load_pruned(tmp_path / "p")
    loaded.model.eval()
    assert loaded.architecture == pruned.architecture
    assert loaded.kept == pruned.kept
    assert loaded.mask is None
    assert torch.equal(loaded.model(x), pruned.model(x))


def test_resnet56_predefined_config_matches_the_architecture() -> None:
    from prunelab.pruning.structured.configs import PREDEFINED

    model = build_model("resnet56", IMG, 4, seed=0, width=4, shortcut="A")
    config = PREDEFINED.get("resnet56-b")
    pruned = prune_structured(model, "l1norm", options={"config": "resnet56-b"})
    assert pruned.architecture["options"]["widths"] == config.pruned_options(model)["widths"]
    assert pruned.architecture["options"]["shortcut"] == "A"
    # only block conv1s are pruned: block outputs (and so the shortcuts) keep their widths
    assert list(pruned.kept) == [f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(9)]
    pruned.model.eval()
    assert pruned.model(torch.randn(2, *IMG)).shape == (2, 4)
    with pytest.raises(PrunelabError, match="resnet56"):
        prune_structured(
            build_model("resnet20", IMG, 4, seed=0, width=4), "l1norm", options={"config": "resnet56-b"}
        )


# -- weight level ---------------------------------------------------------------------------------


def test_weight_level_mask_is_global_over_conv_weights_only(tmp_path: Path) -> None:
    model = build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2)
    with torch.no_grad():
        model.features[0].weight.mul_(10.0)  # a layer of large weights keeps more of them (global)
    pruned = prune_structured(model, "weight_level", options={"density": 0.3})
    mask = pruned.mask
    assert mask is not None
    conv_names = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(mask) == conv_names  # the linear layer is not in the mask: dense
    pooled = torch.cat([dict(model.named_parameters())[n].detach().abs().flatten() for n in conv_names])
    kept = round(0.3 * pooled.numel())
    assert mask.num_kept == kept
    threshold = torch.sort(pooled, descending=True).values[kept - 1]
    for name in conv_names:
        weight = dict(model.named_parameters())[name].detach().abs()
        assert torch.equal(mask[name], weight >= threshold)
    densities = [row.density for row in mask.per_layer()]
    assert densities[0] > 0.8 > 0.3 == pytest.approx(mask.density(), abs=0.01)  # global, not uniform
    assert state_shapes(pruned.model) == state_shapes(model)  # same shape, masked
    assert pruned.kept == {}
    assert torch.equal(pruned.model.classifier.weight, model.classifier.weight)
    assert bool((dict(pruned.model.named_parameters())[conv_names[1]] == 0).sum() > 0)
    assert dict(model.named_parameters())[conv_names[1]].ne(0).all()  # input untouched

    save_pruned(tmp_path / "w", pruned)
    loaded = load_pruned(tmp_path / "w")
    assert loaded.mask == mask
    assert torch.equal(loaded.model(torch.ones(1, 1, 4, 4)), pruned.model(torch.ones(1, 1, 4, 4)))


# -- registry, options, errors --------------------------------------------------------------------


def test_registry_and_option_errors() -> None:
    assert STRUCTURED_METHODS.names() == [
        "l1norm",
        "slimming",
        "thinet",
        "regression",
        "sfp",
        "sss",
        "weight_level",
    ]
    assert {STRUCTURED_METHODS.get(n).kind for n in STRUCTURED_METHODS} == {"channel", "block", "weight"}
    assert [n for n in STRUCTURED_METHODS if STRUCTURED_METHODS.get(n).needs_data] == ["thinet", "regression"]
    model = build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2)
    with pytest.raises(PrunelabError, match="unknown structured method 'nope'.*l1norm"):
        prune_structured(model, "nope")
    with pytest.raises(PrunelabError, match="unknown option 'rate'.*ratio"):
        prune_structured(model, "l1norm", options={"rate": 0.5})
    with pytest.raises(PrunelabError, match=r"ratio must be in \(0, 1\]"):
        prune_structured(model, "l1norm", options={"ratio": 1.5})
    with pytest.raises(PrunelabError, match=r"percent must be in \[0, 1\)"):
        large_model_hooks("slimming", model, {"percent": 1.0})
    with pytest.raises(PrunelabError, match="unknown predefined pruning config 'vgg99'"):
        prune_structured(model, "l1norm", options={"config": "vgg99"})
    with pytest.raises(PrunelabError, match="registry model"):
        prune_structured(nn.Sequential(nn.Conv2d(1, 2, 3)), "l1norm")
    with pytest.raises(PrunelabError, match="family"):
        prune_structured(build_model("mlp", (8,), 3, seed=0), "l1norm")
    with pytest.raises(PrunelabError, match="architecture lacks num_classes"):
        build_architecture({"name": "cnn2d", "input_shape": [1, 4, 4], "options": {}}, seed=0)
    assert not large_model_hooks("l1norm", model, {})
    assert isinstance(large_model_hooks("thinet", model, None), TrainingHooks)


def test_hooks_plug_into_the_trainer() -> None:
    from prunelab.training.config import TrainConfig
    from prunelab.training.trainer import train

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 4, 4, generator=gen)
    y = torch.arange(32) % 3
    data = DataBundle("tiny", x, y, x[:8], y[:8], 3)
    model = build_model("cnn2d", (1, 4, 4), 3, seed=0, width=2)
    hooks = large_model_hooks("sfp", model, {"ratio": 0.5})
    penalty = large_model_hooks("slimming", model, {"strength": 1e-3})
    train(
        model,
        data,
        TrainConfig(epochs=1, lr=0.05, batch_size=16, augment=False),
        after_backward=penalty.after_backward,
        callbacks=hooks.epoch_callbacks(),
    )
    # after the epoch, half of each conv's filters are exactly zero
    for layer in channel_layers(model):
        weight = dict(model.named_modules())[layer.conv].weight.detach()
        assert int((weight.flatten(1).abs().sum(1) == 0).sum()) == layer.channels // 2
    pruned = prune_structured(model, "sfp", options={"ratio": 0.5})
    assert isinstance(pruned, PrunedModel)
    assert pruned.architecture["options"]["widths"] == [1, 2, 4]


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(3, 2, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
        nn.Conv1d(3, 4, 5, stride=2, padding=1),
    ],
)
def test_sampled_fields_reproduce_the_conv_output(conv: nn.Module) -> None:
    """Each sampled receptive field, weighted by the conv's filters, gives exactly the conv's output."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 7, 9, generator=gen) if isinstance(conv, nn.Conv2d) else torch.randn(4, 3, 11)
    fields = sample_fields(conv, x, 3, positions=6, generator=torch.Generator().manual_seed(5))
    loc = torch.randint(
        conv(x)[0, 0].numel(), (4 * 6,), generator=torch.Generator().manual_seed(5)
    )  # the same draws
    expected = conv(x).flatten(2)[torch.arange(4).repeat_interleave(6), :, loc]  # (M, O)
    got = torch.einsum("mck,ock->mo", fields, consumer_weight(conv, 3)) + conv.bias
    assert torch.allclose(got, expected, atol=1e-5)
