"""The ``prunelab evaluate`` report: calibration (with reliability diagrams), OOD detection and
adversarial / shift robustness of evaluated runs, grouped by what differs between runs but the seed
(method, allocation, density, checks). Markdown, self-contained HTML, figures and CSV."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from prunelab.report.files import atomic_csv, save_figure_atomic, write_text_atomic
from prunelab.report.page import html_page, html_table, markdown_page, md_table, png_img
from prunelab.report.plots import _STYLE, method_colours
from prunelab.summaries.provenance import provenance_summary
from prunelab.summaries.stats import mean_ci


def group_label(run: Any) -> str:
    """What a run is, seed aside: ``dense`` or ``method[/allocation] d=<density>[ +checks]``; a
    structured run: ``method stage``."""
    if hasattr(run, "stage"):
        return f"{run.model.name} {run.method or 'plain'} {run.stage}"
    pruning = run.pruning
    if pruning is None:
        return f"{run.model.name} dense"
    label = f"{run.model.name} {pruning.method}"
    if pruning.allocation and pruning.allocation != "global":
        label += f"/{pruning.allocation}"
    label += f" d={pruning.density:g}"
    if pruning.checks:
        label += " +" + "+".join(pruning.checks)
    return label


def _groups(results: Sequence[tuple[Any, Mapping[str, Any] | None]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for spec, result in results:
        if result and result.get("status") == "done":
            groups[group_label(spec.run)].append(result)
    return dict(sorted(groups.items()))


#: More groups than this and the figures show only the runs without sanity checks (the table has all).
MAX_PLOTTED_GROUPS = 12


def plotted_groups(groups: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, list[Mapping[str, Any]]]:
    """The groups the figures show: all of them, or, when there are more than
    :data:`MAX_PLOTTED_GROUPS`, those without sanity checks (the checked variants stay in the table)."""
    if len(groups) <= MAX_PLOTTED_GROUPS:
        return dict(groups)
    return {label: found for label, found in groups.items() if " +" not in label}


def _legend_outside(fig: Any, ax: Any) -> None:
    """The legend right of the axes, so a long list of groups never covers the curves."""
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.subplots_adjust(left=0.09, right=0.62, bottom=0.14, top=0.9)


def _pooled_bins(found: list[Mapping[str, Any]]) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per calibration bin, pooled over the group's runs."""
    pooled: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for result in found:
        for i, b in enumerate(result.get("calibration", {}).get("bins", [])):
            if b.get("count"):
                pooled[i][0] += b["confidence"] * b["count"]
                pooled[i][1] += b["accuracy"] * b["count"]
                pooled[i][2] += b["count"]
    return [(c / n, a / n, int(n)) for _, (c, a, n) in sorted(pooled.items()) if n]


def _reliability(groups: Mapping[str, list[Mapping[str, Any]]], path: Path) -> Path | None:
    colours = method_colours(groups)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.5, 5))
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
        drawn = False
        for label, found in groups.items():
            bins = _pooled_bins(found)
            if bins:
                drawn = True
                ax.plot(
                    [b[0] for b in bins], [b[1] for b in bins], "o-", ms=3, color=colours[label], label=label
                )
        ax.set_xlabel("confidence (max softmax)")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability diagram (pooled over seeds)")
        if drawn:
            _legend_outside(fig, ax)
            save_figure_atomic(fig, path)
        plt.close(fig)
    return path if drawn else None


def _adversarial(groups: Mapping[str, list[Mapping[str, Any]]], path: Path) -> Path | None:
    colours = method_colours(groups)
    drawn = False
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9.5, 4.6))
        for label, found in groups.items():
            for attack, style in (("fgsm", "-"), ("pgd", "--")):
                curves = [r.get("adversarial", {}).get(attack) for r in found]
                curves = [c for c in curves if c]
                if not curves:
                    continue
                drawn = True
                eps = sorted({float(e) for c in curves for e in c})
                means = [100 * mean_ci([c[f"{e:g}"] for c in curves if f"{e:g}" in c]).mean for e in eps]
                ax.plot(eps, means, style, marker="o", ms=3, color=colours[label], label=f"{label} {attack}")
        ax.set_xlabel("epsilon (L-inf, pixel units)")
        ax.set_ylabel("accuracy under attack (%)")
        if drawn:
            _legend_outside(fig, ax)
            save_figure_atomic(fig, path)
        plt.close(fig)
    return path if drawn else None


def _ood(groups: Mapping[str, list[Mapping[str, Any]]], path: Path) -> Path | None:
    """AUROC (mean over seeds) of each group against each OOD set and score: grouped bars."""
    keys = sorted(
        {
            (name, score)
            for found in groups.values()
            for r in found
            for name, by in r.get("ood", {}).items()
            for score in by
        }
    )
    if not keys:
        return None
    colours = method_colours(groups)
    width = 0.8 / max(len(groups), 1)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(max(9.5, 2.4 * len(keys)), 4.6))
        for i, (label, found) in enumerate(groups.items()):
            means = [
                100
                * mean_ci([r["ood"][n][s]["auroc"] for r in found if s in r.get("ood", {}).get(n, {})]).mean
                for n, s in keys
            ]
            ax.bar([k + i * width for k in range(len(keys))], means, width, color=colours[label], label=label)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], [f"{n}\n{s}" for n, s in keys])
        ax.axhline(50, color="black", lw=1, ls=":")
        ax.set_ylabel("AUROC (%) in-distribution vs OOD")
        _legend_outside(fig, ax)
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def _mean_text(values: list[float], percent: bool) -> str:
    estimate = mean_ci(values)
    if estimate.n == 0:
        return "n/a"
    scale = 100 if percent else 1
    half = (
        "" if math.isnan(estimate.half_width) else f" ± {scale * estimate.half_width:.{2 if percent else 4}f}"
    )
    return f"{scale * estimate.mean:.{2 if percent else 4}f}{half}"


def _table(groups: Mapping[str, list[Mapping[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    names: list[str] = []
    for found in groups.values():
        for result in found:
            for name in result.get("metrics", {}):
                if name not in names:
                    names.append(name)
    percent = {n for n in names if n == "accuracy" or "@" in n and not n.startswith("fpr95")}
    header = ["runs", "n", *[f"{n} (%)" if n in percent else n for n in names]]
    rows = [
        [
            label,
            str(len(found)),
            *[
                _mean_text([r["metrics"][n] for r in found if n in r.get("metrics", {})], n in percent)
                for n in names
            ],
        ]
        for label, found in groups.items()
    ]
    return header, rows


def write_evaluation_report(
    results: Sequence[tuple[Any, Mapping[str, Any] | None]], out_dir: str | Path
) -> Path:
    """Write report.md, report.html, evaluations.csv and the reliability / adversarial figures for the
    evaluation runs ``results`` (``[(EvaluationSpec, result or None)]``); return report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(results)
    shown = plotted_groups(groups)
    figures = [
        f
        for f in (
            _reliability(shown, out / "reliability.png"),
            _ood(shown, out / "ood.png"),
            _adversarial(shown, out / "adversarial.png"),
        )
        if f is not None
    ]
    header, rows = _table(groups)
    metrics = next((spec.metrics for spec, _ in results), None)
    setup = [
        f"{sum(len(f) for f in groups.values())} evaluated runs in {len(groups)} groups (mean ± 95% CI over seeds)"
    ]
    if metrics is not None:
        setup.append(
            f"calibration: {'ECE over ' + str(metrics.bins) + ' equal-width bins, NLL (nats), Brier' if metrics.calibration else 'off'}; "
            f"OOD sets: {', '.join(d.name for d in metrics.ood) or 'none'} (scores: {', '.join(metrics.ood_scores)}; AUROC and "
            f"FPR at 95% TPR, in-distribution positive); attacks: {', '.join(metrics.attacks) or 'none'} at epsilons "
            f"{', '.join(f'{e:g}' for e in metrics.epsilons) or '-'} (L-inf, pixel units, eval mode, first "
            f"{metrics.attack_examples or 'all'} test examples); shift: {', '.join(d.name for d in metrics.shift) or 'none'}"
        )
        setup.append("every metric is of the run's reported checkpoint, on the real test split")
    missing = sum(1 for _, r in results if not r or r.get("status") != "done")
    provenance = provenance_summary(r for _, r in results)
    body_md = ["", "## Metrics", "", md_table(header, rows), "", *[f"![{f.stem}]({f.name})" for f in figures]]
    write_text_atomic(
        out / "report.md",
        markdown_page(
            "Evaluation beyond accuracy",
            setup,
            [f"{missing} evaluations missing"] if missing else [],
            [],
            body_md,
            provenance,
        ),
    )
    body_html = "<h2>Metrics</h2>" + html_table(header, rows) + "".join(png_img(f) for f in figures)
    write_text_atomic(
        out / "report.html",
        html_page(
            "Evaluation beyond accuracy",
            setup,
            f"{missing} evaluations missing" if missing else "",
            [],
            body_html,
            provenance,
        ),
    )
    with atomic_csv(out / "evaluations.csv") as writer:
        names = sorted({n for _, r in results if r for n in r.get("metrics", {})})
        writer.writerow(["run", "group", *names])
        for spec, result in results:
            if result and result.get("status") == "done":
                writer.writerow(
                    [
                        spec.run.run_name(),
                        group_label(spec.run),
                        *[result["metrics"].get(n, "") for n in names],
                    ]
                )
    return out / "report.html"
