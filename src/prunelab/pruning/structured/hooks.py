"""What training the *large* model needs for each structured method (before it is pruned).

- ``slimming``: after every backward pass, ``gamma.grad += strength * sign(gamma)`` for every BN scale
  (Liu et al. 2017's ``updateBN``; the L1 subgradient of ``strength * sum |gamma|``).
- ``sss``: the block factors are installed on the model (see :mod:`.blocks`) and after every optimizer
  step take a proximal L1 step (soft thresholding by ``lr * strength``), so they reach exactly zero.
- ``sfp``: before training (when the hooks are made) and after every epoch, each prunable conv's
  ``int(C * (1 - ratio))`` filters of smallest L2 norm are set to zero; gradients are not masked, so
  they may regrow (He et al. 2018; their ``pruning_cifar10_resnet.py`` also masks once before epoch 1).
  Which convs: with ``variant="removable_physical"`` (the default) the independently removable ones,
  with ``"all_convs_masked"`` every conv (He et al. zero filters in every conv layer, the stem, each
  block's last conv and the shortcut convs included).
  The initial zeroing matters with BatchNorm: a filter zeroed in a trained net whose BN shift is
  positive gets a gradient ~1/sqrt(eps) times too large (its channel has zero batch variance), jumps
  to a huge norm and then outranks the healthy filters, which get zeroed next; on MNIST-1D cnn1d
  (bn=True) that froze training at ~56% test accuracy. Zeroed at init, where the BN shift is 0 and
  ReLU'(0) = 0, those filters receive no gradient, so the same set stays zeroed.
- every other method: nothing.

Each is the ``training_hooks`` of its :class:`~prunelab.pruning.structured.StructuredMethod`
(:func:`slimming_hooks`, :func:`sss_hooks`, :func:`sfp_hooks`).

Plug them into :func:`prunelab.training.trainer.train` as ``after_backward=hooks.after_backward``,
``after_step=hooks.after_step`` and ``callbacks=[*hooks.epoch_callbacks(), ...]`` (before any checkpointing callback, so a checkpoint holds
the zeroed filters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunelab.errors import PrunelabError, invalid_choice
from prunelab.pruning.structured.blocks import install_block_scales, l1_proximal_step, l1_subgradient
from prunelab.pruning.structured.channels import channel_layers, keep_count, top_k
from prunelab.pruning.structured.criteria import l2_filter_norms
from prunelab.pruning.structured.methods import STRUCTURED_METHODS


@dataclass
class TrainingHooks:
    """Hooks for the large model's training loop.

    Attributes:
        after_backward: called with no arguments after each ``loss.backward()``, before the
            optimizer step (they edit gradients).
        after_step: called with the learning rate after each optimizer step (proximal updates).
        epoch_end: called with the number of epochs completed (1-based) after each epoch.
    """

    after_backward: list[Callable[[], None]] = field(default_factory=list)
    epoch_end: list[Callable[[int], None]] = field(default_factory=list)
    after_step: list[Callable[[float], None]] = field(default_factory=list)

    def epoch_callbacks(self) -> list[Callable[[Any, Any], None]]:
        """``epoch_end`` adapted to the trainer's ``callbacks(record, state_thunk)`` signature."""

        def adapt(hook: Callable[[int], None]) -> Callable[[Any, Any], None]:
            return lambda record, _state: hook(int(record.epoch))

        return [adapt(hook) for hook in self.epoch_end]

    def __bool__(self) -> bool:
        return bool(self.after_backward or self.epoch_end or self.after_step)


def bn_scales(model: nn.Module) -> list[nn.Parameter]:
    """The scale ``gamma`` of every affine BatchNorm in ``model``, in registration order."""
    return [m.weight for m in model.modules() if isinstance(m, _BatchNorm) and m.weight is not None]


@torch.no_grad()
def soft_prune_(model: nn.Module, ratio: float, convs: list[str] | None = None) -> dict[str, list[int]]:
    """Zero, in place, the ``int(C * (1 - ratio))`` smallest-L2 filters of each prunable conv (SFP).

    Ties go to the lower index being kept. The conv's bias (if any) is zeroed with its filter;
    nothing else is touched, so the filters may regrow in the next epoch.

    Args:
        model: the network being trained.
        ratio: keep fraction of filters per conv, in (0, 1].
        convs: conv module names (default: every independently prunable conv).

    Returns:
        conv name -> the zeroed filter indices.
    """
    names = convs if convs is not None else [layer.conv for layer in channel_layers(model)]
    modules = dict(model.named_modules())
    zeroed: dict[str, list[int]] = {}
    for name in names:
        conv = modules[name]
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        kept = set(top_k(l2_filter_norms(conv.weight), keep_count(conv.out_channels, ratio)))
        idx = [i for i in range(conv.out_channels) if i not in kept]
        if idx:
            index = torch.as_tensor(idx, device=conv.weight.device)
            conv.weight[index] = 0.0
            if conv.bias is not None:
                conv.bias[index] = 0.0
        zeroed[name] = idx
    return zeroed


def slimming_hooks(model: nn.Module, options: dict[str, Any]) -> TrainingHooks:
    """Network slimming: an L1 subgradient on every BN scale after each backward pass."""
    hooks = TrainingHooks()
    scales = bn_scales(model)
    if not scales:
        raise PrunelabError(
            f"network slimming needs BatchNorm layers; model {type(model).__name__} has none "
            "(build cnn1d/cnn2d with bn=true)"
        )
    if float(options["strength"]) > 0:
        hooks.after_backward.append(l1_subgradient(scales, float(options["strength"])))
    return hooks


def sss_hooks(model: nn.Module, options: dict[str, Any]) -> TrainingHooks:
    """Sparse structure selection: a proximal L1 step on the block factors after each optimizer step.

    Installs the factors on ``model`` (idempotent) first, so it must precede building the optimizer
    and loading a checkpoint of such a model.
    """
    hooks = TrainingHooks()
    factors = list(install_block_scales(model).values())
    if float(options["strength"]) > 0:
        hooks.after_step.append(l1_proximal_step(factors, float(options["strength"])))
    return hooks


#: SFP variants (method option ``variant``). ``removable_physical``: soft-prune the independently
#: removable convs and remove their filters at the end (a smaller model). ``all_convs_masked``: He et
#: al.'s and Liu et al.'s runs: soft-prune every conv and end with a filter-level mask on the
#: full-size model (which Liu et al.'s scratch runs train, masked).
SFP_VARIANTS = ("removable_physical", "all_convs_masked")


def sfp_variant(options: Mapping[str, Any]) -> str:
    """The validated ``variant`` option of ``sfp`` (default ``removable_physical``)."""
    value = options.get("variant") or SFP_VARIANTS[0]
    if value not in SFP_VARIANTS:
        raise invalid_choice("sfp variant", value, SFP_VARIANTS)
    return str(value)


def sfp_convs(model: nn.Module, variant: str) -> list[str]:
    """The convs SFP soft-prunes: every Conv1d/Conv2d (``all_convs_masked``) or the independently
    removable ones (``removable_physical``), in registration order."""
    if variant == "all_convs_masked":
        return [name for name, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]
    return [layer.conv for layer in channel_layers(model)]


def sfp_hooks(model: nn.Module, options: dict[str, Any]) -> TrainingHooks:
    """Soft filter pruning: zero the smallest filters of the variant's convs now and after every epoch.

    The zeroing at once is He et al.'s masking before the first epoch; a checkpoint loaded
    afterwards replaces those weights.
    """
    hooks = TrainingHooks()
    convs = sfp_convs(model, sfp_variant(options))
    ratio = float(options["ratio"])
    soft_prune_(model, ratio, convs)  # before the first epoch too, as in He et al.'s code

    def zero_filters(_epoch: int) -> None:
        soft_prune_(model, ratio, convs)

    hooks.epoch_end.append(zero_filters)
    return hooks


def large_model_hooks(
    method: str, model: nn.Module, options: Mapping[str, Any] | None = None
) -> TrainingHooks:
    """The training hooks ``method`` needs while the large model trains (see the module docstring).

    Looks ``method`` up and calls its ``training_hooks`` (empty hooks for a method without them).
    Making the hooks may act on ``model`` at once (install parameters, zero filters: see each
    method's hook function), so call this on the freshly initialised model, before the optimizer
    is built and before a checkpoint is loaded into it.

    Args:
        method: a :data:`STRUCTURED_METHODS` name.
        model: the large registry model that will be trained.
        options: the method's options (unknown names raise; defaults fill the rest).
    """
    entry = STRUCTURED_METHODS.get(method)
    opts = entry.resolve_options(options)
    if entry.training_hooks is None:
        return TrainingHooks()
    return entry.training_hooks(model, opts)
