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
``reinit``                weights      the initial values: fresh initialisation, same mask
``reinit_fan``            weights      the initial values: a fresh initialisation whose conv
                                       layers are He init with each layer's *effective*
                                       fan (Liu et al. 2019 control)
``shuffle_weights``       weights      which surviving weight sits where: kept values permuted
                                       among the kept positions of each layer
========================  ===========  =====================================================

A check is a :class:`Check` carrying exactly one transform, for its stage; :func:`register_check`
makes it usable everywhere a built-in is (``prune(check=...)``, specs, studies, the CLI).
:func:`prunelab.pruning.api.prune` applies data checks in the order given, then score checks and
mask checks in the order given, then weight checks in registry order (here: reinit, reinit_fan,
shuffle_weights), whatever the order given: a re-initialisation after a shuffle would undo it.

All check randomness comes from the run's ``check`` stream (and ``reinit`` for re-initialisation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from prunelab.data.bundle import DataBundle
from prunelab.errors import PrunelabError, invalid_choice
from prunelab.models.registry import fresh_twin
from prunelab.pruning.mask import Mask
from prunelab.pruning.scores import Batch
from prunelab.registry import Registry
from prunelab.seeding import derive_seed
from prunelab.seeding import generator as stream

#: Scoring batches, the class count and the run's ``check`` generator -> the corrupted batches.
DataTransform = Callable[[list[Batch], int, torch.Generator], list[Batch]]
#: Per-layer scores -> transformed scores (higher = kept), before allocation.
ScoreTransform = Callable[[dict[str, Tensor]], dict[str, Tensor]]
#: The mask and the run's ``check`` generator -> the transformed mask.
MaskTransform = Callable[[Mask, torch.Generator], Mask]
#: Model, mask, run seed and the run's ``check`` generator; edits the model's weights in place.
WeightTransform = Callable[[nn.Module, Mask, int, torch.Generator], None]

STAGES = ("data", "scores", "mask", "weights")


@dataclass(frozen=True)
class Check:
    """A sanity check: exactly one transform, which also names its stage.

    Attributes:
        name: registry name.
        description: one line for listings and reports.
        data: corrupts the scoring batches (and, via :func:`corrupt_training_data`, a trunk's
            whole training split).
        scores: transforms the scores before allocation.
        mask: transforms the mask after allocation.
        weights: rewrites the weights of the pruned model in place; it gets the run seed so it
            can derive its own stream where the shared ``check`` generator is not wanted.
    """

    name: str
    description: str = ""
    data: DataTransform | None = None
    scores: ScoreTransform | None = None
    mask: MaskTransform | None = None
    weights: WeightTransform | None = None

    def __post_init__(self) -> None:
        given = [stage for stage in STAGES if getattr(self, stage) is not None]
        if len(given) != 1:
            raise PrunelabError(
                f"check {self.name!r} must set exactly one of {', '.join(STAGES)}; got {given or 'none'}"
            )

    @property
    def stage(self) -> str:
        """``"data"``, ``"scores"``, ``"mask"`` or ``"weights"``: the one transform that is set."""
        return next(stage for stage in STAGES if getattr(self, stage) is not None)

    @property
    def needs_data(self) -> bool:
        """The check only makes sense for methods that score on data."""
        return self.data is not None


CHECKS: Registry[Check] = Registry("check")


def register_check(check: Check, *, overwrite: bool = False) -> Check:
    """Register ``check`` under its name; it then works wherever a built-in check does.

    Weight checks run in registration order, after the built-ins. Returns ``check``.

    Raises:
        PrunelabError: if the name is taken and ``overwrite`` is false.
    """
    return CHECKS.add(check.name, check, overwrite=overwrite)


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


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def effective_fan_reinit(model: nn.Module, mask: Mask, generator: torch.Generator) -> None:
    """Re-initialise every masked **conv** weight as ``N(0, std = sqrt(2 / n))`` times the mask, in place.

    ``n = nnz(mask) / C_in`` (``C_in`` = the conv's ``in_channels``): He init (Kaiming normal,
    fan-out mode, which the reference models use for convs: ``n = k*k*C_out`` when dense) with the
    fan the sparse layer actually has, exactly as Liu et al. 2019's scratch training of masked
    models does (``cifar/weight-level/cifar_E.py``, ``cifar_B.py``, ``cifar_scratch_no_longer.py``:
    ``n = mask.sum() / m.in_channels``; ``normal_(0, sqrt(2/n))``; ``mul_(mask)``, Conv2d only).
    Linear layers, layers not in the mask, biases and norm parameters are left as they are. A conv
    that keeps nothing is set to zero.

    Changed: before, ``n`` was ``nnz / C_out`` (floored at 1) and masked linear layers were
    re-initialised too.

    Args:
        model: the network; conv weights named in ``mask`` are overwritten.
        mask: True = kept; shapes ``(C_out, C_in / groups, *kernel)`` like the weights.
        generator: CPU generator (the run's ``reinit`` stream); one draw of the layer's size per
            re-initialised conv, in mask order.
    """
    params = mask.check_fits(model)
    modules = dict(model.named_modules())
    for name, param in params.items():
        module_name, _, attr = name.rpartition(".")
        module = modules.get(module_name)
        if attr != "weight" or not isinstance(module, _CONV_TYPES):
            continue
        keep = mask[name].to(param.device)
        kept = int(keep.sum())
        if kept == 0:
            param.zero_()
            continue
        fan = kept / module.in_channels
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        param.copy_((noise * (2.0 / fan) ** 0.5).to(param.device, param.dtype) * keep)


def _reinit_weights(model: nn.Module, mask: Mask, seed: int, check_generator: torch.Generator) -> None:
    reinitialise(model, fresh_twin(model, derive_seed(seed, "reinit")))


def _reinit_fan_weights(model: nn.Module, mask: Mask, seed: int, check_generator: torch.Generator) -> None:
    """Liu et al.'s random-init control (``cifar_scratch_no_longer.py``): a freshly built model
    (so linear layers, biases and BN get a fresh default init), then effective-fan He init of
    every masked conv. Both draw from the run's ``reinit`` stream: the twin's seed first, so the
    twin's and the convs' random numbers never coincide. (Before, the masked layers' current
    values were redrawn in place with ``n = nnz / C_out``, linear layers included, and the rest
    of the network kept its ticket values.)"""
    gen = stream(seed, "reinit")
    twin_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    reinitialise(model, fresh_twin(model, twin_seed))
    effective_fan_reinit(model, mask, gen)


def _shuffle_weights(model: nn.Module, mask: Mask, seed: int, check_generator: torch.Generator) -> None:
    shuffle_weights(model, mask, check_generator)


# Weight checks run in this order (see the module docstring), so reinit* precede shuffle_weights.
for _check in (
    Check("random_labels", "scoring batch labels replaced by uniformly random classes", data=random_labels),
    Check("random_pixels", "random labels and every example's values randomly permuted", data=random_pixels),
    Check("invert", "scores inverted: the highest-scoring weights are pruned", scores=invert_scores),
    Check("shuffle_mask", "each layer's mask randomly permuted (per-layer counts kept)", mask=shuffle_mask),
    Check("reinit", "weights re-initialised from a fresh seed, same mask", weights=_reinit_weights),
    Check(
        "reinit_fan",
        "fresh init, conv layers He init with their effective fan (nnz / C_in), same mask",
        weights=_reinit_fan_weights,
    ),
    Check(
        "shuffle_weights", "kept weights permuted among each layer's kept positions", weights=_shuffle_weights
    ),
):
    register_check(_check)
del _check


def corrupt_training_data(data: DataBundle, kind: str, generator: torch.Generator) -> DataBundle:
    """The bundle with its *training* split corrupted once and for all; the test split is kept.

    ``kind`` names a data check, whose transform is applied to the whole training split at once:
    ``"random_labels"`` replaces every training label by a uniformly random class, fixed per
    example (Su et al.'s ``CIFAR10RandomLabels`` with corrupt_prob 1); ``"random_pixels"`` also
    permutes each training example's values by its own fixed permutation (across channels too).
    This is what a trained-weights ticket's trunk trains on under a data check.

    Raises:
        PrunelabError: if ``kind`` is not a registered data check.
    """
    check = CHECKS.get(kind) if kind in CHECKS else None
    if check is None or check.data is None:
        raise invalid_choice("corruption", kind, [name for name, c in CHECKS.items() if c.data is not None])
    x, y = check.data([(data.train_x.cpu(), data.train_y.cpu())], data.num_classes, generator)[0]
    return replace(
        data,
        train_x=x.to(data.device),
        train_y=y.to(data.device),
        info={**data.info, "training_corruption": kind},
    )
