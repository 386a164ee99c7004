"""The one pipeline, end to end: a toy check and a toy structured method defined in this file alone
run through studies; `prunelab run` runs every study kind from YAML; a plugin's model goes through
prune, train, tickets, sanity and report; a model factory stands in for a registered name; `--set`
reaches every spec field with one-line errors."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunelab.cli import main
from prunelab.pruning import CHECKS, Check, Mask, register_check
from prunelab.pruning.structured import (
    STRUCTURED_METHODS,
    StructuredMethod,
    TrainingHooks,
    channel_method,
    keep_count,
    register_structured_method,
)
from prunelab.runs import PRUNED_DIR
from prunelab.runs import structured as structured_runs
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import MethodSpec, RethinkingStudy, SanityStudy
from prunelab.store import RunStore
from prunelab.studies import rebuild_report, run_study
from prunelab.studies.rethinking import study_runs as rethinking_runs
from prunelab.studies.sanity import study_runs
from prunelab.training.config import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="cosine", augment=False)
BACKWARD_CALLS: list[int] = []


def front_mask(mask: Mask, generator: torch.Generator) -> Mask:
    """Every layer keeps its first positions (same per-layer counts)."""
    out = {}
    for name, tensor in mask.items():
        flat = torch.zeros(tensor.numel(), dtype=torch.bool)
        flat[: int(tensor.sum())] = True
        out[name] = flat.view(tensor.shape)
    return Mask(out)


def first_filters(
    model: nn.Module, layers: Any, options: dict[str, Any], data: Any, seed: int
) -> dict[str, list[int]]:
    return {layer.conv: list(range(keep_count(layer.channels, float(options["ratio"])))) for layer in layers}


def counting_hooks(model: nn.Module, options: dict[str, Any]) -> TrainingHooks:
    hooks = TrainingHooks()
    hooks.after_backward.append(lambda: BACKWARD_CALLS.append(1))
    return hooks


@pytest.fixture
def toys() -> Iterator[None]:
    register_check(Check("front_mask", "kept positions moved to each layer's front", mask=front_mask))
    register_structured_method(
        StructuredMethod(
            "first",
            "channel",
            False,
            {"ratio": 0.5},
            "keep the first filters",
            prune=channel_method(first_filters),
            training_hooks=counting_hooks,
        )
    )
    yield
    CHECKS.remove("front_mask")
    STRUCTURED_METHODS.remove("first")


@pytest.fixture(autouse=True)
def _quick_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structured_runs, "LATENCY_TIMING", {"warmup": 0, "repeats": 1, "min_repeat_ms": 0.0})


@pytest.mark.slow
def test_a_toy_check_runs_through_a_sanity_study(toys: None, tmp_path: Path) -> None:
    study = SanityStudy(
        name="toy-check",
        data=DataSpec(name="synthetic"),
        train=TINY,
        methods=("snip",),
        densities=(0.5,),
        seeds=(0, 1),
        checks=("front_mask",),
        random_tickets=(),
        include_dense=False,
    )
    summary, html = run_study(study, tmp_path, progress=False)
    assert summary.missing == 0 and [(v.method, v.check, v.n_pairs) for v in summary.verdicts] == [
        ("snip", "front_mask", 2)
    ]
    checked = next(r.spec for r in study_runs(study) if r.spec.pruning and r.spec.pruning.checks)
    mask = Mask.load(RunStore(tmp_path).run_dir(checked) / "mask.safetensors")
    for tensor in mask.values():  # the check's transform produced the trained mask
        kept = int(tensor.sum())
        assert bool(tensor.flatten()[:kept].all()) and not bool(tensor.flatten()[kept:].any())
    assert "front_mask" in (html.parent / "report.md").read_text()


@pytest.mark.slow
def test_a_toy_structured_method_runs_through_the_rethinking_study(toys: None, tmp_path: Path) -> None:
    BACKWARD_CALLS.clear()
    study = RethinkingStudy(
        name="toy-structured",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="cnn1d", options={"bn": True, "channels": 6}),
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05, augment=False),
        methods=(MethodSpec(name="first", options={"ratio": 0.5}),),
        seeds=(0,),
    )
    summary, _ = run_study(study, tmp_path, workers=1, progress=False)
    assert summary.missing == 0
    large = rethinking_runs(study)[0].spec
    assert large.stage == "large" and large.method == "first"  # training hooks: its own large model
    assert BACKWARD_CALLS  # the hook ran while the large model trained
    prune = next(r.spec for r in rethinking_runs(study) if r.stage == "prune")
    kept = json.loads((RunStore(tmp_path).run_dir(prune) / PRUNED_DIR / "kept.json").read_text())
    assert kept and all(idx == list(range(len(idx))) for idx in kept.values())  # the first filters


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


COMMON = "data: {name: synthetic}\ntrain: {epochs: 1, batch_size: 32, lr: 0.05, augment: false}\n"
STUDY_YAML = {
    "sanity": "study: sanity\nname: y-sanity\nmethods: [magnitude]\ndensities: [0.5]\nseeds: [0, 1]\n"
    "checks: [shuffle_mask]\nrandom_tickets: [erk]\n",
    "tickets": "study: tickets\nname: y-tickets\nmethods: [lottery]\ndensities: [0.5]\nseeds: [0]\n"
    "checks: [reinit]\nrandom_tickets: [smart_ratio]\n",
    "lottery": "study: lottery\nname: y-lottery\nlevels: [1]\nseeds: [0]\nlearning_rates: [0.1, 0.01]\n",
    "rethinking": "study: rethinking\nname: y-rethinking\nmodel: {name: cnn1d, options: {bn: true, channels: 6}}\n"
    "methods: [l1norm]\nseeds: [0]\n",
    "scaling": "study: scaling\nname: y-scaling\nsizes: [{family: mlp, axis: width, models: "
    "[{name: mlp, options: {hidden: [4]}}, {name: mlp, options: {hidden: [8]}}], values: [4, 8]}]\n"
    "densities: [0.5]\nschemes: [erk_plus]\nseeds: [0]\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(STUDY_YAML))
def test_prunelab_run_runs_every_study_kind_from_yaml(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _yaml(tmp_path / f"{kind}.yaml", STUDY_YAML[kind] + COMMON)
    code = main(
        [
            "run",
            str(spec),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--workers",
            "1",
            "--set",
            "train.momentum=0.8",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    folder = tmp_path / "runs" / "reports" / f"y-{kind}"
    record = json.loads((folder / "study.json").read_text())
    assert record["kind"] == kind and record["study"]["train"]["momentum"] == 0.8  # --set reached the spec
    assert (folder / "report.md").is_file() and "## Provenance" in (folder / "report.md").read_text()


PLUGIN = """
import math
from torch import nn
from prunelab import register_model

@register_model("plugnet", family="mlp", input_rank=0, description="a plugin's model")
def plugnet(input_shape, num_classes, width=12):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_classes))
"""


@pytest.mark.slow
def test_a_plugin_model_goes_through_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = _yaml(tmp_path / "myplugin.py", PLUGIN)
    runs = str(tmp_path / "runs")
    common = ["--dataset", "synthetic", "--model", "plugnet", "--plugin", str(plugin)]
    assert (
        main(
            [
                "prune",
                *common,
                "--method",
                "snip",
                "--density",
                "0.5",
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        )
        == 0
    )
    assert (
        main(["train", *common, "--method", "snip", "--density", "0.5", "--epochs", "1", "--runs-dir", runs])
        == 0
    )
    assert "plugnet" in capsys.readouterr().out
    small = [
        "--densities",
        "0.5",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--runs-dir",
        runs,
        "--set",
        "model.options.width=10",
    ]
    assert (
        main(["tickets", *common, *small, "--methods", "lottery", "--checks", "reinit", "--workers", "1"])
        == 0
    )
    # two workers: the spawned processes load the plugin too
    assert (
        main(
            [
                "sanity",
                *common,
                *small,
                "--methods",
                "magnitude",
                "--checks",
                "shuffle_mask",
                "--random-tickets",
                "erk",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["report", runs, "--plugin", str(plugin)]) == 0
    assert capsys.readouterr().out.count("report:") == 2


class FactoryNet(nn.Module):
    """A user's own model, passed to a study as a factory (not registered by name)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.slow
def test_a_model_factory_stands_in_for_a_registered_name(tmp_path: Path) -> None:
    study = SanityStudy(
        name="factory",
        data=DataSpec(name="synthetic"),
        model=FactoryNet,
        train=TINY,
        methods=("snip",),
        densities=(0.5,),
        seeds=(0, 1),
        checks=("reinit",),
        random_tickets=(),
        include_dense=False,
    )
    assert study.model.name == "factorynet"
    inline, _ = run_study(study, tmp_path / "a", progress=False)
    pooled, html = run_study(study, tmp_path / "b", progress=False, workers=2)  # sent to workers by reference
    assert [c.accuracy for c in inline.cells] == [c.accuracy for c in pooled.cells] and inline.missing == 0
    assert rebuild_report(html.parent) == html


def test_a_lambda_factory_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        SanityStudy(model=lambda shape, classes: nn.Linear(1, 1))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "train.momentm=0.9"], "train.momentm: Extra inputs are not permitted"),
        (["train", "--set", "train.epochs"], "--set must look like key=value"),
        (["sanity", "--set", "densities=[2]"], "density"),
        (["lottery", "--set", "seeds.5=1"], "not an index"),
        (["tickets", "--plugin", "missing_plugin.py"], "plugin file 'missing_plugin.py' does not exist"),
        (["sanity", "--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_set_and_plugin_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_plugin_that_raises_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _yaml(tmp_path / "bad.py", "raise RuntimeError('boom')\n")
    assert main(["methods", "--plugin", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "failed while loading: RuntimeError: boom" in err and err.count("\n") == 1
