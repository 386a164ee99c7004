"""The Rethinking study report: verdict per method first, then one table per method, then the plots.

Writes ``report.md`` (plots referenced as PNG files), ``report.html`` (self-contained: plots embedded),
``accuracy.csv`` (one row per method and table row) and ``verdicts.csv`` (one per method and scratch
protocol) and ``latency.csv`` (every latency measurement, with its spread and reliability flag).
Accuracies are final-epoch test accuracy in %, mean and 95% t-interval over seeds (clipped to
0–100 % for display). Densities are kept fractions (of all parameters, or of the conv weights for
weight-level masks); sparsity = 1 − density. Latency is the median over timed repeats with its
interquartile range; a speedup resting on a measurement whose relative IQR is too large is marked
"unreliable: spread x%".
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunelab.report.files import atomic_csv, save_figure_atomic, write_text_atomic  # noqa: E402
from prunelab.report.page import (  # noqa: E402
    TEST_COLUMNS,
    html_page,
    html_table,
    inline_markdown,
    markdown_page,
    md_table,
    png_img,
    test_values,
)
from prunelab.report.plots import clipped_yerr, method_colours  # noqa: E402
from prunelab.report.sanity import ACCURACY_FORMAT, _adjusted_header, _correction_text, _p, _pp  # noqa: E402
from prunelab.report.sanity import _pct as _accuracy  # noqa: E402
from prunelab.report.search import SEARCH_NOTE, parameter_efficiency, search_table  # noqa: E402
from prunelab.summaries.rethinking import (  # noqa: E402
    ROW_LABELS,
    ROWS,
    Comparison,
    MethodSummary,
    RethinkingSummary,
    Speedup,
    finetune_epochs_of,
    latency_measurements,
)
from prunelab.summaries.stats import INCONCLUSIVE, MIN_PAIRS, Estimate  # noqa: E402

_STYLE: Any = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_PROTOCOL_NAMES = {"scratch_e": "Scratch-E", "scratch_b": "Scratch-B", "finetune": "fine-tune"}


def _pct(est: Estimate, seeds: int | None = None) -> str:
    """An accuracy as the sanity report writes it (clipped CI, ``n = 1`` without one); "–" when none."""
    return _accuracy(est, empty="–", n_expected=seeds)


def _count(value: float | None) -> str:
    """12345678 -> '12.35M'; plain below 10k."""
    if value is None or math.isnan(value):
        return "–"
    for unit, scale, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e6), ("k", 1e3, 1e4)):
        if abs(value) >= floor:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _epochs(values: list[int]) -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def _flag(m: Speedup) -> str:
    """``"unreliable: spread 35%"`` for a speedup resting on an unreliable timing, else ``""``."""
    if not m.unreliable:
        return ""
    if not math.isfinite(m.spread):
        return "unreliable: too few repeats"
    return f"unreliable: spread {100 * m.spread:.0f}%"


def _ms(median: float, iqr: float, where: str) -> str:
    """``2.00 ms (IQR 0.70; cpu, batch 64)``: a median latency with its interquartile range."""
    return f"{median:.2f} ms (" + ("" if math.isnan(iqr) else f"IQR {iqr:.2f}; ") + f"{where})"


def _largest_batches(method: MethodSummary) -> list[Speedup]:
    """Per device, the measurement at the largest batch size (the one the tables and headline show)."""
    measured = latency_measurements(method.latency)
    return [
        max((m for m in measured if m.device == device), key=lambda m: m.batch_size)
        for device in dict.fromkeys(m.device for m in measured)
    ]


def _latency_cells(method: MethodSummary) -> tuple[str, str, str]:
    """(large latency, pruned latency, speedup) at the largest batch per device: medians with their
    IQR, and the speedup marked when a measurement behind it is unreliable."""
    large, pruned, speed = [], [], []
    for m in _largest_batches(method):
        where = f"{m.device}, batch {m.batch_size}"
        large.append(_ms(m.full_ms, m.full_iqr_ms, where))
        pruned.append(_ms(m.pruned_ms, m.pruned_iqr_ms, where))
        flag = _flag(m)
        speed.append(f"{m.speedup:.2f}× ({m.device}{'; ' + flag if flag else ''})")
    return ("; ".join(large) or "–", "; ".join(pruned) or "–", "; ".join(speed) or "–")


def _method_table(method: MethodSummary, seeds: int) -> tuple[list[str], list[list[str]]]:
    header = [
        "row",
        "epochs",
        "test acc (%)",
        "params",
        "params density (kept fraction of all params)",
        "FLOPs" + (" (nonzero)" if method.masked else ""),
        "FLOPs reduction (full / pruned)",
        "measured latency (median, IQR)",
        "measured speedup",
    ]
    full_latency, pruned_latency, speedup = _latency_cells(method)
    rows = []
    for row in ROWS:
        is_large = row == "large"
        params = method.params.get("full" if is_large else "pruned")
        flops = method.flops.get("full" if is_large else "pruned")
        rows.append(
            [
                ROW_LABELS[row],
                _epochs(method.epochs[row]),
                _pct(method.accuracy[row], seeds),
                _count(params),
                "1.000" if is_large else f"{method.params_density:.3f}",
                _count(flops),
                "1.00×" if is_large else f"{method.flops_reduction:.2f}×",
                full_latency if is_large else pruned_latency,
                "1.00×" if is_large else speedup,
            ]
        )
    return header, rows


def _verdict_rows(summary: RethinkingSummary) -> list[list[str]]:
    rows = []
    for method in summary.methods:
        for c in method.comparisons:
            rows.append(
                [
                    c.method,
                    _PROTOCOL_NAMES[c.protocol],
                    _pp(c.test.diff),
                    _p(c.p_raw),
                    _p(c.p_adjusted),
                    str(c.n_pairs),
                    _yes_no(c.ci_overlap),
                    c.conclusion,
                    _yes_no(c.supports_paper),
                ]
            )
    return rows


def _verdict_class(c: Comparison) -> str:
    if c.supports_paper is None:
        return "neutral"
    return "hurts" if c.supports_paper else "helps"


def _comparison_text(c: Comparison, acc: Estimate, seeds: int) -> str:
    name = f"{_PROTOCOL_NAMES[c.protocol]} {_pct(acc, seeds)}"
    if c.inconclusive:
        return f"{name} ({100 * c.test.diff.mean:+.2f} pp: {c.conclusion}, n = {c.n_pairs})"
    return (
        f"{name} ({_pp(c.test.diff)} pp, p = {_p(c.p_raw)}, adjusted p = {_p(c.p_adjusted)}, "
        f"n = {c.n_pairs}: {c.conclusion})"
    )


def _headline(summary: RethinkingSummary) -> list[str]:
    """One sentence per method: fine-tune vs Scratch-E vs Scratch-B, and the cost it buys."""
    seeds = len(summary.study.seeds)
    lines = []
    for m in summary.methods:
        acc = m.accuracy
        if acc["finetune"].n == 0:
            continue
        parts = [f"fine-tuned {_pct(acc['finetune'], seeds)}"]
        parts += [_comparison_text(c, acc[c.protocol], seeds) for c in m.comparisons]
        cost = ""
        if not math.isnan(m.flops_reduction):
            cost = f"; {m.flops_reduction:.2f}× fewer FLOPs"
            cpu = [s for s in _largest_batches(m) if s.device == "cpu"]
            if cpu:
                flag = _flag(cpu[0])
                cost += f", measured CPU speedup {cpu[0].speedup:.2f}× at batch {cpu[0].batch_size}"
                cost += f" ({flag})" if flag else ""
        lines.append(f"**{m.method}**: " + "; ".join(parts) + cost + ".")
    comparisons = [c for m in summary.methods for c in m.comparisons]
    holds = [c for c in comparisons if c.supports_paper]
    fails = [c for c in comparisons if c.supports_paper is False]
    unknown = [c for c in comparisons if c.supports_paper is None]
    if holds or fails:
        text = (
            f"The paper's claim (training the pruned architecture from scratch is not worse than "
            f"fine-tuning it) holds in {len(holds)} of {len(holds) + len(fails)} conclusive method × protocol pairs"
        )
        if fails:
            text += "; it fails for " + ", ".join(
                f"{c.method} ({_PROTOCOL_NAMES[c.protocol]})" for c in fails
            )
        lines.append(text + ".")
    if unknown:
        lines.append(
            f"{len(unknown)} method × protocol pair(s) {INCONCLUSIVE}: fewer than {MIN_PAIRS} seeds "
            f"(n = {', '.join(sorted({str(c.n_pairs) for c in unknown}))})."
        )
    return lines


def _opts(options: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""


def _setup_lines(summary: RethinkingSummary) -> list[str]:
    s = summary.study
    t = s.train
    family = [c.p for m in summary.methods for c in m.comparisons]
    schedule = f"{t.schedule}" + (
        f" ×{t.gamma} at {', '.join(f'{m:g}' for m in t.milestones)} of training"
        if t.schedule == "multistep"
        else ""
    )
    return [
        f"dataset `{s.data.name}`{_opts(s.data.options)}, large model `{s.model.name}`{_opts(s.model.options)}",
        f"large model / Scratch-E: {t.epochs} epochs, batch {t.batch_size}, SGD lr {t.lr} ({schedule}), "
        f"momentum {t.momentum}, weight decay {t.weight_decay}",
        f"fine-tune: {finetune_epochs_of(s)} epochs from the pruned weights at a constant lr {s.finetune_lr}; "
        f"Scratch-B: int({t.epochs} × FLOPs(full) / FLOPs(pruned)) epochs"
        + (f" (ratio capped at {s.max_ratio})" if s.max_ratio else "")
        + ", milestones scaled with it; scratch runs start from a fresh initialisation",
        f"seeds: {', '.join(str(x) for x in s.seeds)}; accuracy = final-epoch test accuracy (%), "
        + ACCURACY_FORMAT,
        f"verdict: paired t-test (two-sided) of scratch − fine-tune accuracy over seeds (pairs = seed; with "
        f"fewer than {MIN_PAIRS} a verdict is {INCONCLUSIVE}), with the 95% CI of the mean difference; p-values adjusted "
        f"for multiple comparisons: {_correction_text(family, s.correction, s.alpha)}; also whether the two "
        "protocols' 95% CIs overlap. The paper's claim holds unless scratch is significantly worse "
        "(adjusted p < alpha)",
        "FLOPs: multiply-adds counted as 2 FLOPs (the paper's counter); weight-level masks count only "
        "nonzero weights. Latency: forward time per batch (no gradients), median and interquartile range "
        "(IQR) over repeats, large and pruned model timed alternately; speedup = large / pruned median; "
        "a speedup is marked *unreliable: spread x%* when a measurement's IQR / median is too large",
    ]


def _colours(summary: RethinkingSummary) -> dict[str, str]:
    """The report's method -> colour map, shared by every plot."""
    return method_colours(m.method for m in summary.methods)


def accuracy_by_protocol(
    summary: RethinkingSummary, path: Path, colours: dict[str, str] | None = None
) -> Path:
    """Test accuracy (%) per protocol (large, fine-tuned, Scratch-E, Scratch-B), one bar per method in
    its report colour, with 95% CI error bars clipped to 0-100 % (none for one seed)."""
    rows = ["large", "finetune", "scratch_e", "scratch_b"]
    methods = summary.methods
    colours = colours or _colours(summary)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(methods) * len(rows) + 2), 4.4))
        width = 0.8 / max(len(methods), 1)
        lows, highs = [], []
        for j, m in enumerate(methods):
            xs, ests = [], []
            for i, row in enumerate(rows):
                est = m.accuracy[row]
                if est.n == 0:
                    continue
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ests.append(est)
                low, high = est.clipped(0.0, 1.0)
                lows.append(100 * low)
                highs.append(100 * high)
            if ests:
                ax.bar(
                    xs,
                    [100 * e.mean for e in ests],
                    width,
                    yerr=clipped_yerr(ests, 0.0, 1.0),
                    color=colours[m.method],
                    capsize=2,
                    label=m.method,
                )
        if lows:
            ax.set_ylim(max(0.0, min(lows) - 5), min(100.0, max(highs) + 2))
        ax.set_xticks(range(len(rows)), [ROW_LABELS[r] for r in rows])
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy per protocol (mean and 95% CI over seeds)")
        ax.legend(fontsize=8, ncol=4)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def speedup_vs_flops(summary: RethinkingSummary, path: Path, colours: dict[str, str] | None = None) -> Path:
    """Measured speedup (large / pruned latency, largest batch) against FLOPs reduction, per method in
    its report colour; hollow markers: unreliable timing (spread too large)."""
    colours = colours or _colours(summary)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 4.4))
        top = 1.0
        flagged = False
        for m in summary.methods:
            if math.isnan(m.flops_reduction):
                continue
            for s in _largest_batches(m):
                colour = colours[m.method]
                ax.scatter(
                    m.flops_reduction,
                    s.speedup,
                    marker="s" if s.device.startswith("cuda") else "o",
                    facecolors="none" if s.unreliable else colour,
                    edgecolors=colour,
                )
                note = " (unreliable)" if s.unreliable else ""
                ax.annotate(f"{m.method} ({s.device}){note}", (m.flops_reduction, s.speedup), fontsize=7)
                top = max(top, m.flops_reduction, s.speedup)
                flagged = flagged or s.unreliable
        ax.plot([1, top], [1, top], color="black", lw=0.8, ls="--", label="speedup = FLOPs reduction")
        if flagged:
            ax.scatter(
                [], [], marker="o", facecolors="none", edgecolors="black", label="hollow: unreliable timing"
            )
        ax.set_xlabel("FLOPs reduction (full / pruned)")
        ax.set_ylabel("measured speedup (large / pruned median latency)")
        ax.set_title("Does fewer FLOPs mean faster? (o CPU, ■ CUDA)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def _title(summary: RethinkingSummary) -> str:
    return f"Rethinking the value of pruning: {summary.study.name}"


def _missing(summary: RethinkingSummary) -> str:
    return f"> {summary.missing} run(s) not finished; their cells are missing." if summary.missing else ""


def _verdict_header(summary: RethinkingSummary) -> list[str]:
    return [
        "method",
        "scratch protocol",
        "scratch − fine-tune (pp) [95% CI]",
        "p (paired t, raw)",
        _adjusted_header(summary.study.correction),
        "n (seeds)",
        "95% CIs overlap",
        "conclusion",
        "paper's claim holds",
    ]


def _architecture(architecture: dict[str, Any]) -> Any:
    """The pruned architecture as the per-method sections show it (first seed)."""
    return architecture.get("options", architecture)


def _markdown(summary: RethinkingSummary) -> str:
    seeds = len(summary.study.seeds)
    body = ["## At a glance", "", *[f"- {line}" for line in _headline(summary)]]
    body += ["", "## Scratch vs fine-tune, per method", ""]
    body += [md_table(_verdict_header(summary), _verdict_rows(summary)), ""]
    for m in summary.methods:
        body += [f"## {m.method}", ""]
        if m.architecture:
            body += [f"pruned architecture: `{_architecture(m.architecture)}` (first seed)", ""]
        body += [md_table(*_method_table(m, seeds)), ""]
    body += ["## Plots", "", "![accuracy per protocol](accuracy_by_protocol.png)", ""]
    body += ["![speedup against FLOPs reduction](speedup_vs_flops.png)", ""]
    if summary.search:
        body += [
            "## Pruning as architecture search",
            "",
            SEARCH_NOTE,
            "",
            md_table(*search_table(summary)),
            "",
        ]
        body += ["![parameter efficiency](parameter_efficiency.png)", ""]
    missing = ["", _missing(summary), ""]
    setup = _setup_lines(summary)
    return markdown_page(_title(summary), setup, missing, summary.notes, body, summary.provenance)


def _method_sections_html(summary: RethinkingSummary) -> str:
    sections = []
    for m in summary.methods:
        arch = (
            f"<p>pruned architecture: <code>{html.escape(str(_architecture(m.architecture)))}</code> (first seed)</p>"
            if m.architecture
            else ""
        )
        table = html_table(*_method_table(m, len(summary.study.seeds)))
        sections.append(f"<h2>{html.escape(m.method)}</h2>{arch}{table}")
    return "".join(sections)


def _search_html(summary: RethinkingSummary, figures: dict[str, Path]) -> str:
    if not summary.search:
        return ""
    return (
        f"<h2>Pruning as architecture search</h2><p>{inline_markdown(SEARCH_NOTE)}</p>"
        f"{html_table(*search_table(summary))}"
        f"{png_img(figures['parameter_efficiency.png'])}"
    )


_LEGEND = """<p class="legend"><span style="background:#e6f4ea">paper's claim holds (scratch not worse)</span>
<span style="background:#fff4e5">scratch significantly worse</span>
<span style="background:#fdecea">inconclusive (n too small)</span></p>"""


def _html(summary: RethinkingSummary, figures: dict[str, Path]) -> str:
    classes = [_verdict_class(c) for m in summary.methods for c in m.comparisons]
    headline = "".join(f"<li>{inline_markdown(x)}</li>" for x in _headline(summary))
    body = f"""<h2>At a glance</h2><div class="headline"><ul>{headline}</ul></div>
<h2>Scratch vs fine-tune, per method</h2>
{_LEGEND}
{html_table(_verdict_header(summary), _verdict_rows(summary), classes)}
{png_img(figures["accuracy_by_protocol.png"])}
{_method_sections_html(summary)}
<h2>Fewer FLOPs, faster?</h2>{png_img(figures["speedup_vs_flops.png"])}
{_search_html(summary, figures)}"""
    missing = _missing(summary).lstrip("> ")
    setup = _setup_lines(summary)
    return html_page(_title(summary), setup, missing, summary.notes, body, summary.provenance)


def _figures(summary: RethinkingSummary, out: Path) -> dict[str, Path]:
    colours = _colours(summary)  # one colour per method in every plot
    figures = {
        "accuracy_by_protocol.png": accuracy_by_protocol(summary, out / "accuracy_by_protocol.png", colours),
        "speedup_vs_flops.png": speedup_vs_flops(summary, out / "speedup_vs_flops.png", colours),
    }
    if summary.search:
        figures["parameter_efficiency.png"] = parameter_efficiency(
            summary, out / "parameter_efficiency.png", colours
        )
    return figures


def _write_accuracy_csv(summary: RethinkingSummary, out: Path) -> None:
    with atomic_csv(out / "accuracy.csv") as writer:
        writer.writerow(["method", "row", "n", "mean_acc", "ci_half", "epochs", "params", "flops"])
        for m in summary.methods:
            for row in ROWS:
                est = m.accuracy[row]
                side = "full" if row == "large" else "pruned"
                writer.writerow(
                    [m.method, row, est.n, est.mean, est.half_width, _epochs(m.epochs[row])]
                    + [m.params.get(side), m.flops.get(side)]
                )


def _write_csvs(summary: RethinkingSummary, out: Path) -> None:
    _write_accuracy_csv(summary, out)
    with atomic_csv(out / "verdicts.csv") as writer:
        writer.writerow(["method", "protocol", *TEST_COLUMNS, "test", "n_pairs", "ci_overlap", "conclusion"])
        for c in (c for m in summary.methods for c in m.comparisons):
            writer.writerow(
                [c.method, c.protocol, *test_values(c), c.test.test, c.n_pairs, c.ci_overlap, c.conclusion]
            )
    with atomic_csv(out / "latency.csv") as writer:
        writer.writerow(
            ["method", "device", "batch_size", "full_median_ms", "full_iqr_ms", "pruned_median_ms"]
            + ["pruned_iqr_ms", "speedup", "spread", "unreliable"]
        )
        for m in summary.methods:
            for s in latency_measurements(m.latency):
                writer.writerow(
                    [m.method, s.device, s.batch_size, s.full_ms, s.full_iqr_ms, s.pruned_ms]
                    + [s.pruned_iqr_ms, s.speedup, s.spread, s.unreliable]
                )


def write_rethinking_report(summary: RethinkingSummary, out_dir: str | Path) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(summary, out)
    write_text_atomic(out / "report.md", _markdown(summary))
    write_text_atomic(out / "report.html", _html(summary, figures))
    _write_csvs(summary, out)
    return out / "report.html"
