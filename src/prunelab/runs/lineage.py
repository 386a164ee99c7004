"""Which runs a trained-weights run builds on, so shared work is done once.

A ticket run (``spec.pruning.ticket`` set) needs trained weights to score. Its *parent* is:

* round 1 (one-shot, or the first IMP round): the dense **trunk**, the same data, model, training
  recipe and seed with no pruning. It is shared by every method, rewinding variant, check and
  density that needs it (and it is the dense baseline of a study);
* IMP round j > 1: the round j-1 ticket of the same method, which it re-prunes.

Data checks (random labels / pixels) corrupt *the training the scores come from*: the trunk and
every earlier IMP round are trained on corrupted data (``training_corruption``), while the final
ticket trains on clean data. The other checks act on the final round only, so a checked chain
shares its earlier rounds with the unchecked one.

The *trunk* is always the root of the chain: rewinding to epoch k means the trunk's epoch-k
weights, which the trunk saves while it trains (only the epochs some run asks for).
"""

from __future__ import annotations

from collections.abc import Sequence

from prunelab.pruning.checks import CHECKS
from prunelab.spec import PruningSpec, RunSpec, TrainingCorruption, canonical_density


def scoring_corruption(spec: RunSpec) -> TrainingCorruption | None:
    """The corruption of the training that this run's scores come from (None = clean data). With
    several data checks the one registered last wins (random_pixels includes random labels)."""
    if spec.pruning is not None:
        given = set(spec.pruning.checks)
        data_checks = [name for name, c in CHECKS.items() if c.stage == "data" and name in given]
        if data_checks:
            return data_checks[-1]
    return spec.training_corruption


def parent_spec(spec: RunSpec) -> RunSpec | None:
    """The run whose trained weights ``spec`` scores; None for dense runs and pruning at init."""
    pruning = spec.pruning
    if pruning is None or pruning.ticket is None:
        return None
    corruption = scoring_corruption(spec)
    ticket = pruning.ticket
    if ticket.rounds == 1:
        return RunSpec(
            data=spec.data, model=spec.model, train=spec.train, seed=spec.seed, training_corruption=corruption
        )
    rounds = ticket.rounds
    previous = PruningSpec(
        method=pruning.method,
        density=canonical_density(pruning.density ** ((rounds - 1) / rounds)),
        allocation=pruning.allocation,
        prunable=pruning.prunable,
        options=pruning.options,
        ticket=ticket.model_copy(update={"rounds": rounds - 1}),
    )
    return RunSpec(
        data=spec.data,
        model=spec.model,
        pruning=previous,
        train=spec.train,
        seed=spec.seed,
        training_corruption=corruption,
    )


def ancestors(spec: RunSpec) -> list[RunSpec]:
    """Every run ``spec`` builds on, the trunk first, ``spec`` itself excluded."""
    chain: list[RunSpec] = []
    parent = parent_spec(spec)
    while parent is not None:
        chain.append(parent)
        parent = parent_spec(parent)
    return chain[::-1]


def trunk_spec(spec: RunSpec) -> RunSpec | None:
    """The dense run at the root of ``spec``'s chain (None when ``spec`` builds on nothing)."""
    chain = ancestors(spec)
    return chain[0] if chain else None


def rewind_epochs(spec: RunSpec) -> set[int]:
    """Trunk epochs (> 0) whose weights ``spec`` or its ancestors need (score or keep points)."""
    needed: set[int] = set()
    for run in [*ancestors(spec), spec]:
        if run.pruning is not None and run.pruning.ticket is not None:
            for point in (run.pruning.ticket.score, run.pruning.ticket.keep):
                if isinstance(point, int) and point > 0:
                    needed.add(point)
    return needed


def trunk_rewind_epochs(specs: Sequence[RunSpec]) -> dict[str, set[int]]:
    """For each trunk (by run hash), the union of the epochs every given run needs saved."""
    needed: dict[str, set[int]] = {}
    for spec in specs:
        trunk = trunk_spec(spec)
        if trunk is not None:
            needed.setdefault(trunk.run_hash(), set()).update(rewind_epochs(spec))
    return needed
