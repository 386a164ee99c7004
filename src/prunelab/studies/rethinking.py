"""The Rethinking study (Liu et al. 2019, "Rethinking the Value of Network Pruning").

For every structured (or weight-level) pruning method and seed: train the large model, prune it, then
train the pruned architecture three ways (:mod:`prunelab.training.protocols`): fine-tune the pruned
weights, Scratch-E (fresh init, same epochs) and Scratch-B (fresh init, same FLOPs budget). The
paper's claim, tested per method: training the pruned architecture from scratch is not worse than
fine-tuning it.

Every step is a :class:`~prunelab.spec.structured.StructuredRunSpec` run by the one pipeline
(:mod:`prunelab.runs`); this module holds only the grid, the summary and the verdicts.

Statistics (:func:`summarize`): accuracy mean and 95% t-interval over seeds per protocol; per method
and scratch protocol, a two-sided paired t-test of (scratch − fine-tune) final test accuracy over
seeds (pairs = seed) with the 95% CI of the mean difference, and whether the two protocols' own 95%
CIs overlap. The p-values of all method x protocol comparisons are one family, adjusted with the
study's ``correction`` (Holm by default) and compared with its ``alpha``; a comparison with fewer
than 2 seeds is inconclusive (n too small).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from prunelab.presets import rethinking_preset
from prunelab.report.rethinking import write_rethinking_report
from prunelab.runs.results import reported_accuracy
from prunelab.spec.structured import STAGES, Stage, StructuredRunSpec
from prunelab.spec.studies import MethodSpec, RethinkingStudy
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.summaries.provenance import provenance_summary
from prunelab.summaries.rethinking import (
    ROWS,
    SEARCH_ARMS,
    Comparison,
    MethodSummary,
    RethinkingSummary,
    SearchSummary,
    latency_measurements,
)
from prunelab.summaries.stats import (
    MIN_PAIRS,
    AdjustedP,
    PairedTest,
    adjust,
    describe_correction,
    mean_ci,
    paired_test,
    small_n_note,
)
from prunelab.training.protocols import PROTOCOLS


@dataclass(frozen=True)
class StudyRun:
    """A run of the study: which method (label) it serves (None: the shared large model)."""

    stage: Stage
    method: str | None
    seed: int
    spec: StructuredRunSpec


def method_specs(study: RethinkingStudy, method: MethodSpec, seed: int) -> dict[str, StructuredRunSpec]:
    """The runs behind one method and seed, keyed by table row: ``large`` (the plain shared model, or
    the method's own sparsity-trained / soft-pruned one), ``pruned`` (the prune run), each protocol,
    and, when the study searches architectures with this method, ``uniform`` and ``guided``."""
    common: dict[str, Any] = {
        "data": study.data,
        "model": study.model,
        "train": study.train,
        "seed": seed,
        "method": method.name,
        "options": method.options,
    }
    prune = StructuredRunSpec(stage="prune", **common)
    large = prune.parent()
    assert large is not None
    specs = {"large": large, "pruned": prune}
    for protocol in PROTOCOLS:
        extra: dict[str, Any] = {}
        if protocol == "finetune":
            extra = {"finetune_epochs": study.finetune_epochs, "finetune_lr": study.finetune_lr}
        elif protocol == "scratch_b":
            extra = {"max_ratio": study.max_ratio}
        specs[protocol] = StructuredRunSpec(stage=protocol, **common, **extra)
    if method.name in study.architecture_search:
        specs["uniform"] = StructuredRunSpec(stage="uniform", **common)
        specs["guided"] = StructuredRunSpec(stage="guided", guide_seeds=study.seeds, **common)
    return specs


def study_runs(study: RethinkingStudy) -> list[StudyRun]:
    """Every run of the study, deduplicated by hash, in dependency order (large, prune, protocols).

    The plain large model appears once per seed however many methods prune it (its ``method`` is
    None); a sparsity-trained or soft-pruned large model belongs to its method.
    """
    seen: set[str] = set()
    by_stage: dict[str, list[StudyRun]] = defaultdict(list)
    for seed in study.seeds:
        for method in study.methods:
            for spec in method_specs(study, method, seed).values():
                if spec.run_hash() in seen:
                    continue
                seen.add(spec.run_hash())
                shared = spec.stage == "large" and spec.method is None
                by_stage[spec.stage].append(
                    StudyRun(spec.stage, None if shared else method.label, seed, spec)
                )
    return [run for stage in STAGES for run in by_stage[stage]]


@dataclass
class _MethodResults:
    """One method's finished results over seeds, by table row."""

    values: dict[str, dict[int, float]]
    epochs: dict[str, list[int]]
    params: dict[str, list[float]]
    flops: dict[str, list[float]]
    masked: bool = False
    latency: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None


def _method_results(
    study: RethinkingStudy, method: MethodSpec, results: Mapping[str, dict[str, Any] | None]
) -> _MethodResults:
    out = _MethodResults(
        {r: {} for r in ROWS}, {r: [] for r in ROWS}, {"full": [], "pruned": []}, {"full": [], "pruned": []}
    )
    for seed in study.seeds:
        for row, spec in method_specs(study, method, seed).items():
            result = results.get(spec.run_hash())
            value = reported_accuracy(result)
            if row not in out.values or result is None or value is None:
                continue
            out.values[row][seed] = value
            out.epochs[row].append(int(result.get("epochs", 0)))
            if row == "pruned":
                for key in ("full", "pruned"):
                    out.params[key].append(float(result["params"][key]))
                    out.flops[key].append(float(result["flops"][key]))
                out.masked = bool(result.get("masked"))
                if not out.latency:
                    out.latency = result.get("latency", {})
                    out.architecture = result.get("architecture")
    return out


def _comparisons(study: RethinkingStudy, label: str, values: dict[str, dict[int, float]]) -> list[Comparison]:
    """Scratch-E and Scratch-B against fine-tune, paired over seeds (p-values not yet adjusted)."""
    comparisons = []
    for protocol in ("scratch_e", "scratch_b"):
        seeds = sorted(set(values[protocol]) & set(values["finetune"]))
        if not seeds:
            continue
        treated = [values[protocol][s] for s in seeds]
        control = [values["finetune"][s] for s in seeds]
        a, b = mean_ci(treated), mean_ci(control)
        test = paired_test(treated, control)
        comparisons.append(
            Comparison(
                label,
                protocol,
                test,
                len(seeds),
                # Without two intervals there is nothing to overlap: unknown, not "no".
                ci_overlap=(a.low <= b.high and b.low <= a.high)
                if a.has_interval and b.has_interval
                else None,
                p=AdjustedP(test.p_value, test.p_value, "none", 1, study.alpha),
            )
        )
    return comparisons


def _adjusted(study: RethinkingStudy, methods: list[MethodSummary]) -> list[MethodSummary]:
    """The methods with every comparison's p-value adjusted over the study's whole family."""
    flat = [c for m in methods for c in m.comparisons]
    adjusted = iter(adjust([c.test.p_value for c in flat], study.correction, study.alpha))
    return [replace(m, comparisons=[replace(c, p=next(adjusted)) for c in m.comparisons]) for m in methods]


def _notes(methods: list[MethodSummary]) -> list[str]:
    """Warnings: comparisons with too few seeds, and speedups resting on unreliable timings."""
    notes = []
    small = [
        (f"{c.method} {c.protocol}", c.n_pairs)
        for m in methods
        for c in m.comparisons
        if c.n_pairs < MIN_PAIRS
    ]
    note = small_n_note(small, "seeds")
    if note:
        notes.append(note)
    flagged = [
        f"{m.method} ({s.device}, batch {s.batch_size}: spread {100 * s.spread:.0f}%)"
        for m in methods
        for s in latency_measurements(m.latency)
        if s.unreliable
    ]
    if flagged:
        notes.append(
            "unreliable latency (relative IQR too large, the machine was busy): speedups of "
            + ", ".join(flagged)
            + " are marked in the report and should be re-measured on a quiet machine"
        )
    return notes


def _search(
    study: RethinkingStudy, method: MethodSpec, results: Mapping[str, dict[str, Any] | None]
) -> SearchSummary:
    """Found (Scratch-E) vs uniform vs guided, over seeds; paired tests against uniform."""
    values: dict[str, dict[int, float]] = {arm: {} for arm in SEARCH_ARMS}
    params: dict[str, list[float]] = {arm: [] for arm in SEARCH_ARMS}
    for seed in study.seeds:
        specs = method_specs(study, method, seed)
        for arm, row in (("found", "scratch_e"), ("uniform", "uniform"), ("guided", "guided")):
            result = results.get(specs[row].run_hash()) or {}
            value = reported_accuracy(result)
            if value is not None:
                values[arm][seed] = value
                if isinstance(result.get("params"), int | float):
                    params[arm].append(float(result["params"]))
    versus: dict[str, PairedTest] = {}
    for arm in ("found", "guided"):
        seeds = sorted(set(values[arm]) & set(values["uniform"]))
        if seeds:
            versus[arm] = paired_test([values[arm][s] for s in seeds], [values["uniform"][s] for s in seeds])
    return SearchSummary(
        method=method.label,
        accuracy={arm: mean_ci([values[arm][s] for s in sorted(values[arm])]) for arm in SEARCH_ARMS},
        params={arm: sum(v) / len(v) for arm, v in params.items() if v},
        versus_uniform=versus,
    )


def summarize(study: RethinkingStudy, results: Mapping[str, dict[str, Any] | None]) -> RethinkingSummary:
    """Aggregate the study's finished runs (``results`` by run hash; missing or None = not finished)."""
    runs = study_runs(study)
    missing = sum(
        1 for run in runs if not (r := results.get(run.spec.run_hash())) or r.get("status") != "done"
    )
    summaries: list[MethodSummary] = []
    for method in study.methods:
        found = _method_results(study, method, results)
        summaries.append(
            MethodSummary(
                method=method.label,
                accuracy={
                    row: mean_ci([found.values[row][s] for s in sorted(found.values[row])]) for row in ROWS
                },
                values=found.values,
                epochs=found.epochs,
                params={k: sum(v) / len(v) for k, v in found.params.items() if v},
                flops={k: sum(v) / len(v) for k, v in found.flops.items() if v},
                masked=found.masked,
                latency=found.latency or {},
                comparisons=_comparisons(study, method.label, found.values),
                architecture=found.architecture,
            )
        )
    summaries = _adjusted(study, summaries)
    return RethinkingSummary(
        study=study,
        methods=summaries,
        missing=missing,
        notes=_notes(summaries),
        provenance=provenance_summary(results.get(run.spec.run_hash()) for run in runs),
        search=[_search(study, m, results) for m in study.methods if m.name in study.architecture_search],
    )


def _comparison_line(c: Comparison) -> str:
    if c.inconclusive:
        return f"{c.conclusion}: n = {c.n_pairs}"
    adjusted = "" if c.p.correction == "none" else f", {c.p.correction}-adjusted p = {c.p.adjusted:.3g}"
    return f"{c.conclusion} (n = {c.n_pairs}, p = {c.p.raw:.3g}{adjusted})"


def _conclusions(summary: RethinkingSummary) -> list[str]:
    comparisons = [c for row in summary.methods for c in row.comparisons]
    lines = [f"  {c.method:<28} {c.protocol:<10} {_comparison_line(c)}" for c in comparisons]
    if comparisons:
        family = comparisons[0].p.family
        lines.append(
            f"  verdicts: {describe_correction(summary.study.correction, family, summary.study.alpha)}"
        )
    for search in summary.search:
        for arm, test in search.versus_uniform.items():
            lines.append(
                f"  {search.method:<28} {arm} vs uniform (same params): {100 * test.diff.mean:+.2f} pp, p = {test.p_value:.3g}"
            )
    return lines + [f"  warning: {note}" for note in summary.notes]


RETHINKING = register_study(
    StudyKind(
        "rethinking",
        RethinkingStudy,
        runs=lambda study: [run.spec for run in study_runs(study)],
        summarize=summarize,
        report=write_rethinking_report,
        description="Liu et al. 2019: per structured method, fine-tuned vs Scratch-E vs Scratch-B",
        preset=rethinking_preset,
        presets=("small", "paper"),
        flags=(
            Flag("dataset", "Dataset (mnist1d, digits, cifar10, cifar100, ...)."),
            Flag("model", "Large model (default follows the dataset)."),
            Flag(
                "methods", "Structured methods, comma-separated (default: all that fit the model).", "names"
            ),
            Flag("seeds", "Number of seeds 0..N-1 (small: 3, paper: 5).", "int"),
            Flag(
                "epochs",
                "Large-model (= Scratch-E) epochs; fine-tune a quarter, Scratch-B scaled by FLOPs.",
                "int",
            ),
            Flag("method_option", "METHOD.key=value (repeatable), e.g. slimming.percent=0.6.", "pairs"),
            Flag("name", "Study name (names the report folder)."),
        ),
        conclusions=_conclusions,
    )
)
