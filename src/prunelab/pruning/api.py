"""``prune()``: score x allocation x application, with any sanity checks, in one call."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError, check_density
from prunelab.models.registry import model_family
from prunelab.pruning.allocation import AllocationFn, allocate, like_mask, select_top
from prunelab.pruning.checks import CHECKS, Check
from prunelab.pruning.mask import Mask
from prunelab.pruning.methods import METHODS, Method
from prunelab.pruning.prunable import Layer, PrunableSet, prunable_layers
from prunelab.pruning.scores import Batch, ScoreContext
from prunelab.seeding import generator

#: What ``prune(data=...)`` accepts: a bundle (N per class are drawn), an ``(inputs, targets)``
#: pair (scored exactly), or any iterable of such batches, e.g. a DataLoader.
ScoringData = DataBundle | tuple[Tensor, Tensor] | Iterable[Any]


def resolve_checks(check: str | Sequence[str] | None) -> list[Check]:
    """Check names (a name, a comma-separated string or a list) -> registered checks, in order."""
    if check is None:
        return []
    names = [c.strip() for c in check.split(",")] if isinstance(check, str) else list(check)
    out: list[Check] = []
    for name in names:
        if name and name.lower() not in ("none",):
            entry = CHECKS.get(name)
            if entry not in out:
                out.append(entry)
    return out


def scoring_batches(
    data: ScoringData, per_class: int, gen: torch.Generator, device: torch.device
) -> tuple[list[Batch], int | None]:
    """The scoring batch(es) and the class count (when known) from any accepted data form."""
    if isinstance(data, DataBundle):
        x, y = data.per_class_sample(per_class, gen)
        return [(x.to(device), y.to(device))], data.num_classes
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return [(data[0].to(device), data[1].to(device))], None
    if isinstance(data, Iterable):
        # A loader: collect up to ``per_class`` examples of each class seen, in loader order.
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        taken: dict[int, int] = {}
        for batch in data:
            x, y = batch[0], batch[1]
            for i in range(y.shape[0]):
                cls = int(y[i])
                if taken.get(cls, 0) < per_class:
                    taken[cls] = taken.get(cls, 0) + 1
                    xs.append(x[i])
                    ys.append(y[i])
            if taken and all(v >= per_class for v in taken.values()) and len(xs) >= per_class * len(taken):
                break
        if not xs:
            raise PrunelabError("the data loader yielded no examples to score on")
        return [(torch.stack(xs).to(device), torch.stack(ys).to(device))], None
    raise PrunelabError(
        f"data must be a DataBundle, an (inputs, targets) tuple of tensors or a DataLoader, "
        f"got {type(data).__name__}"
    )


def _resolve_allocation(allocation: str | AllocationFn | Mask | None, method: Method) -> str | AllocationFn:
    if allocation is None:
        return method.allocation
    if isinstance(allocation, Mask):
        return like_mask(allocation)
    if isinstance(allocation, str) and allocation.lower().startswith("like:"):
        return like_mask(Mask.load(Path(allocation[5:])))
    return allocation


def _input_shape(
    model: nn.Module, batches: list[Batch] | None, given: Sequence[int] | None
) -> tuple[int, ...]:
    if given is not None:
        return tuple(given)
    if batches:
        return tuple(batches[0][0].shape[1:])
    build = getattr(model, "prunelab_build", None)
    if isinstance(build, dict):
        return tuple(build["input_shape"])
    raise PrunelabError("data-free scoring needs the input shape: pass input_shape=... or data=...")


def compute_mask(
    model: nn.Module,
    method: Method,
    density: float,
    layers: list[Layer],
    allocation: str | AllocationFn,
    *,
    batches: list[Batch] | None,
    input_shape: tuple[int, ...],
    options: Mapping[str, Any],
    mask_generator: torch.Generator,
    checks: Sequence[Check] = (),
    last_layer_density: float | None = None,
    within: Mask | None = None,
) -> Mask:
    """Score and allocate, over ``options['rounds']`` rounds, without touching ``model``.

    Each round scores a private copy of ``model`` with the current mask applied; pruned weights
    get score ``-inf`` so they stay pruned; round ``r`` of ``R`` allocates density ``d**(r/R)``.
    ``within`` (an earlier IMP round's mask) is the starting mask: what it pruned stays pruned.
    The score transforms of ``checks`` apply, in order, to each round's scores before that masking.
    """
    rounds = int(options.get("rounds", 1))
    family = model_family(model)
    current = within.to(next(model.parameters()).device) if within is not None else None
    if current is None:
        current = Mask.ones(layers, device=next(model.parameters()).device)
    for r in range(1, rounds + 1):
        round_density = density ** (r / rounds)
        work = copy.deepcopy(model)
        if r > 1 or within is not None:
            current.apply_(work)
        ctx = ScoreContext(work, layers, batches, input_shape, mask_generator, options)
        scores = method.score(ctx)
        for layer in layers:
            got = scores.get(layer.name)
            if got is None or tuple(got.shape) != layer.shape:
                raise PrunelabError(
                    f"method {method.name!r} returned no score of shape {layer.shape} for {layer.name!r}"
                )
        for c in checks:
            if c.scores is not None:
                scores = c.scores(scores)
        if r > 1 or within is not None:
            scores = {
                n: torch.where(
                    current[n].to(s.device), s.double(), torch.tensor(-math.inf, dtype=torch.float64)
                )
                for n, s in scores.items()
            }
        counts = allocate(
            layers,
            round_density,
            allocation,
            scores=scores,
            family=family,
            last_layer_density=last_layer_density,
        )
        current = select_top(layers, scores, counts)
    return current


def prune(
    model: nn.Module,
    method: str,
    density: float,
    *,
    data: ScoringData | None = None,
    allocation: str | AllocationFn | Mask | None = None,
    check: str | Sequence[str] | None = None,
    seed: int = 0,
    prunable: PrunableSet | None = None,
    options: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    within: Mask | None = None,
) -> Mask:
    """Prune ``model`` at ``density`` (the kept fraction of its prunable weights) and return the mask.

    Args:
        model: the network; its pruned weights are set to zero in place. Weight-stage checks
            also rewrite its kept weights.
        method: a registered method name (``prunelab methods`` lists them).
        density: kept fraction of the prunable weights, in (0, 1].
        data: scoring data for data-dependent methods: a DataBundle (``samples_per_class`` per
            class are drawn, 10 by default), an ``(inputs, targets)`` tuple (scored exactly), or a
            DataLoader.
        allocation: a registered allocation name, ``"like:PATH"`` or a Mask (copy its per-layer
            counts), or a callable; ``None`` means the method's paper default.
        check: sanity check name(s) to apply (a name, a comma-separated string or a list). Data
            checks apply in the order given, then score and mask checks in the order given, then
            weight checks in registry order.
        seed: run seed; every random source derives its own stream from it.
        prunable: the prunable-set policy (default: every conv and linear weight).
        options: method options, e.g. ``{"rounds": 10}`` or ``{"samples_per_class": 5}``.
        input_shape: example shape for data-free methods when neither data nor a registry model
            tells it.
        within: a mask to prune further (an earlier IMP round): weights it prunes stay pruned,
            and ``density`` is still over all prunable weights.

    Returns:
        The Mask over the prunable weights (True = kept).

    Raises:
        PrunelabError: for unknown names, a density outside (0, 1], missing data, or a data check
            on a data-free method.
    """
    entry = METHODS.get(method)
    density = check_density(density)
    checks = resolve_checks(check)
    opts = entry.resolve_options(options)
    policy = prunable or PrunableSet()
    layers = prunable_layers(model, policy)
    alloc = _resolve_allocation(allocation, entry)
    if not callable(alloc):
        from prunelab.pruning.allocation import ALLOCATIONS

        ALLOCATIONS.get(alloc)
    device = next(model.parameters()).device
    check_gen = generator(seed, "check")

    batches: list[Batch] | None = None
    num_classes: int | None = None
    data_checks = [c for c in checks if c.data is not None]
    if entry.needs_data:
        if data is None:
            raise PrunelabError(f"method {entry.name!r} scores on data: pass data=...")
        per_class = int(opts.get("samples_per_class", 10))
        batches, num_classes = scoring_batches(data, per_class, generator(seed, "scoring_data"), device)
    elif data_checks:
        raise PrunelabError(
            f"check {data_checks[0].name!r} changes the scoring data, but method {entry.name!r} uses none"
        )
    if data_checks:
        assert batches is not None
        classes = num_classes or int(max(int(y.max()) for _, y in batches)) + 1
        for c in data_checks:
            assert c.data is not None
            batches = c.data(batches, classes, check_gen)

    mask = compute_mask(
        model,
        entry,
        density,
        layers,
        alloc,
        batches=batches,
        input_shape=_input_shape(model, batches, input_shape),
        options=opts,
        mask_generator=generator(seed, "mask"),
        checks=checks,
        last_layer_density=policy.last_layer_density,
        within=within,
    )
    for c in checks:
        if c.mask is not None:
            mask = c.mask(mask, check_gen)
    apply_weight_checks(model, mask, checks, seed, check_gen)
    mask.apply_(model)
    return mask


def apply_weight_checks(
    model: nn.Module,
    mask: Mask,
    checks: Sequence[Check],
    seed: int,
    check_generator: torch.Generator | None = None,
) -> None:
    """Apply the weight-stage checks among ``checks`` to ``model`` in place; the others are ignored.

    They run in registry order (unregistered ones last, in the order given), each once, whatever
    the order of ``checks``. Used on the weights a run actually trains, which for a rewound ticket
    are not the weights that were scored.

    Args:
        model: the network whose weights are rewritten.
        mask: the pruning mask (True = kept).
        checks: resolved checks (see :func:`resolve_checks`).
        seed: the run seed; a check derives its own streams from it.
        check_generator: the run's ``check`` stream as already advanced by earlier stages;
            default: a fresh one from ``seed``.
    """
    check_gen = check_generator if check_generator is not None else generator(seed, "check")
    order = {name: i for i, name in enumerate(CHECKS.names())}
    weight_checks: list[Check] = []
    for c in checks:
        if c.weights is not None and all(c.name.lower() != w.name.lower() for w in weight_checks):
            weight_checks.append(c)
    weight_checks.sort(key=lambda c: order.get(c.name.lower(), len(order)))  # stable: given order last
    for c in weight_checks:
        assert c.weights is not None
        c.weights(model, mask, seed, check_gen)
