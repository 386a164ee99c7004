"""Datasets as tensors: ``load_dataset(name, ...) -> DataBundle``.

Registered datasets: ``mnist1d`` (generated locally), ``digits`` (bundled with scikit-learn),
``cifar10`` / ``cifar100`` (downloaded with an MD5 check), ``synthetic`` (for tests), and ``imagenet`` /
``tiny_imagenet`` (image files streamed from disk, see :mod:`prunelab.data.streaming`). Register more
with :func:`register_dataset`.

For out-of-distribution and shift evaluation: ``svhn`` (downloaded with an MD5 check), ``cifar10c`` /
``cifar100c`` and ``image_folder`` (evaluation-only, read from a local ``path=``, see
:mod:`prunelab.data.folders`), and ``mnist1d_shift`` / ``mnist1d_ood`` (generated locally, see
:mod:`prunelab.data.mnist1d_shift`).
"""

from __future__ import annotations

# Importing the loader modules registers them in DATASETS.
from prunelab.data import cifar, digits, folders, imagenet, mnist1d, mnist1d_shift, svhn, synthetic
from prunelab.data.bundle import Augmentation, DataBundle
from prunelab.data.registry import (
    DATASETS,
    DatasetEntry,
    DatasetLoader,
    default_data_dir,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "Augmentation",
    "DataBundle",
    "DatasetEntry",
    "DatasetLoader",
    "cifar",
    "default_data_dir",
    "digits",
    "folders",
    "imagenet",
    "load_dataset",
    "mnist1d",
    "mnist1d_shift",
    "register_dataset",
    "svhn",
    "synthetic",
]
