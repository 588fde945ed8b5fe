"""Fitted categorical models: the per-stream table of symbol counts, and coding with it.

A table lists which integer values occur in a stream and how often. It is stored in the
stream (so its bytes are counted) as::

    svarint lo            smallest value
    varint  span          hi - lo + 1 (at most MAX_SPAN)
    u8      flags         0: every value of the span occurs; 1: a presence bitmap over the
                          span follows; 2: every value but zero (which the span holds)
    bytes   bitmap        ceil(span / 8) bytes, only with flags 1
    u8      width         bits per stored count
    bytes   counts        (count - 1) of each present value, ``width`` bits each, MSB first

The counts must sum to the number of symbols the stream codes; a table that does not is
refused (``ValueError``) before any symbol is decoded. Symbols are coded with
constriction's ANS coder under ``Categorical(counts, perfect=False)``: the exact
empirical distribution, so a stream costs its order-0 entropy plus the table and a few
bytes of flush. Only present values get a symbol, so a wide, sparse alphabet wastes no
probability mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from occ.coding.bitio import (
    ByteReader,
    ByteWriter,
    pack_fixed,
    packed_len,
    unpack_fixed,
    varint_len,
)
from occ.coding.frame import Sink, Source

MAX_SPAN = 1 << 16  # widest value range a table may cover
MAX_WIDTH = 40  # bits per stored count (counts are element counts, < 2^40)


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 empirical entropy of a stream with these symbol counts, in bits (total)."""
    c = counts[counts > 0].astype(np.float64)
    if c.size <= 1:
        return 0.0
    total = c.sum()
    return float((c * np.log2(total / c)).sum())


ALL, BITMAP, ALL_BUT_ZERO = 0, 1, 2  # a support's flags: which values of its span occur


def _support_kind(lo: int, span: int, present: np.ndarray) -> int:
    if len(present) == span:
        return ALL
    if len(present) == span - 1 and lo < 0 < lo + span and -lo not in present:
        return ALL_BUT_ZERO  # signed nonzero values, e.g. a sparse tensor's -7..-1, 1..7
    return BITMAP


def write_support(w: ByteWriter, lo: int, span: int, present: np.ndarray) -> None:
    """Append a table's value range (``lo``, ``span``) and which values occur in it: a flag
    byte, then a bitmap unless every value in the range occurs, or every one but zero
    (shared by the model tables)."""
    w.svarint(lo)
    w.varint(span)
    kind = _support_kind(lo, span, present)
    w.u8(kind)
    if kind == BITMAP:
        mask = np.zeros(span, dtype=np.uint8)
        mask[present] = 1
        w.raw(np.packbits(mask).tobytes())


def support_bytes(lo: int, span: int, present: np.ndarray) -> int:
    """Bytes ``write_support`` appends, counted without writing them."""
    zigzag = 2 * lo if lo >= 0 else -2 * lo - 1
    bitmap = (span + 7) // 8 if _support_kind(lo, span, present) == BITMAP else 0
    return varint_len(zigzag) + varint_len(span) + 1 + bitmap


def read_support(r: ByteReader) -> tuple[int, int, np.ndarray]:
    """Inverse of ``write_support``: ``(lo, span, present offsets)``, every count checked."""
    lo = r.svarint()
    if not -(1 << 63) <= lo < 1 << 63:
        raise ValueError(f"model table starts at {lo}, outside 64-bit integers")
    span = r.varint(MAX_SPAN)
    if span < 1:
        raise ValueError("model table has an empty value range")
    flags = r.u8()
    if flags not in (ALL, BITMAP, ALL_BUT_ZERO):
        raise ValueError(f"model table has unknown flags {flags}")
    if flags == BITMAP:
        bitmap = np.frombuffer(r.raw(packed_len(1, span)), dtype=np.uint8)
        return lo, span, np.flatnonzero(np.unpackbits(bitmap, count=span)).astype(np.int64)
    present = np.arange(span, dtype=np.int64)
    if flags == ALL_BUT_ZERO:
        if not lo < 0 < lo + span:
            raise ValueError(f"model table [{lo}, {lo + span - 1}] leaves out a zero it lacks")
        present = np.delete(present, -lo)
    return lo, span, present


@dataclass(frozen=True)
class Table:
    """The values present in a stream (ascending) and how often each occurs."""

    lo: int
    span: int
    present: np.ndarray  # (nsym,) int64 offsets from lo, ascending
    counts: np.ndarray  # (nsym,) int64, each >= 1

    @property
    def total(self) -> int:
        """Number of symbols the table describes."""
        return int(self.counts.sum())

    @classmethod
    def fit(cls, values: np.ndarray) -> Table | None:
        """The table of a non-empty integer array, or None if its range is wider than MAX_SPAN."""
        lo, hi = int(values.min()), int(values.max())
        if hi - lo + 1 > MAX_SPAN:
            return None
        return cls.from_histogram(lo, np.bincount((values - lo).astype(np.intp, copy=False),
                                                  minlength=hi - lo + 1))

    @classmethod
    def from_histogram(cls, lo: int, hist: np.ndarray) -> Table | None:
        """The table of ``hist[i]`` occurrences of value ``lo + i`` (None if all are zero)."""
        present = hist.nonzero()[0]  # the method: no Python wrapper
        if not len(present):
            return None
        first, last = int(present[0]), int(present[-1])
        return cls(lo=lo + first, span=last - first + 1, present=present - first,
                   counts=hist[present].astype(np.int64, copy=False))  # a copy already

    def symbols(self, values: np.ndarray) -> np.ndarray:
        """The symbol (rank among present values) of each value, as int32."""
        lut = self.lookup()
        if self.lo <= 0 < self.lo + self.span:  # index by value: 0.., then -1, -2.. wrap
            return np.concatenate((lut[-self.lo:], lut[:-self.lo]))[values]
        return lut[(values - self.lo).astype(np.intp, copy=False)]

    def lookup(self) -> np.ndarray:
        """(span,) int32: the symbol of value ``lo + i``."""
        lut = np.zeros(self.span, dtype=np.int32)
        lut[self.present] = np.arange(len(self.present), dtype=np.int32)
        return lut

    def values(self, symbols: np.ndarray) -> np.ndarray:
        """Inverse of ``symbols``: int64 values."""
        return self.present[symbols] + self.lo

    def bits(self) -> float:
        """Bits the coded symbols take (the order-0 entropy of the counts)."""
        return entropy_bits(self.counts)

    def write(self, w: ByteWriter) -> None:
        """Append the table to ``w``."""
        write_support(w, self.lo, self.span, self.present)
        width = int(self.counts.max() - 1).bit_length()
        w.u8(width)
        w.raw(pack_fixed(self.counts - 1, width))

    def nbytes(self) -> int:
        """Bytes ``write`` appends (counted, not written)."""
        return _table_bytes(self, int(self.counts.max()))

    @classmethod
    def read(cls, r: ByteReader, total: int) -> Table:
        """Read a table whose counts must sum to ``total`` (> 0)."""
        lo, span, present = read_support(r)
        nsym = len(present)
        if nsym < 1 or nsym > total:
            raise ValueError(f"model table lists {nsym} symbols for {total} values")
        width = r.u8()
        if width > MAX_WIDTH:
            raise ValueError(f"model table count width {width} > {MAX_WIDTH}")
        counts = unpack_fixed(r.raw(packed_len(width, nsym)), width, nsym) + 1
        if int(counts.sum()) != total:
            raise ValueError(f"model table does not sum: counts add to {int(counts.sum())}, "
                             f"the stream codes {total} values")
        return cls(lo=lo, span=span, present=present, counts=counts)


def spans(tables: list[Table]) -> tuple[np.ndarray, list[int], list[int]]:
    """(every table's counts, one after another; where each table's start; how many each
    has): what the batched costings below share."""
    lengths = [len(t.counts) for t in tables]
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    return np.concatenate([t.counts for t in tables]), starts, lengths


def coded_bits_of(tables: list[Table]) -> list[tuple[float, float]]:
    """``[(t.bits() + 8 * t.nbytes(), t.bits()) for t in tables]`` in a few calls over all
    their counts at once: the same floats (each table's terms are the same, and summed on
    their own)."""
    counts, starts, lengths = spans(tables)
    totals = np.add.reduceat(counts, starts)  # integers: exact, like each table's c.sum()
    c = counts.astype(np.float64)
    terms = c * np.log2(totals.repeat(lengths) / c)
    maxima = np.maximum.reduceat(counts, starts).tolist()
    out = []
    for t, start, n, largest in zip(tables, starts, lengths, maxima, strict=True):
        bits = float(terms[start:start + n].sum()) if n > 1 else 0.0
        out.append((bits + 8 * _table_bytes(t, largest), bits))
    return out


def _table_bytes(table: Table, largest: int) -> int:
    """Bytes ``Table.write`` appends for ``table``, whose largest count is ``largest``."""
    width = (largest - 1).bit_length()
    return support_bytes(table.lo, table.span, table.present) + 1 + \
        packed_len(width, len(table.present))


def categorical_model(table: Table) -> constriction.stream.model.Categorical:
    """The coding model of ``table``: its exact counts (constriction normalises them)."""
    return constriction.stream.model.Categorical(table.counts.astype(np.float64), perfect=False)


def encode_symbols(sink: Sink, symbols: np.ndarray, table: Table) -> None:
    """Code ``symbols`` (ranks under ``table``); nothing when the table has one value."""
    if len(table.present) > 1:
        sink.encode(symbols, categorical_model(table))


def decode_symbols(source: Source, table: Table, count: int) -> np.ndarray:
    """``count`` symbols (int32 ranks) under ``table``."""
    if len(table.present) == 1:
        return np.zeros(count, dtype=np.int32)
    return source.decode(categorical_model(table), count)
