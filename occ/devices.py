"""Which device a run and each of its stages use: the one owner of device names.

``resolve_device`` turns a recipe's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
``mps``) into a ``torch.device``, refusing one this machine lacks;
``check_stage_devices`` does that for every stage's own ``device`` before any work
(``occ.engine.preflight``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from occ.errors import RecipeError

if TYPE_CHECKING:
    from occ.recipe import Stage


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, if present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RecipeError(f"unknown device {name!r}; allowed: auto, cpu, cuda[:N]",
                          where="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {name!r} requested but CUDA is not available", where="device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RecipeError(f"device {name!r} requested but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)", where="device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RecipeError(f"device {name!r} requested but MPS is not available", where="device")
    return device


def check_stage_devices(source: str, stages: Sequence[Stage], written: Sequence[int]) -> None:
    """Refuse, before any work, a stage whose own ``device`` this machine lacks, at
    ``stages[i].device`` (``written``: each stage's index in the recipe as written); it
    failed only when that stage began, after the earlier ones ran."""
    for stage, index in zip(stages, written, strict=True):
        name = getattr(stage.config, "device", "auto")
        if name == "auto":
            continue
        try:
            resolve_device(name)
        except RecipeError as err:
            raise RecipeError(err.message, where=f"{source}: stages[{index}].device") from None


__all__ = ["check_stage_devices", "resolve_device"]
