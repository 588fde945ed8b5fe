"""Structural edits: how a compressed model differs from its architecture reference.

An artifact rebuilds its model without the recipe: build the reference architecture,
then replay the edits the stages recorded, then load the tensors. An edit is
``{"op": name, "args": {...}}`` with JSON arguments; ``op`` must be registered here
(an allow-list), so replaying edits from an untrusted file runs only occ's own code.

Built-in op ``reshape`` replaces modules at given paths with fresh ones of a given type
and shape (pruned channels); techniques register their own ops (quantized layers, exit
heads) with ``register_edit``, listed in their ``TechniqueSpec.edit_modules``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from occ.errors import ArtifactError

EditFn = Callable[..., nn.Module]
_EDITS: dict[str, EditFn] = {}
_NOT_META: set[str] = set()


def register_edit(name: str, *, meta: bool = True) -> Callable[[EditFn], EditFn]:
    """Register ``fn(model, **args) -> model`` as the edit op ``name``.

    ``meta=False`` marks ops that compute on tensors (not only build modules) and
    allocate no more than the layers they replace; the artifact reader skips them when it
    sizes the model on the ``meta`` device first.
    """

    def decorate(fn: EditFn) -> EditFn:
        _EDITS[name] = fn
        if not meta:
            _NOT_META.add(name)
        return fn

    return decorate


def edit_record(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of applying registered op ``op`` with ``args``."""
    if op not in _EDITS:
        raise KeyError(f"edit op {op!r} is not registered")
    return {"op": op, "args": args}


def apply_edits(model: nn.Module, edits: list[dict[str, Any]], *,
                meta_only: bool = False) -> nn.Module:
    """Replay ``edits`` on ``model`` in order and return the (possibly new) model.

    Techniques register their ops when their edit modules are imported
    (``occ.techniques.registry.load_edit_ops``, which every load path calls first); a
    ``module`` key that artifacts of occ 0.1 recorded beside the op is ignored.

    Raises:
        ArtifactError: an unknown op or arguments that do not fit the model.
    """
    for i, edit in enumerate(edits):
        op = edit.get("op") if isinstance(edit, dict) else None
        if op not in _EDITS or not isinstance(edit.get("args", {}), dict):
            raise ArtifactError(f"edits[{i}]: unknown edit op {op!r}; known: {', '.join(_EDITS)}")
        if meta_only and op in _NOT_META:
            continue
        try:
            model = _EDITS[op](model, **edit.get("args", {}))
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
            raise ArtifactError(f"edits[{i}] ({op}): {err}") from None
    return model


# Module types ``reshape`` may build, with the constructor arguments read off an instance.
_SPECS: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "Conv2d": (nn.Conv2d, lambda m: {
        "in_channels": m.in_channels, "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size), "stride": list(m.stride),
        "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
        "padding_mode": m.padding_mode}),
    "Linear": (nn.Linear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features,
        "bias": m.bias is not None}),
    "BatchNorm1d": (nn.BatchNorm1d, lambda m: _bn_spec(m)),
    "BatchNorm2d": (nn.BatchNorm2d, lambda m: _bn_spec(m)),
}


def _bn_spec(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
            "affine": m.affine, "track_running_stats": m.track_running_stats}


def module_spec(module: nn.Module) -> dict[str, Any] | None:
    """``{"type", "args"}`` that rebuilds ``module``'s shape, or None if not a known type."""
    kind = type(module).__name__
    if kind not in _SPECS or type(module) is not _SPECS[kind][0]:
        return None
    return {"type": kind, "args": _SPECS[kind][1](module)}


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (``features.0``) with ``module``."""
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if not hasattr(parent, leaf):
        raise KeyError(f"no module {path!r}")
    setattr(parent, leaf, module)


@register_edit("reshape")
def reshape(model: nn.Module, modules: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace each module at a path with a fresh one of the recorded type and shape."""
    for path, spec in modules.items():
        kind = spec.get("type")
        if kind not in _SPECS:
            allowed = ", ".join(_SPECS)
            raise ValueError(f"{path}: module type {kind!r} not allowed; allowed: {allowed}")
        args = dict(spec.get("args", {}))
        for key in ("kernel_size", "stride", "padding", "dilation"):
            if isinstance(args.get(key), list):
                args[key] = tuple(args[key])
        model.get_submodule(path)  # raises if the path does not exist
        set_submodule(model, path, _SPECS[kind][0](**args))
    return model


def tensor_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (same dtype, shape and bytes; NaNs compare equal)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    return bool(torch.equal(a.reshape(-1).contiguous().view(torch.uint8),
                            b.reshape(-1).contiguous().view(torch.uint8)))
