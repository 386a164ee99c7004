"""The Ray backend of :func:`prunelab.runners.run_specs`: every unfinished run is one Ray task.

* **Dependencies** travel as object references: a run's task takes the result references of its
  unfinished ancestors as arguments, so Ray starts it only once they have finished (no polling).
* **Resources**: a task asks for ``threads`` CPUs (its torch thread count, so results match the
  inline runner) and, on CUDA, ``gpus_per_run`` GPUs (a fraction packs several runs on one GPU). A run
  whose executor keeps it inline (it times models) asks for a whole node's CPUs instead.
* **Retries**: a task whose worker process dies (a crash, a killed or preempted node, out of memory)
  is retried up to :data:`MAX_RETRIES` times and resumes from the run's last checkpoint; an exception
  raised by the run itself (a ``PrunelabError``, a bug) is not retried. The run's claim is an
  ``flock``, which the kernel releases when the dead process goes, so a retry never waits on it.
* **Only the driver writes the index.** Tasks write their run directories (atomically, as always)
  through a :class:`JournalStore`, which appends every index write to a journal file under
  ``<runs dir>/.journal/`` instead (fsynced, one line per transaction); the driver applies a run's
  journals to the SQLite index when its task ends, under the run's claim. A journal left by a dead
  attempt or a dead driver is applied with the next one, so executions are counted, never lost.

Run directories must live on a filesystem every node sees at the same path (NFS, Lustre, ...).
Plugins (``.py`` paths made absolute, or importable modules) and model factories are sent to the
workers, which load them before running anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from tqdm import tqdm

from prunelab.errors import PrunelabError
from prunelab.plugins import FACTORY_MODELS, load_plugins, model_factory_name
from prunelab.runs import RunContext, ancestors, execute, executor_for, spec_from_json
from prunelab.store import RunStore

#: Where Ray tasks journal their index writes, inside the runs directory.
JOURNAL_DIR = ".journal"
#: Times a task is retried after its worker process died.
MAX_RETRIES = 3
#: How long an interrupted driver waits for its cancelled tasks before it records what they left.
_SETTLE_SECONDS = 60.0
#: Statements a journal may hold (index writes; reads in a task are refused).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

#: One unit of work: (spec, its planned options, whether it is forced).
RayRun = tuple[Any, Mapping[str, Any], bool]


def _model_names(node: Any) -> set[str]:
    """Every ``model: {name: ...}`` in a spec's JSON form (a run's, or the run an evaluation measures)."""
    names: set[str] = set()
    if isinstance(node, dict):
        model = node.get("model")
        if isinstance(model, dict) and isinstance(model.get("name"), str):
            names.add(model["name"])
        for value in node.values():
            names |= _model_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _model_names(value)
    return names


def used_factories(specs: Sequence[Any]) -> dict[str, Any]:
    """The registered model factories ``specs`` use: only those travel to the workers (another
    factory of this process may live in a module the cluster cannot import, e.g. a test file)."""
    used: set[str] = set()
    for spec in specs:
        used |= _model_names(spec.model_dump(mode="json"))
    return {name: factory for name, factory in FACTORY_MODELS.items() if name in used}


def require_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PrunelabError(
            "--backend ray needs Ray, which is not installed: pip install 'prunelab[ray]'"
        ) from None
    return ray


# -- in the Ray worker ------------------------------------------------------------------------------
class _Recorder:
    """Stands in for the index connection inside a task: records writes, refuses reads."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Recorder:
        if not sql.lstrip().upper().startswith(_WRITES):
            raise PrunelabError(
                f"a Ray task cannot read the run index ({sql.split()[0]} ...); only the driver opens it"
            )
        self.statements.append((sql, list(params)))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> _Recorder:
        for row in rows:
            self.execute(sql, row)
        return self


class JournalStore(RunStore):
    """A :class:`RunStore` for a Ray task: run directories as usual, but every index write is
    appended to ``journal`` (one JSON line per transaction, fsynced) for the driver to apply.

    It never opens the SQLite index: the driver owns it, and it may not even be safely lockable
    from other nodes of a network filesystem.
    """

    def __init__(self, root: str | Path, journal: Path) -> None:
        # No super().__init__: it opens (or repairs, or rebuilds) the index, which is the driver's job.
        self.root = Path(root)
        self.readonly = False
        self._memory = None
        self.journal = journal

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        recorder = _Recorder()
        # Every index access in RunStore goes through _db(); the recorder speaks its subset of the API.
        yield cast(sqlite3.Connection, recorder)
        if not recorder.statements:
            return
        self.journal.parent.mkdir(exist_ok=True)
        line = json.dumps({"time": time.time(), "statements": recorder.statements}) + "\n"
        with open(self.journal, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())  # the line must survive the worker dying right after it


def _prepare_worker(plugins: Sequence[str], factories: Mapping[str, Any]) -> None:
    """Load the driver's plugins and model factories in this worker process (idempotent: a worker
    runs many tasks, and a factory sent by value arrives as a new object each time)."""
    load_plugins(plugins)
    for name, factory in factories.items():
        if name not in FACTORY_MODELS:
            model_factory_name(factory)


def _run_task(
    kind: str,
    spec_json: str,
    root: str,
    data_dir: str | None,
    device: str,
    force: bool,
    options: Mapping[str, Any],
    threads: int,
    setup: tuple[tuple[str, ...], dict[str, Any]],
    *ancestor_results: dict[str, Any],
) -> dict[str, Any]:
    """One run in a Ray worker. ``ancestor_results`` are only there so Ray starts the task once
    its unfinished ancestors have finished; their results are read from the store."""
    _prepare_worker(*setup)
    spec = spec_from_json(kind, spec_json)
    # A new journal per attempt: a dead attempt's lines stay whole and are applied with the retry's.
    journal = Path(root) / JOURNAL_DIR / f"{spec.run_hash()}.{uuid.uuid4().hex}.jsonl"
    store = JournalStore(root, journal)
    return execute(spec, store, RunContext(data_dir, device, threads=threads), force=force, options=options)


# -- in the driver ----------------------------------------------------------------------------------
def _journal_lines(path: Path) -> list[dict[str, Any]]:
    """A journal's transactions up to the first unreadable one (a torn last line from a kill)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
            statements = line["statements"]
            ok = isinstance(statements, list) and all(
                isinstance(sql, str) and sql.lstrip().upper().startswith(_WRITES) and isinstance(p, list)
                for sql, p in statements
            )
        except (ValueError, KeyError, TypeError):
            break
        if not ok:
            break
        lines.append(line)
    return lines


def apply_journals(store: RunStore, spec: Any) -> int:
    """Apply the journals Ray tasks left for ``spec``'s run to the index (oldest attempt first, one
    transaction), then remove them; returns the number of statements applied.

    Held under the run's claim: two drivers never apply one journal twice, and a journal whose
    task still runs (another study's, on the same runs) is applied only once that task has ended.
    """
    folder = store.root / JOURNAL_DIR
    pattern = f"{spec.run_hash()}.*.jsonl"
    if not folder.is_dir() or not any(folder.glob(pattern)):
        return 0
    with store.claim(spec):
        files = sorted(folder.glob(pattern))  # again: another driver may have applied them meanwhile
        attempts = [_journal_lines(path) for path in files]
        # Attempts of one run never overlap (each held the claim): order them by their first line.
        attempts.sort(key=lambda lines: float(lines[0]["time"]) if lines else 0.0)
        applied = 0
        # The store's own connection: the driver is the one writer of the index.
        with store._db() as db:
            for lines in attempts:
                for line in lines:
                    for sql, params in line["statements"]:
                        db.execute(sql, params)
                        applied += 1
        for path in files:
            path.unlink(missing_ok=True)
    return applied


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Connect to the cluster at ``address`` (None: a connection this process already has, else
    ``$RAY_ADDRESS``, else a new local instance); True when this call started the connection."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PrunelabError(f"cannot connect to {where}: {first}") from None
    return True


def _task_device(ray: ModuleType, device: str, gpus_per_run: float) -> tuple[str, float]:
    """The device a task runs on and the GPUs it asks for. Ray makes a task's GPUs the only visible
    ones, so ``cuda:N`` becomes ``cuda`` there; ``auto`` means CUDA when the cluster has GPUs."""
    if not 0 < gpus_per_run <= 1:
        raise PrunelabError(f"gpus_per_run must be in (0, 1] (one run uses one GPU), got {gpus_per_run}")
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if not gpus:
            raise PrunelabError(f"device {device!r}: the Ray cluster has no GPUs (use --device cpu)")
        return "cuda", gpus_per_run
    return device, 0.0


def _node_cpus(ray: ModuleType) -> float:
    """The CPUs of the largest live node: what a run that must not share its machine asks for."""
    sizes = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(sizes, default=1.0) or 1.0


def _driver_error(ray: ModuleType, exc: Exception, spec: Any, retries: int) -> Exception:
    """The error to raise for a failed task: the run's own exception when it raised one (a
    ``PrunelabError`` stays one line), else a one-line account of what Ray reports."""
    errors = ray.exceptions
    name = spec.run_name()
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            return cause
    if isinstance(exc, errors.WorkerCrashedError | errors.OutOfMemoryError | errors.NodeDiedError):
        return PrunelabError(
            f"run {name}: its Ray worker died {retries + 1} times ({type(exc).__name__}); finished epochs "
            "are saved and the run resumes when the study is run again"
        )
    if isinstance(exc, errors.RayError):
        first = (str(exc).strip().splitlines() or [""])[0]
        return PrunelabError(f"run {name} failed on the Ray cluster: {type(exc).__name__}: {first}")
    return exc


def run_on_ray(
    runs: Sequence[RayRun],
    store: RunStore,
    *,
    finished: Sequence[Any] = (),
    address: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    plugins: Sequence[str] = (),
    threads: int = 1,
    gpus_per_run: float = 1.0,
    max_retries: int = MAX_RETRIES,
    bar: tqdm[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``runs`` (parents before children, as :func:`prunelab.runs.waves` orders them) as Ray
    tasks; returns ``{run hash: result}``. ``finished`` runs are not run again, but journals left for
    them (by a driver that died) are applied to the index first.

    The first run that fails cancels the rest (they resume next time); once every task has settled
    and its journal is applied, its error is raised (the run's own exception when it raised one).
    """
    folder = store.root / JOURNAL_DIR
    left = {p.name.split(".")[0] for p in folder.glob("*.jsonl")} if folder.is_dir() else set()
    for spec in [*finished, *(run[0] for run in runs)]:
        if spec.run_hash() in left:
            apply_journals(store, spec)
    if not runs:
        return {}
    ray = require_ray()
    started = _connect(ray, address)
    try:
        return _submit_and_collect(
            ray, runs, store, data_dir, device, plugins, threads, gpus_per_run, max_retries, bar
        )
    finally:
        if started:
            ray.shutdown()


def _submit_and_collect(
    ray: ModuleType,
    runs: Sequence[RayRun],
    store: RunStore,
    data_dir: str | Path | None,
    device: str,
    plugins: Sequence[str],
    threads: int,
    gpus_per_run: float,
    max_retries: int,
    bar: tqdm[Any] | None,
) -> dict[str, dict[str, Any]]:
    """Submit one Ray task per run (each waiting on its unfinished ancestors' tasks, with the CPUs
    and GPUs it needs), then :func:`_collect` them: ``{run hash: result}``."""
    task_device, gpus = _task_device(ray, device, gpus_per_run)
    # Workers may start elsewhere: paths every node resolves the same way (a shared filesystem).
    root = str(store.root.resolve())
    data = None if data_dir is None else str(Path(data_dir).resolve())
    sent = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins)
    try:
        setup = ray.put((sent, used_factories([spec for spec, _, _ in runs])))
    except Exception as exc:  # cloudpickle's errors vary by object
        raise PrunelabError(
            f"a model factory cannot be sent to Ray workers ({type(exc).__name__}: {exc}); define it at "
            "module level in a module every node can import"
        ) from None
    task = ray.remote(_run_task)
    whole_node = _node_cpus(ray)
    refs: dict[str, Any] = {}
    pending: dict[Any, Any] = {}  # task ref -> its run
    for spec, options, force in runs:
        key = spec.run_hash()
        # All unfinished ancestors, not only the parents: no task ever trains a run another owns.
        waits_for = [refs[a.run_hash()] for a in ancestors(spec) if a.run_hash() in refs]
        ref = task.options(
            num_cpus=whole_node if executor_for(spec).inline(spec) else threads,
            num_gpus=gpus,
            max_retries=max_retries,
            retry_exceptions=False,  # only a dead worker is retried, never an error of the run itself
            name=spec.run_name(),
        ).remote(
            type(spec).kind,
            spec.model_dump_json(),
            root,
            data,
            task_device,
            force,
            dict(options),
            threads,
            setup,
            *waits_for,
        )
        refs[key] = ref
        pending[ref] = spec
    return _collect(ray, pending, store, max_retries, bar)


def _collect(
    ray: ModuleType, pending: dict[Any, Any], store: RunStore, max_retries: int, bar: tqdm[Any] | None
) -> dict[str, dict[str, Any]]:
    """Wait for the submitted tasks (``{task ref: run}``, emptied as they end) and bring each run's
    journal into the store; on the first failure cancel the rest (what they trained is
    checkpointed) and raise it once all have settled; on Ctrl-C cancel, settle, and re-raise."""
    done: dict[str, dict[str, Any]] = {}
    failure: tuple[Exception, Exception] | None = None
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ref)
            try:
                done[spec.run_hash()] = ray.get(ref)
                if bar is not None:
                    bar.update(1)
            except Exception as exc:
                if failure is None:
                    failure = (_driver_error(ray, exc, spec, max_retries), exc)
                    for other in pending:  # stop the study; what they trained is checkpointed
                        ray.cancel(other)
            finally:
                apply_journals(store, spec)
    except KeyboardInterrupt:
        for other in pending:
            ray.cancel(other)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=_SETTLE_SECONDS)
        for spec in pending.values():
            apply_journals(store, spec)
        raise
    if failure is not None:
        error, origin = failure
        if isinstance(error, PrunelabError):
            raise error from None
        raise error from origin
    return done
