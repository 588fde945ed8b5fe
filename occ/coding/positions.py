"""Where the nonzeros of a sparse tensor are: a bitmask, gaps or alive rows/columns, the smallest.

Modes (the caller stores the mode and the nonzero count ``k``):

- ``DENSE``: no positions; zeros are coded inline with the values (best at low sparsity).
- ``BITMASK``: the n-bit mask under a Bernoulli(k / n) model fitted to the tensor; its
  table is ``k`` itself, so it costs n·H(k/n) bits and nothing else. Optimal for positions
  scattered independently.
- ``GAPS``: the run of zeros before each nonzero, g >= 0, written as v = g + 1 = 2^b + e:
  the bucket b is entropy-coded under a fitted categorical table and the b low bits e are
  stored raw (an Elias-gamma code with a fitted, not universal, prefix). Wins when zeros
  cluster in long runs, which an i.i.d. mask cannot exploit.
- ``ALIVE``: for a weight seen as a matrix (rows = output channels, columns = everything
  else), a mask of the rows and one of the columns holding any nonzero, then the bitmask of
  the surviving sub-matrix, each under its own fitted Bernoulli. Heavy pruning kills whole
  neurons and whole inputs (border pixels of MNIST, say); on a 99 %-sparse LeNet-5 this
  codes the positions ~10 % smaller than ``BITMASK``. Needs the row length, which the
  codec policy passes from the tensor's shape; the stream stores it.

``choose`` estimates each mode's exact cost from counts (no trial encoding), so picking
the smallest costs one pass over the tensor.
"""

from __future__ import annotations

import constriction
import numpy as np

from occ.coding import categorical as cat
from occ.coding.bitio import pack_bits, unpack_bits
from occ.coding.frame import Parts, Sink, Source

DENSE, BITMASK, GAPS, ALIVE = 0, 1, 2, 3
MODE_NAMES = {DENSE: "dense", BITMASK: "bitmask", GAPS: "gaps", ALIVE: "alive"}


def bernoulli(n: int, k: int) -> constriction.stream.model.Categorical:
    """The fitted model of n bits with k ones (its table is k itself)."""
    return constriction.stream.model.Categorical(np.array([n - k, k], dtype=np.float64),
                                                 perfect=False)


def bitmask_bits(n: int, k: int) -> float:
    """Bits of an n-bit mask with k ones under its fitted Bernoulli model."""
    return cat.entropy_bits(np.array([n - k, k]))


def _gap_parts(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket b, extra e) with gap + 1 = 2^b + e for each nonzero position."""
    v = np.diff(positions, prepend=-1)  # gap + 1 >= 1
    _, exp = np.frexp(v.astype(np.float64))  # v = m * 2^exp, m in [0.5, 1): exact below 2^53
    b = exp.astype(np.int64) - 1
    return b, v - (np.int64(1) << b)


def gaps_cost(positions: np.ndarray) -> float:
    """Estimated bits of the GAPS mode (bucket entropy + raw low bits + table)."""
    v = np.empty(len(positions), dtype=np.int64)
    v[0] = positions[0] + 1
    np.subtract(positions[1:], positions[:-1], out=v[1:])
    long = v[v > 1]  # gaps of 0 (v = 1) are bucket 0 with no low bits: count them only
    _, exp = np.frexp(long.astype(np.float64))
    hist = np.bincount(exp - 1, minlength=1)
    hist[0] += len(v) - len(long)
    table = cat.Table.from_histogram(0, hist)
    low_bits = float(np.dot(hist, np.arange(len(hist))))
    return table.bits() + low_bits + 8 * (table.nbytes() + 2)


def _alive(positions: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(alive rows, alive columns), ascending, of a matrix with ``cols`` columns."""
    return np.unique(positions // cols), np.unique(positions % cols)


def alive_cost(n: int, positions: np.ndarray, cols: int) -> float:
    """Estimated bits of the ALIVE mode."""
    rows, alive = _alive(positions, cols)
    return (bitmask_bits(n // cols, len(rows)) + bitmask_bits(cols, len(alive))
            + bitmask_bits(len(rows) * len(alive), len(positions)) + 8 * 6)


def choose(n: int, positions: np.ndarray, cols: int | None = None) -> tuple[int, float]:
    """(mode, estimated bits) of the cheapest of BITMASK, GAPS and (with ``cols``) ALIVE."""
    k = len(positions)
    if k in (0, n):
        return BITMASK, 0.0
    best = (BITMASK, bitmask_bits(n, k))
    gap_bits = gaps_cost(positions)
    if gap_bits < best[1]:
        best = (GAPS, gap_bits)
    if cols is not None and 1 < cols < n and n % cols == 0:
        alive_bits = alive_cost(n, positions, cols)
        if alive_bits < best[1]:
            best = (ALIVE, alive_bits)
    return best


def _encode_mask(sink: Sink, n: int, ones: np.ndarray) -> None:
    if 0 < len(ones) < n:
        mask = np.zeros(n, dtype=np.int32)
        mask[ones] = 1
        sink.encode(mask, bernoulli(n, len(ones)))


def _decode_mask(source: Source, n: int, k: int, parts: Parts | None) -> np.ndarray:
    if k == 0 or k == n:
        return np.arange(n if k else 0, dtype=np.int64)
    if parts is not None:
        parts.add_bits("positions", bitmask_bits(n, k))
    found, start = [], 0
    for bits in source.decode_chunks(bernoulli(n, k), n):
        found.append(np.flatnonzero(bits) + start)
        start += len(bits)
        if sum(len(f) for f in found) > k:
            break
    ones = np.concatenate(found)
    if len(ones) != k:
        raise ValueError(f"position mask has {len(ones)} ones or more, expected {k}")
    return ones.astype(np.int64)


def encode(sink: Sink, mode: int, n: int, positions: np.ndarray, cols: int | None = None) -> None:
    """Append the positions (ascending int64, k of them; k is stored by the caller)."""
    k = len(positions)
    if k in (0, n) or mode == DENSE:
        return
    if mode == BITMASK:
        _encode_mask(sink, n, positions)
        return
    if mode == ALIVE:
        assert cols is not None
        rows, alive = _alive(positions, cols)
        for value in (cols, len(rows), len(alive)):
            sink.side.varint(value)
        _encode_mask(sink, n // cols, rows)
        _encode_mask(sink, cols, alive)
        sub = np.searchsorted(rows, positions // cols) * len(alive) + np.searchsorted(
            alive, positions % cols)
        _encode_mask(sink, len(rows) * len(alive), sub)
        return
    b, e = _gap_parts(positions)
    table = cat.Table.fit(b)
    table.write(sink.side)
    sink.side.blob(pack_bits(e, b))
    cat.encode_symbols(sink, table.symbols(b), table)


def open_stream(data: bytes, version: int, codec: str, n: int,
                parts: Parts | None = None, flags: int = 0) -> tuple[Source, np.ndarray, int]:
    """Read the head every value codec shares: version/mode tag, nonzero count, positions.

    ``flags``: tag bits the codec uses itself (not part of the position mode). Returns the
    source (positioned at the codec's own side data), the ascending positions of the ``k``
    stored values among ``n``, and ``k``.
    """
    source = Source(data)
    if source.tag & 0xF0 != version:
        raise ValueError(f"{codec} stream version {source.tag >> 4} unknown")
    mode = source.tag & 0x0F & ~flags
    if mode not in MODE_NAMES:
        raise ValueError(f"unknown position mode {mode}")
    k = n if mode == DENSE else source.side.varint(n)
    return source, decode(source, mode, n, k, parts), k


def decode(source: Source, mode: int, n: int, k: int, parts: Parts | None = None) -> np.ndarray:
    """The ascending int64 positions ``encode`` wrote (``parts`` collects size accounting)."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == n or mode == DENSE:
        return np.arange(n, dtype=np.int64)
    if mode == BITMASK:
        return _decode_mask(source, n, k, parts)
    if mode == ALIVE:
        return _decode_alive(source, n, k, parts)
    if mode != GAPS:
        raise ValueError(f"unknown position mode {mode}")
    start = source.side.pos
    table = cat.Table.read(source.side, k)
    if int(table.present.max()) + table.lo > 52 or table.lo < 0:
        raise ValueError("gap buckets outside [0, 52]")
    middle = source.side.pos
    extras = source.side.blob(source.side.remaining())
    if parts is not None:
        parts.add_side("tables", middle - start)
        parts.add_side("positions", source.side.pos - middle)
        parts.add_bits("positions", table.bits())
    b = table.values(cat.decode_symbols(source, table, k))
    v = (np.int64(1) << b) + unpack_bits(extras, b)
    if float(v.sum(dtype=np.float64)) > n:  # checked before cumsum so it cannot overflow
        raise ValueError(f"gap code runs past the end of the tensor of {n} values")
    return np.cumsum(v) - 1


def _decode_alive(source: Source, n: int, k: int, parts: Parts | None) -> np.ndarray:
    cols = source.side.varint(n)
    if cols < 1 or n % cols:
        raise ValueError(f"row length {cols} does not divide {n} values")
    n_rows = source.side.varint(n // cols)
    n_alive = source.side.varint(cols)
    if not 0 < k <= n_rows * n_alive:
        raise ValueError(f"{k} nonzeros do not fit {n_rows} rows x {n_alive} columns")
    rows = _decode_mask(source, n // cols, n_rows, parts)
    alive = _decode_mask(source, cols, n_alive, parts)
    sub = _decode_mask(source, n_rows * n_alive, k, parts)
    return rows[sub // n_alive] * cols + alive[sub % n_alive]
