"""The Rethinking protocols: Scratch-B epochs and milestones from FLOPs, fine-tune and Scratch-E recipes."""

from __future__ import annotations

import pytest

from prunelab.errors import PrunelabError
from prunelab.training.config import TrainConfig
from prunelab.training.protocols import (
    decay_epochs,
    finetune_config,
    protocol_config,
    scratch_b_config,
    scratch_b_epochs,
    scratch_e_config,
)

LARGE = TrainConfig()  # the paper's CIFAR recipe: 160 epochs, lr 0.1, x0.1 at 50% and 75%


def _decays(config: TrainConfig) -> list[int]:
    """0-based epochs where the lr actually drops, read off ``lr_at`` (not off the formula)."""
    return [e for e in range(1, config.epochs) if config.lr_at(e) < config.lr_at(e - 1)]


def test_scratch_b_2x_flops_gives_320_epochs_decays_at_160_240() -> None:
    config = scratch_b_config(LARGE, flops_full=2_000_000, flops_pruned=1_000_000)
    assert config.epochs == 320
    assert _decays(config) == [160, 240] == decay_epochs(config)
    assert config.lr_at(159) == pytest.approx(0.1) and config.lr_at(160) == pytest.approx(0.01)
    assert config.lr_at(240) == pytest.approx(0.001)
    # everything but the epochs is the large recipe
    assert config.model_copy(update={"epochs": 160}) == LARGE


def test_scratch_b_1_37x_hand_computed() -> None:
    # 160 * 137/100 = 219.2 -> 219 epochs; decays at int(109.5) = 109 and int(164.25) = 164
    config = scratch_b_config(LARGE, 137, 100)
    assert config.epochs == 219
    assert _decays(config) == [109, 164]


def test_scratch_b_vgg16_a_scale() -> None:
    # VGG-16 vs VGG-16-A on CIFAR (313.73 vs 206.28 MFLOPs): 160 * 1.52090... = 243.34 -> 243
    assert scratch_b_epochs(160, 313_733_000, 206_281_000) == 243
    assert _decays(scratch_b_config(LARGE, 313_733_000, 206_281_000)) == [121, 182]


def test_scratch_b_cap_and_bad_flops() -> None:
    # ImageNet l1-norm scripts: 90 epochs, ratio capped at 2 -> 180
    assert scratch_b_epochs(90, 5, 1, max_ratio=2.0) == 180
    assert scratch_b_epochs(90, 1.5, 1, max_ratio=2.0) == 135
    with pytest.raises(PrunelabError):
        scratch_b_epochs(160, 100, 0)


def test_finetune_is_constant_small_lr_for_a_quarter_of_the_epochs() -> None:
    config = finetune_config(LARGE)
    assert (config.epochs, config.lr, config.schedule) == (40, 0.001, "constant")
    assert {config.lr_at(e) for e in range(config.epochs)} == {0.001}
    assert (config.batch_size, config.weight_decay, config.momentum, config.augment) == (64, 1e-4, 0.9, True)
    assert finetune_config(LARGE, epochs=5, lr=0.01).epochs == 5
    assert finetune_config(LARGE.model_copy(update={"epochs": 2})).epochs == 1  # never zero


def test_scratch_e_and_dispatch() -> None:
    assert scratch_e_config(LARGE) == LARGE
    assert protocol_config("scratch_e", LARGE) == LARGE
    assert protocol_config("finetune", LARGE, finetune_epochs=7).epochs == 7
    assert protocol_config("scratch_b", LARGE, flops_full=3, flops_pruned=1).epochs == 480
    with pytest.raises(PrunelabError):
        protocol_config("scratch_b", LARGE)
    with pytest.raises(PrunelabError, match="valid choices"):
        protocol_config("rewind", LARGE)
