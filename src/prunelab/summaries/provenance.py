"""Provenance of a study's results, summarised over its runs: which code, software and hardware
computed them, when, and how much compute they took (from each ``result.json``'s ``provenance`` and
``seconds``; see :mod:`prunelab.provenance`). Rendered by :mod:`prunelab.report.provenance`."""

from __future__ import annotations

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


__all__ = ["provenance_summary"]
