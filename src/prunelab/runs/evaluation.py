"""The executor of an :class:`~prunelab.spec.evaluation.EvaluationSpec`: load a finished run's
reported weights and measure calibration, OOD detection, adversarial and shift robustness.

The evaluation reads the real test split (the held-out test split behind a validation hold-out),
never the validation examples. An OOD or shifted set is fed to the model in the model's own input
normalisation: its examples are mapped back to pixels with their own statistics, then normalised
with the training data's (a CIFAR-10 model sees SVHN normalised as CIFAR-10 would be).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.data import DataBundle, load_dataset
from prunelab.errors import PrunelabError
from prunelab.evaluation.adversarial import PixelSpace, adversarial_accuracy
from prunelab.evaluation.calibration import calibration_metrics
from prunelab.evaluation.ood import ood_detection, ood_score
from prunelab.runs.executors import Executor, RunContext, executor_for, register_executor
from prunelab.runs.training import check_model_fits, dataset_for, resolve_device
from prunelab.seeding import generator
from prunelab.spec import DataSpec
from prunelab.spec.evaluation import EvaluationSpec
from prunelab.store import RunStore

#: Whether a larger value of a metric is better (for reports comparing sparse and dense).
HIGHER_IS_BETTER = {
    "accuracy": True,
    "ece": False,
    "nll": False,
    "brier": False,
    "auroc": True,
    "fpr95": False,
}


def metric_direction(name: str) -> bool:
    """True when larger is better for the flat metric ``name`` (``ece``, ``auroc_msp@svhn``, ``fgsm@0.1``...)."""
    stem = name.split("@")[0].split("_")[0]
    return HIGHER_IS_BETTER.get(stem, True)


def pixel_space(data: DataBundle) -> PixelSpace:
    """The data's normalisation and pixel range from its ``info`` (identity where it has none)."""
    info = data.info
    mean, std, bounds = info.get("mean"), info.get("std"), info.get("pixel_bounds")
    if mean is not None and bounds is None:
        bounds = (0.0, 1.0)  # images normalised from [0, 1] pixels (the CIFAR readers record no range)
    return PixelSpace(mean=mean, std=std, bounds=bounds)  # type: ignore[arg-type]


def test_batches(data: DataBundle, size: int = 500) -> Iterator[tuple[Tensor, Tensor]]:
    """The real test split in batches: the held-out one behind a validation hold-out, else the
    test split (a streamed set decodes batch by batch)."""
    if data.heldout_y is not None:
        return data.heldout_batches(size)
    return data.test_batches(size)


def first_examples(batches: Iterator[tuple[Tensor, Tensor]], limit: int | None) -> tuple[Tensor, Tensor]:
    """The first ``limit`` examples of ``batches`` (all when None) as two tensors."""
    xs, ys, taken = [], [], 0
    for x, y in batches:
        if limit is not None and taken + x.shape[0] > limit:
            x, y = x[: limit - taken], y[: limit - taken]
        xs.append(x)
        ys.append(y)
        taken += x.shape[0]
        if limit is not None and taken >= limit:
            break
    return torch.cat(xs), torch.cat(ys)


def _batches(x: Tensor, y: Tensor, size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], y[start : start + size]


@torch.no_grad()
def _logits(model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``(logits (N, C) float32, labels (N,))`` of the model in eval mode over ``batches``."""
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        logits.append(model(x).float())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def _foreign_set(
    spec: DataSpec, own: DataBundle, context: RunContext, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``spec``'s test split in ``own``'s input normalisation, on ``device``."""
    options: dict[str, Any] = dict(spec.options)
    other = load_dataset(spec.name, data_dir=context.data_dir, device="cpu", **options)
    if tuple(other.input_shape) != tuple(own.input_shape):
        raise PrunelabError(
            f"dataset {spec.name!r} has examples of shape {tuple(other.input_shape)}, but the model was "
            f"trained on {own.name!r} with shape {tuple(own.input_shape)}"
        )
    x = pixel_space(own).to_norm(pixel_space(other).to_pixel(other.test_x))
    return x.to(device), other.test_y.to(device)


def _ood_metrics(
    spec: EvaluationSpec, model: nn.Module, data: DataBundle, in_logits: Tensor, context: RunContext
) -> tuple[dict[str, Any], dict[str, float]]:
    details: dict[str, Any] = {}
    flat: dict[str, float] = {}
    device = in_logits.device
    for ood in spec.metrics.ood:
        x_out, y_out = _foreign_set(ood, data, context, device)
        out_logits, _ = _logits(model, _batches(x_out, y_out))
        details[ood.name] = {}
        for score in spec.metrics.ood_scores:
            found = ood_detection(ood_score(in_logits, score), ood_score(out_logits, score)).as_dict()
            details[ood.name][score] = found
            flat[f"auroc_{score}@{ood.name}"] = found["auroc"]
            flat[f"fpr95_{score}@{ood.name}"] = found["fpr_at_95_tpr"]
    return details, flat


def _attack_metrics(
    spec: EvaluationSpec, model: nn.Module, data: DataBundle
) -> tuple[dict[str, Any], dict[str, float]]:
    metrics = spec.metrics
    if not metrics.attacks:
        return {}, {}
    x, y = first_examples(test_batches(data), metrics.attack_examples)
    details: dict[str, Any] = {}
    flat: dict[str, float] = {}
    for attack in metrics.attacks:
        options: dict[str, Any] = {}
        if attack == "pgd":
            options = {
                "steps": metrics.pgd_steps,
                "step_size": metrics.pgd_step_size,
                "generator": generator(spec.run.seed, "attack", x.device),
            }
        found = adversarial_accuracy(
            model, _batches(x, y, 500), metrics.epsilons, pixel_space(data), attack, **options
        )
        details[attack] = {f"{eps:g}": acc for eps, acc in found.items()}
        flat.update({f"{attack}@{eps:g}": acc for eps, acc in found.items() if eps > 0})
    return details, flat


def run_evaluation(spec: EvaluationSpec, store: RunStore, context: RunContext) -> dict[str, Any]:
    """Measure ``spec.metrics`` on the evaluated run's reported checkpoint; returns ``result.json``'s
    contents, with ``metrics`` a flat ``{name: value}`` (fractions, nats) and the details beside it."""
    began = time.perf_counter()
    evaluated = store.verified_result(spec.run)
    if evaluated is None:
        raise PrunelabError(f"run {spec.run.run_name()} has not finished; train it before evaluating it")
    dev = resolve_device(context.device)
    data = dataset_for(spec.run, context.data_dir, dev)
    loader = executor_for(spec.run).trained_model
    if loader is None:
        raise PrunelabError(f"run {spec.run.run_name()} is of a kind that trains no model to evaluate")
    model = loader(spec.run, store, evaluated, data, dev)
    model.eval()
    store.begin(spec)
    logits, y = _logits(model, test_batches(data))
    flat: dict[str, float] = {"accuracy": float((logits.argmax(1) == y).float().mean())}
    details: dict[str, Any] = {}
    if spec.metrics.calibration:
        calibration = calibration_metrics(logits, y, spec.metrics.bins).as_dict()
        details["calibration"] = calibration
        flat.update({k: calibration[k] for k in ("ece", "nll", "brier")})
    details["ood"], found = _ood_metrics(spec, model, data, logits, context)
    flat.update(found)
    details["adversarial"], found = _attack_metrics(spec, model, data)
    flat.update(found)
    details["shift"] = {}
    for shifted in spec.metrics.shift:
        xs, ys = _foreign_set(shifted, data, context, dev)
        shift_logits, _ = _logits(model, _batches(xs, ys))
        acc = float((shift_logits.argmax(1) == ys).float().mean())
        details["shift"][shifted.name] = {"accuracy": acc, "ece": calibration_metrics(shift_logits, ys).ece}
        flat[f"shift_acc@{shifted.name}"] = acc
    result = {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "evaluated": spec.run.run_name(),
        "checkpoint": evaluated.get("checkpoint", "final"),
        "selected_epoch": evaluated.get("selected_epoch"),
        "density": evaluated.get("density"),
        "metrics": flat,
        **details,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, {})
    return result


def _evaluated(spec: EvaluationSpec) -> list[tuple[Any, str]]:
    return [(spec.run, "evaluated run")]


def _validate(spec: EvaluationSpec, context: RunContext) -> None:
    """The evaluated run fits its data, and every OOD and shift set exists with its options."""
    from prunelab.data import DATASETS

    check_model_fits(spec.run, context.data_dir)
    for other in (*spec.metrics.ood, *spec.metrics.shift):
        entry = DATASETS.get(other.name)
        unknown = sorted(set(other.options) - set(entry.options()) - {"validation"})
        if unknown:
            raise PrunelabError(
                f"unknown option {unknown[0]!r} for dataset {other.name!r}; valid options: "
                f"{', '.join(sorted(entry.options())) or '(none)'}"
            )


EVALUATION = register_executor(
    Executor("evaluation", EvaluationSpec, run=run_evaluation, parents=_evaluated, validate=_validate)
)


def evaluation_metrics(result: Mapping[str, Any] | None) -> dict[str, float]:
    """The flat metrics of a finished evaluation (empty when it has not finished)."""
    if not result or result.get("status") != "done":
        return {}
    return {str(k): float(v) for k, v in dict(result.get("metrics", {})).items()}
