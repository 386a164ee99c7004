"""Global selection at scale: how long one global allocation takes on VGG-19-sized scores, and one
SynFlow mask (100 rounds, each ending in a global selection) on the full VGG-19.

Two ways to turn scores into the global mask, which keep exactly the same weights (tested in
``tests/test_allocation.py``):

- ``counts + per-layer top-k``: the global rule's per-layer counts, then each layer's top-``count``
  (what prunelab did before: a second selection per layer, on every SynFlow round);
- ``one threshold``: the ``round(d N)``-th largest score once (from the short end), then every layer
  cut by comparison (:func:`prunelab.pruning.allocation.allocate_mask`).

Run: ``.venv/bin/python bench/global_select.py [--quick]``. Writes ``bench/results/global_select.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import prunelab
from _common import add_common_arguments, median, print_table, start, timed, write_json
from prunelab.pruning.allocation import allocate, allocate_mask, select_top
from prunelab.pruning.prunable import prunable_layers

INPUT_SHAPE = (3, 32, 32)


def selection_times(
    model_name: str, densities: list[float], repeats: int, device: torch.device
) -> list[dict[str, Any]]:
    """Seconds of one global selection per density, both ways, on random scores of ``model_name``'s
    prunable weights (float64, as the global rule ranks them)."""
    model = prunelab.build_model(model_name, INPUT_SHAPE, 10, seed=0).to(device)
    layers = prunable_layers(model)
    gen = torch.Generator().manual_seed(0)
    scores = {l.name: torch.rand(l.shape, generator=gen, dtype=torch.float64).to(device) for l in layers}
    rows = []
    for density in densities:
        per_layer = [
            timed(
                lambda d=density: select_top(layers, scores, allocate(layers, d, "global", scores=scores)),
                device,
            )
            for _ in range(repeats)
        ]
        threshold = [
            timed(lambda d=density: allocate_mask(layers, d, "global", scores=scores), device)
            for _ in range(repeats)
        ]
        rows.append(
            {
                "model": model_name,
                "weights": sum(l.numel for l in layers),
                "density": density,
                "per_layer_topk_s": median(per_layer),
                "threshold_s": median(threshold),
                "speedup": median(per_layer) / median(threshold),
            }
        )
    return rows


def synflow_seconds(model_name: str, rounds: int, device: torch.device) -> float:
    """Seconds of one SynFlow mask (``rounds`` rounds) at density 0.02 on a fresh model."""
    model = prunelab.build_model(model_name, INPUT_SHAPE, 10, seed=0).to(device)
    return timed(lambda: prunelab.prune(model, "synflow", 0.02, options={"rounds": rounds}), device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--rounds", type=int, default=100, help="SynFlow rounds (its paper's 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="resnet20, 10 rounds, 1 repeat")
    add_common_arguments(parser, "global_select")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.rounds, args.repeats = "resnet20", 10, 1
    device, env = start(args)
    rows = selection_times(args.model, [0.9, 0.5, 0.1, 0.02], args.repeats, device)
    print_table(
        ["model", "weights", "density", "counts + per-layer top-k (s)", "one threshold (s)", "speed-up"],
        [
            [
                r["model"],
                f"{r['weights']:,}",
                f"{r['density']:g}",
                f"{r['per_layer_topk_s']:.3f}",
                f"{r['threshold_s']:.3f}",
                f"{r['speedup']:.2f}x",
            ]
            for r in rows
        ],
    )
    synflow = synflow_seconds(args.model, args.rounds, device)
    print(f"SynFlow, {args.rounds} rounds, {args.model}, density 0.02: {synflow:.1f} s per mask")
    write_json(
        "global_select",
        {"environment": env, "selection": rows, "synflow_seconds": synflow, "rounds": args.rounds},
    )


if __name__ == "__main__":
    main()
