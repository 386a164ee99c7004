"""FLOP and parameter counters, pinned to hand-computed values on tiny models, to the authors' counter
(Liu et al. 2019, compute_flops.py) on their ResNet-56, and to Li et al. 2017's Table 1 for the
predefined L1-norm configurations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunelab
from prunelab.errors import PrunelabError
from prunelab.evaluation import count_flops, count_params, flops_by_module
from prunelab.models import build_model
from prunelab.pruning.structured.configs import PREDEFINED

CIFAR = (3, 32, 32)


def tiny_net() -> nn.Sequential:
    """conv3x3(2 -> 3, bias) - BN - ReLU - maxpool 2 - flatten - Linear(12, 5) on (2, 4, 4) inputs."""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


def test_tiny_net_by_hand() -> None:
    net = tiny_net()
    # conv: (3*3*2*2 + 1) * 3 * 4*4 = 37 * 48 = 1,776; BN 2 * 48 = 96; ReLU 48;
    # maxpool: 2*2 * (3*2*2) = 48; linear: 2*12*5 + 5 = 125. Total 2,093.
    by_module = flops_by_module(net, (2, 4, 4))
    assert by_module == {"0": 1_776, "1": 96, "2": 48, "3": 48, "5": 125}
    assert count_flops(net, (2, 4, 4)) == 2_093
    # Li et al.'s "FLOPs": weight multiply-accumulates of conv and linear only: 9*2*3*16 + 12*5 = 924.
    assert count_flops(net, (2, 4, 4), convention="macs") == 864 + 60
    # Parameters: conv 54 + 3, BN 3 + 3, linear 60 + 5 (BN running stats are buffers, not counted).
    assert count_params(net) == 128


def test_nonzero_counts_follow_the_mask() -> None:
    net = tiny_net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)  # no accidental zeros anywhere
        net[0].weight.view(-1)[:20] = 0.0  # 54 -> 34 nonzero conv weights
        net[5].weight.view(-1)[:10] = 0.0  # 60 -> 50 nonzero linear weights
    # conv: (34*2 + 1*3) * 16 = 1,136; linear: 2*50 + 5 = 105; BN, ReLU, pool unchanged (96, 48, 48).
    assert count_flops(net, (2, 4, 4), nonzero_only=True) == 1_136 + 96 + 48 + 48 + 105
    assert count_flops(net, (2, 4, 4), nonzero_only=True, convention="macs") == 34 * 16 + 50
    assert count_flops(net, (2, 4, 4)) == 2_093  # the dense count ignores zeros
    assert count_params(net, nonzero_only=True) == 128 - 30


def test_nonzero_params_with_a_prunelab_mask() -> None:
    model = build_model("mlp", (1, 40), 10, seed=0)
    mask = prunelab.prune(model, "random", 0.25)  # zeroes the pruned weights in place
    assert count_params(model, nonzero_only=True) == count_params(model) - (mask.num_total - mask.num_kept)
    # 40-100-100-10 at density 0.25: linear terms 2 * nnz + out per layer.
    dense = count_flops(model, (1, 40))
    sparse = count_flops(model, (1, 40), nonzero_only=True)
    assert dense - sparse == 2 * (mask.num_total - mask.num_kept)


class FunctionalRelu(nn.Module):
    """The tiny conv net with ReLUs applied functionally and by method, twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv(x))  # 48
        return torch.relu(out + 1).relu_()  # 48 + 48


def test_functional_relus_count_like_modules() -> None:
    counts = flops_by_module(FunctionalRelu(), (2, 4, 4))
    assert counts == {"conv": 9 * 2 * 2 * 3 * 16, "": 3 * 48}


def test_1d_layers_groups_stride_adaptive_pool_and_rows() -> None:
    net = nn.Sequential(
        nn.Conv1d(4, 6, 3, stride=2, groups=2, bias=False),  # L 9 -> 4
        nn.BatchNorm1d(6),
        nn.AvgPool1d(2),  # 4 -> 2
        nn.AdaptiveAvgPool1d(1),  # 2 -> 1: a pool of kernel 2
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    # conv: 3 * (4/2) * 2 * 6 * 4 = 288; BN 2 * 24 = 48; avgpool 2 * 12 = 24; adaptive 2 * 6 = 12;
    # linear 2*6*3 + 3 = 39.
    assert flops_by_module(net, (4, 9)) == {"0": 288, "1": 48, "2": 24, "3": 12, "5": 39}
    # A linear over a (3, 4) example runs on 3 rows: 3 * (2*4*2 + 2) = 54.
    assert count_flops(nn.Linear(4, 2), (3, 4)) == 54


def test_counting_restores_modes_and_leaves_no_hooks() -> None:
    model = build_model("cnn1d", (1, 40), 10, bn=True)
    model.train()
    model.features[1].eval()
    count_flops(model, (1, 40))
    assert model.training and not model.features[1].training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bad_arguments() -> None:
    with pytest.raises(PrunelabError, match="unknown FLOP convention 'mac'; valid choices: macs, rethinking"):
        count_flops(tiny_net(), (2, 4, 4), convention="mac")  # type: ignore[arg-type]
    with pytest.raises(PrunelabError, match="input_shape"):
        count_flops(tiny_net(), (2, 0, 4))


def resnet_a_flops(widths: list[int], classes: int = 10) -> int:
    """Rethinking-convention FLOPs of an option-A CIFAR ResNet on 32x32, by hand (batch 1).

    Stem conv (3*9*2)*16*HW, BN 2*16*HW, ReLU 16*HW; each block (in c, mid m, out p, output map HW):
    conv1 18*c*m*HW, BN 2*m*HW, ReLU m*HW, conv2 18*m*p*HW, BN 2*p*HW, ReLU after the sum p*HW;
    the shortcut's avg-pool and pad are functional and free; pool 64 * 64; fc 2*64*classes + classes.
    """
    total = (54 * 16 + 2 * 16 + 16) * 1024
    n = len(widths) // 3
    c = 16
    for b, m in enumerate(widths):
        p, hw = (16, 1024) if b < n else (32, 256) if b < 2 * n else (64, 64)
        total += (18 * c * m + 3 * m + 18 * m * p + 3 * p) * hw
        c = p
    return total + 64 * 64 + 2 * 64 * classes + classes


def test_resnet56_matches_the_authors_counter() -> None:
    # compute_flops.py (Liu et al. 2019) on their cifar/l1-norm-pruning ResNet-56 gives 252,572,938
    # for the full network and 226,390,090 for the ResNet-56-A cfg (run on the authors' model code).
    full = build_model("resnet56", CIFAR, 10, shortcut="A")
    config = PREDEFINED.get("resnet56-a")
    widths = config.pruned_options(full)["widths"]
    pruned = build_model("resnet56", CIFAR, 10, shortcut="A", widths=widths)
    assert count_flops(full, CIFAR) == resnet_a_flops([16] * 9 + [32] * 9 + [64] * 9) == 252_572_938
    assert count_flops(pruned, CIFAR) == resnet_a_flops(widths) == 226_390_090


def test_vgg16_differs_from_the_authors_counter_only_by_pool_and_bn1d() -> None:
    # Authors' counter on their VGG-16: 627,880,970; here +2,048 (adaptive pool, 512 * 2x2) + 1,024 (BN1d).
    model = build_model("vgg16", CIFAR, 10, classifier="rethinking", bn_gamma=0.5)
    counts = flops_by_module(model, CIFAR)
    assert counts["pool"] == 2_048 and counts["classifier.1"] == 1_024
    assert count_flops(model, CIFAR) == 627_880_970 + 3_072


#: Li et al. 2017, Table 1 (CIFAR-10): params and "FLOPs" (multiply-accumulates) of the unpruned and
#: pruned networks, with the reductions in per cent. The abstract's "VGG-16 by up to 34%, ResNet-110
#: by up to 38%" is verified; the other digits are as recalled from the table.
LI_TABLE_1 = {
    "vgg16-a": (1.5e7, 5.4e6, 64.0, 3.13e8, 2.06e8, 34.2),
    "resnet56-a": (8.5e5, 7.7e5, 9.4, 1.25e8, 1.12e8, 10.4),
    "resnet56-b": (8.5e5, 7.3e5, 13.7, 1.25e8, 9.09e7, 27.6),
    "resnet110-a": (1.72e6, 1.68e6, 2.3, 2.53e8, 2.13e8, 15.9),
    "resnet110-b": (1.72e6, 1.16e6, 32.4, 2.53e8, 1.55e8, 38.6),
}

#: What prunelab counts for them (exact): params full, pruned; MACs full, pruned.
PINNED = {
    "vgg16-a": (14_987_722, 5_397_034, 313_463_808, 206_279_680),
    "resnet56-a": (853_018, 773_336, 125_485_696, 112_435_840),
    "resnet56-b": (853_018, 735_712, 125_485_696, 90_907_264),
    "resnet110-a": (1_727_962, 1_688_522, 252_887_680, 212_779_648),
    "resnet110-b": (1_727_962, 1_168_424, 252_887_680, 155_124_352),
}


@pytest.mark.parametrize("name", sorted(LI_TABLE_1))
def test_predefined_configs_match_li_et_al_table_1(name: str) -> None:
    config = PREDEFINED.get(name)
    full = build_model(config.model, CIFAR, 10, **config.base_options)
    pruned = build_model(config.model, CIFAR, 10, **config.base_options, **config.pruned_options(full))
    got = (
        count_params(full),
        count_params(pruned),
        count_flops(full, CIFAR, convention="macs"),
        count_flops(pruned, CIFAR, convention="macs"),
    )
    assert got == PINNED[name]
    params_full, params_pruned, params_cut, macs_full, macs_pruned, macs_cut = LI_TABLE_1[name]
    # The table's parameter counts are cut to 2-3 digits (7.36e5 is printed 7.3e5): within 1 %.
    assert abs(got[0] / params_full - 1) < 0.01 and abs(got[1] / params_pruned - 1) < 0.01
    assert f"{got[2]:.3g}" == f"{macs_full:.3g}"
    assert f"{got[3]:.3g}" == f"{macs_pruned:.3g}"
    # Reductions within 0.1 point of the table (which sometimes truncates: 38.66 % is printed 38.6).
    assert abs(100 * (1 - got[3] / got[2]) - macs_cut) < 0.1
    if name != "resnet56-a":  # 9.34 % exactly; the table's 9.4 % is 1 - 7.7e5 / 8.5e5 of rounded counts
        assert abs(100 * (1 - got[1] / got[0]) - params_cut) < 0.1


class ValueDependent(nn.Module):
    """A forward that branches on values: cannot run on shape-only tensors, so counting runs it for real."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if bool(x.sum() > -1e9) else x


def test_value_dependent_forward_falls_back_to_a_real_pass() -> None:
    assert count_flops(ValueDependent(), (4,)) == 2 * 4 * 2 + 2
