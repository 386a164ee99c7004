"""Named training recipes, in one home: the papers' SGD recipes as :class:`TrainConfig` values.

A spec may name one wherever it takes a recipe: ``train: random_pruning`` in YAML, or
``train: {recipe: random_pruning, epochs: 10}`` to start from it and change some fields
(``--set train.recipe=random_pruning`` on the CLI).
"""

from __future__ import annotations

from prunelab.training.config import TrainConfig

#: Su et al. 2020 (``baseline.py``): 160 epochs, batch 64, lr 0.1 x0.1 at 50% / 75%, weight decay 1e-4.
SU_CIFAR = TrainConfig()

#: Random_Pruning's CIFAR recipe (``CIFAR/main.py``; the paper's Table 1): 160 epochs, batch 128,
#: lr 0.1, Nesterov momentum 0.9, weight decay 5e-4 on every parameter, x0.1 at int(E/2) and int(3E/4).
RANDOM_PRUNING_CIFAR = TrainConfig(
    epochs=160, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, milestones=(0.5, 0.75)
)

#: Random_Pruning's ImageNet code (``ImageNet/main.py``): 4 x 192 images per step, lr 0.4, momentum 0.9
#: (no Nesterov), 5 epochs of linear warm-up, label smoothing 0.1, weight decay 1e-4 except on BN
#: ("bn" in the name), x0.1 at epochs 30, 60 and 80 as ``adjust_learning_rate`` hard-codes them (the
#: paper's table says 90 epochs dense, 100 sparse with [30, 60, 90]).
RANDOM_PRUNING_IMAGENET = TrainConfig(
    epochs=90,
    batch_size=768,
    lr=0.4,
    momentum=0.9,
    weight_decay=1e-4,
    milestone_epochs=(30, 60, 80),
    warmup_epochs=5,
    label_smoothing=0.1,
    weight_decay_exclude="norm",
)

#: Rethinking (Liu et al. 2019) ImageNet protocol: 90 epochs, batch 256, lr 0.1 x0.1 every 30 epochs,
#: weight decay 1e-4, momentum 0.9 (the PyTorch ImageNet example their scripts follow).
RETHINKING_IMAGENET = TrainConfig(
    epochs=90, batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, milestone_epochs=(30, 60)
)

RECIPES: dict[str, TrainConfig] = {
    "su": SU_CIFAR,
    "random_pruning": RANDOM_PRUNING_CIFAR,
    "random_pruning_imagenet": RANDOM_PRUNING_IMAGENET,
    "rethinking_imagenet": RETHINKING_IMAGENET,
}
