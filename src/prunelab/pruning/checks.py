"""Sanity checks (Su et al. 2020; Frankle et al. 2021): transforms that destroy one kind of
information a pruning method could use. If a method's accuracy does not drop under a check, the
method did not use that information.

Each check acts at one stage of the pipeline and composes with any method:

========================  ===========  =====================================================
check                     stage        what it destroys
========================  ===========  =====================================================
``random_labels``         data         labels of the scoring batch -> uniformly random classes
``random_pixels``         data         random labels, and each example's values permuted
``invert``                scores       the ranking: prune the highest-scoring weights instead
``shuffle_mask``          mask         positions: each layer's mask randomly permuted
``shuffle_weights``       weights      which surviving weight sits where: kept values permuted
                                       among the kept positions of each layer
``reinit``                weights      the initial values: fresh initialisation, same mask
``reinit_fan``            weights      the initial values: fresh He init scaled by each
                                       layer's *effective* fan-in (Liu et al. 2019 control)
========================  ===========  =====================================================

All check randomness comes from the run's ``check`` stream (and ``reinit`` for re-initialisation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.pruning.mask import Mask
from prunelab.pruning.scores import Batch
from prunelab.registry import Registry


@dataclass(frozen=True)
class Check:
    """A sanity check: a stage name and its transform. Unused hooks are identity.

    Attributes:
        stage: ``"data"``, ``"scores"``, ``"mask"`` or ``"weights"``.
        needs_data: the check only makes sense for methods that score on data.
        description: one line for listings and reports.
    """

    name: str
    stage: str
    needs_data: bool
    description: str


CHECKS: Registry[Check] = Registry("check")
for _check in (
    Check("random_labels", "data", True, "scoring batch labels replaced by uniformly random classes"),
    Check("random_pixels", "data", True, "random labels and every example's values randomly permuted"),
    Check("invert", "scores", False, "scores inverted: the highest-scoring weights are pruned"),
    Check("shuffle_mask", "mask", False, "each layer's mask randomly permuted (per-layer counts kept)"),
    Check("shuffle_weights", "weights", False, "kept weights permuted among each layer's kept positions"),
    Check("reinit", "weights", False, "weights re-initialised from a fresh seed, same mask"),
    Check(
        "reinit_fan",
        "weights",
        False,
        "fresh He init with each layer's effective fan-in (kept weights per output unit), same mask",
    ),
):
    CHECKS.add(_check.name, _check)


def random_labels(batches: list[Batch], num_classes: int, generator: torch.Generator) -> list[Batch]:
    """Every label replaced by a uniformly random class; inputs unchanged."""
    out = []
    for x, y in batches:
        labels = torch.randint(num_classes, y.shape, generator=generator).to(y.device)
        out.append((x, labels))
    return out


def random_pixels(batches: list[Batch], num_classes: int, generator: torch.Generator) -> list[Batch]:
    """Random labels, and each example's values permuted independently (across channels too)."""
    out = []
    for x, y in random_labels(batches, num_classes, generator):
        flat = x.reshape(x.shape[0], -1)
        perms = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1).to(x.device)
        out.append((torch.gather(flat, 1, perms).reshape(x.shape), y))
    return out


def invert_scores(scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Negated scores, so the top-k of the result is the bottom-k of the input."""
    return {name: -s for name, s in scores.items()}


def shuffle_mask(mask: Mask, generator: torch.Generator) -> Mask:
    """Each layer's mask randomly permuted: per-layer counts kept, positions random."""
    out = {}
    for name, tensor in mask.items():
        perm = torch.randperm(tensor.numel(), generator=generator).to(tensor.device)
        out[name] = tensor.flatten()[perm].view(tensor.shape)
    return Mask(out)


@torch.no_grad()
def shuffle_weights(model: nn.Module, mask: Mask, generator: torch.Generator) -> None:
    """Permute each layer's kept weight values among its kept positions, in place."""
    params = mask.check_fits(model)
    for name, param in params.items():
        kept = torch.nonzero(mask[name].flatten().to(param.device)).flatten()
        perm = torch.randperm(kept.numel(), generator=generator).to(param.device)
        flat = param.view(-1)
        flat[kept] = flat[kept[perm]].clone()


@torch.no_grad()
def reinitialise(model: nn.Module, fresh: nn.Module) -> None:
    """Copy every parameter and buffer of ``fresh`` (a newly initialised twin) into ``model``."""
    model.load_state_dict(fresh.state_dict())


@torch.no_grad()
def effective_fan_reinit(model: nn.Module, mask: Mask, generator: torch.Generator) -> None:
    """Re-initialise every masked weight as ``N(0, 2 / n_eff)`` times the mask, in place.

    ``n_eff = nnz(mask) / C_out``: the number of kept inputs per output unit, i.e. He (Kaiming
    normal, fan-in) init with the fan-in the sparse layer actually has. This is the random
    re-initialisation of Liu et al. 2019 (``cifar_scratch_no_longer.py``, ``main_scratch_mask.py``).
    Layers not in the mask, biases and norm parameters are left as they are.

    Args:
        model: the network; weights named in ``mask`` are overwritten.
        mask: True = kept; shapes ``(C_out, ...)`` like the weights.
        generator: CPU generator (the run's ``reinit`` stream).
    """
    params = mask.check_fits(model)
    for name, param in params.items():
        keep = mask[name].to(param.device)
        fan = max(int(keep.sum()) / max(param.shape[0], 1), 1.0)
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        param.copy_((noise * (2.0 / fan) ** 0.5).to(param.device, param.dtype) * keep)


def corrupt_training_data(data: DataBundle, kind: str, generator: torch.Generator) -> DataBundle:
    """The bundle with its *training* split corrupted once and for all; the test split is kept.

    ``"random_labels"``: every training label replaced by a uniformly random class, fixed per
    example (Su et al.'s ``CIFAR10RandomLabels`` with corrupt_prob 1). ``"random_pixels"``: random
    labels, and each training example's values permuted by its own fixed permutation (across
    channels too). This is what a trained-weights ticket's trunk trains on under a data check.
    """
    if kind not in DATA_TRANSFORMS:
        raise ValueError(f"unknown corruption {kind!r}; valid choices: {', '.join(DATA_TRANSFORMS)}")
    x, y = DATA_TRANSFORMS[kind]([(data.train_x.cpu(), data.train_y.cpu())], data.num_classes, generator)[0]
    return replace(
        data,
        train_x=x.to(data.device),
        train_y=y.to(data.device),
        info={**data.info, "training_corruption": kind},
    )


DataTransform = Callable[[list[Batch], int, torch.Generator], list[Batch]]
DATA_TRANSFORMS: dict[str, DataTransform] = {"random_labels": random_labels, "random_pixels": random_pixels}
