"""Statistics that do not overstate: multiple-comparison corrections pinned by hand, no interval from
one value, displayed intervals clipped to what an accuracy can be, and summaries built from hand-made
results that say "inconclusive (n too small)" wherever a test had too few pairs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from helpers import TRAIN, borderline_drops, hand_sanity_study, sanity_results
from prunelab.report.sanity import _pct, _pp
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import MethodSpec, RethinkingStudy, SanityStudy
from prunelab.studies import lottery as lottery_study
from prunelab.studies import rethinking as rethinking_study
from prunelab.studies import sanity as sanity_study
from prunelab.studies.registry import STUDIES
from prunelab.summaries.stats import (
    INCONCLUSIVE,
    Estimate,
    adjust,
    adjust_p_values,
    describe_correction,
    mean_ci,
)
from prunelab.training.config import TrainConfig


def sanity(seeds: tuple[int, ...], **update: Any) -> SanityStudy:
    return hand_sanity_study(seeds, ("magnitude",), **update)


def test_holm_and_bonferroni_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; a running
    # maximum makes the last 0.06 (a larger raw p never gets a smaller adjusted p).
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_p_values(p, "none") == p
    # Capped at 1; a test that never ran (NaN) is not part of the family (m = 2 here).
    assert adjust_p_values([0.6, 0.7], "holm") == [1.0, 1.0]
    holm = adjust_p_values([0.01, math.nan, 0.04], "holm")
    assert holm[0] == pytest.approx(0.02) and math.isnan(holm[1]) and holm[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="valid choices"):
        adjust_p_values(p, "sidak")


def test_adjusted_p_values_decide_significance() -> None:
    family = adjust([0.01, 0.04, 0.03, 0.005], "holm", alpha=0.05)
    assert [a.family for a in family] == [4] * 4 and all(a.correction == "holm" for a in family)
    assert [a.raw for a in family] == [0.01, 0.04, 0.03, 0.005]
    assert [a.significant for a in family] == [True, False, False, True]  # raw 0.03 and 0.04 no longer
    assert not adjust([math.nan])[0].significant
    assert (
        describe_correction("holm", 4, 0.05)
        == "Holm-Bonferroni correction over 4 tests (family-wise alpha = 0.05)"
    )
    assert "no multiple-comparison correction" in describe_correction("none", 4, 0.05)


def test_one_value_has_no_interval_and_display_intervals_are_clipped() -> None:
    one = mean_ci([0.8])
    assert one.n == 1 and math.isnan(one.half_width) and not one.has_interval
    assert _pct(one) == "80.00 (n = 1)" and "±" not in _pct(one)
    two = mean_ci([0.99, 0.90])  # t(0.975, 1) = 12.706: the interval runs far past 100 %
    assert two.high > 1.0 and two.low > 0  # the data keep the unclipped interval
    assert two.clipped(0.0, 1.0) == (pytest.approx(two.low), 1.0)
    assert _pct(two) == f"94.50 [{100 * two.low:.2f}, 100.00]"
    assert _pp(Estimate(-0.5, 0.9, 3)) == "-50.00 [-100.00, +40.00]"
    assert _pp(mean_ci([-0.05])) == "-5.00 (n = 1)"


def test_one_seed_sanity_summary_is_inconclusive_everywhere() -> None:
    study = sanity((0,))
    summary = sanity_study.summarize(
        study, sanity_results(study, lambda v, s: 0.7 if v.check != "none" else 0.8)
    )
    assert [v.n_pairs for v in summary.verdicts] == [1, 1]
    assert all(v.conclusion == INCONCLUSIVE and not v.passes and v.inconclusive for v in summary.verdicts)
    assert all(math.isnan(v.p_raw) and math.isnan(v.p_adjusted) for v in summary.verdicts)
    assert all(not c.accuracy.has_interval for c in summary.cells)
    # The warning names the test's need and each verdict's n; the CLI prints it.
    assert len(summary.notes) == 1 and "at least 2" in summary.notes[0]
    assert "magnitude + invert (n = 1)" in summary.notes[0]
    lines = STUDIES.get("sanity").conclusions(summary)
    assert sum(INCONCLUSIVE in line and "n = 1" in line for line in lines if "warning" not in line) == 2
    assert any(line.strip().startswith("warning:") and "n = 1" in line for line in lines)


def test_two_seed_sanity_summary_keeps_unclipped_data() -> None:
    study = sanity((0, 1))
    summary = sanity_study.summarize(
        study, sanity_results(study, lambda v, s: (0.99, 0.90)[s] if v.check == "none" else 0.5)
    )
    cell = summary.cell("magnitude", 0.5)
    assert cell is not None and cell.accuracy.n == 2 and cell.accuracy.high > 1.0
    assert _pct(cell.accuracy).endswith("100.00]")
    assert all(v.n_pairs == 2 and not v.inconclusive for v in summary.verdicts)
    assert summary.notes == []


def test_holm_turns_two_borderline_drops_into_no_verdict() -> None:
    holm = sanity((0, 1, 2))
    summary = sanity_study.summarize(holm, sanity_results(holm, borderline_drops))
    for v in summary.verdicts:
        assert v.p_raw == pytest.approx(0.0377, abs=1e-3)  # significant on its own...
        assert v.p_adjusted == pytest.approx(2 * v.p_raw)  # ...not after Holm over 2 tests
        assert v.p.family == 2 and v.p.correction == "holm"
        assert not v.passes and v.conclusion.startswith("no significant effect")
    lines = STUDIES.get("sanity").conclusions(summary)
    assert any("Holm-Bonferroni correction over 2 tests" in line for line in lines)
    uncorrected = sanity((0, 1, 2), correction="none")
    raw = sanity_study.summarize(uncorrected, sanity_results(uncorrected, borderline_drops))
    assert all(v.passes and v.conclusion.startswith("hurts") for v in raw.verdicts)
    bonferroni = sanity((0, 1, 2), correction="bonferroni", alpha=0.1)
    wide = sanity_study.summarize(bonferroni, sanity_results(bonferroni, borderline_drops))
    assert all(v.passes and v.p.alpha == 0.1 for v in wide.verdicts)  # 0.075 < 0.1


def test_study_fields_default_and_validate() -> None:
    assert SanityStudy().correction == "holm" and SanityStudy().alpha == 0.05
    assert RethinkingStudy().correction == "holm"
    with pytest.raises(ValueError):
        SanityStudy.model_validate({"correction": "sidak"})
    with pytest.raises(ValueError):
        SanityStudy(alpha=1.5)
    lottery = lottery_study.LotteryStudy(correction="bonferroni", alpha=0.01)
    assert lottery.at_lr(0.1).correction == "bonferroni" and lottery.at_lr(0.1).alpha == 0.01


def test_lottery_verdicts_are_one_family_across_learning_rates() -> None:
    study = lottery_study.LotteryStudy(
        name="hand-lottery",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [8]}),
        train=TRAIN,
        learning_rates=(0.1, 0.01),
        levels=(1,),
        seeds=(0, 1, 2),
    )
    results: dict[str, dict[str, Any]] = {}
    for lr in study.learning_rates:
        results |= sanity_results(study.at_lr(lr), borderline_drops)
    summary = lottery_study.summarize_lottery(study, results)
    verdicts = [v for _, sub in summary.per_lr for v in sub.verdicts]
    assert len(verdicts) == 2 and all(v.p.family == 2 for v in verdicts)
    assert all(v.p_adjusted == pytest.approx(2 * v.p_raw) and not v.passes for v in verdicts)


def rethinking_results(
    study: RethinkingStudy, acc: Callable[[str, int], float], latency: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """A finished result for every run of ``study``: accuracy ``acc(row, seed)``; prune runs carry
    counts and ``latency``."""
    results: dict[str, dict[str, Any]] = {}
    for method in study.methods:
        for seed in study.seeds:
            for row, spec in rethinking_study.method_specs(study, method, seed).items():
                result: dict[str, Any] = {"status": "done", "final_test_acc": acc(row, seed), "epochs": 2}
                if row == "pruned":
                    result |= {
                        "params": {"full": 1000, "pruned": 400},
                        "flops": {"full": 8000, "pruned": 2000},
                        "masked": False,
                        "latency": latency or {},
                    }
                results[spec.run_hash()] = result
    return results


RETHINKING = RethinkingStudy(
    name="hand-rethinking",
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="cnn1d", options={"bn": True, "channels": 6}),
    train=TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False),
    methods=(MethodSpec(name="l1norm"),),
    seeds=(0,),
)


def test_one_seed_rethinking_summary_is_inconclusive() -> None:
    summary = rethinking_study.summarize(RETHINKING, rethinking_results(RETHINKING, lambda row, s: 0.8))
    comparisons = summary.methods[0].comparisons
    assert [c.n_pairs for c in comparisons] == [1, 1]
    assert all(c.conclusion == INCONCLUSIVE for c in comparisons)
    assert all(c.supports_paper is None and c.ci_overlap is None for c in comparisons)
    assert any("l1norm scratch_e (n = 1)" in note for note in summary.notes)
    lines = STUDIES.get("rethinking").conclusions(summary)
    assert sum(INCONCLUSIVE in line for line in lines if "warning" not in line) == 2
    assert any("warning:" in line for line in lines)


def test_rethinking_comparisons_are_adjusted_over_the_study() -> None:
    study = RETHINKING.model_copy(
        update={"methods": (MethodSpec(name="l1norm"), MethodSpec(name="slimming")), "seeds": (0, 1, 2)}
    )

    def acc(row: str, seed: int) -> float:
        return 0.8 - ((0.1, 0.2, 0.2)[seed] if row.startswith("scratch") else 0.0)

    summary = rethinking_study.summarize(study, rethinking_results(study, acc))
    comparisons = [c for m in summary.methods for c in m.comparisons]
    assert len(comparisons) == 4 and all(c.p.family == 4 for c in comparisons)
    # four raw p of 0.0377: Holm multiplies the smallest by 4 (and the running max carries it)
    assert all(c.p_adjusted == pytest.approx(min(1.0, 4 * c.p_raw)) for c in comparisons)
    assert all(c.conclusion.startswith("scratch matches") and c.supports_paper for c in comparisons)
