"""The "pruning as architecture search" section of the Rethinking report (Liu et al. 2019, section 5):
per searched method, the found architecture, a uniformly pruned one of the same parameter count and a
guided one, all trained from scratch; a table and the parameter-efficiency plot."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunelab.report.files import save_figure_atomic  # noqa: E402
from prunelab.report.plots import _STYLE  # noqa: E402
from prunelab.report.sanity import _p, _pct, _pp  # noqa: E402
from prunelab.summaries.rethinking import SEARCH_ARMS, SEARCH_LABELS, RethinkingSummary  # noqa: E402

_MARKERS = {"found": "o", "uniform": "s", "guided": "^"}


def search_table(summary: RethinkingSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows: method, architecture, parameters, accuracy, difference to uniform, p."""
    header = ["method", "architecture", "params", "test accuracy (%)", "Δ vs uniform (pp)", "p (paired t)"]
    rows = []
    for search in summary.search:
        for arm in SEARCH_ARMS:
            test = search.versus_uniform.get(arm)
            params = search.params.get(arm)
            rows.append(
                [
                    search.method,
                    SEARCH_LABELS[arm],
                    f"{params:,.0f}" if params is not None else "–",
                    _pct(search.accuracy[arm], n_expected=len(summary.study.seeds)),
                    _pp(test.diff) if test is not None else ("reference" if arm == "uniform" else "–"),
                    _p(test.p_value) if test is not None else "",
                ]
            )
    return header, rows


def parameter_efficiency(summary: RethinkingSummary, path: Path, colours: dict[str, str]) -> Path:
    """Test accuracy against parameter count, one colour per method, one marker per architecture."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for search in summary.search:
            for arm in SEARCH_ARMS:
                est, params = search.accuracy[arm], search.params.get(arm)
                if params is None or est.n == 0 or math.isnan(est.mean):
                    continue
                ax.errorbar(
                    params,
                    100 * est.mean,
                    yerr=None if not est.has_interval else 100 * est.half_width,
                    marker=_MARKERS[arm],
                    color=colours.get(search.method, "black"),
                    linestyle="none",
                    capsize=3,
                    label=f"{search.method}: {SEARCH_LABELS[arm]}",
                )
        ax.set_xlabel("parameters of the trained architecture")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Parameter efficiency: found vs uniform vs guided architectures")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


SEARCH_NOTE = (
    "Each architecture is trained from scratch with the large model's recipe (Scratch-E). *uniform*: the "
    "same model with one keep ratio in every prunable conv, chosen by bisection to match the found "
    "architecture's parameter count; *guided*: every stage (convs with one output size) keeps the average "
    "fraction of filters the method kept there over the study's seeds. The paper's finding: the found "
    "architectures beat uniform ones of the same size where pruning finds a better architecture (e.g. "
    "network slimming on VGG), and guided architectures do as well as the found ones."
)
