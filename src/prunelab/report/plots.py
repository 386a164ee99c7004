"""Matplotlib figures for study reports (Agg backend, PNG files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prunelab.summaries.sanity import SanitySummary  # noqa: E402

_STYLE: Any = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def accuracy_vs_density(summary: SanitySummary, path: Path) -> Path:
    """Test accuracy (%) against density (log x) per method and random ticket, with 95% CI bands."""
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
            lo = [100 * c.accuracy.low for c in cells]
            hi = [100 * c.accuracy.high for c in cells]
            style = "--" if label.startswith("random ticket") else "-"
            (line,) = ax.plot(xs, ys, style, marker="o", label=label)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        if summary.dense is not None:
            d = summary.dense
            ax.axhline(100 * d.mean, color="black", lw=1, label="dense")
            ax.axhspan(100 * d.low, 100 * d.high, color="black", alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy against density (mean and 95% CI over seeds)")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def check_effects(summary: SanitySummary, path: Path) -> Path:
    """Change in accuracy (percentage points) each check causes, per method, with 95% CIs.

    Solid bars: significant (p < 0.05); hatched: not significant.
    """
    with plt.rc_context(_STYLE):
        methods = list(dict.fromkeys(v.method for v in summary.verdicts))
        checks = list(dict.fromkeys(v.check for v in summary.verdicts))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(methods) + 2), 4.4))
        width = 0.8 / max(len(checks), 1)
        cmap = plt.get_cmap("tab10")
        for j, check in enumerate(checks):
            for i, method in enumerate(methods):
                verdict = next((v for v in summary.verdicts if v.method == method and v.check == check), None)
                if verdict is None:
                    continue
                diff = verdict.test.diff
                significant = verdict.test.p_value < 0.05
                ax.bar(
                    i + (j - (len(checks) - 1) / 2) * width,
                    100 * diff.mean,
                    width,
                    yerr=100 * diff.half_width if not math.isnan(diff.half_width) else 0,
                    color=cmap(j),
                    alpha=0.9 if significant else 0.45,
                    hatch=None if significant else "//",
                    label=check if i == 0 else None,
                    capsize=2,
                )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylabel("accuracy change vs unchecked method (pp)")
        ax.set_title("What each sanity check does (solid = significant, p < 0.05)")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def layer_densities(summary: SanitySummary, path: Path) -> Path:
    """Per-layer density of each method's mask (and the random tickets'), one panel per density."""
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
                    range(1, len(rows) + 1), [max(r[1], 1e-4) for r in rows], style, marker=".", label=label
                )
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("layer (registration order; an empty layer is drawn at 1e-4)")
            ax.set_ylabel("layer density (kept fraction)")
            ax.set_title(f"overall density {density:g}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path
