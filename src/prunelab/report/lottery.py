"""The lottery-ticket report (Liu et al. 2019, Section 6): winning ticket vs random re-init per IMP
level, at each learning rate; Markdown, self-contained HTML, a plot and CSV."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from prunelab.report.files import atomic_csv, save_figure_atomic, write_text_atomic
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
from prunelab.report.plots import _STYLE, clipped_band, method_colours
from prunelab.report.sanity import ACCURACY_FORMAT, _correction_text, _p, _pct, _pp
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


#: An arm of the study ("IMP" or "one-shot") and its summary per learning rate.
Arms = list[tuple[str, list[tuple[float, SanitySummary]]]]


def _arms(summary: LotterySummary) -> Arms:
    return [("IMP", summary.per_lr)] + ([("one-shot", summary.one_shot)] if summary.one_shot else [])


def _title(summary: LotterySummary) -> str:
    return (
        f"Winning ticket vs random re-initialisation: {summary.study.data.name} / {summary.study.model.name}"
    )


def _setup_lines(summary: LotterySummary) -> list[str]:
    study = summary.study
    t = study.train
    all_p = [v.p for _, group in _arms(summary) for _, sub in group for v in sub.verdicts]
    return [
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


def _verdicts(summary: LotterySummary) -> list[tuple[str, str]]:
    """(sentence, CSS class) per arm and lr, then Liu et al.'s pattern when it can be judged."""
    arms = _arms(summary)
    verdicts = [
        (f"{arm}, {text}" if len(arms) > 1 else text, cls)
        for arm, group in arms
        for lr, sub in group
        for text, cls in [_verdict(lr, sub)]
    ]
    pattern = liu_pattern(summary)
    if pattern:
        verdicts.append((pattern, "neutral"))
    return verdicts


def _table(summary: LotterySummary) -> tuple[list[str], list[list[str]]]:
    arms = _arms(summary)
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
        for row in _rows(lr, sub, summary.study.levels)
    ]
    return header, rows


def _missing(summary: LotterySummary) -> int:
    return sum(sub.missing for _, group in _arms(summary) for _, sub in group)


def _markdown(summary: LotterySummary) -> str:
    missing = _missing(summary)
    body = [
        "## At a glance",
        "",
        *[f"- {text}" for text, _ in _verdicts(summary)],
        "",
        "## Test accuracy (%) per IMP level",
        "",
        md_table(*_table(summary)),
        "",
        "![winning ticket vs random re-init](winning_vs_random.png)",
        "",
    ]
    missing_md = f"\n**{missing} run(s) not finished.**\n" if missing else ""
    setup = _setup_lines(summary)
    return markdown_page(_title(summary), setup, [missing_md], summary.notes, body, summary.provenance)


def _html(summary: LotterySummary, figure: Path) -> str:
    missing = _missing(summary)
    glance = "".join(f'<li class="{cls}">{inline_markdown(text)}</li>' for text, cls in _verdicts(summary))
    body = f"""<h2>At a glance</h2><div class="headline"><ul>{glance}</ul></div>
<h2>Accuracy against density</h2>{png_img(figure)}
<h2>Test accuracy (%) per IMP level</h2>{html_table(*_table(summary))}"""
    missing_html = f"{missing} run(s) not finished." if missing else ""
    setup = _setup_lines(summary)
    return html_page(_title(summary), setup, missing_html, summary.notes, body, summary.provenance)


def _write_csvs(summary: LotterySummary, out: Path) -> None:
    arms = _arms(summary)
    with atomic_csv(out / "levels.csv") as writer:
        writer.writerow(["lr", "variant", "density", "n", "mean_acc", "ci_half", "pruning"])
        for arm, group in arms:
            for lr, sub in group:
                for cell in sub.cells:
                    acc = cell.accuracy
                    writer.writerow(
                        [lr, cell.variant.label, cell.density, acc.n, acc.mean, acc.half_width, arm]
                    )
    with atomic_csv(out / "verdicts.csv") as writer:
        writer.writerow(["lr", "check", *TEST_COLUMNS, "n_pairs", "conclusion", "pruning"])
        for arm, group in arms:
            for lr, v in [(lr, v) for lr, sub in group for v in sub.verdicts]:
                writer.writerow([lr, v.check, *test_values(v), v.n_pairs, v.conclusion, arm])


def write_lottery_report(summary: LotterySummary, out_dir: str | Path) -> Path:
    """Write report.md, report.html, levels.csv, verdicts.csv and the plot into ``out_dir``; return
    report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = _plot(summary, out / "winning_vs_random.png")
    write_text_atomic(out / "report.md", _markdown(summary))
    write_text_atomic(out / "report.html", _html(summary, figure))
    _write_csvs(summary, out)
    return out / "report.html"
