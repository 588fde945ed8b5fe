"""Choosing exit points and attaching heads to a trained backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from occ.errors import ModelError, RecipeError
from occ.techniques.early_exit.net import Criterion, EarlyExitNet
from occ.techniques.early_exit.split import exit_candidates, owner_of, run_segment, split


@torch.no_grad()
def auto_points(model: nn.Module, n: int, sample: torch.Tensor) -> list[str]:
    """``n`` exit points spaced evenly by cumulative MACs (targets k/(n+1) of the total).

    Candidates are ``exit_candidates`` leaves (containers end where their last child does).
    """
    from occ.metrics import layer_costs

    names = dict(model.named_modules())
    cands = [c for c in exit_candidates(model) if not isinstance(names[c], nn.Sequential)]
    if len(cands) < n:
        raise RecipeError(f"{type(model).__name__} has only {len(cands)} exit points "
                          f"({', '.join(cands)}), fewer than auto: {n}", where="auto")
    segs = split(model, cands)
    per_seg = [0.0] * len(segs)
    for c in layer_costs(model, tuple(sample.shape[1:]), sample.device):
        per_seg[owner_of(c.name, segs)] += c.macs
    total, cum, acc = sum(per_seg), [], 0.0
    for m in per_seg[:-1]:
        acc += m
        cum.append(acc)
    chosen: list[int] = []
    for k in range(1, n + 1):
        target = total * k / (n + 1)
        free = [i for i in range(len(cands)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(cum[i] - target), i)))
    return [cands[i] for i in sorted(chosen)]


@torch.no_grad()
def attach(model: nn.Module, points: Sequence[str], sample: torch.Tensor, *, num_classes: int,
           conv_head: bool = False, head_pool: int = 1,
           thresholds: Sequence[float] | None = None,
           criterion: Criterion = "confidence") -> EarlyExitNet:
    """Wrap ``model`` with a fresh head after each of ``points`` (shapes read off ``sample``).

    Checks that the segmented forward reproduces ``model(sample)`` exactly.

    Raises:
        RecipeError: an invalid exit point (the message lists the valid ones).
        ModelError: the model's segments do not reproduce its forward.
    """
    model.eval()
    segs = split(model, points)
    shapes, h = [], sample
    for seg in segs[:-1]:
        h = run_segment(model, seg, h)
        if not isinstance(h, torch.Tensor) or h.dim() not in (2, 4):
            raise RecipeError(f"the output after {points[len(shapes)]!r} is not a (B, C, H, W) "
                              "or (B, F) tensor", where=f"exits[{len(shapes)}]")
        shapes.append(list(h.shape[1:]))
    specs = [{"in_shape": s, "num_classes": num_classes, "conv": conv_head, "pool": head_pool}
             for s in shapes]
    thr = list(thresholds) if thresholds is not None else [2.0] * len(points)
    ee = EarlyExitNet(model, points, specs, thr, criterion).to(sample.device).eval()
    with ee.evaluate_all_exits():
        got = ee(sample)
    if not torch.equal(got, model(sample)):
        raise ModelError(f"{type(model).__name__}: running its traced segments does not "
                         "reproduce its forward; early exit cannot split this model",
                         where="exits")
    return ee


__all__ = ["attach", "auto_points"]
