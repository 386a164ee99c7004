"""Runner backends: run many specs of any kind inline, over a local process pool, in dependency
waves (parents first), or over a Ray cluster (:mod:`prunelab.runners.ray_backend`), skipping finished
runs. What each run does is its executor's business (:mod:`prunelab.runs`); a runner only decides
where and when it executes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prunelab.errors import PrunelabError
from prunelab.plugins import FACTORY_MODELS, load_plugins, register_factories
from prunelab.runs import RunContext, execute, executor_for, plan_options, spec_from_json, validate_all, waves
from prunelab.store import RunStore


def _die_with_parent() -> None:
    """On Linux, ask the kernel to end this worker when the driver dies (a killed study must not
    leave workers training in the background, writing into runs a restarted study also runs)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _worker_init(threads: int, plugins: Sequence[str], factories: dict[str, Any]) -> None:
    _die_with_parent()
    torch.set_num_threads(threads)
    load_plugins(plugins)
    register_factories(factories)


def _worker_run(
    kind: str,
    spec_json: str,
    root: str,
    data_dir: str | Path | None,
    device: str,
    force: bool,
    options: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    spec = spec_from_json(kind, spec_json)
    context = RunContext(data_dir, device, threads=threads)
    return execute(spec, RunStore(root), context, force=force, options=options)


@dataclass(frozen=True)
class Job:
    """One unit of work for :func:`run_waves`: ``fn(*args)`` returns the run's result record.

    ``fn`` must be a module-level function and ``args`` picklable (they cross to worker processes).
    ``inline`` keeps the job in this process (e.g. a run that times models must not share the CPU).
    ``members``: the run keys of a packed job (:mod:`prunelab.runs.packed`), whose ``fn`` returns
    ``{run key: result}``; empty for a job of one run.
    """

    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    inline: bool = False
    members: tuple[str, ...] = ()


def run_waves(
    waves_of_jobs: Sequence[Sequence[Job]],
    *,
    workers: int = 1,
    device: str = "cpu",
    plugins: Sequence[str] = (),
    bar: tqdm[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run waves of jobs in order; the jobs of one wave are independent and, with ``workers > 1``,
    spread over one process pool (``cpu_count // workers`` torch threads each) shared by every
    wave. CUDA jobs stay inline: one process owns the GPU. Returns ``{job key: result}``."""
    done: dict[str, dict[str, Any]] = {}
    pools = _LazyPool(workers, plugins)
    try:
        for wave in waves_of_jobs:
            parallel = [] if workers <= 1 or device.startswith("cuda") else [j for j in wave if not j.inline]
            if len(parallel) <= 1:
                parallel = []
            in_pool = {j.key for j in parallel}
            for job in wave:
                if job.key not in in_pool:
                    _record(done, job, job.fn(*job.args), bar)
            if not parallel:
                continue
            pool = pools.get()
            pending: dict[Future[dict[str, Any]], Job] = {pool.submit(j.fn, *j.args): j for j in parallel}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    _record(done, pending.pop(future), future.result(), bar)
    finally:
        pools.close()
    return done


def _record(done: dict[str, dict[str, Any]], job: Job, result: dict[str, Any], bar: tqdm[Any] | None) -> None:
    """Store a job's result (a packed job's, per member) and advance the bar by its runs."""
    if job.members:
        done.update(result)
    else:
        done[job.key] = result
    if bar is not None:
        bar.update(max(1, len(job.members)))


class _LazyPool:
    """One process pool for all the waves of a call, started when a wave first needs it (worker
    start-up imports torch: seconds per pool)."""

    def __init__(self, workers: int, plugins: Sequence[str]) -> None:
        self.workers = workers
        self.plugins = tuple(plugins)
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            factories = dict(FACTORY_MODELS)
            try:
                pickle.dumps(factories)
            except Exception as exc:
                raise PrunelabError(
                    f"a model factory cannot be sent to worker processes ({exc}); define it at module "
                    "level, or run with workers=1"
                ) from None
            # Each run sets its own thread count (RunContext.threads); this is only the idle default.
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads, self.plugins, factories),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _packed_jobs(wave: list[Job], pack: int | str, workers: int) -> list[Job]:
    """The jobs of one wave with compatible runs grouped into packed jobs
    (:func:`prunelab.runs.packed.plan_packs`); a run that trains solo keeps its job."""
    from prunelab.runs.packed import plan_packs, run_packed_job

    specs = [spec_from_json(job.args[0], job.args[1]) for job in wave]
    _, _, root, data_dir, device, _, _, threads = wave[0].args
    out = []
    for group in plan_packs(specs, pack, device=device, workers=workers, data_dir=data_dir):
        if len(group) == 1:
            out.append(wave[group[0]])
            continue
        members = [wave[i] for i in group]
        args = (
            [job.args[1] for job in members],
            root,
            data_dir,
            device,
            [job.args[5] for job in members],
            [job.args[6] for job in members],
            threads,
        )
        keys = tuple(job.key for job in members)
        out.append(Job(f"pack:{keys[0]}+{len(keys) - 1}", run_packed_job, args, members=keys))
    return out


def _plan_jobs(
    ordered: list[list[Any]],
    forced: set[str],
    store: RunStore,
    data_dir: str | Path | None,
    device: str,
    threads: int,
) -> tuple[dict[str, dict[str, Any]], list[list[Job]], list[tuple[Any, dict[str, Any], bool]]]:
    """Per wave of runs, what is already done (read back, unless its hash is in ``forced``) and a
    job for each run that is not: ``(done, jobs per wave, the same work as (spec, options, forced)
    for the Ray backend)``."""
    plan = plan_options([run for wave in ordered for run in wave])
    done: dict[str, dict[str, Any]] = {}
    jobs: list[list[Job]] = []
    todo: list[tuple[Any, dict[str, Any], bool]] = []
    for wave in ordered:
        jobs.append([])
        for spec in wave:
            key, options = spec.run_hash(), plan.get(spec.run_hash(), {})
            executor = executor_for(spec)
            force = key in forced
            result = None if force else executor.finished(spec, store, options)
            if result is not None:
                done[key] = result
                continue
            args = (
                type(spec).kind,
                spec.model_dump_json(),
                str(store.root),
                data_dir,
                device,
                force,
                options,
                threads,
            )
            jobs[-1].append(Job(key, _worker_run, args, inline=executor.inline(spec)))
            todo.append((spec, options, force))
    return done, jobs, todo


#: Where :func:`run_specs` executes runs: this machine (inline or a process pool) or a Ray cluster.
BACKENDS = ("local", "ray")
#: Packing is a local-backend feature: on Ray every run is a task of its own.
PACK_WITH_RAY = (
    "--pack applies to --backend local; with --backend ray every run is its own Ray task (use --pack 1)"
)


def check_backend(
    backend: str, address: str | None = None, gpus_per_run: float = 1.0, pack: int | str = 1
) -> int | str:
    """A one-line error for an unknown backend, an ``address`` without Ray, Ray not installed, a
    GPU share outside (0, 1] or not a whole number of GPUs, a bad ``pack`` or one above 1 with Ray;
    called before anything is created, so a bad flag costs nothing. Returns ``pack`` as
    :func:`run_specs` takes it (a size, or ``"auto"``)."""
    if pack != 1:
        from prunelab.runs.packed import check_pack

        pack = check_pack(pack) or "auto"  # "4" -> 4, "1" -> 1 (today's path), "auto"
        if pack != 1 and backend == "ray":
            raise PrunelabError(PACK_WITH_RAY)
    if not (0 < gpus_per_run <= 1 or float(gpus_per_run).is_integer() and gpus_per_run > 0):
        raise PrunelabError(
            f"--gpus-per-run must be a fraction in (0, 1] or a whole number of GPUs, got {gpus_per_run:g}"
        )
    if backend not in BACKENDS:
        raise PrunelabError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise PrunelabError(f"--address {address!r} needs --backend ray (backend is {backend!r})")
    if backend == "ray":
        from prunelab.runners.ray_backend import require_ray

        require_ray()
    return pack


def run_specs(
    specs: Sequence[Any],
    runs_dir: str | Path,
    *,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    plugins: Sequence[str] = (),
    description: str = "runs",
    threads: int = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 1.0,
    pack: int | str = 1,
) -> list[dict[str, Any]]:
    """Run every spec, of any registered kind (finished ones are read back, not recomputed), with
    the runs they build on first; results in input order.

    Args:
        workers: 1 runs inline; more uses a process pool with ``cpu_count // workers`` torch
            threads each (CUDA runs, and runs whose executor keeps them inline, stay in this process).
            Ignored by the Ray backend, where the cluster's resources set the parallelism.
        force: recompute the given specs (never the parents they share).
        threads: torch threads of every run, however it is executed (results depend on it, not on
            ``workers``).
        backend: ``"local"`` (this machine) or ``"ray"`` (one Ray task per run, same results).
        address: the Ray cluster (``"auto"``, ``"HOST:PORT"``; None: a connection this process
            already has, else ``$RAY_ADDRESS``, else a new local instance). Ray backend only.
        gpus_per_run: GPUs a CUDA run asks Ray for (a fraction shares a GPU). Ray backend only.
        pack: train up to this many compatible runs of a wave as one packed model, each stored as
            its own run (:mod:`prunelab.runs.packed`; ``"auto"``: as many as memory allows); 1
            trains every run on its own. Local backend only (Ray runs train on their own).

    Every run (and every parent) is validated before anything is created or trained.
    """
    pack = check_backend(backend, address, gpus_per_run, pack)
    validate_all(specs, RunContext(data_dir, device, threads=threads))
    store = RunStore(runs_dir)
    ordered = waves(specs)
    done, jobs, todo = _plan_jobs(
        ordered, {spec.run_hash() for spec in specs} if force else set(), store, data_dir, device, threads
    )
    if pack != 1:
        jobs = [_packed_jobs(wave, pack, workers) if len(wave) > 1 else wave for wave in jobs]
    bar = tqdm(
        total=sum(len(wave) for wave in ordered),
        initial=len(done),
        desc=description,
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        if backend == "ray":
            from prunelab.runners.ray_backend import run_on_ray

            finished = [spec for wave in ordered for spec in wave if spec.run_hash() in done]
            done.update(
                run_on_ray(
                    todo,
                    store,
                    finished=finished,
                    address=address,
                    data_dir=data_dir,
                    device=device,
                    plugins=plugins,
                    threads=threads,
                    gpus_per_run=gpus_per_run,
                    bar=bar,
                )
            )
        else:
            done.update(run_waves(jobs, workers=workers, device=device, plugins=plugins, bar=bar))
    finally:
        bar.close()
    return [done.get(spec.run_hash(), {}) for spec in specs]
