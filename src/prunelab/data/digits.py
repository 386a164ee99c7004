"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): offline and tiny.

A fixed seeded, stratified train/test split; pixels (0..16) are scaled to [0, 1] and standardised with
the training split's scalar mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.registry import register_dataset
from prunelab.data.transforms import CropFlip
from prunelab.options import as_bool, as_fraction, as_int

NUM_CLASSES = 10


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, each sorted, with ``round(test_fraction * n_c)`` test examples per class.

    Uses its own ``numpy.random.default_rng(seed)`` draws (one permutation per class, in class order), so
    the split depends only on the labels, the fraction and the seed.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * members.size))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@register_dataset(
    "digits", description="sklearn digits: 1797 8x8 grey images, 10 classes (bundled, offline)", embedded=True
)
def load_digits(
    data_dir: Path,
    *,
    download: bool = True,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    augment: bool = False,
) -> DataBundle:
    """The 8x8 digits on CPU as ``(N, 1, 8, 8)`` float32 (about 1438 train / 359 test), int64 labels.

    Args:
        data_dir, download: unused (the data ships with scikit-learn).
        test_fraction: fraction of every class held out for testing, in (0, 1).
        split_seed: seed of the split.
        augment: attach a random shift of up to 1 pixel (padding = normalised 0, no flips: digits are
            not mirror-symmetric) to the training split.
    """
    del data_dir, download
    from sklearn.datasets import load_digits as sklearn_digits  # lazy: sklearn is slow to import

    fraction = as_fraction(test_fraction, "test_fraction")
    seed = as_int(split_seed, "split_seed", minimum=0)
    digits = sklearn_digits()
    pixels = np.asarray(digits.data, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0
    labels = np.asarray(digits.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, fraction, seed)
    mean = float(pixels[train_idx].mean())
    std = float(pixels[train_idx].std())

    def inputs(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((pixels[idx] - mean) / std).astype(np.float32))

    augmentation = CropFlip(1, flip=False, fill=(0.0 - mean) / std) if as_bool(augment, "augment") else None
    return DataBundle(
        name="digits",
        train_x=inputs(train_idx),
        train_y=torch.from_numpy(labels[train_idx]),
        test_x=inputs(test_idx),
        test_y=torch.from_numpy(labels[test_idx]),
        num_classes=NUM_CLASSES,
        augmentation=augmentation,
        info={
            "source": "sklearn.datasets.load_digits",
            "test_fraction": fraction,
            "split_seed": seed,
            "mean": mean,
            "std": std,
            "augmentation": "shift(padding=1)" if augmentation is not None else "none",
        },
    )
