"""Codec ``cat``: integer tensors (quantized weights, zero points, counters, masks).

Stream (in the shared frame, ``occ.coding.frame``)::

    tag     0x10 | position mode (DENSE, BITMASK, GAPS or ALIVE; ``occ.coding.positions``)
            | LEARNED (0x08: the values' model is learned while coding)
    side    [varint k: nonzero count]   (not in DENSE mode)
            [positions side data]       (GAPS: bucket table + raw low bits)
            [value table]               (``occ.coding.categorical``; with LEARNED only its
                                        support, ``occ.coding.learned``; absent when no values)
    words   position symbols, then value symbols (ANS)

In DENSE mode every value, zeros included, is one symbol of the table; otherwise only the
k nonzero values are, after their positions. The encoder counts the bits of both, each
under a stored table and under a learned model, and writes the smallest. Values must lie
within ``MAX_SPAN`` of each other (quantized weights always do); wider integer tensors are
left to ``fbp`` or ``raw``.

Speed: one histogram of the tensor serves both the dense and the sparse table (the sparse
one is the dense one without zero), and symbols come from a lookup table indexed by the
values themselves, so a tensor costs a few vectorised passes plus the ANS coder.
"""

from __future__ import annotations

import numpy as np

from occ.coding import learned
from occ.coding import positions as pos
from occ.coding.categorical import MAX_SPAN, Table, categorical_model, encode_symbols
from occ.coding.frame import Parts, Sink, Source

VERSION = 0x10
LEARNED = 0x08  # tag bit: the values' model is learned while coding (no counts stored)
LEARN = True  # whether a learned model is tried at all (off: an ablation)


def _histogram(array: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(lo, counts of lo, lo+1, ...) of an integer array; None if wider than MAX_SPAN."""
    if array.dtype.itemsize == 1:  # int8 / uint8 / bool: one bincount over the bytes
        hist = np.bincount(array.view(np.uint8), minlength=256)
        if array.dtype.kind == "i":
            return -128, np.roll(hist, 128)
        return 0, hist
    lo, hi = int(array.min()), int(array.max())
    if hi - lo + 1 > MAX_SPAN:
        return None
    return lo, np.bincount((array.astype(np.int64) - lo).astype(np.intp), minlength=hi - lo + 1)


def _symbols(array: np.ndarray, table: Table) -> np.ndarray:
    if array.dtype.itemsize == 1:  # index the lookup table by the raw byte
        lut = np.zeros(256, dtype=np.int32)
        lut[(np.arange(table.span) + table.lo) & 0xFF] = table.lookup()
        return lut[array.view(np.uint8)]
    return table.symbols(array.astype(np.int64))


def _cost(table: Table | None, coded: np.ndarray) -> tuple[float, learned.Plan | None]:
    """(bits of the values ``coded`` with ``table`` fitted to them, a learned plan when one
    is smaller than the table)."""
    if table is None:
        return 0.0, None
    entropy = table.bits()
    exact = entropy + 8 * table.nbytes()
    if not LEARN or not learned.worth_trying(table, entropy):
        return exact, None
    learnt = learned.Plan(table, _symbols(coded, table))
    bits = learnt.bits()
    return (bits, learnt) if bits < exact else (exact, None)


def plan(array: np.ndarray, cols: int | None = None,
         ) -> tuple[int, np.ndarray, Table | None, float, learned.Plan | None] | None:
    """(mode, nonzero positions, value table, estimated bits, learned plan or None), or
    None if not codable.

    ``cols`` is the row length when the tensor is a weight (for the ALIVE position mode).
    """
    if array.dtype.kind not in "iub":
        raise ValueError(f"cat codes integer tensors, not {array.dtype}")
    n = len(array)
    nz = np.flatnonzero(array)
    if n == 0:
        return pos.DENSE, nz, None, 0.0, None
    hist = _histogram(array)
    if hist is None:
        return None
    lo, counts = hist
    dense = Table.from_histogram(lo, counts)
    best = (pos.DENSE, nz, dense, *_cost(dense, array))
    k = len(nz)
    if k < n:
        mode, pos_bits = pos.choose(n, nz, cols)
        counts = counts.copy()
        counts[-lo] = 0  # zero is in range: the array has zeros
        table = Table.from_histogram(lo, counts)
        bits, learnt = _cost(table, array[nz])
        bits += pos_bits + 8 * (1 + k.bit_length() // 7)
        if bits < best[3]:
            best = (mode, nz, table, bits, learnt)
    return best


def encode(array: np.ndarray, cols: int | None = None) -> tuple[bytes, dict]:
    """Code a flat integer array (codec ``cat``); ``cols``: row length of a weight matrix."""
    chosen = plan(array, cols)
    if chosen is None:
        raise ValueError("cat: values span more than 2^16 integers")
    mode, nz, table, _, learnt = chosen
    sink = Sink()
    if mode != pos.DENSE:
        sink.side.varint(len(nz))
        pos.encode(sink, mode, len(array), nz, cols)
    if learnt is not None:
        learnt.write(sink)
        return sink.finish(VERSION | LEARNED | mode), {}
    if table is not None:
        table.write(sink.side)
        coded = array if mode == pos.DENSE else array[nz]
        encode_symbols(sink, _symbols(coded, table), table)
    return sink.finish(VERSION | mode), {}


def _check_range(lo: int, present: np.ndarray, dtype: np.dtype) -> None:
    info = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if lo < info[0] or lo + int(present[-1]) > info[1]:
        raise ValueError(f"model table values [{lo}, {lo + int(present[-1])}] do not fit {dtype}")


def decode(data: bytes, meta: dict, dtype: np.dtype, count: int,
           parts: Parts | None = None) -> np.ndarray:
    """Inverse of ``encode``: ``count`` values of the integer ``dtype``."""
    if dtype.kind not in "iub":
        raise ValueError(f"cat decodes integer tensors, not {dtype}")
    source, where, k = pos.open_stream(data, VERSION, "cat", count, parts, LEARNED)
    if not k:
        source.finish()
        return np.zeros(count, dtype=dtype)
    if source.tag & LEARNED:
        values = _read_learned(source, k, dtype, parts)
    else:
        values = _read_table(source, k, dtype, parts)
    source.finish()
    if k == count:
        return values
    out = np.zeros(count, dtype=dtype)
    out[where] = values
    return out


def _read_learned(source: Source, k: int, dtype: np.dtype, parts: Parts | None) -> np.ndarray:
    start = source.side.pos
    lo, present = learned.read_alphabet(source, k)
    _check_range(lo, present, dtype)
    if parts is not None:
        parts.add_side("tables", source.side.pos - start)
    return (present + lo).astype(dtype)[learned.read_ranks(source, len(present), k, parts)]


def _read_table(source: Source, k: int, dtype: np.dtype, parts: Parts | None) -> np.ndarray:
    start = source.side.pos
    table = Table.read(source.side, k)
    _check_range(table.lo, table.present, dtype)
    if parts is not None:
        parts.add_side("tables", source.side.pos - start)
        parts.add_bits("values", table.bits())
    lut = (table.present + table.lo).astype(dtype)  # symbol -> value
    values = np.empty(k, dtype=dtype)
    if len(table.present) == 1:
        values[:] = lut[0]
    else:  # in chunks: a skewed table can code far more values than the stream has bytes
        done = 0
        for symbols in source.decode_chunks(categorical_model(table), k):
            values[done:done + len(symbols)] = lut[symbols]
            done += len(symbols)
    return values
