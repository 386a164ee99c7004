"""Structured pruning of trained networks, as compared by Liu et al. 2019 ("Rethinking the Value of
Network Pruning"): L1-norm filter pruning, network slimming, ThiNet, regression-based channel pruning,
soft filter pruning, sparse structure selection, and (for contrast) weight-level magnitude pruning.

Two calls make a method: :func:`large_model_hooks` says what training the large model needs
(penalties, soft zeroing), :func:`prune_structured` turns the trained large model into a pruned one.
A pruned model is data, not a pickle: :func:`save_pruned` writes its architecture (registry name and
options, incl. the pruned ``widths``) and an ordinary state dict; :func:`build_architecture` gives a
freshly initialised copy for training from scratch.
"""

from prunelab.pruning.structured.api import PrunedModel, load_pruned, prune_structured, save_pruned
from prunelab.pruning.structured.architecture import architecture_of, build_architecture
from prunelab.pruning.structured.blocks import block_scales, install_block_scales
from prunelab.pruning.structured.channels import ChannelLayer, channel_layers, keep_count, remove_channels
from prunelab.pruning.structured.hooks import TrainingHooks, large_model_hooks, soft_prune_
from prunelab.pruning.structured.methods import STRUCTURED_METHODS, StructuredMethod

__all__ = [
    "STRUCTURED_METHODS",
    "ChannelLayer",
    "PrunedModel",
    "StructuredMethod",
    "TrainingHooks",
    "architecture_of",
    "block_scales",
    "build_architecture",
    "channel_layers",
    "install_block_scales",
    "keep_count",
    "large_model_hooks",
    "load_pruned",
    "prune_structured",
    "remove_channels",
    "save_pruned",
    "soft_prune_",
]
