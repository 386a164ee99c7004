"""The two trained-weights studies: `prunelab tickets` (Su et al.) and `prunelab lottery` (Liu et al.
2019): their grids, trunk sharing, end-to-end reports, resume without recomputation, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunelab.cli import main
from prunelab.presets import tickets_preset
from prunelab.runs import waves as with_ancestors
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import LotteryStudy, SanityStudy, imp_densities
from prunelab.store import RunStore
from prunelab.studies import run_study
from prunelab.studies.sanity import study_runs
from prunelab.summaries.sanity import ticket_family
from prunelab.training.config import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="cosine", augment=False)


def tickets_study(
    dataset: str, *, train: TrainConfig, seeds: tuple[int, ...] = (0, 1, 2), **values: object
) -> SanityStudy:
    """The tickets preset with the given shortcut values, recipe and seeds."""
    payload = tickets_preset("default", {"dataset": dataset, **values})
    return SanityStudy.model_validate({**payload, "train": train.model_dump(), "seeds": list(seeds)})


def test_ticket_families_follow_su_et_al() -> None:
    assert ticket_family("snip") == ticket_family("lottery") == "initial ticket"
    assert ticket_family("lr_rewinding") == ticket_family("weight_rewinding") == "partially-trained ticket"
    assert ticket_family("hybrid") == "hybrid ticket"
    assert ticket_family("random") == "random ticket"


def test_tickets_grid_shares_the_dense_trunk_and_adds_the_random_label_trunk() -> None:
    study = tickets_study(
        "synthetic",
        methods=("lottery", "lr_rewinding", "snip"),
        checks=("random_labels", "shuffle_mask"),
        densities=(0.3,),
        seeds=(0,),
        train=TINY,
    )
    runs = study_runs(study)
    # dense + smart-ratio random ticket + 3 methods x (plain + 2 checks)
    assert len(runs) == 1 + 1 + 3 * 3
    waves = with_ancestors([r.spec for r in runs])
    # Only one run is added: the trunk trained on random labels. The plain trunk *is* the dense run.
    assert sum(len(w) for w in waves) == len(runs) + 1
    assert [s.training_corruption for s in waves[0] if s.pruning is None].count("random_labels") == 1


def test_imp_study_levels_are_validated() -> None:
    assert imp_densities([1, 2, 3]) == [0.8, 0.64, 0.512]
    study = tickets_study("synthetic", methods=("lottery",), densities=(0.64,), imp_fraction=0.2, train=TINY)
    lottery = [r for r in study_runs(study) if r.variant.method == "lottery"]
    assert lottery and all(
        r.spec.pruning and r.spec.pruning.ticket and r.spec.pruning.ticket.rounds == 2 for r in lottery
    )
    with pytest.raises(ValueError, match="not an IMP level"):
        tickets_study("synthetic", densities=(0.3,), imp_fraction=0.2, train=TINY)


def test_lottery_study_end_to_end_and_resume(tmp_path: Path) -> None:
    study = LotteryStudy(
        name="tiny-lottery",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [16]}),
        train=TINY,
        learning_rates=(0.1, 0.01),
        levels=(1, 2),
        seeds=(0, 1),
    )
    summary, html = run_study(study, tmp_path / "runs", progress=False)
    assert html.is_file() and (html.parent / "report.md").is_file() and (html.parent / "levels.csv").is_file()
    text = (html.parent / "report.md").read_text()
    assert "lr 0.1:" in text and "lr 0.01:" in text and "random re-init" in text
    for _lr, sub in summary.per_lr:
        assert sub.missing == 0
        assert {c.variant.label for c in sub.cells} == {"lottery", "lottery + reinit_fan"}
        assert [v.n_pairs for v in sub.verdicts] == [4]  # 2 levels x 2 seeds
    store = RunStore(tmp_path / "runs")
    executed = {row["name"]: len(store.executions(_spec(row["spec"]))) for row in store.list_runs()}
    assert set(executed.values()) == {1}  # every run, trunks and IMP rounds included, trained once
    # per lr and seed: trunk + 2 winning + 2 re-init
    assert len(executed) == 2 * 2 * 5
    run_study(study, tmp_path / "runs", progress=False)  # finished: nothing retrains
    assert all(len(store.executions(_spec(row["spec"]))) == 1 for row in store.list_runs())
    # `prunelab report` rebuilds it from the stored runs alone
    (html.parent / "report.md").unlink()
    assert main(["report", str(tmp_path / "runs")]) == 0
    assert (html.parent / "report.md").read_text() == text
    assert all(len(store.executions(_spec(row["spec"]))) == 1 for row in store.list_runs())


def _spec(canonical: str) -> object:
    from prunelab.spec import RunSpec

    body = json.loads(canonical)
    body.pop("v")
    return RunSpec.model_validate(body)


def test_tickets_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "tickets",
            "--dataset",
            "synthetic",
            "--methods",
            "lottery,hybrid",
            "--checks",
            "shuffle_mask",
            "--densities",
            "0.4",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--workers",
            "1",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "report:" in out
    report = (tmp_path / "reports" / "tickets-synthetic-mlp" / "report.md").read_text()
    assert "hybrid ticket" in report and "lottery" in report


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lottery", "--levels", "0"], "--levels must be at least 1"),
        (["lottery", "--lrs", "0.1,-1"], "learning_rates must be positive"),
        (["tickets", "--densities", "0.3", "--imp-fraction", "0.2"], "not an IMP level"),
        (["tickets", "--methods", "lotery"], "unknown method 'lotery'"),
        (["train", "--method", "lottery", "--density", "0.5", "--retrain", "later"], "retrain"),
        (
            ["train", "--method", "weight_rewinding", "--density", "0.5", "--keep", "end"],
            "keep must be an epoch",
        ),
        (["train", "--rounds", "3"], "need --method and --density"),
    ],
)
def test_bad_study_input_exits_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
