"""Pruning = scores x allocation x application (+ sanity checks)."""

from prunelab.pruning import ratios  # noqa: F401  (registers snip_ratio, grasp_ratio, synflow_ratio)
from prunelab.pruning.allocation import ALLOCATIONS, allocate, like_mask, register_allocation, select_top
from prunelab.pruning.api import prune, resolve_checks
from prunelab.pruning.checks import CHECKS, Check, register_check
from prunelab.pruning.mask import LayerDensity, Mask, PruningWarning
from prunelab.pruning.methods import METHODS, Method, register_method
from prunelab.pruning.prunable import (
    Layer,
    PrunableSet,
    all_weight_layers,
    find_residual_addition,
    prunable_layers,
)
from prunelab.pruning.scores import ScoreContext

__all__ = [
    "ALLOCATIONS",
    "CHECKS",
    "METHODS",
    "Check",
    "Layer",
    "LayerDensity",
    "Mask",
    "Method",
    "PrunableSet",
    "PruningWarning",
    "ScoreContext",
    "all_weight_layers",
    "allocate",
    "find_residual_addition",
    "like_mask",
    "prunable_layers",
    "prune",
    "register_allocation",
    "register_check",
    "register_method",
    "resolve_checks",
    "select_top",
]
