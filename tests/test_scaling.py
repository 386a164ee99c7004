"""The size-scaling study and ``prunelab evaluate`` (Liu et al. 2022): the grid, the verdicts on
hand-made results, the report, the evaluation run kind and the CLI's one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from prunelab.cli import main
from prunelab.errors import PrunelabError
from prunelab.runs import RunContext, execute
from prunelab.runs.evaluation import metric_direction
from prunelab.spec import RunSpec, parse_model
from prunelab.spec.evaluation import EvaluationConfig, EvaluationSpec
from prunelab.spec.studies import ScalingStudy
from prunelab.store import RunStore
from prunelab.studies import run_study
from prunelab.studies.scaling import dense_run, scaling_runs, sparse_run, summarize_scaling
from prunelab.summaries.scaling import noninferiority_p

DATA = {"name": "mnist1d", "options": {"num_samples": 500}}
TRAIN = {"epochs": 2, "batch_size": 50, "lr": 0.05, "augment": False}


def _study(**update: Any) -> ScalingStudy:
    payload = {
        "name": "tiny",
        "data": DATA,
        "train": TRAIN,
        "sizes": [
            {
                "family": "mlp",
                "axis": "width",
                "models": [{"name": "mlp", "options": {"hidden": [w]}} for w in (8, 16, 32)],
                "values": [8, 16, 32],
            }
        ],
        "densities": [0.5],
        "schemes": ["uniform", "erk"],
        "seeds": [0, 1, 2],
        **update,
    }
    return parse_model(ScalingStudy, payload)


def test_noninferiority_p_by_hand() -> None:
    # diffs -0.01, 0, +0.01 (mean 0, sd 0.01, n 3), margin 0.02: t = 0.02 / (0.01/sqrt 3) = 3.464,
    # df 2: one-sided p = 0.0371 (t table: t_0.95,2 = 2.92 < 3.46 < t_0.975,2 = 4.30).
    assert noninferiority_p([-0.01, 0.0, 0.01], 0.02) == pytest.approx(0.03709, abs=1e-4)
    assert math.isnan(noninferiority_p([0.1], 0.01))
    assert noninferiority_p([0.0, 0.0], 0.01) == 0.0 and noninferiority_p([-0.05, -0.05], 0.01) == 1.0


def test_the_grid_pairs_every_sparse_run_with_its_dense_twin() -> None:
    study = _study(evaluate={"attacks": ["fgsm"], "epsilons": [0.1]})
    runs = scaling_runs(study)
    training = [r for r in runs if isinstance(r, RunSpec)]
    evaluations = [r for r in runs if isinstance(r, EvaluationSpec)]
    assert len(training) == 3 * 3 * (1 + 2) and len(evaluations) == len(training)
    assert len({r.run_hash() for r in runs}) == len(runs)
    model = study.sizes[0].models[0]
    twin, sparse = dense_run(study, model, 1), sparse_run(study, model, 1, "erk", 0.5)
    assert sparse.model == twin.model and sparse.seed == twin.seed and sparse.train == twin.train
    assert (
        sparse.pruning is not None
        and sparse.pruning.method == "random"
        and sparse.pruning.allocation == "erk"
    )


def test_a_scheme_must_place_weights_at_random() -> None:
    with pytest.raises(PrunelabError, match="scheme 'global' ranks scores"):
        _study(schemes=["global"])
    with pytest.raises(PrunelabError, match="give one size value per model"):
        _study(sizes=[{"family": "f", "axis": "depth", "models": ["mlp", "cnn1d"], "values": [1]}])


def _results(study: ScalingStudy, gap: dict[int, float]) -> dict[str, dict[str, Any]]:
    """Dense at 0.9 (+ seed noise); sparse at 0.9 - gap[index] with paired noise of +-0.002."""
    out: dict[str, dict[str, Any]] = {}
    for index, model in enumerate(study.sizes[0].models):
        for seed in study.seeds:
            dense = 0.9 + 0.01 * seed
            out[dense_run(study, model, seed).run_hash()] = {"status": "done", "final_test_acc": dense}
            for scheme in study.schemes:
                noise = (-0.002, 0.0, 0.002)[seed]
                run = sparse_run(study, model, seed, scheme, 0.5)
                out[run.run_hash()] = {
                    "status": "done",
                    "final_test_acc": dense - gap[index] + noise,
                    "per_layer": [{"name": "layers.0.weight", "kept": 5, "total": 10}],
                    "size": {"params": 100, "nonzero_params": 60, "flops": 200, "nonzero_flops": 120},
                }
    return out


def test_the_verdict_names_the_size_from_which_random_matches_dense() -> None:
    study = _study(margin=0.01)
    summary = summarize_scaling(study, _results(study, {0: 0.10, 1: 0.0, 2: -0.004}))
    trends = {t.scheme: t for t in summary.trends}
    assert trends["uniform"].matches_from == 16 and trends["erk"].matches_from == 16
    assert "from width 16 on" in trends["uniform"].text and trends["uniform"].closing
    smallest = next(p for p in summary.points if p.value == 8 and p.scheme == "uniform")
    assert smallest.worse and not smallest.matches and smallest.test.diff.mean == pytest.approx(-0.1)
    assert smallest.size["nonzero_params"] == 60
    assert summary.layer_densities[("mlp(hidden=[8])", "uniform", 0.5)] == [("layers.0.weight", 0.5)]
    never = summarize_scaling(study, _results(study, {0: 0.1, 1: 0.1, 2: 0.1}))
    assert all(t.matches_from is None and "does not match" in t.text for t in never.trends)


def test_metric_directions() -> None:
    assert metric_direction("ece") is False and metric_direction("fpr95_msp@svhn") is False
    assert metric_direction("auroc_energy@svhn") and metric_direction("fgsm@0.1")
    assert metric_direction("shift_acc@mnist1d_shift")


def test_evaluation_config_refuses_bad_input() -> None:
    with pytest.raises(PrunelabError, match="epsilon must be >= 0"):
        parse_model(EvaluationConfig, {"attacks": ["fgsm"], "epsilons": [-0.1]})
    with pytest.raises(PrunelabError, match="unknown dataset 'nope'"):
        parse_model(EvaluationConfig, {"ood": ["nope"]})
    with pytest.raises(PrunelabError, match="need epsilons"):
        parse_model(EvaluationConfig, {"attacks": ["pgd"]})


def _run() -> RunSpec:
    return parse_model(
        RunSpec,
        {
            "data": DATA,
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "pruning": {"method": "random", "density": 0.5, "allocation": "erk"},
            "train": TRAIN,
        },
    )


def test_an_evaluation_is_a_stored_run_computed_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    metrics = {"attacks": ["fgsm", "pgd"], "epsilons": [0.0, 0.2], "pgd_steps": 3, "attack_examples": 50}
    evaluation = parse_model(EvaluationSpec, {"run": _run().model_dump(), "metrics": metrics})
    first = execute(evaluation, store, RunContext())  # trains the run first (its parent)
    assert store.result(_run()) is not None
    assert set(first["metrics"]) == {"accuracy", *evaluation.metrics.metrics}
    assert first["metrics"]["fgsm@0.2"] <= first["adversarial"]["fgsm"]["0"]
    assert first["metrics"]["accuracy"] == pytest.approx(store.result(_run())["final_test_acc"])
    assert 0 <= first["metrics"]["ece"] <= 1 and first["calibration"]["bins"]
    stamp = (store.run_dir(evaluation) / "result.json").stat().st_mtime_ns
    again = execute(evaluation, store, RunContext())
    assert again["metrics"] == first["metrics"]
    assert (
        store.run_dir(evaluation) / "result.json"
    ).stat().st_mtime_ns == stamp  # read back, not recomputed
    other = EvaluationSpec(run=_run(), metrics=EvaluationConfig(bins=10))
    assert other.run_hash() != evaluation.run_hash()


@pytest.mark.slow
def test_a_small_scaling_study_runs_and_writes_its_report(tmp_path: Path) -> None:
    study = _study(seeds=[0, 1], evaluate={"calibration": True})
    summary, report = run_study(study, tmp_path / "runs", workers=1, progress=False)
    assert summary.missing == 0 and len(summary.points) == 3 * 2 and len(summary.trends) == 2
    folder = report.parent
    for name in ("report.md", "accuracy_vs_width.png", "gap_vs_width.png", "points.csv", "metrics.csv"):
        assert (folder / name).is_file()
    text = (folder / "report.md").read_text()
    assert "non-inferiority" in text and "Per-layer densities" in text and "| ece |" in text


def _train_two_runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for density in ("0.5", "1.0"):
        args = ["train", "--dataset", "mnist1d", "--model", "mlp", "--epochs", "2", "--runs-dir", str(runs)]
        args += ["--set", "data.options.num_samples=500", "--set", "train.batch_size=50"]
        if density != "1.0":
            args += ["--method", "random", "--density", density]
        assert main(args) == 0
    return runs


@pytest.mark.slow
def test_prunelab_evaluate_writes_calibration_and_adversarial_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _train_two_runs(tmp_path)
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate", "--runs-dir", str(runs), "--metrics", "calibration,adversarial", "--out", str(out),
            "--workers", "1", "--set", "epsilons=[0, 0.1]", "--set", "pgd_steps=2",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "evaluated 2 runs" in captured.out
    for name in ("report.md", "report.html", "reliability.png", "adversarial.png", "evaluations.csv"):
        assert (out / name).is_file()
    rows = (out / "evaluations.csv").read_text().splitlines()
    assert len(rows) == 3 and "fgsm@0.1" in rows[0] and "ece" in rows[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ood=[nope]"], "unknown dataset 'nope'"),
        (["--metrics", "adversarial", "--set", "epsilons=[-0.1]"], "epsilon must be >= 0"),
        (["--metrics", "colour"], "unknown evaluation 'colour'"),
        (["--run", "no-such-run"], "no trained run 'no-such-run'"),
        (["--study", "nostudy"], "no study 'nostudy'"),
    ],
)
def test_prunelab_evaluate_bad_input_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    if not runs.exists():
        _train_two_runs(tmp_path)
        capsys.readouterr()
    code = main(["evaluate", "--runs-dir", str(runs), "--workers", "1", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluating_an_unfinished_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path / "runs")
    run = _run()
    assert execute(run, store, RunContext(stop_after_epoch=1))["status"] == "stopped"
    code = main(["evaluate", "--runs-dir", str(tmp_path / "runs"), "--run", run.run_hash(), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "has not finished" in err
    with pytest.raises(PrunelabError, match="has not finished"):
        from prunelab.runs.evaluation import run_evaluation

        run_evaluation(EvaluationSpec(run=run), store, RunContext())
    assert json.loads((store.run_dir(run) / "spec.json").read_text())["kind"] == "training"


@pytest.mark.slow
def test_a_sanity_study_adds_the_evaluated_metrics_as_columns(tmp_path: Path) -> None:
    from prunelab.spec.studies import SanityStudy

    study = parse_model(
        SanityStudy,
        {
            "name": "s-eval",
            "data": DATA,
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "train": TRAIN,
            "methods": ["magnitude"],
            "densities": [0.5],
            "seeds": [0, 1],
            "checks": ["shuffle_mask"],
            "random_tickets": ["erk"],
            "sampling": "bernoulli",
            "evaluate": {"calibration": True},
        },
    )
    summary, report = run_study(study, tmp_path / "runs", workers=1, progress=False)
    assert summary.metrics[("magnitude", 0.5)]["ece"].n == 2
    text = report.with_name("report.md").read_text()
    assert "## Beyond accuracy" in text and "Bernoulli" in text


@pytest.mark.slow
def test_structured_runs_are_evaluated_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every trained run of a Rethinking study (large, pruned, fine-tuned, scratch) loads its own
    architecture and weights for the evaluation."""
    from prunelab.spec.studies import RethinkingStudy

    study = parse_model(
        RethinkingStudy,
        {
            "name": "r-eval",
            "data": DATA,
            "model": {"name": "cnn1d", "options": {"bn": True, "channels": 6}},
            "train": TRAIN,
            "methods": ["l1norm"],
            "seeds": [0],
        },
    )
    run_study(study, tmp_path / "runs", workers=1, progress=False)
    code = main(
        ["evaluate", "--runs-dir", str(tmp_path / "runs"), "--study", "r-eval", "--metrics", "calibration"]
        + ["--workers", "1", "--out", str(tmp_path / "eval")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = (tmp_path / "eval" / "evaluations.csv").read_text().splitlines()[1:]
    groups = {row.split(",")[1] for row in rows}
    assert {"cnn1d l1norm prune", "cnn1d l1norm finetune", "cnn1d plain large"} <= groups
    store = RunStore(tmp_path / "runs")
    for line in rows:  # the evaluation's accuracy is the run's own
        name = line.split(",")[0]
        result = json.loads((store.root / name / "result.json").read_text())
        evaluated = next(p for p in store.root.glob(f"eval-{name}-*/result.json"))
        assert json.loads(evaluated.read_text())["metrics"]["accuracy"] == pytest.approx(
            result["final_test_acc"], abs=1e-6
        )
