"""The provenance section of a study report: which code, software and hardware computed its runs,
when, and how much compute they took. Pure functions over ``result.json`` records (see
:mod:`prunelab.provenance`), so every report writer can call them without plotting or studies.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any


def _number(value: Any) -> float:
    """``value`` as a finite float of seconds; anything else (missing, text, NaN) counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _software(prov: Mapping[str, Any]) -> str | None:
    version = prov.get("prunelab_version")
    commit = prov.get("git_commit")
    if version is None and commit is None:
        return None
    text = str(version) if version is not None else "unknown version"
    if commit:
        text += f" (git {str(commit)[:12]}{', dirty' if prov.get('git_dirty') else ''})"
    return text


def _device(prov: Mapping[str, Any]) -> str | None:
    device, name = prov.get("device"), prov.get("device_name")
    if device is None:
        return None
    return f"{device} ({name})" if name else str(device)


def provenance_summary(results: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Summarise the provenance of the finished runs among ``results`` (``status == "done"``;
    None and unfinished entries are skipped).

    Returns:
        ``runs``: finished runs; ``with_provenance``: those that recorded provenance (runs from
        before it was recorded have none); ``prunelab``: distinct ``"version (git <12 hex>[, dirty])"``;
        ``torch``, ``python``: distinct versions; ``devices``: distinct ``"device (name)"``;
        ``threads``: distinct torch thread counts; ``first``/``last``: the earliest and latest
        finishing date-time (ISO 8601 UTC strings, None when none recorded); ``seconds``: total
        compute time, the sum of each run's ``seconds`` (wall-clock seconds; missing counts as 0).
        Every list is sorted.
    """
    runs = 0
    with_provenance = 0
    seconds = 0.0
    software: set[str] = set()
    torch_versions: set[str] = set()
    python_versions: set[str] = set()
    devices: set[str] = set()
    threads: set[int] = set()
    times: list[tuple[datetime, str]] = []
    for result in results:
        if result is None or result.get("status") != "done":
            continue
        runs += 1
        seconds += _number(result.get("seconds"))
        prov = result.get("provenance")
        if not isinstance(prov, Mapping):
            continue
        with_provenance += 1
        for bucket, value in (
            (software, _software(prov)),
            (torch_versions, prov.get("torch_version")),
            (python_versions, prov.get("python_version")),
            (devices, _device(prov)),
        ):
            if value is not None:
                bucket.add(str(value))
        if isinstance(prov.get("num_threads"), int) and not isinstance(prov.get("num_threads"), bool):
            threads.add(prov["num_threads"])
        when = _when(prov.get("datetime_utc"))
        if when is not None:
            times.append((when, str(prov["datetime_utc"])))
    # Compare as date-times, not strings: offsets other than +00:00 still order correctly;
    # a naive and an aware time cannot be compared, so keep the aware ones when both occur.
    aware = [t for t in times if t[0].tzinfo is not None]
    ordered = sorted(aware if aware else times)
    return {
        "runs": runs,
        "with_provenance": with_provenance,
        "prunelab": sorted(software),
        "torch": sorted(torch_versions),
        "python": sorted(python_versions),
        "devices": sorted(devices),
        "threads": sorted(threads),
        "first": ordered[0][1] if ordered else None,
        "last": ordered[-1][1] if ordered else None,
        "seconds": seconds,
    }


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


__all__ = ["format_duration", "provenance_html", "provenance_markdown", "provenance_summary"]
