"""Training throughput (images per second) of ResNet-20 and VGG-19 on CIFAR-shaped batches: masked at
density 0.1 vs dense, fp32 vs bf16 autocast, eager vs ``torch.compile``, one run vs K runs packed.

One training step is written as ``prunelab.training.trainer.train`` writes it: forward and
cross-entropy under the run's autocast, backward, ``MaskEnforcer.mask_grads``, SGD step
(``make_optimizer(model, TrainConfig(...))``: momentum 0.9, weight decay 1e-4), ``apply_weights``,
and the on-device accumulation of loss and correct count (no host sync per step). The batch is one
fixed random batch already on the device (standard normal 3x32x32, labels uniform over 10 classes),
so data loading and augmentation are not included. The masked variants use
``prunelab.prune(model, "random", density)``. A packed variant (``--pack K``, fp32 eager: what packed
training supports) steps K runs of the model (initialisations seed..seed+K-1, each its own random
mask) as one packed model (:func:`prunelab.training.packed.packed_step`), each on the same batch; its
images/s counts all K runs' images.

For each model all variants are built from the same initialisation, warmed up (``--warmup`` steps;
the first step's time, which includes compilation for compiled variants, is recorded), then timed
``--repeats`` times for ``--steps`` consecutive steps each, the variants interleaved in rotating
order. Reported: images/s = batch x steps / median repeat time, the spread (min-max over repeats),
and per model the paired ratios masked/dense, bf16/fp32 and compiled/eager (per-repeat ratios of
variants timed back to back, median). Compiled variants are skipped, and the table says why, where
``torch.compile`` cannot run (no C++ compiler on CPU, no Triton on CUDA) or with ``--compiled off``.

CPU defaults are small (batch 32, 3 steps x 5 repeats); ``--quick`` (batch 8, 1 step x 2 repeats,
eager only unless ``--compiled on``) is a smoke run. CUDA defaults: batch 256, 20 steps x 5
repeats, channels_last on (``--channels-last``), cuDNN benchmark on (as the trainer sets it).

Run: ``.venv/bin/python bench/throughput.py`` (see ``--help``). Writes ``bench/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunelab
from _common import add_common_arguments, median, print_table, start, synchronize, timed, write_json
from prunelab.pruning.mask import Mask
from prunelab.training import fast
from prunelab.training.config import TrainConfig
from prunelab.training.packed import PackedModel, packed_optimizer, packed_step, stacked_mask
from prunelab.training.trainer import MaskEnforcer, make_optimizer

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
MODELS = ("resnet20", "vgg19")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Setting:
    """One variant: which model, masked or dense, precision, compiled or eager, runs packed."""

    model: str
    masked: bool
    precision: str
    compiled: bool
    packed: int = 1

    @property
    def label(self) -> str:
        return (
            f"{self.model} {'masked' if self.masked else 'dense'} {self.precision} "
            f"{'compiled' if self.compiled else 'eager'}"
            + (f" packed {self.packed}" if self.packed > 1 else "")
        )


@dataclass
class Variant:
    """A variant ready to step, and what it measured."""

    setting: Setting
    model: nn.Module
    mask: Mask | None
    step: Callable[[], None]
    first_step_s: float = 0.0
    repeat_s: list[float] | None = None


def make_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    enforcer: MaskEnforcer,
    x: Tensor,
    y: Tensor,
    precision: str,
) -> Callable[[], None]:
    """One training step as the trainer's inner loop writes it (single process, no hooks)."""
    device = x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    scaler = fast.grad_scaler(device, precision)

    def step() -> None:
        nonlocal loss_sum, correct
        with fast.autocast(device, precision):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=False)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
        enforcer.mask_grads()
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        enforcer.apply_weights()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()

    return step


def build_variant(
    setting: Setting,
    x: Tensor,
    y: Tensor,
    *,
    density: float,
    seed: int,
    channels_last: bool,
    optimizer_impl: str,
) -> Variant:
    """Model (same initialisation for every variant of a model), mask, optimizer, step."""
    device = x.device
    if setting.packed > 1:
        return build_packed_variant(setting, x, y, density=density, seed=seed)
    model = prunelab.build_model(setting.model, INPUT_SHAPE, NUM_CLASSES, seed=seed).to(device)
    model.train()
    mask = prunelab.prune(model, "random", density, seed=seed) if setting.masked else None
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    config = TrainConfig(precision=setting.precision, optimizer_impl=optimizer_impl)
    optimizer = make_optimizer(model, config)
    enforcer = MaskEnforcer(model, mask, optimizer)
    enforcer.apply_weights()
    net = fast.compile_model(model) if setting.compiled else model
    return Variant(setting, model, mask, make_step(net, optimizer, enforcer, x, y, setting.precision))


def build_packed_variant(setting: Setting, x: Tensor, y: Tensor, *, density: float, seed: int) -> Variant:
    """``setting.packed`` runs (initialisations and masks seed, seed+1, ...) as one packed model,
    each stepping on the batch ``x, y``; the variant's model and mask are the packed ones."""
    k = setting.packed
    models, masks = [], []
    for i in range(k):
        model = prunelab.build_model(setting.model, INPUT_SHAPE, NUM_CLASSES, seed=seed + i).to(x.device)
        masks.append(prunelab.prune(model, "random", density, seed=seed + i) if setting.masked else None)
        models.append(model)
    packed = PackedModel(models)
    packed.train()
    optimizer = packed_optimizer(packed, models[0], TrainConfig())
    mask = stacked_mask(masks, packed)
    enforcer = MaskEnforcer(packed.net, mask, optimizer)
    enforcer.apply_weights()
    xs, ys = torch.cat([x] * k), torch.cat([y] * k)
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)

    def step() -> None:
        nonlocal loss_sum, correct
        losses, right = packed_step(packed, optimizer, enforcer, xs, ys)
        loss_sum += losses * y.shape[0]
        correct += right

    return Variant(setting, packed.net, mask, step)


def pruned_nonzero(variant: Variant) -> int:
    """Pruned weights that are not exactly zero after timing (the mask invariant: should be 0)."""
    if variant.mask is None:
        return 0
    params = dict(variant.model.named_parameters())
    return sum(
        int((params[n].detach()[~variant.mask[n].to(params[n].device)] != 0).sum()) for n in variant.mask
    )


def compile_skip_reason(device: torch.device, compiled: str, quick: bool) -> str | None:
    """Why compiled variants are not measured (None: they are); ``--compiled on`` where
    ``torch.compile`` cannot run exits with the reason."""
    if compiled == "off":
        return "--compiled off"
    if compiled == "auto" and quick:
        return "--quick (add --compiled on)"
    why = fast.compile_unavailable(device.type)
    if why is not None and compiled == "on":
        raise SystemExit(f"--compiled on: {why}")
    return why


def run_model(
    model_name: str,
    device: torch.device,
    *,
    batch: int,
    steps: int,
    repeats: int,
    warmup: int,
    density: float = 0.1,
    precisions: Sequence[str] = PRECISIONS,
    compiled: Sequence[bool] = (False, True),
    seed: int = 0,
    channels_last: bool = False,
    optimizer_impl: str = "auto",
    pack: int = 1,
) -> list[dict[str, Any]]:
    """Measure every (mask, precision, compiled) variant of ``model_name``, and with ``pack`` > 1
    the dense and masked fp32 eager variants of ``pack`` runs packed; one record per variant.

    Args:
        model_name: ``"resnet20"`` or ``"vgg19"`` (any registered image model works).
        device: where to train.
        batch: examples per step.
        steps: consecutive steps per timed repeat.
        repeats: timed repeats per variant (median reported).
        warmup: untimed steps per variant first (at least 1; compilation happens in the first).
        density: kept fraction of the masked variants' random mask.
        precisions: ``"fp32"``, ``"bf16"`` and/or ``"fp16"``.
        compiled: which of eager (False) and compiled (True) to measure.
        seed: initialisation, mask and batch seed.
        channels_last: hold weights and the batch in channels_last layout.
        optimizer_impl: as ``TrainConfig.optimizer_impl``.
        pack: runs per packed variant (1: none measured).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *INPUT_SHAPE), generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    settings = [
        Setting(model_name, masked, precision, comp)
        for comp, precision, masked in itertools.product(compiled, precisions, (False, True))
    ]
    if pack > 1:
        settings += [Setting(model_name, masked, "fp32", False, pack) for masked in (False, True)]
    variants: list[Variant] = []
    with fast.backend_flags(device, deterministic=False):
        for setting in settings:
            fast.check_supported(setting.precision, device)
            v = build_variant(
                setting,
                x,
                y,
                density=density,
                seed=seed,
                channels_last=channels_last,
                optimizer_impl=optimizer_impl,
            )
            v.first_step_s = timed(v.step, device)
            for _ in range(max(0, warmup - 1)):
                v.step()
            v.repeat_s = []
            variants.append(v)

        def run_steps(v: Variant) -> Callable[[], None]:
            def go() -> None:
                for _ in range(steps):
                    v.step()

            return go

        for r in range(repeats):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                assert v.repeat_s is not None
                v.repeat_s.append(timed(run_steps(v), device))
        synchronize(device)
    records: list[dict[str, Any]] = []
    for v in variants:
        assert v.repeat_s is not None
        s = v.setting
        records.append(
            {
                "model": s.model,
                "masked": s.masked,
                "density": density if s.masked else 1.0,
                "precision": s.precision,
                "compiled": s.compiled,
                "packed": s.packed,
                "channels_last": channels_last,
                "optimizer_impl": optimizer_impl,
                "batch": batch,
                "steps_per_repeat": steps,
                "repeats": repeats,
                "first_step_seconds": v.first_step_s,
                "repeat_seconds": v.repeat_s,
                "images_per_second": s.packed * batch * steps / median(v.repeat_s),
                "images_per_second_min": s.packed * batch * steps / max(v.repeat_s),
                "images_per_second_max": s.packed * batch * steps / min(v.repeat_s),
                "ms_per_step": 1e3 * median(v.repeat_s) / steps,
                "pruned_nonzero_after": pruned_nonzero(v),
            }
        )
    return records


def paired_ratio(
    records: list[dict[str, Any]], model: str, num: dict[str, Any], den: dict[str, Any]
) -> float | None:
    """Median over repeats of ``time(den) / time(num)`` (a throughput ratio num/den) for the two
    variants of ``model`` matching the given fields (None when either was not measured)."""

    def find(fields: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (r for r in records if r["model"] == model and all(r[k] == v for k, v in fields.items())), None
        )

    a, b = find(num), find(den)
    if a is None or b is None:
        return None
    images = a["packed"] / b["packed"]  # a packed step trains K runs' batches
    return median([images * tb / ta for ta, tb in zip(a["repeat_seconds"], b["repeat_seconds"], strict=True)])


def summary(records: list[dict[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """Per model: throughput ratios masked/dense, bf16/fp32, compiled/eager and packed/one run
    (images/s, paired medians)."""
    out = []
    for model in models:
        row: dict[str, Any] = {"model": model}
        row["masked_over_dense"] = paired_ratio(
            records,
            model,
            {"masked": True, "precision": "fp32", "compiled": False, "packed": 1},
            {"masked": False, "precision": "fp32", "compiled": False, "packed": 1},
        )
        row["bf16_over_fp32"] = paired_ratio(
            records,
            model,
            {"masked": True, "precision": "bf16", "compiled": False},
            {"masked": True, "precision": "fp32", "compiled": False, "packed": 1},
        )
        row["compiled_over_eager"] = paired_ratio(
            records,
            model,
            {"masked": True, "precision": "fp32", "compiled": True},
            {"masked": True, "precision": "fp32", "compiled": False, "packed": 1},
        )
        row["compiled_bf16_over_eager_fp32"] = paired_ratio(
            records,
            model,
            {"masked": True, "precision": "bf16", "compiled": True},
            {"masked": True, "precision": "fp32", "compiled": False, "packed": 1},
        )
        row["packed_over_one"] = next(
            (
                paired_ratio(
                    records,
                    model,
                    {"masked": True, "precision": "fp32", "compiled": False, "packed": r["packed"]},
                    {"masked": True, "precision": "fp32", "compiled": False, "packed": 1},
                )
                for r in records
                if r["model"] == model and r["packed"] > 1
            ),
            None,
        )
        out.append(row)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, e.g. {','.join(MODELS)}"
    )
    parser.add_argument(
        "--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32, bf16, fp16"
    )
    parser.add_argument(
        "--compiled",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: eager and compiled where torch.compile can run (eager only with --quick); on: both; off: eager only",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="examples per step (CPU 32, quick 8, CUDA 256)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per timed repeat (CPU 3, quick 1, CUDA 20)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (CPU 5, quick 2, CUDA 5)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (CPU 2, quick 1, CUDA 5)"
    )
    parser.add_argument("--density", type=float, default=0.1, help="kept fraction of the masked variants")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="channels_last layout (auto: on for CUDA, off for CPU)",
    )
    parser.add_argument(
        "--optimizer-impl",
        choices=("auto", "foreach", "fused", "for_loop"),
        default="auto",
        help="SGD implementation",
    )
    parser.add_argument(
        "--pack", type=int, default=None, help="runs per packed variant, 1: none (CPU 4, quick 1, CUDA 8)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny batch, few steps, eager only")
    add_common_arguments(parser, "throughput")
    return parser.parse_args(argv)


def defaults(args: argparse.Namespace, device: torch.device) -> dict[str, int]:
    """Batch, steps, repeats, warm-up and pack size: the given ones, else per device (and ``--quick``)."""
    if device.type == "cuda":
        base = {"batch": 256, "steps": 20, "repeats": 5, "warmup": 5, "pack": 8}
    elif args.quick:
        base = {"batch": 8, "steps": 1, "repeats": 2, "warmup": 1, "pack": 1}
    else:
        base = {"batch": 32, "steps": 3, "repeats": 5, "warmup": 2, "pack": 4}
    return {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, env = start(args)
    sizes = defaults(args, device)
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    precisions = [p.strip().lower() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16", "fp16")]
    if bad:
        raise SystemExit(f"--precisions: unknown {bad}; valid choices: fp32, bf16, fp16")
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
    skip = compile_skip_reason(device, args.compiled, args.quick)
    compiled = (False,) if skip is not None else (False, True)
    began = time.perf_counter()
    records: list[dict[str, Any]] = []
    for model in models:
        records += run_model(
            model,
            device,
            density=args.density,
            precisions=precisions,
            compiled=compiled,
            seed=args.seed,
            channels_last=channels_last,
            optimizer_impl=args.optimizer_impl,
            **sizes,
        )
    print(
        f"\nTraining throughput, CIFAR-shaped batches (3x32x32) of {sizes['batch']}, device {device}, "
        f"{env['torch_threads']} threads, torch {env['torch']}, channels_last {channels_last}, "
        f"optimizer {args.optimizer_impl}: median of {sizes['repeats']} repeats x {sizes['steps']} steps"
    )
    rows: list[list[object]] = []
    for r in records:
        rows.append(
            [
                r["model"],
                "masked 0.1" if r["masked"] else "dense",
                r["precision"],
                ("compiled" if r["compiled"] else "eager")
                + (f", packed {r['packed']}" if r["packed"] > 1 else ""),
                f"{r['images_per_second']:.1f}",
                f"{r['images_per_second_min']:.1f}-{r['images_per_second_max']:.1f}",
                f"{r['ms_per_step']:.1f}",
                f"{r['first_step_seconds']:.1f}",
            ]
        )
    if skip is not None:
        for model in models:
            rows.append([model, "all", "all", "compiled", "skipped", skip, "", ""])
    print_table(
        ["model", "mask", "precision", "mode", "img/s", "img/s range", "ms/step", "first step s"], rows
    )
    ratios = summary(records, models)

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    print("\nThroughput ratios (median of paired per-repeat ratios; masked variants unless stated):")
    print_table(
        [
            "model",
            "masked/dense (fp32 eager)",
            "bf16/fp32 (eager)",
            "compiled/eager (fp32)",
            "compiled bf16 / eager fp32",
            "packed/one run (fp32 eager)",
        ],
        [
            [
                s["model"],
                fmt(s["masked_over_dense"]),
                fmt(s["bf16_over_fp32"]),
                fmt(s["compiled_over_eager"]),
                fmt(s["compiled_bf16_over_eager_fp32"]),
                fmt(s["packed_over_one"]),
            ]
            for s in ratios
        ],
    )
    broken = [
        f"{r['model']} {r['precision']} {'compiled' if r['compiled'] else 'eager'} packed {r['packed']}"
        for r in records
        if r["pruned_nonzero_after"]
    ]
    if broken:
        print(f"note: pruned weights non-zero after timing in: {', '.join(broken)}")
    path = write_json(
        args.name,
        {
            "benchmark": "throughput",
            "environment": env,
            "settings": {
                **sizes,
                "density": args.density,
                "channels_last": channels_last,
                "optimizer_impl": args.optimizer_impl,
                "compiled_skipped": skip,
                "quick": args.quick,
            },
            "results": records,
            "ratios": ratios,
            "wall_seconds": time.perf_counter() - began,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
