"""The training hyper-parameters (one typed home, shared by the API, specs and the CLI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TrainConfig(BaseModel):
    """SGD training recipe. Defaults are Su et al.'s CIFAR recipe (160 epochs, batch 64, lr 0.1
    decayed x0.1 at 50% and 75% of training, momentum 0.9, weight decay 1e-4).

    Attributes:
        epochs: passes over the training split.
        batch_size: examples per step.
        lr: initial learning rate.
        momentum: SGD momentum (0 disables it).
        nesterov: Nesterov momentum (Random_Pruning uses it).
        weight_decay: L2 penalty on all parameters (as in the papers' code, BN and biases included).
        schedule: ``"multistep"`` (x ``gamma`` at each milestone), ``"cosine"`` (to 0) or ``"constant"``.
        milestones: fractions of ``epochs`` at which the multistep schedule decays (epoch
            ``int(m * epochs)``, as the papers' ``MultiStepLR`` at ``int(E/2), int(3E/4)``).
        milestone_epochs: exact epochs of the multistep decays instead (e.g. ImageNet's 30, 60, 80
            of 90); when given, ``milestones`` is ignored.
        gamma: multistep decay factor.
        warmup_epochs: linear warm-up: epoch ``e < warmup_epochs`` runs at ``lr * (e + 1) /
            (warmup_epochs + 1)`` (Random_Pruning's ImageNet code; 0 = none).
        label_smoothing: cross-entropy label smoothing (0 = none; 0.1 in Random_Pruning's ImageNet code).
        weight_decay_exclude: parameters spared weight decay: ``"none"`` (the CIFAR codes decay
            everything), ``"norm"`` (normalisation layers' weights and biases: Random_Pruning's
            ImageNet code skips every parameter named "bn") or ``"norm_bias"`` (those and all biases).
        augment: apply the dataset's augmentation to training batches.
        checkpoint: which weights a run reports: ``"final"`` (the last epoch's) or
            ``"best_validation"`` (the epoch with the best accuracy on the validation hold-out,
            evaluated once on the test split; needs the dataset option ``validation: N``), as
            Random_Pruning's CIFAR-10 code does with its last 5,000 training images.
        nproc: processes the run trains in (DistributedDataParallel; one GPU each on CUDA, gloo
            on CPU); 1 = one process. ``batch_size`` stays the global batch (each process takes
            ``batch_size / nproc`` of every batch, so it must divide it). Part of the run hash
            when above 1: a DDP run sums gradients in another order, so its floating-point
            result differs slightly from one process and it is its own run
            (:mod:`prunelab.training.distributed`).
        precision: arithmetic of the forward and backward passes: ``"fp32"`` (default), ``"bf16"``
            (``torch.autocast`` to bfloat16) or ``"fp16"`` (autocast to float16 with a
            ``GradScaler``, whose scale is checkpointed with the optimizer state). Weights, masks and
            momentum stay float32 in every mode. CPU supports all three in torch 2.13; bf16 on CUDA
            needs Ampere or newer.
        channels_last: hold 4-D weights and image batches in channels_last (NHWC) memory layout
            during training (faster convolutions with tensor cores); no effect on models whose
            examples are not images ``(C, H, W)``. The model is returned in the default layout.
        compile: ``torch.compile`` the model (default mode, Inductor) for training; the mask passes
            stay eager foreach multiplies outside the compiled graph and evaluation runs the eager
            model. Needs a C++ compiler on CPU and Triton on CUDA. First steps pay for compilation.
        optimizer_impl: SGD implementation: ``"auto"`` (torch's default for the device: the
            for-loop on CPU, foreach on CUDA; fused for fp16 on CUDA), ``"foreach"``, ``"fused"``
            (one kernel per step; changes the last bits of the update) or ``"for_loop"``. On CPU
            foreach and for_loop are bitwise equal to auto.
        deterministic: on CUDA, turn cuDNN benchmarking off and ask for deterministic algorithms
            (``torch.use_deterministic_algorithms(warn_only=True)``), for bitwise-reproducible runs
            on one machine and software stack at some cost in speed; no effect on CPU, which is
            deterministic already.

        The five fields above enter the run hash only when set to a non-default value (they
        change the numbers a run produces, or on CUDA whether they are reproducible).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(160, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    milestone_epochs: tuple[int, ...] = ()
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    weight_decay_exclude: Literal["none", "norm", "norm_bias"] = "none"
    augment: bool = True
    checkpoint: Literal["final", "best_validation"] = "final"
    nproc: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    optimizer_impl: Literal["auto", "foreach", "fused", "for_loop"] = "auto"
    deterministic: bool = False

    @model_validator(mode="before")
    @classmethod
    def _named_recipe(cls, data: Any) -> Any:
        # ``train: random_pruning`` or ``{recipe: random_pruning, epochs: 10}``: a named recipe
        # (prunelab.training.recipes) with the given fields on top.
        if isinstance(data, str):
            data = {"recipe": data}
        if isinstance(data, dict) and "recipe" in data:
            from prunelab.training.recipes import RECIPES

            name = str(data["recipe"]).lower()
            if name not in RECIPES:
                raise ValueError(
                    f"unknown recipe {data['recipe']!r}; valid choices: {', '.join(sorted(RECIPES))}"
                )
            rest = {k: v for k, v in data.items() if k != "recipe"}
            data = {**RECIPES[name].model_dump(exclude_defaults=True), **rest}
        return data

    @model_validator(mode="after")
    def _divisible_batch(self) -> TrainConfig:
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by nproc {self.nproc}: each process "
                "takes an equal share of the global batch; choose a multiple of nproc"
            )
        return self

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (0.0 < m < 1.0) for m in value):
            raise ValueError(f"milestones are fractions of training in (0, 1), got {value}")
        return tuple(sorted(value))

    @field_validator("milestone_epochs")
    @classmethod
    def _epochs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in value):
            raise ValueError(f"milestone_epochs are epochs >= 1, got {value}")
        return tuple(sorted(value))

    def decay_epochs(self) -> tuple[int, ...]:
        """The epochs (0-based, the first epoch run at the decayed rate) of the multistep decays."""
        if self.milestone_epochs:
            return self.milestone_epochs
        return tuple(int(m * self.epochs) for m in self.milestones)

    def lr_at(self, epoch: int) -> float:
        """The learning rate used during epoch ``epoch`` (0-based), warm-up included."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.schedule == "constant" or self.epochs == 0:
            return self.lr
        if self.schedule == "cosine":
            import math

            return 0.5 * self.lr * (1.0 + math.cos(math.pi * epoch / self.epochs))
        decays = sum(1 for m in self.decay_epochs() if epoch >= m)
        return self.lr * self.gamma**decays
