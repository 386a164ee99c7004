"""Channel selection criteria as pure tensor functions (no models), each pinned by a test.

Every function returns the *kept* channel indices, sorted ascending. Ties are broken towards the lower
channel index, so results are deterministic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from prunelab.errors import PrunelabError
from prunelab.pruning.structured.channels import top_k


def l1_filter_norms(weight: Tensor) -> Tensor:
    """Li et al.'s filter score: ``sum |W|`` over ``(C_in, *kernel)``; weight ``(C_out, C_in, *k)`` -> ``(C_out,)``."""
    return weight.detach().abs().flatten(1).sum(dim=1)


def l2_filter_norms(weight: Tensor) -> Tensor:
    """Soft Filter Pruning's filter score: the L2 norm over ``(C_in, *kernel)`` -> ``(C_out,)``."""
    return weight.detach().flatten(1).norm(p=2, dim=1)


def slimming_keep(
    gammas: Mapping[str, Tensor], percent: float, min_channels: int = 1
) -> tuple[dict[str, list[int]], float]:
    """Network slimming's global threshold over BN scales, with a guard against emptied layers.

    All ``|gamma|`` are pooled and sorted ascending; ``thr = sorted[int(total * percent)]`` and a
    channel is kept when ``|gamma| > thr`` (as in Liu et al.'s ``vggprune.py``). A layer left with
    fewer than ``min_channels`` channels keeps its ``min_channels`` largest ``|gamma|`` instead: the
    original code crashes on a zero-channel layer (rethinking-network-pruning issue #50).

    Args:
        gammas: BN name -> scales ``(C,)``.
        percent: fraction of all channels to prune, in [0, 1).
        min_channels: floor per layer (capped at the layer's size).

    Returns:
        (BN name -> kept channel indices, the threshold).
    """
    if not gammas:
        raise PrunelabError("network slimming found no BatchNorm scales to threshold")
    pooled = torch.cat([g.detach().abs().flatten().double().cpu() for g in gammas.values()])
    ordered = torch.sort(pooled).values
    threshold = float(ordered[min(int(pooled.numel() * percent), pooled.numel() - 1)])
    kept: dict[str, list[int]] = {}
    for name, gamma in gammas.items():
        magnitude = gamma.detach().abs().double().cpu()
        chosen = torch.nonzero(magnitude > threshold).flatten().tolist()
        floor = min(min_channels, magnitude.numel())
        if len(chosen) < floor:
            chosen = top_k(magnitude, floor)
        kept[name] = sorted(int(i) for i in chosen)
    return kept, threshold


def thinet_greedy(contributions: Tensor, keep: int) -> list[int]:
    """ThiNet's greedy channel selection (Luo et al. 2017, Algorithm 1).

    ``contributions[m, c]`` is channel ``c``'s contribution to sampled output entry ``m`` of the next
    layer (so the entry is ``sum_c contributions[m, c]`` plus bias). Starting from an empty removed
    set T, repeatedly add the channel that minimises ``sum_m (sum_{j in T + {c}} x[m, j])**2`` until
    ``C - keep`` channels are removed; the rest are kept.

    Args:
        contributions: ``(M, C)``.
        keep: channels to keep, 1..C.
    """
    channels = contributions.shape[1]
    if not 1 <= keep <= channels:
        raise PrunelabError(f"ThiNet keep count must be in 1..{channels}, got {keep}")
    x = contributions.detach().double().cpu()
    running = torch.zeros(x.shape[0], dtype=torch.float64)
    available = list(range(channels))
    for _ in range(channels - keep):
        cost = ((running[:, None] + x[:, available]) ** 2).sum(dim=0)
        best = available[int(torch.argmin(cost))]  # argmin takes the first minimum: lower index wins
        running += x[:, best]
        available.remove(best)
    return available


def lasso_select(design: Tensor, target: Tensor, keep: int, *, n_alphas: int = 60) -> list[int]:
    """He et al.'s LASSO channel selection: the ``keep`` channels that enter the LASSO path first.

    Solves ``min_beta ||target - design @ beta||^2 / (2n) + alpha ||beta||_1`` (scikit-learn
    ``lasso_path``, no intercept) for alphas from the one that zeroes every beta down to 1e-4 of it,
    log-spaced. He et al. raise the penalty until exactly ``keep`` betas are nonzero; walking the path
    the other way, channels are taken in the order they become nonzero (within one alpha, larger
    ``|beta|`` first) until ``keep`` are chosen. Should the path end with fewer, the rest are taken
    by ``|beta|`` at the smallest alpha, then by index.

    Args:
        design: ``(n, C)``; column ``c`` is channel ``c``'s contribution to each sampled output.
        target: ``(n,)`` the outputs to reconstruct.
        keep: channels to keep, 1..C.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lasso_path

    n, channels = design.shape
    if not 1 <= keep <= channels:
        raise PrunelabError(f"LASSO keep count must be in 1..{channels}, got {keep}")
    x = design.detach().double().cpu().numpy()
    y = target.detach().double().cpu().numpy().reshape(n)
    alpha_max = float(np.max(np.abs(x.T @ y))) / max(n, 1)
    if not math.isfinite(alpha_max) or alpha_max <= 0.0:
        return list(range(keep))  # nothing explains the target: keep the first channels
    alphas = np.geomspace(alpha_max, alpha_max * 1e-4, n_alphas)
    with warnings.catch_warnings():
        # Only the order in which channels become nonzero is used, which settles long before the
        # coordinate descent meets its tolerance at the smallest alphas.
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, coefs, _ = lasso_path(x, y, alphas=alphas, max_iter=2000)
    chosen: list[int] = []
    for step in range(coefs.shape[1]):
        magnitude = np.abs(coefs[:, step])
        entering = [c for c in np.argsort(-magnitude, kind="stable") if magnitude[c] > 0 and c not in chosen]
        for c in entering:
            if len(chosen) < keep:
                chosen.append(int(c))
        if len(chosen) >= keep:
            break
    if len(chosen) < keep:
        last = np.abs(coefs[:, -1])
        for c in np.argsort(-last, kind="stable"):
            if int(c) not in chosen and len(chosen) < keep:
                chosen.append(int(c))
    return sorted(chosen)


def least_squares_weights(patches: Tensor, target: Tensor, kept: Sequence[int]) -> Tensor:
    """He et al.'s reconstruction: the next layer's weights on the kept channels, by least squares.

    Minimises ``||target - sum_{c in kept} patches[:, c, :] @ W[:, c, :].T||^2`` over ``W``.

    Args:
        patches: ``(M, C, K)`` the next layer's input, per sampled output position: channel ``c``'s
            ``K`` values (the ``k x k`` receptive field of a conv, the flattened features of a linear).
        target: ``(M, O)`` the outputs to reconstruct (without bias).
        kept: the kept channel indices.

    Returns:
        ``(O, len(kept), K)`` weights, in the dtype of ``patches``.
    """
    m, _, k = patches.shape
    index = torch.as_tensor(list(kept), dtype=torch.long)
    a = patches.detach().double().cpu()[:, index, :].reshape(m, len(kept) * k)
    b = target.detach().double().cpu()
    solution = torch.linalg.lstsq(a, b, driver="gelsd").solution  # (len(kept) * K, O), min-norm
    return solution.T.reshape(b.shape[1], len(kept), k).to(patches.dtype)
