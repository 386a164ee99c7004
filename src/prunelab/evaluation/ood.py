"""Out-of-distribution (OOD) detection: per-example scores from logits, and detection metrics.

A score is higher for inputs that look more in-distribution (ID). Detection treats ID as the
positive class: AUROC, AUPR-in (ID positive), AUPR-out (OOD positive, scores negated) and the FPR at
95% TPR. AUROC and average precision come from scikit-learn (``roc_auc_score``,
``average_precision_score``: exact, ties handled by the usual conventions: a tied ID/OOD pair counts
one half for the AUROC, tied scores form a single threshold for the precision-recall steps); the
FPR at 95% TPR is our own, as its threshold and tie conventions are stated here exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from prunelab.errors import PrunelabError, invalid_choice

#: Valid names for :func:`ood_score`.
OOD_SCORES = ("msp", "energy")
#: The true-positive rate (fraction of ID examples kept) at which the FPR is reported.
TPR_LEVEL_PERCENT = 95


@dataclass(frozen=True)
class OODMetrics:
    """How well a score separates in-distribution (ID) from OOD examples.

    Attributes:
        auroc: area under the ROC curve, ID positive, in [0, 1]: the probability that a random ID
            example scores above a random OOD one (ties count one half); 0.5 is chance.
        aupr_in: average precision with ID as the positive class, in [0, 1].
        aupr_out: average precision with OOD as the positive class and scores negated, in [0, 1].
        fpr_at_95_tpr: fraction of OOD examples scoring ``>=`` the threshold that keeps at least 95%
            of ID examples (see :func:`ood_detection`), in [0, 1]; lower is better.
        threshold: that threshold, in the units of the scores.
        n_in: number of ID examples.
        n_out: number of OOD examples.
    """

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float
    threshold: float
    n_in: int
    n_out: int

    def as_dict(self) -> dict[str, Any]:
        """Plain floats and ints, for JSON."""
        return asdict(self)


def _as_float64(t: Tensor) -> Tensor:
    # MPS has no float64: such tensors are scored on the CPU.
    if t.device.type == "mps":
        t = t.cpu()
    return t.detach().to(torch.float64)


def ood_score(logits: Tensor, score: str = "msp", *, temperature: float = 1.0) -> Tensor:
    """Per-example OOD score from a classifier's logits; higher means more in-distribution.

    * ``"msp"``: maximum softmax probability (Hendrycks & Gimpel 2017), in ``(1/C, 1]``;
      ``temperature`` is not used.
    * ``"energy"``: negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020), in the
      units of the logits; ``T = temperature`` (1 in the paper's main results).

    Args:
        logits: raw outputs, shape ``(N, C)``, any float dtype, CPU or CUDA.
        score: one of :data:`OOD_SCORES`.
        temperature: ``T > 0`` for the energy score.

    Returns:
        Scores of shape ``(N,)``, float64, on the logits' device (the CPU for MPS). Float64 keeps
        confident MSPs like ``1 - 1e-12`` apart from 1, which float32 would tie.

    Raises:
        PrunelabError: unknown ``score``, ``temperature <= 0`` or logits not of shape ``(N, C)``.
    """
    if score not in OOD_SCORES:
        raise invalid_choice("OOD score", score, OOD_SCORES)
    if not temperature > 0:  # also rejects NaN
        raise PrunelabError(f"temperature must be > 0, got {temperature!r}")
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise PrunelabError(f"logits must have shape (N, C) with C >= 1, got {tuple(logits.shape)}")
    x = _as_float64(logits)
    if score == "msp":
        # max_c softmax = exp(max_c log_softmax): never forms exp(large logit).
        return torch.log_softmax(x, dim=1).max(dim=1).values.exp()
    return temperature * torch.logsumexp(x / temperature, dim=1)


def _check_scores(scores: Tensor, what: str) -> Tensor:
    if scores.dim() != 1:
        raise PrunelabError(f"{what} must be a 1-D tensor of scores, got shape {tuple(scores.shape)}")
    if scores.numel() == 0:
        raise PrunelabError(f"{what} is empty; OOD detection needs at least one example of each kind")
    values = _as_float64(scores).cpu()
    if not bool(torch.isfinite(values).all()):
        raise PrunelabError(f"{what} contains NaN or infinite values")
    return values


def ood_detection(in_scores: Tensor, out_scores: Tensor) -> OODMetrics:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR of a score (higher = more in-distribution).

    FPR at 95% TPR, exactly: with ``n`` ID scores sorted in decreasing order ``s_1 >= ... >= s_n``
    and ``k = ceil(95 n / 100)`` (integer arithmetic), the threshold is ``t = s_k``, the largest
    threshold that keeps at least 95% of ID examples (an example is kept when its score is
    ``>= t``; ties at ``t`` may keep more than 95%). The FPR is the fraction of OOD scores ``>= t``:
    an OOD example tied with the threshold counts as a false positive (conservative). The result
    depends only on the two multisets of scores, not on their order.

    Args:
        in_scores: scores of in-distribution examples, shape ``(N_in,)``, ``N_in >= 1``.
        out_scores: scores of OOD examples, shape ``(N_out,)``, ``N_out >= 1``.

    Returns:
        :class:`OODMetrics` with Python floats (fractions in [0, 1]).

    Raises:
        PrunelabError: a set is empty or not 1-D, or a score is NaN or infinite.
    """
    # sklearn is slow to import; only OOD evaluation needs it.
    from sklearn.metrics import average_precision_score, roc_auc_score

    ins = _check_scores(in_scores, "in_scores")
    outs = _check_scores(out_scores, "out_scores")
    n_in, n_out = ins.numel(), outs.numel()

    scores = torch.cat([ins, outs]).numpy()
    is_in = torch.cat([torch.ones(n_in), torch.zeros(n_out)]).numpy()
    auroc = float(roc_auc_score(is_in, scores))
    aupr_in = float(average_precision_score(is_in, scores))
    aupr_out = float(average_precision_score(1.0 - is_in, -scores))

    k = (TPR_LEVEL_PERCENT * n_in + 99) // 100  # ceil(0.95 n) without float rounding
    threshold = float(torch.sort(ins, descending=True).values[k - 1])
    fpr = float((outs >= threshold).to(torch.float64).mean())
    return OODMetrics(
        auroc=auroc,
        aupr_in=aupr_in,
        aupr_out=aupr_out,
        fpr_at_95_tpr=fpr,
        threshold=threshold,
        n_in=n_in,
        n_out=n_out,
    )
