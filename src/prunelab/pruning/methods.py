"""Named pruning methods = score function x default allocation x time points, and their registry.

The time points (DESIGN.md) are: the epoch whose weights are **scored**, the epoch whose weights
are **kept** (rewound to), and how the lr schedule runs afterwards. Methods that prune at
initialisation (random, magnitude, SNIP, GraSP, SynFlow) score, keep and restart at 0. The
trained-weights methods (lottery ticket / IMP, weight rewinding, learning-rate rewinding,
fine-tuning, hybrid tickets) carry a default ``ticket`` (see :class:`prunelab.spec.TicketSpec`):
they score a dense trunk run's trained weights and rewind as their paper does. A user method is a
score function registered with :func:`register_method`; it then works everywhere a built-in does
(API, CLI, specs, studies, every sanity check), at init or, given a ``ticket``, at a trained point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prunelab.errors import PrunelabError
from prunelab.options import merge_options
from prunelab.pruning.allocation import ALLOCATIONS, AllocationFn, allocation_option_defaults
from prunelab.pruning.scores import (
    ScoreFn,
    grasp_scores,
    magnitude_scores,
    random_scores,
    snip_scores,
    synflow_scores,
)
from prunelab.registry import Registry


@dataclass(frozen=True)
class Method:
    """A registered pruning method.

    Attributes:
        name: registry name.
        score: the score function (higher = kept).
        allocation: the default allocation (the paper's choice).
        needs_data: whether scoring uses data (SNIP, GraSP) or not (random, magnitude, SynFlow).
        rounds: scoring rounds; with ``R > 1`` round ``r`` prunes to density ``d**(r/R)``,
            re-scoring the surviving weights each time (SynFlow's exponential schedule).
        options: option names and defaults the score function reads from ``ctx.options``.
        time_point: ``"init"`` (prune at initialisation) or ``"trained"`` (scores trained weights).
        ticket: for trained-weights methods, the default time points as ``TicketSpec`` fields
            (``score``, ``keep``, ``retrain``, ``rounds``); None for pruning at initialisation.
        description: one line.
        paper: where it comes from.
        needs_input_shape: the score function runs the network without data (SynFlow's all-ones
            input), so ``prune()`` must know one example's shape (from ``input_shape=``, the data
            or a registry model) and otherwise refuses; other methods never ask for it.
        random_positions: the scores are i.i.d. random (``random``), so positions may instead be
            drawn per weight (``sampling="bernoulli"``, Random_Pruning's masks).
    """

    name: str
    score: ScoreFn
    allocation: str
    needs_data: bool
    rounds: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    time_point: str = "init"
    description: str = ""
    paper: str = ""
    ticket: Mapping[str, Any] | None = None
    needs_input_shape: bool = False
    random_positions: bool = False

    @property
    def uses_training_data(self) -> bool:
        """Whether data checks (random labels / pixels) can change this method's mask."""
        return self.needs_data or self.ticket is not None

    def resolve_options(
        self, overrides: Mapping[str, Any] | None, allocation: str | AllocationFn | None = None
    ) -> dict[str, Any]:
        """Defaults merged with ``overrides``; unknown names raise a one-line error.

        The defaults are the method's own options and those of ``allocation`` (default: the
        method's allocation), e.g. ``variant`` and ``linear_keep_ratio`` of ``smart_ratio``; a name
        both declare is the method's. :meth:`split_options` separates the result again.
        """
        own = {"rounds": self.rounds, **self.options}
        alloc = allocation_option_defaults(self.allocation if allocation is None else allocation)
        owner = f"method {self.name!r}"
        if any(k not in own for k in alloc):
            owner += f" with allocation {(self.allocation if allocation is None else allocation)!r}"
        merged = merge_options({**alloc, **own}, overrides, owner)
        if int(merged["rounds"]) < 1:
            raise PrunelabError(f"rounds must be >= 1, got {merged['rounds']!r}")
        return merged

    def split_options(self, merged: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(method options, allocation options)`` from :meth:`resolve_options`' result."""
        own = {"rounds", *self.options}
        return (
            {k: v for k, v in merged.items() if k in own},
            {k: v for k, v in merged.items() if k not in own},
        )


METHODS: Registry[Method] = Registry("method")


def register_method(
    name: str,
    *,
    allocation: str = "global",
    needs_data: bool = False,
    rounds: int = 1,
    options: Mapping[str, Any] | None = None,
    description: str = "",
    paper: str = "user-defined",
    overwrite: bool = False,
    needs_input_shape: bool = False,
) -> Callable[[ScoreFn], ScoreFn]:
    """Register a score function as a pruning method.

    ``needs_input_shape``: the function runs the network without data and reads
    ``ctx.input_shape``; ``prune()`` then insists on knowing it. Otherwise ``ctx.input_shape`` is
    filled in where known and ``None`` elsewhere.

    Example::

        @prunelab.register_method("weight_times_grad_sign", allocation="global", needs_data=True)
        def my_scores(ctx: prunelab.ScoreContext) -> dict[str, torch.Tensor]:
            ...  # {layer name: tensor shaped like the weight}, higher = keep
    """
    ALLOCATIONS.get(allocation)  # fail early on a bad default allocation

    def decorate(fn: ScoreFn) -> ScoreFn:
        method = Method(
            name.lower(),
            fn,
            allocation,
            needs_data,
            rounds,
            dict(options or {}),
            "init",
            description,
            paper,
            needs_input_shape=needs_input_shape,
        )
        METHODS.add(name, method, overwrite=overwrite)
        return fn

    return decorate


#: Scoring data of SNIP and GraSP (Su et al.: 10 per class x 1 iteration; 1 per class x 10
#: iterations for deep ResNets and Tiny-ImageNet), and the BN mode while scoring.
_SCORING_SAMPLES = {"samples_per_class": 10, "iterations": 1, "bn_mode": "train"}
for _method in (
    Method(
        "random",
        random_scores,
        "uniform",
        False,
        description="uniformly random subset per layer",
        paper="Liu et al. 2022 (random pruning); Su et al. 2020 (random tickets)",
        random_positions=True,
    ),
    Method(
        "magnitude",
        magnitude_scores,
        "global",
        False,
        description="largest |w| at initialisation",
        paper="Frankle et al. 2021 (magnitude at init); Su et al. 2020",
    ),
    Method(
        "snip",
        snip_scores,
        "global",
        True,
        options=_SCORING_SAMPLES,
        description="connection sensitivity |w * dL/dw| on N samples per class",
        paper="Lee et al. 2019; checked by Su et al. 2020",
    ),
    Method(
        "grasp",
        grasp_scores,
        "global",
        True,
        options={**_SCORING_SAMPLES, "temperature": 200.0, "reinit_linear": False},
        description="gradient-signal preservation, keep-score w * Hg (T = 200)",
        paper="Wang et al. 2020; checked by Su et al. 2020",
    ),
    Method(
        "synflow",
        synflow_scores,
        "global",
        False,
        rounds=100,
        options={"float64": False, "count_rule": "nearest", "tie_rule": "index"},
        description="iterative synaptic flow, data-free, 100 rounds",
        paper="Tanaka et al. 2020; checked by Frankle et al. 2021",
        needs_input_shape=True,
    ),
):
    METHODS.add(_method.name, _method)


#: Trained-weights methods (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al. 2020; Su et
#: al. 2020). All score |w| of a trained dense trunk; they differ in what the kept weights are
#: rewound to and how the lr schedule runs afterwards.
for _method in (
    Method(
        "lottery",
        magnitude_scores,
        "global",
        False,
        time_point="trained",
        ticket={"score": "end", "keep": 0, "retrain": "restart"},
        description="lottery ticket / IMP: largest trained |w|, kept weights rewound to init",
        paper="Frankle & Carbin 2019; checked by Su et al. 2020 and Liu et al. 2019",
    ),
    Method(
        "weight_rewinding",
        magnitude_scores,
        "global",
        False,
        time_point="trained",
        ticket={"score": "end", "keep": 2, "retrain": "continue"},
        description="largest trained |w|, rewound to an early epoch (2), schedule continues from there",
        paper="Frankle et al. 2020 (linear mode connectivity); Su et al. 2020 (partially-trained tickets)",
    ),
    Method(
        "lr_rewinding",
        magnitude_scores,
        "global",
        False,
        time_point="trained",
        ticket={"score": "end", "keep": "end", "retrain": "restart"},
        description="largest trained |w|, trained weights kept, full lr schedule restarted",
        paper="Renda et al. 2020; Su et al. 2020 (partially-trained tickets)",
    ),
    Method(
        "finetune",
        magnitude_scores,
        "global",
        False,
        time_point="trained",
        ticket={"score": "end", "keep": "end", "retrain": "finetune"},
        description="largest trained |w|, trained weights kept, fine-tuned at a small constant lr",
        paper="Han et al. 2015; Liu et al. 2019 (fine-tune protocol)",
    ),
    Method(
        "hybrid",
        magnitude_scores,
        "smart_ratio",
        False,
        time_point="trained",
        ticket={"score": "end", "keep": "end", "retrain": "restart"},
        description="hybrid ticket: smart-ratio layer counts, largest trained |w| per layer, lr rewinding",
        paper="Su et al. 2020 (hybrid tickets)",
    ),
):
    METHODS.add(_method.name, _method)
