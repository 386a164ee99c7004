"""Packed runs: each member of a pack computes its solo run (within floating-point tolerance),
is stored as its own run under its own hash, resumes bitwise after a kill, holds its claim while
it trains; the runners group compatible runs; the benchmark's core runs (tiny, no time asserted)."""

from __future__ import annotations

import copy
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from prunelab.cli import main
from prunelab.data import load_dataset
from prunelab.errors import PrunelabError
from prunelab.models import build_model
from prunelab.pruning import prune
from prunelab.runners import run_specs
from prunelab.runs import RunContext, execute
from prunelab.runs.packed import AUTO_CAP, auto_pack_size, check_pack, pack_key, plan_packs, run_packed
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig
from prunelab.training.packed import (
    CONV_MODES,
    Member,
    NotPackable,
    PackedModel,
    config_refusal,
    probe,
    train_packed,
)
from prunelab.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import packed as packed_bench  # noqa: E402

# A calm recipe: the demo's lr 0.1 makes the 1-D CNN chaotic (a 1e-7 weight perturbation grows to
# 0.09 within one MNIST-1D epoch, and 1 vs 2 threads differ by 0.04 after two), so no
# floating-point tolerance could be asserted there; at lr 0.02 solo and packed agree to ~1e-7.
RECIPE = TrainConfig(epochs=2, batch_size=32, lr=0.02, weight_decay=5e-4, schedule="cosine", augment=False)
MODELS = {
    "mlp": ({}, (1, 40)),
    "cnn1d": ({"channels": 16, "bn": True}, (1, 40)),
    "cnn2d": ({"width": 4}, (1, 8, 8)),
}


def _data(shape: tuple[int, ...]) -> Any:
    return load_dataset(
        "synthetic", num_classes=10, train_size=160, test_size=64, input_shape=shape, separation=0.5
    )


def _members(name: str) -> tuple[list[nn.Module], list[Any], Any]:
    options, shape = MODELS[name]
    data = _data(shape)
    models = [build_model(name, shape, 10, seed=k, **options) for k in range(3)]
    masks = [
        None,
        prune(models[1], "random", 0.3, seed=1),
        prune(models[2], "magnitude", 0.5, seed=2),
    ]
    return models, masks, data


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(
    ("name", "conv"),
    [("mlp", "auto"), *(("cnn1d", mode) for mode in CONV_MODES), *(("cnn2d", mode) for mode in CONV_MODES)],
)
def test_each_member_equals_its_solo_run(name: str, conv: str) -> None:
    models, masks, data = _members(name)
    solo = []
    for k, model in enumerate(models):
        run = copy.deepcopy(model)
        history = train(run, data, RECIPE, mask=masks[k], generator=torch.Generator().manual_seed(k))
        solo.append((run, history))
    members = [
        Member(copy.deepcopy(m), data, masks[k], torch.Generator().manual_seed(k))
        for k, m in enumerate(models)
    ]
    histories = train_packed(members, RECIPE, conv=conv)
    for k, member in enumerate(members):
        state = member.model.state_dict()
        assert _max_diff(solo[k][0].state_dict(), state) < 1e-4
        assert [r.test_acc for r in histories[k].history] == [r.test_acc for r in solo[k][1].history]
        for a, b in zip(histories[k].history, solo[k][1].history, strict=True):
            assert a.epoch == b.epoch and a.lr == b.lr
            assert abs(a.train_loss - b.train_loss) < 1e-4 and abs(a.test_loss - b.test_loss) < 1e-4
        if masks[k] is not None:  # the mask is an invariant of packed training too
            for layer, kept in masks[k].items():
                assert torch.all(state[layer][~kept] == 0)


class _MixesExamples(nn.Module):
    """Subtracts the batch mean: a solo batch and a packed batch give other outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.fc(h - h.mean(0))


def test_models_packing_cannot_follow_are_refused() -> None:
    with pytest.raises(NotPackable, match="differ from solo"):
        probe([_MixesExamples(), _MixesExamples()], (1, 40))
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(40, 8), nn.Dropout(0.5), nn.Linear(8, 10))
    with pytest.raises(NotPackable, match="Dropout"):
        PackedModel([dropout, copy.deepcopy(dropout)])
    layer_norm = nn.Sequential(nn.Flatten(), nn.LayerNorm(40), nn.Linear(40, 10))
    with pytest.raises(NotPackable, match="LayerNorm"):
        PackedModel([layer_norm])


def test_recipes_packing_does_not_reproduce_are_refused() -> None:
    assert config_refusal(RECIPE) is None
    assert "nproc" in str(config_refusal(RECIPE.model_copy(update={"nproc": 2})))
    for name, value in (("precision", "bf16"), ("compile", True), ("channels_last", True)):
        if name in TrainConfig.model_fields:  # the fast path's fields, where they exist
            assert f"train.{name}" in str(config_refusal(RECIPE.model_copy(update={name: value})))


# -- runs through the store ------------------------------------------------------------------------
def _specs(epochs: int = 2) -> list[RunSpec]:
    data = DataSpec(name="synthetic", options={"num_classes": 4, "train_size": 96, "test_size": 32})
    model = ModelSpec(name="cnn1d", options={"channels": 8, "bn": True})
    train_config = RECIPE.model_copy(update={"epochs": epochs})
    return [
        RunSpec(data=data, model=model, train=train_config, seed=0),
        RunSpec(
            data=data,
            model=model,
            train=train_config,
            seed=1,
            pruning=PruningSpec(method="snip", density=0.3),
        ),
        RunSpec(
            data=data,
            model=model,
            train=train_config,
            seed=2,
            pruning=PruningSpec(method="magnitude", density=0.3, checks=("shuffle_mask",)),
        ),
    ]


def test_a_pack_is_stored_as_its_solo_runs(tmp_path: Path) -> None:
    specs = _specs()
    assert len({pack_key(s) for s in specs}) == 1
    solo_store, packed_store = RunStore(tmp_path / "solo"), RunStore(tmp_path / "packed")
    solo = {s.run_hash(): execute(s, solo_store) for s in specs}
    packed = run_packed(specs, packed_store)
    assert packed.keys() == solo.keys()
    for spec in specs:
        key = spec.run_hash()
        assert set(packed[key]) == set(solo[key])  # the same keys
        assert packed[key]["provenance"]["packed"]["members"] == 3
        assert packed[key]["final_test_acc"] == solo[key]["final_test_acc"]
        assert packed_store.verified_result(spec) == packed[key]  # sealed, reloads as returned
        run_dir = packed_store.run_dir(spec)
        assert run_dir.name == solo_store.run_dir(spec).name
        assert not (run_dir / "checkpoint.pt").exists()
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [line["epoch"] for line in lines] == [1, 2]
        assert (
            _max_diff(
                load_file(str(solo_store.run_dir(spec) / "model.safetensors")),
                load_file(str(run_dir / "model.safetensors")),
            )
            < 1e-4
        )
    assert run_packed(specs, packed_store) == packed  # finished: read back, never retrained
    assert all(packed_store.executions(s) == [0] for s in specs)


def test_a_killed_pack_resumes_bitwise(tmp_path: Path) -> None:
    specs = _specs(epochs=3)
    whole = RunStore(tmp_path / "whole")
    run_packed(specs, whole)
    killed = RunStore(tmp_path / "killed")
    stopped = run_packed(specs, killed, RunContext(stop_after_epoch=1))
    assert all(r["status"] == "stopped" for r in stopped.values())
    assert all(killed.load_checkpoint(s) is not None for s in specs)
    resumed = run_packed(specs, killed)
    for spec in specs:
        assert killed.executions(spec) == [0, 1]
        a = load_file(str(whole.run_dir(spec) / "model.safetensors"))
        b = load_file(str(killed.run_dir(spec) / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
        assert resumed[spec.run_hash()]["final_test_acc"] == whole.result(spec)["final_test_acc"]  # type: ignore[index]


def test_a_member_asked_for_elsewhere_waits_then_is_read_back(tmp_path: Path) -> None:
    specs = _specs(epochs=3)
    store = RunStore(tmp_path / "runs")
    epochs_seen: list[int] = []
    pack = threading.Thread(
        target=run_packed,
        args=(specs, store, RunContext(progress=lambda done, total: epochs_seen.append(done))),
    )
    pack.start()
    while not epochs_seen:  # the pack holds every member's claim from before its first epoch
        time.sleep(0.01)
    result = execute(specs[1], RunStore(tmp_path / "runs"))  # waits for the claim, then reads back
    pack.join()
    assert result["epochs"] == 3 and store.executions(specs[1]) == [0]


def test_the_runner_packs_compatible_runs_and_pack_1_is_todays_path(tmp_path: Path) -> None:
    specs = _specs()
    dense_mlp = RunSpec(data=specs[0].data, model=ModelSpec(name="mlp"), train=specs[0].train)
    all_specs = [*specs, dense_mlp]
    assert plan_packs(all_specs, 2) == [[0, 1], [2], [3]]  # 3 compatible runs: packs of 2 and 1
    assert plan_packs(all_specs, 8) == [[0, 1, 2], [3]]
    assert plan_packs(all_specs, 1) == [[0], [1], [2], [3]]
    one = run_specs(all_specs, tmp_path / "one", progress=False)
    packed = run_specs(all_specs, tmp_path / "packed", progress=False, pack=8, workers=2)
    for a, b in zip(one, packed, strict=True):
        assert a["name"] == b["name"] and a["final_test_acc"] == b["final_test_acc"]
    assert "packed" not in one[0]["provenance"] and packed[0]["provenance"]["packed"]["members"] == 3
    assert "packed" not in packed[3]["provenance"]  # the lone MLP trained solo
    with sqlite3.connect(tmp_path / "packed" / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM runs WHERE status='done'").fetchone()[0] == 4
    auto = run_specs(all_specs, tmp_path / "packed", progress=False, pack="auto")
    assert [r["hash"] for r in auto] == [r["hash"] for r in packed]  # finished: read back


@pytest.mark.parametrize("bad", [0, -2, "x", "1.5", True])
def test_a_bad_pack_size_is_one_line(bad: Any) -> None:
    with pytest.raises(PrunelabError, match="--pack must be a positive integer or auto"):
        check_pack(bad)
    assert check_pack("auto") is None and check_pack("4") == 4


def test_the_cli_takes_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sanity", "--dataset", "synthetic", "--model", "mlp", "--methods", "magnitude"]
    argv += ["--densities", "0.5", "--seeds", "1", "--checks", "", "--random-tickets", "uniform"]
    argv += ["--epochs", "1", "--workers", "1"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--pack", "0"]) == 2
    assert "--pack must be a positive integer or auto" in capsys.readouterr().err
    assert main([*argv, "--runs-dir", str(tmp_path), "--pack", "auto"]) == 0
    results = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    assert len(results) == 3 and sum("packed" in r["provenance"] for r in results) == 3


def test_packed_benchmark_core_runs_tiny() -> None:
    record = packed_bench.measure("cnn1d", 2, train_size=64, test_size=32)
    assert record["members"] == 2 and record["sequential_s"] > 0 and record["packed_s"] > 0
    assert record["max_test_acc_diff"] <= 1.0


def test_pack_with_ray_is_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sanity", "--dataset", "synthetic", "--model", "mlp", "--methods", "magnitude"]
    argv += ["--densities", "0.5", "--seeds", "1", "--checks", "", "--random-tickets", "uniform"]
    argv += ["--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--backend", "ray", "--pack", "2"]
    assert main(argv) == 2
    assert "--pack applies to --backend local" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("mode", ["im2col", "per_member", "grouped"])
@pytest.mark.parametrize(
    ("dims", "kernel", "stride", "padding", "dilation", "size"),
    [
        (1, 5, 2, 1, 1, 40),  # the MNIST-1D CNN's first layer
        (1, 3, 2, 1, 1, 10),  # kernel > stride: taps overlap
        (1, 2, 3, 0, 1, 11),  # stride > kernel: some inputs are read by no tap
        (1, 3, 1, 2, 2, 9),  # dilation, padding wider than a tap
        (1, 1, 1, 0, 1, 7),  # a pointwise convolution
        (2, 3, 2, 1, 1, 7),  # 2-D, strided
        (2, 3, 1, 1, 1, 5),  # 2-D, ResNet's 3x3
    ],
)
def test_a_packed_convolution_is_each_members_convolution(
    mode: str, dims: int, kernel: int, stride: int, padding: int, dilation: int, size: int
) -> None:
    """Forward and every gradient of each conv mode equal torch's convolution member by member
    (float64, so only the order of additions can differ), whatever the geometry."""
    from prunelab.training.packed import PackedConv

    gen = torch.Generator().manual_seed(0)
    layer = nn.Conv1d if dims == 1 else nn.Conv2d
    convs = [
        layer(3, 4, kernel, stride=stride, padding=padding, dilation=dilation, bias=k % 2 == 0).double()
        for k in range(2)
    ]
    for k, conv in enumerate(convs):  # same bias presence in a pack: give both or none
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(4, dtype=torch.float64))
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
            conv.bias.copy_(torch.randn(4, generator=gen, dtype=torch.float64) + k)
    packed = PackedConv(convs, mode)
    x = torch.randn((2 * 5, 3, *([size] * dims)), generator=gen, dtype=torch.float64, requires_grad=True)
    out = packed(x)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad)
    for k, conv in enumerate(convs):
        xs = x.detach()[k * 5 : (k + 1) * 5].clone().requires_grad_(True)
        expected = conv(xs)
        expected.backward(grad[k * 5 : (k + 1) * 5])
        torch.testing.assert_close(out[k * 5 : (k + 1) * 5], expected)
        torch.testing.assert_close(x.grad[k * 5 : (k + 1) * 5], xs.grad)  # type: ignore[index]
        torch.testing.assert_close(packed.weight.grad[k], conv.weight.grad)  # type: ignore[index]
        torch.testing.assert_close(packed.bias.grad[k], conv.bias.grad)  # type: ignore[index]


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d"])
def test_a_members_result_does_not_depend_on_its_pack(name: str) -> None:
    """Bitwise, on one thread (as runs train): the same member trained in packs of 1, 2 and 3, and
    at another position, ends with the same weights and history."""
    models, masks, data = _members(name)
    finals = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for order in ([0], [0, 1], [2, 0, 1]):
            members = [
                Member(copy.deepcopy(models[k]), data, masks[k], torch.Generator().manual_seed(k))
                for k in order
            ]
            histories = train_packed(members, RECIPE)
            at = order.index(0)
            finals.append((members[at].model.state_dict(), [r.test_loss for r in histories[at].history]))
    finally:
        torch.set_num_threads(previous)
    for state, losses in finals[1:]:
        assert losses == finals[0][1]
        assert all(torch.equal(state[n], finals[0][0][n]) for n in state)


def test_auto_packs_by_memory_and_keeps_2d_convnets_solo_on_cpu() -> None:
    data = DataSpec(name="synthetic", options={"num_classes": 10, "train_size": 64, "test_size": 32})
    recipe = TrainConfig(epochs=1, batch_size=32)
    mlp = RunSpec(data=data, model=ModelSpec(name="mlp"), train=recipe)
    assert auto_pack_size(mlp, "cpu") == AUTO_CAP["cpu"]  # a tiny MLP: memory allows the cap
    shaped = data.model_copy(update={"options": {**data.options, "input_shape": [1, 8, 8]}})
    cnn2d = RunSpec(data=shaped, model=ModelSpec(name="cnn2d", options={"width": 4}), train=recipe)
    assert auto_pack_size(cnn2d, "cpu") == 1
    assert plan_packs([cnn2d, cnn2d.model_copy(update={"seed": 1})], "auto") == [[0], [1]]
