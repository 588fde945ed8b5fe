"""The :class:`DataBundle` every stage trains and evaluates on, and the split helpers.

Every split here is fixed: it comes from a permutation seeded with :data:`SPLIT_SEED`,
never from the run's seed. A baseline trained under one seed and compressed under another
must never calibrate on samples it was trained on, and test accuracy must be comparable
across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from occ.errors import DataError

SPLIT_SEED = 0
"""Seed of every split permutation; deliberately independent of the recipe's seed."""

SPLITS: tuple[str, ...] = ("train", "val", "test")


class DataSpecLike(Protocol):
    """What :func:`occ.data.load_data` reads from a spec (``occ.recipe.DataSpec`` fits)."""

    @property
    def dataset(self) -> str: ...
    @property
    def root(self) -> str | None: ...
    @property
    def val_size(self) -> int | None: ...
    @property
    def pad_to(self) -> int | None: ...
    @property
    def image_size(self) -> int | None: ...
    @property
    def limit_train(self) -> int | None: ...


@dataclass
class DataBundle:
    """The three splits of one dataset and what a model needs to know about them.

    Attributes:
        name: The canonical dataset name (``"mnist5k"``, ``"torchvision.CIFAR10"``, ...).
        train: What training fits on: the train split minus the val slice, then
            ``limit_train``.
        val: The held-out val slice (calibration, exit thresholds); disjoint from ``train``.
        test: The test split; the same whatever the recipe's seed or ``val_size``.
        num_classes: Number of classes (model outputs; 1 for a scalar regression target).
        input_shape: ``(C, H, W)`` of one sample after resizing and padding.
        task: ``"classification"`` (int64 class targets) or ``"regression"`` (float32
            targets of shape ``(num_classes,)``).
        classes: The class names in index order where the data names them (ImageFolder's
            ``class_to_idx``, sorted folder names); None otherwise.
        val_from_train: ``val`` is a slice held out of the train split (no val split was
            given): a model trained elsewhere on the whole train split has seen it.
        warnings: what loading said about the data (logged already), for the run's report.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    task: str = "classification"
    preprocess: dict[str, Any] | None = None
    calib: Dataset | None = None
    classes: list[str] | None = None
    val_from_train: bool = False
    warnings: list[str] = field(default_factory=list)

    def split(self, split: str) -> Dataset:
        """Return the dataset of ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"calib"``).

        ``calib`` (what quantizers calibrate their ranges on) is the calibration set when
        the data has one (an ImageFolder ``calib/`` folder, a dataset callable's ``calib``),
        else the val split; ``data.calib_size`` keeps a fixed subset of it.
        """
        if split == "calib":
            return self.val if self.calib is None else self.calib
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}", where="split")
        return getattr(self, split)

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> DataLoader:
        """Return a data loader over ``split``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: Samples per batch; the last batch may be smaller.
            shuffle: Reshuffle at every epoch, in an order fixed by ``seed``.
            seed: Seeds the loader's own generator, so two loaders built with the same
                seed give the same order whatever the global RNG state.
            num_workers: Worker processes (0 loads in the calling process).

        Returns:
            A ``DataLoader`` yielding ``(x, y)`` with ``x`` of shape ``(B, *input_shape)``.
        """
        dataset = self.split(split)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=num_workers,
            drop_last=False,
        )


def fixed_permutation(n: int) -> np.ndarray:
    """Return the fixed permutation of ``range(n)`` every split of ``n`` samples uses."""
    # numpy's Generator streams are stable across versions, so splits do not move on upgrade.
    return np.random.default_rng(SPLIT_SEED).permutation(n)


def split_val(
    n_train: int, val_size: int | None, limit_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the val slice and the training indices out of a train split of ``n_train``.

    The first ``val_size`` entries of :func:`fixed_permutation` are the val slice and the
    rest, in permuted order, are the training indices; so a bigger ``val_size`` extends the
    val slice, and ``limit_train`` keeps a fixed random subset that is class-balanced in
    expectation even when the files are sorted by class (ImageFolder).

    Args:
        n_train: Size of the dataset's train split.
        val_size: Samples held out for calibration; ``None``: ``min(500, n_train // 5)``.
        limit_train: Keep only this many training samples (all if ``None`` or larger).

    Returns:
        ``(train_indices, val_indices)``, disjoint.

    Raises:
        DataError: If ``val_size`` is negative or leaves no training sample.
    """
    from occ.data.checks import auto_val_size

    val_size = auto_val_size(val_size, n_train)
    if val_size < 0:
        raise DataError(f"must be >= 0, got {val_size}", where="data.val_size")
    if val_size >= n_train:
        raise DataError(
            f"{val_size} leaves nothing to train on: the train split has {n_train} samples",
            where="data.val_size",
        )
    if limit_train is not None and limit_train < 1:
        raise DataError(f"must be >= 1, got {limit_train}", where="data.limit_train")
    perm = fixed_permutation(n_train)
    return perm[val_size:][:limit_train], perm[:val_size]


def calib_subset(bundle: DataBundle, calib_size: int | None) -> None:
    """Keep a fixed subset of ``calib_size`` calibration samples (all when ``None``)."""
    if calib_size is None:
        return
    source = bundle.split("calib")
    if calib_size < len(source):
        bundle.calib = Subset(source, fixed_permutation(len(source))[:calib_size].tolist())
