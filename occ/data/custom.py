"""User data: a ``pkg.module:callable`` dataset, and datasets handed in from Python.

A dataset callable is called with no arguments and returns the splits, either as a
mapping ``{"train": ds, "val": ds, "test": ds}`` (``val`` and ``calib`` optional; a missing
``val`` is carved out of ``train`` with ``data.val_size``) or as a tuple ``(train, val,
test)`` / ``(train, test)``. Each split is a map-style ``Dataset`` yielding ``(x, y)``
with ``x`` a ``(C, H, W)`` tensor already preprocessed: occ does not touch the pixels of
user data, so the callable owns its preprocessing (the artifact records the callable's
name, and a ``preprocess`` mapping the callable may return beside the splits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from occ.data.bundle import DataBundle, DataSpecLike, calib_subset, split_val
from occ.errors import DataError


def load_callable_dataset(spec: DataSpecLike, *, trust_code: bool,
                          search: tuple[str, ...] = ()) -> DataBundle:
    """Import and call ``spec.dataset`` (``pkg.module:callable``) and bundle its splits.

    Raises:
        TrustError: without ``trust_code`` (nothing is imported).
        RecipeError: it does not import.
        DataError: it raised, or returned something other than the splits.
    """
    from occ.callables import import_callable, require_trust

    require_trust(spec.dataset, trust_code=trust_code, where="data.dataset")
    fn = import_callable(spec.dataset, where="data.dataset", search=search)
    try:
        splits = fn()
    except Exception as exc:  # the user's code failed: bad input (exit 2), named
        raise DataError(f"{spec.dataset!r} raised {exc!r}", where="data.dataset") from exc
    return bundle_from_splits(spec.dataset, _as_mapping(splits, spec.dataset), spec)


def _as_mapping(splits: Any, name: str) -> dict[str, Any]:
    if isinstance(splits, Mapping):
        return dict(splits)
    if isinstance(splits, (tuple, list)) and len(splits) in (2, 3):
        keys = ("train", "val", "test") if len(splits) == 3 else ("train", "test")
        return dict(zip(keys, splits, strict=True))
    raise DataError(f"{name!r} returned {type(splits).__name__}; expected a mapping with train, "
                    "val (optional), test, or a tuple (train, val, test)", where="data.dataset")


def bundle_from_splits(name: str, splits: Mapping[str, Any], spec: DataSpecLike | None = None,
                       *, test_from_val: bool = False) -> DataBundle:
    """A :class:`DataBundle` from user datasets (or DataLoaders, whose dataset is used).

    ``num_classes`` is the dataset's ``classes`` length when it has one, else the largest
    label + 1 over the splits; float targets make a regression task with one output per
    target value. A missing ``val`` is carved out of ``train`` (``val_size``); with
    ``test_from_val``, a missing ``test`` is the val split (given or carved).
    """
    for key in ("train", "test"):
        if splits.get(key) is None and not (key == "test" and test_from_val):
            raise DataError(f"no {key} split given", where=f"data.{key}")
    parts = {k: _dataset_of(v) for k, v in splits.items() if v is not None
             and k in ("train", "val", "test", "calib")}
    train = parts["train"]
    carved = "val" not in parts
    if "val" not in parts:
        val_size = getattr(spec, "val_size", None)
        train_idx, val_idx = split_val(len(train), val_size, getattr(spec, "limit_train", None))
        train, parts["val"] = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
    if "test" not in parts:  # only with test_from_val (checked above)
        if len(parts["val"]) == 0:
            raise DataError("no test data given and no val data to measure on instead "
                            "(val_size 0): pass test_data= (or val_data=), or a val_size "
                            "above 0", where="data.test")
        parts["test"] = parts["val"]
    x, y = _first_sample(parts["test"], "test")
    task = "regression" if torch.is_tensor(y) and y.is_floating_point() else "classification"
    for key in ("train", "val", "calib"):  # each split the caller gave: pairs, same kind
        if key in parts and len(parts[key]) and (key != "val" or not carved):
            _same_kind(_first_sample(parts[key], key)[1], task, key)
    num_classes = (int(y.numel()) if task == "regression"
                   else _num_classes(parts["train"], parts["val"], parts["test"]))
    pre = splits.get("preprocess")
    bundle = DataBundle(name=name, train=train, val=parts["val"], test=parts["test"],
                        num_classes=num_classes, input_shape=tuple(x.shape), task=task,
                        preprocess=dict(pre) if isinstance(pre, Mapping) else None,
                        calib=parts.get("calib"), val_from_train=carved)
    calib_subset(bundle, getattr(spec, "calib_size", None))
    return bundle


def _dataset_of(obj: Any) -> Dataset:
    if isinstance(obj, DataLoader):
        return obj.dataset
    if not hasattr(obj, "__getitem__") or not hasattr(obj, "__len__"):
        raise DataError(f"expected a map-style Dataset or DataLoader, got {type(obj).__name__}",
                        where="data")
    return obj


def _same_kind(target: Any, task: str, split: str) -> None:
    """Refuse ``split``'s targets when they are not the test split's kind (class indices
    for classification, float tensors for regression)."""
    floats = torch.is_tensor(target) and target.is_floating_point()
    if floats != (task == "regression"):
        have = "float targets (regression)" if floats else "class-index targets"
        want = "float targets" if task == "regression" else "class indices"
        raise DataError(f"{split} samples have {have}, but the test split has {want}",
                        where=f"data.{split}")


def _first_sample(ds: Dataset, split: str) -> tuple[torch.Tensor, Any]:
    if len(ds) == 0:
        raise DataError(f"the {split} split is empty", where=f"data.{split}")
    sample = ds[0]
    if not isinstance(sample, (tuple, list)) or len(sample) != 2 or not torch.is_tensor(sample[0]):
        raise DataError(f"{split} samples must be (image tensor (C, H, W), target) pairs, got "
                        f"{type(sample).__name__}", where=f"data.{split}")
    x, y = sample
    if x.dim() != 3:
        raise DataError(f"{split} images must be (C, H, W), got shape {tuple(x.shape)}",
                        where=f"data.{split}")
    return x, y


def _num_classes(*splits: Dataset) -> int:
    for ds in splits:
        base = ds.dataset if isinstance(ds, Subset) else ds
        classes = getattr(base, "classes", None)
        if classes is not None:
            return len(classes)
    top = -1
    for ds in splits:
        targets = getattr(ds, "targets", None)
        labels = targets if targets is not None else (ds[i][1] for i in range(len(ds)))
        top = max(top, max((int(t) for t in labels), default=-1))
    return top + 1
