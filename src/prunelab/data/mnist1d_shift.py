"""Offline distribution-shift and out-of-distribution companions of MNIST-1D, generated locally.

Both are made by the ``mnist1d`` package's own generator (``mnist1d.transform.transform``: pad, dilate,
scale, translate, correlated background noise, i.i.d. noise, shear, subsample to length 40), driven by a
loop identical to ``mnist1d.data.make_dataset`` (same seeding, class order, shuffle and 80/20 split; with
the default templates and arguments it reproduces ``make_dataset`` bit for bit, which the tests check).

``mnist1d_shift``: covariate shift. The same 10 digit templates and labels, generated with harsher
generator parameters; ``severity`` s in 1..5 scales them (MNIST-1D's values in brackets):
i.i.d. noise ``0.02 + 0.015 s`` (0.02), correlated background noise ``0.25 (1 + 0.15 s)`` (0.25), shear
``0.75 (1 + 0.2 s)`` (0.75) and amplitude-scale spread ``0.4 + 0.1 s`` (0.4). Labels keep their meaning,
so accuracy on its test split measures shift robustness. (A small MLP at 64% on MNIST-1D scores about
57 / 50 / 43 / 38 / 33% at severities 1..5.)

``mnist1d_ood``: semantic shift (near out-of-distribution). The generator and its parameters are
MNIST-1D's, but the signals come from 10 *new* 12-point templates (:data:`OOD_TEMPLATES`), written in the
digit templates' format (value 5 at both ends, processed exactly like them: whitened, shifted to start
at 0, divided by 6). They were drawn once as random smooth sine series (frequencies 1..6 over the
template, seed 0), rounded to 0.1 and kept only if their absolute correlation with every digit template
is below 0.6 and with every earlier new template below 0.8; the numbers are hard-coded so the set never
changes. Labels index the new templates (0..9) and mean nothing to a digit classifier: the set is for
OOD scores (e.g. a model trained on ``mnist1d`` should be less confident on it).

Normalisation: ``make_dataset`` standardises its output with its *own* mean and standard deviation. Both
sets here are instead standardised with the statistics of the raw MNIST-1D data (the default ``mnist1d``
dataset: 5000 samples, seed 42), i.e. the same affine map a model trained on ``mnist1d`` saw. Their own
statistics would rescale away part of the shift (more noise means a larger raw standard deviation, so
self-standardising shrinks the signal back), and would make the preprocessing depend on the test data.

Generation seeds are derived from the ``seed`` option and the dataset name (:func:`generation_seed`), so
the random draws never coincide with those of an MNIST-1D dataset (with shared draws, each shifted
example would be a distorted copy of an MNIST-1D example). Both sets are cached as plain ``.npz`` files
exactly like ``mnist1d`` (atomic writes, keyed by every generation argument).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np

from prunelab.data.bundle import DataBundle
from prunelab.data.mnist1d import (
    NUM_CLASSES,
    _read_cache,
    _write_cache,
    bundle_from_arrays,
    cache_path,
    dataset_args,
)
from prunelab.data.registry import register_dataset
from prunelab.errors import PrunelabError
from prunelab.options import as_int
from prunelab.seeding import derive_seed

#: Bump when the generation recipe changes, so old caches are not reused.
RECIPE_VERSION = 1

SEVERITIES = (1, 2, 3, 4, 5)

#: The held-out templates of ``mnist1d_ood``, in the format of ``mnist1d.data.get_templates``' raw digit
#: templates (12 points, 5 at both ends); see the module docstring for how they were drawn.
OOD_TEMPLATES: tuple[tuple[float, ...], ...] = (
    (5, 6, 5.3, 4.3, 4, 3.3, 3.2, 5.1, 6.3, 4.6, 3.1, 5),
    (5, 4.3, 5, 5.1, 3.2, 1.8, 2.7, 4, 3.9, 3.3, 3.7, 5),
    (5, 7.3, 6.3, 4.4, 4.6, 5.3, 5.3, 6, 7.3, 7.2, 5.9, 5),
    (5, 5, 5.9, 5.6, 3.6, 2.8, 3.9, 4.6, 4.7, 5.9, 6.6, 5),
    (5, 4, 4.6, 5.6, 5.6, 5.4, 6.1, 6.9, 6, 3.9, 3.3, 5),
    (5, 3.6, 3.8, 5.5, 6.3, 4.8, 3.1, 3.9, 4.8, 3.6, 2.8, 5),
    (5, 4.8, 4.3, 5.3, 7.1, 6.8, 4.8, 5.2, 7.2, 7, 5.4, 5),
    (5, 5, 5.4, 4.7, 3.3, 4.1, 6.6, 6.9, 4.9, 3.8, 4.4, 5),
    (5, 7, 6.6, 5.5, 6.2, 7.5, 7.1, 5.8, 6.3, 8, 7.9, 5),
    (5, 5.7, 6, 5.7, 5.2, 5.1, 6.1, 7.7, 8.1, 6.8, 5.4, 5),
)


def process_templates(raw: np.ndarray) -> np.ndarray:
    """Raw templates ``(K, 12)`` processed as ``get_templates`` does its digits: whiten each, shift it to
    start at 0, divide by 6. Returns ``(K, 12)`` float64."""
    x = np.array(raw, dtype=np.float64)
    x -= x.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return x / 6.0


def digit_templates() -> dict[str, np.ndarray]:
    """MNIST-1D's templates: ``{"x": (10, 12), "t": (12,), "y": (10,)}``."""
    from mnist1d.data import get_templates  # imported lazily: the package pulls in matplotlib

    templates: dict[str, np.ndarray] = get_templates()
    return templates


def ood_templates() -> dict[str, np.ndarray]:
    """The held-out templates in ``get_templates``' format: ``{"x": (10, 12), "t": (12,), "y": (10,)}``."""
    return {
        "x": process_templates(np.asarray(OOD_TEMPLATES)),
        "t": digit_templates()["t"],
        "y": np.arange(len(OOD_TEMPLATES)),
    }


def shift_args(severity: int) -> dict[str, Any]:
    """MNIST-1D's generator arguments with the noise, shear and scale spread of ``severity`` (1..5)."""
    s = float(severity)
    args = dataset_args()
    args["iid_noise_scale"] = 0.02 + 0.015 * s
    args["corr_noise_scale"] = 0.25 * (1.0 + 0.15 * s)
    args["shear_scale"] = 0.75 * (1.0 + 0.2 * s)
    args["scale_coeff"] = 0.4 + 0.1 * s
    return args


def generation_seed(name: str, seed: int) -> int:
    """The generator seed of dataset ``name`` for option ``seed``: derived (numpy seeds are < 2**32)."""
    return derive_seed(seed, f"{name}:generation") % (1 << 32)


def generate_raw(args: dict[str, Any], templates: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Signals ``(N, 40)`` float64 *before* standardisation and labels ``(N,)``, shuffled.

    The loop of ``mnist1d.data.make_dataset`` without its final standardisation: reseed, transform each
    template ``num_samples // K`` times in class order, shuffle, optionally permute positions. The
    global ``random`` / ``numpy`` RNG states (which the package reseeds) are restored afterwards.
    """
    from mnist1d.transform import transform
    from mnist1d.utils import ObjectView, set_seed

    view = ObjectView(dict(args))
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        set_seed(view.seed)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        per_class = view.num_samples // len(templates["y"])
        for index in range(len(templates["y"])):
            for _ in range(per_class):
                x, _t = transform(templates["x"][index], templates["t"], view)
                xs.append(x)
                ys.append(templates["y"][index])
        order = np.random.permutation(len(ys))
        signals, labels = np.stack(xs)[order], np.stack(ys)[order]
        if view.shuffle_seq:
            signals = signals[..., np.random.permutation(view.final_seq_length)]
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return signals, labels


@functools.lru_cache(maxsize=1)
def reference_statistics() -> tuple[float, float]:
    """Mean and standard deviation of the raw default MNIST-1D signals (what ``make_dataset`` divides by).

    About 2 s to compute; memoised per process, and only needed when a cache is (re)built.
    """
    signals, _ = generate_raw(dataset_args(), digit_templates())
    return float(signals.mean()), float(signals.std())


def _arrays(args: dict[str, Any], templates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Generate, standardise with MNIST-1D's statistics and split 80/20 like ``make_dataset``."""
    signals, labels = generate_raw(args, templates)
    mean, std = reference_statistics()
    signals = (signals - mean) / std
    split = int(len(labels) * args["train_split"])
    return {"x": signals[:split], "y": labels[:split], "x_test": signals[split:], "y_test": labels[split:]}


def _load(
    name: str,
    data_dir: Path,
    args: dict[str, Any],
    templates: dict[str, np.ndarray],
    key: dict[str, Any],
    info: dict[str, object],
) -> DataBundle:
    """Read or build the cache for ``args`` + ``key`` and wrap it like ``mnist1d`` does."""
    identity = {**args, **key, "dataset": name, "recipe": RECIPE_VERSION}
    path = cache_path(Path(data_dir) / name, identity)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _arrays(args, templates)
        _write_cache(path, arrays)

    return bundle_from_arrays(
        name,
        arrays,
        {
            "source": "mnist1d generator (generated locally); see prunelab.data.mnist1d_shift",
            "args": args,
            "cache": str(path),
            "standardisation": "raw MNIST-1D statistics (mnist1d defaults: 5000 samples, seed 42)",
            "mean": None,
            "std": None,
            "pixel_bounds": None,
            **info,
        },
    )


@register_dataset(
    "mnist1d_shift",
    description="MNIST-1D under covariate shift: harsher noise/shear/scale, severity 1..5 (generated locally)",
    embedded=True,
)
def load_mnist1d_shift(
    data_dir: Path, *, download: bool = True, severity: int = 3, num_samples: int = 5000, seed: int = 0
) -> DataBundle:
    """Shifted MNIST-1D on CPU: ``train_x (0.8 N, 1, 40)``, ``test_x (0.2 N, 1, 40)`` float32, labels 0..9.

    Evaluate a model trained on ``mnist1d`` on the test split. ``download`` is ignored.

    Args:
        data_dir: the cache goes in ``data_dir / "mnist1d_shift"``.
        severity: 1 (mild) .. 5 (harsh); see the module docstring for the generator parameters.
        num_samples: total examples generated (``num_samples // 10`` per class).
        seed: sample seed (the generator seed is derived from it, never equal to MNIST-1D's).
    """
    del download  # generated locally
    level = as_int(severity, "severity", minimum=1)
    if level not in SEVERITIES:
        raise PrunelabError(f"mnist1d_shift severity must be one of 1, 2, 3, 4, 5, got {severity!r}")
    n = as_int(num_samples, "num_samples", minimum=NUM_CLASSES)
    sample_seed = as_int(seed, "seed", minimum=0)
    args = shift_args(level)
    args["num_samples"] = n
    args["seed"] = generation_seed("mnist1d_shift", sample_seed)
    return _load(
        "mnist1d_shift",
        data_dir,
        args,
        digit_templates(),
        {"severity": level},
        {"severity": level, "seed": sample_seed, "generation_seed": args["seed"], "labels": "digits 0..9"},
    )


@register_dataset(
    "mnist1d_ood",
    description="MNIST-1D-style signals from 10 held-out templates, for OOD scores (generated locally)",
    embedded=True,
)
def load_mnist1d_ood(
    data_dir: Path, *, download: bool = True, num_samples: int = 5000, seed: int = 0
) -> DataBundle:
    """Out-of-distribution MNIST-1D on CPU: shapes as ``mnist1d``; labels 0..9 index the new templates.

    ``download`` is ignored.

    Args:
        data_dir: the cache goes in ``data_dir / "mnist1d_ood"``.
        num_samples: total examples generated (``num_samples // 10`` per template).
        seed: sample seed (the generator seed is derived from it, never equal to MNIST-1D's).
    """
    del download  # generated locally
    n = as_int(num_samples, "num_samples", minimum=NUM_CLASSES)
    sample_seed = as_int(seed, "seed", minimum=0)
    args = dataset_args(n, generation_seed("mnist1d_ood", sample_seed))
    return _load(
        "mnist1d_ood",
        data_dir,
        args,
        ood_templates(),
        {"templates": [list(t) for t in OOD_TEMPLATES]},
        {
            "seed": sample_seed,
            "generation_seed": args["seed"],
            "labels": "index of the held-out template (not a digit): meaningless for accuracy",
        },
    )
