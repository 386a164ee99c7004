"""Where and with what a run was computed: software versions, the source commit, the hardware.

:func:`provenance` is recorded into every finished run's ``result.json`` by
:meth:`prunelab.store.RunStore.finish`, so a number in a report can be traced back to the code and
the machine that produced it. Nothing here may fail a run: every probe degrades to ``None``.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

#: Seconds one ``git`` call may take; a slow network filesystem must not stall a run's last step.
GIT_TIMEOUT_S = 5.0

#: The keys of a provenance record, in the order :func:`provenance` builds them.
PROVENANCE_KEYS = (
    "prunelab_version",
    "git_commit",
    "git_dirty",
    "torch_version",
    "cuda_version",
    "python_version",
    "platform",
    "device",
    "device_name",
    "cpu",
    "num_threads",
    "hostname",
    "datetime_utc",
)


def _prunelab_version() -> str | None:
    # Lazily: ``prunelab/__init__`` imports half the package, and the store imports this module.
    try:
        import prunelab

        return str(prunelab.__version__)
    except Exception:
        try:
            from importlib.metadata import version

            return version("prunelab")
        except Exception:
            return None


def _git(package_dir: Path, *args: str) -> str | None:
    """``git -C package_dir args`` stdout, or None when git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", "-C", str(package_dir), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the git checkout prunelab is imported from and whether the package's source
    differs from it (uncommitted or untracked files under the package directory).

    ``(None, None)`` when prunelab is not imported from a checkout (an installed wheel, or a
    virtual environment that happens to sit inside some repository) or git is unavailable.
    Computed once per process: the answer cannot change while the code is loaded.
    """
    package_dir = Path(__file__).resolve().parent
    # The package's __init__ must be tracked, so a site-packages copy inside an unrelated
    # repository (an ignored .venv) is not mistaken for a checkout of prunelab.
    if _git(package_dir, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None, None
    head = _git(package_dir, "rev-parse", "HEAD")
    if head is None or not head.strip():
        return None, None
    status = _git(package_dir, "status", "--porcelain", "--", ".")
    return head.strip(), (None if status is None else bool(status.strip()))


@functools.lru_cache(maxsize=1)
def cpu_name() -> str | None:
    """The CPU model (``model name`` in /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _device_name(device: torch.device | None) -> str | None:
    if device is None:
        return None
    if device.type == "cuda":
        try:
            return str(torch.cuda.get_device_name(device))
        except Exception:  # CUDA gone or the index invalid: provenance never fails a run
            return None
    if device.type in ("cpu", "mps"):
        return cpu_name()
    return None


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """A JSON-ready record of the software and hardware computing now.

    Args:
        device: the device the run trained on (``"cpu"``, ``"cuda:0"``, a ``torch.device``), or
            None when unknown (then ``device`` and ``device_name`` are None).

    Returns:
        ``prunelab_version``; ``git_commit`` (40 hex digits) and ``git_dirty`` (bool) of the
        checkout prunelab is imported from, both None when it is not a checkout;
        ``torch_version``; ``cuda_version`` (torch's CUDA build, None on CPU builds);
        ``python_version``; ``platform``; ``device`` (its string) and ``device_name`` (GPU name
        for CUDA, CPU model for CPU); ``cpu`` (the host's CPU model); ``num_threads`` (torch's
        intra-op threads); ``hostname``; ``datetime_utc`` (ISO 8601 with ``+00:00``, seconds).
    """
    resolved: torch.device | None = None
    device_str: str | None = None
    if device is not None:
        device_str = str(device)
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            resolved = None  # an unknown device string is still recorded as given
    commit, dirty = git_state()
    try:
        hostname: str | None = socket.gethostname()
    except OSError:
        hostname = None
    record: dict[str, Any] = {
        "prunelab_version": _prunelab_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": device_str,
        "device_name": _device_name(resolved),
        "cpu": cpu_name(),
        "num_threads": int(torch.get_num_threads()),
        "hostname": hostname,
        "datetime_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return record


__all__ = ["PROVENANCE_KEYS", "cpu_name", "git_state", "provenance"]
