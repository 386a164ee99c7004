"""The fast path of one training run: mixed precision, channels_last, ``torch.compile``, the SGD
implementation, cuDNN flags and the evaluation batch size.

Everything here is opt-in through :class:`~prunelab.training.config.TrainConfig` fields whose
defaults keep today's numerics (``precision="fp32"``, ``channels_last=False``, ``compile=False``,
``optimizer_impl="auto"``, ``deterministic=False``), except two device-dependent settings that change
no trained weight on CPU and are not part of a run's identity:

- on CUDA, ``torch.backends.cudnn.benchmark`` is on during training (cuDNN times its convolution
  algorithms once per shape and keeps the fastest). The choice can differ between processes and
  machines, so CUDA runs are not bitwise reproducible; ``deterministic=True`` turns it off and
  asks for deterministic algorithms instead (slower).
- evaluation batches are larger on CUDA (:func:`eval_batch_size`).

The mask passes (:class:`~prunelab.training.trainer.MaskEnforcer`) stay eager in every mode: with
``compile`` only the model's forward (and so its backward) is compiled. Each pass is one
``torch._foreach_mul_`` (a handful of multi-tensor kernels on CUDA), well under 1 % of a step; kept
outside the compiler, the invariant does not depend on what the compiler traces, and a change of
learning rate or mask values never recompiles.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from prunelab.errors import PrunelabError

#: autocast dtype of each reduced precision.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Input elements per evaluation batch on CUDA (2**25: 128 MiB of float32 input), clamped to
#: [1000, 8192] examples: CIFAR (3x32x32) gets 8192, ImageNet-sized inputs keep 1000.
CUDA_EVAL_ELEMENTS = 2**25
CPU_EVAL_BATCH = 1000
CUDA_EVAL_BATCH_MAX = 8192


def check_supported(precision: str, device: torch.device) -> None:
    """Raise a one-line :class:`PrunelabError` when ``precision`` cannot run on ``device``."""
    if precision == "fp32":
        return
    if precision not in AUTOCAST_DTYPES:
        raise PrunelabError(f"unknown precision {precision!r}; valid choices: fp32, bf16, fp16")
    if not torch.amp.is_autocast_available(device.type):
        raise PrunelabError(
            f"precision {precision!r} needs autocast, which torch does not offer on device "
            f"{device.type!r}; use precision fp32"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise PrunelabError(
            f"precision 'bf16' needs a GPU with bfloat16 support (Ampere or newer), not "
            f"{torch.cuda.get_device_name(device)!r}; use fp16 or fp32"
        )


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device``: none for ``"fp32"``, else
    ``torch.autocast`` to bfloat16 or float16 (weights, masks and optimizer state stay float32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A loss scaler for ``"fp16"`` (float16 gradients underflow without one), else None. Its
    overflow check stays on the device: with a fused optimizer the step is skipped in the kernel;
    with the others GradScaler reads one flag per step (a host sync, see :func:`optimizer_kwargs`)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def optimizer_kwargs(impl: str, device: torch.device, precision: str = "fp32") -> dict[str, bool]:
    """``foreach``/``fused`` arguments of ``torch.optim.SGD`` for ``optimizer_impl``.

    ``"auto"`` passes nothing (torch's default: the for-loop on CPU, foreach on CUDA; on CPU the two
    are bitwise equal for SGD), except fp16 on CUDA, which gets the fused kernel so that GradScaler's
    overflow check needs no host sync. ``"fused"`` needs a device with fused SGD (CPU and CUDA in
    torch 2.13) and changes the last bits of the update (fused multiply-add).
    """
    if impl == "auto":
        return {"fused": True} if precision == "fp16" and device.type == "cuda" else {}
    if impl == "foreach":
        return {"foreach": True}
    if impl == "for_loop":
        return {"foreach": False}
    if impl == "fused":
        return {"fused": True}
    raise PrunelabError(f"unknown optimizer_impl {impl!r}; valid choices: auto, foreach, fused, for_loop")


def uses_channels_last(requested: bool, input_shape: tuple[int, ...]) -> bool:
    """``channels_last`` applies to image models only (examples ``(C, H, W)``, batches 4-D)."""
    return requested and len(input_shape) == 3


@contextlib.contextmanager
def memory_format(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Hold ``model``'s 4-D parameters and buffers in channels_last while inside, and in the
    default (contiguous) layout again on exit, so callers and checkpoints see the usual layout.
    Parameters keep their identity (``Module.to`` swaps ``.data``), so optimizers and masks that
    hold them stay valid."""
    if not enabled:
        yield
        return
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


@contextlib.contextmanager
def backend_flags(device: torch.device, deterministic: bool) -> Iterator[None]:
    """cuDNN/determinism flags for a run on ``device``, restored on exit.

    CUDA: ``cudnn.benchmark`` on (fastest convolution algorithms, chosen by timing: not bitwise
    reproducible), or with ``deterministic``: benchmark off, ``cudnn.deterministic`` and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` on, and ``CUBLAS_WORKSPACE_CONFIG``
    set to ``:4096:8`` unless already set (cuBLAS reads it when its first handle is created, so set
    it before the process's first CUDA matmul to be sure). Other devices: nothing to set (CPU
    kernels are deterministic for a given machine and thread count).
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (
        cudnn.benchmark,
        cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def eval_batch_size(device: torch.device, input_shape: tuple[int, ...]) -> int:
    """Examples per evaluation batch: 1000 on CPU (as always); on CUDA as many as fit
    :data:`CUDA_EVAL_ELEMENTS` input elements, clamped to [1000, 8192] (8192 for CIFAR shapes, 1000
    for ImageNet shapes). Evaluation runs under ``no_grad`` so activations are freed layer by layer."""
    if device.type != "cuda":
        return CPU_EVAL_BATCH
    per_example = max(1, int(torch.Size(input_shape).numel()))
    return max(CPU_EVAL_BATCH, min(CUDA_EVAL_BATCH_MAX, CUDA_EVAL_ELEMENTS // per_example))


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` (default mode, Inductor). With torch's default of inlining
    built-in modules, parameters are graph inputs, so another model of the same architecture (a
    new seed or mask) reuses the compiled code instead of recompiling."""
    return torch.compile(model)  # type: ignore[return-value]


@functools.cache
def compile_unavailable(device_type: str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run on ``device_type`` here (one line), or None when it can.

    CPU needs Inductor's C++ compiler (``g++``/``clang++``, or ``$CXX``); CUDA needs Triton. This
    only checks that the tools are present; it does not compile anything.
    """
    try:
        import torch._inductor.config  # noqa: F401
    except Exception as exc:  # torch built without Inductor
        return f"torch.compile unavailable: Inductor does not import ({type(exc).__name__})"
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"torch.compile on CPU needs a C++ compiler (g++ or clang++): {first}"
        return None
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on CUDA needs Triton, which is not installed"
        return None
    return f"torch.compile is not supported here on device {device_type!r}"


__all__ = [
    "AUTOCAST_DTYPES",
    "autocast",
    "backend_flags",
    "check_supported",
    "compile_model",
    "compile_unavailable",
    "eval_batch_size",
    "grad_scaler",
    "memory_format",
    "optimizer_kwargs",
    "uses_channels_last",
]
