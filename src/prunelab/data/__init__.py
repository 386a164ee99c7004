"""Datasets as tensors: ``load_dataset(name, ...) -> DataBundle``.

Registered datasets: ``mnist1d`` (generated locally), ``digits`` (bundled with scikit-learn),
``cifar10`` / ``cifar100`` (downloaded with an MD5 check) and ``synthetic`` (for tests). Register more
with :func:`register_dataset`.
"""

from __future__ import annotations

# Importing the loader modules registers them in DATASETS.
from prunelab.data import cifar, digits, mnist1d, synthetic
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
    "load_dataset",
    "mnist1d",
    "register_dataset",
    "synthetic",
]
