"""The size-scaling report (Liu et al. 2022): accuracy and gap-to-dense against depth and width, one
line per ratio scheme with dense as reference; every point's paired test, sizes and FLOPs; the
beyond-accuracy metrics random vs dense; the per-layer densities of each scheme. Markdown,
self-contained HTML, plots and CSV."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from prunelab.report.files import atomic_csv, save_figure_atomic, write_text_atomic
from prunelab.report.page import html_page, html_table, inline_markdown, markdown_page, md_table, png_img
from prunelab.report.plots import _STYLE
from prunelab.summaries.scaling import NONINFERIORITY_TEST, ScalingSummary, SizePoint
from prunelab.summaries.stats import describe_correction

_LINESTYLES = ("-", "--", ":", "-.")


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _verdict(point: SizePoint) -> str:
    if point.inconclusive:
        return "inconclusive (n too small)"
    if point.matches:
        return "matches dense"
    if point.worse:
        return "worse than dense"
    return "not shown to match"


def _plot_axis(summary: ScalingSummary, axis: str, gap: bool, path: Path) -> Path | None:
    """Accuracy (or sparse minus dense, in pp) against size on ``axis``: a panel per family, a colour
    per scheme, a line style per density; dense as the black reference."""
    families = sorted({p.family for p in summary.points if p.axis == axis})
    if not families:
        return None
    palette = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    colours = {scheme: palette[i % len(palette)] for i, scheme in enumerate(summary.study.schemes)}
    densities = list(summary.study.densities)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 3.8), squeeze=False)
        for ax, family in zip(axes[0], families, strict=True):
            points = [p for p in summary.points if p.axis == axis and p.family == family]
            if gap:
                ax.axhline(0.0, color="black", lw=1)
            else:
                dense = sorted({(p.value, p.dense.mean) for p in points})
                ax.plot([v for v, _ in dense], [100 * a for _, a in dense], "k-o", label="dense", lw=2)
            for scheme in summary.study.schemes:
                for i, density in enumerate(densities):
                    line = sorted(
                        (p for p in points if p.scheme == scheme and p.density == density),
                        key=lambda p: p.value,
                    )
                    xs = [p.value for p in line]
                    if gap:
                        ys = [100 * p.test.diff.mean for p in line]
                        err = [
                            100 * p.test.diff.half_width if p.test.diff.has_interval else 0.0 for p in line
                        ]
                    else:
                        ys = [100 * p.sparse.mean for p in line]
                        err = [100 * p.sparse.half_width if p.sparse.has_interval else 0.0 for p in line]
                    ax.errorbar(
                        xs,
                        ys,
                        yerr=err,
                        color=colours[scheme],
                        ls=_LINESTYLES[i % len(_LINESTYLES)],
                        marker="o",
                        capsize=3,
                        label=f"{scheme} d={density:g}",
                    )
            ax.set_title(f"{family}: {axis}")
            ax.set_xlabel(axis)
            ax.set_ylabel("random minus dense (pp)" if gap else "test accuracy (%)")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def _point_rows(summary: ScalingSummary) -> list[list[str]]:
    rows = []
    for p in summary.points:
        diff = p.test.diff
        size = p.size
        rows.append(
            [
                p.family,
                p.axis,
                f"{p.value:g}",
                p.model,
                p.scheme,
                f"{p.density:g}",
                f"{_pct(p.dense.mean)} ± {_pct(p.dense.half_width)}",
                f"{_pct(p.sparse.mean)} ± {_pct(p.sparse.half_width)}",
                f"{100 * diff.mean:+.2f} ± {_pct(diff.half_width)}" if p.n_pairs else "n/a",
                _p(p.p_adjusted),
                _p(p.noninferior.adjusted),
                _verdict(p),
                str(p.n_pairs),
                f"{int(size.get('nonzero_params', 0)):,} / {int(size.get('params', 0)):,}" if size else "n/a",
                f"{int(size.get('nonzero_flops', 0)):,} / {int(size.get('flops', 0)):,}" if size else "n/a",
            ]
        )
    return rows


_POINT_HEADER = [
    "family",
    "axis",
    "size",
    "model",
    "scheme",
    "density",
    "dense acc %",
    "random acc %",
    "random - dense (pp)",
    "p (two-sided, adj.)",
    "p (non-inferior, adj.)",
    "verdict",
    "n",
    "nonzero / all params",
    "nonzero / dense FLOPs",
]


def _metric_rows(summary: ScalingSummary) -> list[list[str]]:
    rows = []
    for p in summary.points:
        for name, m in p.metrics.items():
            better = m.sparse_better
            rows.append(
                [
                    p.model,
                    p.scheme,
                    f"{p.density:g}",
                    name,
                    "higher" if m.higher_is_better else "lower",
                    f"{m.dense.mean:.4f}",
                    f"{m.sparse.mean:.4f}",
                    f"{m.test.diff.mean:+.4f}",
                    _p(m.p_adjusted),
                    "random better"
                    if better
                    else "dense better"
                    if better is False
                    else "no significant difference",
                ]
            )
    return rows


_METRIC_HEADER = [
    "model",
    "scheme",
    "density",
    "metric",
    "better",
    "dense",
    "random",
    "random - dense",
    "p (adj.)",
    "verdict",
]


def _layer_rows(summary: ScalingSummary) -> list[list[str]]:
    return [
        [model, scheme, f"{density:g}", ", ".join(f"{d:.3f}" for _, d in layers)]
        for (model, scheme, density), layers in summary.layer_densities.items()
    ]


def _setup(summary: ScalingSummary) -> list[str]:
    study = summary.study
    train = study.train
    checkpoint = (
        "best epoch on the validation hold-out, evaluated once on test"
        if train.checkpoint == "best_validation"
        else "final epoch"
    )
    return [
        f"data: `{study.data.name}` {dict(study.data.options) or ''}; {len(study.seeds)} seeds; densities "
        f"(kept fraction of prunable weights) {', '.join(f'{d:g}' for d in study.densities)}",
        f"random pruning at initialisation, positions drawn {'per weight (Bernoulli)' if study.sampling == 'bernoulli' else 'as exact per-layer counts'}; "
        f"layer-wise ratio schemes: {', '.join(study.schemes)}; prunable: {study.prunable.scope}"
        f"{', first layer dense' if study.prunable.first_layer_dense else ''}",
        f"recipe: {train.epochs} epochs, batch {train.batch_size}, lr {train.lr:g} ({train.schedule}), "
        f"momentum {train.momentum:g}{' Nesterov' if train.nesterov else ''}, weight decay {train.weight_decay:g}; "
        f"reported checkpoint: {checkpoint}",
        f"verdict: random **matches** dense at a size when a {NONINFERIORITY_TEST} rejects "
        f"'random is worse by {100 * study.margin:g} pp or more'; "
        f"{describe_correction(study.correction, len(summary.points), study.alpha)}",
    ]


def _missing(summary: ScalingSummary) -> str:
    return f"{summary.missing} runs have not finished; their points are missing." if summary.missing else ""


def write_scaling_report(summary: ScalingSummary, out_dir: str | Path) -> Path:
    """Write report.md, report.html, points.csv, metrics.csv, layer_densities.csv and the plots into
    ``out_dir``; return report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        f
        for axis in ("depth", "width")
        for gap in (False, True)
        if (f := _plot_axis(summary, axis, gap, out / f"{'gap' if gap else 'accuracy'}_vs_{axis}.png"))
        is not None
    ]
    headline = [f"**{t.text}**" for t in summary.trends]
    points, metrics, layers = _point_rows(summary), _metric_rows(summary), _layer_rows(summary)
    body_md = ["", "## Verdicts", "", *[f"- {h}" for h in headline], ""]
    body_md += [f"![{f.stem}]({f.name})" for f in figures]
    body_md += ["", "## Every point", "", md_table(_POINT_HEADER, points)]
    if metrics:
        body_md += [
            "",
            "## Beyond accuracy: random vs dense (paired t-test)",
            "",
            md_table(_METRIC_HEADER, metrics),
        ]
    body_md += [
        "",
        "## Per-layer densities of each scheme",
        "",
        md_table(["model", "scheme", "density", "per-layer densities"], layers),
    ]
    write_text_atomic(
        out / "report.md",
        markdown_page(
            f"Size scaling: {summary.study.name}",
            _setup(summary),
            [_missing(summary)],
            summary.notes,
            body_md,
            summary.provenance,
        ),
    )
    body_html = (
        "<h2>Verdicts</h2><ul>" + "".join(f"<li>{inline_markdown(h)}</li>" for h in headline) + "</ul>"
    )
    body_html += "".join(png_img(f) for f in figures)
    body_html += "<h2>Every point</h2>" + html_table(_POINT_HEADER, points)
    if metrics:
        body_html += "<h2>Beyond accuracy: random vs dense</h2>" + html_table(_METRIC_HEADER, metrics)
    body_html += "<h2>Per-layer densities of each scheme</h2>" + html_table(
        ["model", "scheme", "density", "per-layer densities"], layers
    )
    write_text_atomic(
        out / "report.html",
        html_page(
            f"Size scaling: {summary.study.name}",
            _setup(summary),
            _missing(summary),
            summary.notes,
            body_html,
            summary.provenance,
        ),
    )
    for name, header, rows in (
        ("points", _POINT_HEADER, points),
        ("metrics", _METRIC_HEADER, metrics),
        ("layer_densities", ["model", "scheme", "density", "densities"], layers),
    ):
        with atomic_csv(out / f"{name}.csv") as writer:
            writer.writerow(header)
            writer.writerows(rows)
    return out / "report.html"
