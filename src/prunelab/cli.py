"""The ``prunelab`` command line: each command is a thin shell over the Python API.

Bad input exits with code 2 and a one-line ``error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from prunelab.errors import PrunelabError

app = typer.Typer(
    help="prunelab: prune at initialisation, sanity-check, train and report. "
    "Density = kept fraction of prunable weights; sparsity = 1 - density.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RUNS_DIR = typer.Option(
    Path("runs"), "--runs-dir", help="Directory of run directories and their SQLite index."
)
DATA_DIR = typer.Option(
    None, "--data-dir", help="Dataset cache (default: $PRUNELAB_DATA_DIR or ~/.cache/prunelab/data)."
)
DEVICE = typer.Option("cpu", "--device", help="cpu, cuda or auto.")


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in _split(text)]
    except ValueError:
        raise PrunelabError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _options(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """``["width=32", "hidden=[64,64]"]`` -> ``{"width": 32, "hidden": [64, 64]}`` (YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise PrunelabError(f"{what} must look like key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _train_config(dataset: str, **overrides: Any) -> Any:
    from prunelab.presets import preset_for
    from prunelab.spec import parse_model
    from prunelab.training.config import TrainConfig

    base = preset_for(dataset).train.model_dump()
    base.update({k: v for k, v in overrides.items() if v is not None})
    return parse_model(TrainConfig, base, "training options")


@app.command()
def methods() -> None:
    """List pruning methods, allocations (layer-wise ratios), sanity checks, models and datasets."""
    from prunelab.data import DATASETS
    from prunelab.models import MODELS
    from prunelab.pruning import ALLOCATIONS, CHECKS, METHODS

    typer.echo("Methods (score x default allocation):")
    for name, m in METHODS.items():
        data = "data" if m.needs_data else "data-free"
        when = (
            "at init" if m.ticket is None else f"trained, keep {m.ticket['keep']}, lr {m.ticket['retrain']}"
        )
        typer.echo(f"  {name:<16} {m.allocation:<12} {data:<9} {when:<32} {m.description}  [{m.paper}]")
    typer.echo("\nAllocations (per-layer keep counts):")
    for name, a in ALLOCATIONS.items():
        typer.echo(f"  {name:<12} {a.description}  [{a.paper}]")
    typer.echo("  like:FILE    the per-layer counts of a saved mask")
    typer.echo("\nSanity checks:")
    for name, c in CHECKS.items():
        typer.echo(f"  {name:<16} ({c.stage}) {c.description}")
    typer.echo("\nModels:")
    for name, e in MODELS.items():
        typer.echo(f"  {name:<10} {e.family:<7} {e.description}")
    typer.echo("\nDatasets:")
    for name, d in DATASETS.items():
        typer.echo(f"  {name:<10} {'embedded' if d.embedded else 'download':<9} {d.description}")


@app.command("prune")
def prune_cmd(
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    method: str = typer.Option(..., "--method", help="Pruning method (see `prunelab methods`)."),
    density: float = typer.Option(..., "--density", help="Kept fraction of prunable weights, in (0, 1]."),
    allocation: str = typer.Option(None, "--allocation", help="Allocation (default: the method's)."),
    check: str = typer.Option(None, "--check", help="Sanity check(s), comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Run seed."),
    out: Path = typer.Option(..., "--out", help="Where to write the mask (.safetensors)."),
    model_option: list[str] = typer.Option(
        None, "--model-option", help="Model option key=value (repeatable)."
    ),
    data_dir: Path = DATA_DIR,
) -> None:
    """Compute a mask at initialisation and save it; prints the per-layer table."""
    import prunelab
    from prunelab.presets import preset_for
    from prunelab.seeding import derive_seed

    data = prunelab.load_dataset(dataset, data_dir=data_dir)
    name = model or preset_for(dataset).model
    net = prunelab.build_model(
        name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(seed, "init"),
        **_options(model_option, "--model-option"),
    )
    mask = prunelab.prune(net, method, density, data=data, allocation=allocation, check=check, seed=seed)
    mask.save(out, {"model": name, "dataset": dataset, "method": method, "density": density, "seed": seed})
    typer.echo(f"{'layer':<40} {'shape':<20} {'kept':>9} {'total':>9} {'density':>8}")
    for row in mask.per_layer():
        typer.echo(f"{row.name:<40} {str(row.shape):<20} {row.kept:>9} {row.total:>9} {row.density:>8.4f}")
    typer.echo(
        f"density {mask.density():.4f} of prunable weights ({mask.model_density(net):.4f} of all "
        f"parameters); mask written to {out}"
    )


@app.command("train")
def train_cmd(
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    method: str = typer.Option(None, "--method", help="Prune at init with this method (omit: dense)."),
    density: float = typer.Option(
        None, "--density", help="Kept fraction of prunable weights (with --method)."
    ),
    allocation: str = typer.Option(None, "--allocation", help="Allocation (default: the method's)."),
    check: str = typer.Option(None, "--check", help="Sanity check(s), comma-separated."),
    rounds: int = typer.Option(
        None, "--rounds", help="IMP rounds for trained-weights methods (lottery, lr_rewinding, ...)."
    ),
    keep: str = typer.Option(
        None, "--keep", help="Rewind kept weights to this trunk epoch (0 = init) or 'end' (trained)."
    ),
    retrain: str = typer.Option(None, "--retrain", help="After pruning: restart, continue or finetune."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (default: the dataset preset's)."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate."),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size."),
    seed: int = typer.Option(0, "--seed", help="Run seed."),
    model_option: list[str] = typer.Option(
        None, "--model-option", help="Model option key=value (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run finished before."),
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Train one (optionally pruned) model as a stored run; a finished run is reused, a killed one resumes.

    Trained-weights methods (lottery, weight_rewinding, lr_rewinding, finetune, hybrid) first train
    (or reuse) the dense trunk and any earlier IMP rounds."""
    from prunelab.presets import preset_for
    from prunelab.spec import RunSpec, parse_model

    if (method is None) != (density is None):
        raise PrunelabError("--method and --density go together (omit both for a dense run)")
    payload: dict[str, Any] = {
        "data": {"name": dataset},
        "model": {
            "name": model or preset_for(dataset).model,
            "options": _options(model_option, "--model-option"),
        },
        "train": _train_config(dataset, epochs=epochs, lr=lr, batch_size=batch_size).model_dump(),
        "seed": seed,
    }
    if method is not None:
        payload["pruning"] = {
            "method": method,
            "density": density,
            "allocation": allocation,
            "checks": _split(check),
        }
        ticket: dict[str, Any] = {}
        if rounds is not None:
            ticket["rounds"] = rounds
        if keep is not None:
            ticket["keep"] = int(keep) if keep.strip().isdigit() else keep.strip()
        if retrain is not None:
            ticket["retrain"] = retrain
        if ticket:
            payload["pruning"]["ticket"] = ticket
    elif rounds is not None or keep is not None or retrain is not None:
        raise PrunelabError("--rounds, --keep and --retrain need --method and --density")
    _run_one(parse_model(RunSpec, payload, "run"), runs_dir, data_dir, device, force)


def _run_one(spec: Any, runs_dir: Path, data_dir: Path | None, device: str, force: bool) -> None:
    from tqdm import tqdm

    from prunelab.run import execute_run
    from prunelab.store import RunStore

    store = RunStore(runs_dir)
    if store.is_done(spec) and not force:
        typer.echo(f"already finished (use --force to recompute): {store.run_dir(spec)}")
        result = store.result(spec) or {}
    else:
        with tqdm(
            total=spec.train.epochs, desc=spec.run_name()[:40], unit="epoch", dynamic_ncols=True
        ) as bar:

            def step(done: int, total: int) -> None:
                bar.n = done
                bar.refresh()

            result = execute_run(spec, store, data_dir=data_dir, device=device, force=force, progress=step)
    acc = result.get("final_test_acc")
    typer.echo(
        f"run {spec.run_name()}: final test accuracy {100 * acc:.2f}%, density {result.get('density'):.4f}"
        if acc is not None
        else f"run {spec.run_name()}: {result.get('status')}"
    )
    typer.echo(f"run directory: {store.run_dir(spec)}")


@app.command("run")
def run_cmd(
    spec_file: Path = typer.Argument(
        ...,
        help="YAML spec: a run (data/model/pruning/train/seed) or a study "
        "(`study: sanity|tickets|lottery` plus the study's fields).",
    ),
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
    workers: int = typer.Option(1, "--workers", help="Parallel worker processes for studies."),
    force: bool = typer.Option(False, "--force", help="Recompute finished runs."),
) -> None:
    """Run a spec file: a single run, or a whole study followed by its report."""
    from prunelab.spec import RunSpec, load_yaml, parse_model
    from prunelab.studies import SanityStudy, run_sanity_study

    payload = load_yaml(spec_file)
    if not isinstance(payload, dict):
        raise PrunelabError(f"spec file {str(spec_file)!r} must hold a mapping, got {type(payload).__name__}")
    kind = payload.pop("study", None)
    if kind is None:
        _run_one(parse_model(RunSpec, payload, f"run spec {spec_file}"), runs_dir, data_dir, device, force)
        return
    if kind == "lottery":
        from prunelab.studies.lottery import LotteryStudy, run_lottery_study

        lottery = parse_model(LotteryStudy, payload, f"study spec {spec_file}")
        _, html = run_lottery_study(
            lottery, runs_dir, workers=workers, data_dir=data_dir, device=device, force=force
        )
        typer.echo(f"report: {html}")
        return
    if kind not in ("sanity", "tickets"):
        raise PrunelabError(f"unknown study {kind!r}; valid choices: sanity, tickets, lottery")
    study = parse_model(SanityStudy, payload, f"study spec {spec_file}")
    summary, report = run_sanity_study(
        study, runs_dir, workers=workers, data_dir=data_dir, device=device, force=force
    )
    typer.echo(f"report: {report}")


@app.command()
def sanity(
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    methods: str = typer.Option(
        "snip,grasp,synflow,magnitude", "--methods", help="Methods, comma-separated."
    ),
    densities: str = typer.Option(
        "0.2,0.05", "--densities", help="Densities (kept fractions), comma-separated."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1)."),
    checks: str = typer.Option(
        ",".join(["random_labels", "random_pixels", "shuffle_mask", "shuffle_weights", "reinit", "invert"]),
        "--checks",
        help="Sanity checks, comma-separated.",
    ),
    tickets: str = typer.Option(
        "uniform,erk,smart_ratio", "--random-tickets", help="Allocations of the random-ticket baselines."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per run (default: the dataset preset's)."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate."),
    name: str = typer.Option(None, "--name", help="Study name (names the report folder)."),
    workers: int = typer.Option(2, "--workers", help="Parallel worker processes."),
    plugin: list[str] = typer.Option(None, "--plugin", help="Module or .py file registering user methods."),
    force: bool = typer.Option(False, "--force", help="Recompute finished runs."),
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Run the sanity-check study (methods x checks x densities x seeds + random tickets + dense) and report."""
    from prunelab.presets import preset_for
    from prunelab.runners import load_plugins
    from prunelab.spec import parse_model
    from prunelab.studies import SanityStudy, run_sanity_study

    load_plugins(plugin or [])
    if seeds < 1:
        raise PrunelabError(f"--seeds must be at least 1, got {seeds}")
    model_name = model or preset_for(dataset).model
    study = parse_model(
        SanityStudy,
        {
            "name": name or f"sanity-{dataset}-{model_name}",
            "data": {"name": dataset},
            "model": {"name": model_name},
            "train": _train_config(dataset, epochs=epochs, lr=lr).model_dump(),
            "methods": _split(methods),
            "densities": _floats(densities, "--densities"),
            "seeds": list(range(seeds)),
            "checks": _split(checks),
            "random_tickets": _split(tickets),
        },
        "study options",
    )
    _, report = run_sanity_study(
        study, runs_dir, workers=workers, data_dir=data_dir, device=device, force=force, plugins=plugin or []
    )
    typer.echo(f"report: {report}")


@app.command()
def tickets(
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    methods: str = typer.Option(
        "snip,grasp,lottery,lr_rewinding,weight_rewinding,hybrid", "--methods", help="Ticket methods."
    ),
    densities: str = typer.Option("0.2,0.05", "--densities", help="Densities (kept fractions)."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1)."),
    checks: str = typer.Option("random_labels,shuffle_mask,reinit", "--checks", help="Sanity checks."),
    imp_fraction: float = typer.Option(
        None,
        "--imp-fraction",
        help="Reach each density by IMP at this per-round fraction (default one-shot).",
    ),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per run (default: the dataset preset's)."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate."),
    name: str = typer.Option(None, "--name", help="Study name (names the report folder)."),
    workers: int = typer.Option(2, "--workers", help="Parallel worker processes."),
    force: bool = typer.Option(False, "--force", help="Recompute finished runs."),
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Su et al.'s ticket study: initial, partially-trained, hybrid and random tickets under the checks."""
    from prunelab.studies import run_sanity_study
    from prunelab.studies.tickets import tickets_study

    if seeds < 1:
        raise PrunelabError(f"--seeds must be at least 1, got {seeds}")
    study = _build_study(
        lambda: tickets_study(
            dataset,
            model,
            methods=_split(methods),
            checks=_split(checks),
            densities=_floats(densities, "--densities"),
            seeds=range(seeds),
            train=_train_config(dataset, epochs=epochs, lr=lr),
            imp_fraction=imp_fraction,
            name=name,
        )
    )
    _, html = run_sanity_study(
        study, runs_dir, workers=workers, data_dir=data_dir, device=device, force=force
    )
    typer.echo(f"report: {html}")


@app.command()
def lottery(
    dataset: str = typer.Option("mnist1d", "--dataset", help="Dataset name."),
    model: str = typer.Option(None, "--model", help="Model name (default: the dataset's preset)."),
    lrs: str = typer.Option("0.1,0.01", "--lrs", help="The large and the small initial learning rate."),
    levels: int = typer.Option(8, "--levels", help="IMP levels 1..N."),
    imp_fraction: float = typer.Option(
        0.2, "--imp-fraction", help="Fraction of remaining weights pruned per round."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per run (default: the dataset preset's)."),
    name: str = typer.Option(None, "--name", help="Study name (names the report folder)."),
    workers: int = typer.Option(2, "--workers", help="Parallel worker processes."),
    force: bool = typer.Option(False, "--force", help="Recompute finished runs."),
    runs_dir: Path = RUNS_DIR,
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Liu et al. 2019: winning-ticket init vs random re-init over IMP levels, at a large and a small lr."""
    from prunelab.presets import preset_for
    from prunelab.spec import parse_model
    from prunelab.studies.lottery import LotteryStudy, run_lottery_study

    if seeds < 1 or levels < 1:
        raise PrunelabError(f"--seeds and --levels must be at least 1, got {seeds} and {levels}")
    model_name = model or preset_for(dataset).model
    study = parse_model(
        LotteryStudy,
        {
            "name": name or f"lottery-{dataset}-{model_name}",
            "data": {"name": dataset},
            "model": {"name": model_name},
            "train": _train_config(dataset, epochs=epochs).model_dump(),
            "learning_rates": _floats(lrs, "--lrs"),
            "levels": list(range(1, levels + 1)),
            "imp_fraction": imp_fraction,
            "seeds": list(range(seeds)),
        },
        "study options",
    )
    _, html = run_lottery_study(
        study, runs_dir, workers=workers, data_dir=data_dir, device=device, force=force
    )
    typer.echo(f"report: {html}")


def _build_study(make: Any) -> Any:
    """Build a study, turning validation errors into one-line PrunelabErrors."""
    from pydantic import ValidationError

    from prunelab.spec import format_validation_error

    try:
        return make()
    except ValidationError as exc:
        raise PrunelabError(f"invalid study options: {format_validation_error(exc)}") from None


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A runs directory or a report folder (holding study.json)."),
    runs_dir: Path = typer.Option(None, "--runs-dir", help="Runs directory (default: inferred)."),
) -> None:
    """Rebuild the report(s) of studies under DIRECTORY from the stored runs (no training)."""
    from prunelab.studies import rebuild_report

    if not directory.exists():
        raise PrunelabError(f"directory {str(directory)!r} does not exist")
    found = sorted(directory.glob("study.json")) + sorted(directory.glob("reports/*/study.json"))
    if not found:
        raise PrunelabError(
            f"no study.json under {str(directory)!r}; pass a runs directory or a report folder"
        )
    for path in found:
        typer.echo(f"report: {rebuild_report(path.parent, runs_dir)}")


@app.command()
def runs(runs_dir: Path = RUNS_DIR) -> None:
    """List stored runs: status, epochs, final test accuracy, density."""
    from prunelab.store import INDEX_NAME, RunStore

    if not (runs_dir / INDEX_NAME).is_file():
        raise PrunelabError(f"no run index in {str(runs_dir)!r}; train something first or pass --runs-dir")
    rows = RunStore(runs_dir).list_runs()
    typer.echo(f"{'status':<8} {'epochs':>6} {'test acc':>8} {'density':>8}  name")
    for row in rows:
        acc = f"{100 * row['final_test_acc']:.2f}" if row["final_test_acc"] is not None else "-"
        typer.echo(
            f"{row['status']:<8} {row['epochs_done']:>6} {acc:>8} {row['density']:>8.4f}  {row['name']}"
        )
    typer.echo(f"{len(rows)} runs in {runs_dir}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Where runs and the report go."),
    workers: int = typer.Option(2, "--workers", help="Parallel worker processes."),
    data_dir: Path = DATA_DIR,
) -> None:
    """The sanity-check study of SNIP, GraSP, SynFlow and magnitude-at-init on MNIST-1D (3 seeds, 2 densities)."""
    import time

    from prunelab.studies import run_sanity_study
    from prunelab.studies.demo import demo_study

    began = time.perf_counter()
    summary, report_path = run_sanity_study(
        demo_study(), out / "runs", report_dir=out / "report", workers=workers, data_dir=data_dir
    )
    typer.echo(f"finished in {time.perf_counter() - began:.0f} s")
    typer.echo(f"report: {report_path.resolve()}")
    typer.echo(f"        {(report_path.parent / 'report.md').resolve()}")


# -- rethinking (Liu et al. 2019): fine-tune vs Scratch-E vs Scratch-B per structured method --------
@app.command()
def rethinking(
    preset: str = typer.Option(
        "small",
        "--preset",
        help="small: embedded data (MNIST-1D cnn1d+BN), 30 epochs, 3 seeds, minutes on a CPU; "
        "paper: CIFAR-10 VGG-16, the paper's 160-epoch recipe, 5 seeds.",
    ),
    data: str = typer.Option(
        None, "--dataset", "--data", help="Dataset (mnist1d, digits, cifar10, cifar100, ...)."
    ),
    model: str = typer.Option(None, "--model", help="Large model (default follows the dataset)."),
    methods: str = typer.Option(
        None, "--methods", help="Structured methods, comma-separated (default: all that fit the model)."
    ),
    method_option: list[str] = typer.Option(
        None, "--method-option", help="METHOD.key=value (repeatable), e.g. slimming.percent=0.6."
    ),
    model_option: list[str] = typer.Option(
        None, "--model-option", help="Model option key=value (repeatable)."
    ),
    seeds: int = typer.Option(None, "--seeds", help="Number of seeds 0..N-1 (small: 3, paper: 5)."),
    epochs: int = typer.Option(
        None,
        "--epochs",
        help="Large-model (= Scratch-E) epochs; fine-tune a quarter, Scratch-B scaled by FLOPs.",
    ),
    name: str = typer.Option(None, "--name", help="Study name (names the report folder)."),
    out: Path = typer.Option(
        Path("rethinking-out"), "--out", help="Runs go to OUT/runs, the report to OUT/report."
    ),
    jobs: int = typer.Option(
        2, "--workers", "--jobs", help="Parallel worker processes (CUDA runs stay inline)."
    ),
    data_dir: Path = DATA_DIR,
    device: str = DEVICE,
) -> None:
    """Rethinking the value of pruning: per method, fine-tuned vs Scratch-E vs Scratch-B accuracy,
    params, FLOPs and measured latency; stored runs resume and are never recomputed."""
    import time

    from prunelab.run import resolve_device
    from prunelab.studies.rethinking import rethinking_preset, run_rethinking_study

    resolve_device(device)  # a bad device is a one-line error before anything trains
    if jobs < 1:
        raise PrunelabError(f"--workers must be at least 1, got {jobs}")
    per_method: dict[str, dict[str, Any]] = {}
    for pair in method_option or []:
        key, sep, value = pair.partition("=")
        if "." not in key or not sep:
            raise PrunelabError(f"--method-option must look like METHOD.key=value, got {pair!r}")
        method_name, option = key.split(".", 1)
        per_method.setdefault(method_name.strip().lower(), {}).update(
            _options([f"{option}={value}"], "--method-option")
        )
    study = rethinking_preset(
        preset,
        data=data,
        model=model,
        model_options=_options(model_option, "--model-option") or None,
        methods=_split(methods) or None,
        method_options=per_method,
        seeds=seeds,
        epochs=epochs,
        name=name,
    )
    began = time.perf_counter()
    summary, report_path = run_rethinking_study(
        study, out / "runs", report_dir=out / "report", jobs=jobs, data_dir=data_dir, device=device
    )
    typer.echo(f"finished in {time.perf_counter() - began:.0f} s")
    for row in summary.methods:
        for c in row.comparisons:
            typer.echo(f"  {row.method:<28} {c.protocol:<10} {c.conclusion} (p = {c.test.p_value:.3g})")
    typer.echo(f"report: {report_path.resolve()}")
    typer.echo(f"        {(report_path.parent / 'report.md').resolve()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; user errors become one line on stderr and exit code 2.

    Usage errors (unknown option, missing argument) are reported by typer itself, also with code 2.
    """
    try:
        app(args=argv, prog_name="prunelab")
    except PrunelabError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted; finished epochs are saved and the run resumes next time", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
