"""CIFAR-10 and CIFAR-100 from the canonical python-pickle archives (Krizhevsky, 2009).

The archives are downloaded with an MD5 check and extracted atomically (see :mod:`.download`); the
batch files are read with :class:`RestrictedUnpickler`, which only rebuilds numpy arrays and plain
containers, so a tampered file cannot run code. Inputs are ``(N, 3, 32, 32)`` float32 normalised with
the usual per-channel statistics; training batches get a random 4-pixel crop and horizontal flip whose
padding equals a black pixel after normalisation (as torchvision's pad-then-normalise pipeline).
"""

from __future__ import annotations

import importlib
import io
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.download import ArchiveSource, ensure_archive
from prunelab.data.registry import register_dataset
from prunelab.data.transforms import CropFlip, normalize
from prunelab.errors import DataError, PrunelabError
from prunelab.options import as_bool

#: Where each archive comes from. Tests substitute fabricated archives here (``monkeypatch.setitem``).
CIFAR_SOURCES: dict[str, ArchiveSource] = {
    "cifar10": ArchiveSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
    ),
    "cifar100": ArchiveSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
    ),
}


@dataclass(frozen=True)
class CifarLayout:
    """File layout and statistics of one CIFAR variant.

    Attributes:
        train_files / test_files: batch files inside the extracted folder.
        meta_file: file with the class names.
        label_key / names_key: keys of the labels in batch files and of the class names in ``meta_file``
            (fine labels for CIFAR-100).
        num_classes: number of classes.
        mean / std: per-channel normalisation statistics in the [0, 1] pixel scale.
    """

    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
    "cifar100": CifarLayout(
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
    ),
}

# The only globals the CIFAR pickles reference: numpy array reconstruction (old and new module paths).
_ALLOWED_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


def _multiarray() -> object:
    # numpy >= 2 moved numpy.core to numpy._core; the old path still imports but warns.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes and builtin containers/scalars.

    Dicts, lists, tuples, strings, bytes and numbers need no globals; any other global (``os.system``,
    ``builtins.eval``, arbitrary classes) raises :class:`DataError` instead of being imported.
    """

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        where = _ALLOWED_GLOBALS.get((module, name))
        if where is None:
            raise DataError(f"refusing to unpickle {module}.{name}: not a numpy array component")
        owner = _multiarray() if where[0] == "multiarray" else np
        found: Callable[..., object] = getattr(owner, where[1])
        return found


def restricted_load(data: bytes | IO[bytes], *, encoding: str = "bytes") -> object:
    """Unpickle ``data`` (bytes or a binary file) with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` keeps Python 2 ``str`` objects (the CIFAR keys) as ``bytes``.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return RestrictedUnpickler(stream, encoding=encoding).load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle surfaces as one DataError
        raise DataError(f"cannot unpickle data: {type(exc).__name__}: {exc}") from None


def _read_pickle(path: Path) -> dict[bytes, object]:
    if not path.is_file():
        raise DataError(f"{path} is missing: the extracted folder is incomplete; delete {path.parent}")
    try:
        with open(path, "rb") as handle:
            value = restricted_load(handle)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not a CIFAR file: it holds a {type(value).__name__}, not a dict")
    return value


def _read_batches(folder: Path, files: tuple[str, ...], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from the given batch files."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for name in files:
        path = folder / name
        batch = _read_pickle(path)
        data, targets = batch.get(b"data"), batch.get(label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
        ):
            raise DataError(f"{path}: b'data' is not a (N, 3072) uint8 array")
        if not isinstance(targets, list | np.ndarray) or len(targets) != data.shape[0]:
            raise DataError(f"{path}: {label_key!r} is missing or does not match the {data.shape[0]} images")
        # Each row is three 32x32 planes (R, G, B), row-major: exactly (3, 32, 32).
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(targets, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar(
    variant: str,
    data_dir: Path,
    *,
    download: bool = True,
    augment: bool = True,
    source: ArchiveSource | None = None,
    progress: bool | None = None,
) -> DataBundle:
    """Load CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) on CPU.

    Args:
        variant: ``"cifar10"`` or ``"cifar100"``.
        data_dir: directory holding (or receiving) the archive and its extracted folder.
        download: allow downloading the archive when it is missing.
        augment: attach ``CropFlip(padding=4)`` with normalised-black padding to the training split.
        source: archive to use instead of ``CIFAR_SOURCES[variant]``.
        progress: show a progress bar while downloading (default: when stderr is a terminal).

    Returns:
        bundle with ``train_x (50000, 3, 32, 32)``, ``test_x (10000, 3, 32, 32)`` float32 normalised,
        int64 labels in ``[0, num_classes)``.
    """
    if variant not in CIFAR_LAYOUTS:
        raise PrunelabError(f"unknown CIFAR variant {variant!r}; valid choices: {', '.join(CIFAR_LAYOUTS)}")
    layout = CIFAR_LAYOUTS[variant]
    src = source if source is not None else CIFAR_SOURCES[variant]
    folder = ensure_archive(
        src,
        Path(data_dir),
        download=download,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    train_x, train_y = _read_batches(folder, layout.train_files, layout.label_key)
    test_x, test_y = _read_batches(folder, layout.test_files, layout.label_key)
    for split, labels in (("train", train_y), ("test", test_y)):
        if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
            raise DataError(f"{variant} {split} labels outside [0, {layout.num_classes}) in {folder}")
    meta = _read_pickle(folder / layout.meta_file)
    names = meta.get(layout.names_key)
    classes = (
        [n.decode() if isinstance(n, bytes) else str(n) for n in names] if isinstance(names, list) else []
    )
    return DataBundle(
        name=variant,
        train_x=normalize(torch.from_numpy(train_x), layout.mean, layout.std),
        train_y=torch.from_numpy(train_y),
        test_x=normalize(torch.from_numpy(test_x), layout.mean, layout.std),
        test_y=torch.from_numpy(test_y),
        num_classes=layout.num_classes,
        augmentation=CropFlip.for_normalization(layout.mean, layout.std, padding=4) if augment else None,
        info={
            "source": src.url,
            "md5": src.md5,
            "folder": str(folder),
            "mean": layout.mean,
            "std": layout.std,
            "augmentation": "crop(padding=4)+hflip" if augment else "none",
            "classes": classes,
        },
    )


@register_dataset(
    "cifar10",
    description="CIFAR-10: 50k/10k 32x32 colour images, 10 classes (downloads 163 MiB)",
    embedded=False,
)
def load_cifar10(data_dir: Path, *, download: bool = True, augment: bool = True) -> DataBundle:
    """CIFAR-10 as ``(N, 3, 32, 32)`` normalised float32; see :func:`load_cifar`."""
    return load_cifar("cifar10", data_dir, download=download, augment=as_bool(augment, "augment"))


@register_dataset(
    "cifar100",
    description="CIFAR-100: 50k/10k 32x32 colour images, 100 fine classes (downloads 161 MiB)",
    embedded=False,
)
def load_cifar100(data_dir: Path, *, download: bool = True, augment: bool = True) -> DataBundle:
    """CIFAR-100 (fine labels) as ``(N, 3, 32, 32)`` normalised float32; see :func:`load_cifar`."""
    return load_cifar("cifar100", data_dir, download=download, augment=as_bool(augment, "augment"))
