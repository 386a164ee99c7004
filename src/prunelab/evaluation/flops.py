"""Parameter and FLOP counts, following the counter of Liu et al. 2019 (``compute_flops.py``, from
simochen/model-tools), which decides their Scratch-B budgets ``E_B = int(E * FLOPs(full) / FLOPs(pruned))``.

The ``"rethinking"`` convention (default) counts, per forward of **one** example (the reference runs a
batch of 3 random inputs and divides by 3; every op below is linear in the batch, so one example gives
the same number):

==============================  ============================================================
leaf module                     FLOPs
==============================  ============================================================
Conv1d/2d/3d                    ``(prod(k) * C_in / groups * 2 + bias) * C_out * prod(out spatial)``
Linear                          ``(2 * in * out + out) * rows`` (``rows`` = input numel / in)
BatchNorm1d/2d                  ``2 * input numel``
ReLU (module or functional)     ``input numel``
Max/AvgPool1d/2d                ``prod(kernel) * output numel`` (2-D: ``k^2 * output numel``)
AdaptiveAvg/MaxPool1d/2d        as a fixed pool of kernel ``ceil(in / out)`` per dimension
==============================  ============================================================

``bias`` is 1 when the layer has a bias, else 0 (``multiply_adds=True``: a multiply-add is 2 FLOPs).
Anything else (additions of residual branches, functional pools, the option-A shortcut's pad) costs
nothing, as in the reference. With ``nonzero_only`` the conv term becomes ``(nnz(W) * 2 + bias *
C_out) * prod(out spatial)`` as in the weight-level variant (``cifar/weight-level/count_flops.py``),
and the linear term ``(2 * nnz(W) + out) * rows`` likewise, so unstructured sparsity lowers the count.
Counts depend only on shapes (and on which weights are zero), so the counting forward runs on
shape-only "meta" tensors: fast, no memory, whatever device the model is on.

Where this differs from the reference on purpose, always by well under 0.01 % on the CIFAR models:
it also counts BatchNorm1d (the reference hooks BatchNorm2d only; the Rethinking VGG head's BN1d adds
1,024), adaptive pools (our VGG pools adaptively where the reference calls ``AvgPool2d(2)``
functionally: +2,048 on VGG-16; our ResNets' adaptive pool equals the reference's hooked
``AvgPool2d(8)``), and every ReLU call, functional ones included (our ResNets call ``F.relu`` where
the reference calls an ``nn.ReLU`` module, so this keeps their counts equal to the reference's).

The ``"macs"`` convention counts only conv and linear multiply-accumulates of the weights,
``prod(k) * C_in / groups * C_out * prod(out spatial)`` and ``in * out * rows`` (``nnz(W)`` in place
of the weight count with ``nonzero_only``): the "FLOPs" of Li et al. 2017's Table 1 (VGG-16 on
CIFAR-10: 3.13e8).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from prunelab.errors import PrunelabError, invalid_choice

Convention = Literal["rethinking", "macs"]
CONVENTIONS: tuple[str, ...] = ("rethinking", "macs")

#: Every way a ReLU is called; counted once per call, whether from ``nn.ReLU`` or functionally.
_RELU_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}
)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def count_params(model: nn.Module, *, nonzero_only: bool = False) -> int:
    """Number of parameters of ``model`` (each shared tensor once; buffers such as BN statistics not).

    With ``nonzero_only`` only the entries that are not exactly zero count: pruned weights stay exactly
    zero under prunelab's mask invariant, so this is the size of a masked model.
    """
    params = list(model.parameters())
    if nonzero_only:
        return int(sum(int(torch.count_nonzero(p.detach())) for p in params))
    return int(sum(p.numel() for p in params))


def _weight_counts(model: nn.Module, nonzero_only: bool) -> dict[nn.Module, int]:
    """Weight entries (nonzero ones with ``nonzero_only``) of every conv and linear, read up front
    because the counting forward runs on shape-only stand-ins."""
    counts: dict[nn.Module, int] = {}
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            weight = module.weight.detach()
            counts[module] = int(torch.count_nonzero(weight)) if nonzero_only else weight.numel()
    return counts


def _module_flops(
    module: nn.Module, inp: Tensor, out: Tensor, weights: dict[nn.Module, int], macs: bool
) -> int:
    """FLOPs of one call of a leaf module (0 for modules the convention does not count)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        positions = math.prod(out.shape[2:])  # batch is 1
        weights_ = weights[module]  # = prod(k) * C_in / groups * C_out if dense
        if macs:
            return weights_ * positions
        bias = module.out_channels if module.bias is not None else 0
        return (2 * weights_ + bias) * positions
    if isinstance(module, nn.Linear):
        rows = inp.numel() // module.in_features
        if macs:
            return weights[module] * rows
        bias = module.out_features if module.bias is not None else 0
        return (2 * weights[module] + bias) * rows
    if macs:
        return 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 2 * inp.numel()
    if isinstance(module, _POOLS):
        dims = 1 if isinstance(module, nn.MaxPool1d | nn.AvgPool1d) else 2
        kernel = module.kernel_size
        sizes = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
        return math.prod(int(k) for k in sizes) * out.numel()
    if isinstance(module, _ADAPTIVE_POOLS):
        dims = 1 if isinstance(module, nn.AdaptiveAvgPool1d | nn.AdaptiveMaxPool1d) else 2
        ceil = [math.ceil(i / o) for i, o in zip(inp.shape[-dims:], out.shape[-dims:], strict=True)]
        return math.prod(ceil) * out.numel()
    return 0


class _ReluCounter(TorchFunctionMode):
    """Adds ``input numel`` to the innermost running module's count for every ReLU call."""

    def __init__(self, counts: dict[str, int], stack: list[str]) -> None:
        super().__init__()
        self.counts = counts
        self.stack = stack

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func in _RELU_FUNCTIONS and args and isinstance(args[0], Tensor):
            owner = self.stack[-1] if self.stack else ""
            self.counts[owner] = self.counts.get(owner, 0) + args[0].numel()
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BN on one example needs it) and no autograd; the caller's modes are restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.train(training)


def flops_by_module(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    nonzero_only: bool = False,
    convention: Convention = "rethinking",
) -> dict[str, int]:
    """FLOPs of one forward pass of one example, per module name (``""`` is the model itself).

    Args:
        model: any module. It is run once in eval mode without gradients (its modes are restored),
            on "meta" stand-ins of its parameters and buffers (shapes only: no arithmetic, no memory,
            nothing moved); a forward that needs values is run for real on the model's device.
        input_shape: one example's shape, without the batch dimension, e.g. ``(3, 32, 32)``.
        nonzero_only: count only nonzero conv/linear weights (weight-level variant).
        convention: ``"rethinking"`` (Liu et al. 2019's counter) or ``"macs"`` (Li et al. 2017).

    Returns:
        ``{module name: FLOPs}`` for the modules that cost any, in call order (a module called twice
        is charged twice). ReLU calls made functionally are charged to the module whose forward made
        them. See the module docstring for the formulas.
    """
    if convention not in CONVENTIONS:
        raise invalid_choice("FLOP convention", convention, CONVENTIONS)
    if isinstance(input_shape, int) or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise PrunelabError(f"input_shape must be one example's shape of positive ints, got {input_shape!r}")
    macs = convention == "macs"
    weights = _weight_counts(model, nonzero_only)
    counts: dict[str, int] = {}
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():

        def push(_module: nn.Module, _inputs: Any, name: str = name) -> None:
            stack.append(name)

        def pop(module: nn.Module, inputs: Any, output: Any, name: str = name) -> None:
            stack.pop()
            if next(module.children(), None) is not None:  # hooks on leaf modules only, as the reference
                return
            if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(output, Tensor):
                return
            flops = _module_flops(module, inputs[0], output, weights, macs)
            if flops:
                counts[name] = counts.get(name, 0) + flops

        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop))
    try:
        with _eval_mode(model):
            try:
                # Shapes are all the counts need: run on "meta" stand-ins of every parameter and buffer
                # (no arithmetic, no memory, any device), falling back to a real forward for models
                # whose forward needs values (data-dependent control flow).
                _forward(model, input_shape, counts, stack, macs, meta=True)
            except (NotImplementedError, RuntimeError):
                counts.clear()
                stack.clear()
                _forward(model, input_shape, counts, stack, macs, meta=False)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _forward(
    model: nn.Module,
    input_shape: tuple[int, ...],
    counts: dict[str, int],
    stack: list[str],
    macs: bool,
    *,
    meta: bool,
) -> None:
    """One forward of one random example, on meta stand-ins (``meta``) or the model's own tensors."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    first = next(iter(tensors.values()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    device = torch.device("meta") if meta or first is None else first.device
    x = torch.rand((1, *input_shape), device=device, dtype=dtype)
    stand_ins = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()} if meta else {}
    with contextlib.nullcontext() if macs else _ReluCounter(counts, stack):
        if meta:
            torch.func.functional_call(model, stand_ins, (x,))
        else:
            model(x)


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    nonzero_only: bool = False,
    convention: Convention = "rethinking",
) -> int:
    """Total FLOPs of one forward pass of one example of shape ``input_shape`` (no batch dimension).

    The sum of :func:`flops_by_module`; see the module docstring for the formulas. Only ratios of
    counts made with the same convention are meaningful (Scratch-B's budget is one).
    """
    return sum(flops_by_module(model, input_shape, nonzero_only=nonzero_only, convention=convention).values())
