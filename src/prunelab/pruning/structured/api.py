"""``prune_structured()``: one trained large model in, one pruned model (smaller, or masked) out."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError, invalid_choice
from prunelab.pruning.mask import Mask
from prunelab.pruning.prunable import PrunableSet
from prunelab.pruning.structured.architecture import (
    architecture_of,
    build_architecture,
    check_loadable,
    load_state,
    pruned_architecture,
    save_state,
)
from prunelab.pruning.structured.blocks import folded_state, kept_blocks
from prunelab.pruning.structured.channels import (
    ChannelLayer,
    channel_layers,
    dependency_graph,
    keep_count,
    remove_channels,
    top_k,
)
from prunelab.pruning.structured.criteria import l1_filter_norms, l2_filter_norms, slimming_keep
from prunelab.pruning.structured.methods import STRUCTURED_METHODS
from prunelab.pruning.structured.reconstruction import select_by_data
from prunelab.seeding import generator

__all__ = ["PrunedModel", "build_architecture", "load_pruned", "prune_structured", "save_pruned"]


@dataclass
class PrunedModel:
    """The result of :func:`prune_structured`.

    Attributes:
        model: the pruned network, physically smaller (channel and block methods) or of the original
            shape with the mask applied (weight-level). It carries ``prunelab_build`` = its architecture.
        architecture: ``{"name", "input_shape", "num_classes", "options"}`` (JSON-able); rebuilding it
            gives a model whose state dict has exactly ``model``'s keys and shapes.
        mask: the conv-weight mask (weight-level only), True = kept.
        kept: kept channel indices (into the large model's channels) per prunable conv for channel
            methods; kept block indices per stage (``layer1``...) for ``sss``; empty for weight-level.
    """

    model: nn.Module
    architecture: dict[str, Any]
    mask: Mask | None = None
    kept: dict[str, list[int]] = field(default_factory=dict)


def _predefined(model: nn.Module, config: str) -> dict[str, int]:
    """The keep counts of predefined configuration ``config`` (``configs.PREDEFINED``) for ``model``."""
    from prunelab.pruning.structured.configs import PREDEFINED

    entry = PREDEFINED.get(config)
    if entry is None:  # a plain dict answers None; a Registry raises its own one-line error
        raise invalid_choice("predefined configuration", config, PREDEFINED)
    return {str(k): int(v) for k, v in entry.keep_counts(model).items()}


def _predefined_counts(model: nn.Module, layers: list[ChannelLayer], config: str) -> dict[str, int]:
    """Keep counts of a predefined configuration, checked against the model's prunable convs."""
    counts = _predefined(model, config)
    sizes = {layer.conv: layer.channels for layer in layers}
    for name, count in counts.items():
        if name not in sizes:
            raise PrunelabError(
                f"configuration {config!r} prunes {name!r}, which is not a prunable conv of this model"
            )
        if not 1 <= int(count) <= sizes[name]:
            raise PrunelabError(
                f"configuration {config!r} keeps {count} of {sizes[name]} filters of {name!r}"
            )
    return {layer.conv: int(counts.get(layer.conv, layer.channels)) for layer in layers}


def _keep_counts(model: nn.Module, layers: list[ChannelLayer], options: Mapping[str, Any]) -> dict[str, int]:
    if options.get("config"):
        return _predefined_counts(model, layers, str(options["config"]))
    return {layer.conv: keep_count(layer.channels, float(options["ratio"])) for layer in layers}


def _sample_inputs(data: DataBundle | tuple[Tensor, Tensor] | None, per_class: int, seed: int) -> Tensor:
    if isinstance(data, DataBundle):
        return data.per_class_sample(per_class, generator(seed, "scoring_data"))[0]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return data[0]
    raise PrunelabError(
        f"data must be a DataBundle or an (inputs, targets) tuple of tensors, got {type(data).__name__}"
    )


def _weight_level(model: nn.Module, options: Mapping[str, Any], seed: int) -> PrunedModel:
    from prunelab.pruning.api import prune

    work = copy.deepcopy(model)
    mask = prune(
        work,
        "magnitude",
        float(options["density"]),
        allocation="global",
        prunable=PrunableSet(scope="conv"),
        seed=seed,
    )
    return PrunedModel(work, architecture_of(model), mask, {})


def _sss(model: nn.Module, options: Mapping[str, Any]) -> PrunedModel:
    kept = kept_blocks(model, float(options["threshold"]))
    state = folded_state(model, kept)
    base = architecture_of(model)
    options_out = dict(base["options"])
    options_out["blocks"] = [len(kept[stage]) for stage in ("layer1", "layer2", "layer3")]
    old_widths = [
        int(getattr(model, s)[i].conv1.out_channels) for s in ("layer1", "layer2", "layer3") for i in kept[s]
    ]
    options_out["widths"] = old_widths
    architecture = {**base, "options": options_out}
    pruned = build_architecture(architecture, seed=0)
    pruned.load_state_dict(state, strict=True)
    pruned.to(next(model.parameters()).device).train(model.training)
    return PrunedModel(pruned, architecture, None, kept)


def prune_structured(
    model: nn.Module,
    method: str,
    *,
    data: DataBundle | tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> PrunedModel:
    """Prune a trained large registry model with structured ``method``; ``model`` is not modified.

    Channel methods score each independently prunable conv (every conv of a VGG or small CNN; each
    ResNet block's ``conv1``) and remove the unkept filters with torch-pruning, which slices the BN
    after them and the next layer's input channels too:

    - ``l1norm``: keep the ``keep_count(C, ratio)`` filters of largest ``sum |W|`` per conv, or the
      counts of predefined configuration ``config`` (e.g. ``"vgg16-a"``; convs it omits stay dense).
    - ``slimming``: one global threshold over the |gamma| of the prunable convs' BNs (needs BN).
    - ``thinet`` / ``regression``: data-driven, layer by layer (see :mod:`.reconstruction`); ``data``
      is a DataBundle (``samples_per_class`` per class drawn with the run's ``scoring_data`` stream)
      or an ``(inputs, targets)`` tuple.
    - ``sfp``: keep the ``keep_count(C, ratio)`` filters of largest L2 norm per conv (after SFP
      training these are the ones not zeroed).
    - ``sss``: remove the blocks whose factor ``|lambda| <= threshold`` (the model must have been
      trained with ``large_model_hooks('sss', ...)``).
    - ``weight_level``: global magnitude mask over conv weights at ``density``; same-shape model.

    Args:
        model: the trained large model, built by :func:`prunelab.build_model`.
        method: a :data:`STRUCTURED_METHODS` name.
        data: sampled training data for ThiNet and regression.
        seed: run seed (data sample and sampled locations derive their streams from it).
        options: method options; unknown names raise, defaults fill the rest.

    Raises:
        PrunelabError: for unknown names or options, a missing ``data``, or an unsupported model.
    """
    entry = STRUCTURED_METHODS.get(method)
    opts = entry.resolve_options(options)
    base = architecture_of(model)
    if entry.needs_data and data is None:
        raise PrunelabError(f"structured method {entry.name!r} selects channels on data: pass data=...")
    if entry.kind == "weight":
        return _weight_level(model, opts, seed)
    if entry.kind == "block":
        return _sss(model, opts)
    pruned_architecture(model, base)  # fails early, with a clear message, for unsupported families
    if opts.get("config"):
        _predefined(model, str(opts["config"]))  # a wrong model fails before the slow tracing
    work = copy.deepcopy(model)
    graph = dependency_graph(work)
    layers = channel_layers(work, graph)
    modules = dict(work.named_modules())
    keep: dict[str, list[int]]
    if entry.name in ("l1norm", "sfp"):
        counts = (
            _keep_counts(work, layers, opts)
            if entry.name == "l1norm"
            else {layer.conv: keep_count(layer.channels, float(opts["ratio"])) for layer in layers}
        )
        score = l1_filter_norms if entry.name == "l1norm" else l2_filter_norms
        keep = {layer.conv: top_k(score(modules[layer.conv].weight), counts[layer.conv]) for layer in layers}
    elif entry.name == "slimming":
        with_bn = [layer for layer in layers if layer.bn is not None]
        if not with_bn:
            raise PrunelabError(
                f"network slimming needs BatchNorm after the prunable convs; model {base['name']!r} has none "
                "(build cnn1d/cnn2d with bn=true)"
            )
        gammas = {str(layer.bn): modules[str(layer.bn)].weight for layer in with_bn}
        by_bn, _ = slimming_keep(gammas, float(opts["percent"]), int(opts["min_channels"]))
        keep = {layer.conv: by_bn[str(layer.bn)] for layer in with_bn}
    else:
        x = _sample_inputs(data, int(opts["samples_per_class"]), seed).to(next(work.parameters()).device)
        chosen = select_by_data(
            work,
            layers,
            _keep_counts(work, layers, opts),
            x,
            method=entry.name,
            positions=int(opts["positions"]),
            generator=generator(seed, "mask"),
        )
        keep = {layer.conv: chosen.get(layer.conv, list(range(layer.channels))) for layer in layers}
    remove_channels(work, keep, graph)
    architecture = pruned_architecture(work, base)
    object.__setattr__(
        work, "prunelab_build", {**architecture, "input_shape": tuple(architecture["input_shape"])}
    )
    check_loadable(work, architecture)
    return PrunedModel(work, architecture, None, keep)


def save_pruned(path: Path, pruned: PrunedModel) -> None:
    """Write ``pruned`` into directory ``path``: ``architecture.json``, ``model.safetensors``,
    ``kept.json`` and, for weight-level pruning, ``mask.safetensors``."""
    path = Path(path)
    save_state(path, pruned.model, pruned.architecture, pruned.kept)
    mask_file = path / "mask.safetensors"
    if pruned.mask is not None:
        pruned.mask.save(mask_file)
    elif mask_file.exists():
        mask_file.unlink()


def load_pruned(path: Path) -> PrunedModel:
    """Read a pruned model written by :func:`save_pruned` (on CPU; no code is unpickled)."""
    path = Path(path)
    model, architecture, kept = load_state(path)
    mask_file = path / "mask.safetensors"
    mask = Mask.load(mask_file) if mask_file.is_file() else None
    if mask is not None:
        mask.check_fits(model)
    return PrunedModel(model, architecture, mask, {str(k): [int(i) for i in v] for k, v in kept.items()})
