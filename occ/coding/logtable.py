"""A model table with counts rounded to quarter-octaves: fewer table bytes, nearly the same bits.

``categorical.Table`` stores every count exactly (``width`` bits each: 12-15 bits on a
typical weight tensor). For small streams those bytes cost more than the exact counts
save, so ``ctx`` may store each count as a 7-bit code ``c = round(4·log2(count))`` and code
under weights ``2^(c/4)`` instead (at most 9 % off any probability; the encoder keeps
whichever of the two is smaller in total)::

    svarint lo, varint span, u8 flags (bit 0: presence bitmap follows), [bitmap],
    bytes   codes         7 bits per present value, MSB first

Weights are exact dyadic floats (``ldexp`` of four literals), so the model, and therefore
the coded bits, are the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from occ.coding import categorical
from occ.coding.bitio import (
    ByteReader,
    ByteWriter,
    clamp,
    pack_fixed,
    packed_len,
    unpack_fixed,
)
from occ.coding.categorical import Table, read_support, support_bytes, write_support

CODE_BITS = 7
MAX_CODE = (1 << CODE_BITS) - 1  # 2^(127/4): counts beyond ~2^31 saturate (still decodable)
ROOT = np.array([1.0, 1.189207115002721, 1.4142135623730951, 1.681792830507429])  # 2^(j/4)
# 2^(c/4) for every code c (ldexp of the literals above: exact), looked up instead of
# recomputed per table
WEIGHTS = np.ldexp(ROOT[np.arange(MAX_CODE + 1) % 4], np.arange(MAX_CODE + 1) // 4)
WEIGHTS.setflags(write=False)
LUT_BITS = 16  # counts below 2^16 take their code from a table (``count_codes``)


def _codes_of(counts: np.ndarray) -> np.ndarray:
    """``round(4·log2(count))`` clipped to 0..MAX_CODE (int64), for counts >= 1."""
    return clamp(np.rint(4 * np.log2(counts)), 0, MAX_CODE).astype(np.int64)


@lru_cache(maxsize=LUT_BITS + 1)
def code_table(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(code, weight ``2^(code/4)``) of every count below ``2^bits``, by count: the same
    ``_codes_of`` values, looked up. Count 0 (an empty bin) has code 0 and weight 0."""
    codes = np.zeros(1 << bits, dtype=np.int64)
    codes[1:] = _codes_of(np.arange(1, 1 << bits, dtype=np.float64))
    weights = WEIGHTS[codes]
    weights[0] = 0.0
    for a in (codes, weights):
        a.setflags(write=False)
    return codes, weights


def lookup_bits(largest: int) -> int | None:
    """The ``code_table`` that covers counts up to ``largest`` (its ``bits``), or None
    when ``largest`` is 2^LUT_BITS or more (compute the codes then)."""
    bits = max(int(largest).bit_length(), 8)  # tables of 256 entries at least
    return bits if bits <= LUT_BITS else None


def count_codes(counts: np.ndarray, largest: int) -> np.ndarray:
    """``_codes_of(counts)`` (int64 counts >= 1, at most ``largest``)."""
    bits = lookup_bits(largest)
    return _codes_of(counts) if bits is None else code_table(bits)[0][counts]


@dataclass(frozen=True)
class LogTable:
    """Present values (offsets from ``lo``) and their quarter-octave count codes."""

    lo: int
    span: int
    present: np.ndarray  # (nsym,) int64
    codes: np.ndarray  # (nsym,) int64 in 0..MAX_CODE

    @classmethod
    def of(cls, table: Table) -> LogTable:
        """The rounded version of an exact table."""
        return cls(table.lo, table.span, table.present,
                   count_codes(table.counts, int(table.counts.max())))

    def weights(self) -> np.ndarray:
        """``2^(code/4)`` per present value, as exact floats."""
        return WEIGHTS[self.codes]

    def bits(self, counts: np.ndarray) -> float:
        """Bits of symbols occurring ``counts`` times under this table's model."""
        w = self.weights()
        return float(-(counts * np.log2(w / w.sum())).sum()) if len(w) > 1 else 0.0

    def nbytes(self) -> int:
        """Bytes ``write`` appends (counted, not written)."""
        return self.nbytes_of(self)

    @staticmethod
    def nbytes_of(table: Table | LogTable) -> int:
        """Bytes the LogTable of ``table`` (the same values present) takes."""
        return support_bytes(table.lo, table.span, table.present) + \
            packed_len(CODE_BITS, len(table.present))

    def write(self, w: ByteWriter) -> None:
        """Append the table to ``w``."""
        write_support(w, self.lo, self.span, self.present)
        w.raw(pack_fixed(self.codes, CODE_BITS))

    @classmethod
    def read(cls, r: ByteReader, total: int) -> LogTable:
        """Read a table for ``total`` (> 0) symbols."""
        lo, span, present = read_support(r)
        if not 1 <= len(present) <= total:
            raise ValueError(f"log table lists {len(present)} symbols for {total} values")
        codes = unpack_fixed(r.raw(packed_len(CODE_BITS, len(present))), CODE_BITS,
                             len(present))
        return cls(lo, span, present, codes)

    def model(self) -> constriction.stream.model.Categorical:
        """The coding model (constriction normalises the weights)."""
        return constriction.stream.model.Categorical(self.weights(), perfect=False)


def costs_of(tables: list[Table]) -> list[tuple[float, LogTable]]:
    """``(bits of each table's symbols under its LogTable, table bytes included; the
    LogTable)`` for every table, in a few calls over all their counts at once: the same
    floats as ``LogTable.of(t).bits(t.counts) + 8 * .nbytes()`` (each table's terms are the
    same, and summed on their own)."""
    counts, starts, lengths = categorical.spans(tables)
    codes = count_codes(counts, int(counts.max()))
    w = WEIGHTS[codes]
    sums = [w[start:start + n].sum() for start, n in zip(starts, lengths, strict=True)]
    terms = counts * np.log2(w / np.repeat(sums, lengths))
    out = []
    for t, start, n in zip(tables, starts, lengths, strict=True):
        lt = LogTable(t.lo, t.span, t.present, codes[start:start + n])
        bits = float(-(terms[start:start + n]).sum()) if n > 1 else 0.0
        out.append((bits + 8 * lt.nbytes(), lt))
    return out
