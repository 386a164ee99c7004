"""Seconds per epoch of K runs trained packed (one model, :mod:`prunelab.training.packed`) against
the same K runs trained one after another with the solo trainer (``prunelab.training.trainer.train``).

Cases (``--cases``): the MNIST-1D MLP (``mlp``), the demo's 1-D CNN (``cnn1d``, 64 channels, BN) on
MNIST-1D-shaped data ``(1, 40)``, 10 classes, and ResNet-20 (``resnet20``) on CIFAR-shaped data
``(3, 32, 32)``. The data are random tensors of those shapes (no download; the work per step does
not depend on the values). Each member is a run of its own: its own initialisation (seed k), a
random mask at density 0.2 (as the demo's pruned runs), its own data order; the recipe is the
demo's (SGD, momentum 0.9, weight decay 5e-4, batch 128, cosine lr 0.1). An epoch is what the
trainer counts in ``EpochRecord.seconds``: every training step and the evaluation on the test split.

For each case and K (``--members``, default 1 4 8 16): the K solo runs train ``--epochs`` epochs each,
one after another, then the K runs train packed for as many epochs; the table gives seconds per
epoch of all K runs both ways (wall clock, and process CPU time, which a busy machine inflates
less), and the speed-up (sequential / packed, wall). Packing builds and probes the packed model
once per pack; that set-up is included in the packed time. One untimed tiny measurement per case
warms the kernels up first.

Run: ``.venv/bin/python bench/packed.py`` (``--quick``: K 1 and 4, 1 epoch, small data; see
``--help``). Writes ``bench/results/packed.json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

import prunelab
from _common import add_common_arguments, print_table, random_bundle, start, write_json
from prunelab.models import build_model
from prunelab.training.config import TrainConfig
from prunelab.training.packed import CONV_MODES, Member, train_packed
from prunelab.training.trainer import train

#: case -> (model name, model options, input shape, classes, default train size, default test size)
CASES: dict[str, tuple[str, dict[str, Any], tuple[int, ...], int, int, int]] = {
    "mlp": ("mlp", {}, (1, 40), 10, 4000, 1000),
    "cnn1d": ("cnn1d", {"channels": 64, "bn": True}, (1, 40), 10, 4000, 1000),
    "resnet20": ("resnet20", {}, (3, 32, 32), 10, 1024, 256),
}


def _clock(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    case: str,
    members: int,
    *,
    epochs: int = 1,
    train_size: int | None = None,
    test_size: int | None = None,
    batch_size: int = 128,
    conv: str = "auto",
    device: torch.device | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per epoch of ``members`` runs of ``case``, sequential and packed.

    Returns ``{case, members, epochs, sequential_s, packed_s, sequential_cpu_s, packed_cpu_s,
    speedup, max_test_acc_diff}``: seconds (wall, and process CPU) per epoch of all the runs, the
    speed-up (sequential / packed, wall) and the largest difference in final test accuracy
    between a run trained solo and packed (fractions); ``packed_images_per_s``: training images
    per second summed over the pack (the epoch's evaluation included in the time).
    """
    device = device or torch.device("cpu")
    name, options, shape, classes, default_train, default_test = CASES[case]
    data = random_bundle(shape, classes, train_size or default_train, test_size or default_test, seed, device)
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=0.1, weight_decay=5e-4, schedule="cosine", augment=False
    )
    models, masks = [], []
    for k in range(members):
        model = build_model(name, shape, classes, seed=seed + k, **options).to(device)
        masks.append(prunelab.prune(model, "random", 0.2, seed=seed + k))
        models.append(model)

    solo_acc: list[float] = []

    def sequential() -> None:
        for k in range(members):
            run = copy.deepcopy(models[k])
            history = train(run, data, config, mask=masks[k], generator=torch.Generator().manual_seed(k))
            solo_acc.append(history.final_test_acc)

    packed_acc: list[float] = []

    def packed() -> None:
        runs = [
            Member(copy.deepcopy(models[k]), data, masks[k], torch.Generator().manual_seed(k))
            for k in range(members)
        ]
        packed_acc.extend(r.final_test_acc for r in train_packed(runs, config, conv=conv))

    seq_wall, seq_cpu = _clock(sequential)
    pack_wall, pack_cpu = _clock(packed)
    return {
        "case": case,
        "members": members,
        "epochs": epochs,
        "sequential_s": seq_wall / epochs,
        "packed_s": pack_wall / epochs,
        "sequential_cpu_s": seq_cpu / epochs,
        "packed_cpu_s": pack_cpu / epochs,
        "speedup": seq_wall / pack_wall if pack_wall > 0 else float("nan"),
        "packed_images_per_s": members * data.train_x.shape[0] * epochs / pack_wall
        if pack_wall > 0
        else float("nan"),
        "max_test_acc_diff": max(abs(a - b) for a, b in zip(solo_acc, packed_acc, strict=True)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "packed")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--members", nargs="+", type=int, default=[1, 4, 8, 16], help="pack sizes K")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    parser.add_argument("--train-size", type=int, default=None, help="training examples (default per case)")
    parser.add_argument("--conv", choices=CONV_MODES, default="auto", help="packed convolution kernel")
    parser.add_argument("--quick", action="store_true", help="K 1 and 4, 1 epoch, a quarter of the data")
    args = parser.parse_args(argv)
    device, env = start(args)
    members = [1, 4] if args.quick else args.members
    rows, records = [], []
    for case in args.cases:
        train_size = args.train_size
        if args.quick and train_size is None:
            train_size = CASES[case][4] // 4
        # Untimed warm-up: the first training in a process pays for kernel set-up (~1-2 s on CPU).
        measure(case, 2, train_size=64, test_size=32, conv=args.conv, device=device, seed=args.seed)
        for k in members:
            record = measure(
                case,
                k,
                epochs=1 if args.quick else args.epochs,
                train_size=train_size,
                conv=args.conv,
                device=device,
                seed=args.seed,
            )
            records.append(record)
            rows.append(
                [
                    case,
                    k,
                    f"{record['sequential_s']:.3f}",
                    f"{record['packed_s']:.3f}",
                    f"{record['sequential_cpu_s']:.3f}",
                    f"{record['packed_cpu_s']:.3f}",
                    f"{record['speedup']:.2f}x",
                    f"{record['packed_images_per_s']:.0f}",
                    f"{record['max_test_acc_diff']:.3f}",
                ]
            )
            print(
                f"{case} K={k}: {record['sequential_s']:.3f} s sequential, {record['packed_s']:.3f} s packed"
            )
    print()
    print_table(
        [
            "case",
            "K",
            "seq s/epoch",
            "packed s/epoch",
            "seq cpu s",
            "packed cpu s",
            "speed-up",
            "packed img/s",
            "max |dacc|",
        ],
        rows,
    )
    path = write_json(args.name, {"environment": env, "conv": args.conv, "results": records})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
