"""A tiny, seeded, learnable synthetic dataset for tests and smoke runs: Gaussian classes.

Each class ``k`` has a mean ``mu_k ~ N(0, separation^2 I)`` over the flattened input; an example of class
``k`` is ``mu_k + noise * N(0, I)``, reshaped to ``input_shape``. With the defaults, classes are far apart
relative to the noise, so even a linear model beats chance by a wide margin.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from prunelab.data.bundle import DataBundle
from prunelab.data.registry import register_dataset
from prunelab.errors import PrunelabError
from prunelab.options import as_int, as_shape
from prunelab.seeding import derive_seed


def _generator(seed: int, stream: str) -> torch.Generator:
    # Independent streams: changing train_size does not change the class means or the test set.
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, f"synthetic:{stream}"))
    return gen


def _sample(
    means: torch.Tensor, n: int, noise: float, shape: tuple[int, ...], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples ``(n, *shape)`` float32 with balanced labels ``(n,)`` int64 in shuffled order."""
    num_classes = means.shape[0]
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    x = means[labels] + noise * torch.randn((n, means.shape[1]), generator=gen)
    return x.reshape(n, *shape).to(torch.float32), labels.to(torch.int64)


@register_dataset(
    "synthetic",
    description="synthetic Gaussian classes of any input shape, seeded and learnable (for tests)",
    embedded=True,
)
def load_synthetic(
    data_dir: Path,
    *,
    download: bool = True,
    num_classes: int = 4,
    train_size: int = 256,
    test_size: int = 128,
    input_shape: tuple[int, ...] = (1, 16),
    seed: int = 0,
    noise: float = 1.0,
    separation: float = 1.0,
) -> DataBundle:
    """Synthetic classes on CPU: ``train_x (train_size, *input_shape)``, ``test_x (test_size, ...)``.

    Args:
        data_dir, download: unused (nothing touches the disk).
        num_classes: number of classes (>= 2); labels are balanced (round-robin) then shuffled.
        train_size / test_size: number of examples per split.
        input_shape: shape of one example, e.g. ``(1, 16)`` for sequences or ``(3, 8, 8)`` for images.
        seed: data seed; the same seed gives identical tensors.
        noise: standard deviation of the per-feature Gaussian noise.
        separation: standard deviation of the class-mean coordinates (larger = easier).
    """
    del data_dir, download
    k = as_int(num_classes, "num_classes", minimum=2)
    n_train = as_int(train_size, "train_size", minimum=1)
    n_test = as_int(test_size, "test_size", minimum=1)
    shape = as_shape(input_shape, "input_shape")
    data_seed = as_int(seed, "seed", minimum=0)
    sigma, spread = float(noise), float(separation)
    if not (sigma >= 0 and math.isfinite(sigma)) or not (spread > 0 and math.isfinite(spread)):
        raise PrunelabError(
            f"synthetic: noise must be >= 0 and separation > 0, got {noise!r}, {separation!r}"
        )
    dim = math.prod(shape)
    means = spread * torch.randn((k, dim), generator=_generator(data_seed, "means"))
    train_x, train_y = _sample(means, n_train, sigma, shape, _generator(data_seed, "train"))
    test_x, test_y = _sample(means, n_test, sigma, shape, _generator(data_seed, "test"))
    return DataBundle(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=k,
        augmentation=None,
        info={
            "source": "synthetic Gaussian classes",
            "seed": data_seed,
            "noise": sigma,
            "separation": spread,
            "input_shape": shape,
        },
    )
