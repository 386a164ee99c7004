"""Reading a run's ``result.json``: which accuracy a run reports and which weights it reports it of."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from prunelab.store import RunStore, StoredSpec


def reported_accuracy(result: Mapping[str, Any] | None) -> float | None:
    """The accuracy (fraction) a finished run reports: its final test accuracy, or, for a run with
    ``train.checkpoint = best_validation``, the best-on-validation checkpoint's test accuracy.
    None when the run has not finished or recorded none."""
    if not result or result.get("status", "done") != "done":
        return None
    value = result.get("reported_acc", result.get("final_test_acc"))
    return None if value is None else float(value)


def reported_weights(store: RunStore, spec: StoredSpec, result: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights behind :func:`reported_accuracy`: the selected epoch's for a best-on-validation
    run, else the final ones."""
    epoch = result.get("selected_epoch") if result.get("checkpoint") == "best_validation" else None
    return store.load_weights(spec, None if epoch is None else int(epoch))
