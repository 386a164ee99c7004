"""The fast path of one run (precision, channels_last, compile, SGD implementation) keeps the mask
invariant after every step, the default path is bitwise today's loop, every mode is bitwise
reproducible on CPU, the fp16 loss scale survives a resume, and the throughput benchmark runs.

All on CPU with tiny models; ``torch.compile`` needs Inductor's C++ compiler and is skipped (with the
reason) where there is none.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunelab
from prunelab.data import load_dataset
from prunelab.data.bundle import DataBundle
from prunelab.data.transforms import CropFlip
from prunelab.errors import PrunelabError
from prunelab.pruning.mask import Mask
from prunelab.spec import DataSpec, ModelSpec, RunSpec
from prunelab.training import fast, trainer
from prunelab.training.config import TrainConfig
from prunelab.training.trainer import TrainState, decay_groups, evaluate, train

BENCH = Path(__file__).resolve().parents[1] / "bench"
COMPILE_SKIP = fast.compile_unavailable("cpu")


def image_data() -> DataBundle:
    """Tiny 3x8x8 image classes with crop+flip augmentation (so the generator is exercised)."""
    data = load_dataset("synthetic", num_classes=4, input_shape=(3, 8, 8), train_size=96, test_size=40)
    return DataBundle(
        name="tiny-images",
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        num_classes=4,
        augmentation=CropFlip(2),
    )


def cnn(seed: int = 0) -> nn.Module:
    return prunelab.build_model("cnn2d", (3, 8, 8), 4, seed=seed, width=4)


def weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def reference_train(
    model: nn.Module, data: DataBundle, config: TrainConfig, mask: Mask, generator: torch.Generator
) -> list[tuple[float, float, float, float]]:
    """The training loop and evaluation as they were before the fast path (one process, no hooks),
    written out: returns (train loss, train acc, test loss, test acc) per epoch."""
    optimizer = torch.optim.SGD(
        decay_groups(model, config.weight_decay_exclude),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )
    named = dict(model.named_parameters())
    params = [named[n] for n in mask]
    masks = [mask[n].to(dtype=named[n].dtype) for n in mask]
    with torch.no_grad():
        torch._foreach_mul_(params, masks)
    history = []
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        model.train()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        seen = 0
        for x, y in data.train_batches(config.batch_size, generator, augment=config.augment):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            with torch.no_grad():
                torch._foreach_mul_([p.grad for p in params], masks)
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(params, masks)
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
        model.eval()
        total, right, count = 0.0, 0, 0
        with torch.no_grad():
            for x, y in data.test_batches(1000):
                logits = model(x)
                total += float(F.cross_entropy(logits, y, reduction="sum"))
                right += int((logits.argmax(1) == y).sum())
                count += y.shape[0]
        history.append((float(loss_sum) / seen, int(correct) / seen, total / count, right / count))
    return history


@pytest.mark.parametrize("model_name", ["cnn2d", "mlp"])
def test_default_path_is_bitwise_the_old_loop(model_name: str) -> None:
    if model_name == "cnn2d":
        data, build = image_data(), cnn
        config = TrainConfig(epochs=2, batch_size=32, lr=0.05, weight_decay_exclude="norm", schedule="cosine")
    else:
        data = load_dataset("synthetic", num_classes=4, input_shape=(1, 16), train_size=96, test_size=40)
        config = TrainConfig(epochs=2, batch_size=16, lr=0.1, nesterov=True, weight_decay=5e-3)

        def build(seed: int = 0) -> nn.Module:
            return prunelab.build_model("mlp", (1, 16), 4, seed=seed, hidden=(16, 16))

    ours, ref = build(), build()
    mask = prunelab.prune(ours, "random", 0.3, seed=0)
    result = train(ours, data, config, mask=mask, generator=torch.Generator().manual_seed(7))
    history = reference_train(ref, data, config, mask, torch.Generator().manual_seed(7))
    assert_bitwise_equal(weights(ours), weights(ref))
    assert [(r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in result.history] == history


def test_evaluate_sums_like_python_floats() -> None:
    data = image_data()
    model = cnn().eval()
    total, right = 0.0, 0
    with torch.no_grad():
        for x, y in data.test_batches(16):
            logits = model(x)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            right += int((logits.argmax(1) == y).sum())
    n = data.test_y.shape[0]
    assert evaluate(model, data, 16) == (total / n, right / n)


#: (TrainConfig fields, model kind) of every mode CPU can run; compile separately below.
MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "channels_last": {"channels_last": True},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "fused": {"optimizer_impl": "fused"},
    "foreach": {"optimizer_impl": "foreach"},
    "fp16_fused": {"precision": "fp16", "optimizer_impl": "fused"},
}


def invariant_run(
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    build: Callable[[], nn.Module],
    data: DataBundle,
    *,
    epochs: int = 2,
) -> tuple[nn.Module, Mask, int]:
    """Train with ``fields`` and check after every step that pruned weights and their momentum are
    exactly zero; returns the model, the mask and the number of steps checked."""
    created: list[torch.optim.Optimizer] = []
    make = trainer.make_optimizer

    def recording(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
        created.append(make(model, config))
        return created[-1]  # type: ignore[return-value]

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    model = build()
    mask = prunelab.prune(model, "random", 0.3, seed=0)
    named = dict(model.named_parameters())
    checked = 0

    def check(lr: float) -> None:
        nonlocal checked
        optimizer = created[-1]
        for name in mask:
            param = named[name]
            assert (param.detach()[~mask[name]] == 0).all(), name
            buf = optimizer.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                assert (buf[~mask[name]] == 0).all(), name
        checked += 1

    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, weight_decay=5e-3, **fields)
    train(model, data, config, mask=mask, generator=torch.Generator().manual_seed(3), after_step=[check])
    # Not vacuous: momentum exists and kept weights moved.
    assert any("momentum_buffer" in s for s in created[-1].state.values())
    return model, mask, checked


@pytest.mark.parametrize("mode", list(MODES))
def test_mask_invariant_and_reproducible_in_every_mode(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = image_data()
    first, mask, steps = invariant_run(monkeypatch, MODES[mode], cnn, data)
    assert steps == 2 * 3  # 96 examples, batch 32, 2 epochs: every step was checked
    second, _, _ = invariant_run(monkeypatch, MODES[mode], cnn, data)
    assert_bitwise_equal(weights(first), weights(second))  # CPU: bitwise reproducible in every mode
    for name, param in first.named_parameters():  # returned in the default layout
        assert param.is_contiguous(), name
    initial = cnn()
    moved = [
        n
        for n in mask
        if not torch.equal(dict(first.named_parameters())[n], dict(initial.named_parameters())[n])
    ]
    assert moved  # training happened


def test_modes_change_the_numbers_they_should() -> None:
    """bf16 and fused really take effect; foreach and for_loop are the default bitwise on CPU."""
    data = image_data()
    results: dict[str, dict[str, Tensor]] = {}
    for name, fields in {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "fused": {"optimizer_impl": "fused"},
        "foreach": {"optimizer_impl": "foreach"},
        "for_loop": {"optimizer_impl": "for_loop"},
        "channels_last": {"channels_last": True},
    }.items():
        model = cnn()
        train(model, data, TrainConfig(epochs=1, batch_size=32, lr=0.05, **fields), mask=None)
        results[name] = weights(model)
    assert_bitwise_equal(results["foreach"], results["fp32"])
    assert_bitwise_equal(results["for_loop"], results["fp32"])
    for changed in ("bf16", "fused"):
        assert any(not torch.equal(results[changed][k], results["fp32"][k]) for k in results["fp32"]), changed
        close = all(
            torch.allclose(results[changed][k], results["fp32"][k], atol=5e-2) for k in results["fp32"]
        )
        assert close, changed  # same training, different rounding


@pytest.mark.parametrize("fields", [{"precision": "fp16"}, {"precision": "bf16", "channels_last": True}])
def test_resume_is_exact_and_keeps_the_loss_scale(fields: dict[str, Any]) -> None:
    data = image_data()
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, **fields)
    # Deep copies: optimizer.state_dict() holds the live momentum tensors (a store saves at once).
    states: list[TrainState] = []
    straight = cnn()
    train(
        straight,
        data,
        config,
        generator=torch.Generator().manual_seed(5),
        callbacks=[lambda record, state: states.append(copy.deepcopy(state()))],
    )
    middle, end = states
    assert all(v.is_contiguous() for v in middle.model_state.values())  # checkpoints: default layout
    resumed_states: list[TrainState] = []
    resumed = cnn(seed=1)  # weights come from the checkpoint
    train(
        resumed,
        data,
        config,
        generator=torch.Generator(),
        resume=middle,
        callbacks=[lambda record, state: resumed_states.append(copy.deepcopy(state()))],
    )
    assert_bitwise_equal(weights(resumed), weights(straight))
    if config.precision == "fp16":
        # The scaler continued: its growth tracker counts steps since the scale last changed.
        scaler_end = end.optimizer_state[trainer.SCALER_KEY]
        assert resumed_states[-1].optimizer_state[trainer.SCALER_KEY] == scaler_end
        assert scaler_end["_growth_tracker"] == 6
    else:
        assert trainer.SCALER_KEY not in end.optimizer_state


@pytest.mark.parametrize("impl", ["auto", "fused"])
def test_fp16_hooks_see_unscaled_gradients(impl: str) -> None:
    data = image_data()
    seen: dict[str, float] = {}
    for precision in ("fp32", "fp16"):
        model = cnn()
        weight = model.classifier.weight

        def hook(precision: str = precision, weight: Tensor = weight) -> None:
            if precision not in seen:
                assert weight.grad is not None
                seen[precision] = float(weight.grad.abs().max())

        config = TrainConfig(epochs=1, batch_size=32, lr=0.05, precision=precision, optimizer_impl=impl)
        train(model, data, config, after_backward=[hook])
    assert seen["fp16"] == pytest.approx(seen["fp32"], rel=0.05)  # not x 65536


@pytest.mark.skipif(COMPILE_SKIP is not None, reason=f"torch.compile cannot run here: {COMPILE_SKIP}")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_model_keeps_the_mask_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    # An MLP: Inductor's C++ compilation of a conv net costs ~45 s cold on 2 cores; the mask passes
    # are the same eager foreach multiplies for any architecture.
    data = load_dataset("synthetic", num_classes=4, input_shape=(1, 16), train_size=64, test_size=32)

    def build() -> nn.Module:
        return prunelab.build_model("mlp", (1, 16), 4, seed=0, hidden=(16,))

    first, _, steps = invariant_run(monkeypatch, {"compile": True}, build, data, epochs=1)
    assert steps == 2
    second, _, _ = invariant_run(monkeypatch, {"compile": True}, build, data, epochs=1)  # reuses the code
    assert_bitwise_equal(weights(first), weights(second))
    assert not hasattr(first, "_orig_mod")  # the caller's model is not replaced


def test_compile_unavailable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "compile_unavailable", lambda device_type: "no C++ compiler")
    data = image_data()
    with pytest.raises(PrunelabError, match="compile: false") as err:
        train(cnn(), data, TrainConfig(epochs=1, compile=True))
    assert "\n" not in str(err.value)


def test_fields_default_to_today_and_enter_the_hash_when_set() -> None:
    assert TrainConfig().model_dump(exclude_defaults=True) == {}
    spec = RunSpec(data=DataSpec(name="synthetic"), model=ModelSpec(name="mlp"), seed=0)
    fast_spec = spec.model_copy(update={"train": TrainConfig(precision="bf16", channels_last=True)})
    assert '"precision":"bf16"' in fast_spec.canonical() and "precision" not in spec.canonical()
    assert fast_spec.run_hash() != spec.run_hash()
    with pytest.raises(ValueError, match="fp32"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="for_loop"):
        TrainConfig(optimizer_impl="apex")  # type: ignore[arg-type]


def test_device_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fast.eval_batch_size(cpu, (3, 32, 32)) == 1000
    assert fast.eval_batch_size(cuda, (3, 32, 32)) == 8192
    assert fast.eval_batch_size(cuda, (3, 224, 224)) == 1000
    assert fast.optimizer_kwargs("auto", cpu, "fp16") == {}
    assert fast.optimizer_kwargs("auto", cuda, "fp16") == {"fused": True}
    assert fast.uses_channels_last(True, (3, 8, 8)) and not fast.uses_channels_last(True, (1, 40))
    with fast.backend_flags(cpu, deterministic=True):  # nothing to set on CPU
        assert not torch.are_deterministic_algorithms_enabled()
    # CUDA flags are plain Python settings: set for the run, restored after (no GPU needed).
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with fast.backend_flags(cuda, deterministic=False):
        assert cudnn.benchmark
    assert not cudnn.benchmark
    with fast.backend_flags(cuda, deterministic=True):
        assert not cudnn.benchmark and cudnn.deterministic and torch.are_deterministic_algorithms_enabled()
    assert not cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()


def test_throughput_benchmark_core_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("throughput", None)
    import throughput

    records = throughput.run_model(
        "resnet20", torch.device("cpu"), batch=2, steps=1, repeats=1, warmup=1, compiled=(False,), pack=2
    )
    assert [(r["masked"], r["precision"], r["packed"]) for r in records] == [
        (False, "fp32", 1),
        (True, "fp32", 1),
        (False, "bf16", 1),
        (True, "bf16", 1),
        (False, "fp32", 2),
        (True, "fp32", 2),
    ]
    assert all(r["pruned_nonzero_after"] == 0 and r["images_per_second"] > 0 for r in records)
    ratios = throughput.summary(records, ["resnet20"])
    assert ratios[0]["masked_over_dense"] is not None and ratios[0]["compiled_over_eager"] is None
    assert ratios[0]["packed_over_one"] is not None
