"""Time to compute each method's pruning mask for ResNet-20 on CIFAR-shaped data, against one epoch.

The data is a ``DataBundle`` of random tensors shaped like CIFAR-10 (train 5,000 x 3x32x32 standard
normal, labels uniform over 10 classes; a small test split), built directly: no download. For each
method the clock covers one ``prunelab.prune(model, method, density, data=bundle)`` call on a
freshly built model (SNIP and GraSP draw 10 examples per class from the bundle; SynFlow runs its
default 100 rounds). Fast methods are timed ``--repeats`` times and the median reported; methods
whose first call takes longer than ``--repeat-below`` seconds are timed once.

The epoch is estimated, not run: a few training steps at batch 64 are timed, written as the
trainer's inner loop writes them (forward, cross-entropy, backward, ``mask_grads``, SGD step,
``apply_weights``, with a density-0.1 random mask), and the median step time is scaled to
50,000 / 64 = 781.25 steps (one CIFAR-10 training epoch; evaluation excluded).

Run: ``.venv/bin/python bench/mask_time.py`` (see ``--help``). Writes ``bench/results/mask_time.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import prunelab
from _common import (
    add_common_arguments,
    median,
    print_table,
    random_bundle,
    start,
    timed,
    write_json,
)
from prunelab.training.trainer import MaskEnforcer, make_optimizer

CIFAR_TRAIN = 50_000
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
METHOD_NAMES = ("random", "magnitude", "snip", "grasp", "synflow")


def seconds_per_step(
    bundle: prunelab.DataBundle, args: argparse.Namespace, device: torch.device
) -> tuple[float, list[float]]:
    """Median seconds of one masked training step at ``args.batch`` (trainer's inner loop)."""
    model = prunelab.build_model(args.model, INPUT_SHAPE, NUM_CLASSES, seed=args.seed).to(device)
    mask = prunelab.prune(model, "random", args.density, seed=args.seed)
    optimizer = make_optimizer(model, prunelab.TrainConfig(batch_size=args.batch))
    enforcer = MaskEnforcer(model, mask, optimizer)
    enforcer.apply_weights()
    enforcer.clear_state()
    model.train()
    gen = torch.Generator().manual_seed(args.seed)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield from bundle.train_batches(args.batch, gen, augment=False, drop_last=True)

    stream = batches()

    def steps(n: int) -> None:
        for _ in range(n):
            x, y = next(stream)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            enforcer.mask_grads()
            optimizer.step()
            enforcer.apply_weights()

    steps(args.warmup)
    per_step = [
        timed(lambda: steps(args.epoch_steps), device) / args.epoch_steps for _ in range(args.epoch_repeats)
    ]
    return median(per_step), per_step


def time_method(
    method: str, bundle: prunelab.DataBundle, args: argparse.Namespace, device: torch.device
) -> list[float]:
    """Seconds of ``prune()`` calls for ``method``, each on a freshly built model."""
    times: list[float] = []
    while len(times) < args.repeats:
        model = prunelab.build_model(args.model, INPUT_SHAPE, NUM_CLASSES, seed=args.seed).to(device)
        call = partial(prunelab.prune, model, method, args.density, data=bundle, seed=args.seed)
        times.append(timed(call, device))
        if times[0] > args.repeat_below:
            break
    return times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHOD_NAMES), help="comma-separated method names")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=5000, help="examples in the random train split")
    parser.add_argument("--repeats", type=int, default=3, help="timed prune() calls per fast method (median)")
    parser.add_argument(
        "--repeat-below",
        type=float,
        default=5.0,
        help="methods whose first call takes longer (s) are timed once",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--epoch-steps", type=int, default=5, help="training steps per timed repeat")
    parser.add_argument("--epoch-repeats", type=int, default=5, help="timed repeats of the training steps")
    add_common_arguments(parser, "mask_time")
    args = parser.parse_args(argv)
    args.method_list = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    for m in args.method_list:
        prunelab.METHODS.get(m)  # unknown names fail here with the registry's message
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, env = start(args)
    bundle = random_bundle(INPUT_SHAPE, NUM_CLASSES, args.train_size, 500, args.seed, device, "cifar-shaped")

    step_s, step_all = seconds_per_step(bundle, args, device)
    epoch_steps = CIFAR_TRAIN / args.batch
    epoch_s = step_s * epoch_steps

    results: list[dict[str, Any]] = []
    for method in args.method_list:
        times = time_method(method, bundle, args, device)
        results.append(
            {
                "method": method,
                "seconds": median(times),
                "seconds_all": times,
                "fraction_of_epoch": median(times) / epoch_s,
                "options": prunelab.METHODS.get(method).resolve_options(None),
            }
        )

    print(
        f"\nMask computation, {args.model} on CIFAR-shaped random data, density {args.density}, "
        f"device {device}, {env['torch_threads']} threads, torch {env['torch']}, malloc {args.malloc}"
    )
    print(
        f"One CIFAR-10 epoch (estimated): {1e3 * step_s:.1f} ms/step (median of {args.epoch_repeats} x "
        f"{args.epoch_steps} masked steps at batch {args.batch}) x {epoch_steps:g} steps = {epoch_s:.1f} s "
        f"(evaluation excluded)\n"
    )
    rows = [
        [
            r["method"],
            len(r["seconds_all"]),
            f"{r['seconds']:.3f}",
            f"{r['fraction_of_epoch']:.2e}",
            f"{100 * r['fraction_of_epoch']:.3g}%",
        ]
        for r in results
    ]
    print_table(["method", "calls", "seconds", "fraction of epoch (est.)", "% of epoch"], rows)
    path = write_json(
        args.name,
        {
            "benchmark": "mask_time",
            "environment": env,
            "model": args.model,
            "density": args.density,
            "data": {"name": bundle.name, "train": args.train_size, "input_shape": list(INPUT_SHAPE)},
            "epoch_estimate": {
                "batch": args.batch,
                "ms_per_step": 1e3 * step_s,
                "ms_per_step_all": [1e3 * s for s in step_all],
                "steps_per_epoch": epoch_steps,
                "seconds": epoch_s,
                "how": "median masked trainer step x 50000/batch; evaluation excluded",
            },
            "results": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
