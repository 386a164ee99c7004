"""The sanity-check study (Su et al. 2020): each method as is and under each sanity check, the
random-ticket baselines (random masks with uniform, ERK and smart-ratio layer-wise densities) and the
dense model, over densities and seeds; then a summary with confidence intervals and a verdict per
method and check. The grid is :class:`~prunelab.spec.studies.SanityStudy`; the ``tickets`` kind
(:mod:`prunelab.studies.tickets`) is the same grid with Su et al.'s ticket methods."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prunelab.presets import sanity_preset
from prunelab.pruning.methods import METHODS
from prunelab.report.sanity import write_sanity_report
from prunelab.runs.evaluation import evaluation_metrics
from prunelab.runs.results import reported_accuracy
from prunelab.spec import PruningSpec, RunSpec
from prunelab.spec.evaluation import EvaluationSpec
from prunelab.spec.studies import SanityStudy
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.summaries.provenance import provenance_summary
from prunelab.summaries.sanity import Cell, SanitySummary, Variant, Verdict
from prunelab.summaries.stats import (
    MIN_PAIRS,
    AdjustedP,
    Estimate,
    adjust,
    describe_correction,
    mean_ci,
    paired_test,
    small_n_note,
)


@dataclass(frozen=True)
class StudyRun:
    variant: Variant
    density: float
    seed: int
    spec: RunSpec


def study_runs(study: SanityStudy) -> list[StudyRun]:
    """Every run of the study, deduplicated by spec hash, in a stable order."""
    runs: list[StudyRun] = []
    seen: set[str] = set()

    def add(variant: Variant, density: float, seed: int, pruning: PruningSpec | None) -> None:
        spec = RunSpec(data=study.data, model=study.model, pruning=pruning, train=study.train, seed=seed)
        if spec.run_hash() not in seen:
            seen.add(spec.run_hash())
            runs.append(StudyRun(variant, density, seed, spec))

    for seed in study.seeds:
        if study.include_dense:
            add(Variant("dense", "dense", "none", "none"), 1.0, seed, None)
        for density in study.densities:
            for allocation in study.random_tickets:
                pruning = PruningSpec(
                    method="random",
                    density=density,
                    allocation=allocation,
                    prunable=study.prunable,
                    sampling=study.sampling,
                )
                add(
                    Variant("random_ticket", "random", "none", pruning.allocation or allocation),
                    density,
                    seed,
                    pruning,
                )
            for method in study.methods:
                default_alloc = METHODS.get(method).allocation
                add(
                    Variant("method", method, "none", default_alloc),
                    density,
                    seed,
                    study.pruning(method, density),
                )
                for check in study.applicable_checks(method):
                    add(
                        Variant("method", method, check, default_alloc),
                        density,
                        seed,
                        study.pruning(method, density, (check,)),
                    )
    return runs


@dataclass
class _Collected:
    """Finished accuracies and per-layer facts of a study's runs, keyed for the summary."""

    acc: dict[tuple[Variant, float], dict[int, float]]
    dense: list[float]
    per_layer: dict[tuple[str, float], list[tuple[str, float]]]
    collapsed: dict[tuple[str, float], list[str]]
    missing: int


def _collect(runs: list[StudyRun], results: Mapping[str, dict[str, Any] | None]) -> _Collected:
    out = _Collected(defaultdict(dict), [], {}, {}, 0)
    for run in runs:
        result = results.get(run.spec.run_hash())
        value = reported_accuracy(result)
        if result is None or value is None:
            out.missing += 1
            continue
        if run.variant.group == "dense":
            out.dense.append(value)
            continue
        out.acc[(run.variant, run.density)][run.seed] = value
        key = (run.variant.label, run.density)
        empty = [row["name"] for row in result.get("per_layer", []) if row["kept"] == 0]
        if empty:
            out.collapsed.setdefault(key, sorted(set(out.collapsed.get(key, [])) | set(empty)))
        if (
            run.variant.check in ("none", "shuffle_mask")
            and key not in out.per_layer
            and result.get("per_layer")
        ):
            out.per_layer[key] = [(row["name"], row["kept"] / row["total"]) for row in result["per_layer"]]
    return out


def _paired(
    study: SanityStudy,
    acc: Mapping[tuple[Variant, float], dict[int, float]],
    treated: Variant,
    control: Variant,
) -> tuple[list[float], list[float]]:
    """Accuracies of ``treated`` and ``control`` paired over (density, seed)."""
    a, b = [], []
    for density in study.densities:
        mine, theirs = acc.get((treated, density), {}), acc.get((control, density), {})
        for seed in sorted(set(mine) & set(theirs)):
            a.append(mine[seed])
            b.append(theirs[seed])
    return a, b


def adjust_verdicts(verdicts: Sequence[Verdict], correction: str, alpha: float) -> list[Verdict]:
    """``verdicts`` as one family: each gets its p-value adjusted over all of them (raw p kept)."""
    adjusted = adjust([v.test.p_value for v in verdicts], correction, alpha)
    return [replace(v, p=p) for v, p in zip(verdicts, adjusted, strict=True)]


def _verdicts(study: SanityStudy, acc: Mapping[tuple[Variant, float], dict[int, float]]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for method in study.methods:
        base = Variant("method", method, "none", METHODS.get(method).allocation)
        for check in study.applicable_checks(method):
            treated, control = _paired(study, acc, Variant("method", method, check, base.allocation), base)
            if control:
                test = paired_test(treated, control)
                raw = AdjustedP(test.p_value, test.p_value, "none", 1, study.alpha)
                verdicts.append(Verdict(method, check, test, len(control), raw))
    # Every method x check verdict is a test at alpha: correct over the family, not each on its own.
    return adjust_verdicts(verdicts, study.correction, study.alpha)


def _ticket_comparison(
    study: SanityStudy, acc: Mapping[tuple[Variant, float], dict[int, float]]
) -> list[dict[str, Any]]:
    comparison: list[dict[str, Any]] = []
    for method in study.methods:
        base = Variant("method", method, "none", METHODS.get(method).allocation)
        for allocation in study.random_tickets:
            ticket = Variant("random_ticket", "random", "none", allocation)
            treated, control = _paired(study, acc, base, ticket)
            if control:
                comparison.append(
                    {
                        "method": method,
                        "ticket": ticket.label,
                        "test": paired_test(treated, control),
                        "n_pairs": len(control),
                    }
                )
    # A second family (method vs random ticket), corrected the same way but apart from the verdicts.
    adjusted = adjust([row["test"].p_value for row in comparison], study.correction, study.alpha)
    for row, p in zip(comparison, adjusted, strict=True):
        row["p"] = p
    return comparison


def verdict_notes(verdicts: Sequence[Verdict], prefixes: Sequence[str] | None = None) -> list[str]:
    """Warnings about ``verdicts``: which had too few (density, seed) pairs for the paired t-test
    (``prefixes``, one per verdict, name where each belongs, e.g. ``"lr 0.1: "``)."""
    labels = prefixes or [""] * len(verdicts)
    small = [
        (f"{prefix}{v.method} + {v.check}", v.n_pairs)
        for prefix, v in zip(labels, verdicts, strict=True)
        if v.n_pairs < MIN_PAIRS
    ]
    note = small_n_note(small, "(density, seed) pairs")
    return [note] if note else []


def summarize(study: SanityStudy, results: Mapping[str, dict[str, Any] | None]) -> SanitySummary:
    """Aggregate the study's finished runs (``results`` by run hash; a missing or None entry = not
    finished): accuracy per variant and density, verdicts per method and check (paired over density
    and seed), random-ticket comparisons, layer-wise densities and collapsed layers."""
    found = _collect(study_runs(study), results)
    cells = [
        Cell(variant, density, mean_ci(list(values.values())), tuple(values.values()))
        for (variant, density), values in found.acc.items()
    ]
    method_order = {m: i for i, m in enumerate(study.methods)}
    check_order = {c: i for i, c in enumerate(("none", *study.checks))}
    cells.sort(
        key=lambda c: (
            c.variant.group != "method",
            method_order.get(c.variant.method, len(method_order)),
            check_order.get(c.variant.check, len(check_order)),
            c.variant.allocation,
            -c.density,
        )
    )
    verdicts = _verdicts(study, found.acc)
    return SanitySummary(
        metrics=_metrics(study, results),
        study=study,
        cells=cells,
        verdicts=verdicts,
        dense=mean_ci(found.dense) if found.dense else None,
        per_layer=found.per_layer,
        missing=found.missing,
        ticket_comparison=_ticket_comparison(study, found.acc),
        collapsed=found.collapsed,
        provenance=provenance_summary(results.get(run.spec.run_hash()) for run in study_runs(study)),
        notes=verdict_notes(verdicts),
    )


def sanity_specs(study: SanityStudy) -> list[Any]:
    """Every stored run of the study: the training runs, then (when it measures beyond accuracy) their
    evaluations."""
    specs: list[Any] = [run.spec for run in study_runs(study)]
    if study.evaluate is not None:
        specs += [EvaluationSpec(run=spec, metrics=study.evaluate) for spec in list(specs)]
    return specs


def _metrics(
    study: SanityStudy, results: Mapping[str, dict[str, Any] | None]
) -> dict[tuple[str, float], dict[str, Estimate]]:
    """Per (variant label, density), the mean and CI over seeds of each evaluated metric."""
    if study.evaluate is None:
        return {}
    values: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in study_runs(study):
        evaluation = EvaluationSpec(run=run.spec, metrics=study.evaluate)
        for name, value in evaluation_metrics(results.get(evaluation.run_hash())).items():
            values[(run.variant.label, run.density)][name].append(value)
    return {key: {name: mean_ci(v) for name, v in found.items()} for key, found in values.items()}


def verdict_line(v: Verdict) -> str:
    """``conclusion (n = pairs, p = raw, adjusted p = ...)``: a verdict with the numbers behind it."""
    if v.inconclusive:
        return f"{v.conclusion}: n = {v.n_pairs}"
    adjusted = "" if v.p.correction == "none" else f", {v.p.correction}-adjusted p = {v.p.adjusted:.3g}"
    return f"{v.conclusion} (n = {v.n_pairs}, p = {v.p.raw:.3g}{adjusted})"


def family_line(verdicts: Sequence[Verdict], correction: str, alpha: float) -> str:
    """The CLI's line saying how the verdicts' p-values were corrected."""
    family = verdicts[0].p.family if verdicts else 0
    return f"  verdicts: {describe_correction(correction, family, alpha)}"


def _conclusions(summary: SanitySummary) -> list[str]:
    lines = [f"  {v.method:<16} + {v.check:<16} {verdict_line(v)}" for v in summary.verdicts]
    if summary.verdicts:
        lines.append(family_line(summary.verdicts, summary.study.correction, summary.study.alpha))
    return lines + [f"  warning: {note}" for note in summary.notes]


SANITY_FLAGS = (
    Flag("dataset", "Dataset name (default mnist1d)."),
    Flag("model", "Model name (default: the dataset's preset)."),
    Flag("methods", "Methods, comma-separated.", "names"),
    Flag("densities", "Densities (kept fractions of prunable weights), comma-separated.", "floats"),
    Flag("seeds", "Number of seeds (0..N-1).", "int"),
    Flag("checks", "Sanity checks, comma-separated.", "names"),
    Flag("random_tickets", "Allocations of the random-ticket baselines, comma-separated.", "names"),
    Flag("epochs", "Epochs per run (default: the dataset preset's).", "int"),
    Flag("lr", "Initial learning rate.", "float"),
    Flag("name", "Study name (names the report folder)."),
)

SANITY = register_study(
    StudyKind(
        "sanity",
        SanityStudy,
        runs=sanity_specs,
        summarize=summarize,
        report=write_sanity_report,
        description="Su et al. 2020: methods x sanity checks x densities x seeds, random tickets, dense",
        preset=sanity_preset,
        presets=("default", "demo", "paper"),
        flags=SANITY_FLAGS,
        conclusions=_conclusions,
    )
)
