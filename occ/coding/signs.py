"""Signs of a weight's nonzeros, coded in passes under their neighbours' signs (issue 20).

Within a pruned filter, neighbouring weights mostly share a sign: a receptive field is a
positive blob beside a negative one, a conv kernel a signed stroke. Once the positions
are known, the nonzeros are split into the same three column passes as the mask
(``occ.coding.ctxnb.passes``, grid width ``b``), and the sign of each nonzero in pass 2
or 3 is coded under the sum of the known signs of its neighbours (``ctxnb.shifts``:
diagonal ones for pass 2, direct ones for pass 3), clipped to -2..2; pass 1 has one
context. Each of the 11 contexts has its own probability of a minus sign, stored as a
byte ``j`` (``p = j / 256``, exact), fitted by the encoder from counts. On a 95 %-pruned
LeNet-300-100 first layer the signs cost a quarter of a bit each instead of one::

    varint b, then 11 x u8 j (1..255)

Every context of a pass is known before the pass is decoded, so each pass is decoded
context by context in vectorised calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from occ.coding import ctxnb, dyadic
from occ.coding.bitio import clamp, varint_len
from occ.coding.frame import Parts, Sink, Source

SPREAD = 2  # neighbour sign sums are clipped to -SPREAD..SPREAD
PER_PASS = 2 * SPREAD + 1
N_CONTEXTS = 1 + 2 * PER_PASS  # pass 1: one context; passes 2 and 3: one per clipped sum


def _pass_contexts(grid: np.ndarray, column_pass: np.ndarray, b: int, pass_: int,
                   at: np.ndarray) -> np.ndarray:
    """Contexts of the nonzeros at ``at`` (flat), all in ``pass_`` (1 or 2), from the signs
    in ``grid`` (R, C int8: -1 / +1, 0 for a zero) of the nonzeros in earlier passes
    (``column_pass``: each column's pass; later passes' signs are ignored)."""
    known = grid * (column_pass < pass_).view(np.int8)
    total = ctxnb.neighbour_count(known, ctxnb.shifts(b, pass_)).reshape(-1)[at]
    return (1 + (pass_ - 1) * PER_PASS + SPREAD) + clamp(total, -SPREAD, SPREAD)


def contexts(nz: np.ndarray, negative: np.ndarray, rows: int, cols: int,
             b: int, grid: np.ndarray | None = None) -> np.ndarray:
    """The context (0 .. N_CONTEXTS-1) of each nonzero at ``nz`` (flat, ascending), given
    all the signs (``negative``): what the decoder will know when it reaches it.
    ``grid``: ``sign_grid(nz, negative, rows, cols)`` when the caller has it."""
    grid = sign_grid(nz, negative, rows, cols) if grid is None else grid
    column_pass = ctxnb.passes(cols, b)
    pass_of = column_pass[nz % cols] if cols else np.zeros(0, np.int8)
    out = np.zeros(len(nz), dtype=np.int64)  # pass 0: context 0
    for pass_ in (1, 2):  # counted at every nonzero, kept for this pass's (a np.where is
        # faster than selecting them first)
        out = np.where(pass_of == pass_, _pass_contexts(grid, column_pass, b, pass_, nz), out)
    return out


def sign_grid(nz: np.ndarray, negative: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(R, C) int8: -1 / +1 at the nonzeros at ``nz``, 0 elsewhere."""
    grid = np.zeros(rows * cols, dtype=np.int8)
    grid[nz] = np.where(negative, np.int8(-1), np.int8(1))
    return grid.reshape(rows, cols)


def coherent(sign: np.ndarray, widths: list[int], margin: float = 0.1) -> bool:
    """Whether nonzeros next to each other (``c ± 1`` or ``c ± b`` in a row) agree (or
    disagree) in sign at least ``margin`` away from chance: a cheap test before ``plan``.
    ``sign``: the tensor's signs as an (R, C) int8 matrix (0 where zero)."""
    cols = sign.shape[1]
    for s in sorted({1, *widths} - {0}):
        if s >= cols:
            continue
        both = sign[:, s:] * sign[:, :-s]  # +1: same sign, -1: opposite, 0: a zero
        same = np.count_nonzero(both > 0)
        opposite = np.count_nonzero(both) - same
        if same + opposite >= 16 and abs(same / (same + opposite) - 0.5) >= margin:
            return True
    return False


def _probabilities(ctx: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, float]:
    """(j per context, bits of the signs under p = j / 256)."""
    cells = np.bincount(ctx, minlength=N_CONTEXTS)
    minus = np.bincount(ctx, weights=negative, minlength=N_CONTEXTS)
    j = np.clip(np.rint(256 * minus / np.maximum(cells, 1)), 1, 255).astype(np.int64)
    j[cells == 0] = 128
    p = j / 256
    bits = float(-(minus * np.log2(p) + (cells - minus) * np.log2(1 - p)).sum())
    return j, bits


@dataclass(frozen=True)
class SignPlan:
    """The chosen grid width, byte probabilities, bits (stored bytes included) and the
    context of every nonzero."""

    b: int
    j: np.ndarray
    bits: float
    ctx: np.ndarray


def plan(nz: np.ndarray, negative: np.ndarray, rows: int, cols: int,
         widths: list[int], grid: np.ndarray | None = None) -> SignPlan:
    """The cheapest grid width among ``widths`` for these signs (``grid``: ``sign_grid(nz,
    negative, rows, cols)`` when the caller has it)."""
    if not widths:
        raise ValueError("no grid width to plan the signs on")
    grid = sign_grid(nz, negative, rows, cols) if grid is None else grid
    plans = []
    for b in widths:
        ctx = contexts(nz, negative, rows, cols, b, grid)
        j, bits = _probabilities(ctx, negative)
        plans.append(SignPlan(b, j, bits + 8 * (N_CONTEXTS + varint_len(b)), ctx))
    return min(plans, key=lambda p: p.bits)  # the first of equals, like a strict <


def _bernoulli(j: int) -> constriction.stream.model.Bernoulli:
    return dyadic.bernoulli(j / 256)


def encode(sink: Sink, negative: np.ndarray, chosen: SignPlan) -> None:
    """Append the signs (``negative``: one bool per nonzero) as ``chosen`` plans them.

    Contexts are numbered pass by pass, so one sort by context gives the decoder's order.
    """
    sink.side.varint(chosen.b)
    sink.side.raw(bytes(chosen.j.astype(np.uint8)))
    ctx = chosen.ctx.astype(np.uint8)
    order = np.argsort(ctx, kind="stable")
    bounds = np.searchsorted(ctx[order], np.arange(N_CONTEXTS + 1))
    bits = negative[order].astype(np.int32)
    for c in np.flatnonzero(np.diff(bounds)):
        sink.encode(bits[bounds[c]:bounds[c + 1]], _bernoulli(int(chosen.j[c])))


def decode(source: Source, nz: np.ndarray, rows: int, cols: int,
           parts: Parts | None = None) -> np.ndarray:
    """The bool ``negative`` of each nonzero at ``nz``, as ``encode`` wrote them."""
    b = source.side.varint(max(cols, 1))
    j = np.frombuffer(source.side.raw(N_CONTEXTS), dtype=np.uint8).astype(np.int64)
    if (j == 0).any():
        raise ValueError("sign probability of zero")
    column_pass = ctxnb.passes(cols, b)
    pass_of = column_pass[nz % cols] if cols else np.zeros(0, np.int8)
    grid = np.zeros((rows, cols), dtype=np.int8)  # the signs decoded so far
    flat = grid.reshape(-1)
    bits = 0.0
    for pass_ in range(3):
        here = np.flatnonzero(pass_of == pass_)
        ctx = _pass_contexts(grid, column_pass, b, pass_, nz[here]) if pass_ else \
            np.zeros(len(here), dtype=np.int64)
        order = np.argsort(ctx, kind="stable")
        sorted_ctx = ctx[order]
        for c in np.unique(sorted_ctx):
            chosen = nz[here[order[sorted_ctx == c]]]
            got = source.decode(_bernoulli(int(j[c])), len(chosen)).astype(bool)
            flat[chosen] = np.where(got, np.int8(-1), np.int8(1))
            if parts is not None:
                p = j[c] / 256
                minus = int(got.sum())
                bits -= minus * math.log2(p) + (len(chosen) - minus) * math.log2(1 - p)
    if parts is not None:
        parts.add_bits("signs", bits)
    return flat[nz] < 0
