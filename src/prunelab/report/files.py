"""Atomic report files: each is written to a temporary name and renamed, so a report folder never
holds a half-written file."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def atomic_csv(path: Path) -> Iterator[Any]:
    """A ``csv.writer`` whose rows land in ``path`` only when the block finishes without error."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        yield csv.writer(handle)
    os.replace(tmp, path)
