"""Data-driven channel selection, layer by layer: ThiNet (Luo et al. 2017) and regression-based channel
pruning (He et al. 2017).

Both judge a conv's output channels by what they contribute to the *next* layer (the consumer) on
sampled data. Layers are processed in registration order on a working copy; a removed channel is
removed from the consumer at once (its input columns are zeroed), so later layers see the already
pruned network, as in both papers. Regression additionally refits the consumer's kept columns by
least squares towards the *original* network's outputs, so errors do not accumulate (He et al. sec. 3.3).
Because removed columns are exactly zero, the physical removal afterwards changes no output.

Sampling: for a conv consumer, ``positions`` output locations per image (ThiNet and He et al. both
take 10), each a ``C x k x k`` receptive field; for a linear consumer, each image once. ThiNet pairs
each location with one random output channel; regression uses every output channel.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.pruning.structured.channels import ChannelLayer
from prunelab.pruning.structured.criteria import lasso_select, least_squares_weights, thinet_greedy

#: LASSO design rows (sampled output entries) are capped here: He et al.'s full design (all outputs
#: of every sampled location) would be e.g. 1000 x 512 rows for a 512-wide layer.
MAX_LASSO_ROWS = 20_000
#: Least-squares rows (sampled locations) are capped here: the refit's design is ``rows x kept * K``.
MAX_LS_ROWS = 20_000


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the consumer's input is known."""


@torch.no_grad()
def consumer_input(model: nn.Module, consumer: str, x: Tensor) -> Tensor:
    """The input of module ``consumer`` when ``model`` (in eval mode) runs on batch ``x``.

    The forward pass stops at the consumer: the layers after it are not computed.
    """
    captured: list[Tensor] = []
    module = dict(model.named_modules())[consumer]

    def grab(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0].detach())
        raise _Captured

    handle = module.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise PrunelabError(f"layer {consumer!r} is not used by the model's forward pass")
    return captured[0]


def _conv_geometry(
    consumer: nn.Module,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(kernel, stride, padding, dilation)`` of a Conv1d/Conv2d as 2-D pairs (a 1-D conv has height 1)."""
    if not isinstance(consumer, nn.Conv1d | nn.Conv2d) or consumer.groups != 1:
        raise PrunelabError(f"the next layer must be a Conv1d/Conv2d (groups 1) or Linear, got {consumer}")
    if isinstance(consumer.padding, str) or consumer.padding_mode != "zeros":
        raise PrunelabError("the next conv must use explicit zero padding")

    def pair(values: tuple[int, ...], one_d: int) -> tuple[int, int]:
        return (one_d, int(values[0])) if len(values) == 1 else (int(values[0]), int(values[1]))

    padding = tuple(int(p) for p in consumer.padding)
    return (
        pair(tuple(consumer.kernel_size), 1),
        pair(tuple(consumer.stride), 1),
        pair(padding, 0),
        pair(tuple(consumer.dilation), 1),
    )


def sample_fields(
    consumer: nn.Module, x: Tensor, channels: int, positions: int, generator: torch.Generator
) -> Tensor:
    """Receptive fields of ``positions`` random output locations per image -> ``(N * P, C, K)``.

    For a conv consumer, ``K = k_h * k_w``: the zero-padded input window each sampled output
    location sees, per input channel (im2col, but only at the sampled locations). For a linear layer
    after a flatten, each image once, its ``F = C * K`` features split into ``K`` per channel.
    Locations are drawn with replacement, so ``positions`` may exceed the map size.
    """
    n = x.shape[0]
    if isinstance(consumer, nn.Linear):
        features = x.flatten(1).shape[1]
        if features % channels:
            raise PrunelabError(
                f"linear input of {features} features does not split into {channels} channels"
            )
        return x.reshape(n, channels, features // channels)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv_geometry(consumer)
    if isinstance(consumer, nn.Conv1d):
        x = x.unsqueeze(2)
    height, width = x.shape[2], x.shape[3]
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    loc = torch.randint(out_h * out_w, (n * positions,), generator=generator).to(x.device)
    img = torch.arange(n, device=x.device).repeat_interleave(positions)
    rows = (loc // out_w)[:, None] * sh + torch.arange(kh, device=x.device)[None, :] * dh  # (M, kh), padded
    cols = (loc % out_w)[:, None] * sw + torch.arange(kw, device=x.device)[None, :] * dw  # (M, kw)
    padded = F.pad(x, (pw, pw, ph, ph))
    windows = padded[img[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (M, kh, kw, C)
    return windows.permute(0, 3, 1, 2).reshape(n * positions, channels, kh * kw)


def consumer_weight(consumer: nn.Module, channels: int) -> Tensor:
    """The consumer's weight as ``(O, C, K)``, matching :func:`sample_fields`'s ``K``."""
    weight = consumer.weight
    assert isinstance(weight, Tensor)
    weight = weight.detach()
    return weight.reshape(weight.shape[0], channels, -1)


def sampled_patches(
    model: nn.Module,
    consumer: str,
    channels: int,
    x: Tensor,
    positions: int,
    generator: torch.Generator,
    chunk: int = 64,
) -> Tensor:
    """Sampled receptive fields ``(N * P, C, K)`` of ``consumer``'s input, ``chunk`` images at a time.

    Running the network on a few images at a time bounds memory. The draws depend only on ``generator`` and the image
    count, so re-seeding it repeats the same locations on another network of the same shape.
    """
    module = dict(model.named_modules())[consumer]
    parts = [
        sample_fields(
            module, consumer_input(model, consumer, x[i : i + chunk]), channels, positions, generator
        )
        for i in range(0, x.shape[0], chunk)
    ]
    return torch.cat(parts).double()


def contributions(
    patches: Tensor, weight: Tensor, rows: Tensor, outputs: Tensor, chunk: int = 4096
) -> Tensor:
    """Channel contributions ``z[r, c] = sum_k W[outputs[r], c, k] * patches[rows[r], c, k]`` -> ``(R, C)``.

    Computed in chunks of ``chunk`` rows so that ``(R, C, K)`` is never materialised.
    """
    parts = [
        torch.einsum("rck,rck->rc", patches[rows[i : i + chunk]], weight[outputs[i : i + chunk]])
        for i in range(0, rows.numel(), chunk)
    ]
    return torch.cat(parts)


@torch.no_grad()
def select_by_data(
    model: nn.Module,
    layers: list[ChannelLayer],
    keep_counts: Mapping[str, int],
    x: Tensor,
    *,
    method: str,
    positions: int,
    generator: torch.Generator,
) -> dict[str, list[int]]:
    """Run ThiNet (``method="thinet"``) or regression pruning (``"regression"``) layer by layer.

    ``model`` is modified in place: each consumer's removed input columns are zeroed and, for
    regression, its kept columns refitted. Layers whose keep count equals their size are skipped.

    Regression's least-squares refit has ``kept * K`` unknowns per output channel and one equation
    per sampled location (at most :data:`MAX_LS_ROWS`); when there are fewer equations than unknowns
    the fit would only interpolate the samples, so the kept weights are left as they are and a
    warning says so (sample more: options ``samples_per_class`` and ``positions``).

    Args:
        model: a working copy of the trained network.
        layers: its independently prunable convs.
        keep_counts: conv name -> channels to keep.
        x: sampled training inputs ``(N, *input_shape)``.
        method: ``"thinet"`` or ``"regression"``.
        positions: sampled output locations per image.
        generator: CPU generator for the sampled locations (and ThiNet's output channels).

    Returns:
        conv name -> kept channel indices.
    """
    original = copy.deepcopy(model) if method == "regression" else None
    modules = dict(model.named_modules())
    kept_all: dict[str, list[int]] = {}
    for layer in layers:
        keep = keep_counts.get(layer.conv, layer.channels)
        if keep >= layer.channels:
            continue
        consumer = modules[layer.consumer]
        state = generator.get_state()  # the same locations for the current and the original network
        patches = sampled_patches(model, layer.consumer, layer.channels, x, positions, generator)
        weight = consumer_weight(consumer, layer.channels).double()
        m, out_channels = patches.shape[0], weight.shape[0]
        if method == "thinet":
            outputs = torch.randint(out_channels, (m,), generator=generator).to(weight.device)
            rows = torch.arange(m, device=patches.device)
            kept = thinet_greedy(contributions(patches, weight, rows, outputs), keep)
        else:
            assert original is not None
            after = generator.get_state()
            generator.set_state(state)
            reference = sampled_patches(original, layer.consumer, layer.channels, x, positions, generator)
            generator.set_state(after)
            original_weight = consumer_weight(dict(original.named_modules())[layer.consumer], layer.channels)
            target = torch.einsum("mck,ock->mo", reference, original_weight.double())  # (M, O), no bias
            # LASSO design: one row per (sampled location, output channel), capped by random subset.
            pick = torch.randperm(m * out_channels, generator=generator)[:MAX_LASSO_ROWS].to(patches.device)
            rows, outputs = pick // out_channels, pick % out_channels
            design = contributions(patches, weight, rows, outputs)
            kept = lasso_select(design, target[rows, outputs], keep)
            fit_rows = torch.randperm(m, generator=generator)[:MAX_LS_ROWS].to(patches.device)
            if fit_rows.numel() >= len(kept) * patches.shape[2]:
                refit = least_squares_weights(patches[fit_rows], target[fit_rows], kept)  # (O, kept, K)
                full = torch.zeros_like(weight)
                full[:, kept, :] = refit.to(full.device)
                consumer.weight.copy_(full.reshape(consumer.weight.shape).to(consumer.weight.dtype))
            else:
                warnings.warn(
                    f"regression pruning of {layer.conv!r}: {fit_rows.numel()} sampled locations for "
                    f"{len(kept) * patches.shape[2]} weights per output; kept weights not refitted "
                    "(raise samples_per_class or positions)",
                    stacklevel=2,
                )
        removed = [c for c in range(layer.channels) if c not in set(kept)]
        consumer.weight.view(consumer.weight.shape[0], layer.channels, -1)[:, removed, :] = 0.0
        kept_all[layer.conv] = kept
    return kept_all
