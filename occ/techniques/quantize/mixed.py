"""Mixed precision: per-layer weight bits from per-layer sensitivity and a budget.

1. Sensitivity: with every other layer in float, quantize one layer's weights at each
   candidate bit width and measure the output error on held-out data, the mean squared
   difference of the model's outputs (logits) from the float model's. Output error is
   measured, not accuracy, because it is smooth and nonzero where accuracy on a few hundred
   samples does not move.
2. Allocation, greedy: start every layer at 8 bits; repeatedly lower by one candidate step
   the layer whose step adds the least error per unit of budget saved, until the budget
   holds; then spend any budget left over (a big layer's step can overshoot) on the steps
   up that remove the most error per unit of budget. Both budgets are linear in the bits:
   ``target_avg_bits`` is sum(params_l * b_l) / sum(params_l) <= target; ``bitops_budget``
   is sum(MACs_l * b_l * a_l) <= budget. Errors are treated as additive over layers (the
   usual first-order assumption, as in HAWQ-style allocators).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from occ.errors import StageError
from occ.techniques.quantize.layers import QuantLayer

CANDIDATES = (2, 3, 4, 5, 6, 7, 8)


@torch.no_grad()
def sensitivity(model: nn.Module, layers: dict[str, QuantLayer], batches: list[torch.Tensor],
                device: torch.device, calibrate: Callable[[QuantLayer], None],
                candidates: tuple[int, ...] = CANDIDATES) -> dict[str, dict[int, float]]:
    """Output MSE when each layer alone has its weights at each candidate bit width.

    ``calibrate(layer)`` sets the layer's weight clipping for its current bits. Inputs are
    left in float here (only the weights' sensitivity is asked for). Layers are left in
    ``fake`` mode at their original bits afterwards.
    """
    model.eval()
    original = {n: m.spec.w_bits for n, m in layers.items()}
    for m in layers.values():
        m.mode, m.act_on = "float", False
    reference = [model(x.to(device)) for x in batches]
    table: dict[str, dict[int, float]] = {}
    for name, layer in layers.items():
        layer.mode = "fake"
        table[name] = {}
        for bits in candidates:
            layer.set_w_bits(bits)
            calibrate(layer)
            err = sum(float((model(x.to(device)) - ref).pow(2).mean())
                      for x, ref in zip(batches, reference, strict=True))
            table[name][bits] = err / max(len(batches), 1)
        layer.mode = "float"
    for name, m in layers.items():
        m.mode = "fake"
        m.set_w_bits(original[name])
        calibrate(m)
    return table


def allocate(table: dict[str, dict[int, float]], weights: dict[str, float], budget: float, *,
             fixed: dict[str, int], what: str) -> dict[str, int]:
    """Greedy bits per layer with sum(weights_l * bits_l) <= ``budget``.

    Args:
        table: ``sensitivity`` output (error per layer per candidate bit width).
        weights: cost per bit of each layer (params, or MACs * activation bits).
        budget: the bound on sum(weights_l * bits_l).
        fixed: layers whose bits may not change (``keep_8bit``).
        what: the budget's name, for the error message.

    Raises:
        StageError: even the lowest bits everywhere do not meet the budget.
    """
    bits = {n: fixed.get(n, max(table[n])) for n in table}
    total = sum(weights[n] * b for n, b in bits.items())
    while total > budget + 1e-9 * abs(budget):
        best, best_key = None, None
        for n, b in bits.items():
            lower = [c for c in table[n] if c < b]
            if n in fixed or not lower:
                continue
            nb = max(lower)
            saved = weights[n] * (b - nb)
            if saved <= 0:
                continue
            key = (max(table[n][nb] - table[n][b], 0.0) / saved, -saved)
            if best_key is None or key < best_key:
                best, best_key = (n, nb), key
        if best is None:
            raise StageError(f"quantize: {what} cannot be met even with "
                             f"{min(min(t) for t in table.values())}-bit weights everywhere "
                             f"(reached {total:.4g}, budget {budget:.4g})")
        total -= weights[best[0]] * (bits[best[0]] - best[1])
        bits[best[0]] = best[1]
    return _refill(table, weights, budget - total, bits, fixed)


def _refill(table: dict[str, dict[int, float]], weights: dict[str, float], slack: float,
            bits: dict[str, int], fixed: dict[str, int]) -> dict[str, int]:
    """Spend what the lowering overshot: raise the layer whose next step up removes the most
    error per unit of budget, while it fits (one large layer's step can leave a lot over)."""
    while True:
        best, best_gain = None, 0.0
        for n, b in bits.items():
            higher = [c for c in table[n] if c > b]
            if n in fixed or not higher:
                continue
            nb = min(higher)
            cost = weights[n] * (nb - b)
            gain = (table[n][b] - table[n][nb]) / cost if cost > 0 else 0.0
            if cost <= slack and gain > best_gain:
                best, best_gain = (n, nb, cost), gain
        if best is None:
            return bits
        bits[best[0]] = best[1]
        slack -= best[2]
