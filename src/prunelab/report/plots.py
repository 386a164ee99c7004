"""Matplotlib figures for study reports (Agg backend, PNG files).

Every plot of a report colours a method the same way: :func:`method_colours` gives a fixed colour
to each built-in method (and random-ticket baseline), and unknown labels (plugins, methods with
options) the next unused palette colour, so one report never shows two methods in one colour or
one method in two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prunelab.report.files import save_figure_atomic
from prunelab.summaries.sanity import SanitySummary  # noqa: E402
from prunelab.summaries.stats import Estimate  # noqa: E402

_STYLE: Any = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_TAB10 = [to_hex(c) for c in plt.get_cmap("tab10").colors]  # type: ignore[attr-defined]
#: Fixed colours of the built-in methods and baselines. Sanity and structured methods never share a
#: report, so the two families reuse the same ten colours.
FIXED_COLOURS: dict[str, str] = {
    # unstructured (sanity, tickets, lottery)
    "snip": _TAB10[0],
    "grasp": _TAB10[1],
    "synflow": _TAB10[2],
    "magnitude": _TAB10[3],
    "lottery": _TAB10[4],
    "weight_rewinding": _TAB10[5],
    "lr_rewinding": _TAB10[6],
    "finetune": _TAB10[8],
    "hybrid": _TAB10[9],
    "random ticket (uniform)": "#7f7f7f",
    "random ticket (erk)": "#4d4d4d",
    "random ticket (smart_ratio)": "#b0b0b0",
    # the lottery report's two variants
    "winning ticket": _TAB10[4],
    "random re-init": "#7f7f7f",
    # structured (rethinking)
    "l1norm": _TAB10[0],
    "slimming": _TAB10[1],
    "thinet": _TAB10[2],
    "regression": _TAB10[3],
    "sfp": _TAB10[4],
    "sss": _TAB10[5],
    "weight_level": _TAB10[6],
}
_FALLBACK = [to_hex(c) for c in plt.get_cmap("tab20").colors]  # type: ignore[attr-defined]
_WITH_OPTIONS = re.compile(r"^(\w+)\(.*\)$")


def method_colours(labels: Iterable[str]) -> dict[str, str]:
    """One colour per label, the same in every plot that is given this map.

    A built-in method (or ``name(options)`` of one, the first such label) gets its fixed colour;
    every other label the first palette colour not yet used in this map.
    """
    out: dict[str, str] = {}
    pending: list[str] = []
    for label in dict.fromkeys(labels):
        match = _WITH_OPTIONS.match(label)
        colour = FIXED_COLOURS.get(label) or (FIXED_COLOURS.get(match.group(1)) if match else None)
        if colour is not None and colour not in out.values():
            out[label] = colour
        else:
            pending.append(label)
    for label in pending:
        free = [c for c in _FALLBACK if c not in out.values()]
        out[label] = free[0] if free else _FALLBACK[len(out) % len(_FALLBACK)]
    return out


def sanity_colours(summary: SanitySummary) -> dict[str, str]:
    """The colour map of a sanity report: its methods, then its random tickets, in study order."""
    labels = [*summary.study.methods, *(f"random ticket ({a})" for a in summary.study.random_tickets)]
    return method_colours([*labels, *(c.variant.label for c in summary.cells if c.variant.check == "none")])


def clipped_band(
    estimates: Iterable[Estimate], lower: float, upper: float
) -> tuple[list[float], list[float]]:
    """Lows and highs (in %) of the estimates' CIs clipped to ``[lower, upper]`` (fractions); an
    estimate without an interval gives a zero-width band at its mean."""
    lows, highs = [], []
    for est in estimates:
        low, high = est.clipped(lower, upper)
        lows.append(100 * low)
        highs.append(100 * high)
    return lows, highs


def clipped_yerr(estimates: Iterable[Estimate], lower: float, upper: float) -> list[list[float]]:
    """Asymmetric error bars (in %) of the estimates' CIs clipped to ``[lower, upper]`` (fractions)."""
    below, above = [], []
    for est in estimates:
        low, high = est.clipped(lower, upper)
        below.append(100 * (est.mean - low))
        above.append(100 * (high - est.mean))
    return [below, above]


def accuracy_vs_density(summary: SanitySummary, path: Path, colours: Mapping[str, str] | None = None) -> Path:
    """Test accuracy (%) against density (log x) per method and random ticket, with 95% CI bands
    (clipped to 0-100 %; no band where a cell has one seed)."""
    colours = colours or sanity_colours(summary)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        labels = []
        for cell in summary.cells:
            if cell.variant.check == "none" and cell.variant.label not in labels:
                labels.append(cell.variant.label)
        for label in labels:
            cells = sorted((c for c in summary.cells if c.variant.label == label), key=lambda c: c.density)
            xs = [c.density for c in cells]
            ys = [100 * c.accuracy.mean for c in cells]
            lo, hi = clipped_band((c.accuracy for c in cells), 0.0, 1.0)
            style = "--" if label.startswith("random ticket") else "-"
            ax.plot(xs, ys, style, marker="o", label=label, color=colours.get(label))
            ax.fill_between(xs, lo, hi, color=colours.get(label), alpha=0.15)
        if summary.dense is not None:
            d = summary.dense
            ax.axhline(100 * d.mean, color="black", lw=1, label="dense")
            low, high = d.clipped(0.0, 1.0)
            if d.has_interval:
                ax.axhspan(100 * low, 100 * high, color="black", alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy against density (mean and 95% CI over seeds)")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def check_effects(summary: SanitySummary, path: Path, colours: Mapping[str, str] | None = None) -> Path:
    """Change in accuracy (percentage points) each check causes, per method, with 95% CIs.

    Grouped by check, one bar per method in the method's report colour. Solid bars: significant
    (adjusted p < alpha); hatched: not significant or inconclusive. The legend shows both.
    """
    colours = colours or sanity_colours(summary)
    with plt.rc_context(_STYLE):
        methods = list(dict.fromkeys(v.method for v in summary.verdicts))
        checks = list(dict.fromkeys(v.check for v in summary.verdicts))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(checks) + 2), 4.4))
        width = 0.8 / max(len(methods), 1)
        for j, method in enumerate(methods):
            for i, check in enumerate(checks):
                verdict = next((v for v in summary.verdicts if v.method == method and v.check == check), None)
                if verdict is None:
                    continue
                diff = verdict.test.diff
                significant = verdict.p.significant and not verdict.inconclusive
                yerr = clipped_yerr([diff], -1.0, 1.0) if diff.has_interval else None
                ax.bar(
                    i + (j - (len(methods) - 1) / 2) * width,
                    100 * diff.mean,
                    width,
                    yerr=yerr,
                    color=colours.get(method),
                    edgecolor="black" if not significant else colours.get(method),
                    alpha=0.9 if significant else 0.45,
                    hatch=None if significant else "//",
                    capsize=2,
                )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(checks)), checks)
        ax.set_ylabel("accuracy change vs unchecked method (pp)")
        alpha = summary.verdicts[0].p.alpha if summary.verdicts else summary.study.alpha
        ax.set_title("What each sanity check does (95% CI; solid = significant)")
        handles = [Patch(facecolor=colours.get(m), label=m) for m in methods]
        handles += [
            Patch(
                facecolor="#999999", edgecolor="#999999", label=f"solid: significant (adjusted p < {alpha:g})"
            ),
            Patch(
                facecolor="#999999",
                edgecolor="black",
                alpha=0.45,
                hatch="//",
                label="hatched: not significant or inconclusive",
            ),
        ]
        ax.legend(handles=handles, fontsize=8, ncol=2)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def layer_densities(summary: SanitySummary, path: Path, colours: Mapping[str, str] | None = None) -> Path:
    """Per-layer density of each method's mask (and the random tickets'), one panel per density."""
    colours = colours or sanity_colours(summary)
    densities = sorted({d for _, d in summary.per_layer}, reverse=True)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(
            1, max(len(densities), 1), figsize=(5.2 * max(len(densities), 1), 4.0), squeeze=False
        )
        for ax, density in zip(axes[0], densities, strict=False):
            for (label, d), rows in sorted(summary.per_layer.items()):
                if d != density or "+" in label:
                    continue
                style = "--" if label.startswith("random ticket") else "-"
                ax.plot(
                    range(1, len(rows) + 1),
                    [max(r[1], 1e-4) for r in rows],
                    style,
                    marker=".",
                    label=label,
                    color=colours.get(label),
                )
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("layer (registration order; an empty layer is drawn at 1e-4)")
            ax.set_ylabel("layer density (kept fraction)")
            ax.set_title(f"overall density {density:g}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path
