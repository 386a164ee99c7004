"""Adversarial robustness: L-inf FGSM and PGD attacks in input pixel space, and accuracy under attack.

Models take normalised inputs ``x_norm = (x_pixel - mean) / std`` (per channel, channel dim 1), but
an attack budget ``epsilon`` is meant in the units of the raw data (e.g. ``8/255`` for images in
``[0, 1]``). So each attack maps the input back to pixel space with a :class:`PixelSpace`, perturbs
it there so that ``||x_adv_pixel - x_pixel||_inf <= epsilon`` and, when the space has bounds, clamps
it into them, and hands the model ``space.to_norm(x_adv_pixel)``. The gradient of the cross-entropy
loss flows through the normalisation, so its sign is the sign of the pixel-space gradient.

Side effects on the model: none. Attacks run it in eval mode (batch-norm running statistics,
dropout: the model as it is evaluated) and restore every submodule's previous mode afterwards;
gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no parameter's
``.grad`` is created or changed. Attacks work inside ``torch.no_grad()`` too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.errors import PrunelabError, invalid_choice

#: Valid names for the ``attack`` of :func:`adversarial_accuracy`.
ATTACKS = ("fgsm", "pgd")
#: Keyword options each attack accepts through :func:`adversarial_accuracy`.
ATTACK_OPTIONS: dict[str, tuple[str, ...]] = {
    "fgsm": (),
    "pgd": ("steps", "step_size", "random_start", "generator"),
}
#: PGD's default step size is this times ``epsilon / steps`` (Madry et al. 2018 use 2.5).
PGD_STEP_FACTOR = 2.5


def _float_tuple(value: Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise PrunelabError(f"{what} must be a sequence of numbers or None, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise PrunelabError(f"{what} must be a non-empty sequence of finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class PixelSpace:
    """Per-channel normalisation of a model's inputs, and the valid range of the raw (pixel) data.

    Attributes:
        mean: per-channel mean subtracted before the model (one value per channel of dim 1, or a
            single value for all); None means 0.
        std: per-channel standard deviation divided by, all ``> 0``; None means 1.
        bounds: ``(low, high)`` range of valid pixel values, e.g. ``(0.0, 1.0)`` for images;
            None (e.g. MNIST-1D signals) means no clamping.

    ``PixelSpace()`` is the identity: the model sees the raw data and nothing is clamped.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from a YAML config) to tuples of floats; frozen, hence object.__setattr__.
        mean = _float_tuple(self.mean, "mean")
        std = _float_tuple(self.std, "std")
        if std is not None and not all(s > 0 for s in std):
            raise PrunelabError(f"std must be > 0 in every channel, got {self.std!r}")
        if mean is not None and std is not None and len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise PrunelabError(
                f"mean and std must have the same number of channels, got {self.mean!r} and {self.std!r}"
            )
        bounds: tuple[float, float] | None = None
        if self.bounds is not None:
            pair = _float_tuple(self.bounds, "bounds")
            if pair is None or len(pair) != 2 or not pair[0] < pair[1]:
                raise PrunelabError(
                    f"bounds must be (low, high) with low < high, or None; got {self.bounds!r}"
                )
            bounds = (pair[0], pair[1])
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "bounds", bounds)

    def _channel_view(self, values: tuple[float, ...], x: Tensor, what: str) -> Tensor:
        # Shape (1, C, 1, ..., 1) so it broadcasts over dim 1 of x; a single value broadcasts anywhere.
        if len(values) > 1 and (x.dim() < 2 or x.shape[1] != len(values)):
            raise PrunelabError(
                f"{what} has {len(values)} channels but the input has shape {tuple(x.shape)} (channels are dim 1)"
            )
        shape = [1] * max(x.dim(), 1)
        if len(values) > 1:
            shape[1] = len(values)
        return torch.tensor(values, dtype=x.dtype, device=x.device).view(shape)

    def to_pixel(self, x_norm: Tensor) -> Tensor:
        """Normalised inputs ``(N, C, ...)`` -> raw data: ``x_norm * std + mean``."""
        x = x_norm
        if self.std is not None:
            x = x * self._channel_view(self.std, x, "std")
        if self.mean is not None:
            x = x + self._channel_view(self.mean, x, "mean")
        return x

    def to_norm(self, x_pixel: Tensor) -> Tensor:
        """Raw data ``(N, C, ...)`` -> the model's normalised inputs: ``(x_pixel - mean) / std``."""
        x = x_pixel
        if self.mean is not None:
            x = x - self._channel_view(self.mean, x, "mean")
        if self.std is not None:
            x = x / self._channel_view(self.std, x, "std")
        return x

    def clamp(self, x_pixel: Tensor) -> Tensor:
        """Clamp raw data into ``bounds`` (unchanged when there are none)."""
        if self.bounds is None:
            return x_pixel
        return x_pixel.clamp(self.bounds[0], self.bounds[1])


def _check_epsilon(epsilon: float) -> float:
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise PrunelabError(f"epsilon must be a number >= 0, got {epsilon!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise PrunelabError(f"epsilon must be a finite number >= 0 (in pixel units), got {epsilon!r}")
    return value


def _check_pgd_options(epsilon: float, steps: int, step_size: float | None) -> float:
    """Validate PGD's options; return the step size to use."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PrunelabError(f"steps must be an integer >= 1, got {steps!r}")
    if step_size is None:
        return PGD_STEP_FACTOR * epsilon / steps
    if not (isinstance(step_size, int | float) and math.isfinite(step_size) and step_size > 0):
        raise PrunelabError(f"step_size must be a finite number > 0 or None, got {step_size!r}")
    return float(step_size)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the attack; every submodule's own mode is restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _check_batch(x_norm: Tensor, y: Tensor) -> None:
    if x_norm.dim() < 1 or y.shape != (x_norm.shape[0],):
        raise PrunelabError(
            f"labels must have shape (N,) matching inputs (N, ...); got inputs {tuple(x_norm.shape)}, labels {tuple(y.shape)}"
        )


def _input_grad(model: nn.Module, space: PixelSpace, x_pixel: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy with respect to the pixel-space input only."""
    x = x_pixel.detach().requires_grad_(True)
    with torch.enable_grad():
        # Sum, not mean: only the sign is used, and a mean can underflow gradients of big batches.
        loss = F.cross_entropy(model(space.to_norm(x)), y, reduction="sum")
        # autograd.grad with inputs=x: parameters' .grad are neither created nor accumulated.
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def fgsm(model: nn.Module, x_norm: Tensor, y: Tensor, epsilon: float, space: PixelSpace) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015), L-inf, in pixel space.

    ``x_adv_pixel = clamp(x_pixel + epsilon * sign(grad_x_pixel CE(model(x_norm), y)))`` where a zero
    gradient component leaves that input unchanged.

    Args:
        model: classifier returning logits ``(N, C)`` from normalised inputs; run in eval mode, its
            modes restored and its parameters' ``.grad`` untouched.
        x_norm: normalised inputs ``(N, C_in, ...)``, as the model takes them.
        y: true classes, integer ``(N,)``.
        epsilon: L-inf budget in pixel units, ``>= 0``; 0 returns a copy of ``x_norm``.
        space: the normalisation and pixel bounds of the data.

    Returns:
        Adversarial inputs, normalised like ``x_norm`` (same shape, detached).

    Raises:
        PrunelabError: ``epsilon < 0`` or not finite, or mismatched shapes.
    """
    eps = _check_epsilon(epsilon)
    _check_batch(x_norm, y)
    if eps == 0:
        return x_norm.detach().clone()
    x_pixel = space.to_pixel(x_norm.detach())
    with _eval_mode(model):
        grad = _input_grad(model, space, x_pixel, y)
    x_adv = space.clamp(x_pixel + eps * grad.sign())
    return space.to_norm(x_adv).detach()


def pgd(
    model: nn.Module,
    x_norm: Tensor,
    y: Tensor,
    epsilon: float,
    space: PixelSpace,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (Madry et al. 2018), L-inf, in pixel space.

    Starting from ``x_pixel`` (plus, with ``random_start``, noise uniform in ``[-epsilon, epsilon]``
    per component, then clamped into the bounds), each of ``steps`` steps moves
    ``step_size * sign(grad)`` up the cross-entropy and projects back onto the epsilon ball around
    ``x_pixel`` and then into the bounds. The result is within ``epsilon`` of ``x_pixel`` provided
    ``x_pixel`` itself lies within the bounds.

    Args:
        model: classifier returning logits ``(N, C)`` from normalised inputs; run in eval mode, its
            modes restored and its parameters' ``.grad`` untouched.
        x_norm: normalised inputs ``(N, C_in, ...)``.
        y: true classes, integer ``(N,)``.
        epsilon: L-inf budget in pixel units, ``>= 0``; 0 returns a copy of ``x_norm``.
        space: the normalisation and pixel bounds of the data.
        steps: number of gradient steps, ``>= 1``.
        step_size: pixel units per step; None means ``2.5 * epsilon / steps``.
        random_start: start from a uniform random point of the epsilon ball.
        generator: RNG for the random start (reproducible attacks); the noise is drawn on the
            generator's device, then moved to the input's. None uses the global RNG of the input's
            device.

    Returns:
        Adversarial inputs, normalised like ``x_norm`` (same shape, detached).

    Raises:
        PrunelabError: ``epsilon < 0``, ``steps < 1``, ``step_size <= 0`` or mismatched shapes.
    """
    eps = _check_epsilon(epsilon)
    alpha = _check_pgd_options(eps, steps, step_size)
    _check_batch(x_norm, y)
    if eps == 0:
        return x_norm.detach().clone()
    x0 = space.to_pixel(x_norm.detach())
    x = x0
    if random_start:
        noise_device = generator.device if generator is not None else x0.device
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=noise_device)
        x = space.clamp(x0 + (2 * noise.to(x0.device) - 1) * eps)
    with _eval_mode(model):
        for _ in range(steps):
            grad = _input_grad(model, space, x, y)
            x = x + alpha * grad.sign()
            # Project: onto the L-inf ball around x0, then into the valid pixel range.
            x = space.clamp(torch.minimum(torch.maximum(x, x0 - eps), x0 + eps))
    return space.to_norm(x).detach()


def _model_device(model: nn.Module) -> torch.device | None:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return None


def adversarial_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    epsilons: Sequence[float],
    space: PixelSpace,
    attack: str = "fgsm",
    **attack_options: Any,
) -> dict[float, float]:
    """Accuracy of ``model`` under an L-inf attack at each budget ``epsilon``.

    Each batch is iterated once (so a one-shot iterator is fine) and attacked at every epsilon;
    epsilon 0 is the clean accuracy (no attack run). The model is put in eval mode for the whole
    evaluation and every submodule's mode is restored afterwards; no parameter's ``.grad`` is
    touched. Batches are moved to the device of the model's parameters.

    Args:
        model: classifier returning logits ``(N, C)`` from normalised inputs.
        batches: ``(x_norm, y)`` pairs: normalised inputs ``(N, C_in, ...)`` and integer labels ``(N,)``.
        epsilons: L-inf budgets in pixel units, each ``>= 0``.
        space: the normalisation and pixel bounds of the data.
        attack: one of :data:`ATTACKS`.
        **attack_options: the attack's keyword options (see :data:`ATTACK_OPTIONS`), e.g. for PGD
            ``steps``, ``step_size``, ``random_start``, ``generator``.

    Returns:
        ``{epsilon: accuracy}``, accuracies as fractions in [0, 1], keys ``float(epsilon)`` in the given
        order.

    Raises:
        PrunelabError: unknown attack or option, bad epsilon/steps/step size, no epsilons or no examples.
    """
    if attack not in ATTACKS:
        raise invalid_choice("attack", attack, ATTACKS)
    for name in attack_options:
        if name not in ATTACK_OPTIONS[attack]:
            valid = ", ".join(ATTACK_OPTIONS[attack]) or "none"
            raise PrunelabError(f"unknown option {name!r} for attack {attack!r}; valid options: {valid}")
    eps_list = [_check_epsilon(e) for e in epsilons]
    if not eps_list:
        raise PrunelabError("epsilons is empty; give at least one budget (0 for clean accuracy)")
    if attack == "pgd":
        for eps in eps_list:
            _check_pgd_options(eps, attack_options.get("steps", 10), attack_options.get("step_size"))

    device = _model_device(model)
    correct = [0] * len(eps_list)
    total = 0
    with _eval_mode(model):
        for x_norm, y in batches:
            if device is not None:
                x_norm, y = x_norm.to(device), y.to(device)
            _check_batch(x_norm, y)
            total += int(y.shape[0])
            for i, eps in enumerate(eps_list):
                if eps == 0:
                    x_adv = x_norm
                elif attack == "fgsm":
                    x_adv = fgsm(model, x_norm, y, eps, space)
                else:
                    x_adv = pgd(model, x_norm, y, eps, space, **attack_options)
                with torch.no_grad():
                    correct[i] += int((model(x_adv).argmax(dim=1) == y).sum())
    if total == 0:
        raise PrunelabError("batches held no examples; adversarial accuracy needs at least one")
    return {eps: c / total for eps, c in zip(eps_list, correct, strict=True)}
