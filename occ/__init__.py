"""occ: compress trained CNNs by chaining techniques in the order that works best.

``occ.load(path)`` rebuilds the model stored in a ``.occ`` artifact. Importing ``occ``
does not import torch; the functions that need it import it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def load(path: str, *, trust_code: bool = False) -> nn.Module:
    """Load the model stored in a ``.occ`` artifact (see ``occ.engine.load.load``)."""
    from occ.engine.load import load as _load

    return _load(path, trust_code=trust_code)


def __getattr__(name: str) -> Any:
    if name in ("compress", "evaluate", "order", "validate", "train", "inspect"):
        from occ import api

        return getattr(api, name)
    if name == "CompressionResult":
        from occ.engine.model_api import CompressionResult

        return CompressionResult
    raise AttributeError(name)
