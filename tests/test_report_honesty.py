"""Reports that say what the numbers support: summaries built from hand-made results (no training),
reports written into a temporary folder, and their Markdown, CSVs and plots checked for the
correction applied, the n behind every verdict, no fake ``± 0.00``, clipped intervals, unreliable
latency flagged, and one colour per method with a legend that explains the hatching."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from helpers import TRAIN, borderline_drops, hand_sanity_study, sanity_results
from prunelab.report import plots
from prunelab.report.lottery import write_lottery_report
from prunelab.report.rethinking import write_rethinking_report
from prunelab.report.sanity import write_sanity_report
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import LotteryStudy, MethodSpec, RethinkingStudy, SanityStudy
from prunelab.studies import lottery as lottery_study
from prunelab.studies import rethinking as rethinking_study
from prunelab.studies import sanity as sanity_study
from prunelab.summaries.rethinking import latency_measurements
from prunelab.summaries.stats import INCONCLUSIVE
from prunelab.training.config import TrainConfig


def sanity(seeds: tuple[int, ...], **update: Any) -> SanityStudy:
    return hand_sanity_study(seeds, ("magnitude", "synflow"), **update)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Figure]]:
    """Every figure a report saves, by file name (the figure is inspected after it is written)."""
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        name = Path(str(fname)).name
        if name.startswith(".") and name.endswith(".tmp"):  # an atomic write's temporary name
            name = name[1:].rsplit(".", 3)[0]
        saved[name] = self
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    yield saved


def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _bars(ax: Axes) -> list[Rectangle]:
    """The drawn bars (the legend's proxy patches are not on the axes)."""
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() != 0]


def test_one_seed_sanity_report_says_inconclusive_and_n(tmp_path: Path) -> None:
    study = sanity((0,))
    summary = sanity_study.summarize(
        study, sanity_results(study, lambda v, s: 0.6 if v.check != "none" else 0.8)
    )
    write_sanity_report(summary, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "± 0.00" not in md and "±" not in md
    assert "80.00 (n = 1)" in md  # the accuracy table says n = 1 instead of a fake interval
    glance = md.split("## At a glance")[1].split("##")[0]
    # The headline no longer claims "passes 0/2" or "unaffected": it says why there is no verdict.
    assert "passes" not in glance and "unaffected" not in glance
    assert f"all 2 checks {INCONCLUSIVE}" in glance and "n = 1 pair(s)" in glance
    table = md.split("## Verdict per method and check")[1].split("##")[0]
    assert table.count(INCONCLUSIVE) == 4 and "n (pairs)" in table
    assert "> **Warning:** too few seeds" in md and "magnitude + invert (n = 1)" in md
    assert "no test had enough pairs to run" in md
    with open(tmp_path / "verdicts.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["conclusion"] for r in rows} == {INCONCLUSIVE} and {r["n_pairs"] for r in rows} == {"1"}
    assert "Warning:" in (tmp_path / "report.html").read_text()


def test_two_seed_sanity_report_clips_intervals(tmp_path: Path) -> None:
    study = sanity((0, 1))
    summary = sanity_study.summarize(
        study, sanity_results(study, lambda v, s: (0.99, 0.90)[s] if v.check == "none" else 0.5)
    )
    cell = summary.cell("magnitude", 0.5)
    assert cell is not None and cell.accuracy.high > 1.0
    write_sanity_report(summary, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "94.50 [" in md and "100.00]" in md
    assert f"{100 * cell.accuracy.high:.2f}" not in md  # the unclipped bound is not displayed...
    with open(tmp_path / "cells.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["variant"] == "magnitude")
    assert float(row["mean_acc"]) + float(row["ci_half"]) > 1.0  # ...but kept in the data
    assert "Warning" not in md


def test_sanity_report_names_the_correction_and_hatches_by_adjusted_p(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    study = sanity((0, 1, 2))
    summary = sanity_study.summarize(study, sanity_results(study, borderline_drops))
    write_sanity_report(summary, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Holm-Bonferroni correction over 4 tests (family-wise alpha = 0.05)" in md
    assert "p (raw)" in md and "p (Holm-adjusted)" in md
    assert "0.038 | 0.151 | 3 | no significant effect" in md  # raw, adjusted (4 x 0.0377), n, verdict
    with open(tmp_path / "verdicts.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["correction"] for r in rows} == {"holm"} and {r["n_tests"] for r in rows} == {"4"}
    assert all(float(r["p_adjusted"]) == pytest.approx(4 * float(r["p_value"])) for r in rows)

    # The check-effect plot: significant only by the raw p, so every bar is hatched; the legend
    # explains both solid and hatched; each method has its report colour.
    colours = plots.sanity_colours(summary)
    ax = figures["check_effects.png"].axes[0]
    legend = _legend(ax)
    assert "solid: significant (adjusted p < 0.05)" in legend
    assert "hatched: not significant or inconclusive" in legend
    assert {"magnitude", "synflow"} <= set(legend)
    bars = _bars(ax)
    assert len(bars) == 4 and all(bar.get_hatch() == "//" for bar in bars)
    bar_colours = {to_rgb(bar.get_facecolor()) for bar in bars}
    assert bar_colours == {to_rgb(colours["magnitude"]), to_rgb(colours["synflow"])}
    lines = {
        line.get_label(): to_rgb(line.get_color())
        for line in figures["accuracy_vs_density.png"].axes[0].lines
    }
    assert lines["magnitude"] == to_rgb(colours["magnitude"]) and lines["synflow"] == to_rgb(
        colours["synflow"]
    )

    figures.clear()
    none = sanity((0, 1, 2), correction="none")
    write_sanity_report(
        sanity_study.summarize(none, sanity_results(none, borderline_drops)), tmp_path / "none"
    )
    assert (
        "no multiple-comparison correction: 4 tests, each at alpha = 0.05"
        in (tmp_path / "none" / "report.md").read_text()
    )
    bars = _bars(figures["check_effects.png"].axes[0])
    assert len(bars) == 4 and not any(bar.get_hatch() for bar in bars)


def test_method_colours_are_fixed_and_distinct() -> None:
    first = plots.method_colours(["snip", "magnitude", "plugin_a", "plugin_b"])
    again = plots.method_colours(["magnitude", "plugin_a", "snip", "plugin_b"])
    assert first["snip"] == again["snip"] == plots.FIXED_COLOURS["snip"]
    assert first["magnitude"] == again["magnitude"] == plots.FIXED_COLOURS["magnitude"]
    assert len(set(first.values())) == 4
    options = plots.method_colours(["l1norm(percent=0.5)", "l1norm(percent=0.7)"])
    assert options["l1norm(percent=0.5)"] == plots.FIXED_COLOURS["l1norm"]
    assert options["l1norm(percent=0.7)"] != options["l1norm(percent=0.5)"]


def test_lottery_report_names_the_correction_over_both_learning_rates(tmp_path: Path) -> None:
    study = LotteryStudy(
        name="hand-lottery",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [8]}),
        train=TRAIN,
        learning_rates=(0.1, 0.01),
        levels=(1,),
        seeds=(0, 1, 2),
    )
    results: dict[str, dict[str, Any]] = {}
    for lr in study.learning_rates:
        results |= sanity_results(study.at_lr(lr), borderline_drops)
    write_lottery_report(lottery_study.summarize_lottery(study, results), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Holm-Bonferroni correction over 2 tests" in md
    assert md.count("**no significant difference**") == 2 and "adjusted p = 0.075" in md
    with open(tmp_path / "verdicts.csv") as handle:
        assert {r["n_tests"] for r in csv.DictReader(handle)} == {"2"}


def _record(median: float, iqr: float, **extra: Any) -> dict[str, Any]:
    return {"batch_size": 64, "median_ms": median, "iqr_ms": iqr, "throughput": 1.0, "device": "cpu", **extra}


RETHINKING = RethinkingStudy(
    name="hand-rethinking",
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="cnn1d", options={"bn": True, "channels": 6}),
    train=TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False),
    methods=(MethodSpec(name="l1norm"), MethodSpec(name="slimming")),
    seeds=(0,),
)


def _rethinking_results(
    study: RethinkingStudy, latency: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for method in study.methods:
        for seed in study.seeds:
            for row, spec in rethinking_study.method_specs(study, method, seed).items():
                result: dict[str, Any] = {"status": "done", "final_test_acc": 0.8, "epochs": 2}
                if row == "pruned":
                    result |= {
                        "params": {"full": 1000, "pruned": 400},
                        "flops": {"full": 8000, "pruned": 2000},
                        "masked": False,
                        "latency": latency[method.label],
                    }
                results[spec.run_hash()] = result
    return results


def test_rethinking_report_flags_unreliable_latency_and_one_seed(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    latency = {
        # a noisy full-model timing: flagged by the measurement itself
        "l1norm": {
            "cpu": {
                "full": [_record(2.0, 0.7, rel_iqr=0.35, unreliable=True)],
                "pruned": [_record(1.0, 0.01, rel_iqr=0.01, unreliable=False)],
            }
        },
        # a steady one
        "slimming": {
            "cpu": {
                "full": [_record(2.0, 0.02, rel_iqr=0.01, unreliable=False)],
                "pruned": [_record(0.5, 0.005, rel_iqr=0.01, unreliable=False)],
            }
        },
    }
    summary = rethinking_study.summarize(RETHINKING, _rethinking_results(RETHINKING, latency))
    assert any(
        "unreliable latency" in note and "l1norm (cpu, batch 64: spread 35%)" in note
        for note in summary.notes
    )
    write_rethinking_report(summary, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "2.00× (cpu; unreliable: spread 35%)" in md  # table and headline mark the flagged speedup
    assert "measured CPU speedup 2.00× at batch 64 (unreliable: spread 35%)" in md
    assert "4.00× (cpu)" in md and "spread 1%" not in md  # the steady one is not marked
    assert "2.00 ms (IQR 0.70; cpu, batch 64)" in md and "median, IQR" in md
    assert "± 0.00" not in md and "80.00 (n = 1)" in md
    assert md.count(f"{INCONCLUSIVE}") >= 4 and "p (Holm-adjusted)" in md and "n (seeds)" in md
    assert "> **Warning:** too few seeds" in md and "> **Warning:** unreliable latency" in md
    with open(tmp_path / "latency.csv") as handle:
        flags = {r["method"]: r["unreliable"] for r in csv.DictReader(handle)}
    assert flags == {"l1norm": "True", "slimming": "False"}
    # one colour per method in both plots; the hollow (unreliable) marker is explained
    colours = plots.method_colours(["l1norm", "slimming"])
    bars = [c for c in figures["accuracy_by_protocol.png"].axes[0].containers if isinstance(c, BarContainer)]
    assert [to_rgb(c.patches[0].get_facecolor()) for c in bars] == [
        to_rgb(colours["l1norm"]),
        to_rgb(colours["slimming"]),
    ]
    scatter = figures["speedup_vs_flops.png"].axes[0]
    assert "hollow: unreliable timing" in _legend(scatter)


def test_old_latency_records_get_their_spread_from_iqr() -> None:
    old = {"cpu": {"full": [_record(2.0, 1.0)], "pruned": [_record(1.0, 0.05)]}}
    (m,) = latency_measurements(old)
    assert m.speedup == 2.0 and m.spread == pytest.approx(0.5) and m.unreliable
    steady = {"cpu": {"full": [_record(2.0, 0.02)], "pruned": [_record(1.0, 0.01)]}}
    assert not latency_measurements(steady)[0].unreliable
