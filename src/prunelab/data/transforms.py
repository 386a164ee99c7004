"""Normalisation and batched tensor-op augmentations (no PIL, no torchvision, no per-image loops).

Every augmentation here is an :data:`~prunelab.data.bundle.Augmentation`: it maps a batch to a batch of
the same shape and draws all its random numbers from the given generator (on the generator's own device,
then moved to the data's device), so an epoch replays exactly from the generator's state on CPU or GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from prunelab.errors import PrunelabError


def normalize(
    x: Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float], *, channel_dim: int = 1
) -> Tensor:
    """Per-channel ``(x - mean) / std`` as a new float32 tensor.

    Args:
        x: ``uint8`` pixels in ``[0, 255]`` (divided by 255 first, as torchvision's ``ToTensor`` does)
            or floats already in ``[0, 1]``; e.g. ``(N, C, H, W)`` or ``(N, C, L)``. Never modified.
        mean: one value per channel, in the ``[0, 1]`` pixel scale.
        std: one positive value per channel, same scale.
        channel_dim: which dimension holds the channels (1 for batched ``(N, C, ...)``).

    Returns:
        float32 tensor of ``x``'s shape, on ``x``'s device.
    """
    t = torch.as_tensor(x)
    channels = t.shape[channel_dim] if t.dim() > 0 else 0
    if len(mean) != channels or len(std) != channels:
        raise PrunelabError(
            f"normalize: input has {channels} channels on dim {channel_dim}, "
            f"but mean has {len(mean)} and std has {len(std)} values"
        )
    if any(s <= 0 for s in std):
        raise PrunelabError(f"normalize: std must be positive, got {tuple(std)}")
    # Same operation order as torchvision (div by 255, then sub mean, div std), so values match it bitwise.
    out = t.to(torch.float32).div(255.0) if t.dtype == torch.uint8 else t.to(torch.float32, copy=True)
    shape = [1] * out.dim()
    shape[channel_dim] = channels
    m = torch.tensor(mean, dtype=torch.float32, device=out.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=out.device).view(shape)
    return out.sub_(m).div_(s)


def normalized_zero(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The value raw pixel 0 takes after :func:`normalize`, per channel: ``(0 - mean) / std``.

    Computed through :func:`normalize` itself so padding filled with it equals padding-then-normalising
    exactly (bitwise in float32), which is what torchvision's ``RandomCrop(padding=...)`` pipeline does.
    """
    zero = torch.zeros((1, len(mean)), dtype=torch.uint8)
    return tuple(float(v) for v in normalize(zero, mean, std).flatten())


def _fill_tensor(fill: Sequence[float], channels: int, like: Tensor, what: str) -> Tensor:
    """Fill values shaped ``(1, C, 1[, 1])`` broadcastable against ``like``; one value is broadcast."""
    if len(fill) not in (1, channels):
        raise PrunelabError(f"{what}: fill has {len(fill)} values but the input has {channels} channels")
    values = torch.tensor(list(fill) * (channels if len(fill) == 1 else 1), dtype=like.dtype)
    return values.to(like.device).view(1, channels, *([1] * (like.dim() - 2)))


def _as_fill(fill: float | Sequence[float]) -> tuple[float, ...]:
    return (float(fill),) if isinstance(fill, int | float) else tuple(float(v) for v in fill)


class CropFlip:
    """Random crop with padding plus random horizontal flip for image batches ``(B, C, H, W)``.

    Equivalent to torchvision's ``RandomCrop(H, padding=padding)`` then ``RandomHorizontalFlip(0.5)``
    applied image by image, done as a few batched tensor ops: the batch is padded once with ``fill`` and
    each output pixel is gathered from it by index arithmetic.

    Random numbers are drawn from the generator in a fixed order: row offsets ``(B,)``, column offsets
    ``(B,)`` (both uniform in ``[0, 2 * padding]``, only when ``crop``), then flip decisions ``(B,)`` (only
    when ``flip``).

    Args:
        padding: pixels of padding on every side (the crop may shift the image by up to this many).
        crop: apply the random crop.
        flip: mirror each image left-right with probability 0.5.
        fill: padding value, one per channel or one for all. For normalised data use
            :meth:`for_normalization` so the padding equals a raw black pixel after normalisation.
    """

    def __init__(
        self, padding: int = 4, *, crop: bool = True, flip: bool = True, fill: float | Sequence[float] = 0.0
    ) -> None:
        if int(padding) < 0:
            raise PrunelabError(f"CropFlip: padding must be >= 0, got {padding!r}")
        self.padding = int(padding)
        self.crop = bool(crop)
        self.flip = bool(flip)
        self.fill = _as_fill(fill)

    @classmethod
    def for_normalization(
        cls,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 4,
        *,
        crop: bool = True,
        flip: bool = True,
    ) -> CropFlip:
        """A CropFlip whose padding is the normalised value of raw pixel 0 (see :func:`normalized_zero`)."""
        return cls(padding, crop=crop, flip=flip, fill=normalized_zero(mean, std))

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding}, crop={self.crop}, flip={self.flip}, fill={self.fill})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment ``x: (B, C, H, W)``; returns a new tensor of the same shape, dtype and device."""
        if x.dim() != 4:
            raise PrunelabError(f"CropFlip expects image batches (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        pad = self.padding if self.crop else 0
        if b == 0 or (pad == 0 and not self.flip):
            return x
        gen_device = generator.device
        if pad > 0:
            off_y = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gen_device).to(x.device)
            off_x = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gen_device).to(x.device)
            padded = x.new_empty((b, c, h + 2 * pad, w + 2 * pad))
            padded.copy_(_fill_tensor(self.fill, c, x, "CropFlip").expand_as(padded))
            padded[:, :, pad : pad + h, pad : pad + w] = x
        else:
            off_y = off_x = torch.zeros(b, dtype=torch.long, device=x.device)
            padded = x
        rows = off_y[:, None] + torch.arange(h, device=x.device)  # (B, H) source rows
        cols = off_x[:, None] + torch.arange(w, device=x.device)  # (B, W) source columns
        if self.flip:
            flips = (torch.rand(b, generator=generator, device=gen_device) < 0.5).to(x.device)
            # Mirroring the crop = reading its columns right to left.
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
        chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


class RandomShift1d:
    """Random shift with padding for sequence batches ``(B, C, L)``: the 1-D analogue of a random crop.

    Each sequence is padded with ``fill`` by ``padding`` steps on both ends and a window of length ``L`` is
    taken at an offset drawn uniformly from ``[0, 2 * padding]`` (one draw ``(B,)`` from the generator).
    """

    def __init__(self, padding: int = 4, *, fill: float | Sequence[float] = 0.0) -> None:
        if int(padding) < 0:
            raise PrunelabError(f"RandomShift1d: padding must be >= 0, got {padding!r}")
        self.padding = int(padding)
        self.fill = _as_fill(fill)

    def __repr__(self) -> str:
        return f"RandomShift1d(padding={self.padding}, fill={self.fill})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment ``x: (B, C, L)``; returns a new tensor of the same shape, dtype and device."""
        if x.dim() != 3:
            raise PrunelabError(
                f"RandomShift1d expects sequence batches (B, C, L), got shape {tuple(x.shape)}"
            )
        b, c, length = x.shape
        pad = self.padding
        if b == 0 or pad == 0:
            return x
        offset = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device)
        offset = offset.to(x.device)
        padded = x.new_empty((b, c, length + 2 * pad))
        padded.copy_(_fill_tensor(self.fill, c, x, "RandomShift1d").expand_as(padded))
        padded[:, :, pad : pad + length] = x
        steps = (offset[:, None] + torch.arange(length, device=x.device))[:, None, :].expand(b, c, length)
        return padded.gather(2, steps)
