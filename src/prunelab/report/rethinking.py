"""The Rethinking study report: verdict per method first, then one table per method, then the plots.

Writes ``report.md`` (plots referenced as PNG files), ``report.html`` (self-contained: plots embedded),
``accuracy.csv`` (one row per method and table row) and ``verdicts.csv`` (one per method and scratch
protocol). Accuracies are final-epoch test accuracy in %, mean ± 95% t-interval half-width over
seeds. Densities are kept fractions (of all parameters, or of the conv weights for weight-level
masks); sparsity = 1 − density.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunelab.report.files import atomic_csv, write_text_atomic  # noqa: E402
from prunelab.report.provenance import provenance_html, provenance_markdown
from prunelab.report.sanity import _CSS, _html_table, _inline_markdown, _md_table  # noqa: E402
from prunelab.summaries.rethinking import (  # noqa: E402
    ROW_LABELS,
    ROWS,
    Comparison,
    MethodSummary,
    RethinkingSummary,
    finetune_epochs_of,
    latency_speedups,
)
from prunelab.summaries.stats import SIGNIFICANCE, Estimate  # noqa: E402

_STYLE: Any = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_PROTOCOL_NAMES = {"scratch_e": "Scratch-E", "scratch_b": "Scratch-B", "finetune": "fine-tune"}


def _pct(est: Estimate) -> str:
    if est.n == 0 or math.isnan(est.mean):
        return "–"
    return f"{100 * est.mean:.2f} ± {100 * est.half_width:.2f}"


def _pp(est: Estimate) -> str:
    return f"{100 * est.mean:+.2f} [{100 * est.low:+.2f}, {100 * est.high:+.2f}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


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


def _latency_cells(method: MethodSummary) -> tuple[str, str, str]:
    """(large latency, pruned latency, speedup) at the largest CPU batch, with CUDA appended when measured."""
    large, pruned, speed = [], [], []
    rows = latency_speedups(method.latency)
    for device in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == device]
        _, batch, f, p, s = max(mine, key=lambda r: r[1])
        large.append(f"{f:.2f} ms ({device}, batch {batch})")
        pruned.append(f"{p:.2f} ms ({device}, batch {batch})")
        speed.append(f"{s:.2f}× ({device})")
    return ("; ".join(large) or "–", "; ".join(pruned) or "–", "; ".join(speed) or "–")


def _method_table(method: MethodSummary) -> tuple[list[str], list[list[str]]]:
    header = [
        "row",
        "epochs",
        "test acc (%)",
        "params",
        "params density (kept fraction of all params)",
        "FLOPs" + (" (nonzero)" if method.masked else ""),
        "FLOPs reduction (full / pruned)",
        "measured latency",
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
                _pct(method.accuracy[row]),
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
                    _p(c.test.p_value),
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


def _headline(summary: RethinkingSummary) -> list[str]:
    """One sentence per method: fine-tune vs Scratch-E vs Scratch-B, and the cost it buys."""
    lines = []
    for m in summary.methods:
        acc = m.accuracy
        if acc["finetune"].n == 0:
            continue
        parts = [f"fine-tuned {_pct(acc['finetune'])}"]
        for c in m.comparisons:
            parts.append(
                f"{_PROTOCOL_NAMES[c.protocol]} {_pct(acc[c.protocol])} "
                f"({_pp(c.test.diff)} pp, p = {_p(c.test.p_value)}: {c.conclusion})"
            )
        cost = ""
        if not math.isnan(m.flops_reduction):
            cost = f"; {m.flops_reduction:.2f}× fewer FLOPs"
            speed = [r for r in latency_speedups(m.latency) if r[0] == "cpu"]
            if speed:
                best = max(speed, key=lambda r: r[1])
                cost += f", measured CPU speedup {best[4]:.2f}× at batch {best[1]}"
        lines.append(f"**{m.method}**: " + "; ".join(parts) + cost + ".")
    holds = [c for m in summary.methods for c in m.comparisons if c.supports_paper]
    fails = [c for m in summary.methods for c in m.comparisons if c.supports_paper is False]
    if holds or fails:
        text = (
            f"The paper's claim (training the pruned architecture from scratch is not worse than "
            f"fine-tuning it) holds in {len(holds)} of {len(holds) + len(fails)} method × protocol pairs"
        )
        if fails:
            text += "; it fails for " + ", ".join(
                f"{c.method} ({_PROTOCOL_NAMES[c.protocol]})" for c in fails
            )
        lines.append(text + ".")
    return lines


def _opts(options: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""


def _setup_lines(summary: RethinkingSummary) -> list[str]:
    s = summary.study
    t = s.train
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
        "mean ± 95% t-interval half-width over seeds",
        f"verdict: paired t-test (two-sided) of scratch − fine-tune accuracy over seeds (pairs = seed), "
        f"alpha = {SIGNIFICANCE}, with the 95% CI of the mean difference; also whether the two protocols' "
        "95% CIs overlap. The paper's claim holds unless scratch is significantly worse",
        "FLOPs: multiply-adds counted as 2 FLOPs (the paper's counter); weight-level masks count only "
        "nonzero weights. Latency: measured forward time per batch (no gradients); speedup = large / pruned",
    ]


def accuracy_by_protocol(summary: RethinkingSummary, path: Path) -> Path:
    """Test accuracy (%) per method: large, fine-tuned, Scratch-E, Scratch-B bars with 95% CI error bars."""
    rows = ["large", "finetune", "scratch_e", "scratch_b"]
    methods = summary.methods
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(methods) + 2), 4.4))
        width = 0.8 / len(rows)
        cmap = plt.get_cmap("tab10")
        lows = []
        for j, row in enumerate(rows):
            xs, ys, errs = [], [], []
            for i, m in enumerate(methods):
                est = m.accuracy[row]
                if est.n == 0:
                    continue
                xs.append(i + (j - (len(rows) - 1) / 2) * width)
                ys.append(100 * est.mean)
                errs.append(100 * est.half_width)
                lows.append(100 * est.low)
            ax.bar(xs, ys, width, yerr=errs, color=cmap(j), capsize=2, label=ROW_LABELS[row])
        if lows:
            top = max(100 * m.accuracy[r].high for m in methods for r in rows if m.accuracy[r].n)
            ax.set_ylim(max(0.0, min(lows) - 5), min(100.0, top + 2))
        ax.set_xticks(range(len(methods)), [m.method for m in methods], rotation=15)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy per protocol (mean and 95% CI over seeds)")
        ax.legend(fontsize=8, ncol=4)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def speedup_vs_flops(summary: RethinkingSummary, path: Path) -> Path:
    """Measured speedup (large / pruned latency, largest batch) against FLOPs reduction, per method."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 4.4))
        top = 1.0
        for m in summary.methods:
            for device, marker in (("cpu", "o"), ("cuda", "s")):
                rows = [r for r in latency_speedups(m.latency) if r[0] == device]
                if not rows or math.isnan(m.flops_reduction):
                    continue
                best = max(rows, key=lambda r: r[1])
                ax.scatter(m.flops_reduction, best[4], marker=marker)
                ax.annotate(f"{m.method} ({device})", (m.flops_reduction, best[4]), fontsize=7)
                top = max(top, m.flops_reduction, best[4])
        ax.plot([1, top], [1, top], color="black", lw=0.8, ls="--", label="speedup = FLOPs reduction")
        ax.set_xlabel("FLOPs reduction (full / pruned)")
        ax.set_ylabel("measured speedup (large / pruned latency)")
        ax.set_title("Does fewer FLOPs mean faster?")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def write_rethinking_report(summary: RethinkingSummary, out_dir: str | Path) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "accuracy_by_protocol.png": accuracy_by_protocol(summary, out / "accuracy_by_protocol.png"),
        "speedup_vs_flops.png": speedup_vs_flops(summary, out / "speedup_vs_flops.png"),
    }
    title = f"Rethinking the value of pruning: {summary.study.name}"
    setup = _setup_lines(summary)
    headline = _headline(summary)
    verdict_header = [
        "method",
        "scratch protocol",
        "scratch − fine-tune (pp) [95% CI]",
        "p (paired t)",
        "seeds",
        "95% CIs overlap",
        "conclusion",
        "paper's claim holds",
    ]
    verdict_rows = _verdict_rows(summary)
    tables = {m.method: _method_table(m) for m in summary.methods}
    missing = f"> {summary.missing} run(s) not finished; their cells are missing." if summary.missing else ""

    md = [f"# {title}", "", *[f"- {line}" for line in setup], "", missing, "", "## At a glance", ""]
    md += [f"- {line}" for line in headline]
    md += ["", "## Scratch vs fine-tune, per method", "", _md_table(verdict_header, verdict_rows), ""]
    for m in summary.methods:
        header, rows = tables[m.method]
        md += [f"## {m.method}", ""]
        if m.architecture:
            md += [f"pruned architecture: `{m.architecture.get('options', m.architecture)}` (first seed)", ""]
        md += [_md_table(header, rows), ""]
    md += ["## Plots", "", "![accuracy per protocol](accuracy_by_protocol.png)", ""]
    md += ["![speedup against FLOPs reduction](speedup_vs_flops.png)", ""]
    md += ["", provenance_markdown(summary.provenance)]
    write_text_atomic(out / "report.md", "\n".join(md))

    images = {name: base64.b64encode(p.read_bytes()).decode() for name, p in figures.items()}
    classes = [_verdict_class(c) for m in summary.methods for c in m.comparisons]
    sections = []
    for m in summary.methods:
        header, rows = tables[m.method]
        arch = (
            f"<p>pruned architecture: <code>{html.escape(str(m.architecture.get('options', m.architecture)))}"
            "</code> (first seed)</p>"
            if m.architecture
            else ""
        )
        sections.append(f"<h2>{html.escape(m.method)}</h2>{arch}{_html_table(header, rows)}")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{"<br>".join(_inline_markdown(x) for x in setup)}</p>
{f"<p><b>{html.escape(missing.lstrip('> '))}</b></p>" if missing else ""}
<h2>At a glance</h2><div class="headline"><ul>{"".join(f"<li>{_inline_markdown(x)}</li>" for x in headline)}</ul></div>
<h2>Scratch vs fine-tune, per method</h2>
<p class="legend"><span style="background:#e6f4ea">paper's claim holds (scratch not worse)</span>
<span style="background:#fff4e5">scratch significantly worse</span>
<span style="background:#fdecea">inconclusive</span></p>
{_html_table(verdict_header, verdict_rows, classes)}
<img src="data:image/png;base64,{images["accuracy_by_protocol.png"]}">
{"".join(sections)}
<h2>Fewer FLOPs, faster?</h2><img src="data:image/png;base64,{images["speedup_vs_flops.png"]}">
{provenance_html(summary.provenance)}</body></html>"""
    write_text_atomic(out / "report.html", page)

    with atomic_csv(out / "accuracy.csv") as writer:
        writer.writerow(["method", "row", "n", "mean_acc", "ci_half", "epochs", "params", "flops"])
        for m in summary.methods:
            for row in ROWS:
                est = m.accuracy[row]
                side = "full" if row == "large" else "pruned"
                writer.writerow(
                    [
                        m.method,
                        row,
                        est.n,
                        est.mean,
                        est.half_width,
                        _epochs(m.epochs[row]),
                        m.params.get(side),
                        m.flops.get(side),
                    ]
                )
    with atomic_csv(out / "verdicts.csv") as writer:
        writer.writerow(
            [
                "method",
                "protocol",
                "mean_diff",
                "ci_half",
                "p_value",
                "test",
                "n_pairs",
                "ci_overlap",
                "conclusion",
            ]
        )
        for m in summary.methods:
            for c in m.comparisons:
                writer.writerow(
                    [
                        c.method,
                        c.protocol,
                        c.test.diff.mean,
                        c.test.diff.half_width,
                        c.test.p_value,
                        c.test.test,
                        c.n_pairs,
                        c.ci_overlap,
                        c.conclusion,
                    ]
                )
    return out / "report.html"
