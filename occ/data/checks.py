"""Checks of a data spec that need no tensors: ranges, names, and local folders.

``occ validate`` runs these through ``DataSpec.__post_init__``, so they must stay free of
torch, torchvision and numpy. Where the data is a local ImageFolder, the image count of
``train/`` is checked against ``val_size`` here, so a split too small for its val slice
fails at validate time rather than minutes into a run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from occ.config import check

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""What torchvision's ImageFolder reads (``torchvision.datasets.folder.IMG_EXTENSIONS``)."""

AUTO_VAL_MAX = 500
AUTO_VAL_FRACTION = 5  # auto val_size: min(500, n_train // 5)


def auto_val_size(val_size: int | None, n_train: int) -> int:
    """``val_size`` itself, or for ``None`` (auto) ``min(500, n_train // 5)``."""
    if val_size is not None:
        return val_size
    return min(AUTO_VAL_MAX, n_train // AUTO_VAL_FRACTION)


def check_spec(spec: Any) -> None:
    """Check a ``DataSpec``'s fields; RecipeError located at the field (``__post_init__``)."""
    from occ.data.names import DATASETS, is_callable_ref
    from occ.data.preprocess import AUGMENTATIONS

    check(spec.dataset in DATASETS or is_callable_ref(spec.dataset), "dataset",
          _unknown_dataset(spec.dataset))
    from occ.limits import MAX_BATCH_SIZE, MAX_IMAGE_SIDE, MAX_WORKERS

    check(spec.batch_size >= 1, "batch_size", f"must be >= 1, got {spec.batch_size}")
    check(spec.batch_size <= MAX_BATCH_SIZE, "batch_size",  # a file's may set eval's memory
          f"must be at most {MAX_BATCH_SIZE}, got {spec.batch_size}")
    check(spec.val_size is None or spec.val_size >= 0, "val_size",
          f"must be >= 0, got {spec.val_size}")

    check(0 <= spec.num_workers <= MAX_WORKERS, "num_workers",
          f"must be in [0, {MAX_WORKERS}], got {spec.num_workers}")
    for key in ("limit_train", "calib_size"):
        value = getattr(spec, key)
        check(value is None or value >= 1, key, f"must be >= 1, got {value}")
    for key in ("pad_to", "image_size", "resize", "crop"):  # bounded: they size every image
        side = getattr(spec, key)
        check(side is None or 1 <= side <= MAX_IMAGE_SIDE, key,
              f"must be in [1, {MAX_IMAGE_SIDE}] pixels, got {side}")
    check(spec.image_size is None or spec.resize is None, "resize",
          "give image_size (square resize) or resize (+ crop), not both")
    _check_channels(spec)
    for name in spec.augment:
        check(name in AUGMENTATIONS, "augment",
              f"unknown augmentation {name!r}{_close(name, AUGMENTATIONS)}; "
              f"allowed: {', '.join(AUGMENTATIONS)}")
    check(spec.transform is None or is_callable_ref(spec.transform), "transform",
          f"must be a pkg.module:callable reference, got {spec.transform!r}")
    from occ.data.names import EMBEDDED, IMAGEFOLDER, canonical_name

    if spec.dataset not in EMBEDDED and not is_callable_ref(spec.dataset):
        check(spec.root is not None, "root", f"is required for {spec.dataset} (never downloaded)")
        problem = folder_problem(str(spec.root))
        check(problem is None, "root", problem or "")
        if canonical_name(spec.dataset) == IMAGEFOLDER:
            problem = imagefolder_layout_problem(Path(str(spec.root)))
            check(problem is None, "root", problem or "")
            check_imagefolder_sizes(Path(str(spec.root)), spec.val_size)


def folder_problem(root: str) -> str | None:
    """Why ``root`` is not a data folder (missing, empty, a file, a FIFO, a device ...),
    said on one line, or None. By ``stat``: nothing is opened."""
    from occ.limits import file_kind, printable_path

    shown = printable_path(root)
    if root == "":  # os.stat("") fails, but open("") elsewhere may read "" as the cwd
        return "is empty; give the data's folder (. for the working directory)"
    try:
        mode = os.stat(root).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL
        return f"directory not found: {shown}"
    except OSError as err:
        return f"cannot read {shown}: {err.strerror}"
    if not stat.S_ISDIR(mode):
        return f"{shown} is {file_kind(mode)}, not a directory"
    return None


def unused_val_size(spec: Any) -> str | None:
    """The warning for a ``val_size`` that nothing reads (an ImageFolder with ``val/`` and
    ``test/``: ``val/`` is the val split, and ``train/`` is not carved), or None."""
    from occ.data.names import IMAGEFOLDER, canonical_name

    if spec.val_size is None or spec.root is None or not isinstance(spec.dataset, str):
        return None
    root = Path(str(spec.root))
    if canonical_name(spec.dataset) != IMAGEFOLDER or not (
            (root / "val").is_dir() and (root / "test").is_dir()):
        return None
    return (f"data.val_size {spec.val_size} is not used: {root / 'val'} is the val split "
            "(train/ is not carved); remove val_size, or the val/ folder to hold out "
            "val_size images of train/ instead")


def imagefolder_layout_problem(root: Path) -> str | None:
    """What an ImageFolder root lacks (``train/`` and ``test/`` or ``val/``), or None.

    A directory listing only: ``occ validate`` and ``load_imagefolder`` share it.
    """
    from occ.limits import printable_path

    if not (root / "train").is_dir():
        return f"{printable_path(root)} has no train/ folder (expected train/<class>/*.png)"
    if not any((root / d).is_dir() for d in ("test", "val")):
        return (f"{printable_path(root)} has neither a test/ nor a val/ folder (expected "
                "test/<class>/*.png or val/<class>/*.png beside train/)")
    return None


def _check_channels(spec: Any) -> None:
    """``channels`` (imagefolder only) is 1 or 3; ``mean`` / ``std`` fit it
    (``occ.data.preprocess.normalisation_problem``)."""
    from occ.data.names import IMAGEFOLDER, canonical_name
    from occ.data.preprocess import normalisation_problem

    channels = spec.channels
    check(channels is None or channels in (1, 3), "channels",
          f"must be 1 (grayscale) or 3 (RGB), got {channels}")
    check(channels is None or canonical_name(spec.dataset) == IMAGEFOLDER, "channels",
          f"applies to imagefolder only; {spec.dataset} gives its own channels")
    for key in ("mean", "std"):
        problem = normalisation_problem(key, getattr(spec, key), channels)
        check(problem is None, key, problem or "")


def _unknown_dataset(name: Any) -> str:
    from occ.data.names import DATASETS

    return (f"unknown dataset {name!r}{_close(str(name), DATASETS)}; allowed: "
            f"{', '.join(DATASETS)}, or pkg.module:callable")


def _close(name: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def count_images(folder: Path) -> int:
    """Images under ``folder/<class>/`` (what ImageFolder would read), without opening them."""
    total = 0
    for entry in os.scandir(folder):
        if entry.is_dir():
            total += sum(1 for f in os.scandir(entry.path)
                         if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
    return total


def check_imagefolder_sizes(root: Path, val_size: int | None) -> None:
    """An explicit ``val_size`` must leave training images in ``root/train``.

    Not checked when ``val/`` and ``test/`` both exist (the val split is then ``val/``).
    """
    train = root / "train"
    if val_size is None or not train.is_dir() or ((root / "val").is_dir()
                                                  and (root / "test").is_dir()):
        return
    n = count_images(train)
    check(val_size < n, "val_size",
          f"{val_size} leaves nothing to train on: {train} has {n} images; lower it, leave it "
          f"unset (auto: {auto_val_size(None, n)}) or add val/ beside train/ and test/")
