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


def _worker_run(spec_json: str, root: str, data_dir: str | None, device: str, force: bool) -> dict[str, Any]:
    spec = RunSpec.model_validate_json(spec_json)
    return execute_run(spec, RunStore(root), data_dir=data_dir, device=device, force=force)


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
    results: list[dict[str, Any] | None] = [None] * len(specs)
    todo: list[int] = []
    for i, spec in enumerate(specs):
        done = None if force else store.result(spec)
        if done is not None:
            results[i] = done
        else:
            todo.append(i)
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        desc=description,
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    data_dir_s = None if data_dir is None else str(data_dir)
    try:
        if workers <= 1 or len(todo) <= 1 or device.startswith("cuda"):
            for i in todo:
                results[i] = execute_run(specs[i], store, data_dir=data_dir_s, device=device, force=force)
                bar.update(1)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_worker_init, initargs=(threads, tuple(plugins))
            ) as pool:
                pending: dict[Future[dict[str, Any]], int] = {
                    pool.submit(
                        _worker_run, specs[i].model_dump_json(), str(store.root), data_dir_s, device, force
                    ): i
                    for i in todo
                }
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        results[pending.pop(future)] = future.result()
                        bar.update(1)
    finally:
        bar.close()
    return [r if r is not None else {} for r in results]
