"""Running any study kind: record it, run its runs through the runners, summarise, report; and
rebuild a report from the stored runs alone."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from prunelab.errors import PrunelabError
from prunelab.runners import check_backend, run_specs
from prunelab.runs import RunContext, validate_all
from prunelab.spec import format_validation_error, parse_model
from prunelab.store import RunStore, write_json_atomic
from prunelab.studies.registry import STUDIES, StudyKind, kind_of

#: The study's record in its report folder.
STUDY_FILE = "study.json"


def record_study(
    study: BaseModel,
    kind: str,
    runs_dir: str | Path,
    report_dir: str | Path | None,
    run_names: Sequence[str],
    plugins: Sequence[str] = (),
) -> Path:
    """Create the report folder (``report_dir``, default ``<runs_dir>/reports/<study name>``) and
    write ``study.json`` there: the study's kind and fields, where its runs live (absolute, and
    relative to the folder, so a moved tree still resolves), their names and the plugins it needs,
    so ``prunelab report`` can rebuild the report without training."""
    name = str(getattr(study, "name", "study"))
    out = Path(report_dir) if report_dir is not None else Path(runs_dir) / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / STUDY_FILE,
        {
            "kind": kind,
            "study": study.model_dump(mode="json"),
            "runs_dir": str(Path(runs_dir).resolve()),
            "runs_dir_relative": os.path.relpath(Path(runs_dir).resolve(), out.resolve()),
            "runs": list(run_names),
            "plugins": list(plugins),
        },
    )
    return out


def run_study(
    study: BaseModel,
    runs_dir: str | Path,
    *,
    kind: str | None = None,
    report_dir: str | Path | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    plugins: Sequence[str] = (),
    threads: int = 1,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 1.0,
    pack: int | str = 1,
) -> tuple[Any, Path]:
    """Run (or resume) every run of ``study``, summarise it, and write its report.

    Args:
        study: a study spec of any registered kind (``SanityStudy``, ``LotteryStudy``, ...).
        runs_dir: where runs live (shared across studies: common runs are trained once).
        kind: the study kind (default: the first registered for the spec's type; ``tickets``
            studies are ``SanityStudy`` grids).
        report_dir: the report folder (default ``<runs_dir>/reports/<study name>``).
        workers: parallel worker processes (1 = inline).
        force: recompute the study's runs (never the parents they share).
        plugins: plugin modules or files the workers load (and the report rebuild will need).
        threads: torch threads per run (results depend on it, never on ``workers``).
        backend: ``"local"`` or ``"ray"`` (one Ray task per run; the same results).
        address: the Ray cluster to use (``"auto"``, ``"HOST:PORT"``; see
            :func:`prunelab.runners.run_specs`).
        gpus_per_run: GPUs each Ray task asks for with a CUDA device (a fraction shares a GPU).
        pack: train up to this many compatible runs as one packed model (``"auto"``: by memory;
            1: each on its own); see :func:`prunelab.runners.run_specs`.

    Returns:
        The summary and the path of ``report.html``.
    """
    # A bad backend or --pack costs nothing: checked before study.json is written.
    check_backend(backend, address, gpus_per_run, pack)
    entry = STUDIES.get(kind) if kind is not None else kind_of(study)
    if not isinstance(study, entry.spec_type):
        raise PrunelabError(
            f"study kind {entry.name!r} takes a {entry.spec_type.__name__}, got {type(study).__name__}"
        )
    try:
        specs = entry.runs(study)
    except ValidationError as exc:  # a run of the grid is invalid (e.g. rewinding past the end)
        raise PrunelabError(
            f"invalid run in study {getattr(study, 'name', '')!r}: {format_validation_error(exc)}"
        ) from None
    # The whole grid is validated before anything is created or trained.
    validate_all(specs, RunContext(data_dir, device, threads=threads))
    # Written first, so `prunelab report` can rebuild a partial study's report after a kill.
    out = record_study(study, entry.name, runs_dir, report_dir, [s.run_name() for s in specs], plugins)
    RunStore(runs_dir).record_members(str(getattr(study, "name", entry.name)), specs)
    results = run_specs(
        specs,
        runs_dir,
        workers=workers,
        data_dir=data_dir,
        device=device,
        force=force,
        progress=progress,
        plugins=plugins,
        description=str(getattr(study, "name", entry.name)),
        threads=threads,
        backend=backend,
        address=address,
        gpus_per_run=gpus_per_run,
        pack=pack,
    )
    summary = entry.summarize(study, {s.run_hash(): r or None for s, r in zip(specs, results, strict=True)})
    return summary, entry.report(summary, out)


def load_study(report_dir: str | Path) -> tuple[StudyKind, Any, dict[str, Any]]:
    """The kind, the validated study and the raw record of the ``study.json`` in ``report_dir``."""
    path = Path(report_dir) / STUDY_FILE
    if not path.is_file():
        raise PrunelabError(f"no {STUDY_FILE} in {str(report_dir)!r}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrunelabError(f"{str(path)!r} is not valid JSON ({exc})") from None
    kind = STUDIES.get(str(payload.get("kind", "sanity")))
    return kind, parse_model(kind.spec_type, payload.get("study"), str(path)), payload


def _runs_dir_of(report_dir: Path, payload: dict[str, Any]) -> Path:
    """Where the study's runs live: relative to the report folder first (a moved tree), then the
    absolute path recorded, then the folder two levels up (``<runs>/reports/<name>``)."""
    candidates = []
    if payload.get("runs_dir_relative"):
        candidates.append(report_dir / str(payload["runs_dir_relative"]))
    if payload.get("runs_dir"):
        candidates.append(Path(str(payload["runs_dir"])))
    candidates.append(report_dir.parent.parent)
    for candidate in candidates:
        if candidate.is_dir() and (
            any(candidate.glob("*/spec.json")) or (candidate / "index.sqlite").is_file()
        ):
            return candidate
    raise PrunelabError(
        f"cannot find the runs of {str(report_dir / STUDY_FILE)!r} (tried {', '.join(str(c) for c in candidates)}); "
        "pass --runs-dir"
    )


def rebuild_report(report_dir: str | Path, runs_dir: str | Path | None = None) -> Path:
    """Rewrite the report in ``report_dir`` from its ``study.json`` and the stored runs, without
    training or writing to the runs (unfinished runs are reported as missing). Plugins the study
    needs must be loaded. A report whose runs cannot be found is refused, never overwritten with an
    empty one.

    Returns the path of ``report.html``.
    """
    kind, study, payload = load_study(report_dir)
    root = Path(runs_dir) if runs_dir is not None else _runs_dir_of(Path(report_dir), payload)
    store = RunStore(root, readonly=True)
    specs = kind.runs(study)
    results = {s.run_hash(): store.result(s) for s in specs}
    if specs and not any(results.values()):
        raise PrunelabError(
            f"none of the {len(specs)} runs of study {getattr(study, 'name', '')!r} is in {str(root)!r}; "
            "the report is left as it is (pass the right --runs-dir)"
        )
    summary = kind.summarize(study, results)
    return kind.report(summary, Path(report_dir))
