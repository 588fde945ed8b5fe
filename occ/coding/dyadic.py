"""Exact dyadic Bernoulli probabilities ``p = 2^-(e/4)``, shared by the mask and sign coders.

``occ.coding.ctxmask``, ``occ.coding.ctxnb`` and ``occ.coding.signs`` code bits under
probabilities named by a small integer exponent ``e`` (quarter-octaves). They are built
with ``ldexp`` from four literal constants (no ``pow``), so encoder and decoder compute
identical floats, and therefore identical streams, on any machine.
"""

from __future__ import annotations

import constriction
import numpy as np

# 2^(-j/4), j = 0..3, as exact literals (no pow, so every machine gets the same floats).
_QUARTER = np.array([1.0, 0.8408964152537145, 0.7071067811865476, 0.5946035575013605])
P_MIN, P_MAX = 2.0 ** -20, 1.0 - 2.0 ** -12
E_MAX = 80  # 2^-(80/4) = P_MIN: larger exponents give the same clipped probability


def _dyadic(e: np.ndarray) -> np.ndarray:
    return np.clip(np.ldexp(_QUARTER[e % 4], -(e // 4)), P_MIN, P_MAX)


P = _dyadic(np.arange(E_MAX + 1))  # p for e = 0 .. E_MAX (e <= 0 clips to P_MAX)
BITS_ONE, BITS_ZERO = -np.log2(P), -np.log2(1.0 - P)  # cost of a set / a clear bit, per e
for _table in (P, BITS_ONE, BITS_ZERO):
    _table.setflags(write=False)


def cell_bits(cells: np.ndarray, ones: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Bits of ``cells`` cells (``ones`` of them set) under exponents ``e``, summed over
    the last axis (the contexts)."""
    return (ones * BITS_ONE[e] + (cells - ones) * BITS_ZERO[e]).sum(-1)


def p_at(exponent: int) -> float:
    """``P`` at ``exponent`` clipped to 0 .. E_MAX: the probability of one context."""
    return float(P[min(max(exponent, 0), E_MAX)])


def bernoulli(p: float) -> constriction.stream.model.Bernoulli:
    """The coding model of a bit that is set with probability ``p``."""
    return constriction.stream.model.Bernoulli(p, perfect=False)
