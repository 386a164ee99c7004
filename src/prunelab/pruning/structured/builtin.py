"""The built-in structured methods of Liu et al. 2019, registered in their listing order.

Channel methods score each independently prunable conv (every conv of a VGG or small CNN; each
ResNet block's ``conv1``) and remove the unkept filters (:func:`~.api.prune_channels`):

- ``l1norm``: keep the ``keep_count(C, ratio)`` filters of largest ``sum |W|`` per conv, or the
  counts of predefined configuration ``config`` (e.g. ``"vgg16-a"``; convs it omits stay dense).
- ``slimming``: one global threshold over the |gamma| of the prunable convs' BNs (needs BN);
  trains the large model with an L1 penalty on the BN scales. On models with channel selections
  (PreResNet, DenseNet) the BNs before convs are pruned too, through their selections, as Liu et
  al.'s ``resprune.py``/``denseprune.py`` (see :mod:`.selection`).
- ``thinet`` / ``regression``: data-driven, layer by layer (see :mod:`.reconstruction`); ``data``
  is a DataBundle (``samples_per_class`` per class drawn with the run's ``scoring_data`` stream)
  or an ``(inputs, targets)`` tuple.
- ``sfp``: keep the ``keep_count(C, ratio)`` filters of largest L2 norm per conv (after SFP
  training, which zeroes the others every epoch, these are the ones not zeroed). ``variant``
  ``removable_physical`` (default): the independently removable convs, removed physically;
  ``all_convs_masked`` (He et al.'s and Liu et al.'s runs): every conv, and the result is the
  full-size model with a filter-level mask (like ``weight_level``).
- ``sss``: remove the residual blocks whose factor ``|lambda| <= threshold`` (the model must have
  been trained with ``large_model_hooks('sss', ...)``).
- ``weight_level``: global magnitude mask over conv weights at ``density``; same-shape model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError
from prunelab.pruning.mask import Mask
from prunelab.pruning.prunable import PrunableSet
from prunelab.pruning.structured.api import KeepFn, PrunedModel, _predefined, channel_method, prune_channels
from prunelab.pruning.structured.architecture import (
    architecture_of,
    build_architecture,
    check_loadable,
    jsonable,
    pruned_architecture,
)
from prunelab.pruning.structured.blocks import folded_state, kept_blocks
from prunelab.pruning.structured.channels import ChannelLayer, keep_count, top_k
from prunelab.pruning.structured.criteria import l1_filter_norms, l2_filter_norms, slimming_keep
from prunelab.pruning.structured.hooks import (
    sfp_convs,
    sfp_hooks,
    sfp_variant,
    slimming_hooks,
    soft_prune_,
    sss_hooks,
)
from prunelab.pruning.structured.methods import StructuredData, StructuredMethod, register_structured_method
from prunelab.pruning.structured.reconstruction import select_by_data
from prunelab.pruning.structured.selection import selection_sites, slim_with_selections
from prunelab.seeding import generator


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


def _keep_counts(model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any]) -> dict[str, int]:
    """Per-conv keep counts: a predefined ``config`` if given, else ``ratio`` in every conv."""
    if options.get("config"):
        return _predefined_counts(model, layers, str(options["config"]))
    return {layer.conv: keep_count(layer.channels, float(options["ratio"])) for layer in layers}


def _largest_filters(
    model: nn.Module, layers: list[ChannelLayer], counts: dict[str, int], norm: Callable[[Tensor], Tensor]
) -> dict[str, list[int]]:
    modules = dict(model.named_modules())
    return {layer.conv: top_k(norm(modules[layer.conv].weight), counts[layer.conv]) for layer in layers}


def l1norm_keep(
    model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any], data: StructuredData, seed: int
) -> dict[str, list[int]]:
    """Li et al. 2017: the filters of largest L1 norm, ``ratio`` or ``config`` counts per conv."""
    return _largest_filters(model, layers, _keep_counts(model, layers, options), l1_filter_norms)


def sfp_keep(
    model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any], data: StructuredData, seed: int
) -> dict[str, list[int]]:
    """He et al. 2018: the ``keep_count(C, ratio)`` filters of largest L2 norm per conv."""
    counts = {layer.conv: keep_count(layer.channels, float(options["ratio"])) for layer in layers}
    return _largest_filters(model, layers, counts, l2_filter_norms)


def slimming_keep_filters(
    model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any], data: StructuredData, seed: int
) -> dict[str, list[int]]:
    """Liu et al. 2017: the channels whose BN |gamma| clears one global threshold."""
    with_bn = [layer for layer in layers if layer.bn is not None]
    if not with_bn:
        raise PrunelabError(
            f"network slimming needs BatchNorm after the prunable convs; model "
            f"{architecture_of(model)['name']!r} has none (build cnn1d/cnn2d with bn=true)"
        )
    modules = dict(model.named_modules())
    gammas = {str(layer.bn): modules[str(layer.bn)].weight for layer in with_bn}
    by_bn, _ = slimming_keep(gammas, float(options["percent"]), int(options["min_channels"]))
    return {layer.conv: by_bn[str(layer.bn)] for layer in with_bn}


def prune_slimming(model: nn.Module, options: dict[str, Any], data: StructuredData, seed: int) -> PrunedModel:
    """Network slimming: through channel selections where the model has them, else per prunable conv.

    With selections (PreResNet, DenseNet), ``kept`` lists the kept filters of each removable conv
    and the kept channels of each selection (module name -> indices into its BN's channels).
    """
    if not selection_sites(model):
        return prune_channels(model, slimming_keep_filters, options, data, seed)
    base = architecture_of(model)
    work, kept = slim_with_selections(model, float(options["percent"]), int(options["min_channels"]))
    architecture = pruned_architecture(work, base)
    object.__setattr__(
        work, "prunelab_build", {**architecture, "input_shape": tuple(architecture["input_shape"])}
    )
    check_loadable(work, architecture)
    return PrunedModel(work, architecture, None, kept)


def prune_sfp(model: nn.Module, options: dict[str, Any], data: StructuredData, seed: int) -> PrunedModel:
    """He et al. 2018: after SFP training, keep each conv's ``keep_count(C, ratio)`` largest-L2 filters.

    ``removable_physical``: the independently removable convs lose the other filters physically.
    ``all_convs_masked``: every conv of a copy of ``model`` has its other filters zeroed and the
    result keeps the original shape, with a mask over every conv weight that is False on exactly
    those filters (``kept``: the kept filter indices per conv).
    """
    variant = sfp_variant(options)
    if variant == "removable_physical":
        return prune_channels(model, sfp_keep, options, data, seed)
    work = copy.deepcopy(model)
    convs = sfp_convs(work, variant)
    zeroed = soft_prune_(work, float(options["ratio"]), convs)
    modules = dict(work.named_modules())
    tensors: dict[str, Tensor] = {}
    kept: dict[str, list[int]] = {}
    for name in convs:
        weight = modules[name].weight
        assert isinstance(weight, Tensor)
        keep = torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
        keep[zeroed[name]] = False  # whole filters
        tensors[f"{name}.weight"] = keep
        gone = set(zeroed[name])
        kept[name] = [i for i in range(weight.shape[0]) if i not in gone]
    mask = Mask(tensors, info={"method": "sfp", "variant": variant, "ratio": float(options["ratio"])})
    return PrunedModel(work, architecture_of(model), mask, kept)


def _sample_inputs(data: StructuredData, per_class: int, seed: int) -> Tensor:
    if isinstance(data, DataBundle):
        return data.per_class_sample(per_class, generator(seed, "scoring_data"))[0]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return data[0]
    raise PrunelabError(
        f"data must be a DataBundle or an (inputs, targets) tuple of tensors, got {type(data).__name__}"
    )


def _data_driven_keep(algorithm: str) -> KeepFn:
    """The keep function of ThiNet (``"thinet"``) or regression pruning (``"regression"``)."""

    def keep(
        model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any], data: StructuredData, seed: int
    ) -> dict[str, list[int]]:
        x = _sample_inputs(data, int(options["samples_per_class"]), seed).to(next(model.parameters()).device)
        chosen = select_by_data(
            model,
            layers,
            _keep_counts(model, layers, options),
            x,
            method=algorithm,
            positions=int(options["positions"]),
            generator=generator(seed, "mask"),
        )
        return {layer.conv: chosen.get(layer.conv, list(range(layer.channels))) for layer in layers}

    return keep


def prune_weight_level(
    model: nn.Module, options: dict[str, Any], data: StructuredData, seed: int
) -> PrunedModel:
    """Han et al. 2015: a global magnitude mask over the conv weights of a copy of ``model``."""
    from prunelab.pruning.api import prune  # pruning.api is not needed to import this package

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


def prune_sss(model: nn.Module, options: dict[str, Any], data: StructuredData, seed: int) -> PrunedModel:
    """Huang & Wang 2018: drop the residual blocks whose factor is at most ``threshold``."""
    kept = kept_blocks(model, float(options["threshold"]))
    state = folded_state(model, kept)
    base = architecture_of(model)
    describe = getattr(model, "structure_options", None)
    if not callable(describe):
        raise PrunelabError(
            f"sparse structure selection cannot describe {type(model).__name__} without its blocks"
        )
    architecture = {**base, "options": jsonable({**base["options"], **describe(kept)})}
    pruned = build_architecture(architecture, seed=0)
    pruned.load_state_dict(state, strict=True)
    pruned.to(next(model.parameters()).device).train(model.training)
    return PrunedModel(pruned, architecture, None, kept)


for _method in (
    StructuredMethod(
        "l1norm",
        "channel",
        False,
        {"ratio": 0.5, "config": None},
        "keep each prunable conv's filters of largest L1 norm sum|W| over (C_in, k, k); a predefined "
        "per-layer config (e.g. vgg16-a, resnet56-b) or the same keep ratio in every prunable conv",
        "Li et al. 2017, Pruning Filters for Efficient ConvNets",
        prune=channel_method(l1norm_keep),
    ),
    StructuredMethod(
        "slimming",
        "channel",
        False,
        {"strength": 1e-4, "percent": 0.7, "min_channels": 1},
        "train with an L1 penalty on every BN scale (grad += strength*sign(gamma)); prune the BN "
        "channels with |gamma| <= one global threshold (the percent-quantile), at least min_channels "
        "kept per layer",
        "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming",
        prune=prune_slimming,
        training_hooks=slimming_hooks,
    ),
    StructuredMethod(
        "thinet",
        "channel",
        True,
        {"ratio": 0.5, "config": None, "samples_per_class": 10, "positions": 10},
        "per layer, greedily remove the input channels of the next layer whose summed contribution "
        "to its sampled outputs has the smallest squared norm",
        "Luo et al. 2017, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression",
        prune=channel_method(_data_driven_keep("thinet")),
    ),
    StructuredMethod(
        "regression",
        "channel",
        True,
        # 50 images per class x 10 locations: enough equations for the least-squares refit of a
        # 512-wide layer kept at half (256 x 3 x 3 = 2304 unknowns per output) on CIFAR-10.
        {"ratio": 0.5, "config": None, "samples_per_class": 50, "positions": 10},
        "per layer, LASSO regression selects the next layer's input channels that reconstruct its "
        "sampled outputs, then least squares refits the next layer's weights",
        "He et al. 2017, Channel Pruning for Accelerating Very Deep Neural Networks",
        prune=channel_method(_data_driven_keep("regression")),
    ),
    StructuredMethod(
        "sfp",
        "channel",
        False,
        {"ratio": 0.7, "variant": "removable_physical"},
        "after every epoch zero each prunable conv's filters of smallest L2 norm (they may regrow); "
        "finally remove them, keeping the ratio of filters (variant all_convs_masked: every conv, "
        "ending in a filter mask on the full-size model, as the authors run it)",
        "He et al. 2018, Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks",
        prune=prune_sfp,
        training_hooks=sfp_hooks,
    ),
    StructuredMethod(
        "sss",
        "block",
        False,
        {"strength": 1e-2, "threshold": 1e-2},
        "train a scale factor on each residual block's branch with an L1 penalty (grad += "
        "strength*sign); remove the blocks whose |factor| <= threshold",
        "Huang & Wang 2018, Data-Driven Sparse Structure Selection for Deep Neural Networks",
        prune=prune_sss,
        training_hooks=sss_hooks,
    ),
    StructuredMethod(
        "weight_level",
        "weight",
        False,
        {"density": 0.7},
        "one-shot global magnitude pruning of the conv weights of the trained network (linear dense); "
        "a mask, not a smaller model",
        "Han et al. 2015, Learning both Weights and Connections for Efficient Neural Networks",
        prune=prune_weight_level,
    ),
):
    register_structured_method(_method)
del _method
