"""Liu et al. 2022's size-scaling study: does random pruning at initialisation, trained sparse from
scratch, close the gap to its dense twin as the network grows deeper and wider?

For each size family (depth or width), model, seed, density and ratio scheme the grid holds one
random-pruning run beside the dense run of the same model and seed (its paired twin), and, when the
study asks for it, an evaluation run beside each (calibration, OOD, adversarial, shift). The verdict
per family, scheme and density is the smallest size from which every larger size *matches* dense:
a one-sided paired t-test of non-inferiority within ``margin`` rejects "random is worse by the
margin or more", with the study's multiple-comparison correction over every (size, scheme,
density) point.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from prunelab.presets import scaling_preset
from prunelab.report.scaling import write_scaling_report
from prunelab.runs.evaluation import evaluation_metrics, metric_direction
from prunelab.runs.results import reported_accuracy
from prunelab.spec import ModelSpec, RunSpec
from prunelab.spec.evaluation import EvaluationSpec
from prunelab.spec.studies import ScalingStudy, SizeAxis
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.summaries.provenance import provenance_summary
from prunelab.summaries.scaling import (
    NONINFERIORITY_TEST,
    MetricComparison,
    ScalingSummary,
    SizePoint,
    TrendVerdict,
    noninferiority_p,
)
from prunelab.summaries.stats import (
    AdjustedP,
    adjust,
    describe_correction,
    mean_ci,
    paired_test,
    small_n_note,
)


def model_label(model: ModelSpec) -> str:
    """``name`` or ``name(key=value, ...)``: one line per model in reports."""
    if not model.options:
        return model.name
    return f"{model.name}({', '.join(f'{k}={v}' for k, v in sorted(model.options.items()))})"


def dense_run(study: ScalingStudy, model: ModelSpec, seed: int) -> RunSpec:
    """The dense twin of ``model`` at ``seed``."""
    return RunSpec(data=study.data, model=model, train=study.train, seed=seed)


def sparse_run(study: ScalingStudy, model: ModelSpec, seed: int, scheme: str, density: float) -> RunSpec:
    """Random pruning of ``model`` at ``density`` with ``scheme``'s layer-wise ratios."""
    return RunSpec(
        data=study.data, model=model, train=study.train, seed=seed, pruning=study.pruning(scheme, density)
    )


def evaluation_of(study: ScalingStudy, run: RunSpec) -> EvaluationSpec | None:
    """The evaluation run of ``run`` when the study measures beyond accuracy."""
    return None if study.evaluate is None else EvaluationSpec(run=run, metrics=study.evaluate)


def scaling_runs(study: ScalingStudy) -> list[Any]:
    """Every run of the grid, each once: dense twins, random-pruning runs, then their evaluations."""
    seen: dict[str, Any] = {}
    for axis in study.sizes:
        for model in axis.models:
            for seed in study.seeds:
                seen.setdefault(dense_run(study, model, seed).run_hash(), dense_run(study, model, seed))
                for density in study.densities:
                    for scheme in study.schemes:
                        run = sparse_run(study, model, seed, scheme, density)
                        seen.setdefault(run.run_hash(), run)
    training = list(seen.values())
    evaluations = [e for e in (evaluation_of(study, run) for run in training) if e is not None]
    return training + evaluations


def _values(
    study: ScalingStudy, runs: Mapping[int, RunSpec], results: Mapping[str, dict[str, Any] | None]
) -> tuple[dict[int, float], dict[int, dict[str, float]]]:
    """Per seed: the reported accuracy, and the evaluation's flat metrics (when evaluated)."""
    accuracy: dict[int, float] = {}
    metrics: dict[int, dict[str, float]] = {}
    for seed, run in runs.items():
        value = reported_accuracy(results.get(run.run_hash()))
        if value is not None:
            accuracy[seed] = value
        evaluation = evaluation_of(study, run)
        if evaluation is not None:
            found = evaluation_metrics(results.get(evaluation.run_hash()))
            if found:
                metrics[seed] = found
    return accuracy, metrics


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


_Raw = dict[str, Any]


def _raw_point(
    study: ScalingStudy,
    axis: SizeAxis,
    index: int,
    scheme: str,
    density: float,
    results: Mapping[str, dict[str, Any] | None],
) -> _Raw:
    model = axis.models[index]
    dense_acc, dense_metrics = _values(study, {s: dense_run(study, model, s) for s in study.seeds}, results)
    sparse_runs = {s: sparse_run(study, model, s, scheme, density) for s in study.seeds}
    sparse_acc, sparse_metrics = _values(study, sparse_runs, results)
    sparse, dense = _paired(sparse_acc, dense_acc)
    size: dict[str, float] = {}
    for run in sparse_runs.values():
        found = results.get(run.run_hash()) or {}
        if isinstance(found.get("size"), dict):
            size = {k: float(v) for k, v in found["size"].items()}
            break
    metrics: dict[str, tuple[list[float], list[float]]] = {}
    for name in study.evaluate.metrics if study.evaluate is not None else []:
        with_sparse = {s: m[name] for s, m in sparse_metrics.items() if name in m}
        with_dense = {s: m[name] for s, m in dense_metrics.items() if name in m}
        metrics[name] = _paired(with_sparse, with_dense)
    return {
        "axis": axis,
        "index": index,
        "scheme": scheme,
        "density": density,
        "sparse": sparse,
        "dense": dense,
        "all_sparse": list(sparse_acc.values()),
        "all_dense": list(dense_acc.values()),
        "size": size,
        "metrics": metrics,
    }


def _point(
    study: ScalingStudy, raw: _Raw, p: AdjustedP, noninferior: AdjustedP, metric_ps: list[AdjustedP]
) -> SizePoint:
    axis: SizeAxis = raw["axis"]
    compared: dict[str, MetricComparison] = {}
    for (name, (sparse, dense)), mp in zip(raw["metrics"].items(), metric_ps, strict=True):
        compared[name] = MetricComparison(
            name,
            metric_direction(name),
            mean_ci(sparse),
            mean_ci(dense),
            paired_test(sparse, dense),
            len(sparse),
            mp,
        )
    return SizePoint(
        family=axis.family,
        axis=axis.axis,
        value=axis.values[raw["index"]],
        model=model_label(axis.models[raw["index"]]),
        scheme=raw["scheme"],
        density=raw["density"],
        sparse=mean_ci(raw["all_sparse"]),
        dense=mean_ci(raw["all_dense"]),
        test=paired_test(raw["sparse"], raw["dense"]),
        n_pairs=len(raw["sparse"]),
        p=p,
        noninferior=noninferior,
        size=raw["size"],
        metrics=compared,
    )


def _trend(study: ScalingStudy, points: list[SizePoint]) -> TrendVerdict:
    """The verdict of one family x scheme x density line (points ordered by size)."""
    first = points[0]
    gaps = [(p.value, p.test.diff.mean) for p in points if p.n_pairs > 0]
    matches_from = None
    for p in reversed(points):
        if not p.matches:
            break
        matches_from = p.value
    closing = None if len(gaps) < 2 else abs(gaps[-1][1]) < abs(gaps[0][1])
    where = f"{first.family} ({first.axis}), {first.scheme}, density {first.density:g}"
    margin = f"{100 * study.margin:g} pp"
    if matches_from is None:
        text = (
            f"{where}: random pruning does not match dense within {margin} at the largest size "
            f"({first.axis} {points[-1].value:g})"
        )
    elif matches_from == first.value:
        text = f"{where}: random pruning matches dense within {margin} at every size"
    else:
        text = f"{where}: random pruning matches dense within {margin} from {first.axis} {matches_from:g} on"
    if closing is not None:
        text += (
            f"; the gap goes from {100 * gaps[0][1]:+.2f} pp to {100 * gaps[-1][1]:+.2f} pp "
            f"({'closing' if closing else 'not closing'})"
        )
    return TrendVerdict(
        first.family, first.axis, first.scheme, first.density, matches_from, gaps, closing, text
    )


def summarize_scaling(study: ScalingStudy, results: Mapping[str, dict[str, Any] | None]) -> ScalingSummary:
    """The summary from finished results keyed by run hash (a missing key = not finished)."""
    raws = [
        _raw_point(study, axis, index, scheme, density, results)
        for axis in study.sizes
        for scheme in study.schemes
        for density in study.densities
        for index in range(len(axis.models))
    ]
    two_sided = adjust(
        [paired_test(r["sparse"], r["dense"]).p_value for r in raws], study.correction, study.alpha
    )
    noninferior = adjust(
        [
            noninferiority_p([a - b for a, b in zip(r["sparse"], r["dense"], strict=True)], study.margin)
            for r in raws
        ],
        study.correction,
        study.alpha,
    )
    metric_p = iter(
        adjust(
            [paired_test(*pair).p_value for r in raws for pair in r["metrics"].values()],
            study.correction,
            study.alpha,
        )
    )
    points = [
        _point(study, r, p, ni, [next(metric_p) for _ in r["metrics"]])
        for r, p, ni in zip(raws, two_sided, noninferior, strict=True)
    ]
    lines: dict[tuple[str, str, str, float], list[SizePoint]] = defaultdict(list)
    for point in points:
        lines[(point.family, point.axis, point.scheme, point.density)].append(point)
    runs = scaling_runs(study)
    finished = [results.get(spec.run_hash()) for spec in runs]
    small = [(f"{p.model} {p.scheme} d={p.density:g}", p.n_pairs) for p in points if p.n_pairs < 2]
    note = small_n_note(small, "seeds with both runs")
    return ScalingSummary(
        study,
        points,
        [_trend(study, line) for line in lines.values()],
        layer_densities=_layer_densities(study, results),
        missing=sum(1 for r in finished if not r or r.get("status") != "done"),
        provenance=provenance_summary(finished),
        notes=[note] if note else [],
    )


def _layer_densities(
    study: ScalingStudy, results: Mapping[str, dict[str, Any] | None]
) -> dict[tuple[str, str, float], list[tuple[str, float]]]:
    """Per model, scheme and density, the per-layer densities of the first finished seed's mask."""
    out: dict[tuple[str, str, float], list[tuple[str, float]]] = {}
    for axis in study.sizes:
        for model in axis.models:
            for scheme in study.schemes:
                for density in study.densities:
                    for seed in study.seeds:
                        found = results.get(sparse_run(study, model, seed, scheme, density).run_hash()) or {}
                        if found.get("status") == "done" and found.get("per_layer"):
                            out[(model_label(model), scheme, density)] = [
                                (row["name"], row["kept"] / row["total"]) for row in found["per_layer"]
                            ]
                            break
    return out


def _conclusions(summary: ScalingSummary) -> list[str]:
    study = summary.study
    lines = [f"  {trend.text}" for trend in summary.trends]
    lines.append(
        f"  test: {NONINFERIORITY_TEST} (margin {100 * study.margin:g} pp); "
        f"{describe_correction(study.correction, len(summary.points), study.alpha)}"
    )
    return lines + [f"  warning: {note}" for note in summary.notes]


SCALING = register_study(
    StudyKind(
        "scaling",
        ScalingStudy,
        runs=scaling_runs,
        summarize=summarize_scaling,
        report=write_scaling_report,
        description="Liu et al. 2022: random pruning vs dense as networks get deeper and wider",
        preset=scaling_preset,
        presets=("small", "cifar10", "cifar100"),
        flags=(
            Flag("densities", "Kept fractions of prunable weights (comma-separated).", "floats"),
            Flag("schemes", "Layer-wise ratio schemes (allocations), e.g. uniform,erk,erk_plus.", "names"),
            Flag("seeds", "Number of seeds (0..N-1).", "int"),
            Flag("epochs", "Epochs per run (default: the preset's).", "int"),
            Flag("evaluate", "Also measure calibration, OOD and adversarial robustness of every run.", "str"),
            Flag("name", "Study name (names the report folder)."),
        ),
        conclusions=_conclusions,
    )
)
