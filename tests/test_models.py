"""Tests for the model zoo: registry contents, pinned parameter counts, shapes, init and errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models import MODELS, build_model, model_family, register_model, wide_resnet
from prunelab.models.vgg import VGG_CONFIGS

CIFAR = (3, 32, 32)
SEQUENCE_MODELS = ("cnn1d",)
#: The CIFAR-sized registry; the ImageNet models (tens of millions of weights) have their own tests.
SMALL_MODELS = tuple(name for name in MODELS if not name.startswith("imagenet_"))
IMAGE_MODELS = tuple(name for name in SMALL_MODELS if MODELS.get(name).input_rank == 2)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prunable_weights(model: nn.Module) -> tuple[int, int]:
    """(number of Conv/Linear weight entries, number of such layers); biases and BN excluded."""
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED)]
    return sum(m.weight.numel() for m in layers), len(layers)


def test_registered_names_and_families() -> None:
    expected = {
        "mlp": "mlp",
        "cnn1d": "cnn1d",
        "cnn2d": "cnn2d",
        **{f"vgg{d}": "vgg" for d in (11, 13, 16, 19)},
        **{f"resnet{d}": "resnet" for d in (20, 32, 44, 56, 110)},
        **{name: "wrn" for name in ("wrn16_4", "wrn16_8", "wrn28_2", "wrn28_10")},
        **{f"su_resnet{d}": "resnet" for d in (32, 56)},
        "preresnet164": "resnet",
        "densenet40": "vgg",  # no residual blocks; Su et al.'s non-ResNet smart-ratio rule
        **{f"imagenet_resnet{d}": "resnet" for d in (18, 34, 50, 101, 152)},
        "imagenet_wide_resnet50_2": "wrn",
        "imagenet_wide_resnet101_2": "wrn",
        "imagenet_vgg16_bn": "vgg",
    }
    assert set(MODELS.names()) == set(expected)
    for name, family in expected.items():
        assert MODELS.get(name).family == family
        assert MODELS.get(name).description


@pytest.mark.parametrize(
    ("name", "shape", "options", "total"),
    [
        ("mlp", (1, 40), {}, 15_210),
        ("cnn1d", (1, 40), {}, 5_210),
        ("cnn2d", (1, 8, 8), {}, 24_058),
        ("vgg11", CIFAR, {}, 9_228_362),
        ("vgg16", CIFAR, {}, 14_724_042),
        ("vgg19", CIFAR, {}, 20_035_018),
        ("resnet20", CIFAR, {"width": 16}, 272_474),
        ("resnet32", CIFAR, {"width": 16}, 466_906),
        ("resnet56", CIFAR, {"width": 16}, 855_770),
        ("resnet110", CIFAR, {"width": 16}, 1_730_714),
        ("resnet32", CIFAR, {"width": 32}, 1_860_522),
        ("wrn28_10", CIFAR, {}, 36_479_194),
    ],
)
def test_pinned_parameter_counts(
    name: str, shape: tuple[int, ...], options: dict[str, Any], total: int
) -> None:
    assert n_params(build_model(name, shape, 10, **options)) == total


def test_mlp_count_by_formula() -> None:
    # 40-100-100-10 with biases: (40*100 + 100) + (100*100 + 100) + (100*10 + 10).
    assert (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10) == 15_210
    assert n_params(build_model("mlp", (1, 40), 10)) == 15_210
    assert n_params(build_model("mlp", (40,), 10)) == 15_210
    assert n_params(build_model("mlp", (40,), 10, hidden=[])) == 40 * 10 + 10


def test_cnn1d_count_by_formula() -> None:
    # Kernels 5, 3, 3 with stride 2, padding 1: L = 40 -> 19 -> 10 -> 5, so the linear takes 25 * 5 = 125
    # features, as in the MNIST-1D reference ConvBase.
    convs = (1 * 25 * 5 + 25) + 2 * (25 * 25 * 3 + 25)
    assert n_params(build_model("cnn1d", (1, 40), 10)) == convs + 125 * 10 + 10 == 5_210


def test_cnn2d_count_by_formula() -> None:
    convs = 1 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 9  # bias-free, BN follows
    bns = 2 * (16 + 32 + 64)
    assert n_params(build_model("cnn2d", (1, 8, 8), 10)) == convs + bns + 64 * 10 + 10 == 24_058


def resnet_formula(depth: int, width: int, in_channels: int = 3, classes: int = 10) -> tuple[int, int]:
    """(total parameters, prunable weights) of a CIFAR ResNet with projection shortcuts."""
    n = (depth - 2) // 6
    weights = in_channels * width * 9  # stem
    bn = 2 * width
    fan_in = width
    for planes in (width, 2 * width, 4 * width):
        for block in range(n):
            weights += fan_in * planes * 9 + planes * planes * 9
            bn += 2 * 2 * planes
            if block == 0 and fan_in != planes:  # projection shortcut: 1x1 conv + BN
                weights += fan_in * planes
                bn += 2 * planes
            fan_in = planes
    weights += 4 * width * classes
    return weights + bn + classes, weights


@pytest.mark.parametrize(("depth", "width"), [(20, 16), (32, 16), (56, 16), (110, 16), (32, 32)])
def test_resnet_counts_by_formula(depth: int, width: int) -> None:
    total, weights = resnet_formula(depth, width)
    model = build_model(f"resnet{depth}", CIFAR, 10, width=width)
    assert n_params(model) == total
    assert prunable_weights(model)[0] == weights


def test_resnet20_formula_value() -> None:
    # stem 432 + 32 BN; stage 1: 3 * (2 * 2304 + 2 * 32) = 14,016; stage 2: 4608 + 9216 + 512 (shortcut)
    # + 3 * 64 (BN) + 2 * (2 * 9216 + 2 * 64) = 51,648; stage 3: 18,432 + 36,864 + 2048 + 3 * 128
    # + 2 * (2 * 36,864 + 2 * 128) = 205,696; fc 64 * 10 + 10 = 650. Sum: 272,474.
    assert 432 + 32 + 14_016 + 51_648 + 205_696 + 650 == 272_474
    assert resnet_formula(20, 16)[0] == 272_474


def test_resnet32_double_width_prunable_weights() -> None:
    # Su et al. 2020, ResNet-32 "double width": 33 conv layers (31 + 2 shortcuts) + 1 linear.
    model = build_model("resnet32", CIFAR, 10, width=32)
    assert prunable_weights(model) == (1_855_584, 34)


def test_vgg19_prunable_weights() -> None:
    model = build_model("vgg19", CIFAR, 10, conv_bias=True)
    assert prunable_weights(model) == (20_024_000, 17)  # 16 conv + 1 linear
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is not None for conv in convs)
    plain = build_model("vgg11", CIFAR, 10)
    assert all(m.bias is None for m in plain.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("depth", sorted(VGG_CONFIGS))
def test_vgg_counts_by_formula(depth: int) -> None:
    channels, weights, bn = 3, 0, 0
    for item in VGG_CONFIGS[depth]:
        if item != "M":
            weights += channels * int(item) * 9
            bn += 2 * int(item)
            channels = int(item)
    model = build_model(f"vgg{depth}", CIFAR, 10)
    assert n_params(model) == weights + bn + 512 * 10 + 10


def test_vgg_cifar_feature_map_is_2x2_and_width_scales() -> None:
    model = build_model("vgg11", CIFAR, 10)
    assert model.features(torch.zeros(2, *CIFAR)).shape == (2, 512, 2, 2)  # then AvgPool2d(2) in the papers
    half = build_model("vgg11", CIFAR, 10, width=0.5)
    assert half.classifier.in_features == 256


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_shape_small_input(name: str) -> None:
    rank = MODELS.get(name).input_rank
    shape = {0: (1, 40), 1: (1, 40), 2: (3, 8, 8)}[rank]
    model = build_model(name, shape, 7, seed=0)
    assert model(torch.randn(2, *shape)).shape == (2, 7)  # train mode: BN on batch 2 must work


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 64, 64)])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_on_other_sizes(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 10, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_sequence_models_accept_channel_or_flat_shapes(name: str) -> None:
    for shape in [(1, 40), (40,)]:
        model = build_model(name, shape, 10, seed=0)
        assert model(torch.randn(2, *shape)).shape == (2, 10)
    both = build_model(name, (1, 40), 10, seed=0)
    x = torch.randn(2, 40)
    assert torch.equal(both(x), both(x.unsqueeze(1)))  # (B, L) means one channel
    assert n_params(build_model(name, (40,), 10)) == n_params(both)


def test_cnn1d_multichannel() -> None:
    model = build_model("cnn1d", (3, 50), 4, channels=8)
    assert model(torch.randn(2, 3, 50)).shape == (2, 4)


def test_seed_makes_init_deterministic() -> None:
    for name, shape in [("resnet20", (3, 8, 8)), ("vgg11", (3, 8, 8)), ("mlp", (1, 40)), ("cnn1d", (40,))]:
        first = build_model(name, shape, 10, seed=3).state_dict()
        again = build_model(name, shape, 10, seed=3).state_dict()
        other = build_model(name, shape, 10, seed=4).state_dict()
        assert all(torch.equal(first[k], again[k]) for k in first)
        assert any(not torch.equal(first[k], other[k]) for k in first)


def test_seed_does_not_disturb_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model("cnn2d", (1, 8, 8), 10, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_rank_mismatch_is_a_prunelab_error() -> None:
    with pytest.raises(PrunelabError, match="sequences"):
        build_model("cnn1d", (1, 8, 8), 10)
    with pytest.raises(PrunelabError, match="images"):
        build_model("resnet20", (1, 40), 10)


def test_unknown_model_lists_valid_choices() -> None:
    with pytest.raises(PrunelabError) as info:
        build_model("resnet21", CIFAR, 10)
    message = str(info.value)
    assert "resnet21" in message
    for name in ("mlp", "resnet20", "vgg16", "wrn28_10"):
        assert name in message


def test_bad_options_are_prunelab_errors() -> None:
    with pytest.raises(PrunelabError, match="bad option"):
        build_model("resnet20", CIFAR, 10, depth=3)
    with pytest.raises(PrunelabError, match="width"):
        build_model("resnet20", CIFAR, 10, width=0)
    with pytest.raises(PrunelabError, match="hidden"):
        build_model("mlp", (1, 40), 10, hidden="100")
    with pytest.raises(PrunelabError, match="too short"):
        build_model("cnn1d", (1, 2), 10)


def conv_names(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def test_resnet_block_conv_order() -> None:
    model = build_model("resnet20", CIFAR, 10)
    assert conv_names(model.layer2[0]) == ["conv1", "conv2", "shortcut.0"]
    assert conv_names(model.layer2[1]) == ["conv1", "conv2"]
    children = [name for name, _ in model.layer2[0].named_children()]
    assert children == ["conv1", "bn1", "conv2", "bn2", "shortcut"]
    # Whole network: stem first, the linear last; each block's shortcut after its convs.
    names = conv_names(model)
    assert names[:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    assert names.index("layer2.0.shortcut.0") == names.index("layer2.0.conv2") + 1
    assert list(model.named_children())[-1][0] == "fc"


def test_wrn_block_conv_order_and_custom_registration() -> None:
    model = build_model("wrn16_4", CIFAR, 10)
    assert conv_names(model.layer1[0]) == ["conv1", "conv2", "shortcut"]  # 16 -> 64 channels
    assert conv_names(model.layer1[1]) == ["conv1", "conv2"]
    register_model("wrn10_1_test", family="wrn", input_rank=2, description="test")(wide_resnet(10, 1))
    try:
        small = build_model("wrn10_1_test", (3, 8, 8), 10, dropout=0.3)
        assert model_family(small) == "wrn"
        assert small(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    finally:
        MODELS.remove("wrn10_1_test")
    with pytest.raises(PrunelabError, match="6n \\+ 4"):
        wide_resnet(12, 2)


def test_built_models_carry_name_and_family() -> None:
    model = build_model("VGG11", CIFAR, 10)
    assert model_family(model) == "vgg"
    assert model.prunelab_name == "vgg11"
    assert model_family(nn.Linear(2, 2)) == "unknown"


def test_init_follows_documented_scheme() -> None:
    vgg = build_model("vgg11", CIFAR, 10, seed=0)
    assert torch.count_nonzero(vgg.classifier.bias) == 0
    assert abs(vgg.classifier.weight.detach().std().item() - 0.01) < 0.002  # N(0, 0.01)
    bns = [m for m in vgg.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    conv = build_model("resnet56", CIFAR, 10, seed=0).layer3[1].conv1  # 64 -> 64, fan_out = 64 * 9
    assert abs(conv.weight.detach().std().item() - (2 / (64 * 9)) ** 0.5) < 0.005
