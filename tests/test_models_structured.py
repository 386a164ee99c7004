"""Model options for pruned architectures: exact widths, block counts, option-A shortcuts, BN switches,
the Rethinking VGG head. Parameter counts are pinned to hand-computed formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.models.resnet import ZeroPadShortcut, block_conv1_names
from prunelab.models.vgg import conv_widths
from prunelab.spec import ModelSpec

CIFAR = (3, 32, 32)
#: Liu et al. 2019 ``vggprune.py``: VGG-16-pruned-A of Li et al. 2017, pools left out.
VGG16_A = [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def vgg_params(widths: list[int], classes: int = 10, *, head: str = "linear", hidden: int = 512) -> int:
    """Conv weights (no bias) + BN2d (2 per channel) + the head."""
    total, fan_in = 0, 3
    for w in widths:
        total += fan_in * w * 9 + 2 * w
        fan_in = w
    if head == "linear":
        return total + fan_in * classes + classes
    return total + (fan_in * hidden + hidden) + 2 * hidden + (hidden * classes + classes)


def test_vgg_widths_give_exact_channels_and_keep_pools() -> None:
    full = build_model("vgg16", CIFAR, 10)
    pruned = build_model("vgg16", CIFAR, 10, widths=VGG16_A)
    assert [c.out_channels for c in convs(pruned)] == VGG16_A
    assert [c.in_channels for c in convs(pruned)] == [3, *VGG16_A[:-1]]
    pools = [i for i, m in enumerate(pruned.features) if isinstance(m, nn.MaxPool2d)]
    assert pools == [i for i, m in enumerate(full.features) if isinstance(m, nn.MaxPool2d)]
    assert n_params(pruned) == vgg_params(VGG16_A)
    # The default widths spelled out are the default model, module names and all.
    same = build_model("vgg16", CIFAR, 10, widths=conv_widths(16))
    assert n_params(same) == n_params(full) == 14_724_042
    assert list(same.state_dict()) == list(full.state_dict())
    assert pruned(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_vgg_rethinking_head_and_bn_gamma() -> None:
    model = build_model("vgg16", CIFAR, 10, classifier="rethinking", bn_gamma=0.5, seed=0)
    head = model.classifier
    assert isinstance(head, nn.Sequential)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (512, 512, 10)
    # 14,710,464 conv + 8,448 BN2d + 262,656 + 1,024 + 5,130 = 14,987,722 (Li et al.: 1.5e7).
    assert n_params(model) == vgg_params(conv_widths(16), head="rethinking") == 14_987_722
    bn2d = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 0.5) for m in bn2d)
    assert torch.all(head[1].weight == 1)  # BN1d keeps 1
    assert all(c.bias is None for c in convs(model))
    pruned = build_model("vgg16", CIFAR, 10, widths=VGG16_A, classifier="rethinking", classifier_hidden=64)
    assert pruned.classifier[0].in_features == 256 and pruned.classifier[0].out_features == 64
    assert n_params(pruned) == vgg_params(VGG16_A, head="rethinking", hidden=64)
    assert pruned.eval()(torch.randn(1, *CIFAR)).shape == (1, 10)


def test_vgg_option_errors() -> None:
    with pytest.raises(PrunelabError, match="13 conv widths.*got 12"):
        build_model("vgg16", CIFAR, 10, widths=VGG16_A[:-1])
    with pytest.raises(PrunelabError, match="widths must be >= 1, got 0"):
        build_model("vgg16", CIFAR, 10, widths=[0] * 13)
    with pytest.raises(PrunelabError, match="not both"):
        build_model("vgg16", CIFAR, 10, widths=VGG16_A, width=0.5)
    with pytest.raises(
        PrunelabError, match="unknown vgg16 classifier 'mlp'; valid choices: linear, rethinking"
    ):
        build_model("vgg16", CIFAR, 10, classifier="mlp")
    with pytest.raises(PrunelabError, match="classifier_hidden"):
        build_model("vgg16", CIFAR, 10, classifier_hidden=64)


def test_resnet_shortcut_a_is_parameter_free() -> None:
    # Projection shortcuts of ResNet-56 hold 16*32 + 2*32 + 32*64 + 2*64 = 2,752 parameters.
    assert n_params(build_model("resnet56", CIFAR, 10, shortcut="A")) == 855_770 - 2_752 == 853_018
    model = build_model("resnet20", CIFAR, 10, shortcut="a", seed=0)
    assert isinstance(model.layer2[0].shortcut, ZeroPadShortcut)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    assert len(convs(model)) == 19  # stem + 2 per block: no shortcut convs
    x = torch.randn(2, 16, 8, 8)
    out = model.layer2[0].shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.allclose(out[:, :16], torch.nn.functional.avg_pool2d(x, 2))
    assert torch.count_nonzero(out[:, 16:]) == 0
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    with pytest.raises(PrunelabError, match="unknown resnet20 shortcut 'C'; valid choices: A, B"):
        build_model("resnet20", CIFAR, 10, shortcut="C")


def test_resnet_widths_set_each_blocks_first_conv() -> None:
    widths = [8] * 3 + [20] * 3 + [40, 50, 60]
    model = build_model("resnet20", CIFAR, 10, shortcut="A", widths=widths)
    names = block_conv1_names(model)
    assert names[:2] == ["layer1.0.conv1", "layer1.1.conv1"] and len(names) == 9
    modules = dict(model.named_modules())
    assert [modules[n].out_channels for n in names] == widths
    assert [modules[n.replace("conv1", "conv2")].in_channels for n in names] == widths
    assert [modules[n.replace("conv1", "conv2")].out_channels for n in names] == [16] * 3 + [32] * 3 + [
        64
    ] * 3
    # Stem 432 + 32; block with mid m, in c, out p: 9*c*m + 2*m + 9*m*p + 2*p; fc 650.
    ins = [16] * 4 + [32] * 3 + [64] * 2
    outs = [16] * 3 + [32] * 3 + [64] * 3
    blocks = sum(9 * c * m + 2 * m + 9 * m * p + 2 * p for c, m, p in zip(ins, widths, outs, strict=True))
    assert n_params(model) == 432 + 32 + blocks + 650
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    with pytest.raises(PrunelabError, match="9 widths.*got 8"):
        build_model("resnet20", CIFAR, 10, widths=widths[:-1])


def test_resnet_blocks_per_stage() -> None:
    model = build_model("resnet56", CIFAR, 10, blocks=[2, 0, 3], shortcut="A")
    assert (len(model.layer1), len(model.layer2), len(model.layer3)) == (2, 0, 3)
    assert model.layer3[0].conv1.in_channels == 16  # the empty stage passes its input on
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    projected = build_model("resnet56", CIFAR, 10, blocks=[1, 1, 1], widths=[4, 5, 6])
    assert [
        m.conv1.out_channels for m in (projected.layer1[0], projected.layer2[0], projected.layer3[0])
    ] == [4, 5, 6]
    with pytest.raises(PrunelabError, match="3 block counts"):
        build_model("resnet56", CIFAR, 10, blocks=[9, 9])
    with pytest.raises(PrunelabError, match=">= 0"):
        build_model("resnet56", CIFAR, 10, blocks=[9, -1, 9])
    with pytest.raises(PrunelabError, match="3 widths"):
        build_model("resnet56", CIFAR, 10, blocks=[1, 1, 1], widths=[4, 5])


def test_cnn1d_widths_and_bn() -> None:
    default = build_model("cnn1d", (1, 40), 10)
    model = build_model("cnn1d", (1, 40), 10, widths=[8, 12, 6], bn=True)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in conv] == [8, 12, 6] and all(c.bias is None for c in conv)
    assert [type(m) for m in model.features[:3]] == [nn.Conv1d, nn.BatchNorm1d, nn.ReLU]
    # Conv weights 1*8*5 + 8*12*3 + 12*6*3, BN 2*(8+12+6), linear 6*5*10 + 10.
    assert n_params(model) == 40 + 288 + 216 + 52 + 310 == 906
    assert model(torch.randn(2, 40)).shape == (2, 10)
    assert n_params(build_model("cnn1d", (1, 40), 10, widths=[25, 25, 25])) == n_params(default) == 5_210
    with pytest.raises(PrunelabError, match="not both"):
        build_model("cnn1d", (1, 40), 10, widths=[8, 8, 8], channels=8)
    with pytest.raises(PrunelabError, match="3 conv widths"):
        build_model("cnn1d", (1, 40), 10, widths=[8, 8])
    with pytest.raises(PrunelabError, match="true or false"):
        build_model("cnn1d", (1, 40), 10, bn="maybe")


def test_cnn2d_widths_and_bn_switch() -> None:
    model = build_model("cnn2d", (1, 8, 8), 10, widths=[4, 6, 8])
    assert [c.out_channels for c in convs(model)] == [4, 6, 8]
    assert n_params(model) == (9 * 4 + 4 * 6 * 9 + 6 * 8 * 9) + 2 * 18 + 8 * 10 + 10
    plain = build_model("cnn2d", (1, 8, 8), 10, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert n_params(plain) == 24_058 - 2 * 112 + 112  # BN gone, conv biases added
    assert n_params(build_model("cnn2d", (1, 8, 8), 10, widths=[16, 32, 64])) == 24_058
    with pytest.raises(PrunelabError, match="not both"):
        build_model("cnn2d", (1, 8, 8), 10, widths=[4, 6, 8], width=4)


def test_mlp_bn() -> None:
    model = build_model("mlp", (1, 40), 10, hidden=[30, 20], bn=True)
    assert [type(m) for m in model.layers] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
    ]
    assert n_params(model) == (40 * 30 + 30) + 60 + (30 * 20 + 20) + 40 + (20 * 10 + 10)
    assert model(torch.randn(2, 40)).shape == (2, 10)


def test_pruned_model_round_trips_through_spec_and_state_dict() -> None:
    options = {"shortcut": "A", "widths": [8, 16, 12], "blocks": [1, 1, 1]}
    spec = ModelSpec(name="resnet56", options=options)
    first = build_model(spec.name, CIFAR, 10, seed=0, **spec.options)
    twin = build_model(spec.name, CIFAR, 10, seed=1, **spec.options)
    twin.load_state_dict(first.state_dict())
    x = torch.randn(2, *CIFAR)
    assert torch.equal(first.eval()(x), twin.eval()(x))


# --- predefined L1-norm configurations (Li et al. 2017 as coded by Liu et al. 2019) -------------------

from prunelab.pruning.structured.configs import PREDEFINED  # noqa: E402

REFERENCE = {  # res56prune.py / res110prune.py: skip ids and per-stage prune ratios
    "resnet56-a": (56, [16, 20, 38, 54], [0.1, 0.1, 0.1]),
    "resnet56-b": (56, [16, 18, 20, 34, 38, 54], [0.6, 0.3, 0.1]),
    "resnet110-a": (110, [36], [0.5, 0.0, 0.0]),
    "resnet110-b": (110, [36, 38, 74], [0.5, 0.4, 0.3]),
}


def reference_cfg(model: nn.Module, depth: int, skip: list[int], ratios: list[float]) -> list[int]:
    """The reference's loop, restated: number Conv2d modules from 1, prune the even ids by stage."""
    bounds = (18, 36) if depth == 56 else (36, 72)
    cfg = []
    for layer_id, conv in enumerate(convs(model), start=1):
        if layer_id in skip:
            cfg.append(conv.out_channels)
        elif layer_id % 2 == 0:
            stage = 0 if layer_id <= bounds[0] else 1 if layer_id <= bounds[1] else 2
            cfg.append(int(conv.out_channels * (1 - ratios[stage])))
    return cfg


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_resnet_configs_equal_the_reference_loop(name: str) -> None:
    depth, skip, ratios = REFERENCE[name]
    config = PREDEFINED.get(name)
    model = build_model(config.model, CIFAR, 10, **config.base_options)  # option A: no shortcut convs
    keep = config.keep_counts(model)
    assert list(keep) == block_conv1_names(model)
    assert list(keep.values()) == reference_cfg(model, depth, skip, ratios)
    # Option-B shortcut convs neither shift the numbering nor get pruned.
    assert config.keep_counts(build_model(config.model, CIFAR, 10)) == keep
    assert config.pruned_options(model) == {"widths": list(keep.values())}


def test_resnet_config_counts_by_hand() -> None:
    model = build_model("resnet56", CIFAR, 10, shortcut="A")
    a = PREDEFINED.get("resnet56-a").keep_counts(model)
    # int(16 * 0.9) = 14, int(32 * 0.9) = 28, int(64 * 0.9) = 57; ids 16, 20, 38, 54 are blocks
    # layer1.7, layer2.0, layer3.0 and layer3.8.
    assert [a[f"layer1.{i}.conv1"] for i in range(9)] == [14] * 7 + [16, 14]
    assert [a[f"layer2.{i}.conv1"] for i in range(9)] == [32] + [28] * 8
    assert [a[f"layer3.{i}.conv1"] for i in range(9)] == [64] + [57] * 7 + [64]
    b = PREDEFINED.get("resnet56-b").keep_counts(model)
    # int(16 * 0.4) = 6, int(32 * 0.7) = 22; ids 18 and 34 are layer1.8 and layer2.7.
    assert [b[f"layer1.{i}.conv1"] for i in range(9)] == [6] * 7 + [16, 16]
    assert [b[f"layer2.{i}.conv1"] for i in range(9)] == [32] + [22] * 6 + [32, 22]
    big = build_model("resnet110", CIFAR, 10, shortcut="A")
    b110 = PREDEFINED.get("resnet110-b").keep_counts(big)
    assert sorted(set(b110.values())) == [8, 16, 19, 32, 44, 64]  # int(32 * 0.6) = 19, int(64 * 0.7) = 44


def test_vgg16_a_config() -> None:
    config = PREDEFINED.get("vgg16-a")
    model = build_model("vgg16", CIFAR, 10, **config.base_options)
    keep = config.keep_counts(model)
    assert list(keep) == [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(keep.values()) == VGG16_A
    pruned = build_model("vgg16", CIFAR, 10, **config.base_options, **config.pruned_options(model))
    assert [c.out_channels for c in convs(pruned)] == VGG16_A
    assert pruned.classifier[0].in_features == 256


def test_config_registry_and_errors() -> None:
    assert set(PREDEFINED.names()) == {"vgg16-a", "resnet56-a", "resnet56-b", "resnet110-a", "resnet110-b"}
    for name, config in PREDEFINED.items():
        assert config.name == name and config.paper and config.description
    with pytest.raises(PrunelabError, match="valid choices: resnet110-a"):
        PREDEFINED.get("resnet56-c")
    with pytest.raises(PrunelabError, match="applies to model 'resnet56', got 'resnet20'"):
        PREDEFINED.get("resnet56-a").keep_counts(build_model("resnet20", CIFAR, 10))
    with pytest.raises(PrunelabError, match="3 stages of 9 BasicBlocks"):
        PREDEFINED.get("resnet56-a").keep_counts(build_model("resnet56", CIFAR, 10, blocks=[9, 9, 8]))
    with pytest.raises(PrunelabError, match="fewer than"):
        PREDEFINED.get("vgg16-a").keep_counts(build_model("vgg16", CIFAR, 10, width=0.25))
