"""Datasets streamed from disk: image files decoded and augmented in DataLoader workers, batch by batch.

A :class:`StreamingBundle` is a :class:`~prunelab.data.bundle.DataBundle` whose inputs stay on disk
(ImageNet does not fit in memory): it holds file lists and labels, and its ``train_batches``,
``test_batches`` and ``per_class_sample`` decode the files they need in parallel, so the trainer and the
scoring code use it unchanged. ``train_x`` / ``test_x`` are :class:`StreamedInputs`, shape-only
placeholders (so ``input_shape`` and shape checks work) that refuse to be read, with a one-line error.

Reproducibility: an epoch's order is a permutation drawn from the caller's CPU generator, and then one
seed per example is drawn from it too; a worker seeds the example's crop and flip from that seed alone.
So the batches depend only on the generator's state (not on ``num_workers`` or scheduling) and a run
resumed from a checkpointed generator state replays its epochs exactly.

Parallel decoding: a :class:`torch.utils.data.DataLoader` with ``num_workers`` processes over the
map-style :class:`ImageFileDataset` (item ``(file index, seed)`` -> ``uint8 (3, S, S)``), driven by a
batch sampler built from that order. Workers ship ``uint8`` (4x less than float32); batches are pinned
when the target device is CUDA, moved with ``non_blocking`` and normalised on the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from prunelab.data.bundle import DataBundle, shard_bounds
from prunelab.data.transforms import normalize
from prunelab.errors import DataError, PrunelabError

if TYPE_CHECKING:
    from PIL.Image import Image

#: ImageNet per-channel mean and std in the [0, 1] pixel scale (the torchvision reference values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File suffixes read as images (torchvision's ``ImageFolder`` list), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_num_workers() -> int:
    """``min(8, usable CPU cores)``: decoding workers used when a dataset's ``num_workers`` is None."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(8, cores)


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise PrunelabError("reading image files needs Pillow: pip install pillow") from None
    return Image


# --------------------------------------------------------------------------- per-image transforms


class ImageTransform(Protocol):
    """Maps a decoded RGB image and a seed to ``uint8 (3, size, size)``.

    Attributes:
        size: side of the square output, pixels.
        random: whether the output depends on the seed (a deterministic transform ignores it, and no
            seeds are drawn for it).
    """

    @property
    def size(self) -> int: ...
    @property
    def random(self) -> bool: ...
    def __call__(self, image: Image, seed: int) -> Tensor: ...


def _to_tensor(image: Image) -> Tensor:
    """An RGB PIL image ``(W, H)`` as ``uint8 (3, H, W)``."""
    array = np.array(image, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """torchvision's ``RandomResizedCrop(size, scale, ratio)`` then ``RandomHorizontalFlip(0.5)``.

    A crop of area ``uniform(scale) * H * W`` and aspect ratio ``exp(uniform(log(ratio)))`` is placed
    uniformly (10 tries, else a centred crop clamped to ``ratio``), resized to ``size x size`` with
    antialiased bilinear interpolation (PIL), then mirrored with probability 0.5. The same draws as
    torchvision, in the same order, from a generator seeded with the example's seed.

    Attributes:
        size: output side, pixels (224 for ImageNet).
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's width / height.
        flip: apply the random horizontal flip.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    random: bool = field(default=True, init=False)

    def crop_box(self, width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """``(top, left, crop height, crop width)`` in pixels for an image of ``width x height``."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = (
                area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=generator).item()
            )
            aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=generator).item())
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Image, seed: int) -> Tensor:
        """``uint8 (3, size, size)`` from an RGB image; randomness from ``seed`` only."""
        pil = _pil_image()
        generator = torch.Generator().manual_seed(int(seed))
        top, left, h, w = self.crop_box(image.width, image.height, generator)
        out = image.crop((left, top, left + w, top + h)).resize(
            (self.size, self.size), pil.Resampling.BILINEAR
        )
        if self.flip and torch.rand(1, generator=generator).item() < 0.5:
            out = out.transpose(pil.Transpose.FLIP_LEFT_RIGHT)
        return _to_tensor(out)


@dataclass(frozen=True)
class ResizeCenterCrop:
    """torchvision's ``Resize(resize)`` (shorter side to ``resize``, aspect kept, antialiased bilinear)
    then ``CenterCrop(size)``; deterministic.

    Attributes:
        size: output side, pixels (224 for ImageNet).
        resize: the shorter side before cropping, pixels (256 for ImageNet); at least ``size``.
    """

    size: int
    resize: int
    random: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.resize < self.size:
            raise PrunelabError(f"resize_size ({self.resize}) must be at least crop_size ({self.size})")

    def __call__(self, image: Image, seed: int = 0) -> Tensor:
        """``uint8 (3, size, size)`` from an RGB image (``seed`` is ignored)."""
        pil = _pil_image()
        width, height = image.width, image.height
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), pil.Resampling.BILINEAR)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return _to_tensor(image.crop((left, top, left + self.size, top + self.size)))


# --------------------------------------------------------------------------- files and decoding


@dataclass(frozen=True, eq=False)
class FileList:
    """Image files under one root, stored compactly.

    Paths are a numpy byte-string array rather than a list of Python strings: it pickles to workers as
    one buffer and forked workers do not touch per-string reference counts (which would copy the pages).

    Attributes:
        root: folder the paths are relative to.
        paths: ``(N,)`` numpy ``bytes`` array of relative paths (``os.fsencode``).
    """

    root: str
    paths: np.ndarray

    @classmethod
    def from_paths(cls, root: str | os.PathLike[str], relative: Sequence[str]) -> FileList:
        """A file list of ``relative`` paths (strings) under ``root``."""
        encoded = [os.fsencode(p) for p in relative]
        return cls(os.fspath(root), np.array(encoded, dtype=bytes) if encoded else np.array([], dtype="S1"))

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, index: int) -> str:
        """The full path of file ``index``."""
        return os.path.join(self.root, os.fsdecode(self.paths[index]))

    def subset(self, indices: Tensor) -> FileList:
        """The files at ``indices`` (``(K,)`` int64), in that order."""
        return FileList(self.root, self.paths[indices.numpy()])


class ImageFileDataset(Dataset[Tensor | str]):
    """Map-style dataset: item ``(file index, seed)`` -> ``uint8 (3, size, size)``.

    A file that cannot be decoded yields its one-line error message (a ``str``) instead of raising in
    the worker, so the main process raises a one-line :class:`DataError` rather than a worker traceback.
    """

    def __init__(self, files: FileList, transform: ImageTransform) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> Tensor | str:
        index, seed = item
        path = self.files.path(index)
        pil = _pil_image()
        try:
            with pil.open(path) as raw:
                image = raw.convert("RGB")  # greyscale and CMYK JPEGs exist in ImageNet
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's decode errors
            return f"cannot decode image {path}: {type(exc).__name__}: {exc}".replace("\n", " ")
        return self.transform(image, seed)


def _collate(items: list[Tensor | str]) -> Tensor | str:
    """Stack ``uint8`` images into ``(B, 3, S, S)``, or pass on the first decode error."""
    for item in items:
        if isinstance(item, str):
            return item
    stacked: Tensor = default_collate(items)  # in shared memory when run in a worker
    return stacked


class _PairBatches:
    """Batch sampler: one list of ``(file index, seed)`` per non-empty chunk of file indices."""

    def __init__(self, chunks: Sequence[Tensor], seed_chunks: Sequence[Tensor] | None) -> None:
        self.chunks = chunks
        self.seed_chunks = seed_chunks

    def __len__(self) -> int:
        return sum(1 for chunk in self.chunks if chunk.numel())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i, chunk in enumerate(self.chunks):
            if chunk.numel() == 0:
                continue  # a DataLoader cannot collate an empty batch; the consumer makes it
            idx = chunk.tolist()
            seeds = [0] * len(idx) if self.seed_chunks is None else self.seed_chunks[i].tolist()
            yield list(zip(idx, seeds, strict=True))


class StreamedInputs(Tensor):
    """Shape-only stand-in for a streamed split's inputs ``(N, *input_shape)``: shape, size, ``dim``,
    ``len`` and dtype work; reading values raises a one-line :class:`DataError` (the data is on disk)."""

    _dataset: str  # the dataset's name, for the error message
    _META: frozenset[Any] = frozenset(
        {
            Tensor.shape.__get__,  # type: ignore[attr-defined]
            Tensor.size,
            Tensor.dim,
            Tensor.ndim.__get__,  # type: ignore[attr-defined]
            Tensor.__len__,
            Tensor.dtype.__get__,  # type: ignore[attr-defined]
            Tensor.device.__get__,
            Tensor.numel,
        }
    )

    @staticmethod
    def __new__(cls, shape: Sequence[int], dataset: str) -> StreamedInputs:
        out = Tensor._make_subclass(cls, torch.empty(tuple(shape), device="meta"))
        out._dataset = dataset
        return out

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func in cls._META:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        name = getattr(args[0], "_dataset", "?") if args else "?"
        what = getattr(func, "__name__", str(func))
        raise DataError(
            f"dataset {name!r} is streamed from disk, so its inputs cannot be read as a tensor ({what}); "
            "use train_batches, test_batches or per_class_sample"
        )

    def __repr__(self, *, tensor_contents: Any = None) -> Any:  # type: ignore[override]
        return f"StreamedInputs(shape={tuple(self.shape)}, dataset={self._dataset!r})"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (StreamedInputs, (tuple(self.shape), self._dataset))

    def __deepcopy__(self, memo: dict[int, Any]) -> StreamedInputs:
        return self  # holds no values: nothing to copy


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PrunelabError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _check_generator(generator: torch.Generator) -> None:
    if generator.device.type != "cpu":
        raise PrunelabError(
            f"streamed datasets draw their order from a CPU generator, got one on {generator.device}"
        )


@dataclass(frozen=True, kw_only=True)
class StreamingBundle(DataBundle):
    """A classification dataset of image files, decoded batch by batch (never all in memory).

    The inherited fields hold: ``train_x``/``test_x`` shape-only :class:`StreamedInputs`
    ``(N, 3, crop, crop)``; ``train_y``/``test_y`` the int64 labels (on CPU; batches are moved);
    ``augmentation`` None (augmentation happens per image, in :attr:`train_transform`).

    Attributes:
        train_files / test_files: the images of each split, aligned with ``train_y`` / ``test_y``.
        train_transform: per-image training transform (random resized crop + flip), ``uint8`` out.
        eval_transform: per-image evaluation transform (resize + centre crop), ``uint8`` out.
        mean / std: per-channel normalisation applied to every batch, ``[0, 1]`` pixel scale.
        num_workers: decoding processes (0: decode in the calling process).
        target_device: where batches are delivered (see :meth:`to`).
        heldout_files: the real test split's images when ``test_*`` is a validation hold-out (then
            ``heldout_x`` is its shape-only stand-in and ``heldout_y`` its labels), else None.
    """

    train_files: FileList
    test_files: FileList
    train_transform: ImageTransform
    eval_transform: ImageTransform
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_workers: int = 0
    target_device: torch.device = torch.device("cpu")
    heldout_files: FileList | None = None

    @classmethod
    def create(
        cls,
        name: str,
        *,
        train_files: FileList,
        train_y: Tensor,
        test_files: FileList,
        test_y: Tensor,
        num_classes: int,
        train_transform: ImageTransform,
        eval_transform: ImageTransform,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        num_workers: int = 0,
        info: dict[str, object] | None = None,
    ) -> StreamingBundle:
        """A streaming bundle on CPU; ``info`` gains ``mean``, ``std`` and ``pixel_bounds`` ``(0.0,
        1.0)`` (the range of raw pixels before normalisation, as the other image datasets record it)."""
        shape = (3, eval_transform.size, eval_transform.size)
        return cls(
            name=name,
            train_x=StreamedInputs((len(train_files), *shape), name),
            train_y=train_y,
            test_x=StreamedInputs((len(test_files), *shape), name),
            test_y=test_y,
            num_classes=num_classes,
            augmentation=None,
            info={**(info or {}), "mean": tuple(mean), "std": tuple(std), "pixel_bounds": (0.0, 1.0)},
            train_files=train_files,
            test_files=test_files,
            train_transform=train_transform,
            eval_transform=eval_transform,
            mean=tuple(mean),
            std=tuple(std),
            num_workers=num_workers,
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.train_files) != self.train_y.shape[0] or len(self.test_files) != self.test_y.shape[0]:
            raise PrunelabError(f"dataset {self.name!r}: file lists and labels have different lengths")
        if self.train_transform.size != self.eval_transform.size:
            raise PrunelabError(
                f"dataset {self.name!r}: training crops are {self.train_transform.size} px but evaluation "
                f"crops {self.eval_transform.size} px"
            )

    @property
    def device(self) -> torch.device:
        """Where batches are delivered."""
        return self.target_device

    def to(self, device: str | torch.device) -> StreamingBundle:
        """The same files, with batches delivered to ``device`` (pinned host memory when CUDA)."""
        return replace(self, target_device=torch.device(device))

    def with_train(self, train_x: Tensor, train_y: Tensor) -> DataBundle:
        """Refused: a streamed training split's inputs are files (see :meth:`with_train_labels`)."""
        raise DataError(
            f"dataset {self.name!r} is streamed from disk, so its training inputs cannot be replaced; "
            "with_train_labels replaces the labels only"
        )

    def with_train_labels(self, train_y: Tensor) -> StreamingBundle:
        """A copy with the training labels replaced (``(N_train,)`` int64 in ``[0, num_classes)``)."""
        labels = torch.as_tensor(train_y).to("cpu", torch.int64)
        if labels.shape != self.train_y.shape:
            raise PrunelabError(
                f"dataset {self.name!r}: {tuple(labels.shape)} labels for {len(self.train_files)} training images"
            )
        return replace(self, train_y=labels)

    def validation_split(self, size: int) -> StreamingBundle:
        """``size`` training images as the evaluation split (``test_*``), the rest as training.

        The held-out files are a fixed random choice (a seed-0 permutation of the training files; the
        files are sorted by class, so "the last N" would be the last classes only); both parts keep
        their class order. ``info["split"]`` records it. The test split is no longer reachable.
        """
        total = len(self.train_files)
        if size >= total:
            raise PrunelabError(
                f"validation={size} leaves no training examples (the training split has {total})"
            )
        order = torch.randperm(total, generator=torch.Generator().manual_seed(0))
        held, kept = order[total - size :].sort().values, order[: total - size].sort().values
        shape = tuple(self.train_x.shape[1:])
        return replace(
            self,
            train_x=StreamedInputs((total - size, *shape), self.name),
            train_y=self.train_y[kept],
            test_x=StreamedInputs((size, *shape), self.name),
            test_y=self.train_y[held],
            train_files=self.train_files.subset(kept),
            test_files=self.train_files.subset(held),
            heldout_x=self.test_x,
            heldout_y=self.test_y,
            heldout_files=self.test_files,
            info={
                **self.info,
                "split": f"validation: {size} of {total} training images (seed-0 random choice of files)",
            },
        )

    # ----------------------------------------------------------------------- batches

    def _stream(
        self,
        files: FileList,
        labels: Tensor,
        chunks: Sequence[Tensor],
        seed_chunks: Sequence[Tensor] | None,
        transform: ImageTransform,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Decode ``files[chunk]`` for each chunk of file indices (``(B,)`` int64; seeds aligned);
        yields normalised ``(x: (B, 3, S, S) float32, y: (B,) int64)`` on the target device."""
        loader = DataLoader(
            ImageFileDataset(files, transform),
            batch_sampler=_PairBatches(chunks, seed_chunks),
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.target_device.type == "cuda",
        )
        device = self.target_device
        decoded = iter(loader)
        for chunk in chunks:
            if chunk.numel() == 0:
                empty = torch.empty((0, 3, transform.size, transform.size), device=device)
                yield empty, torch.empty(0, dtype=torch.int64, device=device)
                continue
            batch = next(decoded)
            if isinstance(batch, str):
                raise DataError(batch)
            x = normalize(batch.to(device, non_blocking=True), self.mean, self.std)
            yield x, labels.index_select(0, chunk).to(device, non_blocking=True)

    def _epoch_draws(
        self, generator: torch.Generator, augment: bool
    ) -> tuple[Tensor, Tensor | None, ImageTransform]:
        """``(order (N,), seeds (N,) or None, transform)`` of a training epoch, drawn from ``generator``."""
        _check_generator(generator)
        n = len(self.train_files)
        order = torch.randperm(n, generator=generator)
        transform = self.train_transform if augment else self.eval_transform
        seeds = torch.randint(0, 2**62, (n,), generator=generator) if transform.random else None
        return order, seeds, transform

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augment: bool = True, drop_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled training batches ``(x: (B, 3, S, S), y: (B,))`` on the target device.

        Draws from ``generator`` (CPU), all before the first batch, in this order: the permutation
        ``(N,)``; then, when ``augment`` and the training transform is random, one int64 seed per
        example ``(N,)`` (the k-th example of the epoch is augmented from the k-th seed). Without
        ``augment`` the images get the evaluation transform.
        """
        _check_batch_size(batch_size)
        order, seeds, transform = self._epoch_draws(generator, augment)
        n = order.numel()
        stop = n - n % batch_size if drop_last else n
        chunks = order[:stop].split(batch_size)
        seed_chunks = None if seeds is None else seeds[:stop].split(batch_size)
        yield from self._stream(self.train_files, self.train_y, chunks, seed_chunks, transform)

    def train_shard_batches(
        self, batch_size: int, generator: torch.Generator, rank: int, world: int, *, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Process ``rank``'s share of the epoch :meth:`train_batches` draws from the same
        ``generator`` state: ``(x: (b, 3, S, S), y: (b,), B)`` per step, ``B`` the global batch's size
        and ``b`` this rank's slice of it (:func:`~prunelab.data.bundle.shard_bounds`).

        The ranks draw the same order and seeds; since each example carries its own seed, a rank
        decodes only its slice, and the union of the slices is the one-process batch, example for
        example.
        """
        _check_batch_size(batch_size)
        order, seeds, transform = self._epoch_draws(generator, augment)
        chunks: list[Tensor] = []
        seed_chunks: list[Tensor] = []
        sizes: list[int] = []
        for start in range(0, order.numel(), batch_size):
            idx = order[start : start + batch_size]
            lo, hi = shard_bounds(idx.numel(), rank, world)
            chunks.append(idx[lo:hi])
            sizes.append(idx.numel())
            if seeds is not None:
                seed_chunks.append(seeds[start : start + batch_size][lo:hi])
        decoded = self._stream(
            self.train_files, self.train_y, chunks, seed_chunks if seeds is not None else None, transform
        )
        for (x, y), size in zip(decoded, sizes, strict=True):
            yield x, y, size

    def test_batches(self, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        """The test split in order, evaluation transform, in batches of ``batch_size``."""
        _check_batch_size(batch_size)
        chunks = torch.arange(len(self.test_files)).split(batch_size)
        yield from self._stream(self.test_files, self.test_y, chunks, None, self.eval_transform)

    def heldout_batches(self, batch_size: int = 1000) -> Iterator[tuple[Tensor, Tensor]]:
        """The real test split behind a validation hold-out, in order, evaluation transform."""
        if self.heldout_files is None or self.heldout_y is None:
            yield from super().heldout_batches(batch_size)  # raises: there is no hold-out
            return
        _check_batch_size(batch_size)
        chunks = torch.arange(len(self.heldout_files)).split(batch_size)
        yield from self._stream(self.heldout_files, self.heldout_y, chunks, None, self.eval_transform)

    def per_class_sample(
        self, per_class: int, generator: torch.Generator, *, augment: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``per_class`` random training images of every class, ``(x, y)`` sorted by class, on the
        target device (the scoring batch of SNIP and GraSP). Classes with fewer images give all.

        Draws from ``generator`` as :meth:`DataBundle.per_class_sample` does (one permutation per
        class), then, with ``augment``, one seed per chosen image; without it the images get the
        evaluation transform.
        """
        _check_generator(generator)
        # One stable sort instead of a full scan per class (1000 classes x 1.28M labels on ImageNet);
        # each class's indices come out ascending, as the base class's nonzero() gives them.
        by_class = torch.argsort(self.train_y, stable=True)
        counts = torch.bincount(self.train_y, minlength=self.num_classes).tolist()
        chosen: list[Tensor] = []
        for where in by_class.split(counts):
            if where.numel() == 0:
                continue
            chosen.append(where[torch.randperm(where.numel(), generator=generator)[:per_class]])
        if not chosen:
            raise PrunelabError(f"dataset {self.name!r} has no training examples to score on")
        idx = torch.cat(chosen)
        transform = self.train_transform if augment else self.eval_transform
        seeds = torch.randint(0, 2**62, (idx.numel(),), generator=generator) if transform.random else None
        # Decoded in chunks of 256 so the workers share the work.
        parts = list(
            self._stream(
                self.train_files,
                self.train_y,
                idx.split(256),
                None if seeds is None else seeds.split(256),
                transform,
            )
        )
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
