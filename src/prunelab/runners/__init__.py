"""Runner backends: run many specs inline or over a local process pool, skipping finished runs."""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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
    spec_json: str, root: str, data_dir: str | None, device: str, force: bool, save_epochs: Sequence[int]
) -> dict[str, Any]:
    spec = RunSpec.model_validate_json(spec_json)
    return execute_run(
        spec, RunStore(root), data_dir=data_dir, device=device, force=force, save_epochs=save_epochs
    )


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
    """
    store = RunStore(runs_dir)
    wanted = {spec.run_hash() for spec in specs}
    # Runs the given ones build on (trunks, earlier IMP rounds) go first, in waves, so no two
    # workers ever train the same trunk; each trunk saves every rewinding epoch asked of it.
    waves = with_ancestors(specs)
    save_epochs = trunk_rewind_epochs([run for wave in waves for run in wave])
    done: dict[str, dict[str, Any]] = {}
    total = sum(len(wave) for wave in waves)
    bar = tqdm(total=total, desc=description, unit="run", disable=not progress, dynamic_ncols=True)
    data_dir_s = None if data_dir is None else str(data_dir)
    pools = _LazyPool(workers, plugins)
    try:
        for wave in waves:
            todo: list[RunSpec] = []
            for spec in wave:
                needed = save_epochs.get(spec.run_hash(), set())
                result = None if force and spec.run_hash() in wanted else store.result(spec)
                if result is not None and all(store.rewind_path(spec, e).is_file() for e in needed):
                    done[spec.run_hash()] = result
                    bar.update(1)
                else:
                    todo.append(spec)
            _run_wave(todo, store, done, bar, save_epochs, wanted, pools, data_dir_s, device, force)
    finally:
        pools.close()
        bar.close()
    return [done.get(spec.run_hash(), {}) for spec in specs]


def _run_wave(
    todo: Sequence[RunSpec],
    store: RunStore,
    done: dict[str, dict[str, Any]],
    bar: tqdm[Any],
    save_epochs: dict[str, set[int]],
    wanted: set[str],
    pools: _LazyPool,
    data_dir: str | None,
    device: str,
    force: bool,
) -> None:
    """Run one wave of independent runs inline or over a process pool; ``force`` only for the
    runs that were asked for, never for the trunks they share."""

    def args(spec: RunSpec) -> tuple[bool, list[int]]:
        return force and spec.run_hash() in wanted, sorted(save_epochs.get(spec.run_hash(), set()))

    if pools.workers <= 1 or len(todo) <= 1 or device.startswith("cuda"):
        for spec in todo:
            forced, epochs = args(spec)
            done[spec.run_hash()] = execute_run(
                spec, store, data_dir=data_dir, device=device, force=forced, save_epochs=epochs
            )
            bar.update(1)
        return
    pool = pools.get()
    pending: dict[Future[dict[str, Any]], RunSpec] = {
        pool.submit(_worker_run, spec.model_dump_json(), str(store.root), data_dir, device, *args(spec)): spec
        for spec in todo
    }
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            done[pending.pop(future).run_hash()] = future.result()
            bar.update(1)


class _LazyPool:
    """One process pool for all the waves of a call, started when a wave first needs it (worker
    start-up imports torch: seconds per pool, which used to be paid once per wave)."""

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
