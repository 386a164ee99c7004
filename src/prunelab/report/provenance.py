"""The provenance section of a study report (Markdown and HTML) from a summary's
:func:`~prunelab.summaries.provenance.provenance_summary`."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def format_duration(seconds: float) -> str:
    """A duration in seconds as ``"1 h 02 min 05 s"``, ``"4 min 07 s"`` or ``"12.3 s"``."""
    if seconds < 59.95:  # 59.97 s shows as "1 min 00 s", not "60.0 s"
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def _items(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The section's (label, text) lines, shared by the Markdown and HTML forms."""
    runs = int(summary.get("runs", 0))
    with_provenance = int(summary.get("with_provenance", 0))
    missing = f", {runs - with_provenance} without provenance" if with_provenance < runs else ""
    total = format_duration(float(summary.get("seconds", 0.0)))
    lines = [
        ("Runs", f"{runs} finished{missing}"),
        ("Total compute time", f"{total} (sum of the runs' wall-clock times)"),
    ]

    def joined(key: str) -> str:
        values = summary.get(key) or []
        return ", ".join(str(v) for v in values) if values else "unknown"

    if with_provenance:
        lines += [
            ("prunelab", joined("prunelab")),
            ("PyTorch", joined("torch")),
            ("Python", joined("python")),
            ("Devices", joined("devices")),
            ("Threads", joined("threads")),
        ]
        first, last = summary.get("first"), summary.get("last")
        if first is not None:
            lines.append(("Finished (UTC)", str(first) if first == last else f"{first} to {last}"))
    return lines


def provenance_markdown(summary: Mapping[str, Any]) -> str:
    """A ``## Provenance`` Markdown section (ending in a newline) from :func:`provenance_summary`."""
    body = "\n".join(f"- **{label}:** {text}" for label, text in _items(summary))
    return f"## Provenance\n\n{body}\n"


def provenance_html(summary: Mapping[str, Any]) -> str:
    """The same section as an HTML fragment (``<h2>`` and a list; every text escaped)."""
    items = "\n".join(
        f"<li><b>{html.escape(label)}:</b> {html.escape(text)}</li>" for label, text in _items(summary)
    )
    return f'<section class="provenance">\n<h2>Provenance</h2>\n<ul>\n{items}\n</ul>\n</section>\n'


__all__ = ["format_duration", "provenance_html", "provenance_markdown"]
