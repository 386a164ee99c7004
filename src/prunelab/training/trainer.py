"""The one training loop. The mask is an invariant: after every optimizer step each pruned weight
is exactly zero and its momentum is zero.

How: gradients of pruned entries are zeroed before the step (so weight decay and momentum add
nothing there), weights are re-multiplied by the mask after the step (belt and braces against any
optimizer that writes everywhere), and momentum buffers are masked when training starts or resumes.
Both mask passes are single ``torch._foreach_mul_`` calls over all prunable tensors.

The fast path (mixed precision, channels_last, ``torch.compile``, the SGD implementation, cuDNN
flags) is configured by :class:`TrainConfig` and implemented in :mod:`prunelab.training.fast`; the
mask passes run eagerly and unchanged in every mode. No host synchronisation happens inside an
epoch on the trainer's side: losses and correct counts accumulate on the device and are read once
per epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError
from prunelab.pruning.mask import Mask
from prunelab.training import fast
from prunelab.training.config import TrainConfig
from prunelab.training.distributed import Shard


class MaskEnforcer:
    """Keeps ``mask`` an invariant of training ``model`` with ``optimizer``."""

    def __init__(self, model: nn.Module, mask: Mask | None, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params: list[Tensor] = []
        self.masks: list[Tensor] = []
        if mask is not None:
            for name, param in mask.check_fits(model).items():
                self.params.append(param)
                # Same dtype, device and memory layout (channels_last too) as the weight, so the
                # foreach multiplies take their fast path.
                self.masks.append(torch.empty_like(param).copy_(mask[name]))

    @torch.no_grad()
    def apply_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def mask_grads(self) -> None:
        grads = [p.grad for p in self.params]
        if self.params and all(g is not None for g in grads):
            torch._foreach_mul_(grads, self.masks)  # type: ignore[arg-type]
        else:
            for g, m in zip(grads, self.masks, strict=True):
                if g is not None:
                    g.mul_(m)

    @torch.no_grad()
    def clear_state(self) -> None:
        """Zero optimizer state (momentum) of pruned entries."""
        for param, m in zip(self.params, self.masks, strict=True):
            for value in self.optimizer.state.get(param, {}).values():
                if isinstance(value, Tensor) and value.shape == param.shape:
                    value.mul_(m)


@dataclass
class EpochRecord:
    """Metrics of one epoch. Accuracies are fractions in [0, 1]; losses are mean cross-entropy."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Where training stands; what a checkpoint holds."""

    epoch: int  # epochs completed
    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]  # with the loss scaler's state under SCALER_KEY (fp16 runs)
    generator_state: Tensor


@dataclass
class TrainResult:
    """Per-epoch history and the final/best test accuracy (fractions)."""

    history: list[EpochRecord] = field(default_factory=list)

    @property
    def final_test_acc(self) -> float:
        return self.history[-1].test_acc if self.history else float("nan")

    @property
    def best_test_acc(self) -> float:
        return max((r.test_acc for r in self.history), default=float("nan"))


#: Key of the fp16 loss scaler's state inside :attr:`TrainState.optimizer_state` (so checkpoints
#: written by any store carry it without a new field).
SCALER_KEY = "prunelab_grad_scaler"

#: Called after each epoch with the record and a thunk producing the state to checkpoint.
EpochCallback = Callable[[EpochRecord, Callable[[], TrainState]], None]


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def decay_groups(model: nn.Module, exclude: str) -> list[dict[str, Any]]:
    """Parameter groups for SGD: all parameters decayed (``exclude="none"``), or the normalisation
    layers' parameters (``"norm"``), and also every bias (``"norm_bias"``), in a group without decay."""
    if exclude == "none":
        return [{"params": list(model.parameters())}]
    spared: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or (exclude == "norm_bias" and name == "bias"):
                spared.add(id(param))
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) not in spared]},
        {"params": [p for p in params if id(p) in spared], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD per ``config``: momentum (Nesterov optional), weight decay on the groups it names, in
    the implementation ``config.optimizer_impl`` names (:func:`prunelab.training.fast.optimizer_kwargs`;
    the device is that of the model's first parameter)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    return torch.optim.SGD(
        decay_groups(model, config.weight_decay_exclude),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
        **fast.optimizer_kwargs(config.optimizer_impl, device, config.precision),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataBundle,
    batch_size: int = 1000,
    *,
    split: str = "test",
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy fraction)`` on the evaluation split (``"test"``: the test
    split, or the validation hold-out when the data has one) or on the held-out test split
    (``"heldout"``: the real test split behind a validation hold-out).

    ``batch_size``: examples per forward pass (see :func:`prunelab.training.fast.eval_batch_size`
    for the trainer's choice per device). ``precision``: autocast as in training (``"fp32"``:
    none). ``channels_last``: feed 4-D batches in channels_last layout (for a model held so).
    The sums stay on the device (float64 loss, exact as a Python float sum) and are read once.
    """
    model.eval()
    device = data.device
    # float64 sums equal the Python-float sums bitwise; MPS has no float64.
    total_loss = torch.zeros(
        (), device=device, dtype=torch.float32 if device.type == "mps" else torch.float64
    )
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    batches = data.heldout_batches(batch_size) if split == "heldout" else data.test_batches(batch_size)
    for x, y in batches:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with fast.autocast(x.device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits, y, reduction="sum")
        total_loss += loss
        correct += (logits.argmax(1) == y).sum()
        count += y.shape[0]
    return float(total_loss) / max(count, 1), int(correct) / max(count, 1)


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    mask: Mask | None = None,
    generator: torch.Generator | None = None,
    resume: TrainState | None = None,
    callbacks: Sequence[EpochCallback] = (),
    progress: Callable[[int, int], None] | None = None,
    start_epoch: int = 0,
    after_backward: Sequence[Callable[[], None]] = (),
    after_step: Sequence[Callable[[float], None]] = (),
    shard: Shard | None = None,
    eval_batch_size: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with SGD; pruned weights (``mask`` False) stay exactly zero.

    Args:
        model: the network, on the data's device.
        data: the dataset bundle.
        config: the recipe.
        mask: the pruning mask, or None for dense training.
        generator: CPU generator for data order and augmentation (its state is checkpointed).
        resume: continue from this state (epochs already done are skipped).
        callbacks: called after each epoch (metrics writing, checkpointing).
        progress: called as ``progress(epochs_done, epochs_total)``.
        start_epoch: first epoch to run when not resuming; the lr schedule continues from there
            (weight rewinding to epoch k trains epochs k..E-1 at their scheduled rates).
        after_backward: called after each backward pass, before the gradients of pruned weights
            are masked and the step is taken (e.g. the L1 penalty on BN scales of network slimming).
        after_step: called with the step's learning rate after each optimizer step (and after the
            mask is re-applied), e.g. the proximal L1 step of Sparse Structure Selection.
        shard: this process's rank in a distributed run (``config.nproc`` ranks; None: one
            process): the model trains wrapped in DistributedDataParallel on this rank's slice of
            each global batch, and only rank 0 evaluates (see :mod:`prunelab.training.distributed`).
        eval_batch_size: examples per evaluation forward pass; None: 1000 on CPU, more on CUDA
            (:func:`prunelab.training.fast.eval_batch_size`). Changes no trained weight.

    The fast path (``config.precision``, ``channels_last``, ``compile``, ``optimizer_impl``,
    ``deterministic``; see :class:`TrainConfig` and :mod:`prunelab.training.fast`) leaves the mask
    invariant as it is: gradients masked before every step, weights after it, momentum at the
    start, all in float32. With fp16 the loss scaler may skip a step (inf/NaN gradients), which
    changes neither weights nor momentum.
    """
    ranks = 1 if shard is None else shard.world
    if config.nproc != ranks:
        raise PrunelabError(
            f"train.nproc={config.nproc} but this training runs in {ranks} process(es): only training "
            "runs (prunelab train, RunSpec) launch several processes; set train.nproc=1 here"
        )
    device = data.device
    fast.check_supported(config.precision, device)
    if config.compile and (why := fast.compile_unavailable(device.type)) is not None:
        raise PrunelabError(f"train.compile=true cannot run here: {why}; set compile: false")
    channels_last = fast.uses_channels_last(config.channels_last, data.input_shape)
    if eval_batch_size is None:
        eval_batch_size = fast.eval_batch_size(device, data.input_shape)
    if not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch {start_epoch} outside [0, {config.epochs}]")
    generator = generator or torch.Generator().manual_seed(0)
    with contextlib.ExitStack() as restore:
        restore.enter_context(fast.backend_flags(device, config.deterministic))
        # Before the optimizer and the resumed state: parameters keep their identity, and loaded
        # weights are copied into the channels_last layout.
        restore.enter_context(fast.memory_format(model, channels_last))
        loop = _Loop(model, device, config, mask, generator, resume, shard, after_backward, after_step)
        start = resume.epoch if resume is not None else start_epoch
        result = TrainResult()
        for epoch in range(start, config.epochs):
            began = time.perf_counter()
            lr = config.lr_at(epoch)
            train_loss, train_acc = loop.epoch(data, lr, channels_last)
            # Rank 0 alone evaluates (the whole test split, as one process) with the eager model
            # (sharing the compiled one's weights: no recompilation for eval mode or batch size);
            # only its records are written.
            test_loss, test_acc = (
                evaluate(
                    model, data, eval_batch_size, precision=config.precision, channels_last=channels_last
                )
                if shard is None or shard.leads
                else (math.nan, math.nan)
            )
            record = EpochRecord(
                epoch=epoch + 1,
                lr=lr,
                train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                seconds=time.perf_counter() - began,
            )
            result.history.append(record)
            for callback in callbacks:
                callback(record, loop.snapshot(epoch + 1))
            if progress is not None:
                progress(epoch + 1, config.epochs)
    return result


class _Loop:
    """The state of one :func:`train` call (optimizer, loss scaler, mask enforcer, the network it
    steps: DDP-wrapped and/or compiled) and its epoch of steps."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        config: TrainConfig,
        mask: Mask | None,
        generator: torch.Generator,
        resume: TrainState | None,
        shard: Shard | None,
        after_backward: Sequence[Callable[[], None]],
        after_step: Sequence[Callable[[float], None]],
    ) -> None:
        self.model, self.config, self.generator, self.shard = model, config, generator, shard
        self.after_backward, self.after_step = after_backward, after_step
        self.optimizer = make_optimizer(model, config)
        self.scaler = fast.grad_scaler(device, config.precision)
        if resume is not None:
            model.load_state_dict(resume.model_state)
            optimizer_state = dict(resume.optimizer_state)
            scaler_state = optimizer_state.pop(SCALER_KEY, None)
            self.optimizer.load_state_dict(optimizer_state)
            if self.scaler is not None and scaler_state is not None:
                self.scaler.load_state_dict(scaler_state)
            generator.set_state(resume.generator_state)
        self.enforcer = MaskEnforcer(model, mask, self.optimizer)
        self.enforcer.apply_weights()
        self.enforcer.clear_state()
        # DDP after the mask and the resumed state are in place: wrapping broadcasts rank 0's weights.
        net = model if shard is None else shard.wrap(model)
        self.net = fast.compile_model(net) if config.compile else net

    def snapshot(self, epoch_done: int) -> Callable[[], TrainState]:
        """A thunk producing the checkpoint after ``epoch_done`` epochs (built only if called)."""

        def state() -> TrainState:
            optimizer_state = self.optimizer.state_dict()
            if self.scaler is not None:  # the loss scale travels with the optimizer state
                optimizer_state[SCALER_KEY] = self.scaler.state_dict()
            return TrainState(
                epoch_done,
                # Contiguous copies: a checkpoint is the same whatever the training layout.
                {
                    k: v.detach().clone(memory_format=torch.contiguous_format)
                    for k, v in self.model.state_dict().items()
                },
                optimizer_state,
                self.generator.get_state(),
            )

        return state

    def epoch(self, data: DataBundle, lr: float, channels_last: bool) -> tuple[float, float]:
        """One epoch of steps at learning rate ``lr``: ``(mean training loss, training accuracy)``
        over every example of the epoch (all ranks' in a distributed run), read once at its end."""
        config, shard, optimizer, scaler = self.config, self.shard, self.optimizer, self.scaler
        device = data.device
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        batches = (
            (
                (x, y, 0)
                for x, y in data.train_batches(config.batch_size, self.generator, augment=config.augment)
            )
            if shard is None
            else data.train_shard_batches(
                config.batch_size, self.generator, shard.rank, shard.world, augment=config.augment
            )
        )
        for x, y, whole in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with fast.autocast(device, config.precision):
                logits = self.net(x)
                if shard is None:
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                    summed = loss.detach() * y.shape[0]
                else:
                    # This rank's part of the global batch mean (``whole`` examples): DDP averages
                    # the ranks' gradients, so the step is the one-process step on the whole batch.
                    summed = F.cross_entropy(
                        logits, y, reduction="sum", label_smoothing=config.label_smoothing
                    )
                    loss = summed * (shard.world / whole)
                    summed = summed.detach()
            optimizer.zero_grad(set_to_none=False)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                if self.after_backward:  # hooks see (and may add to) the true gradients
                    scaler.unscale_(optimizer)
            for hook in self.after_backward:
                hook()
            self.enforcer.mask_grads()
            if scaler is None:
                optimizer.step()
            else:  # skips the step (weights and momentum untouched) on inf/NaN gradients
                scaler.step(optimizer)
                scaler.update()
            self.enforcer.apply_weights()
            for step_hook in self.after_step:
                step_hook(lr)
            # Accumulate on device: no host sync per step.
            loss_sum += summed
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
        if shard is not None:  # the epoch's training metrics over every rank's examples
            totals = shard.sum_(
                torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()])
            )
            loss_sum, correct, seen = totals[0], totals[1].long(), int(totals[2])
        return float(loss_sum) / max(seen, 1), int(correct) / max(seen, 1)
