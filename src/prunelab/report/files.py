"""Atomic report files: each is written to a uniquely named temporary file and renamed, so a report
folder never holds a half-written file (a kill leaves the old version), and two processes writing
the same report never collide on a temporary name."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunelab.store import atomic_path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_csv(path: Path) -> Iterator[Any]:
    """A ``csv.writer`` whose rows land in ``path`` only when the block finishes without error."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        yield csv.writer(handle)


def save_figure_atomic(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure to ``path`` (format from its suffix) atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path
