"""Hand-made studies and results shared by the statistics and report tests (no training)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import SanityStudy
from prunelab.studies import sanity as sanity_study
from prunelab.summaries.sanity import Variant
from prunelab.training.config import TrainConfig

TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.05)


def hand_sanity_study(seeds: tuple[int, ...], methods: tuple[str, ...], **update: Any) -> SanityStudy:
    """A small sanity study (synthetic data, tiny MLP) whose results the tests make up."""
    return SanityStudy(
        name="hand",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [8]}),
        train=TRAIN,
        methods=methods,
        densities=(0.5,),
        seeds=seeds,
        checks=("shuffle_mask", "invert"),
        random_tickets=("uniform",),
        **update,
    )


def sanity_results(study: SanityStudy, acc: Callable[[Variant, int], float]) -> dict[str, dict[str, Any]]:
    """A finished result for every run of ``study``, keyed by run hash, accuracy ``acc(variant, seed)``."""
    return {
        run.spec.run_hash(): {"status": "done", "final_test_acc": acc(run.variant, run.seed), "per_layer": []}
        for run in sanity_study.study_runs(study)
    }


def borderline_drops(variant: Variant, seed: int) -> float:
    """Every check lowers accuracy by 0.1, 0.2, 0.2 over seeds 0, 1, 2: paired t = -5, df 2, p = 0.0377."""
    return 0.8 - (0.0 if variant.check == "none" else (0.1, 0.2, 0.2)[seed])
