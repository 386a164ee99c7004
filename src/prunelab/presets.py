"""Per-dataset defaults: the model and training recipe a command uses when none is given.

CIFAR uses Su et al.'s recipe (160 epochs, batch 64, lr 0.1 decayed at 50%/75%, weight decay 1e-4)
with VGG-19; the embedded datasets use short recipes that finish in seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunelab.training.config import TrainConfig


@dataclass(frozen=True)
class Preset:
    model: str
    train: TrainConfig


_SMALL = TrainConfig(epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine", augment=False)

PRESETS: dict[str, Preset] = {
    "mnist1d": Preset("mlp", _SMALL),
    "digits": Preset("cnn2d", _SMALL),
    "synthetic": Preset(
        "mlp", TrainConfig(epochs=5, batch_size=32, lr=0.05, schedule="cosine", augment=False)
    ),
    "cifar10": Preset("vgg19", TrainConfig()),
    "cifar100": Preset("vgg19", TrainConfig()),
}


def preset_for(dataset: str) -> Preset:
    """The dataset's preset, or the paper recipe with an MLP for datasets without one."""
    return PRESETS.get(dataset.lower(), Preset("mlp", TrainConfig()))
