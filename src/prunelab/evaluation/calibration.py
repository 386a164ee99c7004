"""Calibration of a classifier: expected calibration error (ECE), NLL, Brier score, reliability bins.

All metrics are computed from raw logits ``(N, C)`` and integer labels ``(N,)``, in float64 on the
logits' device (CPU or CUDA; MPS, which has no float64, is moved to the CPU), through
``log_softmax`` so that very confident logits neither overflow nor give ``log(0)``.

ECE follows Guo et al. (2017), "On Calibration of Modern Neural Networks": the confidence of an
example is its maximum softmax probability and its prediction the arg-max class (the lowest index on
a tie); confidences are put in ``n_bins`` equal-width bins ``(lo, hi]`` of ``[0, 1]``, the first bin
also holding 0, and::

    ECE = sum over bins b of (|b| / N) * |accuracy(b) - mean confidence(b)|

The ECE is our own code, not ``torchmetrics``: its ``multiclass_calibration_error`` bins
``[lo, hi)`` and puts a confidence of exactly 1.0 (common: float32 softmax saturates) in an extra
bin of its own, which changes the ECE of confident models (e.g. one wrong prediction at 1.0 and one
right at 0.95: 0.525 there, 0.475 with the standard bins). Computing the ECE from the same bins we
report for the reliability diagram also keeps the two consistent by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prunelab.errors import PrunelabError

#: Default number of equal-width confidence bins (the usual choice since Guo et al. 2017).
DEFAULT_BINS = 15


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin ``(lower, upper]`` of a reliability diagram.

    Attributes:
        lower: lower edge (exclusive, except 0 for the first bin).
        upper: upper edge (inclusive).
        count: number of examples whose confidence falls in the bin.
        confidence: mean confidence (max softmax probability) of those examples; None when empty.
        accuracy: fraction of those examples predicted correctly; None when empty.
    """

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (None for the mean confidence/accuracy of an empty bin)."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "confidence": self.confidence,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class CalibrationMetrics:
    """Calibration of a classifier's softmax probabilities on one data set.

    Attributes:
        ece: expected calibration error, in [0, 1] (see the module docstring).
        nll: mean negative log-likelihood of the true class, natural log (nats per example).
        brier: multi-class Brier score, ``mean_n sum_c (p_nc - onehot_nc)^2``, in [0, 2] (not divided
            by the number of classes).
        accuracy: fraction of examples whose arg-max class is the label, in [0, 1].
        bins: the ``n_bins`` confidence bins in increasing order, empty ones included.
    """

    ece: float
    nll: float
    brier: float
    accuracy: float
    bins: tuple[CalibrationBin, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain floats, and a list of per-bin dicts, for JSON."""
        return {
            "ece": self.ece,
            "nll": self.nll,
            "brier": self.brier,
            "accuracy": self.accuracy,
            "bins": [b.as_dict() for b in self.bins],
        }


def _as_float64(t: Tensor) -> Tensor:
    # MPS has no float64: such tensors are measured on the CPU.
    if t.device.type == "mps":
        t = t.cpu()
    return t.detach().to(torch.float64)


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise PrunelabError(f"logits must have shape (N, C) with N, C >= 1, got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise PrunelabError(
            f"labels must have shape (N,) = ({logits.shape[0]},) to match the logits, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise PrunelabError(f"labels must be integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= logits.shape[1]:
        bad = low if low < 0 else high
        raise PrunelabError(
            f"label {bad} is out of range for {logits.shape[1]} classes (valid: 0..{logits.shape[1] - 1})"
        )
    if not bool(torch.isfinite(logits).all()):
        raise PrunelabError("logits contain NaN or infinite values; calibration needs finite logits")


def calibration_metrics(logits: Tensor, labels: Tensor, n_bins: int = DEFAULT_BINS) -> CalibrationMetrics:
    """ECE, NLL, Brier score, accuracy and reliability bins of a classifier.

    Args:
        logits: raw (pre-softmax) outputs, shape ``(N, C)``, any float dtype, CPU or CUDA.
        labels: true classes, integer tensor of shape ``(N,)`` with values in ``[0, C)``.
        n_bins: number of equal-width confidence bins ``(lo, hi]`` over ``[0, 1]`` for the ECE and
            the reliability diagram (15 is the standard).

    Returns:
        :class:`CalibrationMetrics`; all values are Python floats (probabilities are fractions, NLL
        in nats). Confidences on an exact bin edge go to the lower bin, e.g. 0.5 with 10 bins is in
        ``(0.4, 0.5]``.

    Raises:
        PrunelabError: wrong shapes, labels out of range, non-finite logits, or ``n_bins < 1``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise PrunelabError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    _check_logits_labels(logits, labels)
    log_probs = F.log_softmax(_as_float64(logits), dim=1)
    labels = labels.to(log_probs.device, torch.long)
    n = log_probs.shape[0]

    probs = log_probs.exp()
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == labels).to(torch.float64)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    onehot = F.one_hot(labels, probs.shape[1]).to(torch.float64)
    brier = ((probs - onehot) ** 2).sum(dim=1)

    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=probs.device)
    # bucketize(right=False) gives i with edges[i] < x <= edges[i + 1]: bins (lo, hi], and 0 -> bin 0.
    index = torch.bucketize(confidence, edges[1:], right=False).clamp_(max=n_bins - 1)
    counts = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(
        0, index, torch.ones_like(confidence)
    )
    conf_sum = torch.zeros_like(counts).index_add_(0, index, confidence)
    correct_sum = torch.zeros_like(counts).index_add_(0, index, correct)
    # (|b| / N) * |acc(b) - conf(b)| = |sum of correct - sum of confidences in b| / N: no 0/0 for empty bins.
    ece = float((correct_sum - conf_sum).abs().sum() / n)

    bins = []
    edge_list = edges.tolist()
    for b, (count, c_sum, a_sum) in enumerate(
        zip(counts.tolist(), conf_sum.tolist(), correct_sum.tolist(), strict=True)
    ):
        filled = count > 0
        bins.append(
            CalibrationBin(
                lower=edge_list[b],
                upper=edge_list[b + 1],
                count=int(count),
                confidence=c_sum / count if filled else None,
                accuracy=a_sum / count if filled else None,
            )
        )
    return CalibrationMetrics(
        ece=ece,
        nll=float(nll.mean()),
        brier=float(brier.mean()),
        accuracy=float(correct.mean()),
        bins=tuple(bins),
    )
