"""Evaluation-only datasets read from a folder the user already has: nothing is downloaded.

* ``cifar10c`` / ``cifar100c``: CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, 2019), the CIFAR test
  set under 19 corruptions at 5 severities, for shift robustness. The folder (as extracted from
  ``CIFAR-10-C.tar`` / ``CIFAR-100-C.tar`` from Zenodo) holds ``<corruption>.npy`` ``(50000, 32, 32, 3)``
  uint8 (severities 1..5, 10,000 test images each, in that order) and ``labels.npy`` ``(50000,)``.
* ``image_folder``: any class-folder image set (``root/<class>/<image>``), e.g. ImageNet-O (Hendrycks et
  al., 2021) for out-of-distribution evaluation, resized and centre-cropped to a square.

These sets have no training data of their own: a model is trained on another dataset (``cifar10``,
...) and evaluated on them. Their bundles therefore hold everything in the test split and an **empty**
training split of the same input shape (``(0, C, H, W)``), so nothing can be trained on the evaluation
images by accident (``validation=`` and scoring batches then fail with a clear error instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.cifar import CIFAR_LAYOUTS
from prunelab.data.registry import register_dataset
from prunelab.data.transforms import normalize
from prunelab.errors import DataError, PrunelabError
from prunelab.options import as_int

if TYPE_CHECKING:
    from PIL import Image

#: The 19 corruptions of CIFAR-10-C / CIFAR-100-C: the 15 benchmark ones, then the 4 held-out ones.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)

SEVERITIES = (1, 2, 3, 4, 5)

#: Where users get the corrupted sets, and the folder their archives extract to.
CIFAR_C_HOMES: dict[str, tuple[str, str]] = {
    "cifar10c": ("https://zenodo.org/records/2535967", "CIFAR-10-C"),
    "cifar100c": ("https://zenodo.org/records/3555552", "CIFAR-100-C"),
}

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: ImageNet per-channel statistics (torchvision's), the default normalisation of ``image_folder``.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared case-insensitively, so .JPEG counts


def _load_npy(path: Path) -> np.ndarray:
    """A memory-mapped ``.npy`` (no pickles), or a :class:`DataError` naming the file."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _cifar_c_folder(variant: str, path: str) -> Path:
    """The folder holding ``labels.npy``: ``path`` itself or its ``CIFAR-10-C`` / ``CIFAR-100-C`` child."""
    home, folder_name = CIFAR_C_HOMES[variant]
    if not str(path).strip():
        raise DataError(
            f"{variant} needs path=<folder with {folder_name}'s .npy files>; "
            f"download {folder_name}.tar from {home} and extract it"
        )
    root = Path(path).expanduser()
    for candidate in (root, root / folder_name):
        if (candidate / "labels.npy").is_file():
            return candidate
    if not root.is_dir():
        raise DataError(f"{variant} path {str(root)!r} is not a folder (expected {folder_name} from {home})")
    raise DataError(f"{variant}: no labels.npy in {root} (expected the extracted {folder_name} from {home})")


def load_cifar_c(variant: str, path: str, corruption: str, severity: int) -> DataBundle:
    """CIFAR-10-C (``variant="cifar10c"``) or CIFAR-100-C (``"cifar100c"``): one corruption at one severity.

    Args:
        variant: ``"cifar10c"`` or ``"cifar100c"``.
        path: the extracted folder (or its parent).
        corruption: one of :data:`CORRUPTIONS` whose ``.npy`` file is in the folder.
        severity: 1 (mildest) .. 5.

    Returns:
        bundle whose test split is ``(10000, 3, 32, 32)`` float32 normalised with the clean CIFAR set's
        statistics (a model's preprocessing does not change under shift) with the CIFAR labels, and an
        empty ``(0, 3, 32, 32)`` training split.
    """
    if variant not in CIFAR_C_HOMES:
        raise PrunelabError(f"unknown CIFAR-C variant {variant!r}; valid choices: {', '.join(CIFAR_C_HOMES)}")
    layout = CIFAR_LAYOUTS[variant.removesuffix("c")]
    name = str(corruption).strip().lower()
    if name not in CORRUPTIONS:
        raise PrunelabError(
            f"unknown {variant} corruption {corruption!r}; valid choices: {', '.join(CORRUPTIONS)}"
        )
    level = as_int(severity, "severity", minimum=1)
    if level not in SEVERITIES:
        raise PrunelabError(f"{variant} severity must be one of 1, 2, 3, 4, 5, got {severity!r}")
    folder = _cifar_c_folder(variant, path)
    file = folder / f"{name}.npy"
    if not file.is_file():
        present = sorted(c for c in CORRUPTIONS if (folder / f"{c}.npy").is_file())
        raise DataError(
            f"{variant} corruption {name!r} has no file {file}; "
            f"corruptions present there: {', '.join(present) or 'none'}"
        )
    images, labels = _load_npy(file), _load_npy(folder / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(
            f"{file}: expected (5 * N, 32, 32, 3) uint8 images, got {images.shape} {images.dtype}"
        )
    total = images.shape[0]
    if total == 0 or total % len(SEVERITIES):
        raise DataError(f"{file}: {total} images is not 5 severities of N images each")
    if labels.ndim != 1 or labels.shape[0] != total or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{folder / 'labels.npy'}: expected ({total},) integer labels, got {labels.shape} {labels.dtype}"
        )
    per = total // len(SEVERITIES)
    rows = slice((level - 1) * per, level * per)  # severity blocks are stored in order 1..5
    x = np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    y = np.array(labels[rows], dtype=np.int64)  # a writable copy of the memory-mapped rows
    if y.min() < 0 or y.max() >= layout.num_classes:
        raise DataError(f"{variant} labels outside [0, {layout.num_classes}) in {folder / 'labels.npy'}")
    test_x = normalize(torch.from_numpy(x), layout.mean, layout.std)
    return DataBundle(
        name=variant,
        train_x=test_x.new_empty((0, *test_x.shape[1:])),
        train_y=torch.empty(0, dtype=torch.int64),
        test_x=test_x,
        test_y=torch.from_numpy(y),
        num_classes=layout.num_classes,
        augmentation=None,
        info={
            "source": str(file),
            "home": CIFAR_C_HOMES[variant][0],
            "corruption": name,
            "severity": level,
            "mean": layout.mean,
            "std": layout.std,
            "pixel_bounds": (0.0, 1.0),
            "split": "test only: the training split is empty (evaluation-only dataset)",
            "classes": list(CIFAR10_CLASSES) if variant == "cifar10c" else [],
        },
    )


@register_dataset(
    "cifar10c",
    description="CIFAR-10-C: the CIFAR-10 test set under 19 corruptions x 5 severities (local path=, eval only)",
    embedded=False,
)
def load_cifar10c(
    data_dir: Path,
    *,
    download: bool = True,
    path: str = "",
    corruption: str = "gaussian_noise",
    severity: int = 3,
) -> DataBundle:
    """CIFAR-10-C from the local folder ``path``; see :func:`load_cifar_c`. Nothing is downloaded."""
    del data_dir, download
    return load_cifar_c("cifar10c", path, corruption, severity)


@register_dataset(
    "cifar100c",
    description="CIFAR-100-C: the CIFAR-100 test set under 19 corruptions x 5 severities (local path=, eval only)",
    embedded=False,
)
def load_cifar100c(
    data_dir: Path,
    *,
    download: bool = True,
    path: str = "",
    corruption: str = "gaussian_noise",
    severity: int = 3,
) -> DataBundle:
    """CIFAR-100-C (fine labels) from the local folder ``path``; see :func:`load_cifar_c`."""
    del data_dir, download
    return load_cifar_c("cifar100c", path, corruption, severity)


# --------------------------------------------------------------------------- class-folder images


def _as_stats(value: object, what: str) -> tuple[float, float, float]:
    """Three finite floats (one per RGB channel); ``std`` values must also be positive."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
        raise PrunelabError(f"image_folder {what} must be a list of 3 numbers (R, G, B), got {value!r}")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise PrunelabError(
            f"image_folder {what} must be a list of 3 numbers (R, G, B), got {value!r}"
        ) from None
    if not all(np.isfinite(out)) or (what == "std" and min(out) <= 0):
        raise PrunelabError(
            f"image_folder {what} must be finite{' and positive' if what == 'std' else ''}, got {value!r}"
        )
    return out[0], out[1], out[2]


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image as ``(3, size, size)`` uint8 RGB: shorter side resized to ``size`` (bilinear), then
    the centre ``size x size`` crop (torchvision's ``Resize(size)`` + ``CenterCrop(size)``)."""
    from PIL import Image  # imported lazily: only image folders need Pillow

    rgb = image.convert("RGB")  # greyscale, palette and RGBA images become 3 channels
    w, h = rgb.size
    # torchvision's arithmetic: the long side is truncated, the crop offset rounded.
    long_side = int(size * max(w, h) / min(w, h))
    new_w, new_h = (size, long_side) if w <= h else (long_side, size)
    if (new_w, new_h) != (w, h):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (hidden files skipped), sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


@register_dataset(
    "image_folder",
    description="class-folder images from a local path= (e.g. ImageNet-O), resized and centre-cropped (eval only)",
    embedded=False,
)
def load_image_folder(
    data_dir: Path,
    *,
    download: bool = True,
    path: str = "",
    size: int = 32,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> DataBundle:
    """Every image under ``path/<class>/`` as the test split, on CPU, in memory.

    Classes are the sub-folder names sorted (label ``i`` = ``info["classes"][i]``, as torchvision's
    ``ImageFolder``); images are ``.jpg`` / ``.jpeg`` / ``.png`` in any letter case, read in name order.

    Args:
        data_dir, download: unused (nothing is downloaded).
        path: root folder with one sub-folder per class.
        size: output side in pixels: shorter side resized to ``size``, then centre-cropped square.
        mean / std: per-channel (R, G, B) normalisation in the [0, 1] pixel scale; default ImageNet's.

    Returns:
        bundle with ``test_x (N, 3, size, size)`` float32 normalised, ``test_y (N,)`` int64 and an empty
        ``(0, 3, size, size)`` training split.
    """
    del data_dir, download
    from PIL import Image, UnidentifiedImageError

    side = as_int(size, "size", minimum=1)
    channel_mean, channel_std = _as_stats(mean, "mean"), _as_stats(std, "std")
    if not str(path).strip():
        raise DataError("image_folder needs path=<root folder with one sub-folder of images per class>")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image_folder path {str(root)!r} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image_folder: no class sub-folders in {root} (expected {root}/<class>/<image>.jpg)")
    files = {name: _image_files(root / name) for name in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DataError(
            f"image_folder: no .jpg/.jpeg/.png images in class folder(s) {', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''} of {root}"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in files[name]:
            try:
                with Image.open(file) as image:
                    images.append(resize_center_crop(image, side))
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"image_folder: cannot read {file}: {exc}") from None
            labels.append(label)
    test_x = normalize(torch.from_numpy(np.stack(images)), channel_mean, channel_std)
    return DataBundle(
        name="image_folder",
        train_x=test_x.new_empty((0, *test_x.shape[1:])),
        train_y=torch.empty(0, dtype=torch.int64),
        test_x=test_x,
        test_y=torch.tensor(labels, dtype=torch.int64),
        num_classes=len(classes),
        augmentation=None,
        info={
            "source": str(root),
            "classes": classes,
            "size": side,
            "resize": "shorter side to size (bilinear), then centre crop",
            "mean": channel_mean,
            "std": channel_std,
            "pixel_bounds": (0.0, 1.0),
            "split": "test only: the training split is empty (evaluation-only dataset)",
        },
    )
