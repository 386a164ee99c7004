"""Tests of prunelab.data: downloads, archives, CIFAR reading, augmentations and every registered dataset.

CIFAR archives are fabricated in the real format (pickled dicts of bytes keys, ``(N, 3072)`` uint8 data)
and served through ``file://`` URLs, so the real download/extract/unpickle path runs offline.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from prunelab.data import DATASETS, DataBundle, default_data_dir, load_dataset
from prunelab.data import cifar as cifar_mod
from prunelab.data import mnist1d as mnist1d_mod
from prunelab.data.digits import stratified_split
from prunelab.data.download import ArchiveSource, download_file, ensure_archive, extract_tar_atomic
from prunelab.data.transforms import CropFlip, RandomShift1d, normalize, normalized_zero
from prunelab.errors import DataError, PrunelabError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


# --------------------------------------------------------------------------- fabricated CIFAR archives


@dataclass
class FakeCifar:
    source: ArchiveSource
    archive: Path
    train_data: np.ndarray  # (N, 3072) uint8, in file order
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _dump(obj: object) -> bytes:
    # Protocol 3 stores bytes as bytes (protocol 2 under Python 3 would go through _codecs.encode).
    return pickle.dumps(obj, protocol=3)


def make_fake_cifar(root: Path, variant: str, *, per_file: int = 4, n_test: int = 6) -> FakeCifar:
    """A small archive laid out exactly like the real one, with a ``file://`` source."""
    rng = np.random.default_rng(0 if variant == "cifar10" else 1)
    num_classes = 10 if variant == "cifar10" else 100
    if variant == "cifar10":
        folder, filename = "cifar-10-batches-py", "cifar-10-python.tar.gz"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, label_key = "test_batch", "batches.meta", b"labels"
        meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": per_file}
    else:
        folder, filename = "cifar-100-python", "cifar-100-python.tar.gz"
        train_files = ["train"]
        test_file, meta_file, label_key = "test", "meta", b"fine_labels"
        meta = {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        }
    n_train = per_file * len(train_files)
    train_data = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    train_data[0, 0] = 255  # image 0, red channel, pixel (0, 0)
    train_data[0, 1024] = 0  # image 0, green channel, pixel (0, 0)
    train_labels = (np.arange(n_train) * 7) % num_classes
    test_data = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_labels = (np.arange(n_test) * 3 + num_classes - 1) % num_classes
    root.mkdir(parents=True, exist_ok=True)
    archive = root / filename
    with tarfile.open(archive, "w:gz") as tar:
        for i, name in enumerate(train_files):
            rows = slice(i * per_file, (i + 1) * per_file)
            batch = {
                b"batch_label": name.encode(),
                label_key: [int(v) for v in train_labels[rows]],
                b"data": train_data[rows],
                b"filenames": [f"img{j}.png".encode() for j in range(per_file)],
            }
            if variant == "cifar100":
                batch[b"coarse_labels"] = [int(v) % 20 for v in train_labels[rows]]
            _add_bytes(tar, f"{folder}/{name}", _dump(batch))
        test_batch = {label_key: [int(v) for v in test_labels], b"data": test_data}
        _add_bytes(tar, f"{folder}/{test_file}", _dump(test_batch))
        _add_bytes(tar, f"{folder}/{meta_file}", _dump(meta))
    source = ArchiveSource(url=archive.as_uri(), md5=_md5(archive), filename=filename, folder=folder)
    return FakeCifar(source, archive, train_data, train_labels, test_data, test_labels)


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCifar:
    fake = make_fake_cifar(tmp_path / "server", "cifar10")
    monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar10", fake.source)
    return fake


def _leftovers(directory: Path) -> list[str]:
    """Temporary files/dirs (our temp names start with a dot) left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- CIFAR loading


def test_cifar10_loads_through_file_url(fake_cifar10: FakeCifar, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bundle = load_dataset("cifar10", data_dir=data_dir)
    assert isinstance(bundle, DataBundle)
    assert bundle.name == "cifar10" and bundle.num_classes == 10
    assert bundle.train_x.shape == (20, 3, 32, 32) and bundle.test_x.shape == (6, 3, 32, 32)
    assert bundle.train_x.dtype == torch.float32 and bundle.train_y.dtype == torch.int64
    assert bundle.train_y.tolist() == fake_cifar10.train_labels.tolist()
    assert bundle.test_y.tolist() == fake_cifar10.test_labels.tolist()
    # Known pixels map to (p / 255 - mean) / std.
    assert bundle.train_x[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.4914) / 0.2023, abs=1e-6)
    assert bundle.train_x[0, 1, 0, 0].item() == pytest.approx((0.0 - 0.4822) / 0.1994, abs=1e-6)
    # Layout: each row is three row-major 32x32 planes.
    raw = torch.from_numpy(fake_cifar10.test_data.reshape(-1, 3, 32, 32)).double() / 255
    expected = (raw - torch.tensor(CIFAR10_MEAN).double().view(1, 3, 1, 1)) / torch.tensor(
        CIFAR10_STD
    ).double().view(1, 3, 1, 1)
    torch.testing.assert_close(bundle.test_x.double(), expected, atol=1e-5, rtol=0)
    assert isinstance(bundle.augmentation, CropFlip) and bundle.augmentation.padding == 4
    assert bundle.augmentation.fill == normalized_zero(CIFAR10_MEAN, CIFAR10_STD)
    assert bundle.info["classes"] == [f"class{i}" for i in range(10)]
    assert (data_dir / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert _md5(data_dir / "cifar-10-python.tar.gz") == fake_cifar10.source.md5
    assert _leftovers(data_dir) == []


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_cifar(tmp_path / "server", "cifar100", per_file=12)
    monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar100", fake.source)
    bundle = load_dataset("cifar100", data_dir=tmp_path / "data", augment=False)
    assert bundle.num_classes == 100 and bundle.augmentation is None
    assert bundle.train_x.shape == (12, 3, 32, 32) and bundle.test_x.shape == (6, 3, 32, 32)
    assert bundle.train_y.tolist() == fake.train_labels.tolist()
    assert bundle.test_y.max().item() == 99
    assert bundle.train_x[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.5071) / 0.2675, abs=1e-6)
    assert bundle.info["classes"] == [f"fine{i}" for i in range(100)]


def test_second_load_reuses_extracted_data(
    fake_cifar10: FakeCifar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    first = load_dataset("cifar10", data_dir=data_dir)

    def no_download(*args: object, **kwargs: object) -> Path:
        raise AssertionError("downloaded again")

    monkeypatch.setattr("prunelab.data.download.download_file", no_download)
    fake_cifar10.archive.unlink()  # the "server" is gone
    (data_dir / "cifar-10-python.tar.gz").unlink()  # only the extracted folder remains
    second = load_dataset("cifar10", data_dir=data_dir, download=False)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)


def test_existing_archive_is_extracted_without_download(fake_cifar10: FakeCifar, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / fake_cifar10.source.filename).write_bytes(fake_cifar10.archive.read_bytes())
    fake_cifar10.archive.unlink()
    bundle = load_dataset("cifar10", data_dir=data_dir, download=False)
    assert bundle.train_x.shape == (20, 3, 32, 32)


def test_checksum_mismatch_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_cifar(tmp_path / "server", "cifar10")
    bad = ArchiveSource(fake.source.url, "0" * 32, fake.source.filename, fake.source.folder)
    monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar10", bad)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=data_dir)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message and "0" * 32 in message and fake.source.md5 in message
    assert list(data_dir.iterdir()) == []


def test_download_file_checksum_and_atomicity(tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"hello prunelab" * 1000)
    good = _md5(payload)
    dest_dir = tmp_path / "dest"
    dest = download_file(payload.as_uri(), dest_dir / "file.bin", good)
    assert dest.read_bytes() == payload.read_bytes()
    # A failed re-download leaves the existing good file untouched and no temporary file behind.
    with pytest.raises(DataError, match="expected md5 f+, got " + good):
        download_file(payload.as_uri(), dest, "f" * 32)
    assert dest.read_bytes() == payload.read_bytes()
    assert sorted(p.name for p in dest_dir.iterdir()) == ["file.bin"]
    with pytest.raises(DataError, match="could not download"):
        download_file((tmp_path / "nope.bin").as_uri(), dest_dir / "other.bin", good)
    assert sorted(p.name for p in dest_dir.iterdir()) == ["file.bin"]


def test_missing_archive_without_download_is_explained(fake_cifar10: FakeCifar, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "missing" in message and fake_cifar10.source.url in message and "\n" not in message


def test_corrupt_archive_without_download(fake_cifar10: FakeCifar, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / fake_cifar10.source.filename).write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", data_dir=data_dir, download=False)
    # With downloading allowed, the bad archive is replaced by a good one.
    bundle = load_dataset("cifar10", data_dir=data_dir, download=True)
    assert bundle.train_x.shape[0] == 20


def _tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _add_bytes(tar, "pkg/ok.txt", b"ok")
        for member in members:
            if member.isfile():
                tar.addfile(member, io.BytesIO(b"evil"))
            else:
                tar.addfile(member)
    return path


def _member(name: str, *, link: str | None = None, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = kind, link
    else:
        info.size = 4
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../evil.txt"),
        _member("pkg/../../evil.txt"),
        _member("/tmp/prunelab-evil.txt"),
        _member("pkg/link", link="../../evil.txt", kind=tarfile.SYMTYPE),
        _member("pkg/abslink", link="/etc/passwd", kind=tarfile.SYMTYPE),
        _member("pkg/hard", link="../evil.txt", kind=tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out"],
)
def test_path_traversal_rejected(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = _tar_with(tmp_path / "evil.tar.gz", [member])
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(DataError, match="refusing"):
        extract_tar_atomic(archive, dest, "pkg")
    assert list(dest.iterdir()) == []  # nothing extracted, temporary directory removed
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_is_atomic_and_skips_existing(tmp_path: Path) -> None:
    inner_link = _member("pkg/alias", link="ok.txt", kind=tarfile.SYMTYPE)  # a link inside is fine
    archive = _tar_with(tmp_path / "good.tar.gz", [inner_link])
    dest = tmp_path / "out"
    target = extract_tar_atomic(archive, dest, "pkg")
    assert target == dest / "pkg" and (target / "ok.txt").read_bytes() == b"ok"
    assert _leftovers(dest) == []
    (target / "ok.txt").write_bytes(b"mine")
    extract_tar_atomic(archive, dest, "pkg")  # already there: untouched
    assert (target / "ok.txt").read_bytes() == b"mine"
    with pytest.raises(DataError, match="does not contain"):
        extract_tar_atomic(archive, tmp_path / "out2", "other")
    assert list((tmp_path / "out2").iterdir()) == []


def test_ensure_archive_download_then_reuse(tmp_path: Path) -> None:
    fake = make_fake_cifar(tmp_path / "server", "cifar10")
    folder = ensure_archive(fake.source, tmp_path / "data", download=True)
    assert folder == tmp_path / "data" / "cifar-10-batches-py" and folder.is_dir()
    fake.archive.unlink()
    assert ensure_archive(fake.source, tmp_path / "data", download=False) == folder


# --------------------------------------------------------------------------- restricted unpickling


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Exploit(marker)}, protocol=3)
    with pytest.raises(DataError, match="refusing to unpickle"):
        cifar_mod.restricted_load(payload)
    assert not marker.exists()
    with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
        cifar_mod.restricted_load(pickle.dumps(eval, protocol=3))


def test_restricted_unpickler_reads_arrays_including_legacy_module_path() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    payload = pickle.dumps({b"data": array, b"labels": [1, 2, 3]}, protocol=3)
    loaded = cifar_mod.restricted_load(payload)
    assert isinstance(loaded, dict) and np.array_equal(loaded[b"data"], array)
    # Files written by numpy < 2 (like the real CIFAR pickles) name numpy.core.multiarray.
    legacy = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert legacy != payload
    loaded = cifar_mod.restricted_load(legacy)
    assert isinstance(loaded, dict) and np.array_equal(loaded[b"data"], array)


def test_tampered_batch_file_is_refused(fake_cifar10: FakeCifar, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    load_dataset("cifar10", data_dir=data_dir)
    marker = tmp_path / "pwned"
    (data_dir / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(_Exploit(marker), protocol=3))
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", data_dir=data_dir)
    assert not marker.exists()


# --------------------------------------------------------------------------- transforms


def _raw_images(b: int = 8, c: int = 3, h: int = 10, w: int = 12, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=gen, dtype=torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalize_uint8_and_float_agree_and_input_untouched() -> None:
    raw = _raw_images()
    as_float = raw.float() / 255
    before = as_float.clone()
    out_u8 = normalize(raw, CIFAR10_MEAN, CIFAR10_STD)
    out_f = normalize(as_float, CIFAR10_MEAN, CIFAR10_STD)
    assert out_u8.dtype == torch.float32 and out_u8.shape == raw.shape
    torch.testing.assert_close(out_u8, out_f)
    assert torch.equal(as_float, before)
    assert out_u8[0, 2, 0, 0].item() == pytest.approx(
        (raw[0, 2, 0, 0].item() / 255 - 0.4465) / 0.2010, abs=1e-6
    )
    with pytest.raises(PrunelabError, match="3 channels"):
        normalize(raw, (0.5, 0.5), (0.2, 0.2))


def test_cropflip_keeps_shape_dtype_and_is_deterministic() -> None:
    x = normalize(_raw_images(), CIFAR10_MEAN, CIFAR10_STD)
    aug = CropFlip.for_normalization(CIFAR10_MEAN, CIFAR10_STD)
    out1, out2 = aug(x, _gen(5)), aug(x, _gen(5))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, aug(x, _gen(6)))
    gen = _gen(5)
    aug(x, gen)
    assert not torch.equal(gen.get_state(), _gen(5).get_state())  # randomness came from the generator


def test_flip_only_is_exact_mirror() -> None:
    x = torch.randn(16, 3, 5, 7, generator=_gen(0))
    out = CropFlip(crop=False, flip=True)(x, _gen(1))
    flipped = torch.rand(16, generator=_gen(1)) < 0.5  # replay the draw
    assert 0 < int(flipped.sum()) < 16
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert torch.equal(out[~flipped], x[~flipped])


def test_cropflip_equals_pad_then_normalise_reference() -> None:
    """Batched CropFlip on normalised data == per-image torchvision-style crop of zero-padded raw pixels."""
    raw = _raw_images(b=12)
    b, _, h, w = raw.shape
    out = CropFlip.for_normalization(CIFAR10_MEAN, CIFAR10_STD, padding=4)(
        normalize(raw, CIFAR10_MEAN, CIFAR10_STD), _gen(3)
    )
    replay = _gen(3)
    off_y = torch.randint(0, 9, (b,), generator=replay)
    off_x = torch.randint(0, 9, (b,), generator=replay)
    flips = torch.rand(b, generator=replay) < 0.5
    padded_raw = torch.nn.functional.pad(raw, (4, 4, 4, 4))  # raw zeros, normalised afterwards
    for i in range(b):
        crop = padded_raw[i : i + 1, :, off_y[i] : off_y[i] + h, off_x[i] : off_x[i] + w]
        if flips[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i : i + 1], normalize(crop, CIFAR10_MEAN, CIFAR10_STD)), f"image {i}"


def _first_offsets(seed: int) -> tuple[int, int]:
    """The (row, column) crop offsets CropFlip(padding=4) draws first from generator ``seed``."""
    gen = _gen(seed)
    return int(torch.randint(0, 9, (1,), generator=gen)), int(torch.randint(0, 9, (1,), generator=gen))


def test_crop_at_origin_shows_fill_in_first_rows() -> None:
    # A seed whose single draw is offset (0, 0): the image then starts 4 rows/columns in.
    seed = next(s for s in range(10_000) if _first_offsets(s) == (0, 0))
    x = normalize(_raw_images(b=1, h=8, w=8), CIFAR10_MEAN, CIFAR10_STD)
    out = CropFlip.for_normalization(CIFAR10_MEAN, CIFAR10_STD, padding=4, flip=False)(x, _gen(seed))
    zero = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), CIFAR10_MEAN, CIFAR10_STD)
    assert torch.equal(out[:, :, :4, :], zero.expand(1, 3, 4, 8))  # padded value == normalised 0, exactly
    assert torch.equal(out[:, :, :, :4], zero.expand(1, 3, 8, 4))
    assert torch.equal(out[:, :, 4:, 4:], x[:, :, :4, :4])


def test_random_shift_1d_matches_reference() -> None:
    x = torch.randn(6, 2, 9, generator=_gen(0))
    out = RandomShift1d(padding=3, fill=(-1.0, -2.0))(x, _gen(4))
    assert out.shape == x.shape
    offsets = torch.randint(0, 7, (6,), generator=_gen(4))
    fill = torch.tensor([-1.0, -2.0]).view(2, 1).expand(2, 3)
    for i in range(6):
        padded = torch.cat([fill, x[i], fill], dim=1)
        assert torch.equal(out[i], padded[:, offsets[i] : offsets[i] + 9])


def test_augmentation_through_bundle_batches() -> None:
    x = torch.randn(10, 3, 6, 6, generator=_gen(0))
    y = torch.zeros(10, dtype=torch.long)
    bundle = DataBundle("t", x, y, x, y, 1, augmentation=CropFlip(padding=2))
    first = [b for b, _ in bundle.train_batches(4, _gen(9))]
    second = [b for b, _ in bundle.train_batches(4, _gen(9))]
    assert [t.shape[0] for t in first] == [4, 4, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


# --------------------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnist1d-data")


def test_mnist1d_shapes_and_cache(mnist1d_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.random.seed(123)
    before = np.random.random(3)
    np.random.seed(123)
    bundle = load_dataset("mnist1d", data_dir=mnist1d_dir)
    assert np.array_equal(np.random.random(3), before)  # global RNG not reseeded by the generator
    assert bundle.train_x.shape == (4000, 1, 40) and bundle.test_x.shape == (1000, 1, 40)
    assert bundle.train_x.dtype == torch.float32 and bundle.train_y.dtype == torch.int64
    assert bundle.num_classes == 10 and set(bundle.train_y.tolist()) == set(range(10))
    assert bundle.augmentation is None
    assert abs(bundle.train_x.mean().item()) < 0.1 and 0.8 < bundle.train_x.std().item() < 1.2
    (cache,) = (mnist1d_dir / "mnist1d").glob("*.npz")
    with np.load(cache, allow_pickle=False) as npz:  # a plain .npz, no pickled objects
        assert npz["x"].shape == (4000, 40)

    def no_generate(args: object) -> object:
        raise AssertionError("regenerated instead of using the cache")

    monkeypatch.setattr(mnist1d_mod, "_generate", no_generate)
    again = load_dataset("mnist1d", data_dir=mnist1d_dir)
    assert torch.equal(again.train_x, bundle.train_x) and torch.equal(again.test_y, bundle.test_y)
    assert _leftovers(mnist1d_dir / "mnist1d") == []


def test_mnist1d_options_and_determinism(tmp_path: Path) -> None:
    small = load_dataset("mnist1d", data_dir=tmp_path / "a", num_samples=500, seed=7)
    assert small.train_x.shape == (400, 1, 40) and small.test_x.shape == (100, 1, 40)
    same = load_dataset("mnist1d", data_dir=tmp_path / "b", num_samples=500, seed=7)  # regenerated
    assert torch.equal(small.train_x, same.train_x) and torch.equal(small.train_y, same.train_y)
    other = load_dataset("mnist1d", data_dir=tmp_path / "a", num_samples=500, seed=8)
    assert not torch.equal(small.train_x, other.train_x)
    assert len(list((tmp_path / "a" / "mnist1d").glob("*.npz"))) == 2
    with pytest.raises(PrunelabError, match="num_samples"):
        load_dataset("mnist1d", data_dir=tmp_path, num_samples="many")


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_normalisation() -> None:
    bundle = load_dataset("digits")
    assert bundle.train_x.shape[1:] == (1, 8, 8) and bundle.test_x.shape[1:] == (1, 8, 8)
    assert bundle.train_x.shape[0] + bundle.test_x.shape[0] == 1797
    assert bundle.test_x.shape[0] == pytest.approx(0.2 * 1797, abs=10)
    assert bundle.num_classes == 10 and bundle.augmentation is None
    assert bundle.train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert bundle.train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    again = load_dataset("digits")
    assert torch.equal(bundle.train_x, again.train_x) and torch.equal(bundle.test_y, again.test_y)
    other = load_dataset("digits", split_seed=1)
    assert not torch.equal(bundle.test_y, other.test_y) or not torch.equal(bundle.test_x, other.test_x)
    assert load_dataset("digits", augment=True).augmentation is not None


def test_stratified_split_is_deterministic_and_stratified() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    train, test = stratified_split(labels, 0.2, seed=0)
    train2, test2 = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == labels.size
    assert np.bincount(labels[test]).tolist() == [2, 4, 6, 8, 10]
    assert not np.array_equal(test, stratified_split(labels, 0.2, seed=1)[1])
    with pytest.raises(PrunelabError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.5)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_determinism_and_learnable() -> None:
    bundle = load_dataset("synthetic")
    assert bundle.train_x.shape == (256, 1, 16) and bundle.test_x.shape == (128, 1, 16)
    assert bundle.num_classes == 4 and bundle.train_y.bincount().tolist() == [64] * 4
    again = load_dataset("synthetic")
    assert torch.equal(bundle.train_x, again.train_x) and torch.equal(bundle.test_y, again.test_y)
    assert not torch.equal(bundle.train_x, load_dataset("synthetic", seed=1).train_x)
    # Nearest class mean (a linear classifier) is far above chance (0.25).
    flat_train, flat_test = bundle.train_x.flatten(1), bundle.test_x.flatten(1)
    centroids = torch.stack([flat_train[bundle.train_y == k].mean(0) for k in range(4)])
    predicted = torch.cdist(flat_test, centroids).argmin(1)
    assert (predicted == bundle.test_y).float().mean().item() > 0.8


def test_synthetic_image_shape_and_independent_test_set() -> None:
    images = load_dataset("synthetic", input_shape=[3, 8, 8], num_classes=3, train_size=30, test_size=9)
    assert images.input_shape == (3, 8, 8) and images.train_x.shape == (30, 3, 8, 8)
    bigger = load_dataset("synthetic", input_shape=(3, 8, 8), num_classes=3, train_size=60, test_size=9)
    assert torch.equal(images.test_x, bigger.test_x)  # train_size does not move the test set
    with pytest.raises(PrunelabError, match="num_classes"):
        load_dataset("synthetic", num_classes=1)


# --------------------------------------------------------------------------- registry


def test_unknown_dataset_lists_valid_choices() -> None:
    with pytest.raises(PrunelabError) as info:
        load_dataset("imagenet22k")
    message = str(info.value)
    assert "imagenet22k" in message and "\n" not in message
    for name in ("mnist1d", "digits", "cifar10", "cifar100", "synthetic"):
        assert name in message


def test_unknown_option_is_one_line() -> None:
    with pytest.raises(PrunelabError) as info:
        load_dataset("synthetic", colour=True)
    message = str(info.value)
    assert "colour" in message and "num_classes" in message and "\n" not in message


def test_registry_entries_and_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"mnist1d", "digits", "cifar10", "cifar100", "synthetic", "svhn", "mnist1d_shift"} <= set(
        DATASETS.names()
    )
    for name, entry in DATASETS.items():
        assert entry.description and "\n" not in entry.description, name
    assert DATASETS.get("digits").embedded and not DATASETS.get("cifar10").embedded
    assert DATASETS.get("mnist1d").options() == {"num_samples": 5000, "seed": 42}
    bundle = load_dataset("SYNTHETIC", device=torch.device("cpu"))
    assert bundle.device == torch.device("cpu")
    monkeypatch.setenv("PRUNELAB_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("PRUNELAB_DATA_DIR")
    assert default_data_dir() == Path.home() / ".cache" / "prunelab" / "data"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cropflip_on_gpu_matches_cpu() -> None:
    x = torch.randn(8, 3, 10, 10, generator=_gen(0))
    aug = CropFlip(padding=4, fill=(0.1, 0.2, 0.3))
    assert torch.equal(aug(x, _gen(2)), aug(x.cuda(), _gen(2)).cpu())
