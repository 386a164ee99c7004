"""End to end: a small sanity-check study runs, resumes, summarises and writes its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import SanityStudy
from prunelab.studies import run_study
from prunelab.studies.sanity import study_runs
from prunelab.summaries.stats import mean_ci, paired_test
from prunelab.training.config import TrainConfig

STUDY = SanityStudy(
    name="tiny",
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="mlp", options={"hidden": [32]}),
    train=TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="cosine"),
    methods=("snip", "magnitude"),
    densities=(0.3,),
    seeds=(0, 1),
    checks=("random_labels", "shuffle_mask", "invert"),
    random_tickets=("uniform", "smart_ratio"),
)


def test_grid_skips_data_checks_for_data_free_methods() -> None:
    runs = study_runs(STUDY)
    labels = {r.variant.label for r in runs}
    assert "snip + random_labels" in labels and "magnitude + random_labels" not in labels
    # per seed: dense + 2 tickets + snip (1 + 3 checks) + magnitude (1 + 2 checks)
    assert len(runs) == 2 * (1 + 2 + 4 + 3)


@pytest.mark.slow
def test_study_end_to_end_and_report(tmp_path: Path) -> None:
    summary, html = run_study(STUDY, tmp_path / "runs", progress=False)
    assert summary.missing == 0
    assert {(v.method, v.check) for v in summary.verdicts} == {
        ("snip", "random_labels"),
        ("snip", "shuffle_mask"),
        ("snip", "invert"),
        ("magnitude", "shuffle_mask"),
        ("magnitude", "invert"),
    }
    assert all(v.n_pairs == 2 for v in summary.verdicts)
    # one family: Holm over every verdict with a p-value; the adjusted p is never below the raw one
    assert all(v.p.correction == "holm" and v.p.family == len(summary.verdicts) for v in summary.verdicts)
    assert all(v.p_adjusted >= v.p_raw for v in summary.verdicts)
    assert summary.dense is not None and summary.dense.n == 2
    out = html.parent
    for name in (
        "report.html",
        "report.md",
        "accuracy_vs_density.png",
        "check_effects.png",
        "layer_densities.png",
        "cells.csv",
        "verdicts.csv",
        "study.json",
    ):
        assert (out / name).is_file(), name
    page = html.read_text()
    assert "At a glance" in page and "paired t-test" in page and "data:image/png;base64" in page
    md = (out / "report.md").read_text()
    assert "random ticket (smart_ratio)" in md
    assert f"Holm-Bonferroni correction over {len(summary.verdicts)} tests" in md and "± 0.00" not in md
    # A second call finds every run finished and trains nothing.
    again, _ = run_study(STUDY, tmp_path / "runs", progress=False)
    assert [c.accuracy.mean for c in again.cells] == [c.accuracy.mean for c in summary.cells]


@pytest.mark.slow
def test_process_pool_gives_the_same_results_as_inline(tmp_path: Path) -> None:
    small = STUDY.model_copy(update={"methods": ("magnitude",), "checks": ("invert",), "random_tickets": ()})
    inline, _ = run_study(small, tmp_path / "a", progress=False)
    pooled, _ = run_study(small, tmp_path / "b", progress=False, workers=2)
    assert [c.values for c in inline.cells] == [c.values for c in pooled.cells]


def test_statistics_by_hand() -> None:
    est = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027 -> half width 4.3027 / sqrt(3) = 2.4841
    assert est.mean == 2.0 and est.half_width == pytest.approx(2.4841, abs=1e-4)
    test = paired_test([0.5, 0.6, 0.7], [0.6, 0.8, 0.9])
    # diffs -0.1, -0.2, -0.2: mean -0.1667, sd 0.0577, t = -5.0, df 2 -> p = 0.0377
    assert test.diff.mean == pytest.approx(-1 / 6)
    assert test.p_value == pytest.approx(0.0377, abs=1e-3)
