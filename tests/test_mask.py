"""Mask value object: densities, per-layer table, apply, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunelab
from prunelab.pruning import Mask


def test_densities_and_table() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    mask = prunelab.prune(model, "random", 0.1)
    assert mask.density() == pytest.approx(0.1)
    assert mask.sparsity() == pytest.approx(0.9)
    total = sum(p.numel() for p in model.parameters())  # 15,210 incl. 210 biases
    assert mask.model_density(model) == pytest.approx((total - 13500) / total)
    assert [(r.name, r.total, r.kept) for r in mask.per_layer()] == [
        ("layers.0.weight", 4000, 400),
        ("layers.2.weight", 10000, 1000),
        ("layers.4.weight", 1000, 100),
    ]


def test_save_load_roundtrip_and_bad_files(tmp_path: Path) -> None:
    model = prunelab.build_model("cnn2d", (1, 8, 8), 10, seed=0)
    mask = prunelab.prune(model, "random", 0.3)
    path = mask.save(tmp_path / "m.safetensors", {"note": "x"})
    loaded = Mask.load(path)
    assert loaded == mask and list(loaded) == list(mask)
    (tmp_path / "junk.safetensors").write_bytes(b"not a mask")
    with pytest.raises(prunelab.PrunelabError, match="not a readable safetensors"):
        Mask.load(tmp_path / "junk.safetensors")
    with pytest.raises(prunelab.PrunelabError, match="does not exist"):
        Mask.load(tmp_path / "missing.safetensors")


def test_apply_zeroes_and_shape_mismatch_is_clear() -> None:
    model = prunelab.build_model("mlp", (1, 40), 10, seed=0)
    mask = prunelab.prune(model, "random", 0.5)
    for name, param in model.named_parameters():
        if name in mask:
            assert (param[~mask[name]] == 0).all()
    other = prunelab.build_model("mlp", (1, 40), 10, seed=0, hidden=(50, 50))
    with pytest.raises(prunelab.PrunelabError, match="has shape"):
        mask.apply_(other)
    assert Mask({"w": torch.ones(2, dtype=torch.bool)}).density() == 1.0


def test_info_is_saved_kept_by_to_and_ignored_by_equality(tmp_path: Path) -> None:
    mask = Mask({"w": torch.tensor([True, False])}, {"method": "random", "smart_ratio_variant": "resnet"})
    assert Mask.load(mask.save(tmp_path / "m.safetensors")).info == mask.info
    assert mask.to("cpu").info == mask.info
    assert mask == Mask({"w": torch.tensor([True, False])})  # info is not part of equality
    assert Mask.load(Mask({"w": torch.tensor([True])}).save(tmp_path / "bare.safetensors")).info == {}
