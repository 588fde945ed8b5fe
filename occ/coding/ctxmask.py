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

Probabilities are exact dyadic floats (``occ.coding.dyadic``): ``p = 2^-(slope·class +
offset)/4``, so encoder and decoder compute identical bits on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from occ.coding.bitio import clamp
from occ.coding.categorical import Table, decode_symbols, encode_symbols
from occ.coding.dyadic import BITS_ONE, BITS_ZERO, E_MAX, P, bernoulli, cell_bits, p_at
from occ.coding.frame import Parts, Sink, Source

USE_ROWS, USE_COLS = 1, 2
# Flag bits 2-3 (rows) and 4-5 (columns): classes per octave of density. 0 keeps only
# "dead or alive" (the ALIVE mode of occ.coding.positions), cheapest to store.
PER_OCTAVE = (2, 1, 0)
MAX_CLASS = 127  # row / column classes are 0 (dead) or 1 .. MAX_CLASS
# A cell's class (``cell_classes``) is -1 (a known zero) or 0 .. 2·(MAX_CLASS - 1) = 252:
# shifted by one, a byte, so that one stable sort of bytes (a radix sort) groups cells.
CLASS_KEYS = 256
N_CLASSES = CLASS_KEYS - 1  # classes of a live cell (some unused): 0 .. N_CLASSES - 1
SLOPES = (1, 2, 3, 4, 5, 6)  # quarter-octaves of probability per class step (the model's
# own: 2 for half-octave classes, 4 for octave-wide ones)
OFFSETS = np.arange(-8, 9)
_NEAR = np.arange(-1, 2)  # searched around the model's natural offset
MIN_GAIN = 1.5  # bits per line that density classes must be able to save to be tried

_BITS_ONE, _BITS_ZERO = BITS_ONE.tolist(), BITS_ZERO.tolist()  # the same, as Python floats

def probability(classes: np.ndarray, slope: int, offset: int) -> np.ndarray:
    """Bernoulli parameters ``2^-(slope·class + offset)/4``, clipped to [P_MIN, P_MAX]."""
    return P[clamp(slope * classes.astype(np.int64) + offset, 0, E_MAX)]

def density_classes(counts: np.ndarray, length: int, per_octave: int = 2) -> np.ndarray:
    """0 for an empty line, else 1 + round(-per_octave·log2(count / length)), <= MAX_CLASS."""
    out = np.zeros(len(counts), dtype=np.int64)
    live = counts > 0
    out[live] = 1 + np.rint(-per_octave * np.log2(counts[live] / length)).astype(np.int64)
    return np.minimum(out, MAX_CLASS)

def _side_bits(classes: np.ndarray) -> float:
    table = Table.fit(classes)
    return 0.0 if table is None else table.bits() + 8 * table.nbytes()

@dataclass(frozen=True)
class ClassOption:
    """One way to give cells their class context: flags, classes, the fitted probability
    scale, and its bits (side information of the classes included)."""

    bits: float
    slope: int
    offset: int
    flags: int
    row_cls: np.ndarray
    col_cls: np.ndarray
    side_bits: float


class MaskPlan:
    """The chosen flags, slope and offset of one mask, with its estimated bits.

    Counts per context come from the (row class, column class) histogram of the nonzeros
    and the class histograms alone (O(k + R + C), never a pass over all cells).
    ``options`` keeps every configuration tried, cheapest first (``occ.coding.ctxnb``
    refits the best few with neighbour contexts); ``lines``, the row and column of each
    nonzero when the classes were tried (else None).
    """

    def __init__(self, positions: np.ndarray, rows: int, cols: int,
                 line_counts: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """``line_counts``: the nonzeros per row and per column, when the caller has them."""
        k, density = len(positions), len(positions) / (rows * cols)
        row_counts, col_counts = line_counts if line_counts is not None else (
            np.bincount(positions // cols, minlength=rows),
            np.bincount(positions % cols, minlength=cols))
        none = _one_context_bits(0, rows * cols, k, _offsets(0, density))
        options = [ClassOption(*none, 0, np.ones(rows, np.int64), np.ones(cols, np.int64), 0.0)]
        self.options = options
        self.bits, self.slope, self.offset = options[0].bits, options[0].slope, options[0].offset
        self.flags, self.row_cls, self.col_cls = 0, options[0].row_cls, options[0].col_cls
        self.lines: tuple[np.ndarray, np.ndarray] | None = None  # (row, column) per nonzero
        if not (_may_pay(row_counts, cols) or _may_pay(col_counts, rows)):
            return  # densities too even for any class to pay for its side information
        r, c = self.lines = np.divmod(positions, cols)
        row_opts = [(code, density_classes(row_counts, cols, per))
                    for code, per in enumerate(PER_OCTAVE)]
        col_opts = [(code, density_classes(col_counts, rows, per))
                    for code, per in enumerate(PER_OCTAVE)]
        row_side = [_side_bits(cls) for _, cls in row_opts]
        col_side = [_side_bits(cls) for _, cls in col_opts]
        single = {USE_ROWS: (0, 1e300), USE_COLS: (0, 1e300)}  # flag -> (best code, bits)
        pairs = [(a, b) for a in range(len(PER_OCTAVE)) for b in range(len(PER_OCTAVE))
                 if a == b] + [(-1, -1)]  # (-1, -1): the best single codes, found first
        for rcode, ccode in pairs:
            if rcode < 0:
                rcode, ccode = single[USE_ROWS][0], single[USE_COLS][0]
                if rcode == ccode:
                    continue
            row_cls, col_cls = row_opts[rcode][1], col_opts[ccode][1]
            for flags, (present, cells, ones) in _context_counts(row_cls, col_cls, r, c,
                                                                 rcode == ccode):
                side = (row_side[rcode] if flags & USE_ROWS else 0.0) + \
                       (col_side[ccode] if flags & USE_COLS else 0.0)
                got = _best_bits(present, cells, ones, flags, density)
                bits = side + got[0]
                if flags in single and bits < single[flags][1]:
                    single[flags] = (rcode if flags == USE_ROWS else ccode, bits)
                options.append(ClassOption(bits, got[1], got[2], flags | rcode << 2 | ccode << 4,
                                           row_cls, col_cls, side))
        self.options = sorted(options, key=lambda o: o.bits)
        best = self.options[0]
        self.bits, self.slope, self.offset = best.bits, best.slope, best.offset
        self.flags, self.row_cls, self.col_cls = best.flags, best.row_cls, best.col_cls


def _may_pay(counts: np.ndarray, length: int) -> bool:
    """Whether knowing each line's exact density could save more than MIN_GAIN bits per
    line (an upper bound on what its classes save). Fitting a density to every line of
    an i.i.d. mask saves about 0.72 bits per line by chance alone, less than a stored
    class costs; a trained weight's lines save tens of bits."""
    total, n = int(counts.sum()), len(counts) * length
    if total in (0, n):
        return True
    p = total / n
    whole = -n * (p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return whole - _line_bits(counts, length) > MIN_GAIN * len(counts)


def _line_bits(counts: np.ndarray, length: int) -> float:
    """Bits of every line's cells under its own exact density."""
    if length <= MAX_TABULATED:
        return float(_tabulated_line_bits(length)[counts].sum())  # the same terms
    return float(_each_line_bits(counts.astype(np.float64), length).sum())


def _each_line_bits(c: np.ndarray, length: int) -> np.ndarray:
    """Bits of a line of ``length`` cells holding ``c`` (float) ones, for each ``c``."""
    # an empty (full) line's ones (zeros) term is 0 · log2(length) = 0
    ones = c * np.log2(length / np.maximum(c, 1))
    zeros = (length - c) * np.log2(length / np.maximum(length - c, 1))
    return ones + zeros


MAX_TABULATED = 1 << 12  # lines up to this long take their bits from a table


@lru_cache(maxsize=64)
def _tabulated_line_bits(length: int) -> np.ndarray:
    """``_each_line_bits`` of every count 0 .. ``length``, looked up by count."""
    out = _each_line_bits(np.arange(length + 1, dtype=np.float64), length)
    out.setflags(write=False)
    return out


def _best_bits(present: np.ndarray, cells: np.ndarray, ones: np.ndarray, flags: int,
               density: float) -> tuple[float, int, int]:
    """(bits, slope, offset): the cheapest probability scale for these context counts,
    under class ``flags`` (not 0: one context is ``_one_context_bits``)."""
    # around the model's natural offset, and the live cells' own density (what alive-only
    # classes need)
    live = -4 * np.log2(max(float(ones.sum()), 1.0) / max(float(cells.sum()), 1.0))
    offsets = _union_ranges(int(_offsets(flags, density)[0]), int(round(live)) + int(OFFSETS[0]))
    slopes = _SLOPES if len(present) > 1 else _SLOPES[:1]  # (S,)
    e = clamp(slopes[:, None, None] * present + offsets[:, None], 0, E_MAX)  # (S, O, P)
    bits = cell_bits(cells, ones, e)
    i, j = divmod(int(bits.argmin()), bits.shape[1])
    return float(bits[i, j]), int(slopes[i]), int(offsets[j])


_SLOPES = np.array(SLOPES)


def _union_ranges(a: int, b: int) -> np.ndarray:
    """The union of two runs of len(OFFSETS) consecutive integers, starting at ``a`` and
    at ``b``, ascending (what np.union1d gives, without its sort)."""
    n = len(OFFSETS)
    lo, hi = min(a, b), max(a, b)
    if hi - lo <= n:  # overlapping or adjacent: one run
        return np.arange(lo, hi + n)
    return np.concatenate([np.arange(lo, lo + n), np.arange(hi, hi + n)])

def _one_context_bits(context: int, cells: int, ones: int,
                      offsets: np.ndarray) -> tuple[float, int, int]:
    """``_best_bits`` of a single context with the first slope: the same floats, from
    Python scalars instead of a dozen calls on one-element arrays."""
    best = (math.inf, 0, 0)
    for offset in offsets.tolist():
        e = min(max(SLOPES[0] * context + offset, 0), E_MAX)
        bits = ones * _BITS_ONE[e] + (cells - ones) * _BITS_ZERO[e]
        if bits < best[0]:
            best = (bits, SLOPES[0], offset)
    return best

def _context_counts(row_cls: np.ndarray, col_cls: np.ndarray, r: np.ndarray, c: np.ndarray,
                    alone: bool) -> list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(flags, (contexts present, live cells, nonzeros per context)) for row classes only
    and column classes only (if ``alone``), and for both."""
    rows, cols = len(row_cls), len(col_cls)
    size = int(max(row_cls.max(), col_cls.max())) + 1
    h_row = np.bincount(row_cls, minlength=size)
    h_col = np.bincount(col_cls, minlength=size)
    joint = np.bincount(row_cls[r] * size + col_cls[c],
                        minlength=size * size).reshape(size, size)
    out = []
    if alone:
        out.append((USE_ROWS, (h_row[1:] * cols, joint[1:, :].sum(1))))
        out.append((USE_COLS, (h_col[1:] * rows, joint[:, 1:].sum(0))))
    if size > 1:
        diag = np.add.outer(np.arange(size - 1), np.arange(size - 1)).ravel()
        out.append((USE_ROWS | USE_COLS,
                     (np.bincount(diag, weights=np.outer(h_row[1:], h_col[1:]).ravel()),
                      np.bincount(diag, weights=joint[1:, 1:].ravel()))))
    result = []
    for flags, (cells, ones) in out:
        present = cells.nonzero()[0]
        result.append((flags, (present, cells[present], ones[present])))
    return result

def _offsets(flags: int, density: float) -> np.ndarray:
    """Offsets (quarter-octaves) to try, around the independence model's own.

    With both classes ``p = d_row · d_col / d``, so the offset is ``4·log2 d`` (d: the
    mask's density); with one class ``p = d_line`` (offset 0); with none ``p = d``.
    """
    log_density = float(np.log2(density)) if density > 0 else -20.0
    natural = {0: -4 * log_density, USE_ROWS: 0.0, USE_COLS: 0.0,
               USE_ROWS | USE_COLS: 4 * log_density}[flags]
    spread = OFFSETS if flags else _NEAR
    return int(round(natural)) + spread

def class_parts(flags: int, row_cls: np.ndarray,
                col_cls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row part, live rows, column part, live columns) of the classes ``flags`` use: a
    cell in a live row and a live column has class row part + column part; any other
    cell is a known zero (a line without classes is all live, part 0)."""
    if flags & USE_ROWS:
        part_r, live_r = row_cls - 1, row_cls > 0
    else:
        part_r, live_r = np.zeros(len(row_cls), np.int64), np.ones(len(row_cls), bool)
    if flags & USE_COLS:
        part_c, live_c = col_cls - 1, col_cls > 0
    else:
        part_c, live_c = np.zeros(len(col_cls), np.int64), np.ones(len(col_cls), bool)
    return part_r, live_r, part_c, live_c


def cell_classes(flags: int, row_cls: np.ndarray, col_cls: np.ndarray) -> np.ndarray:
    """(R·C,) int16 context of every cell, row-major; -1 for a cell in a dead row/column.

    int16 so that the stable sort grouping cells by context is a radix sort.
    """
    if not flags & (USE_ROWS | USE_COLS):  # one context, every cell live
        return np.zeros(len(row_cls) * len(col_cls), dtype=np.int16)
    part_r, live_r, part_c, live_c = class_parts(flags, row_cls, col_cls)
    ctx = part_r.astype(np.int16)[:, None] + part_c.astype(np.int16)[None, :]  # (R, C)
    ctx[~live_r] = -1  # whole rows, then whole columns: no (R, C) mask
    ctx[:, ~live_c] = -1
    return ctx.reshape(-1)


def _groups(ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order of live cells grouped by context, contexts present, cells per context)."""
    key = (ctx + 1).astype(np.uint8)  # < CLASS_KEYS
    order = np.argsort(key, kind="stable")  # bytes: one radix pass, dead cells first
    counts = np.diff(np.searchsorted(key[order], np.arange(CLASS_KEYS + 1)))
    order = order[int(counts[0]):]
    present = np.flatnonzero(counts[1:])
    return order, present, counts[1:][present]


def write_head(sink: Sink, plan: MaskPlan | ClassOption, extra_flags: int = 0) -> None:
    """Append the mask's flags (with ``extra_flags``, e.g. ``NEIGHBOURS``), probability
    scale and density classes to ``sink``."""
    w = sink.side
    w.u8(plan.flags | extra_flags)
    w.u8(plan.slope)
    w.svarint(plan.offset)
    for flag, classes in ((USE_ROWS, plan.row_cls), (USE_COLS, plan.col_cls)):
        if plan.flags & flag:
            table = Table.fit(classes)
            table.write(w)
            encode_symbols(sink, table.symbols(classes), table)


def encode(sink: Sink, mask: np.ndarray, plan: MaskPlan | ClassOption) -> None:
    """Append ``mask`` (flat bool, row-major, some zeros and some ones) to ``sink``."""
    write_head(sink, plan)
    if not plan.flags & (USE_ROWS | USE_COLS):  # one context, every cell live: no sort
        sink.encode(mask.astype(np.int32), bernoulli(p_at(plan.offset)))
        return
    ctx = cell_classes(plan.flags, plan.row_cls, plan.col_cls)
    order, present, cells = _groups(ctx)
    bits = mask[order].astype(np.int32)
    start = 0
    for c, count in zip(present, cells, strict=True):
        p = float(probability(np.array([c]), plan.slope, plan.offset)[0])
        sink.encode(bits[start:start + count], bernoulli(p))
        start += int(count)


def _read_classes(source: Source, length: int) -> np.ndarray:
    table = Table.read(source.side, length)
    if table.lo < 0 or table.lo + int(table.present[-1]) > MAX_CLASS:
        raise ValueError("density classes outside [0, MAX_CLASS]")
    return table.values(decode_symbols(source, table, length))

@dataclass(frozen=True)
class Head:
    """What ``read_head`` returns: the mask's flags, probability scale and the context
    class of every cell (``cell_classes``; -1: a known zero)."""

    flags: int
    slope: int
    offset: int
    classes: np.ndarray  # (R*C,) int16


def read_head(source: Source, rows: int, cols: int, extra_flags: int = 0,
              parts: Parts | None = None) -> Head:
    """Inverse of ``write_head``; ``extra_flags`` are the flag bits the caller knows."""
    r = source.side
    flags, slope = r.u8(), r.u8()
    base = flags & ~extra_flags
    if base > 63 or base >> 2 & 3 == 3 or base >> 4 == 3 or slope not in SLOPES:
        raise ValueError(f"mask flags {flags} / slope {slope} unknown")
    offset = r.svarint(1 << 12)
    start = r.pos
    row_cls = _read_classes(source, rows) if flags & USE_ROWS else np.ones(rows, np.int64)
    col_cls = _read_classes(source, cols) if flags & USE_COLS else np.ones(cols, np.int64)
    if parts is not None:
        parts.add_side("tables", r.pos - start)
    return Head(flags, slope, offset, cell_classes(flags, row_cls, col_cls))


def decode_cells(source: Source, head: Head, k: int,
                 parts: Parts | None = None) -> np.ndarray:
    """The cells of a mask whose head has been read, grouped by class context."""
    if not head.flags & (USE_ROWS | USE_COLS):
        return _decode_one_context(source, head, k, parts)
    order, present, cells = _groups(head.classes)
    if len(order) < k:
        raise ValueError(f"{k} nonzeros do not fit {len(order)} live cells")
    probs = probability(present, head.slope, head.offset)
    mask = np.zeros(len(head.classes), dtype=bool)
    done, ones = 0, 0
    ones_per = np.zeros(len(cells), dtype=np.int64)
    for j, (p, count) in enumerate(zip(probs, cells, strict=True)):
        got = source.decode(bernoulli(float(p)), int(count))
        hit = np.flatnonzero(got.astype(bool))  # bools: branch-free
        ones_per[j] = len(hit)
        ones += len(hit)
        if ones > k:
            raise ValueError(f"position mask has more than {k} ones")
        mask[order[done + hit]] = True
        done += int(count)
    if ones != k:
        raise ValueError(f"position mask has {ones} ones, expected {k}")
    if parts is not None:
        parts.add_bits("positions", float(-(ones_per * np.log2(probs)
                                            + (cells - ones_per) * np.log2(1.0 - probs)).sum()))
    return np.flatnonzero(mask)  # ascending, without a sort


def _decode_one_context(source: Source, head: Head, k: int, parts: Parts | None) -> np.ndarray:
    """``decode_cells`` without classes: every cell live, under one probability."""
    n = len(head.classes)
    if n < k:
        raise ValueError(f"{k} nonzeros do not fit {n} live cells")
    p = p_at(head.offset)  # probability() of class 0
    where = np.flatnonzero(source.decode(bernoulli(p), n).astype(bool))  # bools: branch-free
    if len(where) != k:
        raise ValueError(f"position mask has {len(where)} ones, expected {k}")
    if parts is not None:
        parts.add_bits("positions", float(-(k * np.log2(p) + (n - k) * np.log2(1.0 - p))))
    return where
