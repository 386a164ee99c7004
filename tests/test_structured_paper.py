"""Structured pruning as the papers' authors run it: network slimming through channel selections on
PreResNet and DenseNet (Liu et al.'s resprune.py / denseprune.py), SFP on every conv with a filter
mask on the full-size model (He et al.; Liu et al.'s scratch runs), and block removal on bottleneck
ResNets. Tiny widths and depths throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models import MODELS, build_model, register_model
from prunelab.models.preresnet import preresnet
from prunelab.pruning.structured import (
    build_architecture,
    install_block_scales,
    large_model_hooks,
    load_pruned,
    prune_structured,
    save_pruned,
)
from prunelab.pruning.structured.selection import SelectionSite, selection_sites

IMG = (3, 8, 8)
TINY_PRERESNET = "preresnet20_test"  # 9n + 2 with n = 2: two bottlenecks per stage


@pytest.fixture
def tiny_preresnet() -> Iterator[str]:
    register_model(TINY_PRERESNET, family="resnet", input_rank=2, description="test")(preresnet(20))
    yield TINY_PRERESNET
    MODELS.remove(TINY_PRERESNET)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@torch.no_grad()
def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics, scales >= 0.5 and shifts, so eval-mode outputs test every slice."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))


@torch.no_grad()
def set_small_gammas(model: nn.Module, small: dict[str, list[int]]) -> int:
    """Give the listed BN channels tiny distinct scales 0.001, 0.002, ...; return how many."""
    modules = dict(model.named_modules())
    k = 0
    for bn, channels in small.items():
        for c in channels:
            k += 1
            modules[bn].weight[c] = 0.001 * k
    return k


@torch.no_grad()
def masked_twin(model: nn.Module, pruned_bn_channels: dict[str, list[int]]) -> nn.Module:
    """The mask implementation (Liu et al.'s ImageNet fine-tune): the same network with the pruned
    channels' gamma and beta set to zero."""
    build = model.prunelab_build
    twin = build_model(build["name"], build["input_shape"], build["num_classes"], **build["options"])
    twin.load_state_dict(model.state_dict())
    modules = dict(twin.named_modules())
    for bn, channels in pruned_bn_channels.items():
        modules[bn].weight[channels] = 0.0
        modules[bn].bias[channels] = 0.0
    return twin.eval()


def percent_for(pruned: int, total: int) -> float:
    """The ``percent`` whose threshold ``sorted[int(total * percent)]`` is the ``pruned``-th smallest."""
    return (pruned - 0.5) / total


def bn_total(model: nn.Module) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# -- channel selection sites ----------------------------------------------------------------------


def test_selection_sites_pair_each_selection_with_its_bn_and_reader(tiny_preresnet: str) -> None:
    model = build_model(tiny_preresnet, IMG, 5, seed=0, width=2)
    sites = selection_sites(model)
    blocks = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(2)]
    assert sites == [SelectionSite(f"{b}.bn1", f"{b}.select", f"{b}.conv1") for b in blocks] + [
        SelectionSite("bn", "select", "fc")
    ]
    dense = build_model("densenet40", IMG, 5, seed=0, growth=2)
    dense_sites = selection_sites(dense)
    assert len(dense_sites) == 39
    assert dense_sites[12] == SelectionSite("trans1.bn1", "trans1.select", "trans1.conv1")
    assert dense_sites[-1] == SelectionSite("bn", "select", "fc")
    assert selection_sites(build_model("resnet20", IMG, 5, width=2)) == []


# -- network slimming on PreResNet ----------------------------------------------------------------


def test_slimming_preresnet_through_selections_and_removable_convs(
    tiny_preresnet: str, tmp_path: Path
) -> None:
    model = build_model(tiny_preresnet, IMG, 5, seed=0, width=2)
    gen = torch.Generator().manual_seed(0)
    randomise_bn(model, gen)  # every scale >= 0.5
    # Block widths: layer1 in 2 -> out 8 (mids 2), layer2 out 16 (mids 4), layer3 out 32 (mids 8).
    small = {
        "layer1.1.bn1": [0, 5],  # a block input (shared with the residual path): selected away
        "layer2.0.bn2": [1],  # after conv1: that filter is removed
        "layer3.1.bn3": [3],  # after conv2: that filter is removed
        "bn": [7, 30],  # the final BN: the classifier reads 30 of 32 channels
    }
    k = set_small_gammas(model, small)
    percent = percent_for(k, bn_total(model))  # threshold = the 6th smallest |gamma| = 0.006
    pruned = prune_structured(model, "slimming", options={"percent": percent})

    assert pruned.kept["layer1.1.select"] == [1, 2, 3, 4, 6, 7]
    assert pruned.kept["layer2.0.conv1"] == [0, 2, 3]
    assert pruned.kept["layer3.1.conv2"] == [0, 1, 2, 4, 5, 6, 7]
    assert pruned.kept["select"] == [c for c in range(32) if c not in (7, 30)]
    assert pruned.kept["layer1.0.select"] == [0, 1]  # untouched sites keep everything
    options = pruned.architecture["options"]
    assert options["widths"] == [2, 2, 2, 2, 3, 4, 4, 4, 8, 8, 8, 7]
    assert options["blocks"] == [2, 2, 2]
    assert options["selected"][1] == [1, 2, 3, 4, 6, 7] and options["selected"][0] is None
    assert options["selected"][-1] == pruned.kept["select"]
    small_model = pruned.model
    assert small_model.layer1[1].conv1.in_channels == 6 and small_model.layer1[1].bn1.num_features == 8
    assert small_model.fc.in_features == 30 and small_model.bn.num_features == 32
    assert n_params(small_model) < n_params(model)
    assert model.layer1[1].conv1.in_channels == 8  # the input model is untouched

    # outputs equal the mask implementation (pruned channels' gamma = beta = 0)
    twin = masked_twin(model, small)
    x = torch.randn(4, *IMG, generator=gen)
    small_model.eval()
    assert torch.allclose(small_model(x), twin(x), atol=1e-5)

    # the architecture rebuilds the same shapes and selections (Scratch-E/B)
    fresh = build_architecture(pruned.architecture, seed=1)
    assert shapes(fresh) == shapes(small_model)
    assert fresh.layer1[1].select.selected() == [1, 2, 3, 4, 6, 7]
    save_pruned(tmp_path / "p", pruned)
    loaded = load_pruned(tmp_path / "p")
    loaded.model.eval()
    assert torch.equal(loaded.model(x), small_model(x))
    assert loaded.kept == pruned.kept and loaded.mask is None


def test_slimming_penalty_covers_every_bn_of_a_preresnet(tiny_preresnet: str) -> None:
    model = build_model(tiny_preresnet, IMG, 5, seed=0, width=2)
    hooks = large_model_hooks("slimming", model, {"strength": 0.1})
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 * 3 + 1  # bn1, bn2, bn3 per block + the final one
    for bn in bns:
        bn.weight.grad = torch.zeros_like(bn.weight)
    hooks.after_backward[0]()
    assert all(torch.allclose(bn.weight.grad, torch.full_like(bn.weight, 0.1)) for bn in bns)  # gamma 0.5 > 0


# -- network slimming on DenseNet -----------------------------------------------------------------


def test_slimming_densenet_through_selections_only(tmp_path: Path) -> None:
    model = build_model("densenet40", IMG, 5, seed=0, growth=2)
    gen = torch.Generator().manual_seed(1)
    randomise_bn(model, gen)
    # dense1.0 reads the 4 stem channels; trans2 reads 4 + 2 * 24 = 52; the final BN 76
    small = {"dense1.0.bn1": [1, 2], "dense2.5.bn1": [0], "trans2.bn1": [10, 51], "bn": [75]}
    k = set_small_gammas(model, small)
    pruned = prune_structured(model, "slimming", options={"percent": percent_for(k, bn_total(model))})
    assert pruned.kept["dense1.0.select"] == [0, 3]
    assert pruned.kept["dense2.5.select"] == list(range(1, 38))  # 28 + 5 * 2 = 38 channels in
    assert pruned.kept["trans2.select"] == [c for c in range(52) if c not in (10, 51)]
    assert pruned.kept["select"] == list(range(75))
    assert len(pruned.kept) == 39  # selections only: no conv loses filters
    assert all(
        m.out_channels == o.out_channels for m, o in zip(_convs(pruned.model), _convs(model), strict=True)
    )
    assert pruned.model.dense1[0].conv1.in_channels == 2 and pruned.model.fc.in_features == 75
    assert list(pruned.architecture["options"]) == ["growth", "selected"]

    twin = masked_twin(model, small)
    x = torch.randn(4, *IMG, generator=gen)
    pruned.model.eval()
    assert torch.allclose(pruned.model(x), twin(x), atol=1e-4)
    save_pruned(tmp_path / "d", pruned)
    loaded = load_pruned(tmp_path / "d")
    loaded.model.eval()
    assert torch.equal(loaded.model(x), pruned.model(x))
    assert shapes(build_architecture(pruned.architecture, seed=3)) == shapes(pruned.model)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_densenet_refuses_filter_removal() -> None:
    model = build_model("densenet40", IMG, 5, seed=0, growth=2)
    for method in ("l1norm", "sfp"):
        with pytest.raises(PrunelabError, match="only network slimming"):
            prune_structured(model, method)
    # the authors' SFP masks filters instead, which works on any conv net
    pruned = prune_structured(model, "sfp", options={"variant": "all_convs_masked", "ratio": 0.5})
    assert pruned.mask is not None and pruned.mask.density() == pytest.approx(0.5, abs=0.01)


# -- SFP as the authors run it --------------------------------------------------------------------


@torch.no_grad()
def graded_filters(model: nn.Module) -> None:
    """Filter ``i`` of every conv with ``C`` filters is the constant ``(7 * i mod C) + 1``: L2 norms
    ordered by that value. C = 2: values 1, 2; C = 4: 1, 4, 3, 2; C = 8: 1, 8, 7, 6, 5, 4, 3, 2."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            for i in range(m.out_channels):
                m.weight[i] = float((7 * i) % m.out_channels + 1)


#: The filters with the int(C / 2) smallest values: C = 2 -> [0]; 4 -> [0, 3]; 8 -> [0, 5, 6, 7].
ZEROED = {2: [0], 4: [0, 3], 8: [0, 5, 6, 7]}


def test_sfp_all_convs_masked_zeroes_filters_in_every_conv(tmp_path: Path) -> None:
    model = build_model("resnet20", IMG, 5, seed=0, width=2)  # widths 2, 4, 8; option-B shortcuts
    graded_filters(model)
    options = {"ratio": 0.5, "variant": "all_convs_masked"}
    pruned = prune_structured(model, "sfp", options=options)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert pruned.mask is not None and list(pruned.mask) == [f"{n}.weight" for n in convs]
    expected = {
        "conv1": [0],  # the stem
        "layer1.0.conv1": [0],
        "layer1.0.conv2": [0],  # a block's last conv, tied to the residual sum
        "layer2.0.conv1": [0, 3],
        "layer2.0.conv2": [0, 3],
        "layer2.0.shortcut.0": [0, 3],  # the projection shortcut
        "layer3.2.conv2": [0, 5, 6, 7],
    }
    pruned_modules = dict(pruned.model.named_modules())
    for name, conv in convs.items():
        zeroed = ZEROED[conv.out_channels]
        if name in expected:
            assert zeroed == expected[name]
        keep = pruned.mask[f"{name}.weight"]
        assert [i for i in range(conv.out_channels) if not keep[i].any()] == zeroed
        assert all(bool(keep[i].all()) for i in range(conv.out_channels) if i not in zeroed)  # whole filters
        weight = pruned_modules[name].weight.detach()
        assert torch.count_nonzero(weight[zeroed]) == 0
        assert torch.equal(weight[keep.flatten(1).all(1)], conv.weight.detach()[keep.flatten(1).all(1)])
        assert pruned.kept[name] == [i for i in range(conv.out_channels) if i not in zeroed]
    assert shapes(pruned.model) == shapes(model)  # full size, masked
    assert pruned.architecture == {
        "name": "resnet20",
        "input_shape": [3, 8, 8],
        "num_classes": 5,
        "options": {"width": 2},
    }
    assert pruned.mask.density() == 0.5
    assert torch.count_nonzero(model.conv1.weight[0]) > 0  # the input model is untouched
    save_pruned(tmp_path / "s", pruned)
    loaded = load_pruned(tmp_path / "s")
    assert loaded.mask == pruned.mask
    assert torch.equal(loaded.model.conv1.weight, pruned.model.conv1.weight)


def test_sfp_hooks_per_variant() -> None:
    authors = build_model("resnet20", IMG, 5, seed=0, width=2)
    graded_filters(authors)
    hooks = large_model_hooks("sfp", authors, {"ratio": 0.5, "variant": "all_convs_masked"})
    for name, conv in authors.named_modules():
        if isinstance(conv, nn.Conv2d):  # zeroed at once, the stem and every conv2 included
            norms = conv.weight.detach().flatten(1).norm(dim=1)
            assert torch.nonzero(norms == 0).flatten().tolist() == ZEROED[conv.out_channels], name
    assert len(hooks.epoch_end) == 1

    default = build_model("resnet20", IMG, 5, seed=0, width=2)
    graded_filters(default)
    large_model_hooks("sfp", default, {"ratio": 0.5})
    assert torch.count_nonzero(default.conv1.weight.flatten(1).norm(dim=1)) == 2  # stem untouched
    assert torch.count_nonzero(default.layer1[0].conv2.weight.flatten(1).norm(dim=1)) == 2
    assert torch.count_nonzero(default.layer1[0].conv1.weight.flatten(1).norm(dim=1)) == 1
    physical = prune_structured(default, "sfp", options={"ratio": 0.5})  # today's: smaller, no mask
    assert physical.mask is None and physical.architecture["options"]["widths"] == [1] * 3 + [2] * 3 + [4] * 3
    with pytest.raises(PrunelabError, match="unknown sfp variant 'all'; valid choices: all_convs_masked"):
        large_model_hooks("sfp", default, {"variant": "all"})


# -- block removal on bottleneck ResNets ----------------------------------------------------------


@pytest.mark.parametrize("name", ["su_resnet56", TINY_PRERESNET])
def test_sss_removes_bottleneck_blocks(name: str, tiny_preresnet: str, tmp_path: Path) -> None:
    model = build_model(name, IMG, 5, seed=0, width=2)
    gen = torch.Generator().manual_seed(2)
    randomise_bn(model, gen)
    large_model_hooks("sss", model, {})
    scales = install_block_scales(model)
    assert "layer1.0" not in scales  # the first block changes the width
    with torch.no_grad():
        scales["layer2.1"].fill_(0.0)
        scales["layer3.1"].fill_(-0.5)  # kept, folded into the branch's last module
    model.eval()
    x = torch.randn(3, *IMG, generator=gen)
    before = model(x)
    pruned = prune_structured(model, "sss")
    assert pruned.kept["layer2"].count(1) == 0 and pruned.kept["layer3"].count(1) == 1
    pruned.model.eval()
    assert torch.allclose(pruned.model(x), before, atol=1e-5)
    save_pruned(tmp_path / "b", pruned)
    assert torch.equal(load_pruned(tmp_path / "b").model.eval()(x), pruned.model(x))


# -- filter removal in bottleneck blocks ----------------------------------------------------------


@pytest.mark.parametrize("name", ["su_resnet56", TINY_PRERESNET])
def test_l1norm_removes_filters_of_both_bottleneck_convs(
    name: str, tiny_preresnet: str, tmp_path: Path
) -> None:
    """A bottleneck's conv1 and conv2 are removable on their own (conv3 feeds the residual sum); the
    pruned widths are the ``widths`` option, two per block."""
    model = build_model(name, IMG, 5, seed=0, width=2)
    gen = torch.Generator().manual_seed(4)
    randomise_bn(model, gen)
    modules = dict(model.named_modules())
    blocks = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(len(getattr(model, f"layer{s}")))]
    # the BN after each removable conv: bn1/bn2 (post-activation) or bn2/bn3 (pre-activation)
    after = ("bn1", "bn2") if name == "su_resnet56" else ("bn2", "bn3")
    with torch.no_grad():  # silence the first half of every removable conv's filters (weights, BN 0)
        for block in blocks:
            for conv, bn in zip(("conv1", "conv2"), after, strict=True):
                half = modules[f"{block}.{conv}"].out_channels // 2
                modules[f"{block}.{conv}"].weight[:half] = 0.0
                modules[f"{block}.{bn}"].weight[:half] = 0.0
                modules[f"{block}.{bn}"].bias[:half] = 0.0
    model.eval()
    x = torch.randn(3, *IMG, generator=gen)
    before = model(x)
    pruned = prune_structured(model, "l1norm", options={"ratio": 0.5})
    assert list(pruned.kept) == [f"{b}.{c}" for b in blocks for c in ("conv1", "conv2")]
    widths = [m.out_channels for b in blocks for m in (modules[f"{b}.conv1"], modules[f"{b}.conv2"])]
    assert [pruned.kept[k] for k in pruned.kept] == [list(range(w // 2, w)) for w in widths]
    assert pruned.architecture["options"]["widths"] == [w // 2 for w in widths]
    pruned.model.eval()
    assert torch.allclose(pruned.model(x), before, atol=1e-5)
    save_pruned(tmp_path / "l1", pruned)
    assert torch.equal(load_pruned(tmp_path / "l1").model.eval()(x), pruned.model(x))
