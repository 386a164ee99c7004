"""Cost of keeping a pruning mask during training: one SGD step, dense vs prunelab vs torch prune.

One training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, weight decay
1e-4: ``make_optimizer(model, TrainConfig())``, the trainer's optimizer), on one fixed random
batch. Three variants of the same network:

* ``dense``: no mask.
* ``prunelab``: a density-0.1 random mask (``prunelab.prune(model, "random", 0.1)``) kept by
  ``MaskEnforcer`` exactly as ``prunelab.training.trainer.train`` does: ``mask_grads()`` before
  ``optimizer.step()``, ``apply_weights()`` after.
* ``torch-prune``: the same mask installed with ``torch.nn.utils.prune.custom_from_mask`` on the same
  conv/linear weights (a ``weight_orig`` parameter, a ``weight_mask`` buffer and a forward pre-hook
  recomputing ``weight = weight_orig * weight_mask``), then a standard step.

After warm-up, each repeat times K consecutive steps of every variant (variants interleaved, in
rotating order). Reported: the median over repeats of the per-step time of each variant, and the
median of the *paired* per-repeat ratios (masked/dense, tnp/dense, masked/tnp), which cancel the
slow drift of machine speed. A target counts as met when the upper quartile of its paired ratio is
within the limit, not met when the lower quartile is outside it, and "within noise" otherwise.
Also reported: the mask passes alone (``mask_grads`` + ``apply_weights``, K times), which is the
whole of prunelab's per-step extra work, so its share of a dense step is a low-noise measure of the overhead;
torch prune's extra work isolated the same way (``weight_orig * weight_mask`` for every pruned
layer, and its backward); and the minor page faults per step of each variant.

``--malloc tuned`` raises glibc's mmap/trim thresholds first (``mallopt``): by default each CPU step
re-faults thousands of pages of activation memory, and how many depends on the variant's exact
allocation pattern, which is worth a few per cent of step time by itself (see ``bench/README.md``).

Run: ``.venv/bin/python bench/masked_step.py`` (see ``--help``). Writes ``bench/results/masked_step.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

import prunelab
from _common import (
    add_common_arguments,
    median,
    minor_faults,
    print_table,
    start,
    timed,
    write_json,
)
from prunelab.pruning.mask import Mask
from prunelab.training.trainer import MaskEnforcer, make_optimizer

#: name -> (example shape, classes) of the models this benchmark knows.
MODELS: dict[str, tuple[tuple[int, ...], int]] = {
    "resnet20": ((3, 32, 32), 10),
    "mlp": ((1, 40), 10),
}
VARIANTS = ("dense", "prunelab", "torch-prune")

#: Targets from the brief, judged on ResNet-20 at batch 64 on CPU.
MAX_MASKED_OVER_DENSE = 1.10


@dataclass
class Variant:
    """One way of training the network, ready to step."""

    name: str
    model: nn.Module
    step: Callable[[], None]
    mask: Mask | None = None
    enforcer: MaskEnforcer | None = None


def make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, enforcer: MaskEnforcer | None
) -> Callable[[], None]:
    """One training step, written as the trainer's inner loop writes it."""

    def step() -> None:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if enforcer is not None:
            enforcer.mask_grads()
        optimizer.step()
        if enforcer is not None:
            enforcer.apply_weights()

    return step


def install_torch_prune(model: nn.Module, mask: Mask) -> None:
    """Install ``mask`` with ``torch.nn.utils.prune.custom_from_mask`` on the same weights."""
    for name in mask:
        module_name, _, param_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        torch_prune.custom_from_mask(module, param_name, mask[name].to(getattr(module, param_name).device))


def build_variants(
    model_name: str, batch: int, density: float, device: torch.device, seed: int
) -> list[Variant]:
    """The three variants of ``model_name`` (same initialisation, same mask, same batch)."""
    input_shape, num_classes = MODELS[model_name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    config = prunelab.TrainConfig()
    variants: list[Variant] = []
    for name in VARIANTS:
        model = prunelab.build_model(model_name, input_shape, num_classes, seed=seed).to(device)
        model.train()
        mask: Mask | None = None
        enforcer: MaskEnforcer | None = None
        if name != "dense":
            mask = prunelab.prune(model, "random", density, seed=seed)
        if name == "torch-prune":
            assert mask is not None
            install_torch_prune(model, mask)
        optimizer = make_optimizer(model, config)  # after torch prune: it sees weight_orig
        if name == "prunelab":
            enforcer = MaskEnforcer(model, mask, optimizer)
            enforcer.apply_weights()
            enforcer.clear_state()
        variants.append(Variant(name, model, make_step(model, optimizer, x, y, enforcer), mask, enforcer))
    return variants


def pruned_nonzero(variant: Variant) -> int:
    """How many pruned weights are non-zero as the model computes with them (should be 0)."""
    if variant.mask is None:
        return 0
    params = dict(variant.model.named_parameters())
    count = 0
    for name in variant.mask:
        module_name, _, param_name = name.rpartition(".")
        module = variant.model.get_submodule(module_name)
        weight = getattr(module, param_name) if name not in params else params[name]
        count += int((weight.detach()[~variant.mask[name].to(weight.device)] != 0).sum())
    return count


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-repeat ratios ``num[i] / den[i]``."""
    return [a / b for a, b in zip(num, den, strict=True)]


def quartiles(values: list[float]) -> tuple[float, float]:
    """Lower and upper quartile (inclusive method; both equal the value for a single one)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def verdict_at_most(paired: list[float], limit: float) -> str:
    """``"MET"`` when the upper quartile of the paired ratios is <= ``limit``, ``"NOT MET"`` when
    the lower quartile is above it, else ``"WITHIN NOISE"`` (the median says which side it leans).
    """
    low, high = quartiles(paired)
    if high <= limit:
        return "MET"
    if low > limit:
        return "NOT MET"
    return "WITHIN NOISE (median: " + ("met" if median(paired) <= limit else "not met") + ")"


def bench_model(model_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time the variants of one model; returns its JSON record."""
    variants = build_variants(model_name, args.batch, args.density, device, args.seed)
    for v in variants:
        for _ in range(args.warmup):
            v.step()
    # Fast models: take enough steps per repeat that one repeat lasts >= --min-repeat-seconds.
    one = timed(variants[0].step, device)
    steps = max(args.steps, math.ceil(args.min_repeat_seconds / max(one, 1e-9)))

    def run_steps(v: Variant) -> Callable[[], None]:
        def go() -> None:
            for _ in range(steps):
                v.step()

        return go

    per_step: dict[str, list[float]] = {v.name: [] for v in variants}
    mask_ops: list[float] = []
    enforcer = next(v.enforcer for v in variants if v.enforcer is not None)

    def run_mask_ops() -> None:
        for _ in range(steps):
            enforcer.mask_grads()
            enforcer.apply_weights()

    # torch.nn.utils.prune's extra work per step, isolated the same way: the pre-hook's
    # ``weight = weight_orig * weight_mask`` for every pruned layer and its backward (MulBackward0,
    # accumulating into weight_orig.grad; the next step's zero_grad clears that).
    tnp_model = next(v for v in variants if v.name == "torch-prune").model
    pruned: list[tuple[Tensor, Tensor]] = [
        (cast(Tensor, m.weight_orig), cast(Tensor, m.weight_mask))
        for m in tnp_model.modules()
        if hasattr(m, "weight_mask")
    ]
    fake_grads = [torch.randn_like(orig) for orig, _ in pruned]

    def run_tnp_ops() -> None:
        for _ in range(steps):
            weights = [orig * mask for orig, mask in pruned]
            torch.autograd.backward(weights, fake_grads)

    tnp_ops: list[float] = []
    faults: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.repeats):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            before = minor_faults()
            per_step[v.name].append(timed(run_steps(v), device) / steps)
            after = minor_faults()
            if before is not None and after is not None:
                faults[v.name].append((after - before) / steps)
        mask_ops.append(timed(run_mask_ops, device) / steps)
        tnp_ops.append(timed(run_tnp_ops, device) / steps)

    ms = {name: 1e3 * median(times) for name, times in per_step.items()}
    # Paired ratios: each repeat times every variant back to back, so a per-repeat ratio cancels the
    # slow drift of machine speed that unpaired medians keep.
    paired = {
        "masked_over_dense": ratios(per_step["prunelab"], per_step["dense"]),
        "torch_prune_over_dense": ratios(per_step["torch-prune"], per_step["dense"]),
        "masked_over_torch_prune": ratios(per_step["prunelab"], per_step["torch-prune"]),
    }
    record: dict[str, Any] = {
        "model": model_name,
        "input_shape": list(MODELS[model_name][0]),
        "batch": args.batch,
        "density": args.density,
        "steps_per_repeat": steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "ms_per_step": ms,
        "ms_per_step_min": {name: 1e3 * min(times) for name, times in per_step.items()},
        "ms_per_step_all": {name: [1e3 * t for t in times] for name, times in per_step.items()},
        "minor_page_faults_per_step": {k: median(v) if v else None for k, v in faults.items()},
        "mask_ops_ms_per_step": 1e3 * median(mask_ops),
        "mask_ops_over_dense_step": 1e3 * median(mask_ops) / ms["dense"],
        "torch_prune_ops_ms_per_step": 1e3 * median(tnp_ops),
        "torch_prune_ops_over_dense_step": 1e3 * median(tnp_ops) / ms["dense"],
        "paired_ratio_median": {k: median(v) for k, v in paired.items()},
        "paired_ratio_quartiles": {k: quartiles(v) for k, v in paired.items()},
        "masked_over_dense": ms["prunelab"] / ms["dense"],
        "torch_prune_over_dense": ms["torch-prune"] / ms["dense"],
        "pruned_nonzero_after": {v.name: pruned_nonzero(v) for v in variants if v.mask is not None},
        "num_parameters": sum(p.numel() for p in variants[0].model.parameters()),
        "num_masked_tensors": len(enforcer.params),
    }
    record["target_masked_over_dense"] = verdict_at_most(paired["masked_over_dense"], MAX_MASKED_OVER_DENSE)
    record["target_faster_than_torch_prune"] = verdict_at_most(paired["masked_over_torch_prune"], 1.0)
    return record


def fmt_faults(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet20,mlp", help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat (K), at least")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (N); the median is reported")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant first")
    parser.add_argument(
        "--min-repeat-seconds",
        type=float,
        default=0.2,
        help="raise K for fast models so one repeat lasts at least this long",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.1, help="kept fraction of the random mask")
    add_common_arguments(parser, "masked_step")
    args = parser.parse_args(argv)
    args.model_list = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, env = start(args)
    records = [bench_model(m, args, device) for m in args.model_list]

    print(
        f"\nOne training step, batch {args.batch}, density {args.density}, device {device}, "
        f"{env['torch_threads']} threads, torch {env['torch']}, malloc {args.malloc}: "
        f"median of {args.repeats} repeats"
    )
    rows = []
    for r in records:
        ms = r["ms_per_step"]
        pr = r["paired_ratio_median"]
        rows.append(
            [
                r["model"],
                r["steps_per_repeat"],
                f"{ms['dense']:.3f}",
                f"{ms['prunelab']:.3f}",
                f"{ms['torch-prune']:.3f}",
                f"{r['mask_ops_ms_per_step']:.3f}",
                f"{r['torch_prune_ops_ms_per_step']:.3f}",
                f"{pr['masked_over_dense']:.3f}",
                f"{pr['torch_prune_over_dense']:.3f}",
                f"{pr['masked_over_torch_prune']:.3f}",
                "/".join(fmt_faults(r["minor_page_faults_per_step"][v]) for v in VARIANTS),
            ]
        )
    print_table(
        [
            "model",
            "K",
            "dense ms",
            "prunelab ms",
            "torch-prune ms",
            "mask-ops ms",
            "tnp-ops ms",
            "masked/dense",
            "tnp/dense",
            "masked/tnp",
            "page faults/step (d/p/t)",
        ],
        rows,
    )
    print("(ms: median per-step time over repeats; ratios: median of per-repeat paired ratios;")
    print(
        " mask-ops: MaskEnforcer.mask_grads + apply_weights alone, i.e. prunelab's whole per-step extra work;"
    )
    print(" tnp-ops: torch prune's weight_orig * weight_mask for every pruned layer and its backward, alone)")
    print()
    for r in records:
        q = r["paired_ratio_quartiles"]
        scope = (
            ""
            if r["model"] == "resnet20" and device.type == "cpu" and args.batch == 64
            else " [the brief's targets are stated for resnet20, batch 64, CPU]"
        )
        print(f"{r['model']}:{scope}")
        print(
            f"  masked/dense <= {MAX_MASKED_OVER_DENSE}: {r['target_masked_over_dense']} "
            f"(paired median {r['paired_ratio_median']['masked_over_dense']:.3f}, "
            f"IQR {q['masked_over_dense'][0]:.3f}-{q['masked_over_dense'][1]:.3f}; "
            f"mask ops alone = {100 * r['mask_ops_over_dense_step']:.2f}% of a dense step)"
        )
        print(
            f"  faster than torch.nn.utils.prune: {r['target_faster_than_torch_prune']} "
            f"(paired masked/tnp median {r['paired_ratio_median']['masked_over_torch_prune']:.3f}, "
            f"IQR {q['masked_over_torch_prune'][0]:.3f}-{q['masked_over_torch_prune'][1]:.3f})"
        )
        print(
            f"  extra work per step, isolated: prunelab {r['mask_ops_ms_per_step']:.3f} ms, torch prune "
            f"{r['torch_prune_ops_ms_per_step']:.3f} ms "
            f"({r['torch_prune_ops_ms_per_step'] / r['mask_ops_ms_per_step']:.1f}x prunelab's)"
        )
        if "WITHIN NOISE" in r["target_faster_than_torch_prune"] and args.malloc == "default":
            print("  hint: --malloc tuned removes the per-step page-fault noise (see bench/README.md)")
        spread = {k: max(v) / min(v) for k, v in r["ms_per_step_all"].items()}
        if max(spread.values()) > 1.5:
            worst = max(spread, key=spread.__getitem__)
            print(
                f"  note: noisy run, slowest/fastest repeat of {worst} = {spread[worst]:.1f}x; "
                "rerun on an idle machine"
            )
        bad = {k: n for k, n in r["pruned_nonzero_after"].items() if n}
        if bad:
            print(f"  note: pruned weights non-zero after timing: {bad}")
    path = write_json(args.name, {"benchmark": "masked_step", "environment": env, "results": records})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
