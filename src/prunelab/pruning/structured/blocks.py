"""Sparse Structure Selection (Huang & Wang 2018) for the CIFAR ResNets: a scale factor on each residual
block's branch, an L1 penalty that drives factors to zero, and removal of the zeroed blocks.

The factor ``lambda`` multiplies the block's residual branch, ``relu(lambda * bn2(conv2(...)) +
shortcut(x))``. It is a scalar parameter ``sss_scale`` registered on the block's ``bn2`` (state-dict key
``layer2.3.bn2.sss_scale``) and applied by a forward hook on ``bn2``, so the model class is unchanged.
Only blocks with an identity shortcut carry a factor: removing a block that changes the stride or
width would change every later shape. Removal folds each kept factor into ``bn2``'s affine
parameters (``lambda * (gamma x + beta) = (lambda gamma) x + lambda beta``) and rebuilds the ResNet with
fewer blocks (option ``blocks``), so the pruned model is a plain registry ResNet.

A removed block with factor exactly 0 changes no output: its input is a ReLU output (>= 0), so the
block computes ``relu(0 + x) = x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.models.resnet import BasicBlock

SCALE = "sss_scale"
STAGES = ("layer1", "layer2", "layer3")


def _scale_output(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    """Forward hook on ``bn2``: multiply its output by the block's factor (looked up on the module,
    so deep copies of the model scale by their own factor)."""
    return output * getattr(module, SCALE)


def scalable_blocks(model: nn.Module) -> dict[str, BasicBlock]:
    """Block name -> block for every residual block with an identity shortcut, in order."""
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, BasicBlock) and isinstance(module.shortcut, nn.Identity)
    }
    if not found:
        raise PrunelabError(
            f"sparse structure selection needs a CIFAR ResNet (resnet20 ... resnet110), got {type(model).__name__}"
        )
    return found


def install_block_scales(model: nn.Module) -> dict[str, nn.Parameter]:
    """Give every identity-shortcut block of ``model`` a factor (initially 1), in place; idempotent.

    Call it before building the optimizer and before loading a checkpoint of an SSS-trained model
    (the factors are parameters, saved in the state dict under ``<block>.bn2.sss_scale``).

    Returns:
        block name -> its factor, a 0-d parameter.
    """
    scales: dict[str, nn.Parameter] = {}
    for name, block in scalable_blocks(model).items():
        bn = block.bn2
        if not hasattr(bn, SCALE):
            device = bn.weight.device
            bn.register_parameter(SCALE, nn.Parameter(torch.ones((), device=device, dtype=bn.weight.dtype)))
            bn.register_forward_hook(_scale_output)
        scales[name] = getattr(bn, SCALE)
    return scales


def block_scales(model: nn.Module) -> dict[str, Tensor]:
    """Block name -> factor of a model with installed factors.

    Raises:
        PrunelabError: when the model has none (it was not trained with the SSS hooks).
    """
    out = {
        name: getattr(block.bn2, SCALE).detach()
        for name, block in scalable_blocks(model).items()
        if hasattr(block.bn2, SCALE)
    }
    if not out:
        raise PrunelabError(
            "the model has no block factors: train it with large_model_hooks('sss', model, ...) first"
        )
    return out


def l1_subgradient(params: Sequence[Tensor], strength: float) -> Callable[[], None]:
    """An ``after_backward`` hook adding ``strength * sign(p)`` to each parameter's gradient.

    This is network slimming's ``updateBN`` and the L1 subgradient of SSS's sparsity penalty
    ``strength * sum |p|``. ``sign(0) = 0``, so a factor at exactly zero feels no push.
    """

    @torch.no_grad()
    def penalise() -> None:
        for param in params:
            if param.grad is not None:
                param.grad.add_(torch.sign(param.detach()), alpha=strength)

    return penalise


def l1_proximal_step(params: Sequence[Tensor], strength: float) -> Callable[[float], None]:
    """An ``after_step`` hook: the proximal operator of ``strength * sum |p|`` at step size ``lr``,
    ``p <- sign(p) * max(|p| - lr * strength, 0)``, so factors reach exactly zero (the accelerated
    proximal gradient update of Huang & Wang 2018, without the momentum extrapolation)."""

    def hook(lr: float) -> None:
        with torch.no_grad():
            for param in params:
                shrunk = (param.abs() - lr * strength).clamp_(min=0.0)
                param.copy_(torch.sign(param) * shrunk)

    return hook


def kept_blocks(model: nn.Module, threshold: float) -> dict[str, list[int]]:
    """Stage name -> indices of the blocks kept: every block without a factor, and those with
    ``|factor| > threshold``."""
    scales = block_scales(model)
    kept: dict[str, list[int]] = {}
    for stage in STAGES:
        blocks = getattr(model, stage)
        kept[stage] = [
            i
            for i in range(len(blocks))
            if f"{stage}.{i}" not in scales or float(scales[f"{stage}.{i}"].abs()) > threshold
        ]
    return kept


@torch.no_grad()
def folded_state(model: nn.Module, kept: dict[str, list[int]]) -> dict[str, Tensor]:
    """The state dict of the ResNet with only the ``kept`` blocks, renumbered, factors folded into ``bn2``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, scale in block_scales(model).items():
        state[f"{name}.bn2.weight"] *= scale
        state[f"{name}.bn2.bias"] *= scale
        del state[f"{name}.bn2.{SCALE}"]
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        stage, _, rest = key.partition(".")
        if stage not in STAGES:
            renamed[key] = value
            continue
        index, _, tail = rest.partition(".")
        if int(index) in kept[stage]:
            renamed[f"{stage}.{kept[stage].index(int(index))}.{tail}"] = value
    return renamed
