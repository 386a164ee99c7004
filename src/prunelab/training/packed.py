"""Packed training: K runs of one architecture and one recipe (differing in seed, mask, sanity
check or training data) trained together as one model, each member computing what its solo run
computes, to floating-point tolerance.

Design: the members are folded into the batch dimension. A packed model is a copy of the member
model whose parameterised layers (``Conv1d``/``Conv2d``, ``Linear``, ``BatchNorm1d``/``2d``) are
replaced by packed twins holding the K members' tensors stacked ``(K, *shape)``; a packed batch is
the members' batches concatenated, ``(K*B, ...)``, member k's examples in rows ``k*B .. (k+1)*B-1``.
Every other operation of the model's own ``forward`` (activations, pooling, residual additions,
zero-channel padding, concatenation, flattening) acts example by example, so it runs unchanged; a
packed layer applies member k's weights to member k's rows (batched matmuls) and packed BatchNorm
takes its statistics over member k's rows only. Nothing is model-specific, and a model whose forward
mixes examples in another way (dropout's random draws, say) is caught before training by a probe
that compares the packed model with solo copies (:class:`NotPackable`, the runs then train solo).

Why this and not ``torch.func.vmap`` + ``functional_call`` over stacked parameters and buffers
(which also runs BatchNorm in train mode, updating the batched running buffers in place): both are
generic, but measured on this project's 2-core CPU (1 thread, MNIST-1D 1-D CNN with 64 channels and
BN, batch 128) vmap took 0.29-0.31 s of CPU per member-epoch at K=4 and K=16 against 0.25-0.30 s
for the solo trainer: it lowers a batched convolution to a grouped oneDNN convolution and
BatchNorm to its channels-first kernel, both slower per member than solo. The folded layout lets
each layer pick its kernel: on CPU the convolutions run as im2col + one batched matmul (1-D) or
torch's own convolution per member in channels-last layout (2-D), BatchNorm per member on
channels-last rows, so activations stay channels-last (BatchNorm hands its output over
channels-first where its gradient comes back so, as before a ``flatten``: no elementwise operation
then mixes layouts, :class:`_Layout`). Measured (bench/packed.py, 1 thread): 1-D CNN 1.4-1.5x,
MLP 1.7-2.1x at K=8-16, ResNet-20 0.7-1.0x against K sequential runs; one training step of the
1-D CNN (batch 128) takes 3.2-3.4 ms per member at K=4-8 and 4.6 ms at K=1, of which the matmuls
are about 1.25 ms (the rest is memory-bound copies, BatchNorm and ReLU passes, and per-step
overhead). On CUDA convolutions and BatchNorm run grouped (members folded into channels, one cuDNN
kernel each), the layout vmap uses.

Each member's gradient is exactly its solo gradient (the loss is the sum of the members' mean
losses, and members share no parameter), and SGD is elementwise, so one SGD over the stacked tensors
with the solo hyper-parameters is K solo SGDs. The mask invariant is :class:`MaskEnforcer` itself
over the stacked tensors (a member without a mask has an all-ones mask, which multiplies exactly).
Data order and augmentation of member k come from its own generator, drawn as its solo run draws.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import sys
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
from prunelab.training.config import TrainConfig
from prunelab.training.trainer import (
    EpochCallback,
    EpochRecord,
    MaskEnforcer,
    TrainResult,
    TrainState,
    make_optimizer,
)

#: Ways a packed convolution is computed: ``per_member`` (each member's rows through torch's own
#: convolution, channels-last), ``im2col`` (unfold + one batched matmul), ``grouped`` (one grouped
#: convolution over the members' channels, the layout vmap would use), ``auto`` (CPU: im2col for
#: 1-D convolutions, per_member for 2-D ones, as measured; CUDA: grouped).
CONV_MODES = ("auto", "per_member", "im2col", "grouped")

#: Train-config fields packed training leaves as the solo trainer would at these values; a config
#: with any other field away from its default is refused (e.g. ``precision``, ``compile``,
#: ``channels_last``: the fast path of one run, which packed training does not reproduce).
SUPPORTED_FIELDS = frozenset(
    {
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "schedule",
        "milestones",
        "milestone_epochs",
        "gamma",
        "warmup_epochs",
        "label_smoothing",
        "weight_decay_exclude",
        "augment",
        "checkpoint",
        "nproc",
    }
)

#: Examples per evaluation forward pass of a whole pack (split evenly between members).
EVAL_EXAMPLES = {"cpu": 1000, "cuda": 8192}


class NotPackable(PrunelabError):
    """These runs cannot train packed (the reason is the message); train them solo."""


def config_refusal(config: TrainConfig) -> str | None:
    """Why ``config`` cannot train packed, or None when it can."""
    if config.nproc != 1:
        return f"train.nproc={config.nproc}: a run over several processes trains solo"
    defaults = TrainConfig()
    for name in type(config).model_fields:
        if name not in SUPPORTED_FIELDS and getattr(config, name) != getattr(defaults, name):
            return (
                f"train.{name}={getattr(config, name)!r} is not supported by packed training "
                f"(only its default {getattr(defaults, name)!r} is)"
            )
    return None


# -- packed layers ---------------------------------------------------------------------------------
def _pair(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * n


class _Im2colConv(torch.autograd.Function):
    """Member k's convolution on member k's rows as one batched matmul over unfolded windows.

    ``x``: ``(K*B, C, *S)`` (any layout); ``weight``: ``(K, O, C, *k)``; ``bias``: ``(K, O)`` or
    None. Returns ``(K*B, O, *S_out)`` held channels-last (the matmul's natural layout; packed
    BatchNorm and the next convolution read it without a copy). Windows are laid out ``(taps, C)``
    per position.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        members: int,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
    ) -> Tensor:
        out_ch, in_ch = weight.shape[1:3]
        kernel = tuple(weight.shape[3:])
        batch = x.shape[0] // members
        sizes = tuple(x.shape[2:])
        outs = tuple(
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, p, d, k, st in zip(sizes, padding, dilation, kernel, stride, strict=True)
        )
        lowered = x.view(members, batch, in_ch, *sizes).movedim(2, -1)  # (K, B, *S, C), a view
        cols = _im2col(lowered, kernel, outs, stride, padding, dilation)  # (K, B*P, taps*C)
        # (K, taps*C, O): the matmul's fastest right-hand layout here (a copy either way).
        flat_w = weight.permute(0, *range(3, weight.dim()), 2, 1).reshape(members, -1, out_ch)
        # Written straight into a channels-last result (not a view: ReLU(inplace) may follow).
        result = _channels_last((members * batch, out_ch, *outs), x)
        target = result.movedim(1, -1).view(members, batch * math.prod(outs), out_ch)
        if bias is None:
            torch.bmm(cols, flat_w, out=target)
        else:
            torch.baddbmm(bias.unsqueeze(1), cols, flat_w, out=target)
        ctx.save_for_backward(
            cols if ctx.needs_input_grad[1] else None, flat_w if ctx.needs_input_grad[0] else None
        )
        ctx.geometry = (members, batch, in_ch, sizes, kernel, outs, stride, padding, dilation)
        return result

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        cols, flat_w = ctx.saved_tensors
        members, batch, in_ch, sizes, kernel, outs, stride, padding, dilation = ctx.geometry
        out_ch = grad.shape[1]
        g = grad.movedim(1, -1).reshape(members, batch * math.prod(outs), out_ch)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            n = len(kernel)
            if math.prod(kernel) * in_ch < out_ch:  # (K, taps*C, O): the faster matmul then
                grad_w = (
                    torch.bmm(cols.transpose(1, 2), g)
                    .view(members, *kernel, in_ch, out_ch)
                    .permute(0, n + 2, n + 1, *range(1, n + 1))
                    .contiguous()
                )
            else:
                grad_w = (
                    torch.bmm(g.transpose(1, 2), cols)
                    .view(members, out_ch, *kernel, in_ch)
                    .movedim(-1, 2)
                    .contiguous()
                )
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(1)
        if ctx.needs_input_grad[0]:
            gcols = torch.bmm(g, flat_w.transpose(1, 2)).view(members, batch, *outs, *kernel, in_ch)
            covers, steps = _col2im_steps(sizes, kernel, outs, stride, padding, dilation, in_ch)
            shape = (members, batch, *sizes, in_ch)
            grad_lowered = grad.new_empty(shape) if covers else grad.new_zeros(shape)
            example_in, example_cols = math.prod(shape[2:]), math.prod(gcols.shape[2:])

            def part(t: Tensor, example: int, view: tuple[tuple[int, ...], tuple[int, ...], int]) -> Tensor:
                return t.as_strided(
                    (members, batch, *view[0]),
                    (batch * example, example, *view[1]),
                    t.storage_offset() + view[2],
                )

            # col2im: each kernel tap's block of columns goes back onto the inputs it read (only
            # where those were inside the unpadded input): copied where it comes first, added
            # where another tap's block is already there.
            for kind, sources, target in steps:
                into = part(grad_lowered, example_in, target)
                blocks = [part(gcols, example_cols, source) for source in sources]
                if kind == "copy":
                    into.copy_(blocks[0])
                elif kind == "sum":
                    torch.add(blocks[0], blocks[1], out=into)
                else:
                    into.add_(blocks[0])
            grad_x = grad_lowered.movedim(-1, 2).reshape(members * batch, in_ch, *sizes)
        return grad_x, grad_w, grad_b, None, None, None, None


def _im2col(
    lowered: Tensor,
    kernel: tuple[int, ...],
    outs: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> Tensor:
    """The windows of ``lowered: (K, B, *S, C)`` (any strides) as ``(K, B*prod(S_out), taps*C)``,
    zero where a window reaches into the padding. 1-D: read straight from ``lowered`` (the windows
    of interior positions in one copy, the few at the ends tap by tap); N-D: from a zero-padded
    copy."""
    k, b, *sizes, c = lowered.shape
    taps = math.prod(kernel)
    positions = math.prod(outs)
    s = lowered.stride()
    if len(kernel) != 1:
        padded = _padded(lowered, padding)  # (K, B, *S+2p, C)
        n = len(kernel)
        ps = padded.stride()
        windows = padded.as_strided(
            (k, b, *outs, *kernel, c),
            (
                ps[0],
                ps[1],
                *(ps[2 + i] * stride[i] for i in range(n)),
                *(ps[2 + i] * dilation[i] for i in range(n)),
                ps[-1],
            ),
            padded.storage_offset(),
        )
        return windows.reshape(k, b * positions, taps * c)
    (size,), (width,), (count,), (st,), (p,), (d,) = sizes, kernel, outs, stride, padding, dilation
    lo, hi, ends = _window_plan(size, width, count, st, p, d)
    cols = lowered.new_empty(k, b, count, width, c)
    base = lowered.storage_offset()
    if hi > lo:  # outputs lo..hi-1 read inside the input with every tap
        cols.narrow(2, lo, hi - lo).copy_(
            lowered.as_strided(
                (k, b, hi - lo, width, c),
                (s[0], s[1], s[2] * st, s[2] * d, s[3]),
                base + (lo * st - p) * s[2],
            )
        )
    for o, first, last in ends:  # taps first..last of output o read inside, the others zeros
        block = cols.select(2, o)  # (K, B, taps, C)
        if last < first:
            block.zero_()
            continue
        if first > 0:
            block.narrow(2, 0, first).zero_()
        if last < width - 1:
            block.narrow(2, last + 1, width - 1 - last).zero_()
        block.narrow(2, first, last - first + 1).copy_(
            lowered.as_strided(
                (k, b, last - first + 1, c),
                (s[0], s[1], s[2] * d, s[3]),
                base + (o * st - p + first * d) * s[2],
            )
        )
    return cols.view(k, b * positions, taps * c)


@functools.lru_cache(maxsize=256)
def _window_plan(
    size: int, width: int, count: int, stride: int, padding: int, dilation: int
) -> tuple[int, int, tuple[tuple[int, int, int], ...]]:
    """1-D windows: ``(lo, hi, ends)``, outputs ``lo..hi-1`` reading inside the input with every
    tap, and ``(o, first, last)`` for each other output: its taps ``first..last`` read inside."""
    lo = min(count, -(-padding // stride))
    hi = max(lo, min(count, (size - 1 + padding - dilation * (width - 1)) // stride + 1))
    ends = tuple(
        (
            o,
            max(0, -((o * stride - padding) // dilation)),
            min(width - 1, (size - 1 + padding - o * stride) // dilation),
        )
        for o in (*range(lo), *range(hi, count))
    )
    return lo, hi, ends


_View = tuple[tuple[int, ...], tuple[int, ...], int]


@functools.lru_cache(maxsize=256)
def _col2im_steps(
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    outs: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    channels: int,
) -> tuple[bool, tuple[tuple[str, tuple[_View, ...], _View], ...]]:
    """:func:`_col2im_plan` as ``(shape, strides, offset)`` views of one example's inputs
    ``(*S, C)`` and of its window gradients ``(*S_out, *k, C)`` (both contiguous)."""

    def strides(shape: tuple[int, ...]) -> list[int]:
        return [math.prod(shape[i + 1 :]) for i in range(len(shape))]

    in_strides = strides((*sizes, channels))
    col_strides = strides((*outs, *kernel, channels))
    n = len(kernel)
    covers, plan = _col2im_plan(sizes, kernel, outs, stride, padding, dilation)
    out = []
    for kind, parts, target in plan:
        t_view: _View = (
            (*(len(range(sl.start, sl.stop, sl.step)) for sl in target), channels),
            (*(sl.step * in_strides[i] for i, sl in enumerate(target)), 1),
            sum(sl.start * in_strides[i] for i, sl in enumerate(target)),
        )
        s_views = tuple(
            (
                (*(sl.stop - sl.start for sl in source), channels),
                (*col_strides[:n], 1),
                sum(sl.start * col_strides[i] for i, sl in enumerate(source))
                + sum(t * col_strides[n + i] for i, t in enumerate(tap)),
            )
            for tap, source in parts
        )
        out.append((kind, s_views, t_view))
    return covers, tuple(out)


_Index = tuple[slice, ...]


@functools.lru_cache(maxsize=256)
def _col2im_plan(
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    outs: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[bool, tuple[tuple[str, tuple[tuple[tuple[int, ...], _Index], ...], _Index], ...]]:
    """How col2im puts each tap's block of window gradients back: ``(covers, steps)``, each step
    ``(kind, ((tap, source), ...), target)`` with kind ``copy`` (the first block to reach those
    inputs), ``sum`` (two taps reaching the same inputs first: one add into them) or ``add``.
    ``covers``: every input is reached and the steps need no zeroed start; when no such order
    exists (or some input is read by no tap) every step is an ``add`` onto zeros."""
    regions = []
    for tap in _taps(kernel):
        source: list[slice] = []
        target: list[slice] = []
        cells: list[range] = []
        for t, size, o, st, p, d in zip(tap, sizes, outs, stride, padding, dilation, strict=True):
            first = max(0, -((t * d - p) // st))  # first output reading an input >= 0
            last = min(o - 1, (size - 1 + p - t * d) // st)  # last reading an input < size
            if last < first:
                break
            start = first * st + t * d - p
            source.append(slice(first, last + 1))
            target.append(slice(start, start + st * (last - first) + 1, st))
            cells.append(range(start, start + st * (last - first) + 1, st))
        else:
            regions.append((tap, tuple(source), tuple(target), frozenset(itertools.product(*cells))))
    fallback = tuple(("add", ((tap, source),), target) for tap, source, target, _ in regions)
    covered: set[tuple[int, ...]] = set()
    steps: list[tuple[str, tuple[tuple[tuple[int, ...], _Index], ...], _Index]] = []
    remaining = list(regions)
    while remaining:
        fresh = [r for r in remaining if covered.isdisjoint(r[3])]
        if fresh:
            first_r = max(fresh, key=lambda r: len(r[3]))
            twin = next((r for r in remaining if r is not first_r and r[3] == first_r[3]), None)
            remaining.remove(first_r)
            if twin is None:
                steps.append(("copy", ((first_r[0], first_r[1]),), first_r[2]))
            else:
                remaining.remove(twin)
                steps.append(("sum", ((first_r[0], first_r[1]), (twin[0], twin[1])), first_r[2]))
            covered |= first_r[3]
            continue
        inside = [r for r in remaining if r[3] <= covered]
        if not inside:
            return False, fallback
        for r in inside:
            remaining.remove(r)
            steps.append(("add", ((r[0], r[1]),), r[2]))
    if len(covered) != math.prod(sizes):
        return False, fallback
    return True, tuple(steps)


def _padded(lowered: Tensor, padding: tuple[int, ...]) -> Tensor:
    """``(K, B, *S, C)`` zero-padded on the spatial dims (only the border is zeroed)."""
    if not any(padding):
        return lowered
    k, b, *sizes, c = lowered.shape
    out = lowered.new_empty(k, b, *(s + 2 * p for s, p in zip(sizes, padding, strict=True)), c)
    for dim, p in enumerate(padding):
        if p:
            out.narrow(2 + dim, 0, p).zero_()
            out.narrow(2 + dim, out.shape[2 + dim] - p, p).zero_()
    inner = (slice(None), slice(None), *(slice(p, p + s) for s, p in zip(sizes, padding, strict=True)))
    out[inner] = lowered
    return out


def _channels_last(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised ``(N, C, *S)`` tensor held channels-last (C innermost); not a view."""
    n, c, *sizes = shape
    strides = [c * math.prod(sizes), 1] + [c * math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    return torch.empty_strided(shape, strides, dtype=like.dtype, device=like.device)


def _rows(x: Tensor, members: int) -> Tensor:
    """``(K*B, C, *S)`` as ``(K, B*prod(S), C)``: a view when ``x`` is channels-last, else a copy."""
    channels = x.shape[1]
    return (
        x.view(members, x.shape[0] // members, channels, *x.shape[2:])
        .movedim(2, -1)
        .reshape(members, -1, channels)
    )


def _taps(kernel: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every index of a kernel window, row-major."""
    out: list[tuple[int, ...]] = [()]
    for size in kernel:
        out = [(*t, i) for t in out for i in range(size)]
    return out


def _as_2d(t: Tensor, flat: bool) -> Tensor:
    """A ``(B, C, L)`` tensor as ``(B, C, 1, L)`` (a 1-D convolution is a 2-D one of height 1),
    channels-last (a view when ``t`` is already held so)."""
    return (t.unsqueeze(2) if flat else t).contiguous(memory_format=torch.channels_last)


class _MemberConv(torch.autograd.Function):
    """Member k's convolution on member k's rows of ``x: (K*B, C, *S)``, member by member with
    torch's own kernels (oneDNN on CPU) in the channels-last layout, gathered into one
    channels-last result (and gradient): every activation of a packed model stays channels-last,
    so no layer pays for a layout change. 1-D convolutions run as 2-D ones of height 1."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> Tensor:
        k = weight.shape[0]
        flat = x.dim() == 3
        geometry = ((1, *stride), (0, *padding), (1, *dilation)) if flat else (stride, padding, dilation)
        rows = x.view(k, x.shape[0] // k, *x.shape[1:])
        outs = [
            torch.convolution(
                _as_2d(rows[i], flat),
                weight[i].unsqueeze(2) if flat else weight[i],
                None if bias is None else bias[i],
                *geometry,
                False,
                [0] * len(geometry[0]),
                groups,
            )
            for i in range(k)
        ]
        first = outs[0].squeeze(2) if flat else outs[0]
        result = _channels_last((x.shape[0], *first.shape[1:]), x)
        target = result.view(k, first.shape[0], *first.shape[1:])
        for i, out in enumerate(outs):
            target[i].copy_(out.squeeze(2) if flat else out)
        ctx.save_for_backward(x, weight)
        ctx.geometry = (geometry, groups, flat, bias is not None)
        return result

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:
        x, weight = ctx.saved_tensors
        geometry, groups, flat, has_bias = ctx.geometry
        k = weight.shape[0]
        rows = x.view(k, x.shape[0] // k, *x.shape[1:])
        grads = grad.view(k, grad.shape[0] // k, *grad.shape[1:])
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        grad_x = _channels_last(tuple(x.shape), x) if mask[0] else None
        grad_rows = None if grad_x is None else grad_x.view(rows.shape)
        grad_w = torch.empty_like(weight) if mask[1] else None
        grad_b = weight.new_empty(weight.shape[:2]) if mask[2] else None
        for i in range(k):
            w = weight[i].unsqueeze(2) if flat else weight[i]
            gx, gw, gb = torch.ops.aten.convolution_backward(
                _as_2d(grads[i], flat),
                _as_2d(rows[i], flat),
                w,
                [weight.shape[1]] if has_bias else None,
                *geometry,
                False,
                [0] * len(geometry[0]),
                groups,
                mask,
            )
            if grad_rows is not None:
                grad_rows[i].copy_(gx.squeeze(2) if flat else gx)
            if grad_w is not None:
                grad_w[i].copy_(gw.view(weight.shape[1:]))
            if grad_b is not None:
                grad_b[i].copy_(gb)
        return grad_x, grad_w, grad_b, None, None, None, None


class PackedConv(nn.Module):
    """K members' ``Conv1d``/``Conv2d`` (same geometry) on a folded batch ``(K*B, C, *S)``.

    ``weight``: ``(K, O, C/groups, *k)``; ``bias``: ``(K, O)`` or absent, the solo names with a
    leading member dimension.
    """

    def __init__(self, convs: Sequence[nn.Conv1d | nn.Conv2d], mode: str) -> None:
        super().__init__()
        first = convs[0]
        self.members = len(convs)
        self.dims = 1 if isinstance(first, nn.Conv1d) else 2
        self.stride = _pair(first.stride, self.dims)
        self.padding = _pair(first.padding, self.dims)
        self.dilation = _pair(first.dilation, self.dims)
        self.groups = first.groups
        self.weight = nn.Parameter(torch.stack([c.weight.detach() for c in convs]))
        if first.bias is not None:
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.stack([c.bias.detach() for c in convs if c.bias is not None])
            )
        else:
            self.register_parameter("bias", None)
        if mode == "auto":
            # Measured (bench/packed.py, CPU): im2col wins for 1-D convolutions, torch's own
            # channels-last kernel per member for 2-D ones (im2col is 3x slower on ResNet-20).
            if first.weight.device.type != "cpu":
                mode = "grouped"
            else:
                mode = "im2col" if self.dims == 1 else "per_member"
        # im2col handles ungrouped convolutions only.
        self.mode = "grouped" if mode == "im2col" and self.groups != 1 else mode

    def forward(self, x: Tensor) -> Tensor:
        """``(K*B, C, *S)`` -> ``(K*B, O, *S_out)``."""
        if self.mode == "per_member":
            return self._per_member(x)
        if self.mode == "im2col":
            out: Tensor = _Im2colConv.apply(
                x, self.weight, self.bias, self.members, self.stride, self.padding, self.dilation
            )
            return out
        k, o = self.weight.shape[:2]
        batch = x.shape[0] // k
        folded = (
            x.reshape(k, batch, *x.shape[1:]).transpose(0, 1).reshape(batch, k * x.shape[1], *x.shape[2:])
        )
        conv = F.conv1d if self.dims == 1 else F.conv2d
        y = conv(
            folded,
            self.weight.reshape(k * o, *self.weight.shape[2:]),
            None if self.bias is None else self.bias.reshape(-1),
            self.stride,
            self.padding,
            self.dilation,
            k * self.groups,
        )
        return y.view(batch, k, o, *y.shape[2:]).transpose(0, 1).reshape(k * batch, o, *y.shape[2:])

    def _per_member(self, x: Tensor) -> Tensor:
        out: Tensor = _MemberConv.apply(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return out

    def extra_repr(self) -> str:
        return f"members={self.members}, weight={tuple(self.weight.shape[1:])}, mode={self.mode}"


class _LinearFn(torch.autograd.Function):
    """Member k's ``Linear`` on member k's rows of ``x: (K*B, ..., F)``: one batched matmul,
    written into a fresh result (not a view of the matmul's, so an in-place ReLU that follows
    does not make autograd copy slices around it)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        k, n, f = weight.shape
        rows = x.reshape(k, -1, f)
        result = x.new_empty(*x.shape[:-1], n)
        target = result.view(k, -1, n)
        if bias is None:
            torch.bmm(rows, weight.transpose(1, 2), out=target)
        else:
            torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2), out=target)
        ctx.save_for_backward(
            rows if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None
        )
        ctx.shape = tuple(x.shape)
        return result

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        rows, weight = ctx.saved_tensors
        k = (rows if rows is not None else weight).shape[0]
        g = grad.reshape(k, -1, grad.shape[-1])
        grad_x = torch.bmm(g, weight).view(ctx.shape) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(g.transpose(1, 2), rows) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class PackedLinear(nn.Module):
    """K members' ``Linear`` layers on a folded batch ``(K*B, ..., F)`` -> ``(K*B, ..., N)``."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.members = len(linears)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))
        if linears[0].bias is not None:
            self.bias: nn.Parameter | None = nn.Parameter(torch.stack([m.bias.detach() for m in linears]))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = _LinearFn.apply(x, self.weight, self.bias)
        return out


class _Layout:
    """Which layout a packed layer's output should take: that of the gradients coming back to it
    (learnt from the last backward pass). An elementwise operation between the layer and its
    consumer (ReLU and its backward) then sees one layout, not a mix it would walk slowly, and a
    consumer that wants the other layout (``flatten`` before a ``Linear``) reads a view. Either
    layout holds the same values: the results do not depend on it."""

    __slots__ = ("channels_first",)

    def __init__(self) -> None:
        self.channels_first = False

    def learn(self, grad: Tensor) -> None:
        if grad.dim() < 3:
            return
        first, last = grad.is_contiguous(), grad.movedim(1, -1).is_contiguous()
        if first != last:
            self.channels_first = first


class _MemberBatchNorm(torch.autograd.Function):
    """Batch normalisation of ``x: (K*B, C, *S)``, member by member with torch's own kernels
    (``native_batch_norm`` and its backward) on each member's ``(B*prod(S), C)`` rows, written
    into one result (not a view, so an in-place ReLU may follow) held channels-last, or
    channels-first when that is the layout its gradient comes back in (:class:`_Layout`). Running
    statistics (``(K, C)`` views) are updated in place as the solo layer updates them.
    ``views``: the members' slices of weight, bias, running mean and variance (see
    :meth:`PackedBatchNorm.member_views`)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        views: tuple[Sequence[Tensor | None], ...],
        training: bool,
        momentums: list[float],
        eps: float,
        layout: _Layout,
    ) -> Tensor:
        k, channels = len(momentums), x.shape[1]
        rows = _rows(x, k)
        result = _channels_last(tuple(x.shape), x)
        out_rows = result.movedim(1, -1).view(rows.shape).unbind(0)
        means = x.new_empty(k, channels if training else 0)
        invstds = x.new_empty(k, channels if training else 0)
        ws, bs, rms, rvs = views
        for i, (r, m, s) in enumerate(zip(rows.unbind(0), means.unbind(0), invstds.unbind(0), strict=True)):
            torch.native_batch_norm(
                r, ws[i], bs[i], rms[i], rvs[i], training, momentums[i], eps, out=(out_rows[i], m, s)
            )
        ctx.save_for_backward(rows, weight, means, invstds)
        ctx.geometry = (tuple(x.shape), training, eps, views)
        return result.contiguous() if layout.channels_first else result

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:
        rows, weight, means, invstds = ctx.saved_tensors
        shape, training, eps, (ws, _, rms, rvs) = ctx.geometry
        k = rows.shape[0]
        g = _rows(grad, k)
        grad_x = _channels_last(shape, grad) if ctx.needs_input_grad[0] else None
        want_w = weight is not None and ctx.needs_input_grad[1]
        want_b = ctx.needs_input_grad[2]
        grad_w = grad.new_empty(k, shape[1]) if want_w else None
        grad_b = grad.new_empty(k, shape[1]) if want_b else None
        spare = grad.new_empty(0)
        outs = [
            [spare] * k if t is None else t.unbind(0)
            for t in (None if grad_x is None else grad_x.movedim(1, -1).view(rows.shape), grad_w, grad_b)
        ]
        if training:  # the batch statistics; the running ones are not read
            ms, ss = means.unbind(0), invstds.unbind(0)
            rms = rvs = [None] * k
        else:
            ms = ss = [None] * k
        mask = [grad_x is not None, want_w, want_b]
        for i, (gi, ri) in enumerate(zip(g.unbind(0), rows.unbind(0), strict=True)):
            torch.ops.aten.native_batch_norm_backward.out(
                gi,
                ri,
                ws[i],
                rms[i],
                rvs[i],
                ms[i],
                ss[i],
                training,
                eps,
                mask,
                out0=outs[0][i],
                out1=outs[1][i],
                out2=outs[2][i],
            )
        return grad_x, grad_w, grad_b, None, None, None, None, None


class PackedBatchNorm(nn.Module):
    """K members' ``BatchNorm1d``/``2d`` on a folded batch ``(K*B, C, *S)``: statistics per
    member and channel over that member's ``B * prod(S)`` values, running statistics updated as
    ``torch.nn.functional.batch_norm`` updates them (momentum, or the cumulative average when
    momentum is None; unbiased variance). Buffers keep the solo names, stacked ``(K, ...)``."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm], mode: str = "auto") -> None:
        super().__init__()
        first = norms[0]
        self.members = len(norms)
        if mode == "auto":
            tensors = [*first.parameters(recurse=False), *first.buffers(recurse=False)]
            on_cpu = not tensors or tensors[0].device.type == "cpu"
            mode = "per_member" if on_cpu else "grouped"
        self.mode = mode
        self.eps = first.eps
        self.momentum = first.momentum
        self._layout = _Layout()
        self._output: Tensor | None = None  # until the pack's forward ends
        self._views: tuple[Sequence[Tensor | None], ...] = ()
        self._views_key: tuple[Any, ...] | None = None
        self.track_running_stats = first.track_running_stats
        if first.affine:
            self.weight: nn.Parameter | None = nn.Parameter(torch.stack([m.weight.detach() for m in norms]))
            self.bias: nn.Parameter | None = nn.Parameter(torch.stack([m.bias.detach() for m in norms]))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if first.track_running_stats:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, torch.stack([getattr(m, name).detach().clone() for m in norms]))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def forward(self, x: Tensor) -> Tensor:
        """``(K*B, C, *S)`` -> the same shape, normalised per member and channel."""
        k, channels = self.members, x.shape[1]
        factors: list[float | None] = [self.momentum] * k
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, per member
                factors = [1.0 / float(v) for v in self.num_batches_tracked.tolist()]
        batch_stats = self.training or self.running_mean is None
        if self.mode == "grouped":  # members folded into channels: one kernel (CUDA)
            batch = x.shape[0] // k
            folded = (
                x.reshape(k, batch, *x.shape[1:]).transpose(0, 1).reshape(batch, k * channels, *x.shape[2:])
            )
            y = F.batch_norm(
                folded,
                None if self.running_mean is None else self.running_mean.view(-1),
                None if self.running_var is None else self.running_var.view(-1),
                None if self.weight is None else self.weight.reshape(-1),
                None if self.bias is None else self.bias.reshape(-1),
                batch_stats,
                0.0 if factors[0] is None else factors[0],
                self.eps,
            )
            return y.view(batch, k, channels, *x.shape[2:]).transpose(0, 1).reshape(x.shape)
        # One (N, C) slice per member, channels innermost: the CPU kernel's fast layout.
        out: Tensor = _MemberBatchNorm.apply(
            x,
            self.weight,
            self.bias,
            self.member_views(),
            batch_stats,
            [0.0 if f is None else float(f) for f in factors],
            self.eps,
            self._layout,
        )
        self._output = out if out.requires_grad else None
        return out

    def member_views(self) -> tuple[Sequence[Tensor | None], ...]:
        """Each member's slice of weight, bias, running mean and running variance (K Nones for
        an absent one), detached views kept while those tensors keep their storage."""
        tensors = (self.weight, self.bias, self.running_mean, self.running_var)
        key = tuple(None if t is None else (t.data_ptr(), t.shape, t.stride(), t.dtype) for t in tensors)
        if self._views_key != key:
            k = self.members
            self._views = tuple([None] * k if t is None else t.detach().unbind(0) for t in tensors)
            self._views_key = key
        return self._views

    def extra_repr(self) -> str:
        return f"members={self.members}, eps={self.eps}, momentum={self.momentum}"


#: Parameter-free modules whose forward draws random numbers per example (refused: a packed draw
#: is not the members' solo draws).
_RANDOM = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _twin(name: str, modules: Sequence[nn.Module], conv: str) -> nn.Module | None:
    """The packed twin of the members' module ``name``, None when it holds no tensor of its own."""
    first = modules[0]
    own = list(first.named_parameters(recurse=False)) + list(first.named_buffers(recurse=False))
    if isinstance(first, _RANDOM) and first.p > 0:
        raise NotPackable(
            f"layer {name!r} ({type(first).__name__}, p={first.p}) draws random numbers per example"
        )
    if not own:
        return None
    if isinstance(first, nn.Conv1d | nn.Conv2d) and type(first) in (nn.Conv1d, nn.Conv2d):
        if first.padding_mode != "zeros" or isinstance(first.padding, str):
            raise NotPackable(
                f"layer {name!r}: padding {first.padding!r} / padding_mode {first.padding_mode!r} "
                "is not supported packed (numeric padding with zeros is)"
            )
        return PackedConv([m for m in modules if isinstance(m, nn.Conv1d | nn.Conv2d)], conv)
    if type(first) is nn.Linear:
        return PackedLinear(modules)  # type: ignore[arg-type]
    if type(first) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return PackedBatchNorm(modules, "grouped" if conv == "grouped" else "auto")  # type: ignore[arg-type]
    raise NotPackable(
        f"layer {name!r} ({type(first).__name__}) holds tensors packed training does not handle; "
        "supported: Conv1d, Conv2d, Linear, BatchNorm1d, BatchNorm2d"
    )


class PackedModel(nn.Module):
    """K members of one architecture folded into one module (see the module docstring).

    ``forward``: ``(K*B, *input_shape)`` (member k's examples in rows ``k*B .. (k+1)*B-1``) ->
    ``(K*B, num_classes)``. ``state_dict`` keys are the solo keys, each tensor with a leading
    member dimension; :meth:`member_state` and :meth:`load_member_state` convert.
    """

    def __init__(self, models: Sequence[nn.Module], conv: str = "auto") -> None:
        super().__init__()
        if not models:
            raise ValueError("a pack needs at least one member")
        if conv not in CONV_MODES:
            raise ValueError(f"unknown conv mode {conv!r}; valid choices: {', '.join(CONV_MODES)}")
        self.members = len(models)
        keys = list(models[0].state_dict().keys())
        shapes = [tuple(v.shape) for v in models[0].state_dict().values()]
        for i, model in enumerate(models[1:], start=1):
            state = model.state_dict()
            if list(state) != keys or [tuple(v.shape) for v in state.values()] != shapes:
                raise NotPackable(f"member {i} has another architecture than member 0")
        net = copy.deepcopy(models[0])
        named = [dict(m.named_modules()) for m in models]
        for name, module in list(net.named_modules()):
            if not name:
                if list(module.named_parameters(recurse=False)) or list(module.named_buffers(recurse=False)):
                    raise NotPackable(f"the model ({type(module).__name__}) holds tensors outside its layers")
                continue
            twin = _twin(name, [n[name] for n in named], conv)
            if twin is not None:
                parent, _, child = name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, child, twin)
        self.net = net
        self.keys = keys
        self._norms = tuple(m for m in net.modules() if isinstance(m, PackedBatchNorm))
        if list(self.net.state_dict().keys()) != keys:
            raise NotPackable(
                "the packed model's state does not match the members' (a layer holds extra tensors)"
            )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        for norm in self._norms:
            # The gradient of what became of the normalised output (an in-place ReLU acts on it)
            # tells its layer which layout to produce next time (:class:`_Layout`).
            last, norm._output = norm._output, None
            if last is not None:
                last.register_hook(norm._layout.learn)
        return out

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's ``state_dict`` (the solo keys and shapes; copies)."""
        return {key: value[k].detach().clone() for key, value in self.net.state_dict().items()}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, Tensor]) -> None:
        """Set member k's tensors from a solo ``state_dict``."""
        own = self.net.state_dict()
        if set(state) != set(own):
            missing = sorted(set(own) - set(state))[:3]
            raise PrunelabError(f"member state does not fit the packed model (missing e.g. {missing})")
        for key, value in own.items():
            value[k].copy_(state[key])


def probe(models: Sequence[nn.Module], input_shape: tuple[int, ...], conv: str = "auto") -> None:
    """Check that a pack of (up to two of) ``models`` computes what each computes solo: outputs in
    train and eval mode, parameter gradients and running statistics, on 3 random examples each.
    Catches a model whose forward mixes examples or members in a way packing does not follow.

    Raises:
        NotPackable: with the first mismatch (one line).
    """
    members = list(models[:2])
    device = next(iter(members[0].parameters())).device
    k, b = len(members), 3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(k, b, *input_shape, generator=gen).to(device)
    weights = torch.randn(k, b, 1, generator=gen).to(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        solos = [copy.deepcopy(m).train() for m in members]
        packed = PackedModel([copy.deepcopy(m) for m in members], conv).train()
        try:
            expected = [solo(x[i]) for i, solo in enumerate(solos)]
            got = packed(x.reshape(k * b, *input_shape)).view(k, b, -1)
        except Exception as exc:  # the model's own forward rejects the folded batch
            raise NotPackable(
                f"the model's forward fails on a packed batch: {type(exc).__name__}: {exc}"
            ) from None
        _agree("training-mode outputs", [e.view(b, -1) for e in expected], list(got))
        torch.stack(
            [(e.view(b, -1) * w).sum() for e, w in zip(expected, weights, strict=True)]
        ).sum().backward()
        (got * weights).sum().backward()
        own = dict(packed.net.named_parameters())
        for name, _ in solos[0].named_parameters():
            want = [dict(s.named_parameters())[name].grad for s in solos]
            have = own[name].grad
            if any(w is None for w in want) or have is None:
                continue
            _agree(f"gradients of {name}", [w for w in want if w is not None], list(have))
        state = packed.net.state_dict()
        for name, value in solos[0].state_dict().items():
            if value.is_floating_point():
                _agree(f"state {name}", [s.state_dict()[name] for s in solos], list(state[name]))
        with torch.no_grad():
            solo_eval = [s.eval()(x[i]).view(b, -1) for i, s in enumerate(solos)]
            packed_eval = packed.eval()(x.reshape(k * b, *input_shape)).view(k, b, -1)
        _agree("eval-mode outputs", solo_eval, list(packed_eval))


def _agree(what: str, expected: Sequence[Tensor], got: Sequence[Tensor]) -> None:
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e.shape != g.shape:
            raise NotPackable(
                f"packed {what} of member {i} have shape {tuple(g.shape)}, solo {tuple(e.shape)}"
            )
        scale = 1.0 + float(e.detach().abs().max()) if e.numel() else 1.0
        diff = float((e.detach() - g.detach()).abs().max()) if e.numel() else 0.0
        if not diff <= 1e-3 * scale:
            raise NotPackable(
                f"packed {what} of member {i} differ from solo by {diff:.3g} (the model's forward "
                "mixes examples or members in a way packing does not follow)"
            )


# -- the training loop -----------------------------------------------------------------------------
@dataclass
class Member:
    """One run of a pack, as :func:`prunelab.training.trainer.train` would take it.

    Attributes:
        model: the member's network on the data's device (initialised, mask applied); it receives
            the final weights when training ends (or stops).
        data: its dataset (its own training split under a training-data corruption; the
            evaluation split must be the pack's).
        mask: its pruning mask, or None (dense).
        generator: CPU generator of its data order and augmentation.
        resume: continue from this state (every member of a pack resumes at the same epoch).
        callbacks: called after each epoch with its record and a thunk of its state (metrics,
            checkpoints).
    """

    model: nn.Module
    data: DataBundle
    mask: Mask | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    resume: TrainState | None = None
    callbacks: Sequence[EpochCallback] = ()


def stacked_mask(masks: Sequence[Mask | None], packed: PackedModel) -> Mask | None:
    """The members' masks stacked ``(K, *shape)`` over the union of their layers (all-ones for a
    member that does not prune a layer; None when no member prunes)."""
    names: list[str] = []
    for mask in masks:
        for name in mask or {}:
            if name not in names:
                names.append(name)
    if not names:
        return None
    params = dict(packed.net.named_parameters())
    out = {}
    for name in names:
        if name not in params:
            raise PrunelabError(f"mask layer {name!r} is not a parameter of the model")
        shape = params[name].shape[1:]
        rows = [
            m[name].to(params[name].device)
            if m is not None and name in m
            else torch.ones(shape, dtype=torch.bool, device=params[name].device)
            for m in masks
        ]
        out[name] = torch.stack(rows)
    return Mask(out)


def packed_step(
    packed: PackedModel,
    optimizer: torch.optim.Optimizer,
    enforcer: MaskEnforcer,
    x: Tensor,
    y: Tensor,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One training step of every member: ``x: (K*B, *input_shape)``, ``y: (K*B,)``, member k's
    batch in rows ``k*B .. (k+1)*B-1``. Returns each member's mean loss ``(K,)`` (detached) and
    correct count ``(K,)``, on the device (no host synchronisation)."""
    k = packed.members
    rows = y.shape[0] // k
    logits = packed(x)
    losses = (
        F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing).view(k, rows).mean(1)
    )
    optimizer.zero_grad(set_to_none=False)
    losses.sum().backward()  # members share nothing: each gets its own mean-loss gradient
    enforcer.mask_grads()
    optimizer.step()
    enforcer.apply_weights()
    return losses.detach(), (logits.detach().argmax(1) == y).view(k, rows).sum(1)


def packed_optimizer(packed: PackedModel, template: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The solo optimizer (:func:`make_optimizer` of member 0: implementation, groups, decay) over
    the stacked tensors, with the same parameter order, so state indices match a solo run's."""
    solo = make_optimizer(template, config)
    names = {id(p): n for n, p in template.named_parameters()}
    own = dict(packed.net.named_parameters())
    groups = []
    for group in solo.param_groups:
        entry = {k: v for k, v in group.items() if k != "params"}
        entry["params"] = [own[names[id(p)]] for p in group["params"]]
        groups.append(entry)
    return torch.optim.SGD(groups, **solo.defaults)


def member_optimizer_state(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k's slice of a packed optimizer ``state_dict`` (the solo format)."""
    return {
        "state": {
            index: {
                key: (
                    value[k].clone()
                    if isinstance(value, Tensor) and value.dim() > 0
                    else copy.deepcopy(value)
                )
                for key, value in entry.items()
            }
            for index, entry in state["state"].items()
        },
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def stack_optimizer_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The packed optimizer ``state_dict`` of the members' solo ones (same indices and groups)."""
    first = states[0]
    out: dict[str, Any] = {"state": {}, "param_groups": copy.deepcopy(first["param_groups"])}
    for index, entry in first["state"].items():
        stacked: dict[str, Any] = {}
        for key, value in entry.items():
            values = [s["state"].get(index, {}).get(key) for s in states]
            if isinstance(value, Tensor) and value.dim() > 0:
                if any(not isinstance(v, Tensor) for v in values):
                    raise PrunelabError(
                        f"optimizer state {key!r} of parameter {index} is missing in a member"
                    )
                stacked[key] = torch.stack([v for v in values if isinstance(v, Tensor)])
            else:
                stacked[key] = copy.deepcopy(value)
        out["state"][index] = stacked
    return out


@torch.no_grad()
def evaluate_packed(
    packed: PackedModel, data: DataBundle, *, split: str = "test", examples: int | None = None
) -> list[tuple[float, float]]:
    """Each member's ``(mean cross-entropy, accuracy fraction)`` on the evaluation split (as
    :func:`prunelab.training.trainer.evaluate`): every member sees the same test batches.

    ``examples``: examples per forward pass of the whole pack (default :data:`EVAL_EXAMPLES`).
    """
    packed.eval()
    k = packed.members
    device = data.device
    total = examples or EVAL_EXAMPLES.get(device.type, 1000)
    per_member = max(1, total // k)
    dtype = torch.float32 if device.type == "mps" else torch.float64
    loss_sum = torch.zeros(k, device=device, dtype=dtype)
    correct = torch.zeros(k, device=device, dtype=torch.long)
    count = 0
    batches = data.heldout_batches(per_member) if split == "heldout" else data.test_batches(per_member)
    for x, y in batches:
        logits = packed(x.repeat(k, *([1] * (x.dim() - 1)))).view(k, x.shape[0], -1)
        losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1)
        loss_sum += losses.sum(1).to(dtype)
        correct += (logits.argmax(2) == y).sum(1)
        count += y.shape[0]
    return [
        (float(s) / max(count, 1), int(c) / max(count, 1))
        for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)
    ]


_MALLOC_TUNED: list[bool] = []


def keep_freed_memory() -> bool:
    """On Linux with glibc, once per process: serve blocks up to 32 MiB from the heap and stop
    returning freed memory to the OS (``mallopt`` mmap threshold 32 MiB, trim threshold 1 GiB,
    top pad 64 MiB). A pack's activations are K times a run's; with glibc's defaults every step
    maps and unmaps them afresh and re-faults their pages (measured on the demo's 1-D CNN in packs
    of 35: 30 s of system time against 4 s for the solo runs). Costs resident memory kept at its
    peak. Returns whether the settings took."""
    if _MALLOC_TUNED:
        return _MALLOC_TUNED[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            # M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3 (malloc.h)
            ok = all(
                libc.mallopt(param, value) == 1
                for param, value in ((-3, 32 << 20), (-1, 1 << 30), (-2, 64 << 20))
            )
        except (OSError, AttributeError):
            ok = False
    _MALLOC_TUNED.append(ok)
    return ok


def _check_pack(members: Sequence[Member], config: TrainConfig, start_epoch: int) -> None:
    """Refuse what cannot train as one pack: the recipe, a start epoch outside it, members resuming
    at different epochs, or data that differ in evaluation split or training-split size."""
    why = config_refusal(config)
    if why is not None:
        raise NotPackable(why)
    if not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch {start_epoch} outside [0, {config.epochs}]")
    resumed = {m.resume.epoch if m.resume is not None else None for m in members}
    if len(resumed) > 1:
        raise PrunelabError(
            f"members of a pack must resume at the same epoch, got {sorted(map(str, resumed))}"
        )
    data0 = members[0].data
    for m in members[1:]:
        if m.data.test_x is not data0.test_x and not (
            m.data.test_x.shape == data0.test_x.shape and torch.equal(m.data.test_x, data0.test_x)
        ):
            raise NotPackable("members of a pack must share the evaluation split")
        if m.data.train_x.shape[0] != data0.train_x.shape[0]:
            raise NotPackable("members of a pack must have training splits of one size")


def _packed_epoch(
    members: Sequence[Member],
    packed: PackedModel,
    optimizer: torch.optim.Optimizer,
    enforcer: MaskEnforcer,
    config: TrainConfig,
) -> tuple[list[float], list[float]]:
    """One epoch of packed steps, member k's batches drawn from its own generator as its solo run
    draws them: each member's ``(mean training loss, training accuracy)``, read once at the end."""
    k, device = len(members), members[0].data.device
    packed.train()
    loss_sum = torch.zeros(k, device=device)
    correct = torch.zeros(k, device=device, dtype=torch.long)
    seen = 0
    streams = [m.data.train_batches(config.batch_size, m.generator, augment=config.augment) for m in members]
    for pairs in zip(*streams, strict=True):
        x = torch.cat([p[0] for p in pairs])
        y = torch.cat([p[1] for p in pairs])
        rows = pairs[0][1].shape[0]
        losses, right = packed_step(packed, optimizer, enforcer, x, y, config.label_smoothing)
        loss_sum += losses * rows
        correct += right
        seen += rows
    return [v / max(seen, 1) for v in loss_sum.tolist()], [v / max(seen, 1) for v in correct.tolist()]


def train_packed(
    members: Sequence[Member],
    config: TrainConfig,
    *,
    start_epoch: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stop_after_epoch: int | None = None,
    conv: str = "auto",
    check: bool = True,
) -> list[TrainResult]:
    """Train the members as one packed model; each member's history and final weights (written
    back into ``member.model``) are those of :func:`prunelab.training.trainer.train` on it alone,
    to floating-point tolerance.

    Args:
        members: the runs (same architecture and data shapes; at the same epoch when resuming).
        config: the shared recipe (:func:`config_refusal` must accept it).
        start_epoch: first epoch when not resuming (the lr schedule continues from there).
        progress: ``progress(epochs_done, epochs_total)`` after each epoch of the pack.
        stop_after_epoch: stop (as if killed) once this many epochs are done, after every member's
            callbacks of that epoch ran.
        conv: how packed convolutions are computed (:data:`CONV_MODES`).
        check: run :func:`probe` first.

    Returns:
        Each member's :class:`TrainResult` (epoch records; ``seconds`` is the member's share,
        the pack's epoch time / K).

    Raises:
        NotPackable: the config or the model cannot train packed.
    """
    if not members:
        return []
    _check_pack(members, config, start_epoch)
    data0 = members[0].data
    k = len(members)
    if data0.device.type == "cpu":
        keep_freed_memory()
    for m in members:
        if m.resume is not None:
            m.model.load_state_dict(m.resume.model_state)
            m.generator.set_state(m.resume.generator_state)
    if check:
        probe([m.model for m in members], data0.input_shape, conv)
    packed = PackedModel([m.model for m in members], conv)
    optimizer = packed_optimizer(packed, members[0].model, config)
    start = start_epoch
    first = members[0].resume
    if first is not None:
        optimizer.load_state_dict(
            stack_optimizer_states([m.resume.optimizer_state for m in members if m.resume is not None])
        )
        start = first.epoch
    enforcer = MaskEnforcer(packed.net, stacked_mask([m.mask for m in members], packed), optimizer)
    enforcer.apply_weights()
    enforcer.clear_state()

    def snapshot(i: int, epoch_done: int) -> Callable[[], TrainState]:
        return lambda: TrainState(
            epoch_done,
            packed.member_state(i),
            member_optimizer_state(optimizer.state_dict(), i),
            members[i].generator.get_state(),
        )

    results = [TrainResult() for _ in members]
    try:
        for epoch in range(start, config.epochs):
            began = time.perf_counter()
            lr = config.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_loss, train_acc = _packed_epoch(members, packed, optimizer, enforcer, config)
            scores = evaluate_packed(packed, data0)
            share = (time.perf_counter() - began) / k
            for i, member in enumerate(members):
                record = EpochRecord(
                    epoch=epoch + 1,
                    lr=lr,
                    train_loss=train_loss[i],
                    train_acc=train_acc[i],
                    test_loss=scores[i][0],
                    test_acc=scores[i][1],
                    seconds=share,
                )
                results[i].history.append(record)
                for callback in member.callbacks:
                    callback(record, snapshot(i, epoch + 1))
            if progress is not None:
                progress(epoch + 1, config.epochs)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    finally:
        for i, member in enumerate(members):
            member.model.load_state_dict(packed.member_state(i))
    return results


def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes of every module output of one example's forward pass (``model`` in eval mode, on
    CPU), a proxy for what a training step keeps per example for its backward pass."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    probe_model = copy.deepcopy(model).cpu().eval()
    handles = [m.register_forward_hook(hook) for m in probe_model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            probe_model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def member_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """Estimated memory of one member of a pack in training: weights, gradients, momentum and
    mask (4 tensors per parameter) plus three times the activations of a batch (outputs kept for
    backward, unfolded convolution windows, gradients in flight)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 4 * params + 3 * batch_size * activation_bytes(model, input_shape)


__all__ = [
    "CONV_MODES",
    "Member",
    "NotPackable",
    "PackedModel",
    "config_refusal",
    "evaluate_packed",
    "member_bytes",
    "probe",
    "train_packed",
]
