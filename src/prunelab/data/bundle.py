"""The one type every dataset returns: tensors (on the training device when they fit) and a tensor-op
augmentation, so a training epoch is a loop over index slices with no DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from prunelab.errors import PrunelabError

#: An augmentation maps a batch ``(B, *input_shape)`` to a batch of the same shape, drawing its
#: randomness only from the given generator (so a resumed run replays it exactly).
Augmentation = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class DataBundle:
    """A classification dataset held as tensors.

    Attributes:
        name: registry name, e.g. ``"mnist1d"``.
        train_x: ``(N_train, *input_shape)`` float32, already normalised.
        train_y: ``(N_train,)`` int64 class indices in ``[0, num_classes)``.
        test_x: ``(N_test, *input_shape)`` float32, normalised the same way.
        test_y: ``(N_test,)`` int64.
        num_classes: number of classes.
        augmentation: applied to training batches only, or ``None``.
        info: free-form provenance (source, normalisation statistics, split seed).
        heldout_x: the real test split when ``test_*`` is a validation hold-out (see
            :func:`prunelab.data.registry.validation_split`), else None. Only a best-on-validation
            checkpoint reads it, once.
        heldout_y: its labels.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augmentation: Augmentation | None = None
    info: dict[str, object] = field(default_factory=dict)
    heldout_x: Tensor | None = None
    heldout_y: Tensor | None = None

    def __post_init__(self) -> None:
        if self.train_x.shape[0] != self.train_y.shape[0] or self.test_x.shape[0] != self.test_y.shape[0]:
            raise PrunelabError(f"dataset {self.name!r}: inputs and labels have different lengths")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise PrunelabError(f"dataset {self.name!r}: train and test inputs differ in shape")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(3, 32, 32)`` or ``(1, 40)``."""
        return tuple(self.train_x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> DataBundle:
        """The same bundle with every tensor on ``device``."""
        device = torch.device(device)
        if self.device == device:
            return self
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
            heldout_x=None if self.heldout_x is None else self.heldout_x.to(device),
            heldout_y=None if self.heldout_y is None else self.heldout_y.to(device),
        )

    def with_train(self, train_x: Tensor, train_y: Tensor) -> DataBundle:
        """A copy with the training split replaced (used by label/pixel sanity checks)."""
        return replace(self, train_x=train_x, train_y=train_y)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augment: bool = True, drop_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled training batches ``(x: (B, *input_shape), y: (B,))``.

        The order is a permutation drawn from ``generator`` (a CPU generator), then augmentation
        draws from the same generator, so the whole epoch is reproducible from its state.
        """
        n = self.train_x.shape[0]
        order = torch.randperm(n, generator=generator).to(self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            x = self.train_x.index_select(0, idx)
            if augment and self.augmentation is not None:
                x = self.augmentation(x, generator)
            yield x, self.train_y.index_select(0, idx)

    def train_shard_batches(
        self, batch_size: int, generator: torch.Generator, rank: int, world: int, *, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Process ``rank``'s share of the epoch :meth:`train_batches` draws from the same
        ``generator`` state: ``(x: (b, *input_shape), y: (b,), B)`` per step, where ``B`` is the
        global batch's size and ``b`` this rank's slice of it (:func:`shard_bounds`; the last,
        partial batch is split as evenly as it goes, so a rank may get one example fewer).

        Every rank draws the same permutation and augments the whole global batch (so the
        generator advances exactly as in one process), then keeps its slice: the union of the
        ranks' slices is the one-process batch, example for example.
        """
        n = self.train_x.shape[0]
        order = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            lo, hi = shard_bounds(idx.shape[0], rank, world)
            if augment and self.augmentation is not None:
                x = self.augmentation(self.train_x.index_select(0, idx), generator)[lo:hi]
            else:  # nothing random per batch: gather only this rank's examples
                x = self.train_x.index_select(0, idx[lo:hi])
            yield x, self.train_y.index_select(0, idx[lo:hi]), idx.shape[0]

    def test_batches(self, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        """The test split in order, in batches of ``batch_size``."""
        for start in range(0, self.test_x.shape[0], batch_size):
            yield self.test_x[start : start + batch_size], self.test_y[start : start + batch_size]

    def heldout_batches(self, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        """The real test split behind a validation hold-out, in order, in batches."""
        if self.heldout_x is None or self.heldout_y is None:
            raise PrunelabError(
                f"dataset {self.name!r} has no held-out test split: a best-on-validation checkpoint "
                "needs the dataset option validation: N"
            )
        for start in range(0, self.heldout_x.shape[0], batch_size):
            yield self.heldout_x[start : start + batch_size], self.heldout_y[start : start + batch_size]

    def per_class_sample(
        self, per_class: int, generator: torch.Generator, *, augment: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``per_class`` random training examples of every class, as ``(x, y)`` sorted by class.

        This is the scoring batch of SNIP and GraSP (Su et al. draw 10 per class). Classes with
        fewer examples contribute all they have.
        """
        chosen: list[Tensor] = []
        labels = self.train_y.cpu()
        for cls in range(self.num_classes):
            where = torch.nonzero(labels == cls).flatten()
            if where.numel() == 0:
                continue
            pick = where[torch.randperm(where.numel(), generator=generator)[:per_class]]
            chosen.append(pick)
        if not chosen:
            raise PrunelabError(f"dataset {self.name!r} has no training examples to score on")
        idx = torch.cat(chosen).to(self.device)
        x = self.train_x.index_select(0, idx)
        if augment and self.augmentation is not None:
            x = self.augmentation(x, generator)
        return x, self.train_y.index_select(0, idx)


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous slice of ``size`` examples split over ``world``
    ranks, as :func:`torch.tensor_split` splits: sizes differ by at most one, larger ones first."""
    if not 0 <= rank < world:
        raise PrunelabError(f"rank {rank} outside [0, {world})")
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
