"""The executor registry and the one way any stored unit of work is run.

Every unit of work (a training run, an IMP round, a large sparsity-trained model, a structured
prune, a scratch run) is a typed spec with a canonical hash and a ``kind`` (a class attribute). The
executor registered for that kind says which runs it builds on (its parents, with the role each
plays), what extra per-run options a set of runs implies (e.g. the rewinding epochs a trunk must
keep for its tickets), whether a stored result already satisfies the run, and how to execute it.
:func:`execute` runs one spec (its unfinished ancestors first); :func:`waves` orders many for the
runners, so no two workers ever train a shared parent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunelab.errors import PrunelabError
from prunelab.registry import Registry
from prunelab.spec import parse_model
from prunelab.store import RunStore

#: ``progress(epochs_done, epochs_total)`` after each epoch.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunContext:
    """How a run is executed, never what it computes (that is the spec's alone).

    Attributes:
        data_dir: dataset cache directory (None: ``prunelab.data.default_data_dir()``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: called after each epoch of the run itself (not of its ancestors).
        stop_after_epoch: stop (as if killed) once this many epochs are done; for tests.
        threads: torch intra-op threads for the run. Fixed per run (not derived from the worker
            count), because CPU kernels split their reductions by thread: the same spec trained with
            another thread count gives other weights. Recorded in each result's provenance.
    """

    data_dir: str | Path | None = None
    device: str = "cpu"
    progress: Progress | None = None
    stop_after_epoch: int | None = None
    threads: int = 1


def _no_plan(specs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    return {}


def _stored_result(spec: Any, store: RunStore, options: Mapping[str, Any]) -> dict[str, Any] | None:
    return store.verified_result(spec)


def _never_inline(spec: Any) -> bool:
    return False


def _nothing_to_validate(spec: Any, context: RunContext) -> None:
    return None


@dataclass(frozen=True)
class Executor:
    """How one kind of spec is run.

    Attributes:
        kind: the spec class's ``kind``.
        spec_type: the pydantic spec class (rebuilt from JSON in worker processes).
        run: ``run(spec, store, context, **options) -> result`` (the contents of ``result.json``);
            called only when the run is not finished (or forced) and its parents are finished.
        parents: ``parents(spec) -> [(parent spec, role)]``: the runs it builds on.
        plan: ``plan(specs) -> {run hash: options}``: extra options a set of runs implies for each
            other (picklable; e.g. a trunk's rewinding epochs).
        finished: ``finished(spec, store, options) -> result | None``: a stored result that satisfies
            the run with these options, or None to (re)run it.
        inline: runs that must execute in the driver process (e.g. they time models).
        validate: ``validate(spec, context)`` raises a one-line ``PrunelabError`` for a spec that
            cannot run (a bad model option, a model that does not fit the data, a method the model
            lacks the layers for); called for every run before anything is created or trained.
        trained_model: ``trained_model(spec, store, result, data, device) -> nn.Module``: a finished
            run's model with the weights it reports (what ``prunelab evaluate`` measures); None for
            kinds that train no model.
    """

    kind: str
    spec_type: type[Any]
    run: Callable[..., dict[str, Any]]
    parents: Callable[[Any], list[tuple[Any, str]]]
    plan: Callable[[Sequence[Any]], dict[str, dict[str, Any]]] = field(default=_no_plan)
    finished: Callable[[Any, RunStore, Mapping[str, Any]], dict[str, Any] | None] = field(
        default=_stored_result
    )
    inline: Callable[[Any], bool] = field(default=_never_inline)
    validate: Callable[[Any, RunContext], None] = field(default=_nothing_to_validate)
    trained_model: Callable[..., Any] | None = None


EXECUTORS: Registry[Executor] = Registry("run kind")


def register_executor(executor: Executor) -> Executor:
    """Register the executor of ``executor.spec_type`` under its kind."""
    return EXECUTORS.add(executor.kind, executor)


def executor_for(spec: Any) -> Executor:
    """The registered executor of ``spec``'s kind."""
    kind = getattr(type(spec), "kind", None)
    if not isinstance(kind, str):
        raise PrunelabError(f"{type(spec).__name__} is not a run spec (it has no kind)")
    return EXECUTORS.get(kind)


def spec_from_json(kind: str, text: str) -> Any:
    """Rebuild a spec of ``kind`` from its JSON (``model_dump_json``), e.g. in a worker process."""
    return parse_model(EXECUTORS.get(kind).spec_type, json.loads(text), f"{kind} spec")


def ancestors(spec: Any) -> list[Any]:
    """Every run ``spec`` builds on (parents before children, each once), ``spec`` excluded."""
    out: dict[str, Any] = {}

    def visit(run: Any) -> None:
        for parent, _ in executor_for(run).parents(run):
            if parent.run_hash() not in out:
                visit(parent)
                out[parent.run_hash()] = parent

    visit(spec)
    return list(out.values())


def waves(specs: Iterable[Any]) -> list[list[Any]]:
    """``specs`` and all their ancestors, each once, in waves: every run's parents are in earlier
    waves, so the runs of one wave can execute in parallel. Order within a wave is first appearance."""
    depth: dict[str, int] = {}
    by_hash: dict[str, Any] = {}

    def level(run: Any) -> int:
        key = run.run_hash()
        if key not in depth:
            parents = executor_for(run).parents(run)
            depth[key] = 1 + max((level(p) for p, _ in parents), default=-1)
            by_hash.setdefault(key, run)
        return depth[key]

    order: list[str] = []
    for spec in specs:
        for run in [*ancestors(spec), spec]:
            level(run)
            if run.run_hash() not in order:
                order.append(run.run_hash())
    out: list[list[Any]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for key in order:
        out[depth[key]].append(by_hash[key])
    return out


def plan_options(specs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per run hash, the options every executor's ``plan`` derives from the whole set of runs."""
    by_kind: dict[str, list[Any]] = {}
    for spec in specs:
        by_kind.setdefault(type(spec).kind, []).append(spec)
    out: dict[str, dict[str, Any]] = {}
    for kind, group in by_kind.items():
        for key, options in EXECUTORS.get(kind).plan(group).items():
            out[key] = merge_run_options(out.get(key, {}), options)
    return out


def merge_run_options(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``; list values (e.g. epochs to keep) are united, sorted."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, list | tuple) and isinstance(out.get(key), list | tuple):
            out[key] = sorted(set(out[key]) | set(value))
        else:
            out[key] = value
    return out


def validate_all(specs: Iterable[Any], context: RunContext) -> None:
    """Validate every run (and its ancestors) before anything is created or trained."""
    seen: set[str] = set()
    for spec in specs:
        for run in [*ancestors(spec), spec]:
            if run.run_hash() not in seen:
                seen.add(run.run_hash())
                executor_for(run).validate(run, context)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, restoring the previous count."""
    if threads < 1:
        raise PrunelabError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(
    spec: Any,
    store: RunStore,
    context: RunContext | None = None,
    *,
    force: bool = False,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``spec`` to completion (or resume it, or read it back when finished); return its result.

    Unfinished ancestors run first (never forced), and each parent link is recorded in the store.

    Args:
        spec: any registered run spec.
        store: where runs live.
        context: data directory, device, progress (default: CPU, no progress).
        force: recompute ``spec`` itself even if it finished before.
        options: per-run options for ``spec`` on top of what its executor plans (e.g. rewinding
            epochs a trunk must keep for tickets outside this call).
    """
    context = context or RunContext()
    chain = [*ancestors(spec), spec]
    validate_all([spec], context)
    plan = plan_options(chain)
    if options:
        plan[spec.run_hash()] = merge_run_options(plan.get(spec.run_hash(), {}), options)
    quiet = RunContext(context.data_dir, context.device, threads=context.threads)
    for run in chain[:-1]:
        _execute_one(run, store, quiet, plan.get(run.run_hash(), {}), force=False)
    return _execute_one(spec, store, context, plan.get(spec.run_hash(), {}), force=force)


def _execute_one(
    spec: Any, store: RunStore, context: RunContext, options: Mapping[str, Any], *, force: bool
) -> dict[str, Any]:
    """Run one spec whose parents are finished, holding its claim: a second process asking for the
    same run waits here, then finds it finished. A run that raises is marked failed."""
    executor = executor_for(spec)
    with store.claim(spec), torch_threads(context.threads):
        if force:
            store.reset(spec)
        else:
            done = executor.finished(spec, store, options)
            if done is not None:
                return done
        for parent, role in executor.parents(spec):
            store.link(spec, parent, role)
        try:
            return executor.run(spec, store, context, **options)
        except Exception as exc:
            store.fail(spec, f"{type(exc).__name__}: {exc}")
            raise
