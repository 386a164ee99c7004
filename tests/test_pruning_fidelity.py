"""Faithful to the authors' code (issue "Faithful to the authors' code"): GraSP's class-sorted halves
for every data source, the smart-ratio variant of a user's ResNet, SNIP over several iterations,
Su et al.'s smart-ratio ablations, and the scoring options that move a mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunelab
from prunelab.data import load_dataset
from prunelab.errors import PrunelabError
from prunelab.pruning import Mask, PruningWarning
from prunelab.pruning.allocation import allocate, select_top
from prunelab.pruning.api import scoring_batches
from prunelab.pruning.prunable import Layer, find_residual_addition, prunable_layers
from prunelab.seeding import generator


@pytest.fixture(scope="module")
def images() -> prunelab.DataBundle:
    return load_dataset("synthetic", num_classes=4, input_shape=(1, 8, 8))


def cnn() -> nn.Module:
    """cnn2d with BatchNorm: batch statistics make a mask depend on which examples share a batch."""
    return prunelab.build_model("cnn2d", (1, 8, 8), 4, seed=0, width=4)


# -- 7. GraSP's halves are classes sorted, whatever the data source -----------------------------------


def test_grasp_halves_are_the_same_for_bundle_tuple_and_loader(images: prunelab.DataBundle) -> None:
    options = {"samples_per_class": 3}
    from_bundle = prunelab.prune(cnn(), "grasp", 0.2, data=images, options=options)
    # The very samples the bundle draws (sorted by class: 0,0,0,1,1,1,...), handed over interleaved
    # (0,1,2,3,0,1,...), which keeps each class's own order. Halved unsorted, the first half would
    # hold classes 0-3 and 0-1 instead of classes 0-1.
    x, y = images.per_class_sample(3, generator(0, "scoring_data"))
    interleave = torch.tensor([0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])
    xi, yi = x[interleave], y[interleave]
    assert yi.tolist() == [0, 1, 2, 3] * 3
    from_tuple = prunelab.prune(cnn(), "grasp", 0.2, data=(xi, yi), options=options)
    loader = DataLoader(TensorDataset(xi, yi), batch_size=5)
    from_loader = prunelab.prune(cnn(), "grasp", 0.2, data=loader, options=options)
    assert from_bundle == from_tuple == from_loader


# -- 8. smart ratios on a user's ResNet ------------------------------------------------------------------


class TinyResNet(nn.Module):
    """stem conv -> one basic block (conv1, conv2, ``out += x``) -> global pool -> fc."""

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.offset = nn.Parameter(torch.zeros(1, 4, 1, 1))
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        out = self.conv2(F.relu(self.conv1(x))) + self.offset  # a parameter, not a residual
        if self.residual:
            out += x
        pooled = F.relu(out).mean((2, 3))
        return self.fc(pooled.reshape(pooled.size(0), -1))  # size(0): shape arithmetic only


class Untraceable(TinyResNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return super().forward(x)


def test_residual_addition_is_found_by_tracing() -> None:
    # "add" is ``+ self.offset`` (a parameter); "add_1" is ``out += x``, which fx records as an add
    assert find_residual_addition(TinyResNet(residual=True)) == (True, "add_1")
    assert find_residual_addition(TinyResNet(residual=False)) == (True, None)
    assert find_residual_addition(Untraceable()) == (False, None)


def test_smart_ratio_on_a_user_resnet_uses_and_records_the_resnet_variant(tmp_path: Path) -> None:
    layers = prunable_layers(TinyResNet())
    resnet = allocate(layers, 0.3, "smart_ratio", family="resnet")
    vgg = allocate(layers, 0.3, "smart_ratio", family="vgg")
    assert resnet != vgg
    mask = prunelab.prune(TinyResNet(), "random", 0.3, allocation="smart_ratio")
    assert mask.counts() == resnet
    assert mask.info["smart_ratio_variant"] == "resnet"
    assert mask.info["smart_ratio_variant_source"] == "residual addition 'add_1' found by torch.fx"
    assert Mask.load(mask.save(tmp_path / "m.safetensors")).info == mask.info
    plain = prunelab.prune(TinyResNet(residual=False), "random", 0.3, allocation="smart_ratio")
    assert plain.counts() == vgg and plain.info["smart_ratio_variant"] == "vgg"
    named = prunelab.prune(
        TinyResNet(residual=False), "random", 0.3, allocation="smart_ratio", options={"variant": "resnet"}
    )
    assert named.counts() == resnet and named.info["smart_ratio_variant_source"] == "option variant"
    with pytest.warns(PruningWarning, match="could not trace"):
        guessed = prunelab.prune(Untraceable(), "random", 0.3, allocation="smart_ratio")
    assert guessed.counts() == vgg
    registry = prunelab.prune(
        prunelab.build_model("resnet20", (3, 8, 8), 10, seed=0, width=4),
        "random",
        0.3,
        allocation="smart_ratio",
    )
    assert registry.info["smart_ratio_variant_source"] == "model family 'resnet'"


def test_smart_ratio_options_are_validated() -> None:
    with pytest.raises(
        PrunelabError, match="unknown smart-ratio variant 'resnt'; valid choices: auto, resnet, vgg"
    ):
        prunelab.prune(TinyResNet(), "random", 0.3, allocation="smart_ratio", options={"variant": "resnt"})
    with pytest.raises(PrunelabError, match=r"linear_keep_ratio must be in \[0, 1\], got 1.5"):
        prunelab.prune(
            TinyResNet(), "random", 0.3, allocation="smart_ratio", options={"linear_keep_ratio": 1.5}
        )
    with pytest.raises(
        PrunelabError, match="unknown option 'variant' for method 'random'; valid options: rounds"
    ):
        prunelab.prune(TinyResNet(), "random", 0.3, options={"variant": "resnet"})  # uniform has no variant


# -- 9. SNIP over several iterations -------------------------------------------------------------------


def hand_snip_mask(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], density: float
) -> Mask:
    """|w * sum_i dL_i/dw| over the batches (BN in train mode), global top-k."""
    layers = prunable_layers(model)
    params = dict(model.named_parameters())
    weights = [params[layer.name] for layer in layers]
    model.train()
    total = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        for acc, g in zip(total, torch.autograd.grad(F.cross_entropy(model(x), y), weights), strict=True):
            acc.add_(g)
    scores = {layer.name: (w.detach() * g).abs() for layer, w, g in zip(layers, weights, total, strict=True)}
    return select_top(layers, scores, allocate(layers, density, "global", scores=scores))


def test_snip_iterations_accumulate_gradients_of_fresh_draws(images: prunelab.DataBundle) -> None:
    once = {"samples_per_class": 2}
    today = prunelab.prune(cnn(), "snip", 0.2, data=images, options=once)
    assert prunelab.prune(cnn(), "snip", 0.2, data=images, options={**once, "iterations": 1}) == today
    gen = generator(0, "scoring_data")
    draws = [images.per_class_sample(2, gen) for _ in range(3)]
    assert hand_snip_mask(cnn(), draws[:1], 0.2) == today
    three = prunelab.prune(cnn(), "snip", 0.2, data=images, options={**once, "iterations": 3})
    assert three == hand_snip_mask(cnn(), draws, 0.2)
    assert three != today


def test_loader_iterations_take_successive_examples_of_each_class() -> None:
    x = torch.arange(10, dtype=torch.float).view(10, 1)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    batches, _ = scoring_batches(loader, 2, torch.Generator(), torch.device("cpu"), iterations=2)
    assert [(b[0].flatten().tolist(), b[1].tolist()) for b in batches] == [
        ([0.0, 1.0, 2.0, 4.0], [0, 1, 0, 1]),
        ([3.0, 5.0, 6.0, 7.0], [0, 1, 0, 1]),
    ]
    with pytest.raises(PrunelabError, match="iterations=2 needs fresh examples each iteration"):
        prunelab.prune(cnn(), "snip", 0.2, data=(x.view(10, 1, 1, 1), y), options={"iterations": 2})


# -- 10. smart-ratio ablations -------------------------------------------------------------------------

# Su et al.'s toy: A conv (4, 2, 3, 3) N=72; B conv (8, 4, 3, 3) N=288; C linear (10, 8) N=80; L = 3.
A = Layer("a.weight", "conv", (4, 2, 3, 3), 0)
B = Layer("b.weight", "conv", (8, 4, 3, 3), 1)
C = Layer("c.weight", "linear", (10, 8), 2)
TOY = [A, B, C]


def toy_counts(rule: str, density: float, **options: object) -> list[int]:
    got = allocate(TOY, density, rule, options=options)
    return [got[layer.name] for layer in TOY]


@pytest.mark.parametrize(
    ("rule", "variant", "expected"),
    [
        # d = 0.25: int(440 * 0.25) = 110; the classifier keeps int(0.3 * 80) = 24; G = 86.
        # quadratic q = (12, 6): TEST = 864 + 1728 = 2592; keep = 86 q / 2592 -> 28.67, 57.33.
        ("smart_ratio", "resnet", [28, 57, 24]),
        # VGG: q / l^2 = (12, 1.5): TEST = 864 + 432 = 1296 -> 57.33, 28.67.
        ("smart_ratio", "vgg", [57, 28, 24]),
        # linear decay q = (2+1, 1+1) = (3, 2): TEST = 216 + 576 = 792 -> 23.45, 62.55.
        ("smart_ratio_linear_decay", "resnet", [23, 62, 24]),
        # ... / l^2 = (3, 0.5): TEST = 216 + 144 = 360 -> 51.6, 34.4.
        ("smart_ratio_linear_decay", "vgg", [51, 34, 24]),
        # ascend q = l^2 + l = (2, 6): TEST = 144 + 1728 = 1872 -> 6.62, 79.38.
        ("smart_ratio_ascend", "resnet", [6, 79, 24]),
        # ... / l^2 = (2, 1.5): TEST = 144 + 432 = 576 -> 21.5, 64.5.
        ("smart_ratio_ascend", "vgg", [21, 64, 24]),
        # cubic q = (27, 8): TEST = 1944 + 2304 = 4248 -> 39.36, 46.64.
        ("smart_ratio_cubic", "resnet", [39, 46, 24]),
        # ... / l^2 = (27, 2): TEST = 1944 + 576 = 2520 -> 66.34, 19.66.
        ("smart_ratio_cubic", "vgg", [66, 19, 24]),
        # uniform: every conv keeps G / (440 - 80) = 0.23889 -> 17.2, 68.8, whatever the variant.
        ("smart_ratio_uniform", "resnet", [17, 68, 24]),
        ("smart_ratio_uniform", "vgg", [17, 68, 24]),
    ],
)
def test_smart_ratio_ablations_by_hand(rule: str, variant: str, expected: list[int]) -> None:
    assert toy_counts(rule, 0.25, variant=variant) == expected


def test_linear_keep_ratio_option_by_hand() -> None:
    # d = 0.5, classifier int(0.1 * 80) = 8: G = 220 - 8 = 212; resnet q = (12, 6), TEST = 2592:
    # keep_A = 212 * 12 / 2592 * 72 = 70.67, keep_B = 212 * 6 / 2592 * 288 = 141.33.
    assert toy_counts("smart_ratio", 0.5, variant="resnet", linear_keep_ratio=0.1) == [70, 141, 8]
    assert toy_counts("smart_ratio", 0.5, variant="resnet") == [65, 130, 24]  # the default 0.3


def test_allocation_options_reach_the_rule_through_prune() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)  # 40-100-100-10, family mlp -> vgg
    mask = prunelab.prune(
        model,
        "random",
        0.1,
        allocation="smart_ratio_cubic",
        options={"linear_keep_ratio": 0.5, "variant": "resnet"},
    )
    layers = prunable_layers(model)
    assert mask.counts() == allocate(
        layers, 0.1, "smart_ratio_cubic", options={"linear_keep_ratio": 0.5, "variant": "resnet"}
    )
    assert mask.counts()["layers.4.weight"] == 500
    assert mask.info["smart_ratio_decay"] == "cubic" and mask.info["linear_keep_ratio"] == 0.5


# -- 11. scoring options that move a mask ---------------------------------------------------------------


def test_snip_bn_mode_eval_scores_with_running_statistics(images: prunelab.DataBundle) -> None:
    options = {"samples_per_class": 2}
    train = prunelab.prune(cnn(), "snip", 0.2, data=images, options=options)
    evaluated = prunelab.prune(cnn(), "snip", 0.2, data=images, options={**options, "bn_mode": "eval"})
    assert train != evaluated
    model = cnn()
    model.eval()  # hand: the same gradients with BN normalising by its running (initial 0/1) statistics
    layers = prunable_layers(model)
    params = dict(model.named_parameters())
    x, y = images.per_class_sample(2, generator(0, "scoring_data"))
    weights = [params[layer.name] for layer in layers]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    scores = {layer.name: (w.detach() * g).abs() for layer, w, g in zip(layers, weights, grads, strict=True)}
    assert evaluated == select_top(layers, scores, allocate(layers, 0.2, "global", scores=scores))
    with pytest.raises(PrunelabError, match="option bn_mode must be one of train, eval; got 'test'"):
        prunelab.prune(cnn(), "snip", 0.2, data=images, options={"bn_mode": "test"})


def test_grasp_reinit_linear_scores_a_xavier_copy_and_leaves_the_model(images: prunelab.DataBundle) -> None:
    options = {"samples_per_class": 2}
    plain = prunelab.prune(cnn(), "grasp", 0.3, data=images, options=options)
    model = cnn()
    before = model.classifier.weight.detach().clone()
    reinit = prunelab.prune(model, "grasp", 0.3, data=images, options={**options, "reinit_linear": True})
    assert reinit != plain
    kept = reinit["classifier.weight"]
    assert torch.equal(model.classifier.weight.detach()[kept], before[kept])  # only the copy was redrawn


def test_synflow_count_and_tie_rules_by_hand() -> None:
    # 1 -> 2 -> 1 linear net of ones: each weight lies on exactly one path of value 1, so all four
    # SynFlow scores tie at 1.
    def ones() -> nn.Module:
        model = nn.Sequential(nn.Linear(1, 2, bias=False), nn.Linear(2, 1, bias=False))
        with torch.no_grad():
            for layer in model:
                layer.weight.fill_(1.0)
        return model

    def prune(density: float, **options: object) -> Mask:
        return prunelab.prune(ones(), "synflow", density, input_shape=(1,), options={"rounds": 1, **options})

    # N = 4 at d = 0.8: nearest keeps round(3.2) = 3; prune_floor keeps 4 - int(0.8) = 4.
    assert prune(0.8).num_kept == 3
    assert prune(0.8, count_rule="prune_floor").num_kept == 4
    # d = 0.75: index keeps 3, the tie going to the earlier layer and lower index; prune_ties prunes
    # every weight at or below the 1st-smallest score, and all four tie.
    assert [t.flatten().tolist() for t in prune(0.75).values()] == [[True, True], [True, False]]
    with pytest.warns(PruningWarning, match="layer collapse"):
        assert prune(0.75, tie_rule="prune_ties").num_kept == 0
    with pytest.raises(PrunelabError, match="option tie_rule must be one of index, prune_ties; got 'random'"):
        prune(0.75, tie_rule="random")
