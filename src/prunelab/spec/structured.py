"""The spec of one stored step of structured pruning (Liu et al. 2019's protocol): train the large
model, prune it, then train the pruned architecture by a protocol. Executed by
:mod:`prunelab.runs.structured`; the Rethinking study is a grid of these.

The runs form a small graph::

    large (per seed; shared by every method that trains the large model plainly; its own run for a
           method whose registry entry has training hooks: slimming, sss, sfp)
      └─ prune (per method, seed): pruned weights + architecture, params, FLOPs, latency
           ├─ finetune   (pruned weights, constant lr 0.001)
           ├─ scratch_e  (fresh init, the large model's epochs)
           └─ scratch_b  (fresh init, E·FLOPs(full)/FLOPs(pruned) epochs)
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prunelab.spec import DataSpec, ModelSpec, OptionValue
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import FINETUNE_LR

#: Kept as it was when this spec lived in the Rethinking study, so run hashes stay the same.
STRUCTURED_SPEC_VERSION = "prunelab-rethinking-v1"

Stage = Literal["large", "prune", "finetune", "scratch_e", "scratch_b", "uniform", "guided"]
STAGES: tuple[Stage, ...] = ("large", "prune", "finetune", "scratch_e", "scratch_b", "uniform", "guided")
#: Pruning as architecture search (Liu et al. 2019, section 5), each trained from scratch with the
#: large recipe: ``uniform``, the same model pruned by one ratio in every prunable conv, matched to the
#: parameter count of the architecture the method found; ``guided``, each stage (convs of one output
#: size) kept at the average fraction the method kept there over the ``guide_seeds`` runs.
SEARCH_STAGES: tuple[Stage, ...] = ("uniform", "guided")


def trains_large_model(method: str | None) -> bool:
    """Whether ``method`` trains its own large model (its registry entry carries training hooks)."""
    if method is None:
        return False
    from prunelab.pruning.structured import STRUCTURED_METHODS  # lazily: pulls in torch-pruning

    return bool(STRUCTURED_METHODS.get(method).trains_large_model)


class StructuredRunSpec(BaseModel):
    """One stored step of structured pruning (a ``StoredSpec``, executed by :mod:`prunelab.runs.structured`).

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
    #: The executor kind (:mod:`prunelab.runs`).
    kind: ClassVar[str] = "structured"
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
    #: ``guided`` runs only: the seeds whose found architectures are averaged.
    guide_seeds: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> StructuredRunSpec:
        if self.method is None and (self.stage != "large" or self.options):
            raise ValueError(f"a {self.stage} run needs a method")
        if self.stage != "finetune" and (self.finetune_epochs is not None or self.finetune_lr != FINETUNE_LR):
            raise ValueError("finetune_epochs / finetune_lr belong to finetune runs only")
        if self.stage != "scratch_b" and self.max_ratio is not None:
            raise ValueError("max_ratio belongs to scratch_b runs only")
        if (self.stage == "guided") != bool(self.guide_seeds):
            raise ValueError("guide_seeds belong to guided runs, and a guided run needs them")
        return self

    # -- the StoredSpec protocol ----------------------------------------------------------------
    def canonical(self) -> str:
        """Canonical JSON: non-default fields only (the stage always), sorted keys, no whitespace."""
        body = self.model_dump(mode="json", exclude_defaults=True)
        body["stage"] = self.stage
        return json.dumps({"v": STRUCTURED_SPEC_VERSION, **body}, sort_keys=True, separators=(",", ":"))

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
    def parents(self) -> list[StructuredRunSpec]:
        """Every run this one builds on: one, except a guided run (the prune run of each guide seed)."""
        if self.stage == "guided":
            return [self.prune_run(seed) for seed in self.guide_seeds]
        parent = self.parent()
        return [] if parent is None else [parent]

    def prune_run(self, seed: int | None = None) -> StructuredRunSpec:
        """The prune run of this run's method and options at ``seed`` (default: its own seed)."""
        return StructuredRunSpec(
            stage="prune",
            data=self.data,
            model=self.model,
            train=self.train,
            seed=self.seed if seed is None else seed,
            method=self.method,
            options=self.options,
        )

    def parent(self) -> StructuredRunSpec | None:
        """The run this one builds on: prune -> its large model; a protocol or a uniform arm -> its
        prune run; a guided run -> the prune run of its first guide seed (see :meth:`parents`)."""
        if self.stage == "large":
            return None
        if self.stage == "prune":
            regime = trains_large_model(self.method)
            return StructuredRunSpec(
                stage="large",
                data=self.data,
                model=self.model,
                train=self.train,
                seed=self.seed,
                method=self.method if regime else None,
                options=self.options if regime else {},
            )
        return self.prune_run(self.guide_seeds[0] if self.stage == "guided" else None)
