"""The lottery-ticket report (Liu et al. 2019, Section 6): winning ticket vs random re-init per IMP
level, at each learning rate; Markdown, self-contained HTML, a plot and CSV."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib.pyplot as plt

from prunelab.report.files import atomic_csv, save_figure_atomic, write_text_atomic
from prunelab.report.plots import _STYLE, clipped_band, method_colours
from prunelab.report.provenance import provenance_html, provenance_markdown
from prunelab.report.sanity import (
    _CSS,
    ACCURACY_FORMAT,
    _correction_text,
    _html_table,
    _inline_markdown,
    _md_table,
    _p,
    _pct,
    _pp,
    _warnings_html,
    _warnings_md,
)
from prunelab.summaries.lottery import LotterySummary
from prunelab.summaries.sanity import SanitySummary
from prunelab.summaries.stats import INCONCLUSIVE, MIN_PAIRS

WINNING = "lottery"
RANDOM_INIT = "lottery + reinit_fan"


def _verdict(lr: float, summary: SanitySummary) -> tuple[str, str]:
    """(one-line conclusion, CSS class) for the winning-vs-random comparison at ``lr``, decided on
    the p-value adjusted over the study's family (one verdict per lr)."""
    verdict = next((v for v in summary.verdicts if v.check == "reinit_fan"), None)
    if verdict is None:
        return f"lr {lr:g}: no finished pairs yet", "neutral"
    diff = verdict.test.diff
    if verdict.inconclusive:
        return (
            f"lr {lr:g}: **{INCONCLUSIVE}**: {verdict.n_pairs} (level, seed) pair(s), the paired t-test "
            f"needs at least {MIN_PAIRS}; random re-init minus winning ticket = {_pp(diff)} pp",
            "inconclusive",
        )
    gain = (
        f"random re-init minus winning ticket = {_pp(diff)} pp (p = {_p(verdict.p_raw)}, adjusted p = "
        f"{_p(verdict.p_adjusted)}, n = {verdict.n_pairs} pairs)"
    )
    if verdict.p.significant and diff.mean < 0:
        return f"lr {lr:g}: **the winning-ticket initialisation helps**: {gain}", "hurts"
    if verdict.p.significant and diff.mean > 0:
        return f"lr {lr:g}: **random re-initialisation is better**: {gain}", "helps"
    return (
        f"lr {lr:g}: **no significant difference** between winning ticket and random re-init: {gain}",
        "neutral",
    )


def liu_pattern(summary: LotterySummary) -> str | None:
    """Compare the largest and the smallest lr the way Liu et al. 2019 do: is the winning ticket's
    gain over random re-init larger at the small lr, and is the small lr worse overall?"""
    gains: dict[float, float] = {}
    best: dict[float, float] = {}
    for lr, sub in summary.per_lr:
        verdict = next((v for v in sub.verdicts if v.check == "reinit_fan"), None)
        if verdict is not None:
            gains[lr] = -verdict.test.diff.mean
        winning = [c.accuracy.mean for c in sub.cells if c.variant.label == WINNING]
        if winning:
            best[lr] = max(winning)
    if len(gains) < 2 or len(best) < 2:
        return None
    large, small = max(gains), min(gains)
    gain_larger = gains[small] > gains[large]
    small_worse = best[small] < best[large]
    return (
        f"Liu et al.'s pattern (the winning ticket helps more at the small lr, and the small lr is worse "
        f"overall): gain {100 * gains[small]:+.2f} pp at lr {small:g} vs {100 * gains[large]:+.2f} pp at lr "
        f"{large:g} ({'yes' if gain_larger else 'no'}); best winning-ticket accuracy {100 * best[small]:.2f}% "
        f"at lr {small:g} vs {100 * best[large]:.2f}% at lr {large:g} ({'yes' if small_worse else 'no'}): "
        f"**{'reproduced' if gain_larger and small_worse else 'not reproduced'}**"
    )


def _rows(lr: float, summary: SanitySummary, levels: tuple[int, ...]) -> list[list[str]]:
    rows = []
    for level, density in zip(levels, sorted(summary.study.densities, reverse=True), strict=True):
        win, rand = summary.cell(WINNING, density), summary.cell(RANDOM_INIT, density)
        diff = "–"
        if win and rand and win.accuracy.n and rand.accuracy.n:
            diff = f"{100 * (win.accuracy.mean - rand.accuracy.mean):+.2f}"
        rows.append(
            [
                f"{lr:g}",
                str(level),
                f"{density:.4g}",
                f"{100 * (1 - density):.1f}",
                _pct(win.accuracy, n_expected=len(summary.study.seeds)) if win else "–",
                _pct(rand.accuracy, n_expected=len(summary.study.seeds)) if rand else "–",
                diff,
                _pct(summary.dense, n_expected=len(summary.study.seeds)) if summary.dense else "–",
            ]
        )
    return rows


def _plot(summary: LotterySummary, path: Path) -> Path:
    colours = method_colours(["winning ticket", "random re-init"])  # the same in every lr's panel
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(
            1, len(summary.per_lr), figsize=(5.2 * len(summary.per_lr), 4.2), sharey=True
        )
        axes_list = list(axes) if len(summary.per_lr) > 1 else [axes]
        one_shot = dict(summary.one_shot)
        for ax, (lr, sub) in zip(axes_list, summary.per_lr, strict=True):
            curves = [(sub, WINNING, "-", ""), (sub, RANDOM_INIT, "--", "")]
            if lr in one_shot:
                curves += [
                    (one_shot[lr], WINNING, ":", ", one-shot"),
                    (one_shot[lr], RANDOM_INIT, "-.", ", one-shot"),
                ]
            for arm, label, style, suffix in curves:
                cells = sorted((c for c in arm.cells if c.variant.label == label), key=lambda c: c.density)
                if not cells:
                    continue
                xs = [c.density for c in cells]
                base = "winning ticket" if label == WINNING else "random re-init"
                name = base + suffix
                ax.plot(
                    xs,
                    [100 * c.accuracy.mean for c in cells],
                    style,
                    marker="o",
                    label=name,
                    color=colours[base],
                )
                low, high = clipped_band((c.accuracy for c in cells), 0.0, 1.0)
                ax.fill_between(xs, low, high, color=colours[base], alpha=0.15 if not suffix else 0.07)
            if sub.dense is not None:
                ax.axhline(100 * sub.dense.mean, color="black", lw=1, label="dense")
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_title(f"initial lr {lr:g}")
            ax.set_xlabel("density (kept fraction, log scale)")
            ax.legend(fontsize=8)
        axes_list[0].set_ylabel("test accuracy (%)")
        fig.tight_layout()
        save_figure_atomic(fig, path)
        plt.close(fig)
    return path


def write_lottery_report(summary: LotterySummary, out_dir: str | Path) -> Path:
    """Write report.md, report.html, levels.csv, verdicts.csv and the plot into ``out_dir``; return
    report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = summary.study
    t = study.train
    arms = [("IMP", summary.per_lr)] + ([("one-shot", summary.one_shot)] if summary.one_shot else [])
    all_p = [v.p for _, group in arms for _, sub in group for v in sub.verdicts]
    title = f"Winning ticket vs random re-initialisation: {study.data.name} / {study.model.name}"
    setup = [
        f"dataset `{study.data.name}`, model `{study.model.name}`; training: {t.epochs} epochs, batch "
        f"{t.batch_size}, SGD ({t.schedule}), momentum {t.momentum}, weight decay {t.weight_decay}",
        f"IMP: global magnitude pruning of the trained ticket, {study.imp_fraction:g} of the remaining "
        f"weights per round, rewound to the original initialisation (winning ticket, Frankle & Carbin 2019)"
        + (
            "; one-shot: the trained trunk pruned to each level at once, same rewinding"
            if summary.one_shot
            else ""
        )
        + f"; prunable weights: {study.prunable.scope}; "
        f"random re-init = the same mask on a fresh He init with each layer's effective fan-in (Liu et al. 2019)",
        f"levels {', '.join(map(str, study.levels))}; seeds {', '.join(map(str, study.seeds))}; "
        f"accuracy = final-epoch test accuracy (%), {ACCURACY_FORMAT}",
        f"verdict: paired two-sided t-test over (level, seed) pairs, one per lr (with fewer than {MIN_PAIRS} "
        f"pairs it is {INCONCLUSIVE}); p-values adjusted for multiple comparisons: "
        f"{_correction_text(all_p, study.correction, study.alpha)}",
    ]
    verdicts = [
        (f"{arm}, {text}" if len(arms) > 1 else text, cls)
        for arm, group in arms
        for lr, sub in group
        for text, cls in [_verdict(lr, sub)]
    ]
    pattern = liu_pattern(summary)
    if pattern:
        verdicts.append((pattern, "neutral"))
    header = [
        "lr",
        "level",
        "density",
        "sparsity %",
        "winning ticket",
        "random re-init",
        "Δ (pp)",
        "dense",
    ]
    if len(arms) > 1:
        header = ["pruning", *header]
    rows = [
        ([arm] if len(arms) > 1 else []) + row
        for arm, group in arms
        for lr, sub in group
        for row in _rows(lr, sub, study.levels)
    ]
    missing = sum(sub.missing for _, group in arms for _, sub in group)
    figure = _plot(summary, out / "winning_vs_random.png")

    md = [
        f"# {title}",
        "",
        *[f"- {line}" for line in setup],
        f"\n**{missing} run(s) not finished.**\n" if missing else "",
        *_warnings_md(summary.notes),
        "## At a glance",
        "",
        *[f"- {text}" for text, _ in verdicts],
        "",
        "## Test accuracy (%) per IMP level",
        "",
        _md_table(header, rows),
        "",
        "![winning ticket vs random re-init](winning_vs_random.png)",
        "",
    ]
    md += ["", provenance_markdown(summary.provenance)]
    write_text_atomic(out / "report.md", "\n".join(md))
    image = base64.b64encode(figure.read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{"<br>".join(_inline_markdown(x) for x in setup)}</p>
{f"<p><b>{missing} run(s) not finished.</b></p>" if missing else ""}
{_warnings_html(summary.notes)}
<h2>At a glance</h2><div class="headline"><ul>{"".join(f'<li class="{cls}">{_inline_markdown(text)}</li>' for text, cls in verdicts)}</ul></div>
<h2>Accuracy against density</h2><img src="data:image/png;base64,{image}">
<h2>Test accuracy (%) per IMP level</h2>{_html_table(header, rows)}
{provenance_html(summary.provenance)}</body></html>"""
    write_text_atomic(out / "report.html", page)
    with atomic_csv(out / "levels.csv") as writer:
        writer.writerow(["lr", "variant", "density", "n", "mean_acc", "ci_half", "pruning"])
        for arm, group in arms:
            for lr, sub in group:
                for cell in sub.cells:
                    writer.writerow(
                        [
                            lr,
                            cell.variant.label,
                            cell.density,
                            cell.accuracy.n,
                            cell.accuracy.mean,
                            cell.accuracy.half_width,
                            arm,
                        ]
                    )
    with atomic_csv(out / "verdicts.csv") as writer:
        writer.writerow(
            ["lr", "check", "mean_diff", "ci_half", "p_value", "p_adjusted", "correction", "n_tests", "alpha"]
            + ["n_pairs", "conclusion", "pruning"]
        )
        for arm, group in arms:
            for lr, v in [(lr, v) for lr, sub in group for v in sub.verdicts]:
                writer.writerow(
                    [
                        lr,
                        v.check,
                        v.test.diff.mean,
                        v.test.diff.half_width,
                        v.p_raw,
                        v.p_adjusted,
                        v.p.correction,
                    ]
                    + [v.p.family, v.p.alpha, v.n_pairs, v.conclusion, arm]
                )
    return out / "report.html"
