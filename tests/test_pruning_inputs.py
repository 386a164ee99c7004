"""What prune() accepts and refuses (issue "Honest, reproducible results"): input shapes only where a
forward pass needs one, non-finite scores, trained-weights methods at init, layer collapse, and
attention layers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunelab
from prunelab.data import load_dataset
from prunelab.errors import PrunelabError
from prunelab.pruning import Mask, PruningWarning
from prunelab.pruning.allocation import AllocationContext, allocate
from prunelab.pruning.methods import METHODS
from prunelab.pruning.prunable import prunable_layers


@pytest.fixture(scope="module")
def data() -> prunelab.DataBundle:
    return load_dataset("synthetic", num_classes=4, input_shape=(1, 16))


def plain() -> nn.Module:
    """A model not built by prunelab: it carries no input shape."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


# -- 1. the input shape is asked for only where a forward pass needs one ---------------------------


def test_data_free_methods_on_a_plain_model_need_no_shape() -> None:
    random = prunelab.prune(plain(), "random", 0.1, allocation="smart_ratio")
    assert random.info["smart_ratio_variant"] == "vgg"
    trained = plain()
    magnitude = prunelab.prune(trained, "magnitude", 0.2)
    assert magnitude.num_kept == round(0.2 * magnitude.num_total)


def test_synflow_takes_the_shape_from_any_data_form(data: prunelab.DataBundle) -> None:
    reference = prunelab.prune(plain(), "synflow", 0.2, input_shape=(1, 16), options={"rounds": 3})
    x, y = data.train_x[:8], data.train_y[:8]
    forms = [data, (x, y), DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)]
    for form in forms:
        state = torch.get_rng_state()
        mask = prunelab.prune(plain(), "synflow", 0.2, data=form, options={"rounds": 3})
        assert mask == reference
        assert torch.equal(torch.get_rng_state(), state)  # a shuffling loader is not iterated
    with pytest.raises(PrunelabError, match=r"'synflow' runs the network without data.*input_shape=") as info:
        prunelab.prune(plain(), "synflow", 0.2)
    assert "\n" not in str(info.value)


def test_user_method_declaring_the_shape_gets_it_or_a_clear_error(data: prunelab.DataBundle) -> None:
    seen: list[object] = []

    @prunelab.register_method("test_shape_user", needs_input_shape=True, overwrite=True)
    def shape_user(ctx: prunelab.ScoreContext) -> dict[str, torch.Tensor]:
        seen.append(ctx.require_input_shape("test_shape_user"))
        return {name: w.detach().abs() for name, w in ctx.weights().items()}

    @prunelab.register_method("test_shape_free", overwrite=True)
    def shape_free(ctx: prunelab.ScoreContext) -> dict[str, torch.Tensor]:
        seen.append(ctx.input_shape)
        return {name: w.detach().abs() for name, w in ctx.weights().items()}

    try:
        with pytest.raises(PrunelabError, match="'test_shape_user' runs the network without data"):
            prunelab.prune(plain(), "test_shape_user", 0.5)
        prunelab.prune(plain(), "test_shape_user", 0.5, data=data)
        prunelab.prune(plain(), "test_shape_free", 0.5)
        prunelab.prune(plain(), "test_shape_free", 0.5, data=(data.train_x[:4], data.train_y[:4]))
        assert seen == [(1, 16), None, (1, 16)]
    finally:
        METHODS.remove("test_shape_user")
        METHODS.remove("test_shape_free")


# -- 2. non-finite scores are refused ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "found"),
    [(float("nan"), "2 NaN, 0 \\+inf, 0 -inf of 192"), (float("inf"), "0 NaN, 2 \\+inf, 0 -inf of 192")],
)
def test_non_finite_scores_name_method_layer_and_what(bad: float, found: str) -> None:
    @prunelab.register_method("test_bad_scores", overwrite=True)
    def bad_scores(ctx: prunelab.ScoreContext) -> dict[str, torch.Tensor]:
        out = {name: w.detach().abs().clone() for name, w in ctx.weights().items()}
        out["1.weight"].view(-1)[:2] = bad
        return out

    try:
        with pytest.raises(
            PrunelabError,
            match=f"method 'test_bad_scores' returned non-finite scores for layer '1.weight': {found}",
        ) as info:
            prunelab.prune(plain(), "test_bad_scores", 0.5)
        assert "\n" not in str(info.value)
    finally:
        METHODS.remove("test_bad_scores")


def test_synflow_overflow_is_refused_with_the_float64_hint() -> None:
    # 12 linear layers of |w| = 1e4: the all-ones output is 1e48, beyond float32 (3.4e38).
    model = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(12)])
    with torch.no_grad():
        for layer in model:
            layer.weight.fill_(1e4)
    with pytest.raises(
        PrunelabError, match=r"'synflow' returned non-finite.*try options=\{'float64': True\}"
    ):
        prunelab.prune(model, "synflow", 0.5, input_shape=(4,), options={"rounds": 1})


# -- 3. trained-weights methods are refused at initialisation ----------------------------------------


@pytest.mark.parametrize("method", ["lottery", "lr_rewinding", "weight_rewinding", "finetune", "hybrid"])
def test_trained_weights_methods_are_refused_without_allow_trained(method: str) -> None:
    with pytest.raises(PrunelabError, match=f"prunelab train --method {method} --density") as info:
        prunelab.prune(plain(), method, 0.2)
    assert "\n" not in str(info.value)


def test_allow_trained_scores_the_given_weights() -> None:
    ticket = prunelab.prune(plain(), "lottery", 0.2, allow_trained=True)
    assert ticket == prunelab.prune(plain(), "magnitude", 0.2)


# -- 4. layer collapse warns ------------------------------------------------------------------------


def test_layer_collapse_warns_and_names_the_layers() -> None:
    def starve_first(ctx: AllocationContext) -> dict[str, int]:
        return {layer.name: 0 if layer.index == 0 else layer.numel // 2 for layer in ctx.layers}

    with pytest.warns(PruningWarning, match=r"layer collapse: method 'random' .* 1 layer\(s\): 1.weight"):
        mask = prunelab.prune(plain(), "random", 0.5, allocation=starve_first)
    assert mask.empty_layers() == ["1.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        healthy = prunelab.prune(plain(), "random", 0.5)
    assert healthy.empty_layers() == []


def test_mask_empty_layers() -> None:
    mask = Mask(
        {
            "a": torch.zeros(2, 3, dtype=torch.bool),
            "b": torch.tensor([True, False]),
            "c": torch.zeros(4, dtype=torch.bool),
        }
    )
    assert mask.empty_layers() == ["a", "c"]


# -- 5. attention ------------------------------------------------------------------------------------


class Attention(nn.Module):
    """(B, 5, 4) -> embed 8 -> 2-head self-attention (+ residual) -> mean over tokens -> 3 logits."""

    def __init__(self, need_weights: bool = False) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.embed = nn.Linear(4, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attention(h, h, h, need_weights=self.need_weights)
        return self.head((h + a).mean(1))


def attention_model(need_weights: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return Attention(need_weights)


def test_attention_projections_are_prunable_layers() -> None:
    layers = prunable_layers(attention_model())
    assert [(l.name, l.kind, l.shape, l.stacked) for l in layers] == [
        ("embed.weight", "linear", (8, 4), 1),
        ("attention.in_proj_weight", "linear", (24, 8), 3),
        ("attention.out_proj.weight", "linear", (8, 8), 1),
        ("head.weight", "linear", (3, 8), 1),
    ]
    model = attention_model()
    mask = prunelab.prune(model, "magnitude", 0.3)
    assert (model.attention.in_proj_weight[~mask["attention.in_proj_weight"]] == 0).all()
    assert model(torch.randn(2, 5, 4)).shape == (2, 3)


def test_er_sees_each_attention_projection_as_its_own_matrix() -> None:
    # ER raw = (n_out + n_in)/(n_out n_in) per (E, E) projection: embed 12/32 = .375, in_proj
    # (three 8x8) 16/64 = .25 (not (24+8)/192 as one 24x8), out_proj .25, head 11/24 = .4583.
    # d = 0.5 of N = 312: eps = 156/(12 + 48 + 16 + 11) = 156/87; fractional counts 21.517,
    # 86.069, 28.690, 19.724 -> floors 21, 86, 28, 19 (154), +1 to the largest remainders (head, out).
    layers = prunable_layers(attention_model())
    counts = allocate(layers, 0.5, "er")
    assert [counts[l.name] for l in layers] == [21, 86, 29, 20]


def test_grasp_runs_through_fused_attention() -> None:
    x = torch.randn(12, 5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 3
    fused = prunelab.prune(attention_model(need_weights=False), "grasp", 0.3, data=(x, y))
    explicit = prunelab.prune(attention_model(need_weights=True), "grasp", 0.3, data=(x, y))
    assert fused.num_kept == round(0.3 * fused.num_total)
    assert int(fused["attention.in_proj_weight"].sum()) > 0
    # the math kernel and the explicit softmax path compute the same scores (up to rounding)
    overlap = sum(int((fused[n] & explicit[n]).sum()) for n in fused) / fused.num_kept
    assert overlap > 0.95
