"""Random pruning (Liu et al. 2022): ERK+, the borrowed ratios (snip/grasp/synflow_ratio), Bernoulli
masks, the paper's recipes and the best-on-validation checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import prunelab
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.pruning import PrunableSet, allocate, prunable_layers
from prunelab.pruning.prunable import Layer
from prunelab.runs import RunContext, execute
from prunelab.runs.training import execute_run
from prunelab.spec import RunSpec, parse_model
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig
from prunelab.training.trainer import decay_groups, evaluate

LAYERS = [
    Layer("c1.weight", "conv", (4, 2, 3, 3), 0),
    Layer("c2.weight", "conv", (4, 4, 3, 3), 1),
    Layer("fc.weight", "linear", (3, 4), 2),
]


def test_erk_plus_keeps_the_classifier_dense_and_solves_the_rest_by_hand() -> None:
    # N = 72 + 144 + 12 = 228; d = 0.5 keeps round(114) = 114; the fc keeps all 12, so the convs share
    # 102 of 216 (d' = 0.4722). ERK raw: c1 (4+2+3+3)/72 = 1/6, c2 (4+4+3+3)/144 = 7/72.
    # eps = 102 / (1/6*72 + 7/72*144) = 102/26; c1: 72 * eps/6 = 47.08, c2: 144 * eps*7/72 = 54.92
    # -> floors 47 + 54 = 101, the larger remainder (c2, .92) gets the last one: 47, 55, 12.
    counts = allocate(LAYERS, 0.5, "erk_plus")
    assert counts == {"c1.weight": 47, "c2.weight": 55, "fc.weight": 12}
    half = allocate(LAYERS, 0.5, "erk_plus", options={"fc_density": 0.5})
    assert half["fc.weight"] == 6 and sum(half.values()) == 114


def test_erk_plus_refuses_what_it_cannot_meet() -> None:
    with pytest.raises(PrunelabError, match="cannot be met by erk_plus"):
        allocate(LAYERS, 0.05, "erk_plus")  # 11 weights allowed, the dense fc alone keeps 12
    with pytest.raises(PrunelabError, match="sets the last layer's density itself"):
        allocate(LAYERS, 0.5, "erk_plus", last_layer_density=0.3)
    with pytest.raises(PrunelabError, match="fc_density must be in"):
        allocate(LAYERS, 0.5, "erk_plus", options={"fc_density": 1.5})


def _model() -> nn.Module:
    return build_model("cnn1d", (1, 40), 10, seed=3, channels=8)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(40, 1, 40, generator=gen), torch.arange(40) % 10


@pytest.mark.parametrize(
    ("ratio", "method"), [("snip_ratio", "snip"), ("grasp_ratio", "grasp"), ("synflow_ratio", "synflow")]
)
def test_a_borrowed_ratio_has_the_methods_per_layer_counts_at_random_positions(
    ratio: str, method: str
) -> None:
    data = _batch()  # a fixed (inputs, targets) pair: both score exactly this batch
    options = {"ratio_reinit": "none"}
    if ratio == "snip_ratio":
        options["ratio_batch_size"] = 40
    borrowed = prunelab.prune(_model(), "random", 0.2, data=data, allocation=ratio, options=options, seed=1)
    reference = prunelab.prune(_model(), method, 0.2, data=data, seed=1)
    assert borrowed.counts() == reference.counts()
    assert borrowed.info["ratio_source"] == method
    assert any(not torch.equal(borrowed[n], reference[n]) for n in reference.counts())  # positions are random


def test_snip_ratio_reinitialises_like_random_pruning() -> None:
    # Random_Pruning scores SNIP on an xavier_normal re-initialised copy: the ratio differs from SNIP's
    # on the model's own init, and the model itself is untouched.
    model, data = _model(), _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xavier = allocate(
        prunable_layers(model),
        0.2,
        "snip_ratio",
        options={"ratio_batch_size": 40},
        model=model,
        data=data,
    )
    own = allocate(
        prunable_layers(model),
        0.2,
        "snip_ratio",
        options={"ratio_batch_size": 40, "ratio_reinit": "none"},
        model=model,
        data=data,
    )
    assert xavier != own and sum(xavier.values()) == sum(own.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(PrunelabError, match="ratio_reinit"):
        prunelab.prune(
            _model(), "random", 0.2, data=data, allocation="snip_ratio", options={"ratio_reinit": "he"}
        )
    with pytest.raises(PrunelabError, match="scores the model on data"):
        prunelab.prune(_model(), "random", 0.2, allocation="grasp_ratio")


def test_bernoulli_masks_draw_each_weight_with_its_layers_density() -> None:
    model = build_model("mlp", (1, 40), 10, seed=0, hidden=[400, 400])
    exact = prunelab.prune(
        build_model("mlp", (1, 40), 10, seed=0, hidden=[400, 400]), "random", 0.1, allocation="erk"
    )
    mask = prunelab.prune(model, "random", 0.1, allocation="erk", sampling="bernoulli", seed=0)
    again = prunelab.prune(
        build_model("mlp", (1, 40), 10, seed=0, hidden=[400, 400]),
        "random",
        0.1,
        allocation="erk",
        sampling="bernoulli",
        seed=0,
    )
    assert mask.info["sampling"] == "bernoulli" and all(torch.equal(mask[n], again[n]) for n in mask.counts())
    assert mask.counts() != exact.counts()  # binomial counts, not exact ones
    for name, kept in mask.counts().items():
        n, p = mask[name].numel(), exact.counts()[name] / mask[name].numel()
        if 0 < p < 1:
            assert abs(kept - n * p) < 5 * math.sqrt(n * p * (1 - p))  # within 5 binomial sd
        else:
            assert kept == round(n * p)
    assert all(
        torch.count_nonzero(p.detach()[~mask[n]]) == 0
        for n, p in model.named_parameters()
        if n in mask.counts()
    )
    with pytest.raises(PrunelabError, match="sampling 'bernoulli'"):
        prunelab.prune(_model(), "magnitude", 0.1, sampling="bernoulli")
    with pytest.raises(PrunelabError, match="sampling 'bernoulli'"):
        parse_model(RunSpec, {"pruning": {"method": "snip", "density": 0.1, "sampling": "bernoulli"}})


def test_named_recipes_expand_and_keep_old_hashes() -> None:
    spec = parse_model(RunSpec, {"train": "random_pruning"})
    assert spec.train.nesterov and spec.train.weight_decay == 5e-4 and spec.train.batch_size == 128
    assert spec.train.epochs == 160 and spec.train.milestones == (0.5, 0.75)
    assert parse_model(RunSpec, {"train": {"recipe": "random_pruning", "epochs": 4}}).train.epochs == 4
    assert parse_model(RunSpec, {"train": "su"}).run_hash() == RunSpec().run_hash()
    with pytest.raises(PrunelabError, match="unknown recipe 'nope'; valid choices"):
        parse_model(RunSpec, {"train": "nope"})


def test_warm_up_and_epoch_milestones_follow_random_prunings_imagenet_code() -> None:
    config = TrainConfig.model_validate("random_pruning_imagenet")
    # lr * (e + 1) / (warmup + 1) for the 5 warm-up epochs, then x0.1 at 30, 60 and 80.
    assert [config.lr_at(e) for e in range(5)] == pytest.approx([0.4 * (e + 1) / 6 for e in range(5)])
    assert config.lr_at(5) == 0.4 and config.lr_at(29) == 0.4
    assert config.lr_at(30) == pytest.approx(0.04) and config.lr_at(80) == pytest.approx(0.4e-3)
    assert config.label_smoothing == 0.1 and config.weight_decay_exclude == "norm"


def test_weight_decay_exclusions_spare_norm_layers_and_biases() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = decay_groups(model, "norm")
    spared = {id(p) for p in groups[1]["params"]}
    assert spared == {id(model[1].weight), id(model[1].bias)} and groups[1]["weight_decay"] == 0.0
    spared = {id(p) for p in decay_groups(model, "norm_bias")[1]["params"]}
    assert spared == {id(model[1].weight), id(model[1].bias), id(model[0].bias), id(model[2].bias)}
    assert len(decay_groups(model, "none")) == 1


SMALL = {"name": "mnist1d", "options": {"num_samples": 600, "validation": 100}}


def _best_spec(epochs: int = 4) -> RunSpec:
    return parse_model(
        RunSpec,
        {
            "data": SMALL,
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "pruning": {"method": "random", "density": 0.3, "allocation": "erk"},
            "train": {"epochs": epochs, "batch_size": 50, "lr": 0.05, "checkpoint": "best_validation"},
        },
    )


def test_best_validation_checkpoint_is_chosen_on_validation_and_tested_once(tmp_path: Path) -> None:
    spec = _best_spec()
    store = RunStore(tmp_path)
    result = execute_run(spec, store)
    history = store.read_metrics(spec)  # the per-epoch "test_acc" is the validation accuracy here
    best = max(range(len(history)), key=lambda i: (history[i]["test_acc"], -i))
    assert (
        result["selected_epoch"] == history[best]["epoch"]
        and result["valid_acc"] == history[best]["test_acc"]
    )
    data = prunelab.load_dataset("mnist1d", num_samples=600, validation=100)
    assert data.heldout_x is not None and data.heldout_x.shape[0] == 120  # the real test split, kept aside
    model = build_model("mlp", data.input_shape, 10, seed=0, hidden=[32])
    model.load_state_dict(store.load_weights(spec, result["selected_epoch"]))
    assert result["test_acc"] == evaluate(model, data, split="heldout")[1] == result["reported_acc"]
    assert result["checkpoint"] == "best_validation"


def test_best_validation_survives_a_kill_and_resume(tmp_path: Path) -> None:
    spec = _best_spec()
    whole = execute_run(spec, RunStore(tmp_path / "a"))
    store = RunStore(tmp_path / "b")
    assert execute(spec, store, RunContext(stop_after_epoch=2))["status"] == "stopped"
    resumed = execute(spec, store, RunContext())
    for key in ("selected_epoch", "valid_acc", "test_acc"):
        assert resumed[key] == whole[key]


def test_best_validation_needs_a_validation_split() -> None:
    with pytest.raises(PrunelabError, match="data.options.validation"):
        parse_model(RunSpec, {"train": {"checkpoint": "best_validation"}})


def test_every_training_result_records_its_size(tmp_path: Path) -> None:
    spec = parse_model(
        RunSpec,
        {
            "data": {"name": "mnist1d", "options": {"num_samples": 300}},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "pruning": {"method": "random", "density": 0.25},
            "train": {"epochs": 1, "batch_size": 60},
        },
    )
    result = execute_run(spec, RunStore(tmp_path))
    size = result["size"]
    # weights 40*16 + 16*10 = 800 (a quarter kept: 200) plus biases 16 + 10
    assert size["params"] == 826 and size["nonzero_params"] <= 200 + 26
    assert 0 < size["nonzero_flops"] < size["flops"]
    assert json.loads((RunStore(tmp_path).run_dir(spec) / "result.json").read_text())["size"] == size


def test_every_study_can_set_the_prunable_set() -> None:
    from prunelab.spec.studies import LotteryStudy, SanityStudy, ScalingStudy

    policy = {"scope": "conv", "first_layer_dense": True}
    for cls, extra in (
        (SanityStudy, {}),
        (LotteryStudy, {}),
        (ScalingStudy, {"sizes": [{"family": "m", "axis": "width", "models": ["cnn1d"], "values": [1]}]}),
    ):
        study = parse_model(cls, {"prunable": policy, **extra})
        assert study.prunable == PrunableSet(**policy)


def test_set_reaches_inside_a_named_recipe() -> None:
    from prunelab.commands import apply_sets

    payload = apply_sets({"train": {"epochs": 3}}, ["train=random_pruning", "train.epochs=2"])
    assert payload["train"] == {"recipe": "random_pruning", "epochs": 2}
    spec = parse_model(RunSpec, payload)
    assert spec.train.epochs == 2 and spec.train.nesterov
