"""Mask cells coded in three passes, the later ones under the context of their neighbours.

A pruned weight keeps its nonzeros in clusters: a neuron of an MNIST MLP keeps the
pixels of a blob, a conv filter the taps of a stroke. Row and column density classes
(``occ.coding.ctxmask``) cannot see that; a cell's neighbours can. Sequential
(CABAC-style) neighbour contexts would need a decoding loop per cell, so the columns of
each row are split instead into three interleaved passes, each decoded whole:

- seen as a grid of width ``b`` (``x = c % b``, ``y = c // b``; ``b = 0``: one line,
  ``x = c``, ``y = 0``): pass 1 holds ``x, y`` both even (1-D: ``x % 4 == 0``), pass 2
  ``x, y`` both odd (1-D: ``x % 4 == 2``), pass 3 the rest (``x + y`` odd);
- pass 1 is coded under the density classes alone; a pass-2 cell also under how many of
  its diagonal neighbours ``c ± b ± 1`` (1-D: ``c ± 2``) are set, all of them in pass 1;
  a pass-3 cell under how many of ``c ± 1``, ``c ± b`` are set, all in passes 1-2.

``b = kw`` makes the grid a conv kernel's, ``b = 28`` a flattened 28 x 28 image's. Only
neighbours in earlier passes are counted (the decoder knows those), so any ``b`` is safe;
at a grid row's end ``c ± 1`` reaches into the next grid row, a (harmless) imprecision.
Every cell of a pass has its context before the pass is decoded, so it is decoded group
by group in vectorised calls, like ``ctxmask``.

A cell's probability is the class model's, shifted per *state* (pass 1; pass 2 with n
set neighbours; pass 3 with n): ``p = 2^-(slope·class + offset + adj[state]) / 4``,
clipped like ``ctxmask.probability``. The encoder fits ``slope``, ``offset`` and the
adjustments on counts (coordinate descent) and keeps this coding only when it is
smaller::

    varint b, u8 states S (1..11), svarint adj[0..S-1]  (adj[0] = pass 1 = 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from occ.coding import ctxmask, dyadic
from occ.coding.bitio import clamp, varint_len
from occ.coding.frame import Parts, Sink, Source

NEIGHBOURS = 64  # mask flag bit: cells coded in passes (this module)
MAX_NEIGHBOURS = 4
STATE_BASE = (0, 1, 1 + MAX_NEIGHBOURS + 1)  # first state of passes 1, 2, 3
MAX_STATES = STATE_BASE[2] + MAX_NEIGHBOURS + 1  # 11
MAX_ADJ = 48  # quarter-octaves: adjustments beyond 12 octaves clip anyway
_ADJ = np.arange(-MAX_ADJ, MAX_ADJ + 1)
_E_SPAN = dyadic.E_MAX + 1
DEAD_KEY = 3 * _E_SPAN  # sort key of a known-zero cell: after every pass's groups (a byte)


@dataclass(frozen=True)
class NeighbourPlan:
    """Grid width, the fitted scale and per-state adjustments, and the coded bits."""

    b: int
    slope: int
    offset: int
    adj: tuple[int, ...]
    bits: float


MAP_SIDES = range(3, 8)  # feature-map sides a linear layer after a conv may see flattened


def widths(shape: tuple[int, ...] | None, cols: int) -> list[int]:
    """Grid widths worth trying for a weight of ``shape`` seen as rows of ``cols``, the
    likeliest first: a conv kernel's; a flattened square image's; the side of square
    feature maps a linear layer may read flattened (``cols = channels · side²``); else
    one line (0)."""
    if shape is not None and len(shape) == 4 and shape[3] > 1 and shape[2] > 1:
        return [int(shape[3])] if shape[3] < cols else [0]
    side = math.isqrt(cols)
    if shape is not None and len(shape) == 2 and side > 2 and side * side == cols:
        return [side]
    if shape is not None and len(shape) == 2:
        return [0] + [s for s in MAP_SIDES if cols % (s * s) == 0 and cols > s * s]
    return [0]


def clustered(mask: np.ndarray, b: int, line_counts: tuple[np.ndarray, np.ndarray],
              threshold: float = 1.25) -> bool:
    """Whether set cells of ``mask`` (R, C bool) sit next to each other (at ``c ± 1`` or
    ``c ± b``) at least ``threshold`` times as often as row and column densities alone
    predict (``p(r, c) = d_r·d_c / d``): a cheap test before fitting the passes.
    ``line_counts``: the set cells per row and per column."""
    rows, cols = mask.shape
    d_row, d_col = line_counts[0] / cols, line_counts[1] / rows  # = mask.mean(1), mean(0)
    d = float(d_row.sum()) / len(d_row)  # = d_row.mean(), without its wrapper
    if d <= 0.0:
        return False
    scale = float((d_row ** 2).sum()) / d ** 2
    for s in {1, b} - {0}:
        if s >= cols:
            continue
        seen = np.count_nonzero(mask[:, s:] & mask[:, :-s])
        expected = scale * float((d_col[s:] * d_col[:-s]).sum())
        if seen >= threshold * expected and seen >= 8:
            return True
    return False


def passes(cols: int, b: int) -> np.ndarray:
    """(cols,) int8: the pass (0, 1, 2) of each column."""
    c = np.arange(cols)
    if b:
        x, y = c % b, c // b
        return np.where((x + y) % 2 == 1, 2, np.where(x % 2 == 1, 1, 0)).astype(np.int8)
    return np.where(c % 2 == 1, 2, np.where(c % 4 == 2, 1, 0)).astype(np.int8)


def shifts(b: int, pass_: int) -> tuple[int, ...]:
    """Distances along the row to the neighbours a cell of ``pass_`` (1 or 2) counts."""
    diagonal = {b + 1, b - 1} if b else {2}
    direct = {1, b} if b else {1}
    return tuple(sorted((diagonal if pass_ == 1 else direct) - {0}))


def neighbour_count(known: np.ndarray, shifts: tuple[int, ...]) -> np.ndarray:
    """(R, C) int8: set cells of ``known`` (unknown cells zero) at ``c ± s`` in the row."""
    out = np.zeros(known.shape, dtype=np.int8)
    for s in shifts:
        if 0 < s < known.shape[1]:
            out[:, s:] += known[:, :-s]
            out[:, :-s] += known[:, s:]
    return out


def _pass_states(known: np.ndarray, b: int, pass_: int) -> np.ndarray:
    """(R, C) int8 state every cell of ``pass_`` would have, given the ``known`` cells."""
    return STATE_BASE[pass_] + neighbour_count(known, shifts(b, pass_))


def states(mask: np.ndarray, b: int) -> np.ndarray:
    """(R*C,) int8 state of every cell of ``mask`` (R, C bool)."""
    column_pass = passes(mask.shape[1], b)
    first = mask & (column_pass == 0)
    second = _pass_states(first.view(np.int8), b, 1)
    third = _pass_states((mask & (column_pass < 2)).view(np.int8), b, 2)
    # each column is in one pass: select by multiplying with 0/1 columns (a broadcast
    # np.where is many times slower)
    out = second * (column_pass == 1).view(np.int8) + third * (column_pass == 2).view(np.int8)
    return out.reshape(-1)


def _exponents(classes: np.ndarray, state: np.ndarray, slope: int, offset: int,
               adj: np.ndarray) -> np.ndarray:
    return clamp(slope * classes.astype(np.int64) + offset + adj[state], 0, dyadic.E_MAX)


@dataclass(frozen=True)
class Layout:
    """A grid width's cell states, and the cells ``fit`` counts one by one: those with a
    set neighbour (a state above their pass's first), few in a sparse mask. Every other
    live cell's context follows from its row and column alone."""

    b: int
    state: np.ndarray  # (R*C,) int8
    column_pass: np.ndarray  # (C,) int8
    near_row: np.ndarray  # (N,) row of each cell with a set neighbour
    near_col: np.ndarray  # (N,) its column
    near_state: np.ndarray  # (N,) its state
    near_base: np.ndarray  # (N,) its pass's first state


def layout(mask: np.ndarray, b: int) -> Layout:
    """The states of ``mask`` (R, C bool) on a grid of width ``b``, for ``fit``."""
    rows, cols = mask.shape
    state = states(mask, b)
    column_pass = passes(cols, b)
    base = np.array(STATE_BASE, dtype=np.int8)[column_pass]  # (C,)
    near = np.flatnonzero(state.reshape(rows, cols) != base)
    near_row, near_col = np.divmod(near, cols)
    return Layout(b, state, column_pass, near_row, near_col, state[near].astype(np.int64),
                  base[near_col].astype(np.int64))


N_CLASSES = ctxmask.N_CLASSES


def _parts(option: ctxmask.ClassOption) -> tuple[np.ndarray, ...]:
    return ctxmask.class_parts(option.flags, option.row_cls, option.col_cls)


def _state_counts(lay: Layout, option: ctxmask.ClassOption) -> np.ndarray:
    """(MAX_STATES, N_CLASSES) int64: live cells per (state, class) under ``option``.

    Cells without a set neighbour are counted per pass from the row and column class
    histograms (a convolution: class = row part + column part); the cells with one are
    then moved from their pass's first state to their own."""
    part_r, live_r, part_c, live_c = _parts(option)
    by_row = np.bincount(part_r[live_r], minlength=1)
    out = np.zeros((MAX_STATES, N_CLASSES), dtype=np.int64)
    for p, first in enumerate(STATE_BASE):
        by_col = np.bincount(part_c[live_c & (lay.column_pass == p)], minlength=1)
        plain = np.convolve(by_row, by_col)
        out[first, :len(plain)] += plain
    live = live_r[lay.near_row] & live_c[lay.near_col]
    cls = part_r[lay.near_row[live]] + part_c[lay.near_col[live]]
    size = MAX_STATES * N_CLASSES
    moved = np.bincount(lay.near_state[live] * N_CLASSES + cls, minlength=size) - \
        np.bincount(lay.near_base[live] * N_CLASSES + cls, minlength=size)
    return out + moved.reshape(MAX_STATES, N_CLASSES)


def fit(flat: np.ndarray, lines: tuple[np.ndarray, np.ndarray], option: ctxmask.ClassOption,
        layouts: list[Layout]) -> NeighbourPlan | None:
    """The cheapest plan in passes for a mask with ones at ``flat`` (row-major; rows and
    columns ``lines``) under ``option``'s classes, over ``layouts`` (from ``layout``); None
    when none beats the classes alone. ``bits`` excludes the classes' own side bits."""
    part_r, _, part_c, _ = _parts(option)
    set_cls = part_r[lines[0]] + part_c[lines[1]]  # set cells are never in a dead line
    best_bits, best = option.bits - option.side_bits, None
    for lay in layouts:
        cells = _state_counts(lay, option)
        ones = np.bincount(lay.state[flat].astype(np.int64) * N_CLASSES + set_cls,
                           minlength=MAX_STATES * N_CLASSES).reshape(MAX_STATES, N_CLASSES)
        used_states = cells.sum(1).nonzero()[0]
        used_classes = cells.sum(0).nonzero()[0]
        if not len(used_states):
            continue
        size = int(used_classes[-1]) + 1
        n_states = int(used_states[-1]) + 1
        slope, offset, adj, bits = _descend(cells[:n_states, :size], ones[:n_states, :size],
                                            option.slope, option.offset)
        bits += 8 * (1 + len(adj) + varint_len(lay.b))
        if bits < best_bits:
            best_bits = bits
            best = NeighbourPlan(lay.b, slope, offset, tuple(adj), bits)
    return best


def _descend(cells: np.ndarray, ones: np.ndarray, slope: int,
             offset: int) -> tuple[int, int, list[int], float]:
    """Coordinate descent on (adjustments per state) and (slope, offset), from counts
    ``cells`` / ``ones`` of shape (states, classes)."""
    n_states, size = cells.shape
    cls = np.arange(size)
    adj = np.zeros(n_states, dtype=np.int64)
    slopes = np.array(ctxmask.SLOPES)
    offsets = ctxmask.OFFSETS
    for _ in range(2):
        # every state's adjustment at once (adj[0] = 0: pass A is the offset's reference)
        e = clamp(slope * cls + offset + _ADJ[:, None, None], 0, dyadic.E_MAX)  # (A, 1, C)
        per = dyadic.cell_bits(cells, ones, e)
        adj = _ADJ[per.argmin(axis=0)]
        adj[0] = 0
        e = clamp(slopes[:, None, None, None] * cls + (offset + offsets)[:, None, None] +
                  adj[:, None], 0, dyadic.E_MAX)  # (S, O, states, classes)
        bits = dyadic.cell_bits(cells, ones, e).sum(-1)
        i, j = divmod(int(bits.argmin()), bits.shape[1])
        slope, offset = int(slopes[i]), int(offset + offsets[j])
    e = clamp(slope * cls + offset + adj[:, None], 0, dyadic.E_MAX)
    return slope, offset, [int(x) for x in adj], float(dyadic.cell_bits(cells, ones, e).sum())


def write(sink: Sink, plan: NeighbourPlan) -> None:
    """Append the grid width and adjustments (after ``ctxmask.write_head``)."""
    w = sink.side
    w.varint(plan.b)
    w.u8(len(plan.adj))
    for x in plan.adj:
        w.svarint(x)


def _groups(e: np.ndarray, cells: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``cells`` grouped by exponent, ascending: [(e, cell indices in ascending order)]."""
    small = e.astype(np.uint8)  # E_MAX < 256: a stable sort of bytes is a radix sort
    order = np.argsort(small, kind="stable")
    bounds = np.searchsorted(small[order], np.arange(_E_SPAN + 1))
    sorted_cells = cells[order]
    return [(int(x), sorted_cells[bounds[x]:bounds[x + 1]])
            for x in np.flatnonzero(np.diff(bounds))]


def _live_by_pass(classes: np.ndarray, cols: int, b: int) -> list[np.ndarray]:
    """The live cells (class >= 0) of each pass, ascending."""
    if not cols:
        return [np.zeros(0, np.int64)] * 3
    grid = classes.reshape(-1, cols)
    column_pass = passes(cols, b)
    out = []
    for p in range(3):
        where = np.flatnonzero(column_pass == p)
        r, j = np.nonzero(grid[:, where] >= 0)
        out.append(r * cols + where[j])
    return out


def encode(sink: Sink, mask: np.ndarray, classes: np.ndarray, plan: NeighbourPlan,
           state: np.ndarray | None = None) -> None:
    """Append the cells of ``mask`` (R, C bool) pass by pass (``state``: ``states(mask,
    plan.b)`` when the caller has it).

    One radix sort of (pass, exponent) keys over all cells gives every group in the
    order the decoder reads them: pass by pass, exponent ascending, cells ascending.
    """
    state = states(mask, plan.b) if state is None else state
    index = state.astype(np.int16) * ctxmask.CLASS_KEYS  # (state, class + 1) < 2^15
    index += classes
    index += 1
    key = np.take(_key_table(plan).reshape(-1), index)
    order = np.argsort(key, kind="stable")  # bytes: one radix pass
    bounds = np.searchsorted(key[order], np.arange(DEAD_KEY + 1))
    bits = mask.reshape(-1)[order].view(np.int8)
    for k in np.flatnonzero(np.diff(bounds)):
        sink.encode(bits[bounds[k]:bounds[k + 1]].astype(np.int32),
                    dyadic.bernoulli(dyadic.P[k % _E_SPAN]))


def _key_table(plan: NeighbourPlan) -> np.ndarray:
    """(MAX_STATES, CLASS_KEYS) uint8 sort key of a cell by (state, class + 1): its pass (which
    its state tells) times _E_SPAN plus its exponent; DEAD_KEY for a known zero (class
    -1), whatever its state (a dead cell may have more set neighbours than any live one,
    so its state may have no adjustment)."""
    shift = plan.offset + np.array(plan.adj, dtype=np.int64)
    state = np.arange(MAX_STATES)
    pass_of = np.searchsorted(np.array(STATE_BASE), state, side="right") - 1
    e = plan.slope * np.arange(-1, N_CLASSES) + shift[np.minimum(state, len(shift) - 1)][:, None]
    out = pass_of[:, None] * _E_SPAN + clamp(e, 0, dyadic.E_MAX)
    out[:, 0] = DEAD_KEY
    return out.astype(np.uint8)


def read(source: Source, cols: int) -> tuple[int, np.ndarray]:
    """(b, adjustments) as ``write`` stored them, every value checked."""
    r = source.side
    b = r.varint(max(cols, 1))
    n_states = r.u8()
    if not 1 <= n_states <= MAX_STATES:
        raise ValueError(f"{n_states} neighbour states (at most {MAX_STATES})")
    adj = np.array([r.svarint(MAX_ADJ) for _ in range(n_states)], dtype=np.int64)
    return b, adj


def decode(source: Source, head: ctxmask.Head, rows: int, cols: int, k: int,
           parts: Parts | None = None) -> np.ndarray:
    """The ascending flat positions of the ``k`` nonzeros, coded by ``encode``."""
    start = source.side.pos
    b, adj = read(source, cols)
    if parts is not None:
        parts.add_side("tables", source.side.pos - start)  # model parameters, like classes
    classes = head.classes
    by_pass = _live_by_pass(classes, cols, b)
    if sum(len(x) for x in by_pass) < k:
        raise ValueError(f"{k} nonzeros do not fit the live cells")
    out = np.zeros(rows * cols, dtype=bool)
    ones, bits = 0, 0.0
    for pass_, chosen in enumerate(by_pass):
        if pass_:
            known = out.reshape(rows, cols).astype(np.int8)
            state = _pass_states(known, b, pass_).reshape(-1)[chosen]
            if len(state) and int(state.max()) >= len(adj):
                raise ValueError("neighbour state without an adjustment")
        else:
            state = np.zeros(len(chosen), np.int8)
        e = _exponents(classes[chosen], state, head.slope, head.offset, adj)
        for exponent, cells in _groups(e, chosen):
            p = dyadic.P[exponent]
            got = source.decode(dyadic.bernoulli(p), len(cells))
            hit = cells[got.astype(bool)]
            ones += len(hit)
            if ones > k:
                raise ValueError(f"position mask has more than {k} ones")
            out[hit] = True
            if parts is not None:
                bits -= len(hit) * math.log2(p) + (len(cells) - len(hit)) * math.log2(1 - p)
    if ones != k:
        raise ValueError(f"position mask has {ones} ones, expected {k}")
    if parts is not None:
        parts.add_bits("positions", bits)
    return np.flatnonzero(out).astype(np.int64)
