"""Helpers shared by the benchmarks: environment record, clock, table printing and JSON output.

Benchmarks are not tests: they measure and report, and never assert on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Above this 1-minute load average the machine is busy and timings are suspect.
BUSY_LOAD = 0.5


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """What the numbers were measured on: versions, cores, threads, device, load average."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": str(device),
        "load_average_1min_at_start": load_average(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


def warn_if_busy() -> None:
    """Print a note when the load average says another process competes for the CPU."""
    load = load_average()
    if load is not None and load > BUSY_LOAD:
        print(f"note: 1-minute load average is {load:.2f} (> {BUSY_LOAD}); CPU timings may be inflated")


#: glibc ``mallopt`` parameters (malloc.h) and the values ``--malloc tuned`` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
TUNED_MALLOC = {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 1 << 30, "M_TOP_PAD": 64 << 20}


def tune_malloc() -> str:
    """Stop glibc from returning freed activation memory to the OS after every step.

    By default glibc serves large blocks (>= 128 KiB, threshold adapting upwards) with ``mmap`` and
    trims the heap top on ``free``, so each training step on CPU re-faults thousands of fresh pages
    (ResNet-20, batch 64: ~6,000-15,000 minor faults per step). How many depends on the exact
    allocation pattern, which makes small differences between variants (say an extra tensor per
    layer) show up as several per cent of step time. Raising the mmap and trim thresholds keeps
    the memory mapped (~0 faults per step). Returns a description for the results file.
    """
    if not sys.platform.startswith("linux"):
        return "default (tuning needs glibc on Linux)"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (_M_MMAP_THRESHOLD, TUNED_MALLOC["M_MMAP_THRESHOLD"]),
                (_M_TRIM_THRESHOLD, TUNED_MALLOC["M_TRIM_THRESHOLD"]),
                (_M_TOP_PAD, TUNED_MALLOC["M_TOP_PAD"]),
            )
        )
    except (OSError, AttributeError):
        return "default (glibc mallopt unavailable)"
    settings = ", ".join(f"{k}={v >> 20} MiB" for k, v in TUNED_MALLOC.items())
    return f"tuned (mallopt {settings})" if ok else "partly tuned (a mallopt call failed)"


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; a CUDA request without CUDA exits with a message."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so the host clock measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, synchronising the device before and after."""
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - began


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (creating the folder) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {**payload, "load_average_1min_at_end": load_average()}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def add_common_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    """The options every benchmark takes: --threads, --device, --malloc, --seed and --name."""
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--malloc",
        choices=("default", "tuned"),
        default="default",
        help="tuned: raise glibc's mmap/trim thresholds so steps stop re-faulting memory (see README)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=default_name, help="results file bench/results/<name>.json")


def start(args: argparse.Namespace) -> tuple[torch.device, dict[str, Any]]:
    """Apply the common options (malloc, threads, device) and record the environment."""
    malloc = tune_malloc() if args.malloc == "tuned" else "default"
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = {**environment(device, torch.get_num_threads()), "malloc": malloc}
    warn_if_busy()
    return device, env


def random_bundle(
    shape: tuple[int, ...],
    classes: int,
    train: int,
    test: int,
    seed: int,
    device: torch.device,
    name: str | None = None,
) -> Any:
    """A :class:`prunelab.DataBundle` of standard-normal inputs of ``shape`` (one example) with
    uniform labels in ``[0, classes)``, ``train`` / ``test`` examples, on ``device`` (no download:
    the work of a step does not depend on the values)."""
    import prunelab

    gen = torch.Generator().manual_seed(seed)
    bundle = prunelab.DataBundle(
        name=name or f"random{tuple(shape)}",
        train_x=torch.randn((train, *shape), generator=gen),
        train_y=torch.randint(0, classes, (train,), generator=gen),
        test_x=torch.randn((test, *shape), generator=gen),
        test_y=torch.randint(0, classes, (test,), generator=gen),
        num_classes=classes,
        info={"source": "torch.randn / torch.randint", "seed": seed},
    )
    return bundle.to(device)
