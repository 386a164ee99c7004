"""Training protocols after pruning (Liu et al. 2019, "Rethinking the Value of Network Pruning").

Each protocol is a pure function from the large model's recipe (and, for Scratch-B, the FLOPs of the
full and the pruned model) to the recipe the pruned model is trained with:

- **Fine-tune**: start from the pruned weights; constant lr 0.001 for a quarter of the large model's
  epochs (40 at the CIFAR 160-epoch scale), no decay (``main_finetune.py``; weight-level uses
  ``--schedule 41 42``, i.e. never decays).
- **Scratch-E**: fresh initialisation, exactly the large model's recipe (same epochs, same schedule).
- **Scratch-B**: fresh initialisation, the same *computation budget*:
  ``E_B = int(E * FLOPs(full) / FLOPs(pruned))`` epochs, the schedule scaled with it. Milestones are
  fractions of the epochs (:class:`TrainConfig`), so a 0.5/0.75 multistep schedule decays at epochs
  ``int(0.5 * E_B)`` and ``int(0.75 * E_B)``, as ``main_B.py`` does. For masked (weight-level, SFP)
  models the FLOPs are the nonzero-aware count (``cifar/weight-level/cifar_B.py``).

The fine-tune epochs are ignored in the budget, as in the paper ("fine-tuning does not take too long").
"""

from __future__ import annotations

from typing import Literal

from prunelab.errors import PrunelabError
from prunelab.training.config import TrainConfig

#: The three protocols, in report order.
Protocol = Literal["finetune", "scratch_e", "scratch_b"]
PROTOCOLS: tuple[Protocol, ...] = ("finetune", "scratch_e", "scratch_b")

#: Fine-tuning lr of every CIFAR and ImageNet script of the paper.
FINETUNE_LR = 0.001
#: Fine-tune epochs as a fraction of the large model's: 40 of 160 on CIFAR.
FINETUNE_FRACTION = 0.25


def flops_ratio(flops_full: float, flops_pruned: float) -> float:
    """``FLOPs(full) / FLOPs(pruned)`` (>= 1 for any real pruning); both counts must be positive."""
    if not (flops_full > 0 and flops_pruned > 0):
        raise PrunelabError(f"FLOP counts must be positive, got full={flops_full}, pruned={flops_pruned}")
    return float(flops_full) / float(flops_pruned)


def scratch_b_epochs(
    epochs: int, flops_full: float, flops_pruned: float, *, max_ratio: float | None = None
) -> int:
    """Scratch-B epochs: ``int(epochs * FLOPs(full) / FLOPs(pruned))``.

    Args:
        epochs: the large model's epochs E.
        flops_full: FLOPs of the unpruned model (any unit; only the ratio matters).
        flops_pruned: FLOPs of the pruned model (nonzero-aware for masked models).
        max_ratio: cap on the ratio; ImageNet l1-norm/ThiNet/regression scripts cap at 2 (180 of 90
            epochs). None (the CIFAR scripts) means no cap.

    Returns:
        E_B. A pruned model with *more* FLOPs than the full one (never the case for real pruning)
        would get fewer epochs; that is the formula, not clamped.
    """
    ratio = flops_ratio(flops_full, flops_pruned)
    if max_ratio is not None:
        ratio = min(ratio, max_ratio)
    # The paper computes int(E * (F_full / F_pruned)): ratio first, then the product, then floor.
    return int(epochs * ratio)


def finetune_epochs_default(large_epochs: int) -> int:
    """A quarter of the large model's epochs (40 of 160), at least 1."""
    return max(1, int(large_epochs * FINETUNE_FRACTION))


def finetune_config(large: TrainConfig, *, epochs: int | None = None, lr: float = FINETUNE_LR) -> TrainConfig:
    """The fine-tune recipe: the large model's batch, momentum, weight decay and augmentation, at a
    constant ``lr`` for ``epochs`` (default a quarter of ``large.epochs``)."""
    return large.model_copy(
        update={
            "epochs": finetune_epochs_default(large.epochs) if epochs is None else int(epochs),
            "lr": float(lr),
            "schedule": "constant",
        }
    )


def scratch_e_config(large: TrainConfig) -> TrainConfig:
    """Scratch-E: the large model's recipe unchanged (same epochs, lr and schedule)."""
    return large


def scratch_b_config(
    large: TrainConfig, flops_full: float, flops_pruned: float, *, max_ratio: float | None = None
) -> TrainConfig:
    """Scratch-B: the large recipe over ``E_B`` epochs (:func:`scratch_b_epochs`).

    Milestones are fractions, so they scale with E_B (decays at ``int(m * E_B)``); a cosine schedule
    stretches over E_B the same way.
    """
    return large.model_copy(
        update={"epochs": scratch_b_epochs(large.epochs, flops_full, flops_pruned, max_ratio=max_ratio)}
    )


def protocol_config(
    protocol: str,
    large: TrainConfig,
    *,
    flops_full: float | None = None,
    flops_pruned: float | None = None,
    finetune_epochs: int | None = None,
    finetune_lr: float = FINETUNE_LR,
    max_ratio: float | None = None,
) -> TrainConfig:
    """The recipe of ``protocol`` (``"finetune"``, ``"scratch_e"`` or ``"scratch_b"``).

    ``flops_full`` and ``flops_pruned`` are required for Scratch-B only.
    """
    if protocol == "finetune":
        return finetune_config(large, epochs=finetune_epochs, lr=finetune_lr)
    if protocol == "scratch_e":
        return scratch_e_config(large)
    if protocol == "scratch_b":
        if flops_full is None or flops_pruned is None:
            raise PrunelabError("scratch_b needs the FLOPs of the full and of the pruned model")
        return scratch_b_config(large, flops_full, flops_pruned, max_ratio=max_ratio)
    raise PrunelabError(f"unknown protocol {protocol!r}; valid choices: {', '.join(PROTOCOLS)}")


def decay_epochs(config: TrainConfig) -> list[int]:
    """0-based epochs at which a multistep schedule first uses a decayed lr (``int(m * epochs)``)."""
    if config.schedule != "multistep":
        return []
    return [int(m * config.epochs) for m in config.milestones]
