"""What the study reports share: the Markdown and self-contained HTML page around their sections
(title, setup lines, missing runs, warnings, provenance), tables, and the columns every verdict CSV
gives its paired test."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunelab.report.provenance import provenance_html, provenance_markdown
from prunelab.summaries.stats import PairedVerdict

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0;font-size:14px} th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left} th{background:#f4f4f4}
tr.hurts td{background:#e6f4ea} tr.neutral td{background:#fdecea} tr.helps td{background:#fff4e5}
.headline{background:#f7f9fc;border-left:4px solid #3b6fb6;padding:.6em 1em} img{max-width:100%}
.legend span{padding:2px 6px;margin-right:8px} code{background:#f4f4f4;padding:1px 4px}
tr.inconclusive td{background:#f0f0f0;color:#555}
.warning{background:#fff4e5;border-left:4px solid #e69500;padding:.4em 1em}
"""

#: The columns of a verdict CSV that describe its paired test and the p-value adjustment.
TEST_COLUMNS = ["mean_diff", "ci_half", "p_value", "p_adjusted", "correction", "n_tests", "alpha"]


def test_values(verdict: PairedVerdict) -> list[Any]:
    """A verdict's values for :data:`TEST_COLUMNS`."""
    diff, p = verdict.test.diff, verdict.p
    return [diff.mean, diff.half_width, verdict.p_raw, verdict.p_adjusted, p.correction, p.family, p.alpha]


def warnings_md(notes: list[str]) -> list[str]:
    # A blank line after each: consecutive ">" lines would merge into one paragraph.
    return [line for note in notes for line in (f"> **Warning:** {note}", "")]


def warnings_html(notes: list[str]) -> str:
    return "".join(f'<p class="warning"><b>Warning:</b> {html.escape(note)}</p>' for note in notes)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)).replace("`", "")


def png_img(path: Path) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded as base64."""
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def markdown_page(
    title: str,
    setup: list[str],
    missing: list[str],
    notes: list[str],
    body: list[str],
    provenance: Mapping[str, Any],
) -> str:
    """The Markdown report: title, setup bullets, the ``missing`` lines, warnings, ``body``, provenance."""
    lines = [f"# {title}", "", *[f"- {line}" for line in setup], *missing, *warnings_md(notes), *body]
    return "\n".join([*lines, "", provenance_markdown(provenance)])


def html_page(
    title: str, setup: list[str], missing: str, notes: list[str], body: str, provenance: Mapping[str, Any]
) -> str:
    """The self-contained HTML report: title, setup lines, ``missing`` (a sentence, bold; none when
    empty), warnings, ``body`` and provenance."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{"<br>".join(inline_markdown(x) for x in setup)}</p>
{f"<p><b>{html.escape(missing)}</b></p>" if missing else ""}
{warnings_html(notes)}
{body}
{provenance_html(provenance)}</body></html>"""
