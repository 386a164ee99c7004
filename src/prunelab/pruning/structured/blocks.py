"""Sparse Structure Selection (Huang & Wang 2018) for the CIFAR ResNets: a scale factor on each residual
block's branch, an L1 penalty that drives factors to zero, and removal of the zeroed blocks.

The factor ``lambda`` multiplies the block's residual branch, e.g. ``relu(lambda * bn2(conv2(...)) +
shortcut(x))`` for a basic block. It is a scalar parameter ``sss_scale`` registered on the module
that ends the branch (the block class's ``branch_end``: ``bn2`` of a basic block, ``bn3`` of a
bottleneck, ``conv3`` of a pre-activation bottleneck; state-dict key e.g. ``layer2.3.bn2.sss_scale``)
and applied by a forward hook on it, so the model class is unchanged. Only blocks with an identity
shortcut carry a factor: removing a block that changes the stride or width would change every later
shape. Removal folds each kept factor into that module's weight and bias (``lambda * (gamma x +
beta) = (lambda gamma) x + lambda beta``; a conv is linear too) and rebuilds the ResNet with fewer
blocks (option ``blocks``), so the pruned model is a plain registry ResNet.

A removed block with factor exactly 0 changes no output: in a post-activation block the input is a
ReLU output (>= 0), so the block computes ``relu(0 + x) = x``; a pre-activation block computes
``0 + x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.models.preresnet import PreActBottleneck
from prunelab.models.resnet import BasicBlock, Bottleneck

SCALE = "sss_scale"
STAGES = ("layer1", "layer2", "layer3")
#: Residual blocks that can carry a factor (each class names its branch-ending module ``branch_end``).
SCALABLE = (BasicBlock, Bottleneck, PreActBottleneck)


def _scale_output(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    """Forward hook on the branch's last module: multiply its output by the block's factor (looked
    up on the module, so deep copies of the model scale by their own factor)."""
    return output * getattr(module, SCALE)


def scalable_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """Block name -> block for every residual block with an identity shortcut, in order."""
    found: dict[str, nn.Module] = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, SCALABLE) and isinstance(module.shortcut, nn.Identity)
    }
    if not found:
        raise PrunelabError(
            "sparse structure selection needs a CIFAR ResNet (resnet20 ... resnet110, su_resnet*, "
            f"preresnet164), got {type(model).__name__}"
        )
    return found


def branch_end(block: nn.Module) -> nn.Module:
    """The module ending ``block``'s residual branch, which carries the block's factor."""
    return getattr(block, str(block.branch_end))


def install_block_scales(model: nn.Module) -> dict[str, nn.Parameter]:
    """Give every identity-shortcut block of ``model`` a factor (initially 1), in place; idempotent.

    Call it before building the optimizer and before loading a checkpoint of an SSS-trained model
    (the factors are parameters, saved in the state dict under ``<block>.<branch_end>.sss_scale``).

    Returns:
        block name -> its factor, a 0-d parameter.
    """
    scales: dict[str, nn.Parameter] = {}
    for name, block in scalable_blocks(model).items():
        end = branch_end(block)
        if not hasattr(end, SCALE):
            weight = end.weight
            assert isinstance(weight, Tensor)
            end.register_parameter(
                SCALE, nn.Parameter(torch.ones((), device=weight.device, dtype=weight.dtype))
            )
            end.register_forward_hook(_scale_output)
        scales[name] = getattr(end, SCALE)
    return scales


def block_scales(model: nn.Module) -> dict[str, Tensor]:
    """Block name -> factor of a model with installed factors.

    Raises:
        PrunelabError: when the model has none (it was not trained with the SSS hooks).
    """
    out = {
        name: getattr(branch_end(block), SCALE).detach()
        for name, block in scalable_blocks(model).items()
        if hasattr(branch_end(block), SCALE)
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
    """The state dict of the ResNet with only the ``kept`` blocks, renumbered, factors folded into each
    block's branch-ending module (its weight and, if any, bias)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    blocks = scalable_blocks(model)
    for name, scale in block_scales(model).items():
        end = f"{name}.{blocks[name].branch_end}"
        state[f"{end}.weight"] *= scale
        if f"{end}.bias" in state:
            state[f"{end}.bias"] *= scale
        del state[f"{end}.{SCALE}"]
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
