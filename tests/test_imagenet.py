"""Tests of the ImageNet stack: streamed image-folder datasets (ImageNet layout, Tiny-ImageNet zip) and
the torchvision-architecture ImageNet models.

Datasets are fabricated on disk (tiny JPEGs in the real layouts; Tiny-ImageNet as a zip served through a
``file://`` URL), so the real scan/download/extract/decode path runs offline. Parameter counts are pinned
to the published torchvision numbers; the big models are built on the meta device (no memory, no init
cost), since a count does not need values.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import prunelab
from prunelab.data import download as download_mod
from prunelab.data import imagenet as imagenet_mod
from prunelab.data import load_dataset
from prunelab.data.download import ArchiveSource
from prunelab.data.imagenet import extract_zip_atomic
from prunelab.data.streaming import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomResizedCropFlip,
    ResizeCenterCrop,
    StreamedInputs,
    StreamingBundle,
)
from prunelab.errors import DataError, PrunelabError
from prunelab.models import MODELS, build_model
from prunelab.pruning.prunable import prunable_layers

CLASSES = ("n03000000", "n01000000", "n02000000")  # deliberately unsorted on disk creation
SMALL = {"crop_size": 32, "resize_size": 36, "num_workers": 0}


# --------------------------------------------------------------------------- fabricated data


def _jpeg(path: Path, rng: np.random.Generator, *, size: tuple[int, int] | None = None) -> None:
    """A random RGB JPEG of ``size`` (width, height), default random in [30, 50) x [30, 50)."""
    width, height = size if size is not None else (int(rng.integers(30, 50)), int(rng.integers(30, 50)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)


def make_imagenet_folder(root: Path, *, per_class: int = 4, val_per_class: int = 2, seed: int = 0) -> Path:
    """``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` for the three :data:`CLASSES`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for wnid in CLASSES:
            for k in range(count):
                _jpeg(root / split / wnid / f"{wnid}_{k}.JPEG", rng)
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")  # ignored
    return root


@dataclass
class FakeTiny:
    source: ArchiveSource
    archive: Path
    val_labels: list[str]  # wnid of val_0, val_1, ...


def _zip_bytes(files: dict[str, bytes], archive: Path, *, stored: bool = False) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as handle:
        for name, payload in files.items():
            handle.writestr(name, payload)


def tiny_files(*, per_class: int = 3, n_val: int = 6, seed: int = 1) -> tuple[dict[str, bytes], list[str]]:
    """The members of a small ``tiny-imagenet-200.zip`` in the real layout, and the val labels."""
    rng = np.random.default_rng(seed)
    wnids = ["n02", "n01"]
    files: dict[str, bytes] = {}

    def jpeg() -> bytes:
        import io

        out = io.BytesIO()
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        return out.getvalue()

    top = "tiny-imagenet-200"
    files[f"{top}/wnids.txt"] = "\n".join(wnids).encode() + b"\n"
    files[f"{top}/words.txt"] = b"n01\tthing one\nn02\tthing two\n"
    for wnid in wnids:
        for k in range(per_class):
            files[f"{top}/train/{wnid}/images/{wnid}_{k}.JPEG"] = jpeg()
        files[f"{top}/train/{wnid}/{wnid}_boxes.txt"] = b""
    labels = [wnids[i % 2] for i in range(n_val)]
    notes = "".join(f"val_{i}.JPEG\t{labels[i]}\t0\t0\t63\t63\n" for i in range(n_val))
    for i in range(n_val):
        files[f"{top}/val/images/val_{i}.JPEG"] = jpeg()
    files[f"{top}/val/val_annotations.txt"] = notes.encode()
    files[f"{top}/test/images/test_0.JPEG"] = jpeg()  # unlabelled: unused
    return files, labels


def make_fake_tiny(server: Path) -> FakeTiny:
    files, labels = tiny_files()
    archive = server / "tiny-imagenet-200.zip"
    _zip_bytes(files, archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    source = ArchiveSource(archive.as_uri(), md5, "tiny-imagenet-200.zip", "tiny-imagenet-200")
    return FakeTiny(source, archive, labels)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_imagenet_folder(tmp_path / "imagenet")


@pytest.fixture
def fake_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTiny:
    fake = make_fake_tiny(tmp_path / "server")
    monkeypatch.setitem(imagenet_mod.TINY_IMAGENET_SOURCES, "tiny_imagenet", fake.source)
    return fake


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _epoch(data: StreamingBundle, seed: int, batch_size: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train_batches(batch_size, torch.Generator().manual_seed(seed)))


def _same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


# --------------------------------------------------------------------------- models

PUBLISHED = {
    "imagenet_resnet18": 11_689_512,
    "imagenet_resnet34": 21_797_672,
    "imagenet_resnet50": 25_557_032,
    "imagenet_resnet101": 44_549_160,
    "imagenet_resnet152": 60_192_808,
    "imagenet_wide_resnet50_2": 68_883_240,
    "imagenet_wide_resnet101_2": 126_886_696,
    "imagenet_vgg16_bn": 138_365_992,
}


def _on_meta(name: str, num_classes: int = 1000, **options: object) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, (3, 224, 224), num_classes, **options)


@pytest.mark.parametrize(("name", "expected"), list(PUBLISHED.items()))
def test_parameter_counts_match_published(name: str, expected: int) -> None:
    model = _on_meta(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    # Every conv and linear weight is prunable, the fc / last classifier layer included.
    layers = prunable_layers(model)
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == len(weighted)
    assert layers[-1].kind == "linear" and layers[-1].shape == (
        1000,
        4096 if "vgg" in name else layers[-1].shape[1],
    )


def test_registered_names_and_families() -> None:
    families = {name: MODELS.get(name).family for name in PUBLISHED}
    assert families == {
        **{f"imagenet_resnet{d}": "resnet" for d in (18, 34, 50, 101, 152)},
        "imagenet_wide_resnet50_2": "wrn",
        "imagenet_wide_resnet101_2": "wrn",
        "imagenet_vgg16_bn": "vgg",
    }
    assert all(MODELS.get(name).input_rank == 2 for name in PUBLISHED)


def test_torchvision_layout() -> None:
    r18 = _on_meta("imagenet_resnet18")
    keys = set(r18.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer2.0.downsample.0.weight", "fc.bias"} <= keys
    assert "layer1.0.downsample.0.weight" not in keys  # identity shortcut
    assert tuple(r18.conv1.weight.shape) == (64, 3, 7, 7)
    r50 = _on_meta("imagenet_resnet50")
    assert "layer1.0.downsample.0.weight" in r50.state_dict() and r50.fc.in_features == 2048
    assert r50.layer2[0].conv2.stride == (2, 2) and r50.layer2[0].conv1.stride == (1, 1)  # v1.5
    wide = _on_meta("imagenet_wide_resnet50_2")
    # Bottleneck base width 128: inner convs twice as wide, block output unchanged.
    assert wide.layer1[0].conv1.out_channels == 128 and wide.layer1[0].conv3.out_channels == 256
    vgg = _on_meta("imagenet_vgg16_bn", num_classes=7)
    assert isinstance(vgg.features[0], nn.Conv2d) and vgg.features[0].bias is not None
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.features) == 5
    assert vgg.classifier[0].in_features == 512 * 7 * 7 and vgg.classifier[6].out_features == 7


def test_resnet18_forward_and_init() -> None:
    model = build_model("imagenet_resnet18", (3, 64, 64), 10, seed=0)
    same = build_model("imagenet_resnet18", (3, 64, 64), 10, seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True)
    )
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # train mode
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    conv = model.layer3[0].conv2.weight  # 3x3, 256 -> 256: Kaiming normal fan_out std sqrt(2 / (9 * 256))
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.05)
    assert all(
        torch.equal(m.weight, torch.ones_like(m.weight))
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    zero = build_model("imagenet_resnet18", (1, 32, 32), 10, seed=0, zero_init_residual=True)
    assert zero.conv1.in_channels == 1
    assert all(not block.bn2.weight.detach().any() for stage in (zero.layer1, zero.layer4) for block in stage)
    assert bool(zero.bn1.weight.detach().eq(1).all())


def test_model_option_errors() -> None:
    with pytest.raises(PrunelabError, match="width_per_group must be 64"):
        _on_meta("imagenet_resnet18", width_per_group=128)
    with pytest.raises(PrunelabError, match="13 conv widths"):
        _on_meta("imagenet_vgg16_bn", widths=[8] * 12)
    with pytest.raises(PrunelabError, match="unknown imagenet_resnet50 init 'nope'"):
        _on_meta("imagenet_resnet50", init="nope")
    pruned = _on_meta("imagenet_vgg16_bn", num_classes=5, widths=[8] * 13)
    assert pruned.classifier[0].in_features == 8 * 7 * 7
    with pytest.raises(PrunelabError, match="structured pruning cannot rebuild"):
        _on_meta("imagenet_resnet18").structure_options()


# --------------------------------------------------------------------------- transforms


def test_random_resized_crop_flip_is_seeded_and_sized() -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    crop = RandomResizedCropFlip(16)
    out = crop(image, 7)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out, crop(image, 7))
    assert any(not torch.equal(out, crop(image, s)) for s in range(8, 12))
    # Boxes stay inside the image and follow the area and aspect ranges.
    for seed in range(50):
        top, left, h, w = crop.crop_box(60, 40, torch.Generator().manual_seed(seed))
        assert top >= 0 and top + h <= 40 and left >= 0 and left + w <= 60
    # Whole image, no flip: exactly PIL's bilinear resize.
    whole = RandomResizedCropFlip(16, scale=(1.0, 1.0), ratio=(1.5, 1.5), flip=False)
    expected = np.array(image.resize((16, 16), Image.Resampling.BILINEAR))
    assert torch.equal(whole(image, 0), torch.from_numpy(expected).permute(2, 0, 1))


def test_resize_center_crop_matches_torchvision_recipe() -> None:
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8))  # width 45, height 30
    out = ResizeCenterCrop(32, 36)(image)
    # Resize(36): shorter side 30 -> 36, longer int(36 * 45 / 30) = 54; CenterCrop(32): top 2, left 11.
    resized = np.array(image.resize((54, 36), Image.Resampling.BILINEAR))
    assert torch.equal(out, torch.from_numpy(resized[2:34, 11:43]).permute(2, 0, 1))
    with pytest.raises(PrunelabError, match="resize_size"):
        ResizeCenterCrop(32, 30)


# --------------------------------------------------------------------------- ImageNet folders


def test_imagenet_folder_loads_and_streams(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    assert isinstance(data, StreamingBundle) and data.name == "imagenet"
    assert data.num_classes == 3 and data.input_shape == (3, 32, 32)
    assert data.info["classes"] == sorted(CLASSES)
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.info["mean"] == IMAGENET_MEAN and data.info["std"] == IMAGENET_STD
    assert data.info["pixel_bounds"] == (0.0, 1.0)  # raw pixel range, as the other image datasets
    # Inputs are on disk: shapes are known, values cannot be read.
    assert isinstance(data.train_x, StreamedInputs) and tuple(data.train_x.shape) == (12, 3, 32, 32)
    with pytest.raises(DataError, match="streamed from disk") as info:
        data.train_x[:2].cpu()
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="streamed from disk"):
        data.with_train(torch.zeros(12, 3, 32, 32), data.train_y)

    batches = _epoch(data, 0)
    assert [tuple(x.shape) for x, _ in batches] == [(5, 3, 32, 32), (5, 3, 32, 32), (2, 3, 32, 32)]
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in batches)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == data.train_y.tolist()  # a permutation of the split
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    low, high = -mean / std, (1 - mean) / std  # normalised black and white
    assert all(bool(((x >= low - 1e-5) & (x <= high + 1e-5)).all()) for x, _ in batches)
    assert len(list(data.train_batches(5, torch.Generator(), drop_last=True))) == 2


def test_same_generator_state_same_batches(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    assert _same(_epoch(data, 0), _epoch(data, 0))  # order and augmentation
    other = _epoch(data, 1)
    assert not _same(_epoch(data, 0), other)
    # A resumed run: the state captured before an epoch replays it, and the epoch's draws happen up front.
    gen = torch.Generator().manual_seed(5)
    list(data.train_batches(4, gen))
    state = gen.get_state()
    second = list(data.train_batches(4, gen))
    after = gen.get_state()
    resumed = torch.Generator()
    resumed.set_state(state)
    assert _same(second, list(data.train_batches(4, resumed)))
    assert torch.equal(after, resumed.get_state())
    # Without augmentation only the order is random: the same images as the evaluation transform.
    plain = list(data.train_batches(12, torch.Generator().manual_seed(0), augment=False))
    assert plain[0][0].shape == (12, 3, 32, 32)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_make_up_the_one_process_batches(folder: Path, world: int) -> None:
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    whole = _epoch(data, 6, batch_size=5)
    shards = [
        list(data.train_shard_batches(5, torch.Generator().manual_seed(6), r, world)) for r in range(world)
    ]
    for step, (x, y) in enumerate(whole):
        parts = [shard[step] for shard in shards]
        assert all(size == x.shape[0] for _, _, size in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(
            torch.cat([p[1] for p in parts]), y
        )


def test_parallel_decoding_gives_the_same_batches(folder: Path) -> None:
    serial = load_dataset("imagenet", path=str(folder), **SMALL)
    parallel = load_dataset("imagenet", path=str(folder), **{**SMALL, "num_workers": 2})
    assert parallel.num_workers == 2
    assert _same(_epoch(serial, 3, batch_size=3), _epoch(parallel, 3, batch_size=3))
    assert _same(list(serial.test_batches(4)), list(parallel.test_batches(4)))


def test_eval_transform_deterministic_and_exact(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    first, again = list(data.test_batches(4)), list(data.test_batches(4))
    assert _same(first, again) and [tuple(x.shape) for x, _ in first] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    with Image.open(folder / "val" / "n01000000" / "n01000000_0.JPEG") as raw:
        reference = ResizeCenterCrop(32, 36)(raw.convert("RGB")).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(first[0][0][0], (reference - mean) / std, rtol=0, atol=1e-6)


def test_per_class_sample(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    x, y = data.per_class_sample(2, torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]
    x2, _ = data.per_class_sample(2, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    big, labels = data.per_class_sample(10, torch.Generator().manual_seed(0), augment=True)
    assert big.shape == (12, 3, 32, 32) and labels.tolist() == data.train_y.tolist()


def test_validation_split_by_file_lists(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), validation=3, **SMALL)
    assert isinstance(data, StreamingBundle)
    assert len(data.train_files) == 9 and data.test_y.numel() == 3 and data.train_y.numel() == 9
    assert "validation: 3 of 12" in str(data.info["split"])
    held = {data.test_files.path(i) for i in range(3)}
    kept = {data.train_files.path(i) for i in range(9)}
    assert not held & kept and len(held | kept) == 12
    assert [tuple(x.shape) for x, _ in data.test_batches(10)] == [(3, 3, 32, 32)]
    real_test = list(data.heldout_batches(10))
    assert torch.cat([y for _, y in real_test]).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(PrunelabError, match="leaves no training examples"):
        load_dataset("imagenet", path=str(folder), validation=12, **SMALL)


def test_to_device_and_errors(folder: Path, tmp_path: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), device="cpu", **SMALL)
    assert data.device == torch.device("cpu") and data.to("meta").device == torch.device("meta")
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("imagenet", path=str(tmp_path / "nowhere"))
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagenet", path=str(empty))
    (empty / "train" / "n01").mkdir()
    with pytest.raises(DataError, match="has no images"):
        load_dataset("imagenet", path=str(empty))
    _jpeg(empty / "train" / "n01" / "a.JPEG", np.random.default_rng(0))
    with pytest.raises(DataError, match="val is missing"):
        load_dataset("imagenet", path=str(empty))
    _jpeg(empty / "val" / "n09" / "b.JPEG", np.random.default_rng(0))
    with pytest.raises(DataError, match="'n09' that the training split lacks"):
        load_dataset("imagenet", path=str(empty))
    with pytest.raises(PrunelabError, match="unknown option 'size'"):
        load_dataset("imagenet", path=str(folder), size=3)
    with pytest.raises(PrunelabError, match="min_scale"):
        load_dataset("imagenet", path=str(folder), min_scale=0)


def test_undecodable_image_is_one_line_error(folder: Path) -> None:
    (folder / "val" / "n02000000" / "n02000000_0.JPEG").write_bytes(b"not a jpeg")
    for workers in (0, 2):
        data = load_dataset("imagenet", path=str(folder), **{**SMALL, "num_workers": workers})
        with pytest.raises(DataError, match="cannot decode image .*n02000000_0.JPEG") as info:
            list(data.test_batches(6))
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- Tiny-ImageNet


def test_tiny_imagenet_through_file_url(
    fake_tiny: FakeTiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data = load_dataset("tiny_imagenet", data_dir=data_dir, num_workers=0)
    assert isinstance(data, StreamingBundle) and data.input_shape == (3, 64, 64)
    assert data.info["classes"] == ["n01", "n02"] and data.num_classes == 2
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test_y.tolist() == [["n01", "n02"].index(w) for w in fake_tiny.val_labels]
    assert data.test_files.path(0).endswith("val/images/val_0.JPEG")
    assert [tuple(x.shape) for x, _ in data.test_batches(4)] == [(4, 3, 64, 64), (2, 3, 64, 64)]
    assert [tuple(x.shape) for x, _ in data.train_batches(4, torch.Generator())] == [
        (4, 3, 64, 64),
        (2, 3, 64, 64),
    ]
    assert (data_dir / "tiny-imagenet-200" / "wnids.txt").is_file() and _leftovers(data_dir) == []

    # Second load: the extracted folder is reused, no download.
    def no_download(*args: object, **kwargs: object) -> Path:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(download_mod, "download_file", no_download)
    (data_dir / "tiny-imagenet-200.zip").unlink()
    again = load_dataset("tiny_imagenet", data_dir=data_dir, download=False, num_workers=0)
    assert _same(list(data.test_batches(6)), list(again.test_batches(6)))


def test_tiny_imagenet_md5_mismatch_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_tiny(tmp_path / "server")
    bad = ArchiveSource(fake.source.url, "0" * 32, fake.source.filename, fake.source.folder)
    monkeypatch.setitem(imagenet_mod.TINY_IMAGENET_SOURCES, "tiny_imagenet", bad)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("tiny_imagenet", data_dir=data_dir)
    message = str(info.value)
    assert "checksum mismatch" in message and "0" * 32 in message and fake.source.md5 in message
    assert list(data_dir.iterdir()) == []
    with pytest.raises(DataError, match="missing and downloading is off"):
        load_dataset("tiny_imagenet", data_dir=tmp_path / "other", download=False)


def test_failed_extraction_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _ = tiny_files()
    archive = tmp_path / "server" / "tiny-imagenet-200.zip"
    _zip_bytes(files, archive, stored=True)
    raw = bytearray(archive.read_bytes())
    last = list(files)[-1]  # corrupt the last member: every other one is written first
    at = raw.index(files[last][100:140])
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    md5 = hashlib.md5(bytes(raw)).hexdigest()  # the download itself is intact
    source = ArchiveSource(archive.as_uri(), md5, "tiny-imagenet-200.zip", "tiny-imagenet-200")
    monkeypatch.setitem(imagenet_mod.TINY_IMAGENET_SOURCES, "tiny_imagenet", source)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="cannot extract .*Bad CRC-32") as info:
        load_dataset("tiny_imagenet", data_dir=data_dir)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in data_dir.iterdir()) == ["tiny-imagenet-200.zip"]  # no folder, no temp dir


@pytest.mark.parametrize(
    "name", ["../evil.txt", "tiny-imagenet-200/../../evil.txt", "/tmp/prunelab-evil.txt", "link"]
)
def test_zip_path_traversal_and_links_rejected(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("tiny-imagenet-200/ok.txt", b"ok")
        info = zipfile.ZipInfo(name)
        if name == "link":
            info.external_attr = (0o120777 << 16) | 0x20  # a symlink to ../../etc
        handle.writestr(info, b"../../etc" if name == "link" else b"evil")
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(DataError, match="refusing"):
        extract_zip_atomic(archive, dest, "tiny-imagenet-200")
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_zip_skips_existing_and_checks_member(tmp_path: Path) -> None:
    archive = tmp_path / "good.zip"
    _zip_bytes({"pkg/ok.txt": b"ok"}, archive)
    target = extract_zip_atomic(archive, tmp_path / "out", "pkg")
    assert (target / "ok.txt").read_bytes() == b"ok" and _leftovers(tmp_path / "out") == []
    (target / "ok.txt").write_bytes(b"mine")
    extract_zip_atomic(archive, tmp_path / "out", "pkg")
    assert (target / "ok.txt").read_bytes() == b"mine"
    with pytest.raises(DataError, match="does not contain"):
        extract_zip_atomic(archive, tmp_path / "out2", "other")
    assert list((tmp_path / "out2").iterdir()) == []


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_prune_and_train_one_epoch_on_imagenet_folder(folder: Path) -> None:
    data = load_dataset("imagenet", path=str(folder), crop_size=32, resize_size=36, num_workers=2)
    model = prunelab.build_model("imagenet_resnet18", data.input_shape, data.num_classes, seed=0)
    mask = prunelab.prune(model, "random", 0.5)
    result = prunelab.train(model, data, prunelab.TrainConfig(epochs=1, batch_size=6, lr=0.01), mask=mask)
    assert len(result.history) == 1
    record = result.history[0]
    assert math.isfinite(record.train_loss) and math.isfinite(record.test_loss)
    assert 0.0 <= record.test_acc <= 1.0
    params = dict(model.named_parameters())
    assert len(mask) == 21  # 20 convs and the fc
    for name in mask:  # pruned weights stayed exactly zero through training
        assert not params[name][~mask[name]].any()


def test_data_driven_pruning_scores_streamed_data(folder: Path) -> None:
    # SNIP reads the streamed data through per_class_sample (and its input shape through train_x's shape).
    data = load_dataset("imagenet", path=str(folder), **SMALL)
    model = prunelab.build_model("resnet20", data.input_shape, data.num_classes, seed=0)
    mask = prunelab.prune(model, "snip", 0.5, data=data, seed=0)
    assert mask.density() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_streaming_to_gpu_matches_cpu_and_trains(folder: Path) -> None:
    cpu = load_dataset("imagenet", path=str(folder), **{**SMALL, "num_workers": 2})
    gpu = load_dataset("imagenet", path=str(folder), device="cuda", **{**SMALL, "num_workers": 2})
    assert gpu.device.type == "cuda"
    on_gpu, on_cpu = _epoch(gpu, 4), _epoch(cpu, 4)  # pinned, non-blocking copies, normalised on the GPU
    assert all(x.device.type == "cuda" and y.device.type == "cuda" for x, y in on_gpu)
    assert _same([(x.cpu(), y.cpu()) for x, y in on_gpu], on_cpu)
    x, y = gpu.per_class_sample(2, torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and y.tolist() == [0, 0, 1, 1, 2, 2]
    model = prunelab.build_model("imagenet_resnet18", gpu.input_shape, gpu.num_classes, seed=0).cuda()
    mask = prunelab.prune(model, "random", 0.5)
    result = prunelab.train(model, gpu, prunelab.TrainConfig(epochs=1, batch_size=4, lr=0.01), mask=mask)
    assert math.isfinite(result.history[0].train_loss)
