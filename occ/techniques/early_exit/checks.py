"""Loud warnings for an early-exit stage that does nothing useful.

After the heads are trained (and frozen, and the thresholds set) every head is measured on
the val split, where all decisions are read, against the gates' one definition of near
chance (``occ.quality.Quality.collapsed``). Two ways the stage can "succeed" and still be
dead weight:

* a head near chance: it learnt next to nothing (global average pooling of a
  pre-activation conv output sees little more than the mean colour). Calibration drops it
  (whoever left there would get its guess); with thresholds given, it is kept as asked;
* no val input takes any kept exit: every input pays for the heads and none saves.

Each is logged as a warning and returned for the stage's notes, naming the head and the
options that give a head more to see (``head_pool``, ``conv_head``, an exit point after a
nonlinearity) or, for unused exits, the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ.quality import Quality, quality
from occ.techniques.early_exit.net import EarlyExitNet, leaves
from occ.techniques.early_exit.split import exit_candidates

if TYPE_CHECKING:
    from occ.techniques.early_exit.config import EarlyExitConfig

_AFFINE = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class Head:
    """One trained head: its exit point, the features it reads ((C, H, W) or (F,)) and its
    val quality as if every row left there."""

    point: str
    in_shape: list[int]
    quality: Quality


def measure_heads(specs: Sequence[tuple[str, dict[str, Any]]],
                  outputs: Sequence[torch.Tensor], targets: torch.Tensor,
                  classes: int) -> list[Head]:
    """Every head's val quality as if every row left there.

    Args:
        specs: (exit point, head spec) of every head trained, in order.
        outputs: every exit's val outputs, the backbone's end last (``every_exit``).
    """
    return [Head(point, list(spec["in_shape"]), quality(o, targets, classes))
            for (point, spec), o in zip(specs, outputs, strict=False)]


def leaving(outputs: Sequence[torch.Tensor], kept: Sequence[int], thresholds: Sequence[float],
            criterion: str) -> int:
    """How many rows leave at one of the ``kept`` heads (indices into ``outputs``) with
    ``thresholds``, by the rule ``EarlyExitNet`` runs (``occ.techniques.early_exit.net``)."""
    n = len(outputs[-1])
    remaining = torch.ones(n, dtype=torch.bool)
    previous: torch.Tensor | None = None
    for e, t in zip(kept, thresholds, strict=True):
        remaining &= ~leaves(outputs[e], criterion, t, previous)
        previous = outputs[e]
    return n - int(remaining.sum())


def stage_warnings(ee: EarlyExitNet, heads: Sequence[Head], left: int, rows: int,
                   config: EarlyExitConfig) -> list[str]:
    """The warnings to give (empty: the heads learnt and inputs leave).

    Args:
        ee: the stage's model, heads kept by calibration only.
        heads: every head trained, kept or not, with its val quality.
        left, rows: val rows that take a kept exit, of ``rows``.
    """
    out = [_near_chance(ee, h, config) for h in heads if h.quality.collapsed]
    if ee.points and rows and left == 0:
        first = next(h for h in heads if h.point == ee.points[0])
        surer = ("see the warning above" if first.quality.collapsed
                 else _richer(ee.backbone, first, config))
        out.append(f"early_exit: no val input takes an exit (0 of {rows} leave at "
                   f"{', '.join(ee.points)}): every input pays for the heads and none saves "
                   f"any work; {_threshold_hint(config)}, or make the heads surer ({surer})")
    return out


def _near_chance(ee: EarlyExitNet, head: Head, config: EarlyExitConfig) -> str:
    if head.point not in ee.points:
        fate = "it is dropped (inputs that left there would get its guess)"
    elif ee.criterion == "agreement" and head.point == ee.points[0]:
        fate = "it is kept as the reference the next exit's outputs must agree with"
    else:
        fate = "it is kept (the thresholds were given), so inputs that leave there get its guess"
    return (f"early_exit: the head after {head.point} ends {head.quality.describe()} on the "
            f"val split, {head.quality.collapse()}; it learnt next to nothing and {fate}. "
            f"Give it more to see: {_richer(ee.backbone, head, config)}")


def _richer(backbone: nn.Module, head: Head, config: EarlyExitConfig) -> str:
    """The options that would give ``head`` more to learn from, those not in use first."""
    hints = []
    if len(head.in_shape) == 3 and config.head_pool == 1:
        hints.append("head_pool: 4 (pool to 4x4 instead of one mean per channel)")
    if len(head.in_shape) == 3 and not config.conv_head:
        hints.append("conv_head: true (a 3x3 conv + BN + ReLU before the pooling)")
    after = _after_nonlinearity(backbone, head.point)
    if after:
        hints.append(after)
    hints.append(f"more training: more than the {config.epochs} epoch(s) at lr {config.lr:g} "
                 "it had (epochs, lr)")
    return "; ".join(hints)


def _after_nonlinearity(backbone: nn.Module, point: str) -> str | None:
    """The hint to exit after an activation when ``point`` is a conv, linear or BN layer."""
    modules = dict(backbone.named_modules())
    module = modules.get(point)
    if not isinstance(module, _AFFINE):
        return None
    why = (f"an exit point after a nonlinearity ({point} is a {type(module).__name__}, so the "
           "head reads its output before any activation")
    cands = exit_candidates(backbone)
    later = cands[cands.index(point) + 1:] if point in cands else cands
    acts = [c for c in later if _activation(modules.get(c))]
    if acts:
        return f"{why}), e.g. exits: [{acts[0]}]"
    return (f"{why}; this model has no activation module after it to exit at: it applies "
            "them as functions such as F.relu)")


def _activation(module: Any) -> bool:
    return isinstance(module, nn.Module) and type(module).__module__ == nn.ReLU.__module__


def _threshold_hint(config: EarlyExitConfig) -> str:
    if config.criterion == "agreement":
        return "raise epsilon" if config.epsilon is not None else "raise max_mae_increase"
    if config.threshold is None:
        return "raise max_accuracy_drop"
    return f"{'lower' if config.criterion == 'confidence' else 'raise'} threshold"


__all__ = ["Head", "leaving", "measure_heads", "stage_warnings"]
