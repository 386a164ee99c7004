"""The Rethinking study (Liu et al. 2019, "Rethinking the Value of Network Pruning").

For every structured (or weight-level) pruning method and seed: train the large model, prune it, then
train the pruned architecture three ways (:mod:`prunelab.training.protocols`): fine-tune the pruned
weights, Scratch-E (fresh init, same epochs) and Scratch-B (fresh init, same FLOPs budget). The
paper's claim, tested per method: training the pruned architecture from scratch is not worse than
fine-tuning it.

Every step is a stored run (:class:`RethinkingRunSpec`, hashed into its directory in the RunStore),
so a stopped study resumes and finished runs are never recomputed. The runs form a small graph::

    large (per seed; shared by every method that trains the large model plainly;
           its own run for slimming / sss (sparsity training) and sfp (soft pruning))
      └─ prune (per method, seed): pruned weights + architecture, params, FLOPs, latency
           ├─ finetune   (pruned weights, constant lr 0.001)
           ├─ scratch_e  (fresh init, the large model's epochs)
           └─ scratch_b  (fresh init, E·FLOPs(full)/FLOPs(pruned) epochs)

Statistics (:func:`summarize`): accuracy mean ± 95% t-interval over seeds per protocol; per method
and scratch protocol, a two-sided paired t-test of (scratch − fine-tune) final test accuracy over
seeds (pairs = seed, alpha = 0.05) with the 95% CI of the mean difference, and whether the two
protocols' own 95% CIs overlap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.spec import DataSpec, ModelSpec, OptionValue, RunSpec
from prunelab.store import RunStore
from prunelab.studies.stats import Estimate, PairedTest, mean_ci, paired_test
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import FINETUNE_LR, PROTOCOLS, finetune_config, protocol_config

RETHINKING_VERSION = "prunelab-rethinking-v1"
SIGNIFICANCE = 0.05

Stage = Literal["large", "prune", "finetune", "scratch_e", "scratch_b"]
STAGES: tuple[Stage, ...] = ("large", "prune", "finetune", "scratch_e", "scratch_b")

#: Methods whose *large* model is trained differently from the plain baseline, and is therefore its
#: own run: network slimming and SSS add a sparsity penalty after each backward pass (L1 on BN scales /
#: block scales), SFP zeroes the smallest filters at the end of every epoch (soft pruning). Every other
#: method prunes the plainly trained large model, which is trained once per seed and shared.
LARGE_REGIME_METHODS: frozenset[str] = frozenset({"slimming", "sss", "sfp"})

#: Folder (inside a prune run's directory) holding the pruned model as written by ``save_pruned``
#: (architecture JSON, safetensors weights, the mask for weight-level pruning).
PRUNED_DIR = "pruned"

#: The study's record in its report folder (``studies.record_study``; ``rebuild_report`` reads it).
STUDY_FILE = "study.json"
STUDY_KIND = "rethinking"

#: Default methods of the study, in report order.
DEFAULT_METHODS = ("l1norm", "slimming", "thinet", "regression", "sfp", "sss", "weight_level")


def _structured_methods() -> Any:
    # Imported lazily: the structured-pruning package pulls in torch-pruning.
    from prunelab.pruning.structured import STRUCTURED_METHODS

    return STRUCTURED_METHODS


class MethodSpec(BaseModel):
    """A structured pruning method (``prunelab.pruning.structured.STRUCTURED_METHODS``) and its options.

    Options not given take the method's defaults; only given ones enter run hashes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        registry = _structured_methods()
        registry.get(value)  # raises PrunelabError naming the valid choices
        return value.lower()

    @model_validator(mode="after")
    def _options(self) -> MethodSpec:
        _structured_methods().get(self.name).resolve_options(self.options)  # unknown/bad options raise
        return self

    @property
    def kind(self) -> str:
        """``"channel"``, ``"block"`` or ``"weight"`` (the registry's)."""
        return str(_structured_methods().get(self.name).kind)

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value, ...)`` when options are given (report rows)."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in sorted(self.options.items()))})"

    @property
    def large_regime(self) -> bool:
        """True when the method trains its own large model (slimming, sss, sfp)."""
        return self.name in LARGE_REGIME_METHODS


class RethinkingStudy(BaseModel):
    """The study's grid and recipes.

    Attributes:
        name: names the report folder.
        data, model: dataset and the (large) model; the model must carry what the methods need
            (BN layers for slimming, residual blocks for sss).
        train: the large model's recipe; Scratch-E uses it as is, Scratch-B stretches it.
        methods: structured methods with options (a bare name means the method's defaults).
        seeds: run seeds; each seed is one large model and one pruned model per method.
        finetune_epochs: fine-tune epochs (default a quarter of ``train.epochs``: 40 of 160).
        finetune_lr: constant fine-tune learning rate (0.001 in the paper).
        max_ratio: cap on the Scratch-B FLOPs ratio (None = the CIFAR scripts: no cap).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "rethinking"
    data: DataSpec = Field(default_factory=lambda: DataSpec(name="mnist1d"))
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="cnn1d", options={"bn": True}))
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[MethodSpec, ...] = Field(
        default_factory=lambda: tuple(MethodSpec(name=m) for m in DEFAULT_METHODS)
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_epochs: int | None = Field(None, ge=1)
    finetune_lr: float = Field(FINETUNE_LR, gt=0)
    max_ratio: float | None = Field(None, gt=0)

    @field_validator("methods", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        # "l1norm" and {"name": "l1norm"} are the same method; a comma-separated string is a list.
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @model_validator(mode="after")
    def _non_empty(self) -> RethinkingStudy:
        if not self.methods:
            raise ValueError("at least one method is needed")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods are listed twice: {labels}")
        return self


class RethinkingRunSpec(BaseModel):
    """One stored run of the study (the store's ``StoredSpec``).

    Attributes:
        stage: ``large`` (train the large model), ``prune`` (prune it and measure the pruned model),
            or a protocol (``finetune``, ``scratch_e``, ``scratch_b``).
        data, model, seed: as in the study.
        train: the *large* model's recipe; every stage derives its own from it (the Scratch-B epochs
            also need the FLOPs measured by the prune run), so a stage's hash pins everything it uses.
        method: the structured method; None only for the plainly trained, shared large model.
        options: the method's given options.
        finetune_epochs, finetune_lr: the fine-tune recipe (``finetune`` runs only).
        max_ratio: Scratch-B ratio cap (``scratch_b`` runs only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    stage: Stage
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    method: str | None = None
    options: dict[str, OptionValue] = Field(default_factory=dict)
    finetune_epochs: int | None = None
    finetune_lr: float = FINETUNE_LR
    max_ratio: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RethinkingRunSpec:
        if self.method is None and (self.stage != "large" or self.options):
            raise ValueError(f"a {self.stage} run needs a method")
        if self.stage != "finetune" and (self.finetune_epochs is not None or self.finetune_lr != FINETUNE_LR):
            raise ValueError("finetune_epochs / finetune_lr belong to finetune runs only")
        if self.stage != "scratch_b" and self.max_ratio is not None:
            raise ValueError("max_ratio belongs to scratch_b runs only")
        return self

    # -- the StoredSpec protocol ----------------------------------------------------------------
    def canonical(self) -> str:
        """Canonical JSON: non-default fields only (the stage always), sorted keys, no whitespace."""
        body = self.model_dump(mode="json", exclude_defaults=True)
        body["stage"] = self.stage
        return json.dumps({"v": RETHINKING_VERSION, **body}, sort_keys=True, separators=(",", ":"))

    def run_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def run_name(self) -> str:
        """``rethinking-<data>-<model>-<method|plain>-<stage>-s<seed>-<hash>``."""
        return "-".join(
            [
                "rethinking",
                self.data.name,
                self.model.name,
                self.method or "plain",
                self.stage.replace("_", ""),
                f"s{self.seed}",
                self.run_hash(),
            ]
        )

    # -- the graph ------------------------------------------------------------------------------
    def parent(self) -> RethinkingRunSpec | None:
        """The run this one builds on: prune -> its large model; a protocol -> its prune run."""
        if self.stage == "large":
            return None
        if self.stage == "prune":
            regime = self.method in LARGE_REGIME_METHODS
            return RethinkingRunSpec(
                stage="large",
                data=self.data,
                model=self.model,
                train=self.train,
                seed=self.seed,
                method=self.method if regime else None,
                options=self.options if regime else {},
            )
        return RethinkingRunSpec(
            stage="prune",
            data=self.data,
            model=self.model,
            train=self.train,
            seed=self.seed,
            method=self.method,
            options=self.options,
        )


@dataclass(frozen=True)
class StudyRun:
    """A run of the study: which method (label) it serves (None: the shared large model)."""

    stage: Stage
    method: str | None
    seed: int
    spec: RethinkingRunSpec


def method_specs(study: RethinkingStudy, method: MethodSpec, seed: int) -> dict[str, RethinkingRunSpec]:
    """The runs behind one method and seed, keyed by table row: ``large`` (the plain shared model, or
    the method's own sparsity-trained / soft-pruned one), ``pruned`` (the prune run) and each protocol."""
    common: dict[str, Any] = {
        "data": study.data,
        "model": study.model,
        "train": study.train,
        "seed": seed,
        "method": method.name,
        "options": method.options,
    }
    prune = RethinkingRunSpec(stage="prune", **common)
    large = prune.parent()
    assert large is not None
    specs = {"large": large, "pruned": prune}
    for protocol in PROTOCOLS:
        extra: dict[str, Any] = {}
        if protocol == "finetune":
            extra = {"finetune_epochs": study.finetune_epochs, "finetune_lr": study.finetune_lr}
        elif protocol == "scratch_b":
            extra = {"max_ratio": study.max_ratio}
        specs[protocol] = RethinkingRunSpec(stage=protocol, **common, **extra)
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


# ---------------------------------------------------------------------------------------------------
# Executing one run
# ---------------------------------------------------------------------------------------------------


def _device(device: str | None) -> torch.device:
    from prunelab.run import resolve_device

    return resolve_device(device)


def _dataset(spec: RethinkingRunSpec, data_dir: str | Path | None, dev: torch.device) -> Any:
    from prunelab.run import dataset_for

    # dataset_for reads only the data block; one cache per process for every kind of run
    return dataset_for(RunSpec(data=spec.data), data_dir, dev)


def _load_weights(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model


def _records(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Latency records (dataclasses or pydantic models) as plain dicts for result.json."""
    out = []
    for record in records:
        if is_dataclass(record) and not isinstance(record, type):
            out.append(asdict(record))
        elif hasattr(record, "model_dump"):
            out.append(record.model_dump())
        else:
            out.append(dict(vars(record)))
    return out


#: How latency is timed in prune runs (``compare_models``' arguments): short, as the study times
#: every pruned model; medians over interleaved repeats keep the full/pruned ratio fair on a busy CPU.
LATENCY_TIMING: dict[str, Any] = {"warmup": 3, "repeats": 15, "min_repeat_ms": 10.0}


def _latency(
    full: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], batch_sizes: Sequence[int]
) -> dict[str, Any]:
    """Measured forward latency of the large and the pruned model, timed alternately (same conditions):
    ``{device: {"full": [record], "pruned": [record]}}``, CPU always, CUDA when present."""
    from prunelab.evaluation.latency import compare_models

    out: dict[str, Any] = {}
    for name in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        rows = compare_models(
            full, pruned, input_shape, batch_sizes=batch_sizes, device=name, **LATENCY_TIMING
        )
        out[name] = {"full": _records([r.full for r in rows]), "pruned": _records([r.pruned for r in rows])}
    return out


def _count_params(model: nn.Module, mask: Any) -> int:
    """Parameters of ``model``; for a masked model only the kept (nonzero-allowed) ones."""
    from prunelab.evaluation.flops import count_params

    total = int(count_params(model))
    if mask is not None:  # pruned weights are zeros held in a dense tensor: not counted
        total -= int(mask.num_total - mask.num_kept)
    return total


def execute_rethinking_run(
    spec: RethinkingRunSpec,
    store: RunStore,
    *,
    data_dir: str | Path | None = None,
    device: str | None = "cpu",
    stop_after_epoch: int | None = None,
    latency_batch_sizes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run ``spec`` to completion (or resume it, or read it back when finished); return its result.

    The parent run (:meth:`RethinkingRunSpec.parent`) must be finished; study runners order runs so.

    Args:
        store: where runs live.
        data_dir: dataset cache directory.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (training); latency is measured on CPU and, when
            present, CUDA.
        stop_after_epoch: stop (as if killed) once this many epochs are done; for tests.
        latency_batch_sizes: batch sizes at which the prune run times both models (default 1 and the
            training batch size).

    Returns:
        The contents of ``result.json``: ``final_test_acc`` (fraction), ``epochs``, the derived
        ``train`` recipe; prune runs add ``params``, ``flops`` (full and pruned), ``latency``.
    """
    existing = store.result(spec)
    if existing is not None:
        return existing
    began = time.perf_counter()
    dev = _device(device)
    data = _dataset(spec, data_dir, dev)
    parent = spec.parent()
    parent_result = None
    if parent is not None:
        parent_result = store.result(parent)
        if parent_result is None:
            raise PrunelabError(f"run {spec.run_name()} needs {parent.run_name()} to be finished first")
    run_dir = store.begin(spec)
    if parent is not None:
        store.link(spec, parent, "large model" if spec.stage == "prune" else "pruned model")
    if spec.stage == "prune":
        assert parent is not None
        return _execute_prune(
            spec, store, run_dir, store.run_dir(parent), data, dev, began, latency_batch_sizes
        )
    return _execute_training(spec, store, run_dir, parent_result, data, dev, began, stop_after_epoch)


def _execute_prune(
    spec: RethinkingRunSpec,
    store: RunStore,
    run_dir: Path,
    large_dir: Path,
    data: Any,
    dev: torch.device,
    began: float,
    latency_batch_sizes: Sequence[int] | None,
) -> dict[str, Any]:
    from prunelab.evaluation.flops import count_flops
    from prunelab.models import build_model
    from prunelab.pruning.structured import prune_structured, save_pruned
    from prunelab.seeding import derive_seed
    from prunelab.training.trainer import evaluate

    assert spec.method is not None
    large = build_model(
        spec.model.name,
        data.input_shape,
        data.num_classes,
        seed=derive_seed(spec.seed, "init"),
        **spec.model.options,
    ).to(dev)
    if spec.method in LARGE_REGIME_METHODS:
        # installs what the regime added to the model (SSS block factors) so the state dict loads
        from prunelab.pruning.structured import large_model_hooks

        large_model_hooks(spec.method, large, spec.options)
    _load_weights(large, large_dir / "model.safetensors")  # the large run's final weights
    store.record_execution(spec, 0)
    large.eval()
    _, large_acc = evaluate(large, data)
    flops_full = int(count_flops(large, data.input_shape))
    params_full = _count_params(large, None)
    t0 = time.perf_counter()
    pruned = prune_structured(large, spec.method, data=data, seed=spec.seed, options=spec.options)
    prune_seconds = time.perf_counter() - t0
    model = pruned.model.to(dev)
    masked = pruned.mask is not None
    flops_pruned = int(count_flops(model, data.input_shape, nonzero_only=masked))
    params_pruned = _count_params(model, pruned.mask)
    _, pruned_acc = evaluate(model, data)
    batch_sizes = list(latency_batch_sizes or (1, spec.train.batch_size))
    latency = _latency(large, model, data.input_shape, batch_sizes)
    # written to a temporary folder and renamed: a kill leaves no half-written pruned model behind
    tmp, final = run_dir / (PRUNED_DIR + ".tmp"), run_dir / PRUNED_DIR
    for stale in (tmp, final):
        shutil.rmtree(stale, ignore_errors=True)
    save_pruned(tmp, pruned)
    os.replace(tmp, final)
    result: dict[str, Any] = {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "stage": spec.stage,
        "method": spec.method,
        "epochs": 0,
        "large_test_acc": large_acc,
        "final_test_acc": pruned_acc,  # the pruned model before any training
        "architecture": pruned.architecture,
        "kept": pruned.kept,
        "masked": masked,
        "mask_density": pruned.mask.density() if pruned.mask is not None else None,
        "params": {"full": params_full, "pruned": params_pruned},
        "flops": {"full": flops_full, "pruned": flops_pruned, "nonzero_only": masked},
        "latency": latency,
        "latency_batch_sizes": batch_sizes,
        "prune_seconds": prune_seconds,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, model.state_dict())
    return result


def _execute_training(
    spec: RethinkingRunSpec,
    store: RunStore,
    run_dir: Path,
    prune_result: dict[str, Any] | None,
    data: Any,
    dev: torch.device,
    began: float,
    stop_after_epoch: int | None,
) -> dict[str, Any]:
    from prunelab.models import build_model
    from prunelab.pruning.checks import effective_fan_reinit
    from prunelab.pruning.mask import Mask
    from prunelab.run import train_through_store
    from prunelab.seeding import derive_seed, generator

    after_backward: list[Callable[[], None]] = []
    after_step: list[Callable[[float], None]] = []
    epoch_end: list[Callable[[Any, Any], None]] = []
    mask: Mask | None = None
    if spec.stage == "large":
        config = spec.train
        model = build_model(
            spec.model.name,
            data.input_shape,
            data.num_classes,
            seed=derive_seed(spec.seed, "init"),
            **spec.model.options,
        ).to(dev)
        if spec.method is not None:
            from prunelab.pruning.structured import large_model_hooks

            hooks = large_model_hooks(spec.method, model, spec.options)
            after_backward, epoch_end = list(hooks.after_backward), hooks.epoch_callbacks()
            after_step = list(hooks.after_step)
    else:
        from prunelab.pruning.structured import build_architecture, load_pruned

        assert prune_result is not None
        parent = spec.parent()
        assert parent is not None
        pruned = load_pruned(store.run_dir(parent) / PRUNED_DIR)
        mask = pruned.mask.to(dev) if pruned.mask is not None else None
        config = protocol_config(
            spec.stage,
            spec.train,
            flops_full=prune_result["flops"]["full"],
            flops_pruned=prune_result["flops"]["pruned"],
            finetune_epochs=spec.finetune_epochs,
            finetune_lr=spec.finetune_lr,
            max_ratio=spec.max_ratio,
        )
        if spec.stage == "finetune":
            model = pruned.model.to(dev)  # the pruned weights
        else:
            # Scratch: the pruned architecture, freshly initialised; a masked model gets He init with
            # each layer's effective fan-in (the paper's scratch re-init for weight-level / SFP).
            model = build_architecture(pruned.architecture, derive_seed(spec.seed, "reinit")).to(dev)
            if mask is not None:
                with torch.no_grad():
                    effective_fan_reinit(model, mask, generator(spec.seed, "reinit"))

    accuracy = train_through_store(
        spec,
        store,
        model,
        data,
        config,
        mask=mask,
        resume=store.load_checkpoint(spec),
        seed=spec.seed,
        stop_after_epoch=stop_after_epoch,
        # soft pruning before the checkpoint, so a checkpoint holds the weights after it
        epoch_hooks=epoch_end,
        after_backward=after_backward,
        after_step=after_step,
    )
    if accuracy is None:
        return {"status": "stopped", "epochs": stop_after_epoch}
    result: dict[str, Any] = {
        "status": "done",
        "name": spec.run_name(),
        "hash": spec.run_hash(),
        "stage": spec.stage,
        "method": spec.method,
        **accuracy,
        "train": config.model_dump(mode="json"),
        "density": mask.density() if mask is not None else 1.0,
        "seconds": time.perf_counter() - began,
        "device": str(dev),
    }
    store.finish(spec, result, model.state_dict())
    return result


# ---------------------------------------------------------------------------------------------------
# Running the study
# ---------------------------------------------------------------------------------------------------


def _run_job(spec_json: str, root: str, data_dir: str | Path | None, device: str) -> dict[str, Any]:
    spec = RethinkingRunSpec.model_validate_json(spec_json)
    return execute_rethinking_run(spec, RunStore(root), data_dir=data_dir, device=device)


def run_study_runs(
    runs: Sequence[StudyRun],
    runs_dir: str | Path,
    *,
    jobs: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    description: str = "rethinking",
) -> list[dict[str, Any]]:
    """Run every run in dependency waves (large, prune, protocols); finished runs are read back.

    Within a wave runs are independent, so ``jobs > 1`` spreads the training waves over one process
    pool (:func:`prunelab.runners.run_waves`; CUDA stays inline); prune runs stay inline so their
    latency timing has the machine to itself. Results come back in input order.
    """
    from tqdm import tqdm

    from prunelab.runners import Job, run_waves

    store = RunStore(runs_dir)
    results: list[dict[str, Any] | None] = [store.result(r.spec) for r in runs]
    todo = [i for i, result in enumerate(results) if result is None]

    def job(i: int) -> Job:
        spec = runs[i].spec
        args = (spec.model_dump_json(), str(store.root), data_dir, device)
        return Job(str(i), _run_job, args, inline=runs[i].stage == "prune")

    waves = [
        [job(i) for i in todo if runs[i].stage == "large"],
        [job(i) for i in todo if runs[i].stage == "prune"],
        [job(i) for i in todo if runs[i].stage in PROTOCOLS],
    ]
    bar = tqdm(
        total=len(runs),
        initial=len(runs) - len(todo),
        desc=description,
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        done = run_waves(waves, workers=jobs, device=device, bar=bar)
    finally:
        bar.close()
    for key, result in done.items():
        results[int(key)] = result
    return [r if r is not None else {} for r in results]


# ---------------------------------------------------------------------------------------------------
# Summary and verdicts
# ---------------------------------------------------------------------------------------------------

#: Rows of a method's table, in order: the large model, the pruned model before training, protocols.
ROWS = ("large", "pruned", *PROTOCOLS)
ROW_LABELS = {
    "large": "large model",
    "pruned": "pruned, no training",
    "finetune": "fine-tuned",
    "scratch_e": "Scratch-E",
    "scratch_b": "Scratch-B",
}


@dataclass(frozen=True)
class Comparison:
    """Scratch (E or B) against fine-tune for one method, paired over seeds.

    Attributes:
        test: paired t-test (two-sided) of scratch − fine-tune final test accuracy (fractions).
        n_pairs: seeds with both runs finished.
        ci_overlap: whether the two protocols' own 95% CIs (over seeds) overlap.
    """

    method: str
    protocol: str
    test: PairedTest
    n_pairs: int
    ci_overlap: bool

    @property
    def conclusion(self) -> str:
        p, diff = self.test.p_value, self.test.diff.mean
        if math.isnan(p):
            return "inconclusive (fewer than 2 seeds)"
        if p < SIGNIFICANCE and diff > 0:
            return "scratch better than fine-tune"
        if p < SIGNIFICANCE and diff < 0:
            return "scratch worse than fine-tune"
        return "scratch matches fine-tune (no significant difference)"

    @property
    def supports_paper(self) -> bool | None:
        """The paper's claim (scratch is not worse than fine-tune) holds; None when inconclusive."""
        if math.isnan(self.test.p_value):
            return None
        return not (self.test.p_value < SIGNIFICANCE and self.test.diff.mean < 0)


@dataclass
class MethodSummary:
    """One method's table: accuracy per row, cost of the large and the pruned model, comparisons.

    ``params`` / ``flops`` are means over seeds (automatically found architectures differ by seed);
    ``epochs`` maps a row to the epochs each seed trained (Scratch-B differs when FLOPs do).
    ``latency`` is ``{device: {"full"|"pruned": [record dict per batch size]}}`` from the first seed.
    """

    method: str
    accuracy: dict[str, Estimate]
    values: dict[str, dict[int, float]]
    epochs: dict[str, list[int]]
    params: dict[str, float]
    flops: dict[str, float]
    masked: bool
    latency: dict[str, Any]
    comparisons: list[Comparison]
    architecture: dict[str, Any] | None = None

    @property
    def flops_reduction(self) -> float:
        """FLOPs(full) / FLOPs(pruned) (nonzero-aware for masked models)."""
        return self.flops["full"] / self.flops["pruned"] if self.flops.get("pruned") else math.nan

    @property
    def params_density(self) -> float:
        """Kept fraction of all parameters (pruned / full)."""
        return self.params["pruned"] / self.params["full"] if self.params.get("full") else math.nan


@dataclass
class RethinkingSummary:
    """Everything the report shows."""

    study: RethinkingStudy
    methods: list[MethodSummary]
    missing: int = 0
    notes: list[str] = field(default_factory=list)


def latency_ms(record: dict[str, Any]) -> float:
    """Milliseconds per batch of a latency record (median when recorded, else mean)."""
    for key in ("median_ms", "mean_ms", "ms", "latency_ms"):
        if key in record and record[key] is not None:
            return float(record[key])
    return math.nan


def latency_speedups(latency: dict[str, Any]) -> list[tuple[str, int, float, float, float]]:
    """``(device, batch size, full ms, pruned ms, speedup = full / pruned)`` per device and batch size."""
    out = []
    for device, pair in latency.items():
        for full, pruned in zip(pair.get("full", []), pair.get("pruned", []), strict=False):
            f, p = latency_ms(full), latency_ms(pruned)
            out.append((device, int(full.get("batch_size", 0)), f, p, f / p if p else math.nan))
    return out


def summarize(
    study: RethinkingStudy, runs: Sequence[StudyRun], results: Sequence[dict[str, Any] | None]
) -> RethinkingSummary:
    """Aggregate finished runs (``results[i]`` belongs to ``runs[i]``; None or ``{}`` = not finished)."""
    by_hash = {
        run.spec.run_hash(): result
        for run, result in zip(runs, results, strict=True)
        if result and result.get("status") == "done"
    }
    missing = sum(1 for r in results if not r or r.get("status") != "done")
    summaries: list[MethodSummary] = []
    for method in study.methods:
        values: dict[str, dict[int, float]] = {row: {} for row in ROWS}
        epochs: dict[str, list[int]] = {row: [] for row in ROWS}
        params: dict[str, list[float]] = {"full": [], "pruned": []}
        flops: dict[str, list[float]] = {"full": [], "pruned": []}
        latency: dict[str, Any] = {}
        masked = False
        architecture = None
        for seed in study.seeds:
            for row, spec in method_specs(study, method, seed).items():
                result = by_hash.get(spec.run_hash())
                if result is None or result.get("final_test_acc") is None:
                    continue
                values[row][seed] = float(result["final_test_acc"])
                epochs[row].append(int(result.get("epochs", 0)))
                if row == "pruned":
                    for key in ("full", "pruned"):
                        params[key].append(float(result["params"][key]))
                        flops[key].append(float(result["flops"][key]))
                    masked = bool(result.get("masked"))
                    if not latency:
                        latency = result.get("latency", {})
                        architecture = result.get("architecture")
        accuracy = {row: mean_ci([values[row][s] for s in sorted(values[row])]) for row in ROWS}
        comparisons = []
        for protocol in ("scratch_e", "scratch_b"):
            seeds = sorted(set(values[protocol]) & set(values["finetune"]))
            if not seeds:
                continue
            treated = [values[protocol][s] for s in seeds]
            control = [values["finetune"][s] for s in seeds]
            a, b = mean_ci(treated), mean_ci(control)
            comparisons.append(
                Comparison(
                    method.label,
                    protocol,
                    paired_test(treated, control),
                    len(seeds),
                    ci_overlap=a.low <= b.high and b.low <= a.high,
                )
            )
        summaries.append(
            MethodSummary(
                method=method.label,
                accuracy=accuracy,
                values=values,
                epochs=epochs,
                params={k: sum(v) / len(v) for k, v in params.items() if v},
                flops={k: sum(v) / len(v) for k, v in flops.items() if v},
                masked=masked,
                latency=latency,
                comparisons=comparisons,
                architecture=architecture,
            )
        )
    return RethinkingSummary(study=study, methods=summaries, missing=missing)


def run_rethinking_study(
    study: RethinkingStudy,
    runs_dir: str | Path,
    *,
    report_dir: str | Path | None = None,
    jobs: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[RethinkingSummary, Path]:
    """Run (or resume) every run of ``study``, summarise, and write the report.

    Returns the summary and the path of the HTML report (``report_dir``, default
    ``<runs_dir>/reports/<study name>``).
    """
    from prunelab.report.rethinking import write_rethinking_report

    runs = study_runs(study)
    from prunelab.studies import record_study

    # Written first, so `prunelab report` can rebuild a partial study's report after a kill.
    out = record_study(study, runs_dir, report_dir, [r.spec.run_name() for r in runs], kind=STUDY_KIND)
    results = run_study_runs(
        runs, runs_dir, jobs=jobs, data_dir=data_dir, device=device, progress=progress, description=study.name
    )
    summary = summarize(study, runs, results)
    html = write_rethinking_report(summary, out)
    return summary, html


# ---------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------

PRESETS = ("small", "paper")

#: Large models per dataset: each has BN after every conv (network slimming needs its scales).
_MODELS: dict[str, tuple[str, dict[str, OptionValue]]] = {
    "mnist1d": ("cnn1d", {"bn": True}),
    "synthetic": ("cnn1d", {"bn": True}),
    "digits": ("cnn2d", {}),
    "cifar10": ("vgg16", {}),
    "cifar100": ("vgg16", {}),
}

#: The small preset's recipe on the embedded data: the paper's schedule shape (lr 0.1, x0.1 at 50% and
#: 75%) over 30 epochs, batch 128 so that the whole study fits in minutes on 2 CPU cores.
SMALL_TRAIN = TrainConfig(epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, augment=False)

#: The small preset's method options: moderate pruning, so Scratch-B stays within a few times E.
_SMALL_OPTIONS: dict[str, dict[str, OptionValue]] = {"slimming": {"percent": 0.5}}


def _predefined_for(model: str) -> str | None:
    """The name of the ``-A`` predefined L1-norm config of ``model`` (VGG-16-A, ResNet-56-A, ...), if any."""
    from prunelab.pruning.structured.configs import PREDEFINED

    want = f"{model}a".replace("-", "").replace("_", "").lower()
    for name in PREDEFINED:
        if str(name).replace("-", "").replace("_", "").lower() == want:
            return str(name)
    return None


def rethinking_preset(
    preset: str = "small",
    *,
    data: str | None = None,
    model: str | None = None,
    model_options: dict[str, OptionValue] | None = None,
    methods: Sequence[str] | None = None,
    method_options: dict[str, dict[str, OptionValue]] | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    name: str | None = None,
) -> RethinkingStudy:
    """A ready study: ``small`` (embedded data, 30 epochs, 3 seeds; minutes on a CPU) or ``paper``
    (CIFAR-10 VGG-16 with the paper's 160-epoch recipe, 5 seeds as in its CIFAR tables).

    Args:
        data, model: override the preset's dataset / model (the model default follows the dataset:
            cnn1d with BN for MNIST-1D, cnn2d for digits, VGG-16 for CIFAR).
        model_options: constructor options (default: what the preset's model needs).
        methods: method names (default: every registered method that fits the model; residual-block
            methods such as sss only for ResNets).
        method_options: ``{method: {option: value}}`` on top of the preset's.
        seeds: number of seeds (0..N-1).
        epochs: the large model's epochs (Scratch-E's; fine-tune a quarter, Scratch-B scaled).
    """
    if preset not in PRESETS:
        raise PrunelabError(f"unknown preset {preset!r}; valid choices: {', '.join(PRESETS)}")
    from prunelab.data import DATASETS
    from prunelab.models import MODELS
    from prunelab.spec import parse_model

    if data:
        DATASETS.get(data)  # unknown names raise, naming the valid choices
    data_name = data.lower() if data else ("mnist1d" if preset == "small" else "cifar10")
    default_model, default_options = _MODELS.get(data_name, ("cnn1d", {"bn": True}))
    model_name = model.lower() if model else default_model
    MODELS.get(model_name)
    options: dict[str, OptionValue] = dict(default_options) if model_name == default_model else {}
    if preset == "paper" and model_name.startswith("vgg"):
        # Liu et al.'s CIFAR VGG: Linear-BN-ReLU-Linear head, BN scales initialised at 0.5
        options.update({"classifier": "rethinking", "bn_gamma": 0.5})
    options.update(model_options or {})
    embedded = DATASETS.get(data_name).embedded
    train = SMALL_TRAIN if embedded else TrainConfig()
    if epochs is not None:
        if epochs < 1:
            raise PrunelabError(f"--epochs must be at least 1, got {epochs}")
        train = train.model_copy(update={"epochs": epochs})
    family = MODELS.get(model_name).family
    registry = _structured_methods()
    names = (
        list(methods)
        if methods
        else [n for n, m in registry.items() if m.kind != "block" or family == "resnet"]
    )
    chosen: list[MethodSpec] = []
    for method in names:
        canonical = registry.get(method).name
        opts: dict[str, OptionValue] = dict(_SMALL_OPTIONS.get(canonical, {})) if preset == "small" else {}
        if preset == "paper" and canonical == "l1norm":
            config = _predefined_for(model_name)
            if config is not None:
                opts["config"] = config
        opts.update((method_options or {}).get(canonical, {}))
        chosen.append(
            parse_model(MethodSpec, {"name": canonical, "options": opts}, f"options of {canonical}")
        )
    n_seeds = seeds if seeds is not None else (3 if preset == "small" else 5)
    if n_seeds < 1:
        raise PrunelabError(f"--seeds must be at least 1, got {n_seeds}")
    study: RethinkingStudy = parse_model(
        RethinkingStudy,
        {
            "name": name or f"rethinking-{preset}-{data_name}-{model_name}",
            "data": {"name": data_name},
            "model": {"name": model_name, "options": options},
            "train": train.model_dump(),
            "methods": [m.model_dump() for m in chosen],
            "seeds": list(range(n_seeds)),
        },
        "study options",
    )
    return study


def rebuild_report(report_dir: str | Path, runs_dir: str | Path | None = None) -> Path:
    """Rewrite a study's report from its stored runs (no training); returns ``report.html``."""
    from prunelab.report.rethinking import write_rethinking_report
    from prunelab.spec import parse_model

    path = Path(report_dir) / STUDY_FILE
    if not path.is_file():
        raise PrunelabError(f"no {STUDY_FILE} in {str(report_dir)!r}")
    payload = json.loads(path.read_text())
    if payload.get("kind") != STUDY_KIND:
        raise PrunelabError(
            f"{str(path)!r} records a {payload.get('kind')!r} study, not a {STUDY_KIND!r} one"
        )
    study = parse_model(RethinkingStudy, payload["study"], str(path))
    store = RunStore(runs_dir or payload["runs_dir"])
    runs = study_runs(study)
    summary = summarize(study, runs, [store.result(r.spec) for r in runs])
    return write_rethinking_report(summary, Path(report_dir))


def finetune_epochs_of(study: RethinkingStudy) -> int:
    """The fine-tune epochs the study uses (its own setting or a quarter of the large epochs)."""
    return finetune_config(study.train, epochs=study.finetune_epochs).epochs
