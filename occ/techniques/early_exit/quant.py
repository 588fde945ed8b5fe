"""Quantized exit heads: heads on a quantized backbone are quantized like it.

``quantize_heads`` (``occ.techniques.early_exit.run``): ``auto`` quantizes the heads when the
backbone has frozen quantized layers (a ``quantize`` stage ran before early exit, as in the
built-in order), ``true`` insists (a float backbone is an error), ``false`` keeps them
float32. A float head costs 32 x 32 bits per MAC, as much as a large part of a 4-bit
backbone, so threshold calibration would drop exits that pay once the head is quantized.

The rule for the heads' bits: every head layer takes the ``QuantSpec`` (weight and input
bits, granularity, symmetry, int32 bias) of the backbone's **last quantized layer in
execution order**, its classifier, the layer doing a head's job (features -> outputs). So
``keep_8bit: last`` or mixed precision hand that layer's bits to the heads too.

Steps, driven by ``occ.techniques.early_exit.run``:

1. ``prepare_``: a conv head's BatchNorm is folded into its conv
(``occ.techniques.quantize.fold``, as the
   quantize stage folds the backbone's). The head is fresh, so the fold is the identity up
   to ``1/sqrt(1 + eps)``: a quantized conv head trains as conv + bias + ReLU. Then each
   head Conv2d / Linear becomes a fake-quant layer, weight clipping and input ranges set by
   ``occ.techniques.quantize.calibrate`` with the quantize stage's defaults (``mse``, 512 train
   inputs);
2. the heads train quantization-aware through ``occ.training.fit`` (straight-through);
3. ``freeze_heads_``: integers + scales, int32 biases (``occ.techniques.quantize.layers``); the exit
   thresholds are calibrated after this, on the heads that will really run;
4. ``head_edits``: the ``fold_bn`` and ``quantize`` edits (paths ``heads.<e>.<i>``), recorded
   after the ``early_exit`` edit, so ``occ.load`` builds float heads and then swaps them.

The heads' scales and int32 biases are rounded at freezing like the backbone's: the recipe's
``quantize`` stage's ``scale_bits`` and ``bias_bits`` (``freeze_settings``; the last one
when a recipe has several).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from occ.techniques.early_exit.net import EarlyExitNet
from occ.techniques.quantize.calibrate import calibrate_acts_, calibrate_weights_
from occ.techniques.quantize.config import QuantizeConfig
from occ.techniques.quantize.fold import fold_bn_
from occ.techniques.quantize.layers import (
    QuantLayer,
    QuantSpec,
    freeze_,
    quant_layers,
    quantizable,
    swap_layers_,
)
from occ.techniques.quantize.pipeline import layer_order

_DEFAULTS = QuantizeConfig()  # calibration as the quantize stage does it by default
CALIB_SAMPLES = _DEFAULTS.calib_samples


def backbone_spec(model: nn.Module, input_shape: tuple[int, ...],
                  device: torch.device) -> tuple[str, QuantSpec] | None:
    """(path, spec) of ``model``'s last frozen quantized layer in execution order; None
    when it has none (a float backbone)."""
    frozen = {n: m for n, m in quant_layers(model).items() if m.mode == "frozen"}
    if not frozen:
        return None
    last = layer_order(model, input_shape, device, layers=frozen)[-1]
    return last, frozen[last].spec


def prepare_(ee: EarlyExitNet, spec: QuantSpec, batches: list[torch.Tensor],
             device: torch.device, seed: int = 0) -> dict[str, QuantLayer]:
    """Fold the conv heads' BN, make every head layer fake-quant with ``spec`` and
    calibrate it on ``batches`` (inputs); returns the head layers by path."""
    for head in ee.heads:
        fold_bn_(head)
    layers = swap_layers_(ee, {f"heads.{n}": spec for n in quantizable(ee.heads)})
    calibrate_weights_(layers, _DEFAULTS.calibration)
    calibrate_acts_(ee, layers, batches, method=_DEFAULTS.calibration,
                    percentile=_DEFAULTS.percentile, device=device, seed=seed)
    return layers


def freeze_heads_(ee: EarlyExitNet, scale_bits: int | None = None,
                  bias_bits: int | None = None) -> None:
    """Freeze the fake-quant head layers to integers + scales (the backbone is frozen),
    rounding scales and int32 biases as the backbone's were (``freeze_settings``)."""
    freeze_(ee.heads, scale_bits, bias_bits)


def freeze_settings(stages: Sequence[Any]) -> tuple[int | None, int | None]:
    """(scale_bits, bias_bits) of the last ``quantize`` stage among a recipe's ``stages``
    (Recipe.stages, in run order): the heads' scales and biases are stored as compactly as
    the backbone's. (None, None) when there is none (a library caller without a recipe)."""
    quantize = [s.config for s in stages if s.type == "quantize"]
    if not quantize:
        return None, None
    return quantize[-1].scale_bits, quantize[-1].bias_bits


def head_edits(ee: EarlyExitNet) -> list[tuple[str, dict[str, Any]]]:
    """(op, args) of the edits that rebuild ``ee``'s quantized heads after ``early_exit``:
    ``fold_bn`` for conv heads whose BN was folded, then ``quantize``; [] for float heads."""
    layers = {f"heads.{n}": m.spec.to_dict() for n, m in quant_layers(ee.heads).items()}
    if not layers:
        return []
    pairs = []
    for e, head in enumerate(ee.heads):
        children = list(head.named_children())
        for (a, layer), (b, nxt) in zip(children, children[1:], strict=False):
            if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.Identity):
                pairs.append([f"heads.{e}.{a}", f"heads.{e}.{b}"])  # a folded BN
    edits: list[tuple[str, dict[str, Any]]] = [("fold_bn", {"pairs": pairs})] if pairs else []
    return [*edits, ("quantize", {"layers": layers})]


__all__ = ["CALIB_SAMPLES", "backbone_spec", "freeze_heads_", "freeze_settings", "head_edits",
           "prepare_"]
