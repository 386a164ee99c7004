"""Structured pruning of trained networks, as compared by Liu et al. 2019 ("Rethinking the Value of
Network Pruning"): L1-norm filter pruning, network slimming, ThiNet, regression-based channel pruning,
soft filter pruning, sparse structure selection, and (for contrast) weight-level magnitude pruning.

Two calls make a method: :func:`large_model_hooks` says what training the large model needs
(penalties, soft zeroing), :func:`prune_structured` turns the trained large model into a pruned one.
Both look the method up in :data:`STRUCTURED_METHODS`, whose entries carry that behaviour; a new
method is one :class:`StructuredMethod` given to :func:`register_structured_method` (a channel
method needs only a keep function, wrapped by :func:`channel_method`).
A pruned model is data, not a pickle: :func:`save_pruned` writes its architecture (registry name and
options, incl. the pruned ``widths``) and an ordinary state dict; :func:`build_architecture` gives a
freshly initialised copy for training from scratch.
"""

from prunelab.pruning.structured import builtin  # noqa: F401  (registers the built-in methods)
from prunelab.pruning.structured.api import (
    KeepFn,
    PrunedModel,
    channel_method,
    load_pruned,
    prune_channels,
    prune_structured,
    save_pruned,
)
from prunelab.pruning.structured.architecture import architecture_of, build_architecture
from prunelab.pruning.structured.blocks import block_scales, install_block_scales
from prunelab.pruning.structured.channels import ChannelLayer, channel_layers, keep_count, remove_channels
from prunelab.pruning.structured.hooks import SFP_VARIANTS, TrainingHooks, large_model_hooks, soft_prune_
from prunelab.pruning.structured.methods import (
    STRUCTURED_METHODS,
    HooksFn,
    PruneFn,
    StructuredData,
    StructuredMethod,
    register_structured_method,
)
from prunelab.pruning.structured.selection import SelectionSite, selection_sites

__all__ = [
    "SFP_VARIANTS",
    "STRUCTURED_METHODS",
    "ChannelLayer",
    "HooksFn",
    "KeepFn",
    "PruneFn",
    "PrunedModel",
    "SelectionSite",
    "StructuredData",
    "StructuredMethod",
    "TrainingHooks",
    "architecture_of",
    "block_scales",
    "build_architecture",
    "channel_layers",
    "channel_method",
    "install_block_scales",
    "keep_count",
    "large_model_hooks",
    "load_pruned",
    "prune_channels",
    "prune_structured",
    "register_structured_method",
    "remove_channels",
    "save_pruned",
    "selection_sites",
    "soft_prune_",
]
