"""What structured pruning buys at inference: unpruned vs physically pruned networks, measured.

For each predefined L1-norm configuration (``--configs``, default VGG-16-A and ResNet-56-B of Li et
al. 2017, as coded by Liu et al. 2019), the unpruned network (``build_model(config.model, ...,
**config.base_options)``: the Rethinking VGG-16 head, option-A ResNet shortcuts) and the pruned one
(the same plus ``config.pruned_options(full)``, i.e. narrower convs built from the model options) are
compared on CIFAR-shaped input (3x32x32, 10 classes) with
:func:`prunelab.evaluation.latency.compare_models`:

* parameters and FLOPs (:func:`prunelab.evaluation.flops.count_flops`, Liu et al.'s counter, one
  example), the FLOPs reduction and the FLOP ratio full/pruned (the speedup FLOPs promise);
* forward latency per batch (eval mode, ``torch.no_grad``): after warm-up, ``--repeats`` repeats of
  enough forwards to last ``--min-repeat-ms``, the two models alternating repeat by repeat; median and
  interquartile range over repeats, throughput = batch / median, speedup = full median / pruned median.

Runs on ``--device`` (CPU by default) and, when CUDA is available and ``--cuda`` is not ``off``, also
on CUDA at ``--cuda-batch-sizes`` (synchronised around every timed region). Weights are random: speed
does not depend on their values.

Run: ``.venv/bin/python bench/structured_speed.py`` (see ``--help``). Writes
``bench/results/structured_speed.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import torch

import prunelab
from _common import add_common_arguments, print_table, start, write_json
from prunelab.evaluation.latency import ComparisonRow, compare_models
from prunelab.pruning.structured.configs import PREDEFINED

CIFAR = (3, 32, 32)
CLASSES = 10

#: An interquartile range above this fraction of the median marks a timing as noisy.
NOISY_IQR = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="vgg16-a,resnet56-b", help="comma-separated predefined configs")
    parser.add_argument("--batch-sizes", default="1,16,64", help="batch sizes on --device")
    parser.add_argument(
        "--cuda", choices=("auto", "off"), default="auto", help="also measure on CUDA if present"
    )
    parser.add_argument("--cuda-batch-sizes", default="1,64,256,1024", help="batch sizes on CUDA")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per model and batch size")
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats (median and IQR over them)")
    parser.add_argument("--min-repeat-ms", type=float, default=50.0, help="minimum length of one repeat")
    add_common_arguments(parser, "structured_speed")
    args = parser.parse_args(argv)
    args.config_list = [c.strip().lower() for c in args.configs.split(",") if c.strip()]
    for name in args.config_list:
        PREDEFINED.get(name)  # unknown names fail here with the registry's message
    args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.cuda_batch_list = [int(b) for b in args.cuda_batch_sizes.split(",") if b.strip()]
    return args


def build_pair(config_name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """The unpruned network of ``config_name`` and its pruned architecture, plus the options used."""
    config = PREDEFINED.get(config_name)
    base = dict(config.base_options)
    full = prunelab.build_model(config.model, CIFAR, CLASSES, seed=seed, **base)
    pruned_options = {**base, **config.pruned_options(full)}
    pruned = prunelab.build_model(config.model, CIFAR, CLASSES, seed=seed, **pruned_options)
    return full, pruned, {"model": config.model, "base_options": base, "pruned_options": pruned_options}


def row_cells(config: str, model: str, row: ComparisonRow) -> list[object]:
    return [
        f"{model} vs {config}",
        row.device,
        row.batch_size,
        f"{row.params_full / 1e6:.3f}M / {row.params_pruned / 1e6:.3f}M",
        f"{row.flops_full / 1e6:.1f}M / {row.flops_pruned / 1e6:.1f}M",
        f"{100 * row.flops_reduction:.1f}%",
        f"{row.flops_full / row.flops_pruned:.2f}x",
        f"{row.full.median_ms:.3f} ({row.full.iqr_ms:.3f})",
        f"{row.pruned.median_ms:.3f} ({row.pruned.iqr_ms:.3f})",
        f"{row.full.throughput:,.0f} / {row.pruned.throughput:,.0f}",
        f"{row.speedup:.2f}x",
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, env = start(args)
    runs = [(device, args.batch_list)]
    if args.cuda == "auto" and device.type == "cpu" and torch.cuda.is_available():
        runs.append((torch.device("cuda"), args.cuda_batch_list))
        env["cuda_device"] = torch.cuda.get_device_name(0)
    results: list[dict[str, Any]] = []
    cells: list[list[object]] = []
    for config_name in args.config_list:
        full, pruned, options = build_pair(config_name, args.seed)
        for dev, batches in runs:
            print(
                f"timing {options['model']} vs {config_name} on {dev} at batch sizes {batches} ...",
                flush=True,
            )
            rows = compare_models(
                full,
                pruned,
                CIFAR,
                batch_sizes=batches,
                device=dev,
                warmup=args.warmup,
                repeats=args.repeats,
                min_repeat_ms=args.min_repeat_ms,
            )
            for row in rows:
                cells.append(row_cells(config_name, options["model"], row))
                results.append({"config": config_name, **options, **asdict(row)})
    print(
        f"\nStructured pruning at inference, CIFAR-shaped input, {env['torch_threads']} threads, "
        f"torch {env['torch']}, malloc {args.malloc}"
    )
    print_table(
        [
            "pair",
            "device",
            "batch",
            "params full / pruned",
            "FLOPs full / pruned",
            "FLOPs cut",
            "FLOP ratio",
            "full ms (IQR)",
            "pruned ms (IQR)",
            "img/s full / pruned",
            "speedup",
        ],
        cells,
    )
    print("(ms: median per forward over repeats; FLOPs: Liu et al.'s counter, one example;")
    print(" FLOP ratio = full / pruned FLOPs, the speedup FLOPs promise; speedup = full ms / pruned ms)")
    noisy = [
        f"{r['config']} {r['device']} batch {r['batch_size']}"
        for r in results
        if max(r[k]["iqr_ms"] / r[k]["median_ms"] for k in ("full", "pruned")) > NOISY_IQR
    ]
    if noisy:
        print(
            f"note: noisy timings (IQR > {NOISY_IQR:.0%} of the median) for {', '.join(noisy)}; "
            "rerun on an idle machine"
        )
    path = write_json(
        args.name,
        {
            "benchmark": "structured_speed",
            "environment": env,
            "settings": {
                "warmup": args.warmup,
                "repeats": args.repeats,
                "min_repeat_ms": args.min_repeat_ms,
                "input_shape": list(CIFAR),
                "num_classes": CLASSES,
            },
            "results": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
