"""``prune()``: score x allocation x application, with any sanity checks, in one call."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError, check_density, invalid_choice
from prunelab.models.registry import model_family
from prunelab.options import as_int
from prunelab.pruning.allocation import (
    ALLOCATIONS,
    SAMPLINGS,
    AllocationFn,
    allocate,
    allocate_mask,
    bernoulli_select,
    like_mask,
)
from prunelab.pruning.checks import CHECKS, Check
from prunelab.pruning.mask import Mask, PruningWarning
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


def _is_tensor_pair(data: object) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)


def scoring_batches(
    data: ScoringData,
    per_class: int,
    gen: torch.Generator,
    device: torch.device,
    *,
    iterations: int = 1,
) -> tuple[list[Batch], int | None]:
    """The scoring batches (one per iteration) and the class count (when known) from any accepted
    data form.

    - DataBundle: each iteration draws ``per_class`` examples of every class afresh (sorted by
      class), as Su et al.'s per-iteration fetch does.
    - ``(inputs, targets)``: scored exactly, as one batch; ``iterations > 1`` is refused.
    - Any iterable of ``(inputs, targets, ...)`` batches (a DataLoader): read once in its order;
      the ``j``-th ``per_class`` examples of each class seen go to iteration ``j``; reading stops
      once every class seen has ``iterations * per_class`` examples (or the data ends).
    """
    if isinstance(data, DataBundle):
        out = []
        for _ in range(iterations):
            x, y = data.per_class_sample(per_class, gen)
            out.append((x.to(device), y.to(device)))
        return out, data.num_classes
    if _is_tensor_pair(data):
        assert isinstance(data, tuple)
        if iterations != 1:
            raise PrunelabError(
                f"iterations={iterations} needs fresh examples each iteration, but an (inputs, targets) "
                "tuple is one fixed batch: pass a DataBundle or a DataLoader"
            )
        return [(data[0].to(device), data[1].to(device))], None
    if isinstance(data, Iterable):
        # A loader: collect up to ``per_class * iterations`` examples of each class seen, in loader order.
        wanted = per_class * iterations
        xs: list[list[Tensor]] = [[] for _ in range(iterations)]
        ys: list[list[Tensor]] = [[] for _ in range(iterations)]
        taken: dict[int, int] = {}
        for batch in data:
            x, y = batch[0], batch[1]
            for i in range(y.shape[0]):
                cls = int(y[i])
                count = taken.get(cls, 0)
                if count < wanted:
                    taken[cls] = count + 1
                    xs[count // per_class].append(x[i])
                    ys[count // per_class].append(y[i])
            if taken and all(v >= wanted for v in taken.values()):
                break
        batches = [
            (torch.stack(bx).to(device), torch.stack(by).to(device))
            for bx, by in zip(xs, ys, strict=True)
            if bx
        ]
        if not batches:
            raise PrunelabError("the data loader yielded no examples to score on")
        return batches, None
    raise PrunelabError(
        f"data must be a DataBundle, an (inputs, targets) tuple of tensors or a DataLoader, "
        f"got {type(data).__name__}"
    )


def data_input_shape(data: ScoringData) -> tuple[int, ...]:
    """One example's shape (no batch dimension) from any accepted data form.

    A DataLoader's dataset is indexed (``dataset[0]``) rather than iterated, so a shuffling
    loader's random state is not touched; a bare iterable is iterated once.
    """
    if isinstance(data, DataBundle):
        return tuple(data.train_x.shape[1:])
    if _is_tensor_pair(data):
        assert isinstance(data, tuple)
        return tuple(data[0].shape[1:])
    dataset = getattr(data, "dataset", None)
    if dataset is not None:
        try:
            return tuple(dataset[0][0].shape)
        except (TypeError, IndexError, KeyError, AttributeError):
            pass  # not map-style: fall back to the first batch
    if isinstance(data, Iterable):
        for batch in data:
            return tuple(batch[0].shape[1:])
        raise PrunelabError("the data yielded no examples, so the input shape is unknown")
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


def resolve_input_shape(
    model: nn.Module,
    method: Method,
    *,
    given: Sequence[int] | None,
    data: ScoringData | None,
    batches: list[Batch] | None,
    needed: bool | None = None,
) -> tuple[int, ...] | None:
    """One example's shape for the score function, or ``None`` where nobody needs it.

    In order: ``given``; the scoring batches; the data in any accepted form (a DataLoader is read
    only if the method needs the shape); a registry model's build record. Only a method that runs
    the network without data (``Method.needs_input_shape``, e.g. SynFlow) is refused when none of
    these tells it: before, every call without data on a model not built by prunelab was refused,
    even magnitude or random pruning, and SynFlow was refused even with ``data=``. ``needed``
    overrides ``method.needs_input_shape`` (an allocation such as ``synflow_ratio`` may need it).
    """
    needs = method.needs_input_shape if needed is None else needed
    if given is not None:
        return tuple(given)
    if batches:
        return tuple(batches[0][0].shape[1:])
    if data is not None and (needs or isinstance(data, DataBundle) or _is_tensor_pair(data)):
        return data_input_shape(data)
    build = getattr(model, "prunelab_build", None)
    if isinstance(build, dict):
        return tuple(build["input_shape"])
    if needs:
        raise PrunelabError(
            f"method {method.name!r} runs the network without data and needs the example shape: "
            "pass input_shape=... (one example, no batch dimension) or data=..."
        )
    return None


def _check_finite(method: Method, layer: str, scores: Tensor, options: Mapping[str, Any]) -> None:
    """Refuse NaN and inf scores: a ranking with them is meaningless (NaN compares false)."""
    if not scores.is_floating_point() or bool(torch.isfinite(scores).all()):
        return
    nan = int(torch.isnan(scores).sum())
    pos = int((scores == math.inf).sum())
    neg = int((scores == -math.inf).sum())
    hint = " (try options={'float64': True})" if options.get("float64") is False else ""
    raise PrunelabError(
        f"method {method.name!r} returned non-finite scores for layer {layer!r}: {nan} NaN, "
        f"{pos} +inf, {neg} -inf of {scores.numel()}{hint}"
    )


#: Per-round rules of iterative pruning (method options ``count_rule`` and ``tie_rule``; SynFlow).
COUNT_RULES = ("nearest", "prune_floor")
TIE_RULES = ("index", "prune_ties")


def _rule(options: Mapping[str, Any], method: Method, name: str, default: str, valid: Sequence[str]) -> str:
    value = str(options.get(name, default)).lower()
    if value not in valid:
        raise PrunelabError(
            f"method {method.name!r} option {name} must be one of {', '.join(valid)}; got {value!r}"
        )
    return value


def _round_density(density: float, total: int, count_rule: str) -> float:
    """The density to allocate in one round: as given (``nearest``: ``round(d*N)`` kept), or
    (``prune_floor``) the one keeping ``N - int((1-d) N)``, as SynFlow's code prunes ``int((1-d) N)``."""
    if count_rule == "nearest":
        return density
    keep = total - int((1.0 - density) * total)
    return max(keep, 1) / total


def _prune_ties_mask(layers: list[Layer], scores: Mapping[str, Tensor], keep: int) -> Mask:
    """Global threshold as SynFlow's code sets it: the ``N - keep``-th smallest score, and every
    weight scoring at most that is pruned (ties at the threshold all go, so fewer than ``keep`` may
    stay)."""
    flat = torch.cat([scores[l.name].detach().flatten().double().cpu() for l in layers])
    drop = flat.numel() - keep
    if drop <= 0:
        return Mask({l.name: torch.ones(l.shape, dtype=torch.bool) for l in layers})
    threshold = torch.kthvalue(flat, drop).values
    tensors = {}
    for layer in layers:
        s = scores[layer.name].detach().double()
        tensors[layer.name] = s > threshold.to(s.device)
    return Mask(tensors)


def compute_mask(
    model: nn.Module,
    method: Method,
    density: float,
    layers: list[Layer],
    allocation: str | AllocationFn,
    *,
    batches: list[Batch] | None,
    input_shape: tuple[int, ...] | None,
    options: Mapping[str, Any],
    mask_generator: torch.Generator,
    checks: Sequence[Check] = (),
    last_layer_density: float | None = None,
    within: Mask | None = None,
    allocation_options: Mapping[str, Any] | None = None,
    data: ScoringData | None = None,
    seed: int = 0,
    sampling: str = "exact",
) -> Mask:
    """Score and allocate, over ``options['rounds']`` rounds, without touching ``model``.

    Each round scores a private copy of ``model`` with the current mask applied; pruned weights
    get score ``-inf`` so they stay pruned; round ``r`` of ``R`` allocates density ``d**(r/R)``.
    ``within`` (an earlier IMP round's mask) is the starting mask: what it pruned stays pruned.
    The score transforms of ``checks`` apply, in order, to each round's scores before that masking.

    Options ``count_rule`` and ``tie_rule`` (declared by SynFlow) choose how each round's count is
    met: ``nearest`` + ``index`` (default) keep exactly ``round(d_r N)``, ties to the earlier layer
    and lower index; ``prune_floor`` keeps ``N - int((1 - d_r) N)``; ``prune_ties`` (global
    allocation only) prunes every weight scoring at or below the threshold, as SynFlow's code does.

    ``data`` and ``seed`` reach allocations that score the model themselves (``snip_ratio``).
    ``sampling="bernoulli"`` draws each layer's positions independently per weight with probability
    ``count / N`` (Random_Pruning) instead of keeping the top scores; only for a method whose scores
    are random.

    The returned mask's ``info`` holds the method, the allocation and what the allocation recorded.

    Raises:
        PrunelabError: if the method returns a missing, misshapen or non-finite score.
    """
    rounds = int(options.get("rounds", 1))
    count_rule = _rule(options, method, "count_rule", "nearest", COUNT_RULES)
    tie_rule = _rule(options, method, "tie_rule", "index", TIE_RULES)
    is_global = isinstance(allocation, str) and allocation.lower() == "global"
    if tie_rule == "prune_ties" and (not is_global or last_layer_density is not None):
        raise PrunelabError(
            f"tie_rule 'prune_ties' sets one global threshold: it needs allocation 'global' and no "
            f"last_layer_density, got allocation {allocation if isinstance(allocation, str) else 'callable'!r}"
        )
    if sampling not in SAMPLINGS:
        raise invalid_choice("sampling", sampling, SAMPLINGS)
    if sampling == "bernoulli" and (not method.random_positions or within is not None):
        raise PrunelabError(
            f"sampling 'bernoulli' draws positions at random, so it applies to a random-position method "
            f"at initialisation (random), not to {method.name!r}; valid: sampling 'exact'"
        )
    family = model_family(model)
    total = sum(layer.numel for layer in layers)
    record: dict[str, Any] = {}
    current = within.to(next(model.parameters()).device) if within is not None else None
    if current is None:
        current = Mask.ones(layers, device=next(model.parameters()).device)
    for r in range(1, rounds + 1):
        round_density = _round_density(density ** (r / rounds), total, count_rule)
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
            _check_finite(method, layer.name, got, options)
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
        if tie_rule == "prune_ties":
            current = _prune_ties_mask(layers, scores, int(round(round_density * total)))
            continue
        rule_inputs: dict[str, Any] = {
            "scores": scores,
            "family": family,
            "last_layer_density": last_layer_density,
            "options": allocation_options,
            "model": model,
            "record": record,
            "data": data,
            "input_shape": input_shape,
            "seed": seed,
        }
        if sampling == "bernoulli":
            counts = allocate(layers, round_density, allocation, **rule_inputs)
            current = bernoulli_select(layers, counts, mask_generator, next(model.parameters()).device)
        else:
            current = allocate_mask(layers, round_density, allocation, **rule_inputs)
    name = allocation if isinstance(allocation, str) else getattr(allocation, "__name__", "callable")
    info = {"method": method.name, "allocation": name, **record}
    if sampling != "exact":
        info["sampling"] = sampling
    return Mask(current, info)


def _allocation_label(allocation: str | AllocationFn | Mask | None, resolved: str | AllocationFn) -> str:
    if isinstance(allocation, Mask):
        return "like a given mask"
    if isinstance(resolved, str):
        return resolved
    if isinstance(allocation, str):
        return allocation  # "like:PATH"
    return str(getattr(resolved, "__name__", "callable"))


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
    allow_trained: bool = False,
    sampling: str = "exact",
) -> Mask:
    """Prune ``model`` at ``density`` (the kept fraction of its prunable weights) and return the mask.

    Args:
        model: the network; its pruned weights are set to zero in place. Weight-stage checks
            also rewrite its kept weights.
        method: a registered method name (``prunelab methods`` lists them).
        density: kept fraction of the prunable weights, in (0, 1].
        data: scoring data for data-dependent methods: a DataBundle (``samples_per_class`` per
            class are drawn, 10 by default, afresh for each of ``iterations``), an
            ``(inputs, targets)`` tuple (scored exactly), or a DataLoader. It also tells the example
            shape where a method needs one.
        allocation: a registered allocation name, ``"like:PATH"`` or a Mask (copy its per-layer
            counts), or a callable; ``None`` means the method's paper default.
        check: sanity check name(s) to apply (a name, a comma-separated string or a list). Data
            checks apply in the order given, then score and mask checks in the order given, then
            weight checks in registry order.
        seed: run seed; every random source derives its own stream from it.
        prunable: the prunable-set policy (default: every conv and linear weight).
        options: method options, e.g. ``{"rounds": 10}`` or ``{"samples_per_class": 5}``, and the
            allocation's options (e.g. smart ratio's ``{"variant": "resnet"}``): each name goes to
            whichever declares it.
        input_shape: one example's shape, for methods that run the network without data
            (SynFlow) when neither data nor a registry model tells it; no other method asks.
        within: a mask to prune further (an earlier IMP round): weights it prunes stay pruned,
            and ``density`` is still over all prunable weights.
        sampling: ``"exact"`` per-layer counts (default; Su et al.) or ``"bernoulli"``: each weight
            kept independently with its layer's density (Random_Pruning); random methods only.
        allow_trained: accept a trained-weights method (``lottery``, ``lr_rewinding``, ``hybrid``,
            ...: those with a ``ticket``) and score ``model``'s current weights as the trained ones.
            The ticket executor passes it; at initialisation such a method would silently be
            magnitude pruning, so it is refused by default.

    Returns:
        The Mask over the prunable weights (True = kept); ``mask.info`` records the method, the
        allocation and what it decided (e.g. ``smart_ratio_variant``).

    Raises:
        PrunelabError: for unknown names, a density outside (0, 1], missing data, a data check on
            a data-free method, a trained-weights method without ``allow_trained``, non-finite
            scores, or a method needing the input shape when nothing tells it.

    Warns:
        PruningWarning: when a layer keeps no weight (layer collapse); ``mask.empty_layers()``
            names them.
    """
    entry = METHODS.get(method)
    if entry.ticket is not None and not allow_trained:
        raise PrunelabError(
            f"method {entry.name!r} prunes the trained weights of a dense trunk, not an initialisation: "
            f"run it with `prunelab train --method {entry.name} --density D` or in a study (e.g. "
            "`prunelab tickets`); pass allow_trained=True only if the model already holds the trained weights"
        )
    density = check_density(density)
    checks = resolve_checks(check)
    policy = prunable or PrunableSet()
    layers = prunable_layers(model, policy)
    alloc = _resolve_allocation(allocation, entry)
    rule = None if callable(alloc) else ALLOCATIONS.get(alloc)
    if rule is not None and rule.needs_data and data is None:
        raise PrunelabError(f"allocation {rule.name!r} scores the model on data: pass data=...")
    opts, alloc_opts = entry.split_options(entry.resolve_options(options, alloc))
    device = next(model.parameters()).device
    check_gen = generator(seed, "check")

    batches = _checked_scoring_batches(entry, data, checks, opts, seed, device, check_gen)
    needs_shape = entry.needs_input_shape or (rule is not None and rule.needs_input_shape)
    mask = compute_mask(
        model,
        entry,
        density,
        layers,
        alloc,
        batches=batches,
        input_shape=resolve_input_shape(
            model, entry, given=input_shape, data=data, batches=batches, needed=needs_shape
        ),
        options=opts,
        mask_generator=generator(seed, "mask"),
        checks=checks,
        last_layer_density=policy.last_layer_density,
        within=within,
        allocation_options=alloc_opts,
        data=data,
        seed=seed,
        sampling=sampling,
    )
    info = {**mask.info, "allocation": _allocation_label(allocation, alloc)}
    for c in checks:
        if c.mask is not None:
            mask = c.mask(mask, check_gen)
    mask = Mask(mask, info)
    _warn_collapse(mask, entry.name, density)
    apply_weight_checks(model, mask, checks, seed, check_gen)
    mask.apply_(model)
    return mask


def _checked_scoring_batches(
    entry: Method,
    data: ScoringData | None,
    checks: Sequence[Check],
    opts: Mapping[str, Any],
    seed: int,
    device: torch.device,
    check_gen: torch.Generator,
) -> list[Batch] | None:
    """The scoring batches of a data-driven method (None for a data-free one), with the data checks
    applied; a data check on a data-free method is refused."""
    data_checks = [c for c in checks if c.data is not None]
    if not entry.needs_data:
        if data_checks:
            raise PrunelabError(
                f"check {data_checks[0].name!r} changes the scoring data, but method {entry.name!r} uses none"
            )
        return None
    if data is None:
        raise PrunelabError(f"method {entry.name!r} scores on data: pass data=...")
    per_class = int(opts.get("samples_per_class", 10))
    iterations = as_int(opts.get("iterations", 1), f"method {entry.name!r} option iterations", minimum=1)
    batches, num_classes = scoring_batches(
        data, per_class, generator(seed, "scoring_data"), device, iterations=iterations
    )
    if data_checks:
        classes = num_classes or int(max(int(y.max()) for _, y in batches)) + 1
        for c in data_checks:
            assert c.data is not None
            batches = c.data(batches, classes, check_gen)
    return batches


def _warn_collapse(mask: Mask, method: str, density: float) -> None:
    empty = mask.empty_layers()
    if empty:
        warnings.warn(
            f"layer collapse: method {method!r} at density {density:g} keeps no weight in "
            f"{len(empty)} layer(s): {', '.join(empty)}",
            PruningWarning,
            stacklevel=3,
        )


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
