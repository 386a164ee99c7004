"""Training: the recipe, the loop with the mask invariant, evaluation."""

from prunelab.training.config import TrainConfig
from prunelab.training.trainer import (
    EpochRecord,
    MaskEnforcer,
    TrainResult,
    TrainState,
    evaluate,
    train,
)

__all__ = ["EpochRecord", "MaskEnforcer", "TrainConfig", "TrainResult", "TrainState", "evaluate", "train"]
