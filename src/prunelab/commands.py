"""What the CLI's commands do, kept out of :mod:`prunelab.cli` (a thin shell of flags).

Every spec field is reachable in one uniform way: ``--set path=value`` (repeatable; the value is
parsed as YAML, the path walks the spec's nested fields, e.g. ``train.momentum=0.95``,
``model.options.width=64``, ``pruning.ticket.keep=2``), validated with the same one-line errors as a
YAML spec file. Study commands are generated from the study registry (:mod:`prunelab.studies`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunelab.errors import PrunelabError

Echo = Callable[[str], None]


def split_names(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_floats(text: str, what: str) -> list[float]:
    """Comma-separated numbers, or a one-line error naming ``what``."""
    try:
        return [float(x) for x in split_names(text)]
    except ValueError:
        raise PrunelabError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_pairs(pairs: Sequence[str] | None, what: str) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[("a.b", 1), ("c", [1, 2])]`` (values parsed as YAML)."""
    import yaml

    out: list[tuple[str, Any]] = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PrunelabError(f"{what} must look like key=value, got {pair!r}")
        try:
            out.append((key.strip(), yaml.safe_load(value)))
        except yaml.YAMLError:
            raise PrunelabError(f"{what} {pair!r}: the value is not valid YAML") from None
    return out


#: The key a bare string stands for when ``--set`` reaches inside it (``train: random_pruning`` is a recipe).
_NAME_KEYS = {"train": "recipe"}


def apply_sets(payload: dict[str, Any], sets: Sequence[str] | None) -> dict[str, Any]:
    """Apply ``--set path=value`` overrides to a spec payload, in place; returns it.

    Missing intermediate mappings are created (pydantic then rejects unknown fields with a one-line
    error naming the path); an integer path segment indexes a list (``methods.0.options.ratio=0.3``).
    """
    for path, value in parse_pairs(sets, "--set"):
        node: Any = payload
        parts = path.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise PrunelabError(f"--set {path}: {part!r} is not an index of a list of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise PrunelabError(f"--set {path}: {'.'.join(parts[:i])!r} is a value, not a mapping")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                if isinstance(node[part], str):  # a bare name becomes {name: ...} ({recipe: ...} for train)
                    node[part] = {_NAME_KEYS.get(part, "name"): node[part]}
                node = node[part]
    return payload


def run_payload(
    *,
    dataset: str,
    model: str | None,
    seed: int,
    model_options: Sequence[str] | None = None,
    train: Mapping[str, Any] | None = None,
    pruning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A :class:`~prunelab.spec.RunSpec` payload from the common flags and the dataset's preset."""
    from prunelab.presets import preset_for

    preset = preset_for(dataset)
    recipe = preset.train.model_dump()
    recipe.update({k: v for k, v in (train or {}).items() if v is not None})
    payload: dict[str, Any] = {
        "data": {"name": dataset},
        "model": {
            "name": model or preset.model,
            "options": dict(parse_pairs(model_options, "--model-option")),
        },
        "train": recipe,
        "seed": seed,
    }
    if pruning is not None:
        payload["pruning"] = {k: v for k, v in pruning.items() if v is not None}
    return payload


def ticket_fields(rounds: int | None, keep: str | None, retrain: str | None) -> dict[str, Any] | None:
    """The ``ticket`` block from ``--rounds/--keep/--retrain`` (None when none is given)."""
    ticket: dict[str, Any] = {}
    if rounds is not None:
        ticket["rounds"] = rounds
    if keep is not None:
        ticket["keep"] = int(keep) if keep.strip().isdigit() else keep.strip()
    if retrain is not None:
        ticket["retrain"] = retrain
    return ticket or None


def run_one(
    spec: Any,
    runs_dir: Path,
    data_dir: Path | None,
    device: str,
    force: bool,
    echo: Echo,
    threads: int = 1,
    *,
    backend: str = "local",
    address: str | None = None,
    plugins: Sequence[str] = (),
    gpus_per_run: float = 1.0,
) -> dict[str, Any]:
    """Execute one run spec of any kind with an epoch progress bar; prints its accuracy and folder.
    With ``backend="ray"`` the run (and its unfinished parents) are Ray tasks, with a run bar."""
    from tqdm import tqdm

    from prunelab.runners import check_backend, run_specs
    from prunelab.runs import RunContext, execute, executor_for, resolve_device, validate_all
    from prunelab.store import RunStore

    check_backend(backend, address, gpus_per_run)
    if backend == "local" or not device.startswith(("cuda", "auto")):  # a cluster's GPUs are not ours
        resolve_device(device)
    validate_all([spec], RunContext(data_dir, device, threads=threads))  # before any bar or file
    store = RunStore(runs_dir)
    done = None if force else executor_for(spec).finished(spec, store, {})
    if done is None and backend != "local":
        (result,) = run_specs(
            [spec],
            runs_dir,
            data_dir=data_dir,
            device=device,
            force=force,
            plugins=plugins,
            description=spec.run_name()[:40],
            threads=threads,
            backend=backend,
            address=address,
            gpus_per_run=gpus_per_run,
        )
    elif done is not None:
        echo(f"already finished (use --force to recompute): {store.run_dir(spec)}")
        result = done
    else:
        bars: list[Any] = []  # made at the first epoch, so an early error prints nothing else

        def step(epochs_done: int, total: int) -> None:
            if not bars:
                bars.append(tqdm(desc=spec.run_name()[:40], unit="epoch", dynamic_ncols=True, total=total))
            bars[0].total, bars[0].n = total, epochs_done
            bars[0].refresh()

        try:
            result = execute(spec, store, RunContext(data_dir, device, step, threads=threads), force=force)
        finally:
            for bar in bars:
                bar.close()
    acc = result.get("final_test_acc")
    density = result.get("density")
    echo(
        f"run {spec.run_name()}: final test accuracy {100 * acc:.2f}%"
        + (f", density {density:.4f}" if density is not None else "")
        if acc is not None
        else f"run {spec.run_name()}: {result.get('status')}"
    )
    echo(f"run directory: {store.run_dir(spec)}")
    return result


def study_values(kind: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """Shortcut flag texts -> typed values per the kind's flag types (None = not given)."""
    out: dict[str, Any] = {}
    for flag in kind.flags:
        text = given.get(flag.name)
        if text is None or text == ():
            continue
        if flag.type == "names":
            out[flag.name] = split_names(text)
        elif flag.type == "floats":
            out[flag.name] = parse_floats(text, f"--{flag.name.replace('_', '-')}")
        elif flag.type == "pairs":
            out[flag.name] = list(text)
        else:
            out[flag.name] = text
    return out


@dataclass(frozen=True)
class Execution:
    """Where and how a command runs its specs (never what they compute): the common flags."""

    runs_dir: Path
    out: Path | None = None
    workers: int = 1
    data_dir: Path | None = None
    device: str = "cpu"
    force: bool = False
    plugins: tuple[str, ...] = ()
    threads: int = 1
    backend: str = "local"
    address: str | None = None
    gpus_per_run: float = 1.0
    pack: int | str = 1


def _run_study(kind: Any, study: Any, where: Execution, echo: Echo) -> Path:
    """Run a validated study, then print the time, its conclusions and the report's paths."""
    import time

    from prunelab.runners import check_backend
    from prunelab.runs import resolve_device
    from prunelab.studies import run_study

    check_backend(where.backend, where.address, where.gpus_per_run)
    # A bad device is a one-line error before anything trains (a Ray cluster's GPUs are not ours).
    if where.backend == "local" or not where.device.startswith(("cuda", "auto")):
        resolve_device(where.device)
    if where.workers < 1:
        raise PrunelabError(f"--workers must be at least 1, got {where.workers}")
    began = time.perf_counter()
    summary, report = run_study(
        study,
        where.runs_dir,
        kind=kind.name,
        report_dir=where.out,
        workers=where.workers,
        data_dir=where.data_dir,
        device=where.device,
        force=where.force,
        plugins=where.plugins,
        threads=where.threads,
        backend=where.backend,
        address=where.address,
        gpus_per_run=where.gpus_per_run,
        pack=where.pack,
    )
    echo(f"finished in {time.perf_counter() - began:.0f} s")
    for line in kind.conclusions(summary):
        echo(line)
    echo(f"report: {report.resolve()}")
    echo(f"        {(report.parent / 'report.md').resolve()}")
    return report


def run_study_command(
    kind_name: str,
    preset: str | None,
    given: Mapping[str, Any],
    sets: Sequence[str],
    where: Execution,
    echo: Echo,
) -> Path:
    """A study command: load plugins, build the preset with the shortcut flags, apply ``--set``,
    validate the whole study, run it, print its conclusions and the report's path."""
    from prunelab.plugins import load_plugins
    from prunelab.spec import parse_model
    from prunelab.studies import STUDIES

    load_plugins(where.plugins)
    kind = STUDIES.get(kind_name)
    payload = apply_sets(kind.build(preset, study_values(kind, given)), sets)
    return _run_study(kind, parse_model(kind.spec_type, payload, "study options"), where, echo)


def run_spec_file(path: Path, sets: Sequence[str], where: Execution, echo: Echo) -> None:
    """``prunelab run FILE``: a study (``study: KIND`` plus its fields) or one run (``run: KIND``,
    default ``training``, plus the spec's fields)."""
    from prunelab.plugins import load_plugins
    from prunelab.runs import EXECUTORS
    from prunelab.spec import load_yaml, parse_model
    from prunelab.studies import STUDIES

    load_plugins(where.plugins)
    payload = load_yaml(path)
    if not isinstance(payload, dict):
        raise PrunelabError(f"spec file {str(path)!r} must hold a mapping, got {type(payload).__name__}")
    kind_name = payload.pop("study", None)
    if kind_name is None:
        executor = EXECUTORS.get(str(payload.pop("run", "training")))
        spec = parse_model(executor.spec_type, apply_sets(payload, sets), f"run spec {path}")
        run_one(
            spec,
            where.runs_dir,
            where.data_dir,
            where.device,
            where.force,
            echo,
            where.threads,
            backend=where.backend,
            address=where.address,
            plugins=where.plugins,
            gpus_per_run=where.gpus_per_run,
        )
        return
    kind = STUDIES.get(str(kind_name))
    _run_study(
        kind, parse_model(kind.spec_type, apply_sets(payload, sets), f"study spec {path}"), where, echo
    )


def rebuild_reports(directory: Path, runs_dir: Path | None, plugins: Sequence[str], echo: Echo) -> None:
    """``prunelab report DIR``: rebuild every study report under DIR from its stored runs."""
    import json

    from prunelab.plugins import load_plugins
    from prunelab.studies import STUDY_FILE, rebuild_report

    load_plugins(plugins)
    if not directory.exists():
        raise PrunelabError(f"directory {str(directory)!r} does not exist")
    found = sorted(directory.glob(STUDY_FILE)) + sorted(directory.glob(f"reports/*/{STUDY_FILE}"))
    if not found:
        raise PrunelabError(
            f"no {STUDY_FILE} under {str(directory)!r}; pass a runs directory or a report folder"
        )
    for path in found:
        try:
            echo(f"report: {rebuild_report(path.parent, runs_dir)}")
        except PrunelabError as exc:
            needed = [p for p in _recorded_plugins(path, json) if p not in plugins]
            hint = f" (the study was run with --plugin {' '.join(needed)}; pass it again)" if needed else ""
            raise PrunelabError(f"{exc}{hint}") from None


def _recorded_plugins(path: Path, json: Any) -> list[str]:
    try:
        return [str(p) for p in json.loads(path.read_text()).get("plugins", [])]
    except (OSError, ValueError, AttributeError):
        return []


def list_methods(echo: Echo) -> None:
    """``prunelab methods``: every registry with one line per entry."""
    from prunelab.data import DATASETS
    from prunelab.models import MODELS
    from prunelab.pruning import ALLOCATIONS, CHECKS, METHODS
    from prunelab.pruning.structured import STRUCTURED_METHODS
    from prunelab.studies import STUDIES

    echo("Methods (score x default allocation):")
    for name, m in METHODS.items():
        data = "data" if m.needs_data else "data-free"
        when = (
            "at init" if m.ticket is None else f"trained, keep {m.ticket['keep']}, lr {m.ticket['retrain']}"
        )
        echo(f"  {name:<16} {m.allocation:<12} {data:<9} {when:<32} {m.description}  [{m.paper}]")
    echo("\nAllocations (per-layer keep counts):")
    for name, a in ALLOCATIONS.items():
        echo(f"  {name:<12} {a.description}  [{a.paper}]")
    echo("  like:FILE    the per-layer counts of a saved mask")
    echo("\nSanity checks:")
    for name, c in CHECKS.items():
        echo(f"  {name:<16} ({c.stage}) {c.description}")
    echo("\nStructured methods (Rethinking study):")
    for name, s in STRUCTURED_METHODS.items():
        echo(f"  {name:<16} {s.kind:<8} {s.description[:90]}  [{s.paper}]")
    echo("\nModels:")
    for name, e in MODELS.items():
        echo(f"  {name:<24} {e.family:<7} {e.description}")
    echo("\nDatasets:")
    for name, d in DATASETS.items():
        echo(f"  {name:<16} {'embedded' if d.embedded else 'download':<9} {d.description}")
    echo("\nStudies:")
    for name, k in STUDIES.items():
        echo(f"  {name:<12} {k.description}")


def prune_to_file(payload: dict[str, Any], out: Path, data_dir: Path | None, echo: Echo) -> None:
    """``prunelab prune``: validate the run payload, prune its model at init, save the mask and
    print the per-layer table (densities = kept fractions)."""
    import prunelab
    from prunelab.seeding import derive_seed
    from prunelab.spec import RunSpec, parse_model

    spec = parse_model(RunSpec, payload, "prune options")
    pruning = spec.pruning
    assert pruning is not None
    data = prunelab.load_dataset(spec.data.name, data_dir=data_dir, **spec.data.options)
    net = prunelab.build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    )
    mask = prunelab.prune(
        net,
        pruning.method,
        pruning.density,
        data=data,
        allocation=pruning.allocation,
        check=list(pruning.checks),
        seed=spec.seed,
        prunable=pruning.prunable,
        options=pruning.options,
    )
    mask.save(
        out,
        {
            "model": spec.model.name,
            "dataset": spec.data.name,
            "method": pruning.method,
            "density": pruning.density,
            "seed": spec.seed,
        },
    )
    echo(f"{'layer':<40} {'shape':<20} {'kept':>9} {'total':>9} {'density':>8}")
    for row in mask.per_layer():
        echo(f"{row.name:<40} {str(row.shape):<20} {row.kept:>9} {row.total:>9} {row.density:>8.4f}")
    echo(
        f"density {mask.density():.4f} of prunable weights ({mask.model_density(net):.4f} of all "
        f"parameters); mask written to {out}"
    )
    if mask.info:  # e.g. which smart-ratio rule (ResNet or VGG) was used, and how it was decided
        echo("mask: " + ", ".join(f"{key} = {value}" for key, value in sorted(mask.info.items())))


def _stored_training_runs(runs_dir: Path) -> dict[str, tuple[Any, str]]:
    """Every stored run of ``runs_dir`` whose kind trains a model (training and structured runs):
    run hash -> (its spec, status)."""
    from prunelab.runs import EXECUTORS
    from prunelab.spec import parse_model
    from prunelab.store import RunStore

    store = RunStore(runs_dir, readonly=True)
    out: dict[str, tuple[Any, str]] = {}
    for row in store.list_runs():
        stored = json.loads(row["spec"]) if isinstance(row.get("spec"), str) else None
        spec_file = Path(runs_dir) / row["name"] / "spec.json"
        record = json.loads(spec_file.read_text()) if spec_file.is_file() else None
        kind = str(record.get("kind")) if record is not None else ""
        if record is None or kind not in EXECUTORS or EXECUTORS.get(kind).trained_model is None:
            continue
        spec = parse_model(
            EXECUTORS.get(kind).spec_type, record.get("spec", stored), f"stored spec of {row['name']}"
        )
        out[row["hash"]] = (spec, row["status"])
    return out


def select_runs(runs_dir: Path, study: str | None, runs: Sequence[str]) -> tuple[list[Any], int]:
    """The finished training runs to evaluate: those named (a run name or hash, which must have
    finished), or every finished one of ``study`` (or of the runs dir); and how many were skipped
    because they have not finished."""
    from prunelab.store import RunStore

    if not (Path(runs_dir) / "index.sqlite").exists() and not Path(runs_dir).is_dir():
        raise PrunelabError(f"runs dir {str(runs_dir)!r} does not exist")
    stored = _stored_training_runs(runs_dir)
    by_name = {spec.run_name(): key for key, (spec, _) in stored.items()}
    chosen: list[Any] = []
    for given in runs:
        key = given if given in stored else by_name.get(given)
        if key is None:
            raise PrunelabError(f"no trained run {given!r} in {runs_dir} (give a run name or hash)")
        spec, status = stored[key]
        if status != "done":
            raise PrunelabError(f"run {spec.run_name()} has not finished (status {status}); train it first")
        chosen.append(spec)
    if runs:
        return chosen, 0
    members = RunStore(runs_dir, readonly=True).memberships()
    if study is not None and not any(study in names for names in members.values()):
        known = sorted({name for names in members.values() for name in names})
        raise PrunelabError(
            f"no study {study!r} in {runs_dir}; valid choices: {', '.join(known) or '(none)'}"
        )
    skipped = 0
    for key, (spec, status) in stored.items():
        if study is not None and study not in members.get(key, []):
            continue
        if status != "done":
            skipped += 1
            continue
        chosen.append(spec)
    if not chosen:
        raise PrunelabError(
            f"no finished trained run to evaluate in {runs_dir}" + (f" (study {study})" if study else "")
        )
    return sorted(chosen, key=lambda s: s.run_name()), skipped


def evaluate_command(
    study: str | None,
    runs: Sequence[str],
    groups: Sequence[str],
    sets: Sequence[str],
    where: Execution,
    echo: Echo,
) -> Path:
    """``prunelab evaluate``: measure calibration, OOD detection, adversarial and shift robustness of
    finished runs (each once: an evaluation run beside them in the store), then write a report."""
    import time

    from prunelab.plugins import load_plugins
    from prunelab.presets import evaluation_preset
    from prunelab.report.evaluation import write_evaluation_report
    from prunelab.runners import run_specs
    from prunelab.spec import parse_model
    from prunelab.spec.evaluation import EvaluationConfig, EvaluationSpec
    from prunelab.store import RunStore

    load_plugins(where.plugins)
    if where.workers < 1:
        raise PrunelabError(f"--workers must be at least 1, got {where.workers}")
    chosen, skipped = select_runs(where.runs_dir, study, runs)
    configs: dict[str, Any] = {}
    for spec in chosen:  # validate every metric config before anything runs
        if spec.data.name not in configs:
            payload = apply_sets(evaluation_preset(spec.data.name, groups or ["all"]), sets)
            configs[spec.data.name] = parse_model(EvaluationConfig, payload, "evaluation options")
    evaluations = [EvaluationSpec(run=spec, metrics=configs[spec.data.name]) for spec in chosen]
    began = time.perf_counter()
    run_specs(
        evaluations,
        where.runs_dir,
        workers=where.workers,
        data_dir=where.data_dir,
        device=where.device,
        force=where.force,
        plugins=where.plugins,
        description="evaluate",
        threads=where.threads,
        backend=where.backend,
        address=where.address,
        gpus_per_run=where.gpus_per_run,
    )
    store = RunStore(where.runs_dir, readonly=True)
    results = [(e, store.result(e)) for e in evaluations]
    out = where.out or Path(where.runs_dir) / "reports" / f"evaluation-{study or 'runs'}"
    report = write_evaluation_report(results, out)
    echo(
        f"evaluated {len(evaluations)} runs in {time.perf_counter() - began:.0f} s"
        + (f"; {skipped} unfinished runs skipped" if skipped else "")
    )
    echo(f"report: {report.resolve()}")
    return report
