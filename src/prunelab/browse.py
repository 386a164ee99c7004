"""Browse a runs directory: one row per indexed run (its index entry, studies, compute time and
flattened spec), filtered and sorted, written as an aligned table, CSV or JSON, or loaded into a
pandas DataFrame for analysis.

Spec columns come from the run's canonical JSON, which holds non-default fields only: a missing
spec column means "the default" of that spec type (``spec_version`` tells the type apart).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prunelab import integrity
from prunelab.errors import PrunelabError, invalid_choice
from prunelab.store import INDEX_NAME, RunStore, read_json

if TYPE_CHECKING:
    import pandas

#: The leading columns of every row, in order; the flattened spec columns follow, sorted.
FIXED_COLUMNS = (
    "hash",
    "name",
    "status",
    "epochs_done",
    "final_test_acc",
    "best_test_acc",
    "density",
    "created",
    "updated",
    "studies",
    "seconds",
)
#: A run is ``running`` while a process holds it, ``interrupted`` when its process is gone before it
#: finished (it resumes next time), ``failed`` when it raised (its error is in ``error.json``), and
#: ``done`` once ``result.json`` exists.
STATUSES = ("done", "running", "interrupted", "failed")
FORMATS = ("table", "csv", "json")
#: ``method`` filter value for runs without a pruning method.
DENSE = "dense"


def flatten_spec(canonical: str | Mapping[str, Any]) -> dict[str, Any]:
    """A spec's canonical JSON (text or parsed) as dotted columns, sorted by name.

    Nested objects become ``a.b.c`` keys (``model.options.width``); lists stay lists; the
    ``v`` key becomes ``spec_version``. A spec key that clashes with a fixed row column (say a
    top-level ``density``) is prefixed ``spec.`` so it never overwrites the index's value.
    """
    body = json.loads(canonical) if isinstance(canonical, str) else canonical
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    for key, value in body.items():
        if key == "v":
            flat["spec_version"] = value
        else:
            walk("spec." + key if key in FIXED_COLUMNS else key, value)
    return dict(sorted(flat.items()))


def _result_seconds(path: Path) -> float | None:
    """A finished run's ``seconds`` (wall-clock seconds) from its result.json; None if unreadable."""
    try:
        value = json.loads(path.read_text()).get("seconds")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _method_of(row: Mapping[str, Any]) -> str:
    method = row.get("pruning.method") or row.get("method")
    return str(method).lower() if method else DENSE


def _sort_key(value: Any) -> tuple[int, float, str]:
    # Numbers order numerically, text alphabetically, anything else by its JSON; kinds never mix.
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    if isinstance(value, str):
        return (1, 0.0, value)
    return (2, 0.0, json.dumps(value, sort_keys=True))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def run_rows(
    runs_dir: str | Path,
    *,
    study: str | None = None,
    method: str | None = None,
    status: str | None = None,
    sort: str = "updated",
    descending: bool = True,
    verify: bool = False,
) -> list[dict[str, Any]]:
    """One row per indexed run of ``runs_dir``, filtered and sorted.

    With ``verify``, each finished run's files are checked against the checksums sealed in its
    result (:mod:`prunelab.integrity`) and a ``verified`` column says ``ok`` or what is wrong.

    Args:
        runs_dir: a runs directory (with ``index.sqlite``).
        study: keep runs recorded as members of this study (:meth:`RunStore.record_members`).
        method: keep runs whose ``pruning.method`` (or a structured spec's ``method``) is this,
            case-insensitively; ``"dense"`` keeps runs with neither.
        status: keep runs with this status (``done``, ``running``, ``interrupted`` or ``failed``).
        sort: the column to sort by (any row column); runs without a value come last.
        descending: largest first (the default: most recently updated first).

    Returns:
        Rows with the columns :data:`FIXED_COLUMNS` (``hash``, ``name``, ``status``,
        ``epochs_done``, ``final_test_acc`` and ``best_test_acc`` (fractions), ``density`` (kept
        fraction), ``created`` and ``updated`` (UNIX time, seconds), ``studies`` (comma-joined
        names, "" for none), ``seconds`` (the run's wall-clock seconds from result.json, None
        unless done)), then the spec's dotted columns from :func:`flatten_spec`.

    Raises:
        PrunelabError: no index in ``runs_dir``; unknown ``status``, ``sort`` column or ``study``.
    """
    root = Path(runs_dir)
    if not (root / INDEX_NAME).is_file() and not any(root.glob("*/spec.json")):
        raise PrunelabError(f"no runs in {str(root)!r}; train something first or pass --runs-dir")
    if status is not None and status not in STATUSES:
        raise invalid_choice("status", status, STATUSES)
    # Read-only: listing never writes (a read-only runs dir works); a missing or unreadable index is
    # derived from the run directories in memory.
    store = RunStore(root, readonly=True)
    members = store.memberships()
    if study is not None:
        known = sorted({s for studies in members.values() for s in studies})
        if study not in known:
            recorded = ", ".join(known) if known else "none recorded"
            raise PrunelabError(f"no run belongs to study {study!r}; recorded studies: {recorded}")

    rows: list[dict[str, Any]] = []
    for entry in store.list_runs():
        row: dict[str, Any] = {key: entry.get(key) for key in FIXED_COLUMNS}
        row["studies"] = ",".join(members.get(entry["hash"], []))
        if entry["status"] == "done":
            row["seconds"] = _result_seconds(root / entry["name"] / "result.json")
            if verify:
                result = read_json(root / entry["name"] / "result.json") or {}
                problems = integrity.verify(result, root / entry["name"])
                row["verified"] = "; ".join(problems) if problems else "ok"
        # A spec column that is not a JSON object: the run is listed without spec columns.
        with contextlib.suppress(ValueError, AttributeError):
            row.update(flatten_spec(entry["spec"]))
        rows.append(row)

    valid_sort = {*FIXED_COLUMNS, *(key for row in rows for key in row)}
    if sort not in valid_sort:
        raise invalid_choice("sort column", sort, valid_sort)

    wanted_method = method.lower() if method is not None else None
    rows = [
        row
        for row in rows
        if (status is None or row["status"] == status)
        and (study is None or study in members.get(row["hash"], ()))
        and (wanted_method is None or _method_of(row) == wanted_method)
    ]
    # Name first, so equal sort values come out in a stable, reproducible order.
    rows.sort(key=lambda row: str(row["name"]))
    present = [row for row in rows if not _missing(row.get(sort))]
    absent = [row for row in rows if _missing(row.get(sort))]
    present.sort(key=lambda row: _sort_key(row[sort]), reverse=descending)
    return present + absent


def columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' columns: :data:`FIXED_COLUMNS` first, then the others sorted."""
    others = {key for row in rows for key in row if key not in FIXED_COLUMNS}
    return [*FIXED_COLUMNS, *sorted(others)]


def _cell(value: Any) -> str:
    """A value as CSV text: empty for None, lists comma-joined, objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        if all(not isinstance(v, list | tuple | dict) for v in value):
            return ",".join(str(v) for v in value)
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _fixed(value: Any, scale: float, digits: int) -> str:
    """``scale * value`` with ``digits`` decimals, or ``-`` when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or _missing(value):
        return "-"
    return f"{scale * value:.{digits}f}"


def _table(rows: Sequence[Mapping[str, Any]], handle: TextIO) -> None:
    # The same columns and widths as the original ``prunelab runs`` listing.
    handle.write(f"{'status':<11} {'epochs':>6} {'test acc':>8} {'density':>8}  name\n")
    for row in rows:
        acc, density, epochs = row.get("final_test_acc"), row.get("density"), row.get("epochs_done")
        acc_text = _fixed(acc, 100.0, 2)
        density_text = _fixed(density, 1.0, 4)
        epochs_text = "-" if epochs is None else str(epochs)
        status = str(row.get("status") or "-")
        handle.write(
            f"{status:<11} {epochs_text:>6} {acc_text:>8} {density_text:>8}  {row.get('name', '')}\n"
        )


def _render(rows: Sequence[Mapping[str, Any]], fmt: str, handle: TextIO) -> None:
    if fmt == "table":
        _table(rows, handle)
    elif fmt == "csv":
        header = columns(rows)
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(row.get(key)) for key in header])
    else:
        json.dump([dict(row) for row in rows], handle, indent=2, default=str)
        handle.write("\n")


def write_rows(rows: Sequence[Mapping[str, Any]], fmt: str, out: TextIO | str | Path | None = None) -> None:
    """Write ``rows`` (from :func:`run_rows`) as ``table``, ``csv`` or ``json``.

    ``table``: aligned status, epochs, test accuracy (%), density, name. ``csv``: every column of
    :func:`columns` (None as an empty cell, lists comma-joined). ``json``: a list of the rows as
    objects. ``out``: an open text stream, a file path (written to a temporary file in the same
    directory and renamed, so it is never half-written), or None for standard output.

    Raises:
        PrunelabError: unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise invalid_choice("format", fmt, FORMATS)
    if out is None:
        _render(rows, fmt, sys.stdout)
        return
    if not isinstance(out, str | os.PathLike):
        _render(rows, fmt, out)
        return
    path = Path(out)
    # Render first: a failure leaves no temporary file behind and the old file untouched.
    buffer = io.StringIO()
    _render(rows, fmt, buffer)
    # Same directory (so the rename is atomic), per-process name (concurrent writers don't clash),
    # opened normally (so the file gets the usual permissions, unlike mkstemp's 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def runs_frame(
    runs_dir: str | Path,
    *,
    study: str | None = None,
    method: str | None = None,
    status: str | None = None,
    sort: str = "updated",
    descending: bool = True,
) -> pandas.DataFrame:
    """The rows of :func:`run_rows` (same arguments, same values) as a pandas DataFrame whose
    columns are :func:`columns` of the rows (a missing value is None/NaN).

    Raises:
        PrunelabError: pandas is not installed, or as :func:`run_rows`.
    """
    try:
        import pandas
    except ImportError:
        raise PrunelabError("runs_frame needs pandas: pip install 'prunelab[frame]'") from None
    rows = run_rows(runs_dir, study=study, method=method, status=status, sort=sort, descending=descending)
    return pandas.DataFrame(rows, columns=columns(rows))


__all__ = [
    "FIXED_COLUMNS",
    "FORMATS",
    "STATUSES",
    "columns",
    "flatten_spec",
    "run_rows",
    "runs_frame",
    "write_rows",
]
