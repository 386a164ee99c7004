"""The demo study: the sanity checks of four pruning-at-initialisation methods on MNIST-1D."""

from __future__ import annotations

from prunelab.presets import preset_for
from prunelab.spec import DataSpec, ModelSpec
from prunelab.studies.sanity import SanityStudy


def demo_study() -> SanityStudy:
    """SNIP, GraSP, SynFlow and magnitude at init, densities 0.2 and 0.05, seeds 0-2, every
    applicable check, the three random tickets and the dense MLP (about 165 runs of 30 epochs)."""
    preset = preset_for("mnist1d")
    return SanityStudy(
        name="demo-mnist1d-mlp",
        data=DataSpec(name="mnist1d"),
        model=ModelSpec(name=preset.model),
        train=preset.train,
        methods=("snip", "grasp", "synflow", "magnitude"),
        densities=(0.2, 0.05),
        seeds=(0, 1, 2),
    )
