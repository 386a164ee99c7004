"""The Rethinking study: expansion into stored runs (shared large model), an end-to-end tiny study with
its report, resume without recomputation, and the CLI's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from prunelab.cli import main
from prunelab.errors import PrunelabError
from prunelab.presets import rethinking_preset as preset_payload
from prunelab.runs import RunContext, execute
from prunelab.runs import structured as rt
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.structured import StructuredRunSpec as RethinkingRunSpec
from prunelab.spec.studies import MethodSpec, RethinkingStudy
from prunelab.store import RunStore
from prunelab.studies import rebuild_report, run_study
from prunelab.studies.rethinking import study_runs
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import scratch_b_epochs


def rethinking_preset(preset: str, **values: object) -> RethinkingStudy:
    return RethinkingStudy.model_validate(preset_payload(preset, values))


def run_rethinking_study(study: RethinkingStudy, runs_dir: Path, **kwargs: object) -> tuple[object, Path]:
    return run_study(study, runs_dir, **kwargs)  # type: ignore[arg-type]


TINY = RethinkingStudy(
    name="tiny",
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="cnn1d", options={"bn": True, "channels": 6}),
    train=TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False),
    methods=("l1norm", "slimming", "weight_level"),
    seeds=(0, 1),
)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Timing is what the study measures, not what these tests check: one short repeat is enough.
    monkeypatch.setattr(rt, "LATENCY_TIMING", {"warmup": 0, "repeats": 1, "min_repeat_ms": 0.0})
    # Tiny models: one thread is several times faster than two fighting over a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_study_expands_into_runs_and_shares_the_plain_large_model() -> None:
    study = TINY.model_copy(
        update={"methods": tuple(MethodSpec(name=m) for m in ("l1norm", "thinet", "slimming"))}
    )
    runs = study_runs(study)
    stages = [r.stage for r in runs]
    # per seed: plain large (shared by l1norm and thinet) + slimming's sparsity-trained large model,
    # 3 prune runs, 3 x 3 protocol runs
    assert stages.count("large") == 2 * 2
    assert stages.count("prune") == 2 * 3
    assert sum(stages.count(p) for p in ("finetune", "scratch_e", "scratch_b")) == 2 * 9
    assert len(runs) == len({r.spec.run_hash() for r in runs}) == 28
    # dependency order: every parent comes before its children
    position = {r.spec.run_hash(): i for i, r in enumerate(runs)}
    for i, run in enumerate(runs):
        parent = run.spec.parent()
        assert parent is None or position[parent.run_hash()] < i
    prunes = {r.method: r.spec for r in runs if r.stage == "prune" and r.seed == 0}
    plain_l1, plain_thinet = prunes["l1norm"].parent(), prunes["thinet"].parent()
    assert plain_l1 is not None and plain_l1 == plain_thinet and plain_l1.method is None
    slim = prunes["slimming"].parent()
    assert slim is not None and slim.method == "slimming" and slim.run_hash() != plain_l1.run_hash()


def test_run_specs_are_typed_and_hash_what_they_use() -> None:
    spec = RethinkingRunSpec(stage="scratch_e", method="l1norm", seed=1)
    assert json.loads(spec.canonical())["stage"] == "scratch_e"
    assert spec.run_name().startswith("rethinking-mnist1d-mlp-l1norm-scratche-s1-")
    assert spec.run_hash() != RethinkingRunSpec(stage="scratch_b", method="l1norm", seed=1).run_hash()
    # a fine-tune setting on a scratch run, or a pruned run without a method, is an error
    with pytest.raises(ValueError):
        RethinkingRunSpec(stage="scratch_e", method="l1norm", finetune_epochs=3)
    with pytest.raises(ValueError):
        RethinkingRunSpec(stage="prune")
    with pytest.raises(ValueError, match="unknown option"):
        MethodSpec(name="l1norm", options={"percent": 0.3})
    with pytest.raises(ValueError, match="valid choices"):
        MethodSpec(name="obd")


def test_presets() -> None:
    small = rethinking_preset("small")
    assert (small.data.name, small.model.name, small.model.options) == ("mnist1d", "cnn1d", {"bn": True})
    assert small.seeds == (0, 1, 2) and small.train.epochs == 30 and small.train.schedule == "multistep"
    names = [m.name for m in small.methods]
    assert "sss" not in names and {"l1norm", "slimming", "weight_level"} <= set(names)  # no blocks in a CNN
    assert "sss" in [m.name for m in rethinking_preset("small", dataset="digits", model="resnet20").methods]
    picked = rethinking_preset("small", methods=["l1norm"], method_option=["l1norm.ratio=0.25"], epochs=4)
    assert (
        picked.methods == (MethodSpec(name="l1norm", options={"ratio": 0.25}),) and picked.train.epochs == 4
    )
    assert rethinking_preset("paper", methods=["slimming"]).train == TrainConfig()  # the paper's 160 epochs
    with pytest.raises(PrunelabError, match="valid choices"):
        rethinking_preset("small", dataset="imagenet22k")


@pytest.mark.slow
def test_tiny_study_end_to_end_report_and_resume(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    summary, html = run_rethinking_study(TINY, runs_dir, progress=False)
    assert summary.missing == 0
    store = RunStore(runs_dir)
    runs = study_runs(TINY)
    assert len(runs) == 2 * (2 + 3 + 9)
    for method in summary.methods:
        for row in ("large", "pruned", "finetune", "scratch_e", "scratch_b"):
            assert method.accuracy[row].n == 2, (method.method, row)
        assert method.flops["pruned"] < method.flops["full"] and method.params_density < 1
        assert method.epochs["scratch_e"] == [2, 2] and method.epochs["finetune"] == [1, 1]
        assert {c.protocol for c in method.comparisons} == {"scratch_e", "scratch_b"}
        assert all(c.n_pairs == 2 for c in method.comparisons)
        assert "cpu" in method.latency
    # Scratch-B trained exactly int(E * FLOPs(full) / FLOPs(pruned)) epochs, from the stored counts
    for run in runs:
        if run.stage == "scratch_b":
            parent = run.spec.parent()
            assert parent is not None
            flops = (store.result(parent) or {})["flops"]
            result = store.result(run.spec) or {}
            assert result["epochs"] == scratch_b_epochs(2, flops["full"], flops["pruned"]) >= 2
    weight_level = next(m for m in summary.methods if m.method == "weight_level")
    assert weight_level.masked
    out = html.parent
    for name in (
        "report.html",
        "report.md",
        "accuracy_by_protocol.png",
        "accuracy.csv",
        "verdicts.csv",
        "latency.csv",
    ):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "paired t-test" in md and "Scratch-B" in md and "l1norm" in md and "density" in md
    # 3 methods x 2 scratch protocols, corrected as one family; latency as median and IQR
    assert "Holm-Bonferroni correction over 6 tests" in md and "p (Holm-adjusted)" in md
    assert "IQR" in md and "± 0.00" not in md
    assert "data:image/png;base64," in html.read_text()

    # each run trained (or pruned) exactly once; a second call recomputes nothing
    assert all(store.executions(r.spec) == [0] for r in runs)
    again, _ = run_rethinking_study(TINY, runs_dir, progress=False)
    assert all(store.executions(r.spec) == [0] for r in runs)
    assert [m.accuracy for m in again.methods] == [m.accuracy for m in summary.methods]
    rebuilt = rebuild_report(out)
    assert rebuilt == html


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    study = TINY.model_copy(update={"methods": (MethodSpec(name="sfp"),), "seeds": (0,)})
    store = RunStore(tmp_path)
    large = study_runs(study)[0].spec
    assert large.stage == "large" and large.method == "sfp"  # soft-pruned large model: its own run
    stopped = execute(large, store, RunContext(stop_after_epoch=1))
    assert stopped["status"] == "stopped" and not store.is_done(large)
    done = execute(large, store)
    assert done["epochs"] == 2 and store.executions(large) == [0, 1]
    # a protocol run on its own runs its prune run first (the large model is finished: not retrained)
    protocol = study_runs(study)[2].spec
    assert protocol.stage in ("finetune", "scratch_e", "scratch_b")
    execute(protocol, store)
    assert store.is_done(protocol) and store.is_done(protocol.parent())
    assert store.executions(large) == [0, 1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--preset", "huge"],
        ["--methods", "l1norm,obd"],
        ["--seeds", "0"],
        ["--epochs", "0"],
        ["--workers", "0"],
        ["--dataset", "imagenet22k"],
        ["--method-option", "l1norm.percent=0.5"],
        ["--method-option", "ratio=0.5"],
        ["--device", "tpu"],
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rethinking", "--runs-dir", str(tmp_path), *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_sss_trains_its_own_large_model_with_block_factors(tmp_path: Path) -> None:
    study = RethinkingStudy(
        name="sss",
        data=DataSpec(name="synthetic", options={"input_shape": [3, 8, 8]}),
        model=ModelSpec(name="resnet20", options={"width": 4}),
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05, augment=False),
        methods=(MethodSpec(name="sss"),),
        seeds=(0,),
    )
    summary, _ = run_rethinking_study(study, tmp_path, progress=False)
    assert summary.missing == 0
    method = summary.methods[0]
    assert method.architecture is not None and "blocks" in method.architecture["options"]
    large = study_runs(study)[0].spec
    assert large.method == "sss" and "sss_scale" in " ".join(RunStore(tmp_path).load_weights(large))
