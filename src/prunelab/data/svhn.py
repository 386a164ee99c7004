"""SVHN, cropped digits (format 2; Netzer et al., 2011), from the canonical ``.mat`` files.

``train_32x32.mat`` (73,257 images), ``test_32x32.mat`` (26,032) and, on request, ``extra_32x32.mat``
(531,131 easier images, appended to the training split) are downloaded from
http://ufldl.stanford.edu/housenumbers/ with an MD5 check. They are not archives: each file is
downloaded atomically (:func:`~prunelab.data.download.download_file`) and read with
``scipy.io.loadmat`` (MATLAB v5 files: plain arrays, no code runs on loading). Each file holds ``X``
``(32, 32, 3, N)`` uint8 (row, column, channel, image) and ``y`` ``(N, 1)`` with labels 1..10, where 10
means the digit 0; labels are mapped to 0..9 (10 -> 0).

Inputs are ``(N, 3, 32, 32)`` float32 normalised with SVHN's own per-channel statistics (below). The
training augmentation is a random 4-pixel crop only: no horizontal flip, since a mirrored digit is not
the same digit (a mirrored 2 is not a 2).

Memory: the training split is about 0.9 GB as float32; with ``extra=True`` it is about 7.4 GB.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.download import download_file, md5sum
from prunelab.data.registry import register_dataset
from prunelab.data.transforms import CropFlip, normalize
from prunelab.errors import DataError
from prunelab.options import as_bool

NUM_CLASSES = 10

#: Where the canonical files live.
SVHN_URL_BASE = "http://ufldl.stanford.edu/housenumbers/"

#: Per-channel (R, G, B) mean and std of ``train_32x32.mat`` in the [0, 1] pixel scale: the values used
#: by e.g. DeepCore (Guo et al., 2022, ``deepcore/datasets/svhn.py``) and many OOD-detection codebases.
#: Hard-coded (not recomputed here) so that every copy of SVHN is normalised identically.
SVHN_MEAN: tuple[float, float, float] = (0.4377, 0.4438, 0.4728)
SVHN_STD: tuple[float, float, float] = (0.1980, 0.2010, 0.1970)


@dataclass(frozen=True)
class FileSource:
    """One downloadable file that is used as it is (not an archive).

    Attributes:
        url: download address (``http(s)://`` or ``file://``).
        md5: expected MD5 hex digest of the file.
        filename: the file's name inside the data directory.
    """

    url: str
    md5: str
    filename: str


_MD5 = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}


def svhn_sources(base_url: str = SVHN_URL_BASE) -> dict[str, FileSource]:
    """The three SVHN files (``"train"``, ``"test"``, ``"extra"``) under ``base_url`` with their MD5s."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return {split: FileSource(base + name, md5, name) for split, (name, md5) in _MD5.items()}


#: Where each file comes from. Tests substitute fabricated files here (``monkeypatch.setitem``) or pass
#: ``sources=`` to :func:`load_svhn`.
SVHN_SOURCES: dict[str, FileSource] = svhn_sources()


def ensure_file(source: FileSource, root: Path, *, download: bool, progress: bool = False) -> Path:
    """``root / source.filename`` with a verified MD5, downloading it if needed.

    An existing file is checksummed (a file placed by hand is verified too); a corrupt one is downloaded
    again when ``download`` (the new copy replaces it atomically), otherwise a :class:`DataError` says
    what to do. A missing file with ``download`` off is a :class:`DataError` naming the URL and MD5.
    """
    path = Path(root) / source.filename
    if path.is_file():
        actual = md5sum(path)
        if actual == source.md5.lower():
            return path
        if not download:
            raise DataError(
                f"{path} is corrupt (expected md5 {source.md5.lower()}, got {actual}); "
                "delete it or allow downloading to fetch it again"
            )
    elif not download:
        raise DataError(
            f"{path} is missing and downloading is off; download it from {source.url} "
            f"(md5 {source.md5.lower()}) into {root}, or allow downloading"
        )
    return download_file(source.url, path, source.md5, progress=progress)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 in 0..9 from one SVHN ``.mat`` file.

    Raises:
        DataError: unreadable file, missing keys, wrong shapes/dtype, or labels outside 0..10.
    """
    from scipy.io import loadmat  # imported lazily: only SVHN needs scipy.io

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises many types on malformed files (IndexError, MatReadError, ...)
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        shape = getattr(x, "shape", None)
        raise DataError(f"{path}: 'X' is not a (32, 32, 3, N) uint8 array (got shape {shape})")
    n = x.shape[3]
    if not isinstance(y, np.ndarray) or y.size != n or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: 'y' is missing or does not hold one label for each of the {n} images")
    labels = y.reshape(-1)
    if not np.all(labels == np.round(labels)):
        raise DataError(f"{path}: 'y' holds non-integer labels")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise DataError(f"{path}: labels outside 1..10 (min {labels.min()}, max {labels.max()})")
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    # X[row, col, channel, image] -> (image, channel, row, col).
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def load_svhn(
    data_dir: Path,
    *,
    download: bool = True,
    augment: bool = True,
    extra: bool = False,
    sources: dict[str, FileSource] | None = None,
    progress: bool | None = None,
) -> DataBundle:
    """Load SVHN (cropped digits) on CPU.

    Args:
        data_dir: the files go in ``data_dir / "svhn"``.
        download: allow downloading missing files.
        augment: attach a random 4-pixel crop (no flip) with normalised-black padding to training batches.
        extra: append ``extra_32x32.mat`` (531,131 images, 1.3 GB download) to the training split.
        sources: files to use instead of :data:`SVHN_SOURCES` (keys ``"train"``, ``"test"``, ``"extra"``).
        progress: show a progress bar while downloading (default: when stderr is a terminal).

    Returns:
        bundle with ``train_x (73257[+531131], 3, 32, 32)`` and ``test_x (26032, 3, 32, 32)`` float32
        normalised with :data:`SVHN_MEAN` / :data:`SVHN_STD`, int64 labels 0..9 (the digit shown).
    """
    srcs = sources if sources is not None else SVHN_SOURCES
    root = Path(data_dir) / "svhn"
    show = sys.stderr.isatty() if progress is None else progress
    wanted = ("train", "test", "extra") if extra else ("train", "test")
    paths = {split: ensure_file(srcs[split], root, download=download, progress=show) for split in wanted}
    train_x, train_y = read_svhn_mat(paths["train"])
    if extra:
        extra_x, extra_y = read_svhn_mat(paths["extra"])
        train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
        del extra_x, extra_y
    test_x, test_y = read_svhn_mat(paths["test"])
    return DataBundle(
        name="svhn",
        train_x=normalize(torch.from_numpy(train_x), SVHN_MEAN, SVHN_STD),
        train_y=torch.from_numpy(train_y),
        test_x=normalize(torch.from_numpy(test_x), SVHN_MEAN, SVHN_STD),
        test_y=torch.from_numpy(test_y),
        num_classes=NUM_CLASSES,
        augmentation=CropFlip.for_normalization(SVHN_MEAN, SVHN_STD, padding=4, flip=False)
        if augment
        else None,
        info={
            "source": srcs["train"].url.rsplit("/", 1)[0] + "/",
            "files": {srcs[split].filename: srcs[split].url for split in wanted},
            "md5": {srcs[split].filename: srcs[split].md5.lower() for split in wanted},
            "folder": str(root),
            "mean": SVHN_MEAN,
            "std": SVHN_STD,
            "pixel_bounds": (0.0, 1.0),
            "augmentation": "crop(padding=4)" if augment else "none",
            "extra": extra,
            "classes": [str(d) for d in range(NUM_CLASSES)],
        },
    )


@register_dataset(
    "svhn",
    description="SVHN cropped digits: 73k/26k 32x32 colour images, 10 classes (downloads 235 MiB)",
    embedded=False,
)
def load_svhn_dataset(
    data_dir: Path, *, download: bool = True, augment: bool = True, extra: bool = False
) -> DataBundle:
    """SVHN as ``(N, 3, 32, 32)`` normalised float32, labels 0..9; see :func:`load_svhn`."""
    return load_svhn(
        data_dir, download=download, augment=as_bool(augment, "augment"), extra=as_bool(extra, "extra")
    )
