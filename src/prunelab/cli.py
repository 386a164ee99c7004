"""The ``prunelab`` command line: a thin shell of flags over :mod:`prunelab.commands` and the API.

Every command takes the same common flags (``--runs-dir``, ``--workers``, ``--out``, ``--plugin``,
``--set``, ``--data-dir``, ``--device``); study commands are generated from the study registry.
Bad input exits with code 2 and a one-line ``error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from prunelab import commands
from prunelab.errors import PrunelabError

app = typer.Typer(
    help="prunelab: prune at initialisation, sanity-check, train and report. "
    "Density = kept fraction of prunable weights; sparsity = 1 - density.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from prunelab.cli_options import (  # noqa: E402
    ADDRESS,
    BACKEND,
    DATA_DIR,
    DEVICE,
    FORCE,
    GPUS_PER_RUN,
    HELP,
    MODEL_OPTION,
    PACK,
    PLUGIN,
    REPORT_OUT,
    RUNS_DIR,
    SET,
    THREADS,
    WORKERS,
    add_study_commands,
)


@app.command()
def methods(plugin: list[str] = PLUGIN) -> None:
    """List pruning methods, allocations, sanity checks, structured methods, models, datasets, studies."""
    from prunelab.plugins import load_plugins

    load_plugins(plugin or [])
    commands.list_methods(typer.echo)


@app.command("prune")
def prune_cmd(
    method: str = typer.Option(..., "--method", help="Pruning method (see `prunelab methods`)."),
    density: float = typer.Option(..., "--density", help="Kept fraction of prunable weights, in (0, 1]."),
    out: Path = typer.Option(..., "--out", help="Where to write the mask (.safetensors)."),
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    allocation: str = typer.Option(None, "--allocation", help="Allocation (default: the method's)."),
    check: str = typer.Option(None, "--check", help="Sanity check(s), comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Run seed."),
    model_option: list[str] = MODEL_OPTION,
    set_: list[str] = SET,
    plugin: list[str] = PLUGIN,
    data_dir: Path = DATA_DIR,
) -> None:
    """Compute a mask at initialisation and save it; prints the per-layer table."""
    from prunelab.plugins import load_plugins

    load_plugins(plugin or [])
    pruning = {
        "method": method,
        "density": density,
        "allocation": allocation,
        "checks": commands.split_names(check),
    }
    payload = commands.run_payload(
        dataset=dataset, model=model, seed=seed, model_options=model_option, pruning=pruning
    )
    commands.prune_to_file(commands.apply_sets(payload, set_), out, data_dir, typer.echo)


@app.command("train")
def train_cmd(
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    method: str = typer.Option(None, "--method", help="Pruning method (omit: dense)."),
    density: float = typer.Option(
        None, "--density", help="Kept fraction of prunable weights (with --method)."
    ),
    allocation: str = typer.Option(None, "--allocation", help="Allocation (default: the method's)."),
    check: str = typer.Option(None, "--check", help="Sanity check(s), comma-separated."),
    rounds: int = typer.Option(None, "--rounds", help="IMP rounds for trained-weights methods."),
    keep: str = typer.Option(
        None, "--keep", help="Rewind kept weights to this trunk epoch (0 = init) or 'end'."
    ),
    retrain: str = typer.Option(None, "--retrain", help="After pruning: restart, continue or finetune."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (default: the dataset preset's)."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate."),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size."),
    seed: int = typer.Option(0, "--seed", help="Run seed."),
    nproc: int = typer.Option(
        None,
        "--nproc",
        min=1,
        help="Train in N processes with DistributedDataParallel (sets train.nproc; gloo on CPU, "
        "one GPU each with nccl): --batch-size stays the global batch and must be divisible by N. "
        "Under torchrun it defaults to the world size (leave it out there: torchrun's parser takes it).",
    ),
    model_option: list[str] = MODEL_OPTION,
    set_: list[str] = SET,
    plugin: list[str] = PLUGIN,
    force: bool = FORCE,
    threads: int = THREADS,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Train one (optionally pruned) model as a stored run; a finished run is reused, a killed one
    resumes. Trained-weights methods first train (or reuse) the dense trunk and earlier IMP rounds.
    With --nproc N the run trains in N processes (its own run: the hash includes nproc)."""
    from prunelab.plugins import load_plugins
    from prunelab.spec import RunSpec, parse_model

    load_plugins(plugin or [])
    if (method is None) != (density is None):
        raise PrunelabError("--method and --density go together (omit both for a dense run)")
    ticket = commands.ticket_fields(rounds, keep, retrain)
    if method is None and ticket is not None:
        raise PrunelabError("--rounds, --keep and --retrain need --method and --density")
    pruning = None
    if method is not None:
        pruning = {
            "method": method,
            "density": density,
            "allocation": allocation,
            "checks": commands.split_names(check),
            "ticket": ticket,
        }
    from prunelab.training.distributed import torchrun_world_size, under_torchrun

    payload = commands.run_payload(
        dataset=dataset,
        model=model,
        seed=seed,
        model_options=model_option,
        pruning=pruning,
        train={
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "nproc": nproc if nproc is not None else torchrun_world_size(),
        },
    )
    spec = parse_model(RunSpec, commands.apply_sets(payload, set_), "run")
    # Launched by torchrun: rank 0 runs the command, the other ranks follow its trainings.
    under_torchrun(
        lambda: commands.run_one(spec, runs_dir, data_dir, device, force, typer.echo, threads),
        spec.train.nproc,
        device,
    )


@app.command("run")
def run_cmd(
    spec_file: Path = typer.Argument(
        ...,
        help="YAML spec: one run (`run: training|structured` optional, "
        "then the spec's fields) or a study (`study: KIND` plus its fields).",
    ),
    set_: list[str] = SET,
    plugin: list[str] = PLUGIN,
    force: bool = FORCE,
    workers: int = WORKERS,
    threads: int = THREADS,
    out: Path = REPORT_OUT,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
    backend: str = BACKEND,
    address: str = ADDRESS,
    gpus_per_run: float = GPUS_PER_RUN,
    pack: str = PACK,
) -> None:
    """Run a spec file: a single run, or a whole study followed by its report."""
    where = commands.Execution(
        runs_dir,
        out,
        workers,
        data_dir,
        device,
        force,
        tuple(plugin or []),
        threads,
        backend=backend,
        address=address,
        gpus_per_run=gpus_per_run,
        pack=pack,
    )
    commands.run_spec_file(spec_file, set_ or [], where, typer.echo)


@app.command()
def evaluate(
    study: str = typer.Option(None, "--study", help="Evaluate every finished run of this study (its name)."),
    run: list[str] = typer.Option(None, "--run", help="A run to evaluate (name or hash; repeatable)."),
    metrics: str = typer.Option(
        "all", "--metrics", help="Comma-separated: calibration, ood, adversarial, shift, or all."
    ),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="Set an evaluation field: path=value, e.g. epsilons=[0,0.1], ood=[svhn], pgd_steps=20.",
    ),
    plugin: list[str] = PLUGIN,
    force: bool = FORCE,
    workers: int = WORKERS,
    threads: int = THREADS,
    out: Path = REPORT_OUT,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
    backend: str = BACKEND,
    address: str = ADDRESS,
    gpus_per_run: float = GPUS_PER_RUN,
) -> None:
    """Measure calibration, OOD detection, adversarial and shift robustness of finished runs (each
    evaluation is stored beside its run and computed once), then write a report."""
    where = commands.Execution(
        runs_dir,
        out,
        workers,
        data_dir,
        device,
        force,
        tuple(plugin or []),
        threads,
        backend=backend,
        address=address,
        gpus_per_run=gpus_per_run,
    )
    commands.evaluate_command(study, run or [], commands.split_names(metrics), set_ or [], where, typer.echo)


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A runs directory or a report folder (holding study.json)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Runs directory (default: from study.json)."),
    plugin: list[str] = PLUGIN,
) -> None:
    """Rebuild the report(s) of studies under DIRECTORY from the stored runs (no training)."""
    commands.rebuild_reports(directory, runs_dir, plugin or [], typer.echo)


@app.command()
def runs(
    runs_dir: Path = RUNS_DIR,
    study: str = typer.Option(None, "--study", help="Only runs of this study (its name)."),
    method: str = typer.Option(None, "--method", help="Only runs of this method ('dense' for unpruned)."),
    status: str = typer.Option(None, "--status", help="Only runs with this status (running, done, ...)."),
    sort: str = typer.Option("updated", "--sort", help="Column to sort by (e.g. final_test_acc, name)."),
    ascending: bool = typer.Option(False, "--ascending", help="Sort ascending (default descending)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    output: Path = typer.Option(None, "--output", help="Write to this file (default: stdout)."),
    verify: bool = typer.Option(
        False, "--verify", help="Check finished runs' files against their checksums."
    ),
) -> None:
    """List stored runs with their spec fields and results; filter, sort, export CSV or JSON."""
    from prunelab.browse import run_rows, write_rows

    rows = run_rows(
        runs_dir,
        study=study,
        method=method,
        status=status,
        sort=sort,
        descending=not ascending,
        verify=verify,
    )
    write_rows(rows, fmt, output if output is not None else sys.stdout)
    if output is not None:
        typer.echo(f"{len(rows)} runs written to {output}")
    elif fmt == "table":
        typer.echo(f"{len(rows)} runs in {runs_dir}")
    damaged = [row for row in rows if row.get("verified") not in (None, "ok")]
    for row in damaged:
        typer.echo(f"FAILED verification: {row['name']}: {row['verified']}", err=True)
    if damaged:
        raise typer.Exit(1)


@app.command()
def demo(
    runs_dir: Path = typer.Option(Path("demo-out/runs"), "--runs-dir", help=HELP["runs_dir"]),
    out: Path = typer.Option(Path("demo-out/report"), "--out", help="Report folder."),
    workers: int = WORKERS,
    data_dir: Path = DATA_DIR,
    plugin: list[str] = PLUGIN,
    pack: str = PACK,
) -> None:
    """The sanity-check study of SNIP, GraSP, SynFlow and magnitude-at-init on MNIST-1D (3 seeds, 2 densities)."""
    where = commands.Execution(runs_dir, out, workers, data_dir, plugins=tuple(plugin or []), pack=pack)
    commands.run_study_command("sanity", "demo", {}, [], where, typer.echo)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; user errors become one line on stderr and exit code 2.

    Usage errors (unknown option, a value of the wrong type, a missing argument) get the same one
    line and code 2.
    """
    try:
        add_study_commands(app)
        result = app(args=argv, prog_name="prunelab", standalone_mode=False)
    except PrunelabError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:  # an unwritable --out or runs dir, a full disk: one line, nothing lost
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted; finished epochs are saved and the run resumes next time", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        # Usage errors of the parser (unknown option, `--density abc`): one line, exit 2, no box.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            command = getattr(getattr(exc, "ctx", None), "command_path", "prunelab")
            typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
            return int(exc.exit_code)
        if type(exc).__name__ == "Abort":
            typer.echo("aborted", err=True)
            return 1
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
