"""What moves a mask: IoU between masks that differ in one scoring detail, against the noise floor.

Every comparison prunes the same initialisation twice with the same run seed, changing one thing:

- ``snip bn_mode``: BatchNorm in train mode (batch statistics, prunelab's default and the reference
  code's) vs eval mode (running statistics, 0/1 at init) while scoring.
- ``grasp reinit_linear``: GraSP scored as is (prunelab's default) vs with the linear layers of the
  scoring copy redrawn with ``xavier_normal`` (the reference code's ``reinit=True``).
- ``synflow float64``: the 100 rounds in float32 (default) vs float64.
- ``synflow count_rule``: each round keeps ``round(d_r N)`` (default) vs ``N - int((1 - d_r) N)``.
- ``synflow tie_rule``: exactly that many kept, ties to the earlier layer and lower index (default),
  vs every weight at or below the round's threshold pruned (SynFlow's code).
- ``synflow both rules``: the two SynFlow-code rules together.

Reference rows give the noise floor: the same method and initialisation with another run seed
(SNIP, GraSP: another scoring sample; random: an independent draw, expected IoU ``d / (2 - d)``).
Masks are computed once per (method, options, seeds) and shared between rows.

IoU = |A and B| / |A or B| over all prunable weights; ``layer shift`` = sum over layers of
``|kept_A - kept_B|`` / (2 N): the part of the change that is a change of per-layer budgets rather
than of positions. Each comparison runs for ``--seeds`` initialisations (seed, seed+1, ...).

Default: ResNet-20 (width 16) on the bundled 8x8 digits (10 classes, offline), density 0.1,
SNIP/GraSP on 10 examples per class, SynFlow 100 rounds.

Run: ``.venv/bin/python bench/mask_sensitivity.py`` (see ``--help``). Writes
``bench/results/mask_sensitivity.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

import prunelab
from _common import add_common_arguments, print_table, start, write_json
from prunelab.pruning import Mask, PruningWarning


@dataclass(frozen=True)
class Comparison:
    """Two prune() calls on the same initialisation: ``a`` and ``b`` options, ``b_seed_offset``
    added to the run seed of ``b`` (0: same seed, the option alone differs)."""

    label: str
    method: str
    a: dict[str, Any] = field(default_factory=dict)
    b: dict[str, Any] = field(default_factory=dict)
    b_seed_offset: int = 0


COMPARISONS = (
    Comparison("snip bn_mode train vs eval", "snip", {}, {"bn_mode": "eval"}),
    Comparison("grasp reinit_linear no vs yes", "grasp", {}, {"reinit_linear": True}),
    Comparison("synflow float32 vs float64", "synflow", {}, {"float64": True}),
    Comparison("synflow count_rule nearest vs prune_floor", "synflow", {}, {"count_rule": "prune_floor"}),
    Comparison("synflow tie_rule index vs prune_ties", "synflow", {}, {"tie_rule": "prune_ties"}),
    Comparison(
        "synflow default vs both SynFlow-code rules",
        "synflow",
        {},
        {"count_rule": "prune_floor", "tie_rule": "prune_ties"},
    ),
    Comparison("[floor] snip, other scoring sample", "snip", b_seed_offset=1000),
    Comparison("[floor] grasp, other scoring sample", "grasp", b_seed_offset=1000),
    Comparison("[floor] random, independent draw", "random", b_seed_offset=1000),
)


def iou(a: Mask, b: Mask) -> float:
    """|A and B| / |A or B| over all layers (1.0 for two empty masks)."""
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return inter / union if union else 1.0


def layer_shift(a: Mask, b: Mask) -> float:
    """Sum of per-layer |kept_A - kept_B| over 2N: 0 when only positions differ."""
    ca, cb = a.counts(), b.counts()
    return sum(abs(ca[n] - cb[n]) for n in ca) / (2 * a.num_total)


def build(
    args: argparse.Namespace, init_seed: int, data: prunelab.DataBundle, device: torch.device
) -> torch.nn.Module:
    """A fresh model of ``args.model`` for ``data``, initialised from ``init_seed``."""
    options = {"width": args.width} if args.width is not None else {}
    model = prunelab.build_model(args.model, data.input_shape, data.num_classes, seed=init_seed, **options)
    return model.to(device)


class Masks:
    """prune() results keyed by (method, options, init seed, run seed), each computed once."""

    def __init__(self, args: argparse.Namespace, data: prunelab.DataBundle, device: torch.device) -> None:
        self.args, self.data, self.device = args, data, device
        self.cache: dict[tuple[str, str, int, int], Mask] = {}

    def get(self, method: str, options: dict[str, Any], init_seed: int, run_seed: int) -> Mask:
        key = (method, json.dumps(options, sort_keys=True), init_seed, run_seed)
        if key not in self.cache:
            extra: dict[str, Any] = dict(options)
            if method in ("snip", "grasp"):
                extra.setdefault("samples_per_class", self.args.per_class)
            if method == "synflow":
                extra.setdefault("rounds", self.args.rounds)
            model = build(self.args, init_seed, self.data, self.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PruningWarning)  # collapse is counted, not fatal, here
                self.cache[key] = prunelab.prune(
                    model, method, self.args.density, data=self.data, seed=run_seed, options=extra
                )
        return self.cache[key]


def run(args: argparse.Namespace, data: prunelab.DataBundle, device: torch.device) -> list[dict[str, Any]]:
    results = []
    masks = Masks(args, data, device)
    for comparison in COMPARISONS:
        if comparison.method not in args.method_list:
            continue
        began = time.perf_counter()
        ious, shifts, empty = [], [], []
        for seed in range(args.seed, args.seed + args.seeds):
            a = masks.get(comparison.method, comparison.a, seed, seed)
            b = masks.get(comparison.method, comparison.b, seed, seed + comparison.b_seed_offset)
            ious.append(iou(a, b))
            shifts.append(layer_shift(a, b))
            empty.append([len(a.empty_layers()), len(b.empty_layers())])
        results.append(
            {
                "comparison": comparison.label,
                "method": comparison.method,
                "a_options": comparison.a,
                "b_options": comparison.b,
                "b_seed_offset": comparison.b_seed_offset,
                "iou": ious,
                "iou_mean": statistics.fmean(ious),
                "iou_min": min(ious),
                "layer_shift": shifts,
                "layer_shift_mean": statistics.fmean(shifts),
                "empty_layers_a_b": empty,
                "seconds": time.perf_counter() - began,
            }
        )
        print(f"  {comparison.label}: IoU {statistics.fmean(ious):.4f} ({time.perf_counter() - began:.1f} s)")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--width", type=int, default=None, help="model option width (default: the model's)")
    parser.add_argument("--dataset", default="digits", help="an offline dataset (digits, mnist1d, synthetic)")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--per-class", type=int, default=10, help="SNIP/GraSP scoring examples per class")
    parser.add_argument("--rounds", type=int, default=100, help="SynFlow rounds")
    parser.add_argument("--seeds", type=int, default=3, help="initialisations per comparison")
    parser.add_argument("--methods", default="snip,grasp,synflow,random", help="comparisons of these methods")
    add_common_arguments(parser, "mask_sensitivity")
    args = parser.parse_args(argv)
    args.method_list = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, env = start(args)
    data = prunelab.load_dataset(args.dataset).to(device)
    print(
        f"Mask sensitivity: {args.model} on {args.dataset} {tuple(data.input_shape)}, density {args.density}, "
        f"{args.seeds} seed(s), device {device}, {env['torch_threads']} threads"
    )
    began = time.perf_counter()
    results = run(args, data, device)
    total = time.perf_counter() - began
    print()
    rows = [
        [
            r["comparison"],
            f"{r['iou_mean']:.4f}",
            f"{r['iou_min']:.4f}",
            f"{r['layer_shift_mean']:.4f}",
            f"{r['seconds']:.1f}",
        ]
        for r in results
    ]
    print_table(["comparison (A vs B)", "IoU mean", "IoU min", "layer shift", "s (new masks)"], rows)
    print(f"\ntotal {total:.1f} s")
    path = write_json(
        args.name,
        {
            "benchmark": "mask_sensitivity",
            "environment": env,
            "model": args.model,
            "width": args.width,
            "dataset": args.dataset,
            "input_shape": list(data.input_shape),
            "density": args.density,
            "samples_per_class": args.per_class,
            "synflow_rounds": args.rounds,
            "seeds": list(range(args.seed, args.seed + args.seeds)),
            "seconds_total": total,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
