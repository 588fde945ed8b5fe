"""occ: compress trained CNNs by chaining techniques in the order that works best.

The public API is the functions below; each name means the same function whatever else
has been imported (no submodule of ``occ`` shares a name with them). Importing ``occ``
does not import torch; the functions that need it import it when called.

- ``load(path)``: the model stored in a ``.occ`` artifact;
- ``compress(recipe_path)`` or ``compress(model, recipe, train_data=...)``;
- ``evaluate(path)``, ``inspect(path)``, ``export(path)``;
- ``order(techniques)``, ``validate(path)``, ``ablate(recipe_path)``, ``train(arch, out=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from occ.version import __version__

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CompressionResult", "__version__", "ablate", "compress", "evaluate", "export",
           "inspect", "load", "order", "train", "validate"]


def load(path: str, *, trust_code: bool = False, model: nn.Module | None = None) -> nn.Module:
    """Load the model stored in a ``.occ`` artifact (see ``occ.engine.load.load``).

    ``model``: a fresh model of the architecture the artifact was compressed from (e.g. the
    ``nn.Sequential`` your script builds): occ's edits and tensors are applied to a copy of
    it, so nothing is imported or called; without it the recorded reference is rebuilt.
    """
    from torch.nn import Module

    from occ.engine.load import load as _load

    if model is not None and not isinstance(model, Module):
        raise TypeError(f"occ.load(model=...) takes a torch.nn.Module, got {type(model).__name__}")
    return _load(path, trust_code=trust_code, template=None if model is None else (None, model))


def compress(*args: Any, **kwargs: Any) -> Any:
    """Run a recipe file, or compress a model in memory (see ``occ.api.compress``)."""
    from occ import api

    return api.compress(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Accuracy, size and cost of an artifact or ONNX file (see ``occ.api.evaluate``)."""
    from occ import api

    return api.evaluate(*args, **kwargs)


def order(techniques: list[str]) -> dict[str, Any]:
    """The built-in order of ``techniques`` (see ``occ.api.order``)."""
    from occ import api

    return api.order(techniques)


def validate(*args: Any, **kwargs: Any) -> Any:
    """Check a recipe without running it (see ``occ.api.validate``)."""
    from occ import api

    return api.validate(*args, **kwargs)


def ablate(*args: Any, **kwargs: Any) -> Any:
    """Run every order of a recipe's techniques and rank them (see ``occ.api.ablate``)."""
    from occ import api

    return api.ablate(*args, **kwargs)


def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Train a baseline checkpoint (see ``occ.api.train``)."""
    from occ import api

    return api.train(*args, **kwargs)


def inspect(path: str) -> dict[str, Any]:
    """Header and per-layer table of an artifact (see ``occ.api.inspect``)."""
    from occ import api

    return api.inspect(path)


def export(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Export an artifact's model to ONNX (see ``occ.api.export``)."""
    from occ import api

    return api.export(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """``occ.CompressionResult``, and the modules ``occ.api`` / ``occ.errors`` imported on
    first use (as ``from occ import api`` would), so ``import occ; occ.api.order(...)``
    works without importing torch up front."""
    if name == "CompressionResult":
        from occ.engine.model_api import CompressionResult

        return CompressionResult
    if name in ("api", "errors"):
        import importlib

        return importlib.import_module(f"occ.{name}")
    raise AttributeError(f"module 'occ' has no attribute {name!r}")
