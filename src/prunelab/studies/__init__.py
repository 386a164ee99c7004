"""The papers' studies as grids of specs, with their summaries and verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from prunelab.runners import run_specs
from prunelab.store import write_json_atomic
from prunelab.studies.sanity import SanityStudy, SanitySummary, study_runs, summarize


def run_sanity_study(
    study: SanityStudy,
    runs_dir: str | Path,
    *,
    report_dir: str | Path | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    plugins: Sequence[str] = (),
) -> tuple[SanitySummary, Path]:
    """Run (or resume) every run of ``study``, summarise, and write the report.

    Returns the summary and the path of the HTML report (``report_dir``, default
    ``<runs_dir>/reports/<study name>``).
    """
    from prunelab.report import write_sanity_report  # the report imports this package's types

    runs = study_runs(study)
    results = run_specs(
        [r.spec for r in runs],
        runs_dir,
        workers=workers,
        data_dir=data_dir,
        device=device,
        force=force,
        progress=progress,
        plugins=plugins,
        description=study.name,
    )
    summary = summarize(study, runs, results)
    out = record_study(study, runs_dir, report_dir, [r.spec.run_name() for r in runs])
    html = write_sanity_report(summary, out)
    return summary, html


def record_study(
    study: BaseModel,
    runs_dir: str | Path,
    report_dir: str | Path | None,
    run_names: Sequence[str],
    *,
    kind: str = "sanity",
) -> Path:
    """Create the report folder (``report_dir``, default ``<runs_dir>/reports/<study name>``) and
    write ``study.json`` there: the study's kind (``sanity``, ``lottery``) and fields, where its runs
    live and their names, so ``prunelab report`` can rebuild the report without training."""
    name = str(getattr(study, "name", "study"))
    out = Path(report_dir) if report_dir is not None else Path(runs_dir) / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / "study.json",
        {
            "kind": kind,
            "study": study.model_dump(mode="json"),
            "runs_dir": str(Path(runs_dir).resolve()),
            "runs": list(run_names),
        },
    )
    return out


def rebuild_report(report_dir: str | Path, runs_dir: str | Path | None = None) -> Path:
    """Rewrite the report in ``report_dir`` from its ``study.json`` and the stored runs, without
    training (unfinished runs are reported as missing); dispatches on the study's kind.

    Returns the path of ``report.html``.
    """
    import json

    from prunelab.errors import PrunelabError
    from prunelab.spec import parse_model
    from prunelab.store import RunStore

    path = Path(report_dir) / "study.json"
    if not path.is_file():
        raise PrunelabError(f"no study.json in {str(report_dir)!r}")
    payload = json.loads(path.read_text())
    kind = payload.get("kind", "sanity")
    root = (
        Path(runs_dir) if runs_dir is not None else Path(payload.get("runs_dir") or path.parent.parent.parent)
    )
    if kind == "rethinking":
        from prunelab.studies.rethinking import rebuild_report as rebuild_rethinking

        return rebuild_rethinking(report_dir, root)
    store = RunStore(root)
    if kind == "lottery":
        from prunelab.report.lottery import write_lottery_report
        from prunelab.studies.lottery import LotteryStudy, lottery_runs, summarize_lottery

        lottery = parse_model(LotteryStudy, payload["study"], str(path))
        results = {
            r.spec.run_hash(): store.result(r.spec) for _, _, runs in lottery_runs(lottery) for r in runs
        }
        return write_lottery_report(summarize_lottery(lottery, results), Path(report_dir))
    if kind != "sanity":
        raise PrunelabError(f"{str(path)!r}: unknown study kind {kind!r}; valid: sanity, lottery, rethinking")
    from prunelab.report import write_sanity_report

    study = parse_model(SanityStudy, payload["study"], str(path))
    runs = study_runs(study)
    return write_sanity_report(summarize(study, runs, [store.result(r.spec) for r in runs]), Path(report_dir))


__all__ = [
    "rebuild_report",
    "record_study",
    "SanityStudy",
    "SanitySummary",
    "run_sanity_study",
    "study_runs",
    "summarize",
]
