"""The papers' models as their authors' code builds them: the ``init`` schemes (empirical std against
each formula), Su et al.'s VGG-19 and ResNets, PreResNet-164 and DenseNet-40 (pinned counts), and the
default path left bit-identical to before the ``init`` option existed (run hashes rely on it)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models import MODELS, build_model
from prunelab.models._common import INIT_SCHEMES
from prunelab.models.preresnet import PreActBottleneck
from prunelab.models.resnet import BasicBlock, Bottleneck
from prunelab.models.selection import ChannelSelection

CIFAR = (3, 32, 32)
SMALL = (3, 8, 8)
WEIGHTED = (nn.Conv2d, nn.Linear)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prunable_weights(model: nn.Module) -> tuple[int, int]:
    """(Conv/Linear weight entries, number of such layers); biases, BN excluded."""
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED)]
    return sum(m.weight.numel() for m in layers), len(layers)


def digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# -- the default path is unchanged ----------------------------------------------------------------

#: sha256 (first 16 hex digits) of ``build_model(name, (3, 8, 8), 10, seed=7, **options)``'s state dict,
#: recorded with the code before the ``init`` option existed (commit e7ae734), torch 2.13.0.
BEFORE_INIT_OPTION = [
    ("vgg11", {}, "e14ad2bb5739be39"),
    ("vgg16", {"width": 0.25, "classifier": "rethinking", "bn_gamma": 0.5}, "315147244f021979"),
    ("vgg19", {"width": 0.25, "conv_bias": True}, "26e634fd59d2f88e"),
    ("resnet20", {}, "092cc959dc7cbdd9"),
    ("resnet32", {"width": 32}, "04568664506527be"),
    ("resnet56", {"width": 4, "shortcut": "A"}, "63634867e82a75db"),
]


@pytest.mark.parametrize(("name", "options", "expected"), BEFORE_INIT_OPTION)
def test_default_init_is_bit_identical_to_before(name: str, options: dict[str, Any], expected: str) -> None:
    default = build_model(name, SMALL, 10, seed=7, **options)
    # the default spelled out is the same draw, bit for bit (an omitted option is not hashed)
    scheme = (
        "conv_fan_out_linear_normal_0.01"
        if name.startswith("vgg")
        else "conv_fan_out_linear_default_zero_bias"
    )
    explicit = build_model(name, SMALL, 10, seed=7, init=scheme, **options)
    state, again = default.state_dict(), explicit.state_dict()
    assert list(state) == list(again)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert "init" not in default.prunelab_build["options"]
    if not torch.__version__.startswith("2.13."):
        pytest.skip(f"digests recorded with torch 2.13.0, running {torch.__version__}")
    assert digest(default) == expected


# -- init schemes against their formulas ----------------------------------------------------------


def fan_in(module: nn.Conv2d | nn.Linear) -> int:
    return module.weight[0].numel()


def fan_out(module: nn.Conv2d) -> int:
    return module.out_channels * module.weight[0, 0].numel()


def expected_weight_std(module: nn.Conv2d | nn.Linear, scheme: str) -> float:
    """Each scheme's formula (see INIT_SCHEMES); PyTorch's default U(-b, b), b = 1/sqrt(fan_in), has
    std b / sqrt(3)."""
    default = 1.0 / math.sqrt(3 * fan_in(module))
    conv = isinstance(module, nn.Conv2d)
    if scheme == "torch_default":
        return default
    if scheme == "conv_linear_fan_in":
        return math.sqrt(2 / fan_in(module))
    if conv:
        assert isinstance(module, nn.Conv2d)
        return (
            math.sqrt(2 / fan_in(module))
            if scheme == "conv_fan_in_linear_normal_0.01"
            else math.sqrt(2 / fan_out(module))
        )
    return 0.01 if scheme.endswith("normal_0.01") else default


def zero_bias(module: nn.Conv2d | nn.Linear, scheme: str) -> bool:
    if scheme in ("torch_default", "conv_linear_fan_in"):
        return False
    return isinstance(module, nn.Conv2d) or scheme != "conv_fan_out_linear_default"


#: (model, options): a VGG with conv biases and C_in != C_out; basic and bottleneck ResNets; the
#: BN-before-conv nets. Narrow and built at 8x8 (layer sizes do not depend on the image size).
INIT_MODELS = [
    ("vgg11", {"conv_bias": True, "width": 0.25}),
    ("su_resnet32", {"width": 8}),
    ("su_resnet56", {"width": 8}),
    ("preresnet164", {"width": 8, "bn_gamma": 1.0}),
    ("densenet40", {"growth": 6, "bn_gamma": 1.0}),
]


@pytest.mark.parametrize("scheme", sorted(INIT_SCHEMES))
@pytest.mark.parametrize(("name", "options"), INIT_MODELS)
def test_init_scheme_matches_its_formula(name: str, options: dict[str, Any], scheme: str) -> None:
    model = build_model(name, SMALL, 10, seed=0, init=scheme, **options)
    checked = 0
    for module in model.modules():
        if isinstance(module, WEIGHTED):
            weight = module.weight.detach()
            if weight.numel() >= 4096:  # sample std within 1/sqrt(2 * 4096) = 1.1%: 5% is safe
                assert weight.std().item() == pytest.approx(expected_weight_std(module, scheme), rel=0.05)
                assert abs(weight.mean().item()) < 0.1 * expected_weight_std(module, scheme)
                checked += 1
            if module.bias is not None:
                bias = module.bias.detach()
                if zero_bias(module, scheme):
                    assert torch.count_nonzero(bias) == 0
                else:  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                    assert torch.count_nonzero(bias) == bias.numel()
                    assert bias.abs().max().item() <= 1 / math.sqrt(fan_in(module))
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert checked >= 3
    assert model.prunelab_build["options"]["init"] == scheme


def test_init_std_example_by_hand() -> None:
    # Su et al.'s VGG-19: features.0 is conv 3 -> 64 (fan_in 27), features.3 conv 64 -> 64 (576).
    model = build_model("vgg19", SMALL, 10, seed=0, conv_bias=True, init="conv_fan_in_linear_normal_0.01")
    conv = model.features[7]  # conv 64 -> 128: fan_in 576 -> std sqrt(2 / 576) = 0.0589
    assert conv.weight.std().item() == pytest.approx(0.0589, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
    default = build_model("vgg19", SMALL, 10, seed=0)  # fan_out 1152 -> sqrt(2 / 1152) = 0.0417
    assert default.features[7].weight.std().item() == pytest.approx(0.0417, rel=0.05)
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(model.classifier.bias) == 0


def test_unknown_init_names_the_choices() -> None:
    with pytest.raises(PrunelabError, match=r"unknown vgg11 init 'he'; valid choices: conv_fan_in_linear"):
        build_model("vgg11", SMALL, 10, init="he")
    with pytest.raises(PrunelabError, match="unknown su_resnet32 init 'xavier'.*torch_default"):
        build_model("su_resnet32", SMALL, 10, init="xavier")


# -- Su et al. 2020 -------------------------------------------------------------------------------


def test_su_vgg19_prunable_weights_and_init() -> None:
    """Su et al.'s ``vgg19_bn`` on CIFAR-10: 16 conv (with biases) + 1 linear, 20,024,000 prunable
    weights (papers.md 1.3, derived from ``models/vgg.py``)."""
    model = build_model("vgg19", CIFAR, 10, seed=0, conv_bias=True, init="conv_fan_in_linear_normal_0.01")
    assert prunable_weights(model) == (20_024_000, 17)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None and torch.count_nonzero(c.bias) == 0 for c in convs)


def test_su_resnet32_counts_and_order() -> None:
    """Su et al.'s ResNet-32 on CIFAR-10: 33 convs (31 + 2 shortcut convs) + fc, 1,855,584 prunable
    weights (papers.md 1.3, derived from ``models/resnet.py``)."""
    model = build_model("su_resnet32", CIFAR, 10, seed=0)
    assert prunable_weights(model) == (1_855_584, 34)
    assert n_params(model) == 1_860_522  # = resnet32 at width 32, option B: the same network
    twin = build_model("resnet32", CIFAR, 10, width=32)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in twin.state_dict().items()
    }
    assert all(isinstance(b, BasicBlock) for s in (model.layer1, model.layer2, model.layer3) for b in s)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert convs[convs.index("layer2.0.conv2") + 1] == "layer2.0.shortcut.0"  # conv1, conv2, downsample
    assert [
        m.out_channels for m in (model.layer1[0].conv1, model.layer2[0].conv1, model.layer3[0].conv1)
    ] == [
        32,
        64,
        128,
    ]
    # Su et al.'s init: fc N(0, 0.01), zero bias
    assert torch.count_nonzero(model.fc.bias) == 0
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)


def bottleneck_formula(depth: int, width: int, classes: int) -> tuple[int, int]:
    """(total parameters, prunable weights) of Su et al.'s bottleneck ResNet (depth >= 54)."""
    n = (depth - 2) // 6
    weights, bn = 3 * width * 9, 2 * width
    c_in = width
    for planes in (width, 2 * width, 4 * width):
        for block in range(n):
            weights += c_in * planes + 9 * planes * planes + planes * 4 * planes
            bn += 2 * (planes + planes + 4 * planes)
            if block == 0:  # the width (and in stages 2, 3 the stride) changes: 1x1 conv + BN
                weights += c_in * 4 * planes
                bn += 2 * 4 * planes
            c_in = 4 * planes
    weights += 16 * width * classes
    return weights + bn + classes, weights


def test_su_resnet56_is_a_bottleneck_net() -> None:
    model = build_model("su_resnet56", CIFAR, 10, seed=0)
    blocks = [b for s in (model.layer1, model.layer2, model.layer3) for b in s]
    assert len(blocks) == 27 and all(isinstance(b, Bottleneck) for b in blocks)  # n = (56 - 2) / 6 = 9
    assert bottleneck_formula(56, 32, 10) == (3_446_058, 3_420_000)
    assert n_params(model) == 3_446_058
    assert prunable_weights(model) == (3_420_000, 86)  # stem + 27 * 3 + 3 shortcuts + fc
    assert [n for n, m in model.layer2[0].named_modules() if isinstance(m, nn.Conv2d)] == [
        "conv1",
        "conv2",
        "conv3",
        "shortcut.0",
    ]
    assert model.fc.in_features == 512  # 4 * 128
    assert build_model("su_resnet56", SMALL, 10, width=2)(torch.randn(2, *SMALL)).shape == (2, 10)


def test_su_resnet_options() -> None:
    small = build_model("su_resnet56", SMALL, 10, width=2, blocks=[1, 1, 1], widths=[1, 2, 3, 4, 5, 6])
    assert [
        (b.conv1.out_channels, b.conv2.out_channels)
        for b in (small.layer1[0], small.layer2[0], small.layer3[0])
    ] == [
        (1, 2),
        (3, 4),
        (5, 6),
    ]
    assert small.structure_options() == {"widths": [1, 2, 3, 4, 5, 6], "blocks": [1, 1, 1]}
    with pytest.raises(PrunelabError, match=r"widths must give 6 widths \(each block's conv1 and conv2\)"):
        build_model("su_resnet56", SMALL, 10, width=2, blocks=[1, 1, 1], widths=[1, 2, 3])
    with pytest.raises(PrunelabError, match="bad option"):
        build_model("su_resnet32", SMALL, 10, shortcut="A")  # Su et al. use projections only


# -- Liu et al. 2019's network-slimming models ----------------------------------------------------


def preresnet_formula(depth: int, width: int, classes: int) -> int:
    """Parameters of the pre-activation bottleneck ResNet (bare 1x1 conv shortcuts, no BN on them)."""
    n = (depth - 2) // 9
    total, c_in = 3 * width * 9, width
    for planes in (width, 2 * width, 4 * width):
        for block in range(n):
            total += (
                2 * c_in + c_in * planes + 2 * planes + 9 * planes * planes + 2 * planes + 4 * planes * planes
            )
            if block == 0:
                total += c_in * 4 * planes
            c_in = 4 * planes
    return total + 2 * c_in + c_in * classes + classes


def test_preresnet164_parameter_count() -> None:
    """PreResNet-164, 1,703,258 parameters on CIFAR-10 and 1,726,388 on CIFAR-100: derived from Liu et
    al.'s ``network-slimming/models/preresnet.py`` (cfg 16/64/32/128/64/256); the network slimming
    paper's Table 1 rounds them to 1.70M and 1.73M."""
    for classes, total in ((10, 1_703_258), (100, 1_726_388)):
        assert preresnet_formula(164, 16, classes) == total
        assert n_params(build_model("preresnet164", CIFAR, classes)) == total
    model = build_model("preresnet164", SMALL, 10, seed=0)
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [18, 18, 18]
    block = model.layer1[0]
    assert isinstance(block, PreActBottleneck)
    assert [n for n, _ in block.named_children()] == [
        "bn1",
        "select",
        "conv1",
        "bn2",
        "conv2",
        "bn3",
        "conv3",
        "shortcut",
    ]
    assert isinstance(block.shortcut, nn.Conv2d) and isinstance(model.layer1[1].shortcut, nn.Identity)
    assert (model.bn.num_features, model.fc.in_features) == (256, 256)
    # Liu et al.'s init: BN scales 0.5, fc left at PyTorch's default (nonzero bias)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 0.5) and torch.all(m.bias == 0) for m in bns)
    assert torch.count_nonzero(model.fc.bias) == 10


def densenet_formula(depth: int, growth: int, stem: int, classes: int) -> int:
    n = (depth - 4) // 3
    total, c = 3 * stem * 9, stem
    for block in range(3):
        for _ in range(n):
            total += 2 * c + c * growth * 9
            c += growth
        if block < 2:
            total += 2 * c + c * c
    return total + 2 * c + c * classes + classes


def test_densenet40_parameter_count() -> None:
    """DenseNet-40 (growth 12): 1,059,298 parameters on CIFAR-10 with Liu et al.'s PyTorch code's
    2 * growth = 24 stem filters (``network-slimming/models/densenet.py``), derived here. The network
    slimming paper's 1.02M (CIFAR-10) / 1.06M (CIFAR-100) are Huang et al.'s Torch net with a
    16-filter stem: ``stem=16`` gives 1,019,722 / 1,060,132 [paper values recalled, UNVERIFIED]."""
    assert densenet_formula(40, 12, 24, 10) == 1_059_298
    assert n_params(build_model("densenet40", CIFAR, 10)) == 1_059_298
    assert densenet_formula(40, 12, 16, 10) == 1_019_722
    assert n_params(build_model("densenet40", CIFAR, 10, stem=16)) == 1_019_722
    assert n_params(build_model("densenet40", CIFAR, 100, stem=16)) == 1_060_132
    model = build_model("densenet40", SMALL, 10, seed=0)
    assert [len(model.dense1), len(model.dense2), len(model.dense3)] == [12, 12, 12]
    assert model.trans1.conv1.out_channels == 168 and model.fc.in_features == 456  # 24 + 3 * 12 * 12
    assert sum(isinstance(m, ChannelSelection) for m in model.modules()) == 39  # 36 layers + 2 + final
    assert MODELS.get("densenet40").family == "vgg"


def test_selected_option_narrows_the_reading_layer() -> None:
    model = build_model("densenet40", SMALL, 10, growth=2, selected=[[0, 2], *[None] * 38])
    assert model.dense1[0].select.selected() == [0, 2]
    assert model.dense1[0].conv1.in_channels == 2 and model.dense1[0].bn1.num_features == 4
    assert model(torch.randn(2, *SMALL)).shape == (2, 10)
    assert model.structure_options()["selected"][0] == [0, 2]
    with pytest.raises(PrunelabError, match="selected must give 39 entries"):
        build_model("densenet40", SMALL, 10, growth=2, selected=[[0]])
    with pytest.raises(PrunelabError, match=r"selected\[0\] must be a non-empty subset of 0\.\.3"):
        build_model("densenet40", SMALL, 10, growth=2, selected=[[4], *[None] * 38])


def test_channel_selection_module() -> None:
    select = ChannelSelection(4)
    x = torch.randn(2, 4, 3, 3)
    assert select.full and select(x) is x
    select.select_([3, 1])
    assert select.selected() == [1, 3] and select.indexes.tolist() == [False, True, False, True]
    assert torch.equal(select(x), x[:, [1, 3]])
    assert "indexes" not in select.state_dict()  # architecture (option ``selected``), not a weight
    with pytest.raises(PrunelabError, match=r"non-empty subset of 0\.\.3"):
        select.select_([])
    with pytest.raises(PrunelabError, match=r"non-empty subset of 0\.\.3"):
        select.select_([4])
