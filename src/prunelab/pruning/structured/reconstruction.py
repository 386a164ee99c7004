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


@torch.no_grad()
def consumer_input(model: nn.Module, consumer: str, x: Tensor) -> Tensor:
    """The input of module ``consumer`` when ``model`` (in eval mode) runs on batch ``x``."""
    captured: list[Tensor] = []
    module = dict(model.named_modules())[consumer]

    def grab(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0].detach())

    handle = module.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return captured[0]


def unfold_input(consumer: nn.Module, x: Tensor, channels: int) -> Tensor:
    """The consumer's input as per-channel receptive fields ``(N, C, K, L)``.

    For a conv, ``K = k_h * k_w`` values per channel at each of ``L`` output locations (im2col); for
    a linear layer after a flatten, its ``F = C * K`` features as ``K`` values per channel, ``L = 1``.
    """
    if isinstance(consumer, nn.Linear):
        n, features = x.shape[0], x.flatten(1).shape[1]
        if features % channels:
            raise PrunelabError(
                f"linear input of {features} features does not split into {channels} channels"
            )
        return x.reshape(n, channels, features // channels, 1)
    if not isinstance(consumer, nn.Conv1d | nn.Conv2d) or consumer.groups != 1:
        raise PrunelabError(f"the next layer must be a Conv1d/Conv2d (groups 1) or Linear, got {consumer}")
    if isinstance(consumer.padding, str) or consumer.padding_mode != "zeros":
        raise PrunelabError("the next conv must use explicit zero padding")
    kernel: tuple[int, ...] = tuple(consumer.kernel_size)
    dilation: tuple[int, ...] = tuple(consumer.dilation)
    padding: tuple[int, ...] = tuple(int(p) for p in consumer.padding)
    stride: tuple[int, ...] = tuple(consumer.stride)
    if isinstance(consumer, nn.Conv1d):  # a 1-D conv is a 2-D conv of height 1
        x = x.unsqueeze(2)
        kernel, dilation, padding, stride = (1, *kernel), (1, *dilation), (0, *padding), (1, *stride)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, C*K, L)
    return cols.reshape(x.shape[0], channels, -1, cols.shape[-1])


def consumer_weight(consumer: nn.Module, channels: int) -> Tensor:
    """The consumer's weight as ``(O, C, K)``, matching :func:`unfold_input`'s ``K``."""
    weight = consumer.weight
    assert isinstance(weight, Tensor)
    weight = weight.detach()
    return weight.reshape(weight.shape[0], channels, -1)


def sample_patches(fields: Tensor, positions: int, generator: torch.Generator) -> Tensor:
    """``positions`` random output locations per image from ``(N, C, K, L)`` -> ``(N * P, C, K)``.

    With ``L == 1`` (a linear consumer) each image is taken once. Locations are drawn with
    replacement, so ``positions`` may exceed ``L``.
    """
    n, _, _, locations = fields.shape
    if locations == 1:
        return fields[..., 0]
    loc = torch.randint(locations, (n, positions), generator=generator).to(fields.device)
    img = torch.arange(n, device=fields.device)[:, None].expand(n, positions)
    return fields.permute(0, 3, 1, 2)[img.reshape(-1), loc.reshape(-1)]  # (N*P, C, K)


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
        patches = sample_patches(
            unfold_input(consumer, consumer_input(model, layer.consumer, x), layer.channels),
            positions,
            generator,
        ).double()
        weight = consumer_weight(consumer, layer.channels).double()
        if method == "thinet":
            outputs = torch.randint(weight.shape[0], (patches.shape[0],), generator=generator)
            contributions = torch.einsum("mck,mck->mc", patches, weight[outputs.to(weight.device)])
            kept = thinet_greedy(contributions, keep)
        else:
            assert original is not None
            after = generator.get_state()
            generator.set_state(state)
            reference = sample_patches(
                unfold_input(consumer, consumer_input(original, layer.consumer, x), layer.channels),
                positions,
                generator,
            ).double()
            generator.set_state(after)
            original_weight = consumer_weight(dict(original.named_modules())[layer.consumer], layer.channels)
            target = torch.einsum("mck,ock->mo", reference, original_weight.double())  # (M, O), no bias
            design = torch.einsum("mck,ock->moc", patches, weight).reshape(-1, layer.channels)
            rows = target.reshape(-1)
            if design.shape[0] > MAX_LASSO_ROWS:
                pick = torch.randperm(design.shape[0], generator=generator)[:MAX_LASSO_ROWS].to(design.device)
                design, rows = design[pick], rows[pick]
            kept = lasso_select(design, rows, keep)
            refit = least_squares_weights(patches, target, kept)  # (O, kept, K)
            full = torch.zeros_like(weight)
            full[:, kept, :] = refit.to(full.device)
            consumer.weight.copy_(full.reshape(consumer.weight.shape).to(consumer.weight.dtype))
        removed = [c for c in range(layer.channels) if c not in set(kept)]
        consumer.weight.view(consumer.weight.shape[0], layer.channels, -1)[:, removed, :] = 0.0
        kept_all[layer.conv] = kept
    return kept_all
