"""``prune_structured()``: one trained large model in, one pruned model (smaller, or masked) out."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunelab.errors import PrunelabError, invalid_choice
from prunelab.pruning.mask import Mask
from prunelab.pruning.structured.architecture import (
    architecture_of,
    build_architecture,
    check_loadable,
    load_state,
    pruned_architecture,
    save_state,
)
from prunelab.pruning.structured.channels import (
    ChannelLayer,
    channel_layers,
    dependency_graph,
    remove_channels,
)
from prunelab.pruning.structured.methods import STRUCTURED_METHODS, PruneFn, StructuredData

__all__ = [
    "KeepFn",
    "PrunedModel",
    "build_architecture",
    "channel_method",
    "load_pruned",
    "prune_channels",
    "prune_structured",
    "save_pruned",
]


@dataclass
class PrunedModel:
    """The result of :func:`prune_structured`.

    Attributes:
        model: the pruned network, physically smaller (channel and block methods) or of the original
            shape with the mask applied (weight-level). It carries ``prunelab_build`` = its architecture.
        architecture: ``{"name", "input_shape", "num_classes", "options"}`` (JSON-able); rebuilding it
            gives a model whose state dict has exactly ``model``'s keys and shapes.
        mask: the conv-weight mask (weight-level, and SFP's ``all_convs_masked``), True = kept.
        kept: kept channel indices (into the large model's channels) per prunable conv for channel
            methods, and per channel selection module (into its BN's channels) for network slimming
            of PreResNet/DenseNet; kept block indices per stage (``layer1``...) for ``sss``; kept
            filters per conv for SFP's ``all_convs_masked``; empty for weight-level.
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


#: ``(working copy, its prunable convs, resolved options, data, seed) -> kept filter indices per
#: prunable conv`` (a conv left out keeps all its filters). It may edit the working copy.
KeepFn = Callable[[nn.Module, list[ChannelLayer], dict[str, Any], StructuredData, int], dict[str, list[int]]]


def prune_channels(
    model: nn.Module,
    keep: KeepFn,
    options: Mapping[str, Any],
    data: StructuredData = None,
    seed: int = 0,
) -> PrunedModel:
    """The shared scaffolding of channel methods: ``keep`` chooses, this removes.

    Checks the model family (and a ``config`` option, before the slow tracing), traces a deep copy
    of ``model``, asks ``keep`` which filters of each prunable conv to keep, removes the others with
    torch-pruning (slicing the BN after them and the next layer's inputs too) and checks that the
    pruned architecture rebuilds to the same state-dict shapes. ``model`` is not modified.

    Args:
        model: the trained large registry model.
        keep: the method's selection (see :data:`KeepFn`).
        options: the method's resolved options, handed to ``keep``.
        data: handed to ``keep``.
        seed: run seed, handed to ``keep``.
    """
    base = architecture_of(model)
    pruned_architecture(model, base)  # fails early, with a clear message, for unsupported families
    if options.get("config"):
        _predefined(model, str(options["config"]))  # a wrong model fails before the slow tracing
    work = copy.deepcopy(model)
    graph = dependency_graph(work)
    layers = channel_layers(work, graph)
    kept = keep(work, layers, dict(options), data, seed)
    remove_channels(work, kept, graph)
    architecture = pruned_architecture(work, base)
    object.__setattr__(
        work, "prunelab_build", {**architecture, "input_shape": tuple(architecture["input_shape"])}
    )
    check_loadable(work, architecture)
    return PrunedModel(work, architecture, None, kept)


def channel_method(keep: KeepFn) -> PruneFn:
    """A :attr:`StructuredMethod.prune` function for a channel method given only its ``keep``."""

    def prune(model: nn.Module, options: dict[str, Any], data: StructuredData, seed: int) -> PrunedModel:
        return prune_channels(model, keep, options, data, seed)

    return prune


def prune_structured(
    model: nn.Module,
    method: str,
    *,
    data: StructuredData = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> PrunedModel:
    """Prune a trained large registry model with structured ``method``; ``model`` is not modified.

    Looks ``method`` up in :data:`STRUCTURED_METHODS` and calls its ``prune`` function with the
    resolved options (the built-ins are described in :mod:`.builtin`).

    Args:
        model: the trained large model, built by :func:`prunelab.build_model`.
        method: a :data:`STRUCTURED_METHODS` name.
        data: sampled training data for the methods that need it (ThiNet, regression): a
            DataBundle or an ``(inputs, targets)`` tuple.
        seed: run seed (data sample and sampled locations derive their streams from it).
        options: method options; unknown names raise, defaults fill the rest.

    Raises:
        PrunelabError: for unknown names or options, a missing ``data``, or an unsupported model.
    """
    entry = STRUCTURED_METHODS.get(method)
    opts = entry.resolve_options(options)
    architecture_of(model)  # every method needs a registry model: say so before anything else
    if entry.needs_data and data is None:
        raise PrunelabError(f"structured method {entry.name!r} selects channels on data: pass data=...")
    return entry.prune(model, opts, data, seed)


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
