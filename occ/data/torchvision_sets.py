"""torchvision datasets (CIFAR10/100, MNIST, FashionMNIST, ImageFolder) from a local root.

occ never downloads: every dataset is opened with ``download=False``, and torchvision's
"Dataset not found or corrupted" becomes a :class:`~occ.errors.DataError` that names the
root and the files expected there. Samples stay on disk / in torchvision's arrays and
are transformed lazily; the val slice is a fixed :class:`~torch.utils.data.Subset`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS

from occ.data import folder, preprocess
from occ.data.bundle import DataBundle, DataSpecLike, calib_subset, split_val
from occ.data.checks import imagefolder_layout_problem
from occ.errors import DataError

log = logging.getLogger("occ")

DEFAULT_IMAGE_SIZE = 32  # imagefolder's side when data.image_size is unset

# What torchvision raises for a missing, truncated or foreign file: "Dataset not found"
# (RuntimeError), FileNotFoundError from ImageFolder, asserts in the MNIST idx reader,
# unpickling errors in the CIFAR reader.
_READ_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    AssertionError,
    EOFError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class _Source:
    """One torchvision dataset class and what occ needs to know about it."""

    cls: type
    shape: tuple[int, int, int]  # (C, H, W) as stored
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str  # the files expected under root, for error messages


SOURCES: dict[str, _Source] = {
    "torchvision.CIFAR10": _Source(
        datasets.CIFAR10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
    ),
    "torchvision.CIFAR100": _Source(
        datasets.CIFAR100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        "cifar-100-python/{train,test,meta}",
    ),
    "torchvision.MNIST": _Source(
        datasets.MNIST, (1, 28, 28), (0.1307,), (0.3081,),
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    ),
    "torchvision.FashionMNIST": _Source(
        datasets.FashionMNIST, (1, 28, 28), (0.2860,), (0.3530,),
        "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    ),
}


def load_torchvision(name: str, spec: DataSpecLike, *,
                     user_transform: Callable | None = None) -> DataBundle:
    """Load one of :data:`SOURCES` from ``spec.root``.

    Args:
        name: A key of :data:`SOURCES`, e.g. ``"torchvision.CIFAR10"``.
        spec: The data spec; its preprocessing fields (``occ.data.preprocess``) apply,
            with the dataset's published mean / std as the default.
        user_transform: A trusted ``data.transform`` callable's transform (training only).

    Raises:
        DataError: If the root is unset, missing, or does not hold the dataset's files.
    """
    source = SOURCES[name]
    root = _root_dir(spec.root, name)
    pre = preprocess.resolve(spec, channels=source.shape[0], mean=source.mean, std=source.std)
    shape = preprocess.output_shape(pre, source.shape)
    _check_sizes(spec)

    def open_split(train: bool, augmented: bool = False) -> Dataset:
        transform = preprocess.build_transform(pre, source.shape, train=augmented,
                                               user_transform=user_transform)
        return _open(
            lambda: source.cls(str(root), train=train, transform=transform, download=False),
            f"{root} does not hold readable {name} files (expected {root}/{source.layout})",
        )

    train_eval, test = open_split(True), open_split(False)
    train_aug = open_split(True, True) if _augments(pre, user_transform) else train_eval
    return _assemble(name, train_aug, train_eval, test, len(train_eval.classes), shape, spec,
                     pre)


def load_imagefolder(spec: DataSpecLike, *, user_transform: Callable | None = None,
                     ) -> DataBundle:
    """Load ``root/train/<class>/*`` with ``root/test`` and / or ``root/val``.

    Layouts: ``train/`` + ``test/`` (the val slice is carved out of train), ``train/`` +
    ``val/`` + ``test/`` (``val/`` is the val split), or ``train/`` + ``val/`` (``val/`` is
    the test split, the val slice is carved out of train). An optional ``calib/`` folder is
    the calibration set quantizers read. Images are converted to RGB (grayscale with
    ``channels: 1``), resized to
    ``image_size`` (default 32) square (or ``resize`` + ``crop``), padded to ``pad_to``
    and normalised with ``mean`` / ``std`` (default: ImageNet's, see
    ``occ.data.preprocess``). Class indices come from the train folder; the other folders
    may lack classes but may not add any.

    Raises:
        DataError: If the root or its ``train`` / ``test`` folders are missing or hold no
            images, a train class folder holds none, another folder has classes the train
            folder lacks, or a listed file is refused (``occ.data.folder``: special files,
            symlink loops, too many entries; unreadable images when a batch is read).
    """
    root = _root_dir(spec.root, "imagefolder")
    problem = imagefolder_layout_problem(root)
    if problem is not None:
        raise DataError(problem, where="data.root")
    train_dir = root / "train"
    test_dir = next(root / d for d in ("test", "val") if (root / d).is_dir())
    val_dir = root / "val" if test_dir.name == "test" and (root / "val").is_dir() else None

    _check_sizes(spec)
    # ImageFolder's loader converts every image to RGB, whatever its mode on disk;
    # data.channels: 1 converts that to grayscale (the first transform).
    channels = getattr(spec, "channels", None) or 3
    gray = channels == 1
    pre = preprocess.resolve(
        spec, channels=channels, resize=DEFAULT_IMAGE_SIZE,
        mean=preprocess.IMAGENET_GRAY_MEAN if gray else preprocess.IMAGENET_MEAN,
        std=preprocess.IMAGENET_GRAY_STD if gray else preprocess.IMAGENET_STD)
    stored = (channels, pre.resize or DEFAULT_IMAGE_SIZE, pre.resize or DEFAULT_IMAGE_SIZE)
    shape = preprocess.output_shape(pre, stored)
    transform = preprocess.build_transform(pre, stored, train=False)

    def open_train(tf: Callable) -> Dataset:
        return _open(lambda: _CheckedFolder(str(train_dir), transform=tf),
                     f"{train_dir} holds no images in class folders (train/<class>/*.png)")

    train_eval = open_train(transform)
    train_aug = train_eval
    if _augments(pre, user_transform):
        train_aug = open_train(preprocess.build_transform(pre, stored, train=True,
                                                          user_transform=user_transform))
    classes = train_eval.class_to_idx
    test = _open_test_folder(test_dir, classes, transform)
    val = None if val_dir is None else _open_test_folder(val_dir, classes, transform)
    said = _say_missing_classes(val, val_dir, classes) if val is not None else None
    calib = (_open_test_folder(root / "calib", classes, transform)
             if (root / "calib").is_dir() else None)
    bundle = _assemble("imagefolder", train_aug, train_eval, test, len(classes), shape, spec,
                       pre, val=val, calib=calib)
    bundle.classes = list(train_eval.classes)  # index order: what a model's outputs mean
    bundle.warnings = [said] if said else []
    return bundle


def _augments(pre: preprocess.Preprocess, user_transform: Callable | None) -> bool:
    return bool(pre.augment) or user_transform is not None


def _check_sizes(spec: DataSpecLike) -> None:
    for key in ("image_size", "resize", "crop"):
        value = getattr(spec, key, None)
        if value is not None and value < 1:
            raise DataError(f"must be >= 1, got {value}", where=f"data.{key}")


class _CheckedFolder(datasets.ImageFolder):
    """An ImageFolder that lists and reads its files within bounds (``occ.data.folder``).

    A special file, a directory symlink loop, an empty class folder or an unreadable image
    is a :class:`~occ.data.folder.ImageFileError` naming the path (exit 2), not a hang or a
    PIL exception. Module-level so worker processes can unpickle it.
    """

    def __init__(self, root: str, transform: Callable, *, allow_empty: bool = False) -> None:
        super().__init__(root, transform=transform, loader=folder.load_image,
                         allow_empty=allow_empty)

    @staticmethod
    def make_dataset(directory: str, class_to_idx: dict[str, int],
                     extensions: tuple[str, ...] | None = None,
                     is_valid_file: Callable[[str], bool] | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """torchvision's listing, bounded: :func:`occ.data.folder.list_samples`."""
        return folder.list_samples(directory, class_to_idx, extensions or IMG_EXTENSIONS,
                                   allow_empty=allow_empty)


class _FixedClassFolder(_CheckedFolder):
    """A checked ImageFolder numbered by a given ``class_to_idx``, not the folders it finds.

    ImageFolder numbers the classes it finds; a test folder missing one class would shift
    every later label, so the test folder reuses the train folder's numbering. Classes
    without images are allowed.
    """

    def __init__(self, root: str, class_to_idx: dict[str, int], transform: Callable) -> None:
        self._fixed = dict(class_to_idx)
        super().__init__(root, transform=transform, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return sorted(self._fixed, key=self._fixed.__getitem__), dict(self._fixed)


def _say_missing_classes(val: Any, val_dir: Path, class_to_idx: dict[str, int]) -> str | None:
    """The warning (logged, and returned for the run's report) when ``val/`` holds no image
    of some train classes: every decision (the gates, calibration, early-exit thresholds)
    then reads a split blind to them."""
    have = set(val.targets)
    lacking = [name for name, index in class_to_idx.items() if index not in have]
    if not lacking:
        return None
    shown = ", ".join(lacking[:8]) + (f" and {len(lacking) - 8} more" if len(lacking) > 8
                                      else "")
    said = (f"data.root: {val_dir} holds no image of class {shown}: the quality gates, "
            "calibration and early-exit thresholds read a val split without "
            f"{'it' if len(lacking) == 1 else 'them'}")
    log.warning("%s", said)
    return said


def _open_test_folder(
    test_dir: Path, class_to_idx: dict[str, int], transform: Callable
) -> _CheckedFolder:
    """Open the test folder with the train folder's class indices."""
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in class_to_idx)
    if extra:
        raise DataError(f"{test_dir} has classes not in train/: {', '.join(extra)}",
                        where="data.root")

    test = _open(
        lambda: _FixedClassFolder(str(test_dir), class_to_idx, transform=transform),
        f"{test_dir} holds no images",
    )
    if len(test) == 0:
        raise DataError(f"{test_dir} holds no images", where="data.root")
    return test


def _root_dir(root: str | None, name: str) -> Path:
    """Return ``root`` as an existing directory, or raise a DataError naming it."""
    if root is None:
        raise DataError(f"is required for {name}: a local folder with its files "
                        "(occ never downloads)", where="data.root")
    from occ.data.checks import folder_problem

    path = Path(root).expanduser()
    problem = folder_problem(str(path))
    if problem is not None:
        raise DataError(problem, where="data.root")
    return path


def _open(build: Callable[[], Dataset], message: str) -> Dataset:
    """Call torchvision's constructor ``build``, turning its failures into a DataError."""
    try:
        return build()
    except _READ_ERRORS as exc:
        raise DataError(message, where="data.root") from exc


def _assemble(
    name: str,
    train_aug: Dataset,
    train_eval: Dataset,
    test: Dataset,
    num_classes: int,
    shape: tuple[int, int, int],
    spec: DataSpecLike,
    pre: preprocess.Preprocess,
    *,
    val: Dataset | None = None,
    calib: Dataset | None = None,
) -> DataBundle:
    """Carve the val slice out of the train split (unless given) and wrap everything.

    ``train_aug`` and ``train_eval`` are the same files with the training (augmented) and
    the evaluation transform: training reads the former, the val slice the latter.
    """
    carved = val is None
    if val is None:
        train_idx, val_idx = split_val(len(train_eval), spec.val_size, spec.limit_train)
        train, val = Subset(train_aug, train_idx.tolist()), Subset(train_eval, val_idx.tolist())
    else:
        train_idx, _ = split_val(len(train_eval), 0, spec.limit_train)
        train = Subset(train_aug, train_idx.tolist())
    bundle = DataBundle(name=name, train=train, val=val, test=test, num_classes=num_classes,
                        input_shape=shape, preprocess=pre.to_dict(), calib=calib,
                        val_from_train=carved)
    calib_subset(bundle, getattr(spec, "calib_size", None))
    return bundle
