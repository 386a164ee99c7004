"""The mask is an invariant of training: pruned weights and their momentum stay exactly zero."""

from __future__ import annotations

import pytest
import torch

import prunelab
from prunelab.data import load_dataset
from prunelab.training import MaskEnforcer, TrainConfig
from prunelab.training.trainer import make_optimizer


@pytest.mark.parametrize("nesterov", [False, True])
def test_pruned_weights_and_momentum_stay_zero(nesterov: bool) -> None:
    data = load_dataset("synthetic", num_classes=4, input_shape=(1, 16))
    model = prunelab.build_model("mlp", (1, 16), 4, seed=0, hidden=(32, 32))
    mask = prunelab.prune(model, "snip", 0.2, data=data)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.1, nesterov=nesterov, weight_decay=5e-3)
    seen: list[float] = []

    def after_epoch(record: object, state: object) -> None:
        params = dict(model.named_parameters())
        seen.append(max(float(params[n].detach()[~mask[n]].abs().max()) for n in mask))

    result = prunelab.train(model, data, config, mask=mask, callbacks=[after_epoch])
    assert seen == [0.0, 0.0, 0.0]
    assert result.final_test_acc > 0.4  # 4 classes: learnable, well above chance 0.25


def test_enforcer_masks_every_step_and_clears_momentum() -> None:
    model = prunelab.build_model("mlp", (1, 16), 4, seed=0, hidden=(8,))
    mask = prunelab.prune(model, "random", 0.3)
    optimizer = make_optimizer(model, TrainConfig(lr=0.5, weight_decay=0.1))
    # Momentum state from dense steps (as after a resume onto a new mask) must be cleared.
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    enforcer = MaskEnforcer(model, mask, optimizer)
    enforcer.apply_weights()
    enforcer.clear_state()
    params = dict(model.named_parameters())
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        enforcer.mask_grads()
        optimizer.step()
        enforcer.apply_weights()
        for name in mask:
            assert (params[name][~mask[name]] == 0).all()
            assert (optimizer.state[params[name]]["momentum_buffer"][~mask[name]] == 0).all()


def test_schedules() -> None:
    step = TrainConfig(epochs=160)
    assert [step.lr_at(e) for e in (0, 79, 80, 119, 120, 159)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    cosine = TrainConfig(epochs=10, schedule="cosine")
    assert cosine.lr_at(0) == pytest.approx(0.1) and cosine.lr_at(5) == pytest.approx(0.05)
    assert TrainConfig(schedule="constant", lr=0.01).lr_at(100) == 0.01
    with pytest.raises(ValueError):
        TrainConfig(milestones=(1.5,))


def test_dense_training_learns_mnist1d_quickly() -> None:
    data = load_dataset("mnist1d")
    model = prunelab.build_model("mlp", data.input_shape, data.num_classes, seed=0)
    result = prunelab.train(model, data, TrainConfig(epochs=3, lr=0.05, schedule="cosine", augment=False))
    assert result.final_test_acc > 0.3  # 10 classes, chance 0.1
