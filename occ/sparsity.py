"""Weight masks: which weights of each Conv2d / Linear layer are kept.

A mask is a bool tensor shaped like the weight (True = kept). Masks are re-applied after
every optimiser step while fine-tuning, so pruned weights stay exactly zero.

Counts are exact: ``round(sparsity * n)`` weights are pruned (over all chosen layers for
``scope="global"``, in each layer for ``scope="layer"``), ties at the threshold broken
by position. Passing the ``previous`` masks of a gradual schedule keeps every weight
pruned before pruned now (they rank below any kept weight), so masks only shrink.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from occ.errors import RecipeError

Scope = Literal["global", "layer"]


LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
"""The layers pruning acts on and ``exclude`` may name."""

SHOWN = 12
"""Layer names an unknown-``exclude`` error lists at most."""


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear layer of ``model``, by name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def prunable(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """The layers whose weights pruning acts on: every Conv2d and Linear, by name.

    Raises:
        RecipeError: a name in ``exclude`` is not a Conv2d / Linear layer of ``model``
            (located at ``exclude[i]``, listing the layers there are).
    """
    layers = layers_of(model)
    check_names(exclude, layers)
    skip = set(exclude)
    return {n: m for n, m in layers.items() if n not in skip}


def check_names(names: Iterable[str], layers: dict[str, nn.Module],
                where: str = "exclude") -> None:
    """RecipeError at ``where[i]`` naming the first of ``names`` not in ``layers``."""
    for i, name in enumerate(names):
        check_layer(name, layers, where=f"{where}[{i}]")


def check_layer(name: str, layers: dict[str, nn.Module], *, where: str) -> None:
    """The one check of an ``exclude`` entry: ``name`` is one of ``layers`` (the model's
    Conv2d / Linear layers, :func:`layers_of`), else RecipeError at ``where`` listing them.

    Stages call it through :func:`check_names` when they run; ``occ.engine.preflight``
    calls it before the first stage.
    """
    if name not in layers:
        names = list(layers)
        listing = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
        raise RecipeError(f"no Conv2d / Linear layer {name!r} in the model; layers: "
                          f"{listing}", where=where)


def _prune_lowest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep-mask (flat) that drops the ``n_prune`` lowest scores, ties by position."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_prune:
        # argsort is stable, so equal magnitudes are pruned in index order: exact count.
        keep[torch.argsort(scores, stable=True)[:n_prune]] = False
    return keep


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float, *, scope: Scope = "global",
                    exclude: Iterable[str] = (),
                    previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Magnitude masks that zero the ``sparsity`` fraction of smallest |w|.

    Args:
        model: the model; its Conv2d / Linear layers not in ``exclude`` are masked.
        sparsity: the fraction of weights to prune, in [0, 1).
        scope: ``global`` ranks all layers' weights together; ``layer`` prunes each
            layer to ``sparsity`` on its own.
        exclude: layer names kept dense (no mask).
        previous: masks of what is already pruned (an earlier level's masks, or
            ``nonzero_masks``): what they prune stays pruned, even where that is more than
            ``sparsity``.
    """
    layers = prunable(model, exclude)
    scores = {}
    for name, module in layers.items():
        s = module.weight.detach().abs().reshape(-1).float()
        if previous is not None and name in previous:
            s = torch.where(previous[name].reshape(-1).to(s.device), s, torch.full_like(s, -1.0))
        scores[name] = s
    if scope == "layer":
        masks = {name: _prune_lowest(s, int(round(sparsity * s.numel())))
                 for name, s in scores.items()}
    elif not scores:
        return {}
    else:
        flat = torch.cat(list(scores.values()))
        keep = _prune_lowest(flat, int(round(sparsity * flat.numel())))
        masks, start = {}, 0
        for name, s in scores.items():
            masks[name] = keep[start:start + s.numel()]
            start += s.numel()
    # a score of -1 (pruned before) is kept only when fewer than those are to be pruned
    return {name: (m & (scores[name] >= 0)).reshape(layers[name].weight.shape)
            for name, m in masks.items()}


@torch.no_grad()
def nonzero_masks(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Masks of the weights that are not exactly zero (what an earlier pruning left), per
    prunable layer but ``exclude``: the ``previous`` of a model's first pruning."""
    return {name: module.weight.detach() != 0
            for name, module in prunable(model, exclude).items()}


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every masked-out weight in place.

    A frozen quantized layer (``occ.techniques.quantize.layers``) stores integers, not its float
    weight:
    their masked-out entries become the zero point, so the stored layer is pruned too.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[name]
        w = module.weight
        w.mul_(mask.to(w.device, w.dtype))
        q = getattr(module, "weight_int", None)
        if q is not None:
            zp = module.w_zero_point.reshape(-1, *([1] * (q.dim() - 1))).to(q.dtype)
            q.copy_(torch.where(mask.to(q.device, torch.bool), q, zp.expand_as(q)))


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights in each prunable layer."""
    return {n: 1.0 - int(torch.count_nonzero(m.weight)) / m.weight.numel()
            for n, m in prunable(model).items()}


def overall_sparsity(model: nn.Module, exclude: Iterable[str] = ()) -> float:
    """Fraction of zero weights over all prunable layers (but ``exclude``) together."""
    layers = prunable(model, exclude).values()
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(m.weight.numel() - int(torch.count_nonzero(m.weight)) for m in layers)
    return zeros / total if total else 0.0
