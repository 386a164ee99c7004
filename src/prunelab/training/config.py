"""The training hyper-parameters (one typed home, shared by the API, specs and the CLI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
        milestones: fractions of ``epochs`` at which the multistep schedule decays.
        gamma: multistep decay factor.
        augment: apply the dataset's augmentation to training batches.
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
    gamma: float = Field(0.1, gt=0)
    augment: bool = True

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (0.0 < m < 1.0) for m in value):
            raise ValueError(f"milestones are fractions of training in (0, 1), got {value}")
        return tuple(sorted(value))

    def lr_at(self, epoch: int) -> float:
        """The learning rate used during epoch ``epoch`` (0-based)."""
        if self.schedule == "constant" or self.epochs == 0:
            return self.lr
        if self.schedule == "cosine":
            import math

            return 0.5 * self.lr * (1.0 + math.cos(math.pi * epoch / self.epochs))
        decays = sum(1 for m in self.milestones if epoch >= int(m * self.epochs))
        return self.lr * self.gamma**decays
