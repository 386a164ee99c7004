"""Dataset registry (name -> loader) and :func:`load_dataset`, the entry point the rest of prunelab uses."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.streaming import StreamingBundle
from prunelab.errors import PrunelabError
from prunelab.options import as_int
from prunelab.registry import Registry

#: A loader is ``loader(data_dir, *, download, **options) -> DataBundle`` (tensors on CPU); its options
#: are keyword-only parameters with defaults, which is also how unknown options are detected.
DatasetLoader = Callable[..., DataBundle]

#: Environment variable overriding :func:`default_data_dir`.
DATA_DIR_ENV = "PRUNELAB_DATA_DIR"


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        loader: ``loader(data_dir: Path, *, download: bool, **options) -> DataBundle`` on CPU.
        description: one line for ``prunelab datasets``.
        embedded: True when the data ships with an installed package or is generated locally (never
            downloaded), so it works offline.
    """

    loader: DatasetLoader
    description: str
    embedded: bool

    def options(self) -> dict[str, Any]:
        """The loader's options and their defaults, e.g. ``{"num_samples": 5000, "seed": 42}``."""
        return {
            p.name: p.default
            for p in inspect.signature(self.loader).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "download"
        }


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(
    name: str, *, description: str, embedded: bool
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator registering ``loader(data_dir, *, download, **options)`` under ``name``."""

    def decorate(loader: DatasetLoader) -> DatasetLoader:
        DATASETS.add(name, DatasetEntry(loader, description, embedded))
        return loader

    return decorate


def default_data_dir() -> Path:
    """``$PRUNELAB_DATA_DIR`` if set, else ``~/.cache/prunelab/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunelab" / "data"


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    **options: Any,
) -> DataBundle:
    """Load registered dataset ``name`` as a :class:`DataBundle` with every tensor on ``device``.

    Args:
        name: a registered name (case-insensitive): ``mnist1d``, ``digits``, ``cifar10``, ``cifar100``,
            ``synthetic``.
        data_dir: where downloads and caches live; default :func:`default_data_dir`.
        device: device for the returned tensors.
        download: allow network downloads of missing archives.
        **options: dataset-specific options (see ``DATASETS.get(name).options()``), and, for every
            dataset, ``validation``: hold out the last N training examples as the evaluation split
            (train on the rest, evaluate on those N; the test split is then never touched), so
            settings can be chosen without looking at test accuracy.

    Raises:
        PrunelabError: unknown dataset or option; :class:`~prunelab.errors.DataError` when the data is
            missing, corrupt or fails its checksum.
    """
    entry = DATASETS.get(name)
    holdout = options.pop("validation", None)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        choices = ", ".join(sorted(valid)) if valid else "(none)"
        raise PrunelabError(f"unknown option {unknown[0]!r} for dataset {name!r}; valid options: {choices}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    bundle = entry.loader(root, download=download, **options)
    if holdout is not None:
        bundle = validation_split(bundle, holdout)
    return bundle.to(device)


def validation_split(bundle: DataBundle, size: Any) -> DataBundle:
    """``bundle`` with its last ``size`` training examples as the evaluation split (``test_*``) and
    the rest as the training split; ``info["split"]`` records it."""
    import dataclasses

    n = as_int(size, "validation", minimum=1)
    if isinstance(bundle, StreamingBundle):
        return bundle.validation_split(n)  # by file lists: streamed inputs cannot be sliced
    total = int(bundle.train_x.shape[0])
    if n >= total:
        raise PrunelabError(f"validation={n} leaves no training examples (the training split has {total})")
    return dataclasses.replace(
        bundle,
        train_x=bundle.train_x[: total - n],
        train_y=bundle.train_y[: total - n],
        test_x=bundle.train_x[total - n :],
        test_y=bundle.train_y[total - n :],
        heldout_x=bundle.test_x,
        heldout_y=bundle.test_y,
        info={**bundle.info, "split": f"validation: the last {n} of {total} training examples"},
    )
