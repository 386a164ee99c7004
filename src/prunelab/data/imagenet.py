"""ImageNet (ILSVRC-2012) and Tiny-ImageNet-200, streamed from disk (see :mod:`.streaming`).

``imagenet`` reads a folder the user points to (``path``), in the standard layout after the usual
reorganisation of the validation images into class folders::

    <path>/train/<wnid>/*.JPEG      1,281,167 images, 1000 class folders
    <path>/val/<wnid>/*.JPEG        50,000 images (the evaluation split)

Classes are the ``train`` folder names, sorted (label ``i`` is the ``i``-th wnid, as torchvision's
``ImageFolder``). It is never downloaded (ImageNet's licence requires registration).

``tiny_imagenet`` is ``tiny-imagenet-200.zip`` (CS231n), downloaded with an MD5 check when missing and
extracted atomically; its layout is ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
``val/val_annotations.txt`` (tab-separated: file, wnid, box). Its unlabelled ``test`` folder is unused:
the validation images are the evaluation split.

Both use the standard pipelines: training = random resized crop (area 8%-100%, aspect 3/4-4/3) and
horizontal flip; evaluation = shorter side resized to ``resize_size`` then a centre crop; ImageNet mean/std
normalisation. Sizes are options (ImageNet 224/256, Tiny-ImageNet 64/64).
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path, PurePosixPath

import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.download import ArchiveSource, ensure_archive, extract_atomic
from prunelab.data.registry import register_dataset
from prunelab.data.streaming import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FileList,
    ImageTransform,
    RandomResizedCropFlip,
    ResizeCenterCrop,
    StreamingBundle,
    default_num_workers,
)
from prunelab.errors import DataError
from prunelab.options import as_bool, as_int, as_number

#: Where Tiny-ImageNet comes from. Tests substitute fabricated archives here (``monkeypatch.setitem``).
TINY_IMAGENET_SOURCES: dict[str, ArchiveSource] = {
    "tiny_imagenet": ArchiveSource(
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        md5="90528d7ca1a48142e341f4ef8d21d0de",
        filename="tiny-imagenet-200.zip",
        folder="tiny-imagenet-200",
    ),
}


# --------------------------------------------------------------------------- zip archives


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    """Reject members that could land outside the extraction folder, and links."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(f"unsafe path {name!r} in archive {archive}; refusing to extract it")
    mode = info.external_attr >> 16
    if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):  # only regular files and folders
        raise DataError(f"link or special file {name!r} in archive {archive}; refusing to extract it")


def extract_zip_atomic(archive: Path, dest_dir: Path, expected_member: str) -> Path:
    """Extract zip ``archive`` so that ``dest_dir / expected_member`` appears complete, in one rename.

    The zip analogue of :func:`~prunelab.data.download.extract_tar_atomic`: nothing is done if the
    target exists; every member is checked first (no absolute paths, no ``..``, no links), the archive
    is extracted (CRCs verified) into a temporary folder inside ``dest_dir`` and ``expected_member`` is
    renamed into place; on any failure the temporary folder is removed and a :class:`DataError` raised.

    Returns:
        ``dest_dir / expected_member``.
    """
    return extract_atomic(
        archive,
        dest_dir,
        expected_member,
        _unpack_zip,
        (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError),
        folder=True,
    )


def _unpack_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            _check_zip_member(member, archive)
        handle.extractall(into, members=members)


def ensure_zip(source: ArchiveSource, root: Path, *, download: bool, progress: bool = False) -> Path:
    """:func:`~prunelab.data.download.ensure_archive` for a zip archive (extracted with
    :func:`extract_zip_atomic`)."""
    return ensure_archive(source, root, download=download, progress=progress, extract=extract_zip_atomic)


# --------------------------------------------------------------------------- folder scanning


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_in(folder: Path) -> list[str]:
    """Sorted names of the image files directly in ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _is_image(e.name) and e.is_file())


def _class_folders(split: Path) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``split``."""
    with os.scandir(split) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(
    root: Path, split: str, classes: list[str] | None = None, *, inner: str = ""
) -> tuple[list[str], FileList, torch.Tensor]:
    """The images of ``root / split / <class> / inner``, class by class, files sorted by name.

    Args:
        root: dataset folder; file paths are stored relative to it.
        split: sub-folder holding one folder per class (``"train"``, ``"val"``).
        classes: the class list (labels are positions in it); default: this split's folders, sorted.
            A class folder absent from ``split`` contributes nothing; one not in ``classes`` is an error.
        inner: path inside each class folder holding the images (Tiny-ImageNet: ``"images"``).

    Returns:
        ``(classes, files, labels (N,) int64)``.

    Raises:
        DataError: missing split folder, no class folders, a class without images, an unknown class.
    """
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder} is missing: expected {split}/<class>/{inner + '/' if inner else ''}*.JPEG")
    found = _class_folders(folder)
    if not found:
        raise DataError(
            f"{folder} has no class folders: expected {split}/<class>/{inner + '/' if inner else ''}*.JPEG"
        )
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{folder} has class folder {unknown[0]!r} that the training split lacks")
    index = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in found:
        where = folder / name / inner if inner else folder / name
        images = _images_in(where) if where.is_dir() else []
        if not images:
            raise DataError(f"class folder {where} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        prefix = f"{split}/{name}/{inner + '/' if inner else ''}"
        paths += [prefix + image for image in images]
        labels += [index[name]] * len(images)
    return classes, FileList.from_paths(root, paths), torch.tensor(labels, dtype=torch.int64)


def _tiny_val(root: Path, classes: list[str]) -> tuple[FileList, torch.Tensor]:
    """Tiny-ImageNet's validation images ``val/images/*`` labelled by ``val/val_annotations.txt``."""
    notes = root / "val" / "val_annotations.txt"
    images = root / "val" / "images"
    if not notes.is_file() or not images.is_dir():
        raise DataError(
            f"{root / 'val'} lacks images/ or val_annotations.txt: the extracted folder is incomplete"
        )
    present = set(_images_in(images))
    index = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(notes.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index or fields[0] not in present:
            raise DataError(
                f"{notes} line {number}: expected '<file in val/images>\\t<training wnid>\\t...', got {line!r}"
            )
        paths.append(f"val/images/{fields[0]}")
        labels.append(index[fields[1]])
    if not paths:
        raise DataError(f"{notes} lists no images")
    return FileList.from_paths(root, paths), torch.tensor(labels, dtype=torch.int64)


# --------------------------------------------------------------------------- loaders


def _transforms(
    crop_size: object, resize_size: object, min_scale: object, augment: object
) -> tuple[ImageTransform, ImageTransform, bool]:
    """``(train, eval, augment)`` transforms from the loader options."""
    crop = as_int(crop_size, "crop_size", minimum=1)
    resize = as_int(resize_size, "resize_size", minimum=1)
    scale = as_number(min_scale, "min_scale", valid="in (0, 1]", accept=lambda s: 0.0 < s <= 1.0)
    on = as_bool(augment, "augment")
    evaluation = ResizeCenterCrop(crop, resize)
    training: ImageTransform = RandomResizedCropFlip(crop, scale=(scale, 1.0)) if on else evaluation
    return training, evaluation, on


def _workers(num_workers: object) -> int:
    return default_num_workers() if num_workers is None else as_int(num_workers, "num_workers", minimum=0)


def _describe(train: ImageTransform, evaluation: ImageTransform, augment: bool) -> str:
    if not augment or not isinstance(train, RandomResizedCropFlip):
        return f"none (training images resized + centre-cropped like the evaluation ones, {evaluation})"
    return (
        f"random resized crop {train.size} px (scale {train.scale[0]:g}-{train.scale[1]:g}, ratio 3/4-4/3) "
        f"+ hflip; evaluation {evaluation}"
    )


@register_dataset(
    "imagenet",
    description="ImageNet-1k from a local train/<wnid>, val/<wnid> folder tree (option path), streamed from disk",
    embedded=False,
)
def load_imagenet(
    data_dir: Path,
    *,
    download: bool = True,
    path: str | None = None,
    crop_size: int = 224,
    resize_size: int = 256,
    min_scale: float = 0.08,
    augment: bool = True,
    num_workers: int | None = None,
) -> DataBundle:
    """ImageNet from ``path`` (default ``data_dir / "imagenet"``) as a :class:`StreamingBundle`.

    Args:
        data_dir: the data directory (used only when ``path`` is not given).
        download: unused: ImageNet cannot be downloaded automatically.
        path: folder with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.
        crop_size: side of the square network input, pixels (training crops and evaluation crops).
        resize_size: shorter side before the evaluation centre crop, pixels (>= ``crop_size``).
        min_scale: smallest training crop area, as a fraction of the image's (torchvision: 0.08).
        augment: random resized crop + flip for training images (else the evaluation transform).
        num_workers: decoding processes (None: ``min(8, cores)``; 0: decode in the calling process).

    Returns:
        bundle with inputs ``(N, 3, crop_size, crop_size)`` normalised with the ImageNet mean/std,
        labels the index of the sorted ``train`` folder name.
    """
    root = Path(path).expanduser() if path is not None else Path(data_dir) / "imagenet"
    if not root.is_dir():
        raise DataError(
            f"ImageNet folder {root} does not exist; pass path=<folder with train/<wnid>/*.JPEG and "
            "val/<wnid>/*.JPEG> (ImageNet is never downloaded)"
        )
    train_tf, eval_tf, augmenting = _transforms(crop_size, resize_size, min_scale, augment)
    workers = _workers(num_workers)
    classes, train_files, train_y = scan_class_folders(root, "train")
    _, test_files, test_y = scan_class_folders(root, "val", classes)
    return StreamingBundle.create(
        "imagenet",
        train_files=train_files,
        train_y=train_y,
        test_files=test_files,
        test_y=test_y,
        num_classes=len(classes),
        train_transform=train_tf,
        eval_transform=eval_tf,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_workers=workers,
        info={
            "source": "local folder",
            "folder": str(root),
            "augmentation": _describe(train_tf, eval_tf, augmenting),
            "classes": classes,
            "num_workers": workers,
        },
    )


@register_dataset(
    "tiny_imagenet",
    description="Tiny-ImageNet-200: 100k/10k 64x64 images, 200 classes, streamed from disk (downloads 237 MiB)",
    embedded=False,
)
def load_tiny_imagenet(
    data_dir: Path,
    *,
    download: bool = True,
    path: str | None = None,
    crop_size: int = 64,
    resize_size: int = 64,
    min_scale: float = 0.08,
    augment: bool = True,
    num_workers: int | None = None,
    progress: bool | None = None,
) -> DataBundle:
    """Tiny-ImageNet-200 as a :class:`StreamingBundle`; evaluation split = its labelled val images.

    Args:
        data_dir: where ``tiny-imagenet-200.zip`` and its extracted folder live (unless ``path``).
        download: allow downloading the zip when it is missing (MD5-checked either way).
        path: a folder to use instead of ``data_dir`` (holding the zip or ``tiny-imagenet-200/``).
        crop_size / resize_size / min_scale / augment / num_workers: as for :func:`load_imagenet`;
            the defaults keep the native 64x64 (evaluation images are used as they are).
        progress: show a progress bar while downloading (default: when stderr is a terminal).

    Returns:
        bundle with 100,000 training and 10,000 evaluation images ``(3, crop_size, crop_size)``.
    """
    base = Path(path).expanduser() if path is not None else Path(data_dir)
    source = TINY_IMAGENET_SOURCES["tiny_imagenet"]
    train_tf, eval_tf, augmenting = _transforms(crop_size, resize_size, min_scale, augment)
    workers = _workers(num_workers)
    root = ensure_zip(
        source,
        base,
        download=as_bool(download, "download"),
        progress=sys.stderr.isatty() if progress is None else as_bool(progress, "progress"),
    )
    classes, train_files, train_y = scan_class_folders(root, "train", inner="images")
    wnids = root / "wnids.txt"
    if wnids.is_file():
        listed = sorted(line.strip() for line in wnids.read_text().splitlines() if line.strip())
        if listed != classes:
            raise DataError(
                f"{wnids} lists {len(listed)} classes but train/ has {len(classes)} class folders"
            )
    test_files, test_y = _tiny_val(root, classes)
    return StreamingBundle.create(
        "tiny_imagenet",
        train_files=train_files,
        train_y=train_y,
        test_files=test_files,
        test_y=test_y,
        num_classes=len(classes),
        train_transform=train_tf,
        eval_transform=eval_tf,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_workers=workers,
        info={
            "source": source.url,
            "md5": source.md5,
            "folder": str(root),
            "augmentation": _describe(train_tf, eval_tf, augmenting),
            "classes": classes,
            "num_workers": workers,
        },
    )
