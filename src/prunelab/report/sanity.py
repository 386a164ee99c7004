"""The sanity-check study report: verdicts first, then accuracies, then the plots.

Writes ``report.md`` (plots referenced as PNG files), ``report.html`` (self-contained: plots
embedded), ``cells.csv`` (one row per variant and density) and ``verdicts.csv``.
"""

from __future__ import annotations

import math
from pathlib import Path

from prunelab.pruning.methods import METHODS
from prunelab.report import plots
from prunelab.report.files import atomic_csv, write_text_atomic
from prunelab.report.page import (
    TEST_COLUMNS,
    html_page,
    html_table,
    inline_markdown,
    markdown_page,
    md_table,
    png_img,
    test_values,
)
from prunelab.spec.studies import SanityStudy
from prunelab.summaries.sanity import SanitySummary, Verdict, ticket_family
from prunelab.summaries.stats import INCONCLUSIVE, MIN_PAIRS, AdjustedP, Estimate, describe_correction

#: How reports state an accuracy: mean and 95% CI over seeds, the CI clipped to what an accuracy can be.
ACCURACY_FORMAT = "mean [95% t-interval over seeds, clipped to 0–100 %]; n = 1: no interval"


def _pct(est: Estimate, empty: str = "n/a", n_expected: int | None = None) -> str:
    """An accuracy (fraction) as ``85.20 [82.10, 88.30]`` in %, the interval clipped to [0, 100] %
    (the estimate keeps the unclipped numbers); ``85.20 (n = 1)`` without an interval, never a
    fake ``± 0.00``. ``(n = k)`` is added when fewer than ``n_expected`` values went in."""
    if est.n == 0 or math.isnan(est.mean):
        return empty
    if not est.has_interval:
        return f"{100 * est.mean:.2f} (n = {est.n})"
    low, high = est.clipped(0.0, 1.0)
    text = f"{100 * est.mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    return text + (f" (n = {est.n})" if n_expected is not None and est.n < n_expected else "")


def _pp(est: Estimate) -> str:
    """A difference of accuracies in percentage points with its 95% CI (clipped to ±100 pp)."""
    if est.n == 0 or math.isnan(est.mean):
        return "n/a"
    if not est.has_interval:
        return f"{100 * est.mean:+.2f} (n = {est.n})"
    low, high = est.clipped(-1.0, 1.0)
    return f"{100 * est.mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def _adjusted_header(correction: str) -> str:
    """The verdict tables' column of adjusted p-values, named after the correction."""
    name = {"holm": "Holm", "bonferroni": "Bonferroni"}.get(correction)
    return f"p ({name}-adjusted)" if name else "p (no correction)"


def _correction_text(ps: list[AdjustedP], correction: str, alpha: float) -> str:
    """Which correction was applied to ``ps`` (one family) and over how many tests."""
    return describe_correction(correction, ps[0].family if ps else 0, alpha)


def _verdict_list(verdicts: list[Verdict]) -> str:
    return ", ".join(v.check for v in verdicts)


def _headline(summary: SanitySummary) -> list[str]:
    """One sentence per method: which checks it passes (those that significantly hurt it, by the
    adjusted p-value), which show no significant drop, and which are inconclusive (n too small)."""
    lines = []
    for method in summary.study.methods:
        mine = [v for v in summary.verdicts if v.method == method]
        if not mine:
            continue
        hurt = [v for v in mine if v.passes]
        inconclusive = [v for v in mine if v.inconclusive]
        no_drop = [v for v in mine if not v.passes and not v.inconclusive]
        if len(inconclusive) == len(mine):
            n = sorted({v.n_pairs for v in mine})
            lines.append(
                f"**{method}**: all {len(mine)} checks {INCONCLUSIVE}: "
                f"n = {', '.join(map(str, n))} pair(s), the paired t-test needs at least {MIN_PAIRS}."
            )
            continue
        if hurt:
            text = f"**{method}** passes {len(hurt)}/{len(mine)} checks (accuracy drops significantly under: {_verdict_list(hurt)})"
        else:
            text = f"**{method}** passes 0/{len(mine)} checks"
        if no_drop:
            text += f"; no significant drop under: {_verdict_list(no_drop)}"
        if inconclusive:
            text += f"; {INCONCLUSIVE}: " + ", ".join(f"{v.check} (n = {v.n_pairs})" for v in inconclusive)
        lines.append(text + ".")
    for row in summary.ticket_comparison:
        test, p = row["test"], row["p"]
        if row["n_pairs"] < MIN_PAIRS or math.isnan(p.adjusted):
            lines.append(f"{row['ticket']} vs **{row['method']}**: {INCONCLUSIVE}: n = {row['n_pairs']}.")
            continue
        if p.significant and test.diff.mean > 0:
            continue  # only call out where a random ticket matches or beats the method
        verb = "beats" if p.significant else "is not significantly worse than"
        lines.append(
            f"{row['ticket']} {verb} **{row['method']}**: method minus ticket = {_pp(test.diff)} pp, "
            f"p = {_p(p.raw)}, adjusted p = {_p(p.adjusted)} (n = {row['n_pairs']})."
        )
    for (label, density), layers in sorted(summary.collapsed.items()):
        if "+" not in label:
            lines.append(
                f"Layer collapse: **{label}** at density {density:g} prunes every weight of "
                f"{', '.join(layers)}, so the network cannot learn (accuracy at chance)."
            )
    return lines


def _verdict_rows(verdicts: list[Verdict]) -> list[list[str]]:
    return [
        [
            v.method,
            ticket_family(v.method),
            v.check,
            _pp(v.test.diff),
            _p(v.p_raw),
            _p(v.p_adjusted),
            str(v.n_pairs),
            v.conclusion,
        ]
        for v in verdicts
    ]


def _verdict_class(v: Verdict) -> str:
    if v.inconclusive:
        return "inconclusive"
    return "hurts" if v.passes else ("helps" if v.conclusion.startswith("helps") else "neutral")


def _accuracy_table(summary: SanitySummary) -> tuple[list[str], list[list[str]]]:
    densities = sorted(summary.study.densities, reverse=True)
    header = ["variant"] + [f"density {d:g}" for d in densities]
    labels = list(dict.fromkeys(c.variant.label for c in summary.cells))
    rows = []
    for label in labels:
        row = [label]
        for d in densities:
            cell = summary.cell(label, d)
            row.append(_pct(cell.accuracy, n_expected=len(summary.study.seeds)) if cell else "–")
        rows.append(row)
    if summary.dense is not None:
        dense = _pct(summary.dense, n_expected=len(summary.study.seeds))
        rows.append(["dense (unpruned)"] + [dense] * len(densities))
    return header, rows


def _ticket_line(study: SanityStudy) -> str:
    rounds = (
        f"IMP removing {study.imp_fraction:g} of the remaining weights per round"
        if study.imp_fraction is not None
        else "one-shot pruning"
    )
    keeps = []
    for m in study.methods:
        ticket = METHODS.get(m).ticket
        if ticket is not None:
            keep = {0: "init", "end": "trained weights"}.get(ticket["keep"], f"epoch {ticket['keep']}")
            keeps.append(f"{m}: keep {keep}, lr {ticket['retrain']}")
        else:
            keeps.append(f"{m}: at init")
    return f"{rounds}; " + "; ".join(keeps)


def _setup_lines(summary: SanitySummary) -> list[str]:
    s = summary.study
    t = s.train
    return [
        f"dataset `{s.data.name}` {s.data.options or ''}, model `{s.model.name}` {s.model.options or ''}",
        f"training: {t.epochs} epochs, batch {t.batch_size}, SGD lr {t.lr} ({t.schedule}), momentum {t.momentum}, "
        f"weight decay {t.weight_decay}",
        *(
            [
                "trained-weights tickets score the dense run's trained weights (the trunk, trained once "
                "per seed and shared); " + _ticket_line(s)
            ]
            if any(METHODS.get(m).ticket is not None for m in s.methods)
            else []
        ),
        f"densities (kept fraction of prunable weights): {', '.join(f'{d:g}' for d in s.densities)}; "
        f"seeds: {', '.join(str(x) for x in s.seeds)}",
        (
            "accuracy = test accuracy (%) of the best epoch on the validation hold-out, "
            if t.checkpoint == "best_validation"
            else "accuracy = final-epoch test accuracy (%), "
        )
        + ACCURACY_FORMAT,
        *(
            [
                f"random tickets ({', '.join(s.random_tickets)}): random positions drawn "
                + (
                    "per weight (Bernoulli, Random_Pruning)"
                    if s.sampling == "bernoulli"
                    else "as exact per-layer counts (Su et al.)"
                )
            ]
            if s.random_tickets
            else []
        ),
        f"verdicts: paired t-test (two-sided) of checked vs unchecked accuracy, pairs = (density, seed); "
        f"with fewer than {MIN_PAIRS} pairs a verdict is {INCONCLUSIVE}; p-values adjusted for multiple comparisons: "
        f"{_correction_text([v.p for v in summary.verdicts], s.correction, s.alpha)}; a method *passes* a "
        "check when the check significantly lowers its accuracy (adjusted p < alpha)",
        *(
            [
                "random tickets vs methods: paired t-test over (density, seed), a separate family: "
                + _correction_text([r["p"] for r in summary.ticket_comparison], s.correction, s.alpha)
            ]
            if summary.ticket_comparison
            else []
        ),
    ]


def _verdict_header(summary: SanitySummary) -> list[str]:
    return [
        "method",
        "family",
        "check",
        "Δ accuracy (pp) [95% CI]",
        "p (raw)",
        _adjusted_header(summary.study.correction),
        "n (pairs)",
        "verdict",
    ]


def _markdown(summary: SanitySummary) -> str:
    acc_header, acc_rows = _accuracy_table(summary)
    missing = (
        f"\n\n> {summary.missing} run(s) not finished; their cells are missing.\n" if summary.missing else ""
    )
    body = [
        "## At a glance",
        "",
        *[f"- {line}" for line in _headline(summary)],
        "",
        "## Verdict per method and check",
        "",
        md_table(_verdict_header(summary), _verdict_rows(summary.verdicts)),
        "",
        "## Test accuracy (%)",
        "",
        md_table(acc_header, acc_rows),
        "",
        "## Plots",
        "",
        "![accuracy against density](accuracy_vs_density.png)",
        "",
        "![check effects](check_effects.png)",
        "",
        "![per-layer densities](layer_densities.png)",
        "",
    ]
    if summary.metrics:
        header, rows = _metric_table(summary)
        body += ["## Beyond accuracy (mean over seeds)", "", md_table(header, rows), ""]
    setup = _setup_lines(summary)
    return markdown_page(_title(summary), setup, [missing], summary.notes, body, summary.provenance)


_LEGEND = """<p class="legend"><span style="background:#e6f4ea">check hurts: method uses that information (passes)</span>
<span style="background:#fdecea">no significant effect (fails the check)</span>
<span style="background:#fff4e5">check helps</span>
<span style="background:#f0f0f0">inconclusive (n too small)</span></p>"""


def _html(summary: SanitySummary, figures: dict[str, Path]) -> str:
    acc_header, acc_rows = _accuracy_table(summary)
    classes = [_verdict_class(v) for v in summary.verdicts]
    headline = "".join(f"<li>{inline_markdown(x)}</li>" for x in _headline(summary))
    body = f"""<h2>At a glance</h2><div class="headline"><ul>{headline}</ul></div>
<h2>Verdict per method and check</h2>
{_LEGEND}
{html_table(_verdict_header(summary), _verdict_rows(summary.verdicts), classes)}
<h2>Accuracy against density</h2>{png_img(figures["accuracy_vs_density.png"])}
{html_table(acc_header, acc_rows)}
<h2>What each check does</h2>{png_img(figures["check_effects.png"])}
<h2>Per-layer densities of each method's mask</h2>{png_img(figures["layer_densities.png"])}"""
    if summary.metrics:
        body += "<h2>Beyond accuracy (mean over seeds)</h2>" + html_table(*_metric_table(summary))
    missing = f"{summary.missing} run(s) not finished." if summary.missing else ""
    setup = _setup_lines(summary)
    return html_page(_title(summary), setup, missing, summary.notes, body, summary.provenance)


def _metric_table(summary: SanitySummary) -> tuple[list[str], list[list[str]]]:
    """One row per (variant, density), one column per evaluated metric (means over seeds)."""
    names = sorted({name for found in summary.metrics.values() for name in found})
    rows = [
        [label, f"{density:g}", *[f"{found[n].mean:.4f}" if n in found else "n/a" for n in names]]
        for (label, density), found in summary.metrics.items()
    ]
    return ["variant", "density", *names], rows


def _title(summary: SanitySummary) -> str:
    return f"Sanity-check study: {summary.study.name}"


def _figures(summary: SanitySummary, out: Path) -> dict[str, Path]:
    colours = plots.sanity_colours(summary)  # one colour per method in every plot
    return {
        "accuracy_vs_density.png": plots.accuracy_vs_density(
            summary, out / "accuracy_vs_density.png", colours
        ),
        "check_effects.png": plots.check_effects(summary, out / "check_effects.png", colours),
        "layer_densities.png": plots.layer_densities(summary, out / "layer_densities.png", colours),
    }


def _write_csvs(summary: SanitySummary, out: Path) -> None:
    with atomic_csv(out / "cells.csv") as writer:
        writer.writerow(
            ["variant", "group", "method", "check", "allocation", "density", "n", "mean_acc", "ci_half"]
        )
        for c in summary.cells:
            var, acc = c.variant, c.accuracy
            writer.writerow(
                [
                    var.label,
                    var.group,
                    var.method,
                    var.check,
                    var.allocation,
                    c.density,
                    acc.n,
                    acc.mean,
                    acc.half_width,
                ]
            )
    with atomic_csv(out / "verdicts.csv") as writer:
        writer.writerow(["method", "check", *TEST_COLUMNS, "test", "n_pairs", "conclusion"])
        for v in summary.verdicts:
            writer.writerow([v.method, v.check, *test_values(v), v.test.test, v.n_pairs, v.conclusion])


def write_sanity_report(summary: SanitySummary, out_dir: str | Path) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(summary, out)
    write_text_atomic(out / "report.md", _markdown(summary))
    write_text_atomic(out / "report.html", _html(summary, figures))
    _write_csvs(summary, out)
    return out / "report.html"
