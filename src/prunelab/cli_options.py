"""The command line's shared flags, and the commands generated from the study registry: one per
study kind with a preset, taking the kind's presets and shortcut flags, then the common flags."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from prunelab import commands

HELP = {
    "runs_dir": "Directory of run directories and their SQLite index.",
    "data_dir": "Dataset cache (default: $PRUNELAB_DATA_DIR or ~/.cache/prunelab/data).",
    "device": "cpu, cuda, cuda:N or auto.",
    "workers": "Parallel worker processes (1 = inline; CUDA runs stay inline).",
    "out": "Report folder (default: RUNS_DIR/reports/<study name>).",
    "plugin": "Module or .py file to import first (repeatable); it registers models, datasets, methods, "
    "checks or studies. This EXECUTES the file's code: use only files you trust.",
    "set": "Set any spec field: path=value (repeatable; YAML value), e.g. train.momentum=0.95.",
    "force": "Recompute finished runs.",
    "threads": "Torch threads per run (results depend on it, never on --workers; recorded in each result).",
    "backend": "Where runs execute: local (this machine, see --workers) or ray (one Ray task per run on a "
    "Ray cluster, same results; needs prunelab's ray extra).",
    "address": "Ray cluster to use with --backend ray: auto (the cluster this node belongs to) or HOST:PORT "
    "(default: $RAY_ADDRESS, else a new local instance).",
    "gpus_per_run": "GPUs each run asks Ray for with --backend ray and a CUDA device (a fraction such as 0.25 "
    "shares one GPU among 4 runs).",
    "pack": "Train up to K compatible runs (same data, model and recipe; any seed, mask or check) as one "
    "packed model, each stored as its own run; auto: K by memory; 1: each run on its own.",
}
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help=HELP["runs_dir"])
DATA_DIR = typer.Option(None, "--data-dir", help=HELP["data_dir"])
DEVICE = typer.Option("cpu", "--device", help=HELP["device"])
WORKERS = typer.Option(2, "--workers", help=HELP["workers"])
REPORT_OUT = typer.Option(None, "--out", help=HELP["out"])
PLUGIN = typer.Option(None, "--plugin", help=HELP["plugin"])
SET = typer.Option(None, "--set", help=HELP["set"])
FORCE = typer.Option(False, "--force", help=HELP["force"])
THREADS = typer.Option(1, "--threads", help=HELP["threads"])
BACKEND = typer.Option("local", "--backend", help=HELP["backend"])
ADDRESS = typer.Option(None, "--address", help=HELP["address"])
GPUS_PER_RUN = typer.Option(1.0, "--gpus-per-run", help=HELP["gpus_per_run"])
PACK = typer.Option("1", "--pack", help=HELP["pack"])
MODEL_OPTION = typer.Option(None, "--model-option", help="Model option key=value (repeatable).")


_FLAG_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "names": str, "floats": str}


def _study_params(kind: Any) -> list[inspect.Parameter]:
    """The command's parameters: preset, the kind's shortcut flags, then the common flags."""

    def option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    params = [
        option(
            "preset",
            str,
            typer.Option(kind.presets[0], "--preset", help=f"Preset grid: {', '.join(kind.presets)}."),
        )
    ]
    for flag in kind.flags:
        dashed = f"--{flag.name.replace('_', '-')}"
        if flag.type == "pairs":
            params.append(option(flag.name, list[str], typer.Option(None, dashed, help=flag.help)))
        else:
            params.append(
                option(flag.name, _FLAG_TYPES[flag.type] | None, typer.Option(None, dashed, help=flag.help))
            )
    common: list[tuple[str, Any, Any]] = [
        ("set_", list[str], SET),
        ("runs_dir", Path, RUNS_DIR),
        ("out", Path | None, REPORT_OUT),
        ("workers", int, WORKERS),
        ("data_dir", Path | None, DATA_DIR),
        ("device", str, DEVICE),
        ("force", bool, FORCE),
        ("threads", int, THREADS),
        ("plugin", list[str], PLUGIN),
        ("backend", str, BACKEND),
        ("address", str | None, ADDRESS),
        ("gpus_per_run", float, GPUS_PER_RUN),
        ("pack", str, PACK),
    ]
    return params + [option(name, annotation, default) for name, annotation, default in common]


def add_study_command(app: typer.Typer, kind: Any) -> None:
    """Add the command of a registered study kind (its presets and shortcut flags, the common flags)."""

    def command(**kwargs: Any) -> None:
        given = {flag.name: kwargs.pop(flag.name) for flag in kind.flags}
        where = commands.Execution(
            kwargs["runs_dir"],
            kwargs["out"],
            kwargs["workers"],
            kwargs["data_dir"],
            kwargs["device"],
            kwargs["force"],
            tuple(kwargs["plugin"] or []),
            kwargs["threads"],
            backend=kwargs["backend"],
            address=kwargs["address"],
            gpus_per_run=kwargs["gpus_per_run"],
            pack=kwargs["pack"],
        )
        commands.run_study_command(
            kind.name, kwargs["preset"], given, kwargs["set_"] or [], where, typer.echo
        )

    params = _study_params(kind)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = kind.description + "."
    app.command(kind.name)(command)


def add_study_commands(app: typer.Typer) -> None:
    """Add a command for every registered study kind that has presets and no command yet."""
    from prunelab.studies import STUDIES

    taken = {c.name for c in app.registered_commands}
    for _, kind in STUDIES.items():
        if kind.preset is not None and kind.name not in taken:
            add_study_command(app, kind)
