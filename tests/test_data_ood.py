"""Tests of the out-of-distribution and distribution-shift datasets: ``svhn`` (fabricated ``.mat`` files
served through ``file://`` URLs), ``cifar10c`` / ``cifar100c`` and ``image_folder`` (tiny folders made
here) and the generated ``mnist1d_shift`` / ``mnist1d_ood`` pair, including a check of its design: a
small model trained on MNIST-1D is less accurate on the shifted set and less confident on the OOD set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from prunelab.data import DATASETS, load_dataset
from prunelab.data import mnist1d as mnist1d_mod
from prunelab.data import mnist1d_shift as shift_mod
from prunelab.data import svhn as svhn_mod
from prunelab.data.folders import CORRUPTIONS, IMAGENET_MEAN, IMAGENET_STD, resize_center_crop
from prunelab.data.svhn import SVHN_MEAN, SVHN_STD, FileSource
from prunelab.data.transforms import CropFlip, normalized_zero
from prunelab.errors import DataError, PrunelabError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    """Temporary files (our temporary names start with a dot) left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _normalised(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Reference ``(p / 255 - mean) / std`` for ``(N, C, H, W)`` uint8, in float64."""
    x = torch.from_numpy(pixels).double() / 255
    return (x - torch.tensor(mean).double().view(1, -1, 1, 1)) / torch.tensor(std).double().view(1, -1, 1, 1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models: on a busy machine intra-op threads make each training step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- SVHN (fabricated .mat files)


@dataclass
class FakeSvhn:
    sources: dict[str, FileSource]
    images: dict[str, np.ndarray]  # split -> X (32, 32, 3, N) uint8, as stored
    labels: dict[str, np.ndarray]  # split -> y (N, 1) as stored (1..10)


def make_fake_svhn(server: Path, sizes: dict[str, int] | None = None) -> FakeSvhn:
    """Tiny ``.mat`` files in SVHN's format (``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) with 10 = digit 0)."""
    sizes = sizes or {"train": 7, "test": 5, "extra": 3}
    rng = np.random.default_rng(0)
    server.mkdir(parents=True, exist_ok=True)
    sources, images, labels = {}, {}, {}
    for split, n in sizes.items():
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n, dtype=np.uint8) % 10 + 1).reshape(n, 1)  # 1..10, 10 included once n >= 10
        y[0, 0] = 10
        path = server / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": y})
        sources[split] = FileSource(path.as_uri(), _md5(path), path.name)
        images[split], labels[split] = x, y
    return FakeSvhn(sources, images, labels)


@pytest.fixture
def fake_svhn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSvhn:
    fake = make_fake_svhn(tmp_path / "server")
    for split, source in fake.sources.items():
        monkeypatch.setitem(svhn_mod.SVHN_SOURCES, split, source)
    return fake


def test_svhn_loads_through_file_url(fake_svhn: FakeSvhn, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bundle = load_dataset("svhn", data_dir=data_dir)
    assert bundle.name == "svhn" and bundle.num_classes == 10
    assert bundle.train_x.shape == (7, 3, 32, 32) and bundle.test_x.shape == (5, 3, 32, 32)
    assert bundle.train_x.dtype == torch.float32 and bundle.train_y.dtype == torch.int64
    # Labels: 10 means the digit 0, the others are the digit itself.
    stored = fake_svhn.labels["train"].reshape(-1).astype(np.int64)
    assert bundle.train_y.tolist() == [0 if v == 10 else int(v) for v in stored]
    assert bundle.train_y[0].item() == 0 and 10 not in bundle.test_y.tolist()
    # Layout: X[row, col, channel, image] becomes x[image, channel, row, col].
    pixels = fake_svhn.images["test"].transpose(3, 2, 0, 1)
    torch.testing.assert_close(
        bundle.test_x.double(), _normalised(pixels, SVHN_MEAN, SVHN_STD), atol=1e-5, rtol=0
    )
    assert bundle.test_x[2, 1, 3, 4].item() == pytest.approx(
        (fake_svhn.images["test"][3, 4, 1, 2] / 255 - SVHN_MEAN[1]) / SVHN_STD[1], abs=1e-5
    )
    # Crop only: digits are not mirror-invariant.
    assert isinstance(bundle.augmentation, CropFlip)
    assert bundle.augmentation.crop and not bundle.augmentation.flip and bundle.augmentation.padding == 4
    assert bundle.augmentation.fill == normalized_zero(SVHN_MEAN, SVHN_STD)
    info = bundle.info
    assert info["mean"] == SVHN_MEAN and info["std"] == SVHN_STD and info["pixel_bounds"] == (0.0, 1.0)
    assert info["md5"] == {s.filename: s.md5 for k, s in fake_svhn.sources.items() if k != "extra"}
    assert isinstance(info["source"], str) and info["source"].startswith("file://")
    assert sorted(p.name for p in (data_dir / "svhn").iterdir()) == ["test_32x32.mat", "train_32x32.mat"]
    assert load_dataset("svhn", data_dir=data_dir, augment=False).augmentation is None


def test_svhn_extra_and_reuse_without_download(fake_svhn: FakeSvhn, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bundle = load_dataset("svhn", data_dir=data_dir, extra=True, augment=False)
    assert bundle.train_x.shape == (10, 3, 32, 32) and bundle.test_x.shape == (5, 3, 32, 32)
    extra = fake_svhn.images["extra"].transpose(3, 2, 0, 1)
    torch.testing.assert_close(
        bundle.train_x[7:].double(), _normalised(extra, SVHN_MEAN, SVHN_STD), atol=1e-5, rtol=0
    )
    # The verified files are reused: the server can vanish.
    for source in fake_svhn.sources.values():
        Path(source.url.removeprefix("file://")).unlink()
    again = load_dataset("svhn", data_dir=data_dir, extra=True, download=False)
    assert torch.equal(again.train_x, bundle.train_x) and torch.equal(again.test_y, bundle.test_y)


def test_svhn_checksum_mismatch_leaves_nothing(
    fake_svhn: FakeSvhn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = fake_svhn.sources["train"]
    monkeypatch.setitem(svhn_mod.SVHN_SOURCES, "train", FileSource(good.url, "0" * 32, good.filename))
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("svhn", data_dir=data_dir)
    assert "\n" not in str(info.value) and "train_32x32.mat" in str(info.value)
    assert list((data_dir / "svhn").iterdir()) == []  # no partial or unverified file


def test_svhn_missing_and_corrupt_files_are_explained(fake_svhn: FakeSvhn, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="missing and downloading is off") as info:
        load_dataset("svhn", data_dir=data_dir, download=False)
    assert fake_svhn.sources["train"].url in str(info.value)
    folder = data_dir / "svhn"
    folder.mkdir(parents=True)
    (folder / "train_32x32.mat").write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("svhn", data_dir=data_dir, download=False)
    # Allowed to download, the corrupt copy is replaced by a verified one.
    load_dataset("svhn", data_dir=data_dir)
    assert _md5(folder / "train_32x32.mat") == fake_svhn.sources["train"].md5
    assert _leftovers(folder) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ({"y": np.ones((2, 1), dtype=np.uint8)}, "'X' is not"),
        (
            {"X": np.zeros((32, 32, 3, 2), dtype=np.uint8), "y": np.array([[1], [11]], dtype=np.uint8)},
            "labels outside",
        ),
        ({"X": np.zeros((32, 32, 3, 2), dtype=np.uint8), "y": np.ones((3, 1), dtype=np.uint8)}, "'y'"),
        ({"X": np.zeros((28, 28, 3, 2), dtype=np.uint8), "y": np.ones((2, 1), dtype=np.uint8)}, "'X' is not"),
    ],
)
def test_svhn_malformed_files_are_refused(
    tmp_path: Path, content: dict[str, np.ndarray], message: str
) -> None:
    server = tmp_path / "server"
    server.mkdir()
    sources = {}
    for split in ("train", "test"):
        path = server / f"{split}_32x32.mat"
        scipy.io.savemat(path, content)
        sources[split] = FileSource(path.as_uri(), _md5(path), path.name)
    with pytest.raises(DataError, match=message):
        svhn_mod.load_svhn(tmp_path / "data", sources=sources)


def test_svhn_unreadable_mat_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DataError, match="cannot read"):
        svhn_mod.read_svhn_mat(bad)


# --------------------------------------------------------------------------- CIFAR-10-C / CIFAR-100-C


def make_fake_cifar_c(
    folder: Path, *, per: int = 4, num_classes: int = 10, names: tuple[str, ...] = ("gaussian_noise", "fog")
) -> dict[str, np.ndarray]:
    """``<corruption>.npy`` (5 * per, 32, 32, 3) uint8 and ``labels.npy`` (5 * per,) like CIFAR-10-C."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        name: rng.integers(0, 256, size=(5 * per, 32, 32, 3), dtype=np.uint8) for name in names
    }
    for name, images in arrays.items():
        np.save(folder / f"{name}.npy", images)
    labels = np.tile((np.arange(per) * 7) % num_classes, 5).astype(np.int64)
    labels[per : 2 * per] = (labels[per : 2 * per] + 1) % num_classes  # tell the severity blocks apart
    np.save(folder / "labels.npy", labels)
    arrays["labels"] = labels
    return arrays


def test_cifar10c_selects_corruption_and_severity(tmp_path: Path) -> None:
    fake = make_fake_cifar_c(tmp_path / "CIFAR-10-C")
    bundle = load_dataset("cifar10c", path=str(tmp_path / "CIFAR-10-C"), corruption="fog", severity=2)
    assert bundle.name == "cifar10c" and bundle.num_classes == 10
    assert bundle.test_x.shape == (4, 3, 32, 32) and bundle.test_x.dtype == torch.float32
    assert bundle.train_x.shape == (0, 3, 32, 32) and bundle.train_y.shape == (0,)  # evaluation only
    assert bundle.input_shape == (3, 32, 32) and bundle.augmentation is None
    assert bundle.test_y.tolist() == fake["labels"][4:8].tolist()
    pixels = fake["fog"][4:8].transpose(0, 3, 1, 2)  # severity 2 = the second block of 4
    torch.testing.assert_close(
        bundle.test_x.double(), _normalised(pixels, CIFAR10_MEAN, CIFAR10_STD), atol=1e-5, rtol=0
    )
    info = bundle.info
    assert info["mean"] == CIFAR10_MEAN and info["std"] == CIFAR10_STD and info["pixel_bounds"] == (0.0, 1.0)
    assert info["corruption"] == "fog" and info["severity"] == 2 and info["classes"][0] == "airplane"
    # The parent of the extracted folder works too, and the defaults are gaussian_noise at severity 3.
    default = load_dataset("cifar10c", path=str(tmp_path))
    assert default.info["corruption"] == "gaussian_noise" and default.info["severity"] == 3
    assert default.test_y.tolist() == fake["labels"][8:12].tolist()
    assert DATASETS.get("cifar10c").options() == {"path": "", "corruption": "gaussian_noise", "severity": 3}


def test_cifar100c_uses_cifar100_statistics(tmp_path: Path) -> None:
    fake = make_fake_cifar_c(tmp_path / "c100", num_classes=100, names=("snow",))
    fake["labels"][0] = 99
    np.save(tmp_path / "c100" / "labels.npy", fake["labels"])
    bundle = load_dataset("cifar100c", path=str(tmp_path / "c100"), corruption="snow", severity=1)
    assert bundle.num_classes == 100 and bundle.test_y[0].item() == 99
    pixels = fake["snow"][:4].transpose(0, 3, 1, 2)
    torch.testing.assert_close(
        bundle.test_x.double(),
        _normalised(pixels, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
        atol=1e-5,
        rtol=0,
    )


def test_cifar10c_errors_are_one_line(tmp_path: Path) -> None:
    make_fake_cifar_c(tmp_path / "c")
    path = str(tmp_path / "c")
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({}, DataError, "needs path="),
        ({"path": str(tmp_path / "nowhere")}, DataError, "not a folder"),
        ({"path": str(tmp_path)}, DataError, "no labels.npy"),
        (
            {"path": path, "corruption": "gaussian"},
            PrunelabError,
            "valid choices: gaussian_noise, shot_noise",
        ),
        ({"path": path, "corruption": "snow"}, DataError, "present there: fog, gaussian_noise"),
        ({"path": path, "severity": 6}, PrunelabError, "severity must be one of 1, 2, 3, 4, 5"),
        ({"path": path, "severity": 0}, PrunelabError, "severity"),
    ]
    for options, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            load_dataset("cifar10c", **options)
        assert "\n" not in str(info.value), options
    assert len(CORRUPTIONS) == 19 and len(set(CORRUPTIONS)) == 19
    np.save(tmp_path / "c" / "fog.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="not 5 severities"):
        load_dataset("cifar10c", path=path, corruption="fog")
    np.save(tmp_path / "c" / "fog.npy", np.zeros((20, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="uint8 images"):
        load_dataset("cifar10c", path=path, corruption="fog")


# --------------------------------------------------------------------------- image folders


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_image_folder_reads_classes_in_order(tmp_path: Path) -> None:
    root = tmp_path / "imagenet-o"
    _save(root / "n02_zebra" / "b.png", Image.new("RGB", (20, 12), (255, 255, 255)))
    _save(root / "n02_zebra" / "a.JPEG", Image.new("RGB", (12, 12), (0, 0, 0)))
    _save(root / "n01_ant" / "x.png", Image.new("L", (9, 30), 128))  # greyscale becomes RGB
    (root / "n01_ant" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    bundle = load_dataset("image_folder", path=str(root), size=8, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert bundle.name == "image_folder" and bundle.num_classes == 2
    assert bundle.test_x.shape == (3, 3, 8, 8) and bundle.train_x.shape == (0, 3, 8, 8)
    assert bundle.test_y.tolist() == [0, 1, 1]  # n01_ant, then n02_zebra's a.JPEG, b.png
    assert bundle.info["classes"] == ["n01_ant", "n02_zebra"]
    torch.testing.assert_close(bundle.test_x[0], torch.full((3, 8, 8), (128 / 255 - 0.5) / 0.5))
    torch.testing.assert_close(bundle.test_x[1], torch.full((3, 8, 8), -1.0))  # black JPEG
    torch.testing.assert_close(bundle.test_x[2], torch.full((3, 8, 8), 1.0))  # white PNG
    info = bundle.info
    assert (
        info["mean"] == (0.5, 0.5, 0.5)
        and info["std"] == (0.5, 0.5, 0.5)
        and info["pixel_bounds"] == (0.0, 1.0)
    )
    assert DATASETS.get("image_folder").options() == {
        "path": "",
        "size": 32,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def test_resize_center_crop_keeps_the_centre() -> None:
    # A 40 x 20 (W x H) image: left quarter red, middle half green, right quarter blue. Resized to
    # 16 x 8 and centre-cropped to 8 x 8, only the green middle is left.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10, 0] = 255
    pixels[:, 10:30, 1] = 255
    pixels[:, 30:, 2] = 255
    out = resize_center_crop(Image.fromarray(pixels), 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    # Bilinear (antialiased) resizing blends the outermost columns a little with red / blue.
    inner = out[:, :, 1:7]
    assert (inner[1] == 255).all() and (inner[0] == 0).all() and (inner[2] == 0).all()
    assert out[1].min() > 192 and out[0].max() < 64 and out[2].max() < 64
    tall = resize_center_crop(Image.new("RGB", (5, 11), (10, 20, 30)), 4)  # upsampled, then cropped
    assert tall.shape == (3, 4, 4) and tall[:, 0, 0].tolist() == [10, 20, 30]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs path="):
        load_dataset("image_folder")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("image_folder", path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset("image_folder", path=str(tmp_path / "empty"))
    (tmp_path / "empty" / "cls").mkdir()
    (tmp_path / "empty" / "cls" / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match="no .jpg/.jpeg/.png images in class folder"):
        load_dataset("image_folder", path=str(tmp_path / "empty"))
    (tmp_path / "empty" / "cls" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read .*broken.jpg"):
        load_dataset("image_folder", path=str(tmp_path / "empty"))
    _save(tmp_path / "ok" / "c" / "i.png", Image.new("RGB", (4, 4)))
    with pytest.raises(PrunelabError, match="mean must be a list of 3 numbers"):
        load_dataset("image_folder", path=str(tmp_path / "ok"), mean=[0.5])
    with pytest.raises(PrunelabError, match="std must be finite and positive"):
        load_dataset("image_folder", path=str(tmp_path / "ok"), std=[0.5, 0.0, 0.5])
    with pytest.raises(PrunelabError, match="size"):
        load_dataset("image_folder", path=str(tmp_path / "ok"), size=0)


# --------------------------------------------------------------------------- MNIST-1D shift / OOD


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnist1d-ood-data")


def test_generator_loop_reproduces_make_dataset() -> None:
    # generate_raw + standardisation must be make_dataset exactly, else "processed like mnist1d" is false.
    args = mnist1d_mod.dataset_args(500, 7)
    raw, labels = shift_mod.generate_raw(args, shift_mod.digit_templates())
    reference = mnist1d_mod._generate(args)
    standardised = (raw - raw.mean()) / raw.std()
    assert np.array_equal(standardised[:400], reference["x"]) and np.array_equal(
        standardised[400:], reference["x_test"]
    )
    assert np.array_equal(labels[:400], reference["y"]) and np.array_equal(labels[400:], reference["y_test"])


def test_ood_templates_are_new_shapes() -> None:
    raw = np.asarray(shift_mod.OOD_TEMPLATES)
    assert raw.shape == (10, 12) and (raw[:, 0] == 5).all() and (raw[:, -1] == 5).all()
    ood = shift_mod.ood_templates()["x"]
    digits = shift_mod.digit_templates()["x"]
    cross = np.abs(np.corrcoef(ood, digits)[:10, 10:])
    assert cross.max() < 0.6  # unlike every digit template, up to sign
    mutual = np.abs(np.corrcoef(ood)) - np.eye(10)
    assert mutual.max() < 0.8  # and unlike each other
    # Processed like the digit templates: the digits' own raw values go through the same steps.
    assert np.allclose(shift_mod.process_templates(digits * 6 + 5), digits)


def test_shift_and_ood_shapes_cache_and_determinism(
    mnist1d_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_dataset("mnist1d", data_dir=mnist1d_dir)
    for name in ("mnist1d_shift", "mnist1d_ood"):
        bundle = load_dataset(name, data_dir=mnist1d_dir, num_samples=2000)
        assert bundle.name == name and bundle.num_classes == 10 and bundle.augmentation is None
        assert bundle.train_x.shape == (1600, 1, 40) and bundle.test_x.shape == (400, 1, 40)
        assert bundle.train_x.dtype == torch.float32 and bundle.test_y.dtype == torch.int64
        assert set(bundle.test_y.tolist()) == set(range(10)) and set(bundle.train_y.tolist()) == set(
            range(10)
        )
        assert (
            bundle.info["mean"] is None and bundle.info["std"] is None and bundle.info["pixel_bounds"] is None
        )
        assert DATASETS.get(name).embedded
        # No example coincides with an MNIST-1D example (distinct generation seed and/or templates).
        distance = torch.cdist(bundle.test_x.flatten(1), base.train_x.flatten(1)).min()
        assert distance.item() > 0.1
        base_args = base.info["args"]
        assert isinstance(base_args, dict) and bundle.info["generation_seed"] != base_args["seed"]
        # Cached: a second load reads the file, and nothing half-written is left behind.
        with monkeypatch.context() as patch:
            patch.setattr(shift_mod, "generate_raw", lambda *a: pytest.fail("regenerated instead of cached"))
            again = load_dataset(name, data_dir=mnist1d_dir, num_samples=2000)
        assert torch.equal(again.test_x, bundle.test_x) and torch.equal(again.train_y, bundle.train_y)
        assert _leftovers(mnist1d_dir / name) == []
        # Deterministic from the options alone: a fresh cache gives identical tensors.
        small = load_dataset(name, data_dir=tmp_path / "a", num_samples=200, seed=3)
        fresh = load_dataset(name, data_dir=tmp_path / "b", num_samples=200, seed=3)
        assert torch.equal(small.test_x, fresh.test_x) and torch.equal(small.train_y, fresh.train_y)
        other = load_dataset(name, data_dir=tmp_path / "a", num_samples=200, seed=4)
        assert not torch.equal(small.test_x, other.test_x)
    # Standardised with MNIST-1D's statistics, so the harsher noise shows as a larger spread.
    shifted = load_dataset("mnist1d_shift", data_dir=mnist1d_dir, num_samples=2000)
    assert 0.9 < base.train_x.std().item() < 1.1 and shifted.train_x.std().item() > 1.2
    assert DATASETS.get("mnist1d_shift").options() == {"severity": 3, "num_samples": 5000, "seed": 0}
    for bad in (0, 6, "harsh"):
        with pytest.raises(PrunelabError, match="severity"):
            load_dataset("mnist1d_shift", data_dir=tmp_path, severity=bad)


def test_mnist1d_model_is_hurt_by_shift_and_less_confident_on_ood(mnist1d_dir: Path) -> None:
    base = load_dataset("mnist1d", data_dir=mnist1d_dir)
    shifted = load_dataset("mnist1d_shift", data_dir=mnist1d_dir, num_samples=2000)
    ood = load_dataset("mnist1d_ood", data_dir=mnist1d_dir, num_samples=2000)
    mild = load_dataset("mnist1d_shift", data_dir=mnist1d_dir, num_samples=1000, severity=1)
    harsh = load_dataset("mnist1d_shift", data_dir=mnist1d_dir, num_samples=1000, severity=5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(40, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, base.train_x.shape[0], (100,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(base.train_x[idx]), base.train_y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    @torch.no_grad()
    def accuracy_and_confidence(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        probs = model(x).softmax(1)
        return (probs.argmax(1) == y).float().mean().item(), probs.max(1).values.mean().item()

    clean_acc, clean_conf = accuracy_and_confidence(base.test_x, base.test_y)
    shift_acc, _ = accuracy_and_confidence(shifted.test_x, shifted.test_y)
    _, ood_conf = accuracy_and_confidence(ood.test_x, ood.test_y)
    assert clean_acc > 0.45  # the model learned something
    assert shift_acc < clean_acc - 0.08, (clean_acc, shift_acc)
    assert ood_conf < clean_conf - 0.05, (clean_conf, ood_conf)
    # Severity orders the damage.
    assert (
        accuracy_and_confidence(mild.test_x, mild.test_y)[0]
        > accuracy_and_confidence(harsh.test_x, harsh.test_y)[0]
    )


def test_registered_ood_datasets() -> None:
    expected = {
        "svhn": False,
        "cifar10c": False,
        "cifar100c": False,
        "image_folder": False,
        "mnist1d_shift": True,
        "mnist1d_ood": True,
    }
    for name, embedded in expected.items():
        entry = DATASETS.get(name)
        assert entry.embedded is embedded and entry.description and "\n" not in entry.description
    assert DATASETS.get("svhn").options() == {"augment": True, "extra": False}
    assert DATASETS.get("mnist1d_ood").options() == {"num_samples": 5000, "seed": 0}
