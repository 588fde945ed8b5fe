"""Tests for occ.data: embedded datasets, torchvision readers on tiny real-format files, errors.

The torchvision fixtures write each dataset's published on-disk format (CIFAR pickled
batches, MNIST idx files, ImageFolder PNGs) into ``tmp_path`` so the real readers run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from occ.data import DATASETS, DataBundle, canonical_name, load_data, needs_root
from occ.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_STATS = {  # (mean, std) per channel, as published for each training set
    "torchvision.CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "torchvision.CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """Mirrors ``occ.recipe.DataSpec`` without its checks, so load_data's own checks run."""

    dataset: str = "mnist5k"
    batch_size: int = 128
    root: str | None = None
    val_size: int = 500
    pad_to: int | None = None
    image_size: int | None = None
    limit_train: int | None = None
    num_workers: int = 0


def images_of(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    """All images of a (small) dataset stacked: (N, C, H, W)."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def labels_of(dataset: torch.utils.data.Dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def row_keys(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


# --------------------------------------------------------------------------- names


def test_names_module_imports_without_torch() -> None:
    code = (
        "import sys, occ.data, occ.data.names; "
        "heavy = {'torch', 'torchvision', 'numpy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_datasets_lists_every_name_and_resolves_the_alias() -> None:
    assert "mnist5k" in DATASETS and "torchvision.CIFAR100" in DATASETS
    assert canonical_name("torchvision.ImageFolder") == "imagefolder"
    assert not needs_root("digits") and needs_root("torchvision.MNIST")


def test_unknown_dataset_names_the_allowed_ones() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist5K'.*did you mean 'mnist5k'") as e:
        load_data(Spec(dataset="mnist5K"))
    assert e.value.where == "data.dataset"
    assert all(name in str(e.value) for name in DATASETS)


# --------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k() -> DataBundle:
    return load_data(Spec())


def test_mnist5k_shapes_and_sizes(mnist5k: DataBundle) -> None:
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3500, 500, 1000)
    assert mnist5k.num_classes == 10 and mnist5k.input_shape == (1, 28, 28)
    x, y = mnist5k.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Normalised with MNIST's statistics: black pixels sit at -mean/std.
    assert mnist5k.train.tensors[0].min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD)
    assert abs(mnist5k.train.tensors[0].mean().item()) < 0.1


def test_mnist5k_splits_are_disjoint_and_cover_all_5000(mnist5k: DataBundle) -> None:
    train, val, test = (row_keys(s.tensors[0]) for s in (mnist5k.train, mnist5k.val, mnist5k.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 5000
    # The fixed permutation mixes classes into every split.
    assert set(mnist5k.test.tensors[1].tolist()) == set(range(10))


def test_mnist5k_is_the_same_whatever_the_seed(mnist5k: DataBundle) -> None:
    again = load_data(Spec(), seed=7)
    for split in ("train", "val", "test"):
        ours, theirs = getattr(mnist5k, split).tensors, getattr(again, split).tensors
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)


def test_val_size_moves_only_the_val_train_boundary(mnist5k: DataBundle) -> None:
    small = load_data(Spec(val_size=100))
    assert torch.equal(small.test.tensors[0], mnist5k.test.tensors[0])
    assert (len(small.train), len(small.val)) == (3900, 100)
    # A bigger val slice extends a smaller one.
    assert torch.equal(small.val.tensors[0], mnist5k.val.tensors[0][:100])


def test_loaders_are_seeded(mnist5k: DataBundle) -> None:
    def order(seed: int) -> torch.Tensor:
        loader = mnist5k.loader("val", 64, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader])

    torch.manual_seed(123)  # the global RNG must not matter
    first = order(0)
    torch.manual_seed(456)
    assert torch.equal(first, order(0))
    assert not torch.equal(first, order(1))
    plain = list(mnist5k.loader("val", 64))
    assert [len(y) for _, y in plain] == [64] * 7 + [52]  # drop_last is off
    assert torch.equal(torch.cat([y for _, y in plain]), mnist5k.val.tensors[1])


def test_loader_rejects_an_unknown_split(mnist5k: DataBundle) -> None:
    with pytest.raises(DataError, match="unknown split 'valid'"):
        mnist5k.loader("valid", 8)


def test_limit_train_keeps_the_first_n(mnist5k: DataBundle) -> None:
    limited = load_data(Spec(limit_train=64))
    assert len(limited.train) == 64 and len(limited.val) == 500
    assert torch.equal(limited.train.tensors[0], mnist5k.train.tensors[0][:64])
    assert len(load_data(Spec(limit_train=10**6)).train) == 3500


@pytest.mark.parametrize(("pad_to", "before", "after"), [(32, 2, 2), (31, 1, 2)])
def test_pad_to_centres_the_digits_on_black(
    mnist5k: DataBundle, pad_to: int, before: int, after: int
) -> None:
    padded = load_data(Spec(pad_to=pad_to))
    assert padded.input_shape == (1, pad_to, pad_to)
    x = padded.test.tensors[0]
    assert x.shape == (1000, 1, pad_to, pad_to)
    assert torch.equal(x[:, :, before:-after, before:-after], mnist5k.test.tensors[0])
    border = torch.ones(pad_to, pad_to, dtype=torch.bool)
    border[before:-after, before:-after] = False
    assert torch.allclose(x[:, 0, border], torch.tensor(-MNIST_MEAN / MNIST_STD))


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_normalisation() -> None:
    digits = load_data(Spec(dataset="digits"))
    assert (len(digits.train), len(digits.val), len(digits.test)) == (938, 500, 359)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    train_full = torch.cat([digits.train.tensors[0], digits.val.tensors[0]])
    assert train_full.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert train_full.std().item() == pytest.approx(1.0, abs=1e-3)
    keys = [row_keys(s.tensors[0]) for s in (digits.train, digits.val)]
    assert not keys[0] & keys[1]


def test_digits_clamps_val_size_to_half_the_train_split() -> None:
    digits = load_data(Spec(dataset="digits", val_size=5000, pad_to=10))
    assert (len(digits.train), len(digits.val)) == (719, 719)
    assert digits.input_shape == (1, 10, 10)


# --------------------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        (Spec(val_size=4000), "data.val_size", "leaves nothing to train on"),
        (Spec(val_size=-1), "data.val_size", "must be >= 0"),
        (Spec(limit_train=0), "data.limit_train", "must be >= 1"),
        (Spec(pad_to=27), "data.pad_to", "smaller than the 28x28 images"),
        (Spec(image_size=32), "data.image_size", "not supported for mnist5k"),
    ],
)
def test_out_of_range_sizes_raise_data_error(spec: Spec, where: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as e:
        load_data(spec)
    assert e.value.where == where


def test_recipe_dataspec_is_accepted() -> None:
    recipe = pytest.importorskip("occ.recipe")
    bundle = load_data(recipe.DataSpec(dataset="digits", val_size=100))
    assert len(bundle.val) == 100


# --------------------------------------------------------------------------- CIFAR fixtures


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, cls: type, per_file: int = 6) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR10/100 in the python-pickle format and trust its md5s.

    torchvision checks every file against the md5 of the published archive; the class
    attributes listing them are patched (by the caller's monkeypatch) to the tiny files'
    md5s, so the real integrity check and reader still run. Returns the written arrays.
    """
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n_classes = 100 if cls.meta["key"] == "fine_label_names" else 10
    label_key = "fine_labels" if n_classes == 100 else "labels"
    written: dict[str, list[np.ndarray]] = {f"{s}_{v}": [] for s in ("train", "test") for v in "xy"}
    for split, file_list in (("train", cls.train_list), ("test", cls.test_list)):
        for name, _ in file_list:
            # One row per image: the R, G and B 32x32 planes, as in the published batches.
            x = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
            y = rng.integers(0, n_classes, per_file)
            entry = {"batch_label": name, label_key: y.tolist(), "data": x,
                     "filenames": [f"{name}_{i}.png" for i in range(per_file)]}
            if n_classes == 100:
                entry["coarse_labels"] = (y // 5).tolist()
            (folder / name).write_bytes(pickle.dumps(entry))
            written[f"{split}_x"].append(x)
            written[f"{split}_y"].append(y)
    names = [f"class_{i}" for i in range(n_classes)]
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: names}))
    return {k: np.concatenate(v) for k, v in written.items()}


def trust_cifar_files(monkeypatch: pytest.MonkeyPatch, root: Path, cls: type) -> None:
    folder = root / cls.base_folder
    for attr in ("train_list", "test_list"):
        listed = [[name, md5(folder / name)] for name, _ in getattr(cls, attr)]
        monkeypatch.setattr(cls, attr, listed)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})


@pytest.fixture(params=["CIFAR10", "CIFAR100"])
def cifar_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from torchvision import datasets

    cls = getattr(datasets, request.param)
    written = write_cifar(tmp_path, cls)
    trust_cifar_files(monkeypatch, tmp_path, cls)
    return f"torchvision.{request.param}", tmp_path, written


def test_cifar_reads_the_pickled_batches(cifar_root) -> None:
    name, root, written = cifar_root
    bundle = load_data(Spec(dataset=name, root=str(root), val_size=5))
    n_train = len(written["train_y"])  # 5 batches x 6 for CIFAR10, 1 x 6 for CIFAR100
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (n_train - 5, 5, 6)
    assert bundle.num_classes == (10 if name.endswith("CIFAR10") else 100)
    assert bundle.input_shape == (3, 32, 32)
    assert labels_of(bundle.test) == written["test_y"].tolist()
    assert sorted(labels_of(bundle.train) + labels_of(bundle.val)) == sorted(written["train_y"])
    raw = torch.from_numpy(written["test_x"].reshape(-1, 3, 32, 32)).float() / 255
    mean, std = (torch.tensor(v)[:, None, None] for v in CIFAR_STATS[name])
    assert torch.allclose(images_of(bundle.test), (raw - mean) / std, atol=1e-5)


def test_cifar_pad_to_and_loader(cifar_root) -> None:
    name, root, _ = cifar_root
    bundle = load_data(Spec(dataset=name, root=str(root), val_size=2, pad_to=36, limit_train=3))
    assert bundle.input_shape == (3, 36, 36) and len(bundle.train) == 3
    x, y = next(iter(bundle.loader("train", 8, shuffle=True)))
    assert x.shape == (3, 3, 36, 36) and y.shape == (3,)
    # The 2-pixel border is the black pixel, -mean/std, in every channel.
    mean, std = (torch.tensor(v)[:, None, None] for v in CIFAR_STATS[name])
    black = (-mean / std).expand(3, 36, 36)
    inner = torch.zeros(36, 36, dtype=torch.bool)
    inner[2:-2, 2:-2] = True
    assert torch.allclose(x[:, :, ~inner], black[:, ~inner].expand(3, -1, -1))


def test_cifar_files_with_foreign_checksums_raise(tmp_path: Path) -> None:
    from torchvision import datasets

    write_cifar(tmp_path, datasets.CIFAR10)  # the published md5s do not match
    with pytest.raises(DataError, match=f"{tmp_path} does not hold readable torchvision.CIFAR10"):
        load_data(Spec(dataset="torchvision.CIFAR10", root=str(tmp_path), val_size=2))


# --------------------------------------------------------------------------- MNIST fixtures


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an idx file: magic 0x08 (ubyte) + ndim, big-endian dims."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(
    root: Path, folder: str, n_train: int = 12, n_test: int = 5
) -> dict[str, np.ndarray]:
    """Write uncompressed ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` under root/folder/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        written[f"{prefix}_x"], written[f"{prefix}_y"] = x, y
    return written


@pytest.mark.parametrize(
    ("folder", "mean", "std"), [("MNIST", 0.1307, 0.3081), ("FashionMNIST", 0.2860, 0.3530)]
)
def test_mnist_reads_the_idx_files(tmp_path: Path, folder: str, mean: float, std: float) -> None:
    written = write_mnist(tmp_path, folder)
    bundle = load_data(Spec(dataset=f"torchvision.{folder}", root=str(tmp_path), val_size=4))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 4, 5)
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 28, 28)
    assert labels_of(bundle.test) == written["t10k_y"].tolist()
    expected = (torch.from_numpy(written["t10k_x"]).float() / 255 - mean) / std
    assert torch.allclose(images_of(bundle.test)[:, 0], expected, atol=1e-5)
    train, val = set(bundle.train.indices), set(bundle.val.indices)
    assert train | val == set(range(12)) and not train & val


def test_mnist_pad_to_32_pads_with_black(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    bundle = load_data(Spec(dataset="torchvision.MNIST", root=str(tmp_path), val_size=2, pad_to=32))
    assert bundle.input_shape == (1, 32, 32)
    x = images_of(bundle.test)
    assert x.shape == (5, 1, 32, 32)
    black = torch.tensor(-MNIST_MEAN / MNIST_STD)
    for edge in (x[..., :2, :], x[..., -2:, :], x[..., :, :2], x[..., :, -2:]):
        assert torch.allclose(edge, black)


# --------------------------------------------------------------------------- ImageFolder


def write_pngs(folder: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10)) -> None:
    """Write ``counts[class]`` solid-colour PNGs per class; the colour encodes the class."""
    from PIL import Image

    for k, (cls, n) in enumerate(sorted(counts.items())):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.full((size[1], size[0], 3), 40 * k + i, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{i}.png")


@pytest.mark.parametrize("name", ["imagefolder", "torchvision.ImageFolder"])
def test_imagefolder_reads_pngs(tmp_path: Path, name: str) -> None:
    write_pngs(tmp_path / "train", {"cat": 4, "dog": 5})
    write_pngs(tmp_path / "test", {"cat": 2, "dog": 1})
    bundle = load_data(Spec(dataset=name, root=str(tmp_path), val_size=3))
    assert bundle.name == "imagefolder" and bundle.num_classes == 2
    assert bundle.input_shape == (3, 32, 32)  # resized from 12x10 to the default 32
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 3, 3)
    assert labels_of(bundle.test) == [0, 0, 1]
    x = images_of(bundle.test)
    assert x.shape == (3, 3, 32, 32)
    # Solid colour 40 (dog, image 0) -> (40/255 - mean) / std per channel, ImageNet's stats
    # by default (occ.data.preprocess).
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = ((40 / 255 - mean) / std)[:, None, None].expand(3, 32, 32)
    assert torch.allclose(x[2], expected, atol=1e-5)
    assert bundle.preprocess["mean"] == [0.485, 0.456, 0.406]


def test_imagefolder_accepts_val_dir_size_padding_and_grey_images(tmp_path: Path) -> None:
    from PIL import Image

    write_pngs(tmp_path / "train", {"a": 3, "b": 3, "c": 3})
    write_pngs(tmp_path / "val", {"c": 2})  # no a/ or b/: labels must still follow train/
    Image.new("L", (5, 5), 255).save(tmp_path / "train" / "a" / "grey.png")
    bundle = load_data(Spec(dataset="imagefolder", root=str(tmp_path), val_size=2,
                            image_size=16, pad_to=20))
    assert bundle.input_shape == (3, 20, 20) and bundle.num_classes == 3
    assert labels_of(bundle.test) == [2, 2]
    assert images_of(bundle.train).shape == (8, 3, 20, 20)
    # Worker processes that spawn rather than fork receive the datasets pickled.
    assert labels_of(pickle.loads(pickle.dumps(bundle.test))) == [2, 2]


# --------------------------------------------------------------------------- root errors

TORCHVISION_NAMES = [
    "torchvision.CIFAR10", "torchvision.CIFAR100", "torchvision.MNIST",
    "torchvision.FashionMNIST", "imagefolder",
]


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_sets_need_a_root(name: str) -> None:
    with pytest.raises(DataError, match="is required for .*never downloads") as e:
        load_data(Spec(dataset=name))
    assert e.value.where == "data.root"


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_missing_root_raises(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"directory not found: {missing}$") as e:
        load_data(Spec(dataset=name, root=str(missing)))
    assert e.value.where == "data.root"


def test_root_that_is_a_file_raises(tmp_path: Path) -> None:
    file = tmp_path / "cifar.tar.gz"
    file.write_bytes(b"")
    with pytest.raises(DataError, match=r"cifar\.tar\.gz is a file, not a directory$"):
        load_data(Spec(dataset="torchvision.CIFAR10", root=str(file)))


@pytest.mark.parametrize("name", TORCHVISION_NAMES[:4])
def test_root_without_the_dataset_files_raises(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match=f"{tmp_path} does not hold readable {name} files"):
        load_data(Spec(dataset=name, root=str(tmp_path)))


def test_truncated_idx_file_raises(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="does not hold readable torchvision.MNIST"):
        load_data(Spec(dataset="torchvision.MNIST", root=str(tmp_path), val_size=2))


def test_val_size_as_big_as_a_torchvision_train_split_raises(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    with pytest.raises(DataError, match="12 leaves nothing to train on") as e:
        load_data(Spec(dataset="torchvision.MNIST", root=str(tmp_path), val_size=12))
    assert e.value.where == "data.val_size"


def test_imagefolder_without_train_dir_raises(tmp_path: Path) -> None:
    write_pngs(tmp_path / "test", {"a": 1})
    with pytest.raises(DataError, match="has no train/ folder"):
        load_data(Spec(dataset="imagefolder", root=str(tmp_path)))


@pytest.mark.parametrize("layout", ["no class dirs", "empty class dir", "no image files"])
def test_imagefolder_without_images_raises(tmp_path: Path, layout: str) -> None:
    (tmp_path / "train").mkdir()
    if layout != "no class dirs":
        (tmp_path / "train" / "a").mkdir()
    if layout == "no image files":
        (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    write_pngs(tmp_path / "test", {"a": 1})
    named = "" if layout == "no class dirs" else ": class folder a"  # the empty one, named
    with pytest.raises(DataError, match=f"train{named} holds no images"):
        load_data(Spec(dataset="imagefolder", root=str(tmp_path), val_size=0))


def test_imagefolder_test_split_errors(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 3})
    spec = Spec(dataset="imagefolder", root=str(tmp_path), val_size=1)
    with pytest.raises(DataError, match="neither a test/ nor a val/ folder"):
        load_data(spec)
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="test holds no images"):
        load_data(spec)
    write_pngs(tmp_path / "test", {"zebra": 1})
    with pytest.raises(DataError, match="classes not in train/: zebra"):
        load_data(spec)
