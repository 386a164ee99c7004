"""Calibration, OOD-detection and adversarial-robustness metrics, each pinned to values computed by hand."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.evaluation.adversarial import PixelSpace, adversarial_accuracy, fgsm, pgd
from prunelab.evaluation.calibration import calibration_metrics
from prunelab.evaluation.ood import OOD_SCORES, ood_detection, ood_score


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models: on a busy machine intra-op threads make each backward ~100x slower (tens of ms).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------
# Calibration


def _logits_of(probs: list[list[float]]) -> torch.Tensor:
    # log p is a valid logit vector whose softmax is p (rows sum to 1).
    return torch.tensor(probs, dtype=torch.float64).log()


def test_calibration_by_hand() -> None:
    probs = [
        [0.9, 0.05, 0.05],  # y=0: right, confidence 0.9
        [0.05, 0.9, 0.05],  # y=0: wrong, confidence 0.9
        [0.2, 0.7, 0.1],  # y=1: right, confidence 0.7
        [0.55, 0.25, 0.2],  # y=2: wrong, confidence 0.55
        [0.1, 0.2, 0.7],  # y=1: wrong, confidence 0.7
    ]
    labels = torch.tensor([0, 0, 1, 2, 1])
    m = calibration_metrics(_logits_of(probs), labels)  # 15 bins of width 1/15
    # Bins (lo, hi]: 0.9 in (13/15, 14/15] = bin 13; 0.7 in (10/15, 11/15] = bin 10; 0.55 in (8/15, 9/15] = bin 8.
    # bin 13: 2 examples, acc 1/2, conf 0.9  -> 2/5 * |0.5 - 0.9| = 0.16
    # bin 10: 2 examples, acc 1/2, conf 0.7  -> 2/5 * |0.5 - 0.7| = 0.08
    # bin  8: 1 example,  acc 0,   conf 0.55 -> 1/5 * |0 - 0.55|  = 0.11
    assert m.ece == pytest.approx(0.16 + 0.08 + 0.11, abs=1e-12)
    assert m.accuracy == pytest.approx(2 / 5)
    # NLL = -(ln 0.9 + ln 0.05 + ln 0.7 + ln 0.2 + ln 0.2) / 5
    #     = (0.105361 + 2.995732 + 0.356675 + 1.609438 + 1.609438) / 5 = 1.335329
    assert m.nll == pytest.approx(1.335329, abs=1e-6)
    # Brier per example, sum_c (p_c - onehot_c)^2:
    #   (0.1^2 + 0.05^2 + 0.05^2) = 0.015;  (0.95^2 + 0.9^2 + 0.05^2) = 1.715;  (0.2^2 + 0.3^2 + 0.1^2) = 0.14
    #   (0.55^2 + 0.25^2 + 0.8^2) = 1.005;  (0.1^2 + 0.8^2 + 0.7^2) = 1.14     -> mean 4.015 / 5 = 0.803
    assert m.brier == pytest.approx(0.803, abs=1e-12)

    assert len(m.bins) == 15
    assert m.bins[0].lower == 0.0 and m.bins[-1].upper == 1.0
    assert [b.count for b in m.bins] == [0] * 8 + [1, 0, 2, 0, 0, 2, 0]
    assert (m.bins[13].confidence, m.bins[13].accuracy) == (pytest.approx(0.9), 0.5)
    assert (m.bins[10].confidence, m.bins[10].accuracy) == (pytest.approx(0.7), 0.5)
    assert (m.bins[8].confidence, m.bins[8].accuracy) == (pytest.approx(0.55), 0.0)
    assert m.bins[0].confidence is None and m.bins[0].accuracy is None
    assert m.bins[8].lower == pytest.approx(8 / 15) and m.bins[8].upper == pytest.approx(9 / 15)

    d = m.as_dict()
    assert d["ece"] == m.ece and d["brier"] == m.brier and len(d["bins"]) == 15
    assert d["bins"][13] == {"lower": m.bins[13].lower, "upper": m.bins[13].upper, "count": 2,
                             "confidence": m.bins[13].confidence, "accuracy": 0.5}  # fmt: skip
    assert all(isinstance(v, float) for k, v in d.items() if k != "bins")


def test_calibration_bin_edges_and_perfect_predictions() -> None:
    # softmax(0, 0) = (0.5, 0.5) exactly; with 10 bins 0.5 is an edge and belongs to (0.4, 0.5] (bin 4).
    # argmax ties go to class 0: label 0 is right, label 1 wrong -> bin 4 holds acc 1/2, conf 0.5: ECE 0.
    m = calibration_metrics(torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0, 1]), n_bins=10)
    assert [b.count for b in m.bins] == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0]
    assert m.ece == 0.0 and m.accuracy == 0.5
    # NLL = ln 2 each; Brier = 0.5^2 + 0.5^2 = 0.5 each.
    assert m.nll == pytest.approx(math.log(2)) and m.brier == pytest.approx(0.5)

    # Confidently right (softmax of (100, 0) is 1.0 in float64, in the last bin (14/15, 1]): ECE 0, Brier 0.
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0], [100.0, 0.0]])
    perfect = calibration_metrics(logits, torch.tensor([0, 1, 0]))
    assert perfect.ece == pytest.approx(0.0, abs=1e-12) and perfect.accuracy == 1.0
    assert perfect.bins[-1].count == 3 and perfect.brier == pytest.approx(0.0, abs=1e-12)
    assert perfect.nll == pytest.approx(0.0, abs=1e-12)
    # Confidently wrong: conf 1, acc 0 -> ECE 1; NLL = 100 nats (stable: log_softmax, no log(0)).
    wrong = calibration_metrics(logits, torch.tensor([1, 0, 1]))
    assert (
        wrong.ece == pytest.approx(1.0)
        and wrong.nll == pytest.approx(100.0)
        and wrong.brier == pytest.approx(2.0)
    )


def test_calibration_float32_matches_float64() -> None:
    logits = torch.randn(64, 5) * 3
    labels = torch.randint(0, 5, (64,))
    a = calibration_metrics(logits, labels)
    b = calibration_metrics(logits.double(), labels)
    assert a.ece == pytest.approx(b.ece, abs=1e-12) and a.nll == pytest.approx(b.nll)


@pytest.mark.parametrize(
    ("logits", "labels", "n_bins", "needle"),
    [
        (torch.zeros(3), torch.tensor([0, 0, 0]), 15, "(3,)"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), 15, "(2,)"),
        (torch.zeros(2, 2), torch.tensor([0, 5]), 15, "label 5"),
        (torch.zeros(2, 2), torch.tensor([-1, 0]), 15, "label -1"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), 15, "float"),
        (torch.tensor([[0.0, math.nan]]), torch.tensor([0]), 15, "NaN"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), 0, "n_bins must be an integer >= 1, got 0"),
    ],
)
def test_calibration_bad_inputs(logits: torch.Tensor, labels: torch.Tensor, n_bins: int, needle: str) -> None:
    with pytest.raises(PrunelabError, match=None) as info:
        calibration_metrics(logits, labels, n_bins=n_bins)
    assert needle in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------
# OOD scores and detection


def test_ood_scores_by_hand() -> None:
    ln2, ln3 = math.log(2), math.log(3)
    logits = torch.tensor([[0.0, ln2, ln3], [2.0, 2.0, -math.inf]])
    # Row 0: softmax = (1, 2, 3) / 6 -> MSP 3/6 = 0.5; energy = ln(1 + 2 + 3) = ln 6.
    # Row 1: softmax = (1/2, 1/2, 0)  -> MSP 0.5;      energy = ln(e^2 + e^2) = 2 + ln 2.
    msp = ood_score(logits, "msp")
    energy = ood_score(logits, "energy")
    assert msp.shape == (2,) and msp.dtype == torch.float64
    assert msp.tolist() == pytest.approx([0.5, 0.5])
    assert energy.tolist() == pytest.approx([math.log(6), 2 + ln2])
    # T = 2: T * logsumexp(logits / T) for (0, 2 ln 2) = 2 * ln(1 + e^{ln 2}) = 2 ln 3.
    assert ood_score(torch.tensor([[0.0, 2 * ln2]]), "energy", temperature=2.0).item() == pytest.approx(
        2 * ln3
    )
    # Huge logits: no overflow.
    big = ood_score(torch.tensor([[1000.0, 0.0]]), "energy")
    assert big.item() == pytest.approx(1000.0) and ood_score(torch.tensor([[1000.0, 0.0]])).item() == 1.0
    assert OOD_SCORES == ("msp", "energy")


def test_ood_score_bad_inputs() -> None:
    with pytest.raises(PrunelabError, match=r"'maxlogit'.*valid choices: energy, msp"):
        ood_score(torch.zeros(2, 3), "maxlogit")
    with pytest.raises(PrunelabError, match="temperature must be > 0, got 0"):
        ood_score(torch.zeros(2, 3), "energy", temperature=0)
    with pytest.raises(PrunelabError, match=r"\(N, C\)"):
        ood_score(torch.zeros(3), "msp")


def test_ood_detection_by_hand_with_ties() -> None:
    ins = torch.tensor([0.9, 0.8, 0.7, 0.5])
    outs = torch.tensor([0.6, 0.5, 0.2])
    m = ood_detection(ins, outs)
    # AUROC = P(in > out) + 1/2 P(tie) over 4 * 3 = 12 pairs: 0.9, 0.8, 0.7 beat all three (9);
    # 0.5 beats 0.2 (1), ties 0.5 (1/2), loses to 0.6 -> 10.5 / 12 = 0.875.
    assert m.auroc == pytest.approx(10.5 / 12)
    # AUPR-in: thresholds in decreasing score order (ID positive), (recall, precision):
    # .9 (1/4, 1), .8 (2/4, 1), .7 (3/4, 1), .6 (3/4, 3/4), .5 (4/4, 4/6: the tie enters at once), .2 (1, 4/7).
    # AP = sum of recall increments * precision = 3 * 1/4 * 1 + 1/4 * 4/6 = 0.75 + 1/6.
    assert m.aupr_in == pytest.approx(0.75 + 1 / 6)
    # AUPR-out: OOD positive on negated scores: -.2 (1/3, 1), -.5 (2/3, 2/3: OOD and ID tie), -.6 (3/3, 3/4).
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/4 = 29/36.
    assert m.aupr_out == pytest.approx(29 / 36)
    # FPR95: k = ceil(0.95 * 4) = 4 -> threshold = 4th largest ID score = 0.5; OOD >= 0.5: 0.6 and the
    # tied 0.5 (ties count as false positives) -> 2/3.
    assert m.threshold == 0.5 and m.fpr_at_95_tpr == pytest.approx(2 / 3)
    assert (m.n_in, m.n_out) == (4, 3)
    # Order of the examples does not matter.
    assert ood_detection(ins.flip(0), outs.flip(0)) == m
    d = m.as_dict()
    assert d["auroc"] == m.auroc and d["n_out"] == 3 and set(d) >= {"aupr_in", "aupr_out", "fpr_at_95_tpr"}


def test_fpr95_threshold_is_exact_at_95_percent() -> None:
    # 20 ID scores 1..20: k = 95 * 20 / 100 = 19 exactly (no float rounding up to 20) -> threshold = the 19th
    # largest = 2, keeping 19/20 = 95%. OOD 2 (tie: counted), 1.5 and 0 are below except the tie -> 1/3.
    m = ood_detection(torch.arange(1.0, 21.0), torch.tensor([2.0, 1.5, 0.0]))
    assert m.threshold == 2.0 and m.fpr_at_95_tpr == pytest.approx(1 / 3)
    # 21 ID scores 1..21: k = ceil(19.95) = 20 -> threshold = 2 again.
    assert ood_detection(torch.arange(1.0, 22.0), torch.tensor([0.0])).threshold == 2.0


def test_ood_detection_extremes() -> None:
    # Perfectly separated: every ID above every OOD.
    sep = ood_detection(torch.tensor([5.0, 6.0, 7.0]), torch.tensor([1.0, 2.0]))
    assert (sep.auroc, sep.aupr_in, sep.aupr_out, sep.fpr_at_95_tpr) == (1.0, 1.0, 1.0, 0.0)
    # Identical sets: every pair ties or is mirrored -> AUROC exactly 1/2; the threshold (lowest ID score,
    # k = ceil(3.8) = 4) lets every OOD example through -> FPR 1.
    same = ood_detection(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert same.auroc == 0.5 and same.fpr_at_95_tpr == 1.0
    assert ood_detection(torch.ones(3), torch.ones(5)).auroc == 0.5
    # Two large samples of one distribution: AUROC near 1/2, AUPR-in near the ID fraction (1/2).
    gen = torch.Generator().manual_seed(0)
    rand = ood_detection(torch.randn(4000, generator=gen), torch.randn(4000, generator=gen))
    assert rand.auroc == pytest.approx(0.5, abs=0.03) and rand.aupr_in == pytest.approx(0.5, abs=0.03)
    assert rand.fpr_at_95_tpr == pytest.approx(0.95, abs=0.03)


def test_ood_detection_bad_inputs() -> None:
    with pytest.raises(PrunelabError, match="in_scores is empty"):
        ood_detection(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(PrunelabError, match="out_scores is empty"):
        ood_detection(torch.tensor([1.0]), torch.tensor([]))
    with pytest.raises(PrunelabError, match=r"out_scores must be a 1-D tensor.*\(2, 2\)"):
        ood_detection(torch.tensor([1.0]), torch.zeros(2, 2))
    with pytest.raises(PrunelabError, match="in_scores contains NaN"):
        ood_detection(torch.tensor([math.nan]), torch.tensor([1.0]))


# ---------------------------------------------------------------------------------------------------
# Adversarial attacks


def _linear_model() -> nn.Linear:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.3, -0.1]))
    return model


def test_fgsm_on_linear_model_by_hand() -> None:
    # logits = W x_norm + b, x_norm = (x_pixel - mean) / std. For cross-entropy,
    # d loss / d x_pixel = (1 / std) * W^T (softmax - onehot(y)), and std > 0 leaves the sign alone.
    # Two classes: softmax - onehot(0) = p1 * (-1, 1), so W^T (...) = p1 * (W[1] - W[0]) = p1 * (-1, 3):
    # sign (-1, +1) for y = 0; for y = 1 it is p0 * (W[0] - W[1]) = p0 * (1, -3): sign (+1, -1).
    space = PixelSpace(mean=(0.5, 0.2), std=(0.25, 0.5), bounds=(0.0, 1.0))
    x_pixel = torch.tensor([[0.4, 0.6], [0.5, 0.3], [0.05, 0.98]])
    y = torch.tensor([0, 1, 1])
    eps = 0.1
    x_adv = space.to_pixel(fgsm(_linear_model(), space.to_norm(x_pixel), y, eps, space))
    expected = torch.tensor(
        [
            [0.4 - eps, 0.6 + eps],  # y=0: (-1, +1)
            [0.5 + eps, 0.3 - eps],  # y=1: (+1, -1)
            [0.15, 0.88],  # y=1: (+1, -1): (0.05 + 0.1, 0.98 - 0.1), inside (0, 1)
        ]
    )
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)
    # Bounds clamp: (0.95, 0.02) with y=0 moves by (-0.1, +0.1) -> (0.85, 0.12); with y=1 by (+0.1, -0.1)
    # -> (1.05, -0.08), clamped to (1, 0).
    x2 = torch.tensor([[0.95, 0.02]])
    adv2 = space.to_pixel(fgsm(_linear_model(), space.to_norm(x2), torch.tensor([1]), eps, space))
    torch.testing.assert_close(adv2, torch.tensor([[1.0, 0.0]]), atol=1e-6, rtol=0)
    # Without bounds nothing is clamped; the identity space uses pixels directly.
    adv3 = fgsm(_linear_model(), x2, torch.tensor([1]), eps, PixelSpace())
    torch.testing.assert_close(adv3, torch.tensor([[1.05, -0.08]]), atol=1e-6, rtol=0)
    # epsilon 0 is the input itself.
    assert torch.equal(fgsm(_linear_model(), x2, torch.tensor([1]), 0.0, space), x2)


def test_pixel_space_round_trip_and_channel_dim() -> None:
    # Lists (as read from YAML or JSON) are accepted and stored as tuples of floats.
    space = PixelSpace(mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0], bounds=[0, 1])  # type: ignore[arg-type]
    assert space.mean == (0.1, 0.2, 0.3) and space.bounds == (0.0, 1.0)
    x = torch.rand(2, 3, 4, 4)
    # channel 1 of pixel 0.6 -> (0.6 - 0.2) / 0.25 = 1.6
    x[0, 1, 0, 0] = 0.6
    assert space.to_norm(x)[0, 1, 0, 0].item() == pytest.approx(1.6)
    torch.testing.assert_close(space.to_pixel(space.to_norm(x)), x)
    assert torch.equal(PixelSpace().to_norm(x), x) and torch.equal(PixelSpace().clamp(x + 5), x + 5)
    with pytest.raises(PrunelabError, match="3 channels"):
        space.to_norm(torch.zeros(2, 4, 4, 4))


def _conv_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 5))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_stay_in_ball_and_bounds(attack: str) -> None:
    space = PixelSpace(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), bounds=(0.0, 1.0))
    gen = torch.Generator().manual_seed(0)
    x_pixel = torch.rand(8, 3, 4, 4, generator=gen)
    x_pixel[0] = 0.0  # on the bounds: the clamp must bite
    x_pixel[1] = 1.0
    y = torch.randint(0, 5, (8,), generator=gen)
    model = _conv_model()
    eps = 8 / 255
    if attack == "fgsm":
        x_adv_norm = fgsm(model, space.to_norm(x_pixel), y, eps, space)
    else:
        x_adv_norm = pgd(model, space.to_norm(x_pixel), y, eps, space, steps=5, generator=gen)
    x_adv = space.to_pixel(x_adv_norm)
    assert x_adv.shape == x_pixel.shape and not x_adv_norm.requires_grad
    assert (x_adv - x_pixel).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= -1e-6 and x_adv.max().item() <= 1 + 1e-6
    assert (x_adv - x_pixel).abs().max().item() > eps / 2  # it did move


def test_pgd_one_step_without_random_start_is_fgsm() -> None:
    # One step of size epsilon from x itself is the FGSM step; projection then changes nothing.
    space = PixelSpace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), bounds=(0.0, 1.0))
    x = space.to_norm(torch.rand(4, 3, 4, 4))
    y = torch.tensor([0, 1, 2, 3])
    model = _conv_model()
    one = pgd(model, x, y, 0.03, space, steps=1, step_size=0.03, random_start=False)
    torch.testing.assert_close(one, fgsm(model, x, y, 0.03, space))


def test_pgd_is_reproducible_with_a_generator() -> None:
    space = PixelSpace(mean=(0.5,), std=(0.2,), bounds=(0.0, 1.0))
    x = space.to_norm(torch.rand(4, 3, 4, 4))
    y = torch.tensor([0, 1, 2, 3])
    model = _conv_model()
    a = pgd(model, x, y, 0.05, space, steps=3, generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, 0.05, space, steps=3, generator=torch.Generator().manual_seed(7))
    c = pgd(model, x, y, 0.05, space, steps=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _separable_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # Two classes in 4 "channels" of pixels in [0, 1]: class 0 around 0.35, class 1 around 0.65, noise
    # 0.08: an L-inf step of 0.15 towards the other class reaches the middle, 0.5, for a typical example.
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.35 + 0.3 * y[:, None].float() + 0.08 * torch.randn(n, 4, generator=gen)
    return x.clamp(0.0, 1.0), y


def test_trained_model_loses_accuracy_under_attack() -> None:
    gen = torch.Generator().manual_seed(0)
    space = PixelSpace(mean=(0.5, 0.45, 0.55, 0.5), std=(0.2, 0.3, 0.25, 0.2), bounds=(0.0, 1.0))
    x_train, y_train = _separable_data(512, gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(space.to_norm(x_train)), y_train).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.train()  # as a training loop leaves it: the evaluation must switch to eval and back

    x_test, y_test = _separable_data(256, gen)
    batches = [(space.to_norm(x_test[i : i + 64]), y_test[i : i + 64]) for i in range(0, 256, 64)]
    eps = (0.0, 0.15)
    fgsm_acc = adversarial_accuracy(model, batches, eps, space, attack="fgsm")
    pgd_acc = adversarial_accuracy(
        model, iter(batches), eps, space, attack="pgd", steps=10, generator=torch.Generator().manual_seed(0)
    )
    assert list(fgsm_acc) == [0.0, 0.15]
    assert fgsm_acc[0.0] == pgd_acc[0.0] >= 0.95  # clean accuracy, the same for both
    assert fgsm_acc[0.15] <= fgsm_acc[0.0] - 0.2
    assert pgd_acc[0.15] <= fgsm_acc[0.15]
    # No side effects: mode restored, no parameter gradient created.
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_attacks_leave_model_untouched() -> None:
    first, bn, dropout = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5)
    model = nn.Sequential(first, bn, nn.ReLU(), dropout, nn.Linear(8, 3))
    model.train()
    dropout.eval()  # a submodule switched to eval inside a training model keeps its own mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first.weight.grad = torch.ones_like(first.weight)  # a stale gradient stays as it was
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    space = PixelSpace()
    with torch.no_grad():  # evaluation loops often run without autograd: attacks must still work
        adv = pgd(model, x, y, 0.1, space, steps=2, generator=torch.Generator().manual_seed(0))
        acc = adversarial_accuracy(model, [(x, y)], [0.0, 0.1], space, attack="fgsm")
    assert not torch.equal(adv, x) and set(acc) == {0.0, 0.1}
    assert model.training and first.training and bn.training and not dropout.training
    # BN running statistics unchanged: the attacks ran the model in eval mode.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(first.weight.grad, torch.ones_like(first.weight))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")


def test_adversarial_bad_inputs() -> None:
    model, space = _linear_model(), PixelSpace()
    x, y = torch.zeros(2, 2), torch.tensor([0, 1])
    with pytest.raises(PrunelabError, match="epsilon must be a finite number >= 0.*-0.1"):
        fgsm(model, x, y, -0.1, space)
    with pytest.raises(PrunelabError, match="epsilon.*-0.5"):
        adversarial_accuracy(model, [(x, y)], [0.1, -0.5], space)
    with pytest.raises(PrunelabError, match="steps must be an integer >= 1, got 0"):
        pgd(model, x, y, 0.1, space, steps=0)
    with pytest.raises(PrunelabError, match="steps must be an integer >= 1, got 0"):
        adversarial_accuracy(model, [(x, y)], [0.1], space, attack="pgd", steps=0)
    with pytest.raises(PrunelabError, match="step_size must be .* got -1"):
        pgd(model, x, y, 0.1, space, step_size=-1.0)
    with pytest.raises(PrunelabError, match=r"unknown attack 'cw'; valid choices: fgsm, pgd"):
        adversarial_accuracy(model, [(x, y)], [0.1], space, attack="cw")
    with pytest.raises(PrunelabError, match=r"unknown option 'steps' for attack 'fgsm'; valid options: none"):
        adversarial_accuracy(model, [(x, y)], [0.1], space, attack="fgsm", steps=3)
    with pytest.raises(PrunelabError, match="no examples"):
        adversarial_accuracy(model, [], [0.1], space)
    with pytest.raises(PrunelabError, match="std must be > 0.*0.0"):
        PixelSpace(mean=(0.5,), std=(0.0,))
    with pytest.raises(PrunelabError, match=r"bounds must be \(low, high\).*\(1.0, 0.0\)"):
        PixelSpace(bounds=(1.0, 0.0))
