"""Each scoring rule pinned to closed-form values on tiny linear models (no autograd in the
expected values), plus properties of the random, magnitude and iterative paths."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import prunelab
from prunelab.pruning.methods import METHODS
from prunelab.pruning.prunable import prunable_layers
from prunelab.pruning.scores import ScoreContext

W = [[1.0, -1.0], [2.0, 0.5]]
X = [1.0, 2.0]


def linear_model(weight: list[list[float]]) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weight))
    return model


def scores_of(
    method: str, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None, **options: object
) -> dict[str, torch.Tensor]:
    entry = METHODS.get(method)
    ctx = ScoreContext(
        model,
        prunable_layers(model),
        [batch] if batch else None,
        (2,),
        torch.Generator().manual_seed(0),
        entry.resolve_options(options),
    )
    return entry.score(ctx)


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_snip_is_abs_weight_times_gradient() -> None:
    # z = W x = [-1, 3]; dL/dW = (p - e_y) x^T with y = 0.
    p = softmax([-1.0, 3.0])
    grad = [[(p[0] - 1) * X[0], (p[0] - 1) * X[1]], [p[1] * X[0], p[1] * X[1]]]
    expected = torch.tensor([[abs(W[i][j] * grad[i][j]) for j in range(2)] for i in range(2)])
    got = scores_of("snip", linear_model(W), (torch.tensor([X]), torch.tensor([0])))["0.weight"]
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[0, 1] == pytest.approx(1.964028, abs=1e-5)  # |(-1) * (p0 - 1) * 2|


def test_grasp_sign_convention_keep_score_is_w_times_hg() -> None:
    # For z = W x / T: g = (p - e) x^T / T and H g = J_p (p - e) |x|^2 x^T / T^3, J_p = diag(p) - p p^T.
    # prunelab's keep-score is +W * Hg (GraSP's S = -W * Hg; GraSP removes the largest S).
    temperature = 2.0
    z = [(W[i][0] * X[0] + W[i][1] * X[1]) / temperature for i in range(2)]
    p = softmax(z)
    r = [p[0] - 1.0, p[1]]
    jr = [p[0] * r[0] - p[0] * (p[0] * r[0] + p[1] * r[1]), p[1] * r[1] - p[1] * (p[0] * r[0] + p[1] * r[1])]
    xx = X[0] ** 2 + X[1] ** 2
    hg = [[jr[i] * xx * X[j] / temperature**3 for j in range(2)] for i in range(2)]
    expected = torch.tensor([[W[i][j] * hg[i][j] for j in range(2)] for i in range(2)])
    got = scores_of("grasp", linear_model(W), (torch.tensor([X]), torch.tensor([0])), temperature=temperature)
    assert torch.allclose(got["0.weight"], expected, atol=1e-7)
    # Not an absolute value: GraSP scores carry a sign, and it matters for the ranking.
    assert (expected < 0).any() and (expected > 0).any()


def test_synflow_is_abs_weight_times_path_sum() -> None:
    # f(1) = |W2| |W1| 1, R = sum: dR/dW1[i, j] = colsum_i(|W2|), dR/dW2[k, i] = rowsum_i(|W1|).
    w1 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    w2 = torch.tensor([[-1.0, 4.0]])
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[1].weight.copy_(w2)
    got = scores_of("synflow", model, None)
    col = w2.abs().sum(0)  # [1, 4]
    row = w1.abs().sum(1)  # [3, 3.5]
    assert torch.allclose(got["0.weight"], (w1.abs() * col[:, None]).double())
    assert torch.allclose(got["1.weight"], (w2.abs() * row[None, :]).double())
    # the caller's model is untouched by prune (scores run on a copy)
    prunelab.prune(model, "synflow", 0.5, options={"rounds": 3}, input_shape=(2,))
    assert model[0].weight.abs().sum() <= w1.abs().sum()


def test_synflow_float64_option_matches_float32_on_small_net() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    a = prunelab.prune(model, "synflow", 0.2, options={"rounds": 5})
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    b = prunelab.prune(model, "synflow", 0.2, options={"rounds": 5, "float64": True})
    overlap = sum(int((a[n] & b[n]).sum()) for n in a) / a.num_kept
    assert overlap > 0.99


def test_magnitude_keeps_largest_absolute_weights_globally() -> None:
    model = linear_model([[0.1, -5.0], [2.0, -0.3]])
    mask = prunelab.prune(model, "magnitude", 0.5, input_shape=(2,))
    assert mask["0.weight"].tolist() == [[False, True], [True, False]]
    assert model[0].weight.tolist() == [[0.0, -5.0], [2.0, -0.0]]


def test_random_uniform_exact_counts_and_seeded() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    m1 = prunelab.prune(model, "random", 0.1)
    assert [r.kept for r in m1.per_layer()] == [400, 1000, 100]
    m2 = prunelab.prune(prunelab.build_model("mlp", (1, 40), 10, seed=0), "random", 0.1)
    m3 = prunelab.prune(prunelab.build_model("mlp", (1, 40), 10, seed=0), "random", 0.1, seed=1)
    assert m1 == m2 and m1 != m3


def test_iterative_rounds_never_revive_pruned_weights() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    one = prunelab.prune(model, "magnitude", 0.3, options={"rounds": 1})
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    many = prunelab.prune(model, "magnitude", 0.3, options={"rounds": 4})
    # magnitude scores do not change between rounds, so iterating gives the same global mask
    assert one == many
    assert many.num_kept == round(0.3 * many.num_total)
