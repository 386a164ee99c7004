"""Runner backends: run many specs inline or over a local process pool, skipping finished runs."""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prunelab.errors import PrunelabError
from prunelab.lineage import trunk_rewind_epochs, with_ancestors
from prunelab.run import execute_run
from prunelab.spec import RunSpec
from prunelab.store import RunStore


def load_plugins(plugins: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` paths) so their registered methods exist."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = Path(plugin)
            if not path.is_file():
                raise PrunelabError(f"plugin file {plugin!r} does not exist")
            name = f"prunelab_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise PrunelabError(f"plugin file {plugin!r} cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(plugin)
            except ImportError as exc:
                raise PrunelabError(f"plugin module {plugin!r} cannot be imported ({exc})") from None


def _worker_init(threads: int, plugins: Sequence[str]) -> None:
    torch.set_num_threads(threads)
    load_plugins(plugins)


def _worker_run(
    spec_json: str,
    root: str,
    data_dir: str | Path | None,
    device: str,
    force: bool,
    save_epochs: Sequence[int],
) -> dict[str, Any]:
    spec = RunSpec.model_validate_json(spec_json)
    return execute_run(
        spec, RunStore(root), data_dir=data_dir, device=device, force=force, save_epochs=save_epochs
    )


@dataclass(frozen=True)
class Job:
    """One unit of work for :func:`run_waves`: ``fn(*args)`` returns the run's result record.

    ``fn`` must be a module-level function and ``args`` picklable (they cross to worker processes).
    ``inline`` keeps the job in this process (e.g. a run that times models must not share the CPU).
    """

    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    inline: bool = False


def run_waves(
    waves: Sequence[Sequence[Job]],
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
        for wave in waves:
            parallel = [] if workers <= 1 or device.startswith("cuda") else [j for j in wave if not j.inline]
            if len(parallel) <= 1:
                parallel = []
            in_pool = {j.key for j in parallel}
            for job in wave:
                if job.key not in in_pool:
                    done[job.key] = job.fn(*job.args)
                    if bar is not None:
                        bar.update(1)
            if not parallel:
                continue
            pool = pools.get()
            pending: dict[Future[dict[str, Any]], Job] = {pool.submit(j.fn, *j.args): j for j in parallel}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[pending.pop(future).key] = future.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        pools.close()
    return done


class _LazyPool:
    """One process pool for all the waves of a call, started when a wave first needs it (worker
    start-up imports torch: seconds per pool)."""

    def __init__(self, workers: int, plugins: Sequence[str]) -> None:
        self.workers = workers
        self.plugins = tuple(plugins)
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads, self.plugins),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def run_specs(
    specs: Sequence[RunSpec],
    runs_dir: str | Path,
    *,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    plugins: Sequence[str] = (),
    description: str = "runs",
) -> list[dict[str, Any]]:
    """Run every spec (finished ones are read back, not recomputed); results in input order.

    Args:
        workers: 1 runs inline; more uses a process pool with ``cpu_count // workers`` torch
            threads each (CUDA runs stay inline: one process owns the GPU).
        force: recompute the given specs (never the trunks and earlier rounds they share).
    """
    store = RunStore(runs_dir)
    wanted = {spec.run_hash() for spec in specs}
    # Runs the given ones build on (trunks, earlier IMP rounds) go first, in waves, so no two
    # workers ever train the same trunk; each trunk saves every rewinding epoch asked of it.
    waves = with_ancestors(specs)
    save_epochs = trunk_rewind_epochs([run for wave in waves for run in wave])
    done: dict[str, dict[str, Any]] = {}
    jobs: list[list[Job]] = []
    for wave in waves:
        jobs.append([])
        for spec in wave:
            key, needed = spec.run_hash(), sorted(save_epochs.get(spec.run_hash(), set()))
            forced = force and key in wanted
            result = None if forced else store.result(spec)
            if result is not None and all(store.rewind_path(spec, e).is_file() for e in needed):
                done[key] = result
            else:
                args = (spec.model_dump_json(), str(store.root), data_dir, device, forced, needed)
                jobs[-1].append(Job(key, _worker_run, args))
    total = sum(len(wave) for wave in waves)
    bar = tqdm(
        total=total, initial=len(done), desc=description, unit="run", disable=not progress, dynamic_ncols=True
    )
    try:
        done.update(run_waves(jobs, workers=workers, device=device, plugins=plugins, bar=bar))
    finally:
        bar.close()
    return [done.get(spec.run_hash(), {}) for spec in specs]
