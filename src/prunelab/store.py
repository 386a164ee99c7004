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

Every file except the append-only metrics is written to a uniquely named temporary file and renamed,
so a kill at any moment leaves either the old or the new version, and two processes never collide on a
temporary name. A run is *claimed* (an exclusive ``flock`` on ``.locks/<hash>.lock``, released by the
kernel when its process dies, so a killed process cannot hold it forever) before it trains: a second
process asking for the same run waits, then reads the result. On resume, metric lines beyond the
checkpoint's epoch are dropped, and a checkpoint whose metric lines do not cover its epochs is not
resumed from, so no epoch is duplicated or lost. A finished run's result is sealed with checksums of
its files (:mod:`prunelab.integrity`) and verified when read for reuse.

The index is derived data: :meth:`RunStore.rebuild_index` recreates it from the run directories (and
the studies' ``study.json`` files), which happens by itself when it is missing or unreadable.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from prunelab import integrity
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


#: Status of a run whose index row says running but whose process is gone (no one holds its claim).
INTERRUPTED = "interrupted"
#: Files that must be files in a run directory; a directory there is damage, not a run.
_FILES = (
    "spec.json",
    "result.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "model.safetensors",
    "mask.safetensors",
)


def temporary_path(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this process and call (hidden, ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically, on failure it
    is removed and ``path`` keeps its old content."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a uniquely named temporary file, fsync and an atomic rename."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def _save_tensors(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))


def _os_error(exc: OSError, what: str) -> PrunelabError:
    return PrunelabError(f"cannot {what}: {exc.strerror or exc} ({exc.filename or ''})".replace(" ()", ""))


class RunStore:
    """Run directories and their SQLite index under ``root``.

    ``readonly=True`` (for listing and reports) never writes: the index is opened read-only, or,
    when it is missing or unreadable, derived in memory from the run directories.
    """

    def __init__(self, root: str | Path, *, readonly: bool = False) -> None:
        self.root = Path(root)
        self.readonly = readonly
        self._memory: sqlite3.Connection | None = None
        if readonly:
            if not self.root.is_dir():
                raise PrunelabError(f"runs directory {str(self.root)!r} does not exist")
            # A private in-memory copy: nothing is written, and tables an older index lacks exist.
            self._memory = sqlite3.connect(":memory:")
            if self._index_readable():
                source = sqlite3.connect(f"file:{self.root / INDEX_NAME}?mode=ro", uri=True)
                try:
                    source.backup(self._memory)
                finally:
                    source.close()
                self._memory.executescript(_SCHEMA)
            else:
                self._memory.executescript(_SCHEMA)
                self._fill_index(self._memory)
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, "create the runs directory") from None
        self._open_or_repair()

    # -- the index ----------------------------------------------------------------------------
    def _index_readable(self) -> bool:
        path = self.root / INDEX_NAME
        if not path.is_file():
            return False
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                conn.execute("SELECT count(*) FROM runs").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return False
        return True

    def _open_or_repair(self) -> None:
        path = self.root / INDEX_NAME
        existed = path.is_file()
        try:
            with self._db() as db:
                db.executescript(_SCHEMA)
                db.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError:
            aside = path.with_name(f"{INDEX_NAME}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                path.with_name(INDEX_NAME + suffix).unlink(missing_ok=True)
            warnings.warn(
                f"index {path} was unreadable (kept as {aside.name}); rebuilt from the run directories",
                stacklevel=2,
            )
            existed = False
            with self._db() as db:
                db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            raise PrunelabError(f"cannot open the run index {str(path)!r}: {exc}") from None
        if not existed:
            self.rebuild_index()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if self._memory is not None:
            with self._memory:
                yield self._memory
            return
        conn = sqlite3.connect(self.root / INDEX_NAME, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                yield conn
        finally:
            conn.close()

    def rebuild_index(self) -> int:
        """Recreate the ``runs`` rows (and study memberships) from the run directories and the
        ``study.json`` files under ``root/reports``; returns the number of runs found."""
        with self._db() as db:
            return self._fill_index(db)

    def _fill_index(self, db: sqlite3.Connection) -> int:
        found = 0
        for run_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "spec.json").is_file()):
            try:
                record = json.loads((run_dir / "spec.json").read_text())
                key, canonical = str(record["hash"]), str(record["canonical"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            result = read_json(run_dir / "result.json")
            metrics = _metric_rows(run_dir / "metrics.jsonl")
            status = "done" if result is not None else INTERRUPTED
            stamp = (run_dir / "spec.json").stat().st_mtime
            density = (result or {}).get("density")
            db.execute(
                "INSERT OR REPLACE INTO runs (hash, name, status, spec, created, updated, epochs_done, "
                "final_test_acc, best_test_acc, density) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    run_dir.name,
                    status,
                    canonical,
                    stamp,
                    stamp,
                    int((result or {}).get("epochs", len(metrics))),
                    (result or {}).get("final_test_acc"),
                    (result or {}).get("best_test_acc"),
                    density if density is not None else _spec_density(canonical),
                ),
            )
            found += 1
        names = {row[0]: row[1] for row in db.execute("SELECT name, hash FROM runs")}
        for study_file in sorted(self.root.glob("reports/*/study.json")):
            record = read_json(study_file) or {}
            study = (
                str(record.get("study", {}).get("name", "")) if isinstance(record.get("study"), dict) else ""
            )
            rows = [(study, names[n]) for n in record.get("runs", []) if n in names]
            if study and rows:
                db.executemany("INSERT OR IGNORE INTO memberships (study, hash) VALUES (?,?)", rows)
        return found

    # -- paths and status -----------------------------------------------------------------------
    def run_dir(self, spec: StoredSpec) -> Path:
        return self.root / spec.run_name()

    def is_done(self, spec: StoredSpec) -> bool:
        return self.result(spec) is not None

    def result(self, spec: StoredSpec) -> dict[str, Any] | None:
        """The run's ``result.json``, or None when unfinished (or when the file is unreadable: an
        empty or garbage result means the run did not finish cleanly, and recomputing it is safe)."""
        return read_json(self.run_dir(spec) / "result.json")

    def verify(self, spec: StoredSpec) -> list[str]:
        """What in a finished run no longer matches its sealed checksums (empty: intact)."""
        result = self.result(spec)
        return [] if result is None else integrity.verify(result, self.run_dir(spec))

    def verified_result(self, spec: StoredSpec) -> dict[str, Any] | None:
        """The result when it is intact; None (with a warning) when its files fail verification, so
        the run is recomputed rather than trusted."""
        result = self.result(spec)
        if result is None:
            return None
        problems = integrity.verify(result, self.run_dir(spec))
        if problems:
            warnings.warn(
                f"run {spec.run_name()} failed verification ({'; '.join(problems)}); recomputing it",
                stacklevel=2,
            )
            return None
        return result

    @contextmanager
    def claim(self, spec: StoredSpec) -> Iterator[None]:
        """Hold the run exclusively while it executes; waits while another process holds it. The
        claim is an ``flock``, so the kernel releases it when its holder dies."""
        import fcntl

        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{spec.run_hash()}.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _claimed_elsewhere(self, run_hash: str) -> bool:
        import fcntl

        path = self.root / ".locks" / f"{run_hash}.lock"
        if not path.is_file():
            return False
        try:
            with open(path) as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    # -- lifecycle ------------------------------------------------------------------------------
    def begin(self, spec: StoredSpec) -> Path:
        """Create the run directory and its spec file; register the run as running."""
        run_dir = self.run_dir(spec)
        for name in _FILES:
            if (run_dir / name).is_dir():
                raise PrunelabError(
                    f"run {spec.run_name()} is damaged: {run_dir / name} is a directory; remove it or use --force"
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.json").unlink(missing_ok=True)
        if not (run_dir / "spec.json").is_file():
            write_json_atomic(
                run_dir / "spec.json",
                {
                    "canonical": spec.canonical(),
                    "hash": spec.run_hash(),
                    "kind": getattr(type(spec), "kind", None),
                    "spec": spec.model_dump(mode="json"),
                },
            )
        self._upsert(spec, status="running")
        return run_dir

    def fail(self, spec: StoredSpec, message: str) -> None:
        """Mark a run that raised as ``failed``, with its error in ``error.json`` (a later run retries)."""
        run_dir = self.run_dir(spec)
        if run_dir.is_dir():
            write_json_atomic(run_dir / "error.json", {"error": message, "time": time.time()})
        with self._db() as db:
            db.execute(
                "UPDATE runs SET status='failed', updated=? WHERE hash=?", (time.time(), spec.run_hash())
            )

    def append_metrics(self, spec: StoredSpec, record: Mapping[str, Any]) -> None:
        """Append one epoch's metrics line and fsync it."""
        with open(self.run_dir(spec) / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self, spec: StoredSpec) -> list[dict[str, Any]]:
        """The metric lines up to the first unreadable one (a torn final line from a kill)."""
        return _metric_rows(self.run_dir(spec) / "metrics.jsonl")

    def truncate_metrics(self, spec: StoredSpec, epochs_done: int) -> list[dict[str, Any]]:
        """Keep metric lines of epochs ``<= epochs_done`` (one per epoch); rewrite atomically."""
        kept: dict[int, dict[str, Any]] = {}
        for row in self.read_metrics(spec):
            if int(row["epoch"]) <= epochs_done:
                kept[int(row["epoch"])] = row
        rows = [kept[e] for e in sorted(kept)]
        with atomic_path(self.run_dir(spec) / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return rows

    def save_checkpoint(self, spec: StoredSpec, state: TrainState) -> None:
        blob = {
            "epoch": state.epoch,
            "model": state.model_state,
            "optimizer": state.optimizer_state,
            "generator": state.generator_state,
        }
        with atomic_path(self.run_dir(spec) / "checkpoint.pt") as tmp:
            torch.save(blob, tmp)
        self._upsert(spec, status="running", epochs_done=state.epoch)

    def rewind_path(self, spec: StoredSpec, epoch: int) -> Path:
        return self.run_dir(spec) / "rewind" / f"epoch-{epoch}.safetensors"

    def save_rewind_point(
        self, spec: StoredSpec, epoch: int, model_state: Mapping[str, torch.Tensor]
    ) -> None:
        """Keep the weights after ``epoch`` (atomically) for tickets that rewind to it."""
        path = self.rewind_path(spec, epoch)
        path.parent.mkdir(exist_ok=True)
        _save_tensors(path, model_state)

    def load_weights(self, spec: StoredSpec, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """A finished run's final weights, or its saved weights after ``epoch``."""
        path = self.run_dir(spec) / "model.safetensors" if epoch is None else self.rewind_path(spec, epoch)
        what = "final weights" if epoch is None else f"weights after epoch {epoch}"
        if not path.is_file():
            raise PrunelabError(f"run {spec.run_name()} has no {what} ({path})")
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for truncated files
            raise PrunelabError(
                f"run {spec.run_name()}: its {what} are unreadable ({exc}); rerun it with --force"
            ) from None

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
        """The last epoch's checkpoint, or None to start over: when there is none, when it is
        unreadable or lacks keys, or when the metric lines do not cover its epochs exactly (a
        damaged or deleted metrics file would otherwise give a result over too few epochs)."""
        path = self.run_dir(spec) / "checkpoint.pt"
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            state = TrainState(int(blob["epoch"]), blob["model"], blob["optimizer"], blob["generator"])
        except Exception:  # a corrupt checkpoint means starting the run over, not crashing
            return None
        epochs = [int(row.get("epoch", -1)) for row in self.read_metrics(spec)][: state.epoch]
        if epochs != list(range(1, state.epoch + 1)):
            warnings.warn(
                f"run {spec.run_name()}: metrics do not cover the checkpoint's epochs; starting over",
                stacklevel=2,
            )
            return None
        return state

    def finish(
        self, spec: StoredSpec, result: Mapping[str, Any], model_state: Mapping[str, torch.Tensor]
    ) -> None:
        """Write final weights, then result.json (the done marker, sealed with the checksums of the
        run's files), then drop the checkpoint.

        Unless ``result`` has a ``provenance`` key already, the software and hardware that computed
        it (:func:`prunelab.provenance.provenance` of ``result["device"]``) are added; a mutable
        ``result`` gets the keys too, so what the caller returns equals what a later read returns.
        """
        record = dict(result)
        record.setdefault("provenance", provenance(result.get("device")))
        run_dir = self.run_dir(spec)
        _save_tensors(run_dir / "model.safetensors", model_state)
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        sealed = integrity.seal(json.loads(json.dumps(record, default=str)), run_dir)
        write_json_atomic(run_dir / "result.json", sealed)
        if isinstance(result, MutableMapping):
            result.clear()
            result.update(sealed)
        self._upsert(
            spec,
            status="done",
            epochs_done=int(sealed.get("epochs", 0)),
            final_test_acc=sealed.get("final_test_acc"),
            best_test_acc=sealed.get("best_test_acc"),
            density=sealed.get("density"),
        )

    def reset(self, spec: StoredSpec) -> None:
        """Forget a run (for ``force`` or a failed verification): its files are removed before it is
        recomputed; its spec and the index rows stay."""
        run_dir = self.run_dir(spec)
        if not run_dir.is_dir():
            return
        for path in run_dir.iterdir():
            if path.name == "spec.json":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

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
        """Every indexed run, newest first, its status reconciled with its directory: a run whose
        ``result.json`` exists is ``done`` (a kill may have come before the index update), and a
        ``running`` run that no live process holds is ``interrupted``."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY updated DESC").fetchall()]
            db.row_factory = None
        for row in rows:
            if row["status"] == "done":
                continue
            result = read_json(self.root / row["name"] / "result.json")
            if result is not None:
                row.update(
                    status="done",
                    epochs_done=int(result.get("epochs") or row["epochs_done"] or 0),
                    final_test_acc=result.get("final_test_acc"),
                    best_test_acc=result.get("best_test_acc"),
                )
                if not self.readonly and self._memory is None:
                    with self._db() as db:
                        db.execute(
                            "UPDATE runs SET status='done', epochs_done=?, final_test_acc=?, best_test_acc=? WHERE hash=?",
                            (row["epochs_done"], row["final_test_acc"], row["best_test_acc"], row["hash"]),
                        )
            elif row["status"] == "running" and not self._claimed_elsewhere(row["hash"]):
                row["status"] = INTERRUPTED
        return rows


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _metric_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn final line from a kill mid-write, or damage: stop at the first bad line
        if not isinstance(row, dict) or "epoch" not in row:
            break
        rows.append(row)
    return rows


def _spec_density(canonical: str) -> float:
    try:
        pruning = json.loads(canonical).get("pruning") or {}
    except ValueError:
        return 1.0
    return float(pruning.get("density", 1.0))
