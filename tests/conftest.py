"""Shared fixtures: a session-wide dataset cache and small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache for the whole session, never the user's home directory.
    path = tmp_path_factory.mktemp("prunelab-data")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRUNELAB_DATA_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(1234)
