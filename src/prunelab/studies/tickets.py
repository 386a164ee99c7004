"""The ticket study (Su et al. 2020): initial tickets (SNIP, GraSP, the lottery ticket rewound to
init), partially-trained tickets (learning-rate rewinding, weight rewinding), hybrid tickets and
random tickets (smart-ratio random masks), against the dense model, each under the sanity checks.

It is a :class:`~prunelab.studies.sanity.SanityStudy` whose methods include the trained-weights
tickets, so it shares the summary, verdicts and report; the dense runs are the trunks the tickets
score, so each is trained once per seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from prunelab.presets import preset_for
from prunelab.spec import DataSpec, ModelSpec
from prunelab.studies.sanity import SanityStudy
from prunelab.training.config import TrainConfig

#: Initial tickets, then partially-trained, then hybrid (Su et al.'s families).
TICKET_METHODS = ("snip", "grasp", "lottery", "lr_rewinding", "weight_rewinding", "hybrid")
#: The checks of Su et al. Section 4: random labels for the training the scores come from,
#: layer-wise rearrangement of the mask, and re-initialisation of the kept weights.
TICKET_CHECKS = ("random_labels", "shuffle_mask", "reinit")


def tickets_study(
    dataset: str = "mnist1d",
    model: str | None = None,
    *,
    methods: Sequence[str] = TICKET_METHODS,
    checks: Sequence[str] = TICKET_CHECKS,
    densities: Sequence[float] = (0.2, 0.05),
    seeds: Sequence[int] = (0, 1, 2),
    train: TrainConfig | None = None,
    imp_fraction: float | None = None,
    name: str | None = None,
) -> SanityStudy:
    """The Su et al. ticket comparison on ``dataset`` with the dataset's preset model and recipe.

    Args:
        dataset: a registered dataset (MNIST-1D by default; ``cifar10``/``cifar100`` for the paper).
        model: a registered model (default: the dataset preset's).
        methods: ticket methods; random tickets (smart ratios) and the dense model are always in.
        checks: sanity checks applied to every method they apply to.
        densities: kept fractions of the prunable weights.
        seeds: run seeds.
        train: the training recipe (default: the dataset preset's).
        imp_fraction: reach each density by IMP at this per-round fraction (None: one-shot, as in
            Su et al.'s code).
        name: the study name (names the report folder).
    """
    preset = preset_for(dataset)
    model_name = model or preset.model
    return SanityStudy(
        name=name or f"tickets-{dataset}-{model_name}",
        data=DataSpec(name=dataset),
        model=ModelSpec(name=model_name),
        train=train or preset.train,
        methods=tuple(methods),
        densities=tuple(densities),
        seeds=tuple(seeds),
        checks=tuple(checks),
        random_tickets=("smart_ratio",),
        include_dense=True,
        imp_fraction=imp_fraction,
    )
