"""The run store: one directory per run (named by its spec) plus an SQLite index beside them.

Layout of ``<root>/<run name>/``::

    spec.json           the canonical spec and its full form (written first)
    mask.safetensors    the pruning mask (pruned runs)
    metrics.jsonl       one JSON line per finished epoch, appended and fsynced as it comes
    checkpoint.pt       latest epoch: model, optimizer, data-order RNG (weights_only loadable)
    model.safetensors   final weights
    rewind/epoch-K.safetensors   weights after epoch K, saved by a dense trunk for the tickets
                        that rewind to (or score at) epoch K, and only those epochs
    result.json         the summary; its presence means "finished" (written last, atomically);
                        its ``provenance`` says what computed it (:mod:`prunelab.provenance`)

The index also records which run builds on which (``links``: a ticket and its trunk or previous
IMP round), every time a run actually trains (``executions``), so reuse is counted, not assumed,
and which studies use which runs (``memberships``: a run shared by several studies is in each).
Every table is created if missing when a store is opened, so older indexes gain new tables.

Every file except the append-only metrics is written to a temporary name and renamed, so a kill
at any moment leaves either the old or the new version. On resume, metric lines beyond the
checkpoint's epoch are dropped, so no epoch is duplicated or lost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from prunelab.errors import PrunelabError
from prunelab.provenance import provenance
from prunelab.training.trainer import TrainState

INDEX_NAME = "index.sqlite"


class StoredSpec(Protocol):
    """What the store needs of a spec: :class:`RunSpec` and the studies' own run specs have it."""

    def canonical(self) -> str: ...

    def run_hash(self) -> str: ...

    def run_name(self) -> str: ...

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    final_test_acc REAL,
    best_test_acc REAL,
    density REAL
);
CREATE TABLE IF NOT EXISTS links (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (child, parent, role)
);
CREATE TABLE IF NOT EXISTS executions (
    hash TEXT NOT NULL,
    started REAL NOT NULL,
    from_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    study TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (study, hash)
)
"""


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunStore:
    """Run directories and their SQLite index under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.root / INDEX_NAME, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                yield conn
        finally:
            conn.close()

    # -- paths and status -----------------------------------------------------------------------
    def run_dir(self, spec: StoredSpec) -> Path:
        return self.root / spec.run_name()

    def is_done(self, spec: StoredSpec) -> bool:
        return (self.run_dir(spec) / "result.json").is_file()

    def result(self, spec: StoredSpec) -> dict[str, Any] | None:
        path = self.run_dir(spec) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # -- lifecycle ------------------------------------------------------------------------------
    def begin(self, spec: StoredSpec) -> Path:
        """Create the run directory and its spec file; register the run as running."""
        run_dir = self.run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "spec.json").is_file():
            write_json_atomic(
                run_dir / "spec.json",
                {
                    "canonical": spec.canonical(),
                    "hash": spec.run_hash(),
                    "spec": spec.model_dump(mode="json"),
                },
            )
        self._upsert(spec, status="running")
        return run_dir

    def append_metrics(self, spec: StoredSpec, record: Mapping[str, Any]) -> None:
        """Append one epoch's metrics line and fsync it."""
        with open(self.run_dir(spec) / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self, spec: StoredSpec) -> list[dict[str, Any]]:
        path = self.run_dir(spec) / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn final line from a kill mid-write
        return rows

    def truncate_metrics(self, spec: StoredSpec, epochs_done: int) -> list[dict[str, Any]]:
        """Keep metric lines of epochs ``<= epochs_done`` (one per epoch); rewrite atomically."""
        kept: dict[int, dict[str, Any]] = {}
        for row in self.read_metrics(spec):
            if int(row["epoch"]) <= epochs_done:
                kept[int(row["epoch"])] = row
        rows = [kept[e] for e in sorted(kept)]
        path = self.run_dir(spec) / "metrics.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, path)
        return rows

    def save_checkpoint(self, spec: StoredSpec, state: TrainState) -> None:
        path = self.run_dir(spec) / "checkpoint.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "epoch": state.epoch,
                "model": state.model_state,
                "optimizer": state.optimizer_state,
                "generator": state.generator_state,
            },
            tmp,
        )
        os.replace(tmp, path)
        self._upsert(spec, status="running", epochs_done=state.epoch)

    def rewind_path(self, spec: StoredSpec, epoch: int) -> Path:
        return self.run_dir(spec) / "rewind" / f"epoch-{epoch}.safetensors"

    def save_rewind_point(self, spec: StoredSpec, epoch: int, model_state: Mapping[str, torch.Tensor]) -> None:
        """Keep the weights after ``epoch`` (atomically) for tickets that rewind to it."""
        path = self.rewind_path(spec, epoch)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp))
        os.replace(tmp, path)

    def load_weights(self, spec: StoredSpec, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """A finished run's final weights, or its saved weights after ``epoch``."""
        path = self.run_dir(spec) / "model.safetensors" if epoch is None else self.rewind_path(spec, epoch)
        if not path.is_file():
            what = "final weights" if epoch is None else f"weights after epoch {epoch}"
            raise PrunelabError(f"run {spec.run_name()} has no {what} ({path})")
        return load_file(str(path))

    def link(self, child: StoredSpec, parent: StoredSpec, role: str) -> None:
        """Record that ``child`` builds on ``parent`` (role: ``"trunk"`` or ``"previous round"``)."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO links (child, parent, role) VALUES (?,?,?)",
                (child.run_hash(), parent.run_hash(), role),
            )

    def links(self, child: StoredSpec | None = None) -> list[dict[str, str]]:
        """Recorded links (all, or those of ``child``), as ``{child, parent, role}`` run hashes."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            if child is None:
                rows = db.execute("SELECT * FROM links ORDER BY child, role").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM links WHERE child=? ORDER BY role", (child.run_hash(),)
                ).fetchall()
        return [dict(row) for row in rows]

    def record_members(self, study: str, specs: Iterable[StoredSpec]) -> None:
        """Record that the runs of ``specs`` belong to ``study`` (a study's name); idempotent.

        One transaction: either every membership is recorded or none is.
        """
        if not study:
            raise PrunelabError("a study name must not be empty")
        rows = [(study, spec.run_hash()) for spec in specs]
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO memberships (study, hash) VALUES (?,?)", rows)

    def studies_of(self, spec: StoredSpec) -> list[str]:
        """The studies ``spec``'s run belongs to, sorted by name."""
        with self._db() as db:
            rows = db.execute(
                "SELECT study FROM memberships WHERE hash=? ORDER BY study", (spec.run_hash(),)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def memberships(self) -> dict[str, list[str]]:
        """Every recorded membership: run hash -> the studies it belongs to (sorted by name)."""
        out: dict[str, list[str]] = {}
        with self._db() as db:
            for study, run_hash in db.execute("SELECT study, hash FROM memberships ORDER BY hash, study"):
                out.setdefault(str(run_hash), []).append(str(study))
        return out

    def record_execution(self, spec: StoredSpec, from_epoch: int) -> None:
        """Note that ``spec`` trains now (from ``from_epoch``: > 0 when resuming)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO executions (hash, started, from_epoch) VALUES (?,?,?)",
                (spec.run_hash(), time.time(), from_epoch),
            )

    def executions(self, spec: StoredSpec) -> list[int]:
        """The starting epoch of each time ``spec`` was trained (or resumed), oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT from_epoch FROM executions WHERE hash=? ORDER BY started", (spec.run_hash(),)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def load_checkpoint(self, spec: StoredSpec) -> TrainState | None:
        path = self.run_dir(spec) / "checkpoint.pt"
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt checkpoint means starting the run over, not crashing
            return None
        return TrainState(int(blob["epoch"]), blob["model"], blob["optimizer"], blob["generator"])

    def finish(
        self, spec: StoredSpec, result: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]
    ) -> None:
        """Write final weights, then result.json (the done marker), then drop the checkpoint.

        Unless ``result`` has a ``provenance`` key already, the software and hardware that computed
        it (:func:`prunelab.provenance.provenance` of ``result["device"]``) are added; a mutable
        ``result`` gets the key too, so what the caller returns equals what a later read returns.
        """
        if "provenance" not in result:
            record = provenance(result.get("device"))
            if isinstance(result, MutableMapping):
                result["provenance"] = record
            else:
                result = {**result, "provenance": record}
        run_dir = self.run_dir(spec)
        weights = run_dir / "model.safetensors"
        tmp = weights.with_name(weights.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp))
        os.replace(tmp, weights)
        write_json_atomic(run_dir / "result.json", dict(result))
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        self._upsert(
            spec,
            status="done",
            epochs_done=int(result.get("epochs", 0)),
            final_test_acc=result.get("final_test_acc"),
            best_test_acc=result.get("best_test_acc"),
            density=result.get("density"),
        )

    def reset(self, spec: StoredSpec) -> None:
        """Forget a run (for ``force``): its files are removed before it is recomputed."""
        run_dir = self.run_dir(spec)
        for name in (
            "result.json",
            "checkpoint.pt",
            "metrics.jsonl",
            "mask.safetensors",
            "model.safetensors",
        ):
            (run_dir / name).unlink(missing_ok=True)
        for path in (run_dir / "rewind").glob("epoch-*.safetensors*"):
            path.unlink()

    # -- index ----------------------------------------------------------------------------------
    def _upsert(self, spec: StoredSpec, *, status: str, **fields: Any) -> None:
        now = time.time()
        pruning = getattr(spec, "pruning", None)
        density = getattr(pruning, "density", 1.0) if pruning is not None else 1.0
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (hash, name, status, spec, created, updated, density) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(hash) DO UPDATE SET status=excluded.status, updated=excluded.updated",
                (spec.run_hash(), spec.run_name(), status, spec.canonical(), now, now, density),
            )
            for key, value in fields.items():
                if key not in ("epochs_done", "final_test_acc", "best_test_acc", "density"):
                    raise PrunelabError(f"unknown index field {key!r}")
                db.execute(f"UPDATE runs SET {key}=? WHERE hash=?", (value, spec.run_hash()))

    def list_runs(self) -> list[dict[str, Any]]:
        """Every indexed run, newest first."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM runs ORDER BY updated DESC").fetchall()
        return [dict(row) for row in rows]
