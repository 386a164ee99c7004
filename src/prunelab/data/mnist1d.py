"""MNIST-1D (Greydanus, 2020), generated locally by the ``mnist1d`` package and cached as ``.npz``.

The package's ``get_dataset`` downloads a pickle from GitHub and unpickles it; we never call it. We call
``make_dataset`` with its default arguments (5000 samples, 80/20 train/test split, length 40, seed 42),
optionally changing the sample count and generation seed, and cache the arrays as a plain ``.npz``
(loaded with ``allow_pickle=False``) named by those arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.registry import register_dataset
from prunelab.errors import DataError
from prunelab.options import as_int

NUM_CLASSES = 10
_KEYS = ("x", "y", "x_test", "y_test")


def dataset_args(num_samples: int = 5000, seed: int = 42) -> dict[str, Any]:
    """The ``mnist1d`` generation arguments: the package defaults with ``num_samples`` and ``seed`` set.

    The download URL is dropped: it plays no part in generation.
    """
    from mnist1d.data import get_dataset_args  # imported lazily: the package pulls in matplotlib

    args: dict[str, Any] = dict(get_dataset_args(as_dict=True))
    args.pop("url", None)
    args["num_samples"] = num_samples
    args["seed"] = seed
    return args


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset``; it reseeds the global ``random``/``numpy`` RNGs, so restore them."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: np.asarray(data[key]) for key in _KEYS}


def cache_path(cache_dir: Path, args: dict[str, Any]) -> Path:
    """The cache file for ``args``: readable sample count and seed plus a hash of all the arguments."""
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"mnist1d-n{args['num_samples']}-seed{args['seed']}-{digest}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (it is then regenerated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in _KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A kill mid-write leaves a temporary file that no finally clause removed: clear old ones.
        for stale in path.parent.glob(f".{path.name}.*.part"):
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink(missing_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise DataError(f"cannot write the MNIST-1D cache in {path.parent}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; a dataset cache is shareable
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def bundle_from_arrays(name: str, arrays: dict[str, np.ndarray], info: Mapping[str, object]) -> DataBundle:
    """A DataBundle from ``make_dataset``-style arrays: ``x (N, 40)`` -> ``(N, 1, 40)`` float32, int64 labels."""

    def inputs(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.float32)).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.int64))

    return DataBundle(
        name=name,
        train_x=inputs("x"),
        train_y=labels("y"),
        test_x=inputs("x_test"),
        test_y=labels("y_test"),
        num_classes=NUM_CLASSES,
        augmentation=None,
        info=dict(info),
    )


@register_dataset(
    "mnist1d",
    description="MNIST-1D: 4000/1000 length-40 1-D signals, 10 classes (generated locally, cached)",
    embedded=True,
)
def load_mnist1d(
    data_dir: Path, *, download: bool = True, num_samples: int = 5000, seed: int = 42
) -> DataBundle:
    """MNIST-1D on CPU: ``train_x (0.8 N, 1, 40)``, ``test_x (0.2 N, 1, 40)`` float32, int64 labels 0..9.

    ``make_dataset`` already standardises the signals (whole-dataset mean 0, std 1), so no further
    normalisation is applied. ``download`` is ignored: nothing is downloaded.

    Args:
        data_dir: the cache goes in ``data_dir / "mnist1d"``.
        num_samples: total examples generated (``num_samples // 10`` per class); default 5000.
        seed: the generation seed; default 42, the published dataset's.
    """
    del download  # generated locally
    n = as_int(num_samples, "num_samples", minimum=NUM_CLASSES)
    gen_seed = as_int(seed, "seed", minimum=0)
    args = dataset_args(n, gen_seed)
    path = cache_path(Path(data_dir) / "mnist1d", args)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(args)
        _write_cache(path, arrays)

    info = {"source": "mnist1d.data.make_dataset (generated locally)", "args": args, "cache": str(path)}
    return bundle_from_arrays("mnist1d", arrays, info)
