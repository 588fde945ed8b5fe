"""Where the nonzeros of a weight matrix are, coded under row- and column-density contexts.

A pruned weight seen as a matrix (rows = output channels, columns = everything else) is
not an i.i.d. mask: some neurons keep many weights, some inputs (an MNIST border pixel, a
weak feature map) keep none. This mode stores, per row and per column, its density
rounded to half an octave (a *class*; 0 = no nonzero at all), and codes each cell of the
mask with a Bernoulli whose probability comes from the two classes — the independence
model ``p(r, c) = density(r) · density(c) / density(matrix)`` — so a cell in a dense row
and a dense column costs far less when set than one in a sparse row and column. Cells of
a dead row or column are known zeros and cost nothing (this subsumes the ``ALIVE`` mode).

Side information (the classes) is itself entropy-coded; the encoder estimates the cost of
using row classes, column classes, both or neither, and of a few probability scales, from
counts alone, and writes the cheapest. Forward-adaptive (two-pass) rather than backward-
adaptive: every cell's context is known before any bit is decoded, so the decoder groups
cells by context with one stable sort and decodes each group in one vectorised call (no
per-symbol Python loop).

Probabilities are exact dyadic floats: ``p = 2^-(slope·class + offset)/4`` built with
``ldexp`` from four literal constants, so encoder and decoder compute identical bits on
any machine.
"""

from __future__ import annotations

import constriction
import numpy as np

from occ.coding.categorical import Table, decode_symbols, encode_symbols
from occ.coding.frame import Parts, Sink, Source

USE_ROWS, USE_COLS = 1, 2
MAX_CLASS = 127  # row / column classes are 0 (dead) or 1 .. MAX_CLASS
# 2^(-j/4), j = 0..3, as exact literals (no pow, so every machine gets the same floats).
_QUARTER = np.array([1.0, 0.8408964152537145, 0.7071067811865476, 0.5946035575013605])
P_MIN, P_MAX = 2.0 ** -20, 1.0 - 2.0 ** -12
SLOPES = (1, 2, 3)  # quarter-octaves of probability per class step (2: the model's own)
OFFSETS = range(-16, 17)  # searched around the model's natural offset


def probability(classes: np.ndarray, slope: int, offset: int) -> np.ndarray:
    """Bernoulli parameters ``2^-(slope·class + offset)/4``, clipped to [P_MIN, P_MAX]."""
    e = slope * classes.astype(np.int64) + offset
    p = np.ldexp(_QUARTER[e % 4], -(e // 4))
    return np.clip(p, P_MIN, P_MAX)


def density_classes(counts: np.ndarray, length: int) -> np.ndarray:
    """0 for an empty line, else 1 + round(-2·log2(count / length)) (at most MAX_CLASS)."""
    out = np.zeros(len(counts), dtype=np.int64)
    live = counts > 0
    out[live] = 1 + np.rint(-2.0 * np.log2(counts[live] / length)).astype(np.int64)
    return np.minimum(out, MAX_CLASS)


def _side_bits(classes: np.ndarray) -> float:
    table = Table.fit(classes)
    return 0.0 if table is None else table.bits() + 8 * table.nbytes()


class MaskPlan:
    """The chosen flags, slope and offset of one mask, with its estimated bits.

    Counts per context come from the (row class, column class) histogram of the nonzeros
    and the class histograms alone (O(k + R + C), never a pass over all cells).
    """

    def __init__(self, positions: np.ndarray, rows: int, cols: int) -> None:
        r, c = positions // cols, positions % cols
        self.row_cls = density_classes(np.bincount(r, minlength=rows), cols)
        self.col_cls = density_classes(np.bincount(c, minlength=cols), rows)
        size = MAX_CLASS + 1
        h_row = np.bincount(self.row_cls, minlength=size)
        h_col = np.bincount(self.col_cls, minlength=size)
        joint = np.bincount(self.row_cls[r] * size + self.col_cls[c],
                            minlength=size * size).reshape(size, size)
        diag = np.add.outer(np.arange(size - 1), np.arange(size - 1)).reshape(-1)
        k, n = len(positions), rows * cols
        counts = {  # flags -> (cells, ones) per context
            0: (np.array([n]), np.array([k])),
            USE_ROWS: (h_row[1:] * cols, joint[1:, :].sum(1)),
            USE_COLS: (h_col[1:] * rows, joint[:, 1:].sum(0)),
            USE_ROWS | USE_COLS: (
                np.bincount(diag, weights=np.outer(h_row[1:], h_col[1:]).reshape(-1)),
                np.bincount(diag, weights=joint[1:, 1:].reshape(-1)))}
        best = None
        for flags, (cells, ones) in counts.items():
            side = (_side_bits(self.row_cls) if flags & USE_ROWS else 0.0) + \
                   (_side_bits(self.col_cls) if flags & USE_COLS else 0.0)
            present = np.flatnonzero(cells)
            cells, ones = cells[present], ones[present]
            offsets = _offsets(flags, k / n)  # (O,)
            for slope in SLOPES:
                p = probability(slope * present[None, :] + offsets[:, None], 1, 0)  # (O, P)
                bits = side - (ones * np.log2(p) + (cells - ones) * np.log2(1.0 - p)).sum(1)
                i = int(np.argmin(bits))
                if best is None or bits[i] < best[0]:
                    best = (float(bits[i]), flags, slope, int(offsets[i]))
        assert best is not None
        self.bits, self.flags, self.slope, self.offset = best


def _offsets(flags: int, density: float) -> np.ndarray:
    """Offsets (quarter-octaves) to try, around the independence model's own.

    With both classes ``p = d_row · d_col / d``, so the offset is ``4·log2 d`` (d: the
    mask's density); with one class ``p = d_line`` (offset 0); with none ``p = d``.
    """
    log_density = float(np.log2(density)) if density > 0 else -20.0
    natural = {0: -4 * log_density, USE_ROWS: 0.0, USE_COLS: 0.0,
               USE_ROWS | USE_COLS: 4 * log_density}[flags]
    spread = OFFSETS if flags else range(-1, 2)
    return np.array([int(round(natural)) + d for d in spread], dtype=np.int64)


def cell_classes(flags: int, row_cls: np.ndarray, col_cls: np.ndarray) -> np.ndarray:
    """(R·C,) int16 context of every cell, row-major; -1 for a cell in a dead row/column.

    int16 so that the stable sort grouping cells by context is a radix sort.
    """
    r = (row_cls - 1 if flags & USE_ROWS else np.zeros(len(row_cls))).astype(np.int16)
    c = (col_cls - 1 if flags & USE_COLS else np.zeros(len(col_cls))).astype(np.int16)
    ctx = (r[:, None] + c[None, :]).reshape(-1)  # (R*C,)
    if flags & USE_ROWS or flags & USE_COLS:
        dead = ((row_cls == 0)[:, None] if flags & USE_ROWS else False) | \
               ((col_cls == 0)[None, :] if flags & USE_COLS else False)
        ctx[np.broadcast_to(dead, (len(row_cls), len(col_cls))).reshape(-1)] = -1
    return ctx


def _groups(ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order of live cells grouped by context, contexts present, cells per context)."""
    order = np.argsort(ctx, kind="stable")  # radix sort: dead (-1) cells come first
    n_dead = int(np.count_nonzero(ctx < 0))
    order = order[n_dead:]
    cells = np.bincount(ctx[order], minlength=1) if len(order) else np.zeros(0, np.int64)
    present = np.flatnonzero(cells)
    return order, present, cells[present]


def encode(sink: Sink, mask: np.ndarray, plan: MaskPlan) -> None:
    """Append ``mask`` (flat bool, row-major, some zeros and some ones) to ``sink``."""
    w = sink.side
    w.u8(plan.flags)
    w.u8(plan.slope)
    w.svarint(plan.offset)
    for flag, classes in ((USE_ROWS, plan.row_cls), (USE_COLS, plan.col_cls)):
        if plan.flags & flag:
            table = Table.fit(classes)
            table.write(w)
            encode_symbols(sink, table.symbols(classes), table)
    ctx = cell_classes(plan.flags, plan.row_cls, plan.col_cls)
    order, present, cells = _groups(ctx)
    bits = mask[order].astype(np.int32)
    start = 0
    for c, count in zip(present, cells, strict=True):
        p = float(probability(np.array([c]), plan.slope, plan.offset)[0])
        sink.encode(bits[start:start + count], _bernoulli(p))
        start += int(count)


def _bernoulli(p: float) -> constriction.stream.model.Bernoulli:
    return constriction.stream.model.Bernoulli(p, perfect=False)


def _read_classes(source: Source, length: int) -> np.ndarray:
    table = Table.read(source.side, length)
    if table.lo < 0 or table.lo + int(table.present[-1]) > MAX_CLASS:
        raise ValueError("density classes outside [0, MAX_CLASS]")
    return table.values(decode_symbols(source, table, length))


def decode(source: Source, rows: int, cols: int, k: int,
           parts: Parts | None = None) -> np.ndarray:
    """The ascending flat positions of the ``k`` nonzeros (0 < k < rows·cols)."""
    r = source.side
    flags, slope = r.u8(), r.u8()
    if flags > (USE_ROWS | USE_COLS) or slope not in SLOPES:
        raise ValueError(f"mask flags {flags} / slope {slope} unknown")
    offset = r.svarint(1 << 12)
    start = r.pos
    row_cls = _read_classes(source, rows) if flags & USE_ROWS else np.ones(rows, np.int64)
    col_cls = _read_classes(source, cols) if flags & USE_COLS else np.ones(cols, np.int64)
    ctx = cell_classes(flags, row_cls, col_cls)
    order, present, cells = _groups(ctx)
    if len(order) < k:
        raise ValueError(f"{k} nonzeros do not fit {len(order)} live cells")
    probs = probability(present, slope, offset)
    found, done, ones = [], 0, 0
    ones_per = np.zeros(len(cells), dtype=np.int64)
    for j, (p, count) in enumerate(zip(probs, cells, strict=True)):
        got = source.decode(_bernoulli(float(p)), int(count))
        hit = np.flatnonzero(got)
        ones_per[j] = len(hit)
        ones += len(hit)
        if ones > k:
            raise ValueError(f"position mask has more than {k} ones")
        found.append(order[done + hit])
        done += int(count)
    if ones != k:
        raise ValueError(f"position mask has {ones} ones, expected {k}")
    if parts is not None:
        parts.add_side("tables", r.pos - start)
        parts.add_bits("positions", float(-(ones_per * np.log2(probs)
                                            + (cells - ones_per) * np.log2(1.0 - probs)).sum()))
    return np.sort(np.concatenate(found)).astype(np.int64)
