"""Specs: canonical form, pinned hashes (names of stored runs must never drift), validation."""

from __future__ import annotations

import pytest

from prunelab.errors import PrunelabError
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec, parse_model
from prunelab.training.config import TrainConfig


def test_hashes_are_pinned() -> None:
    # If one of these changes, every stored run is orphaned: add fields with no-op defaults instead.
    dense = RunSpec()
    assert dense.canonical() == '{"v":"prunelab-run-v1"}'
    assert dense.run_hash() == "9729e13e65f0"
    snip = RunSpec(pruning=PruningSpec(method="snip", density=0.1), seed=3)
    assert snip.canonical() == (
        '{"pruning":{"allocation":"global","density":0.1,"method":"snip"},"seed":3,"v":"prunelab-run-v1"}'
    )
    assert snip.run_hash() == "50f874bf1c26"
    assert snip.run_name() == "mnist1d-mlp-snip-d0.1-s3-50f874bf1c26"


def test_default_allocation_and_spelling_do_not_change_identity() -> None:
    a = RunSpec(pruning=PruningSpec(method="snip", density=0.1))
    b = RunSpec(pruning=PruningSpec(method="SNIP", density=0.1, allocation="global"))
    c = parse_model(RunSpec, {"pruning": {"method": "snip", "density": 0.1, "checks": "shuffle_mask"}})
    assert a.run_hash() == b.run_hash()
    assert c.run_hash() != a.run_hash()
    assert "shuffle_mask" in c.run_name()


def test_every_field_matters() -> None:
    base = RunSpec(pruning=PruningSpec(method="random", density=0.1))
    variants = [
        base.model_copy(update={"seed": 1}),
        base.model_copy(update={"train": TrainConfig(epochs=3)}),
        base.model_copy(update={"data": DataSpec(name="digits")}),
        base.model_copy(update={"model": ModelSpec(name="mlp", options={"hidden": [10]})}),
        base.model_copy(update={"pruning": PruningSpec(method="random", density=0.1, allocation="erk")}),
    ]
    hashes = {v.run_hash() for v in variants} | {base.run_hash()}
    assert len(hashes) == len(variants) + 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"pruning": {"method": "snipp", "density": 0.1}}, "unknown method 'snipp'"),
        ({"pruning": {"method": "snip", "density": 2}}, r"density must be in \(0, 1\]"),
        ({"pruning": {"method": "snip", "density": 0.1, "checks": ["nope"]}}, "unknown check 'nope'"),
        ({"data": {"name": "imagenet22k"}}, "unknown dataset 'imagenet22k'"),
        ({"model": {"name": "resnet"}}, "unknown model 'resnet'"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"trian": {}}, "trian"),
    ],
)
def test_validation_errors_are_one_line(payload: dict[str, object], message: str) -> None:
    with pytest.raises(PrunelabError, match=message) as info:
        parse_model(RunSpec, payload)
    assert "\n" not in str(info.value)
