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

import constriction
import numpy as np

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
        codes = clamp(np.rint(4 * np.log2(table.counts)), 0, MAX_CODE).astype(np.int64)
        return cls(table.lo, table.span, table.present, codes)

    def weights(self) -> np.ndarray:
        """``2^(code/4)`` per present value, as exact floats."""
        return WEIGHTS[self.codes]

    def bits(self, counts: np.ndarray) -> float:
        """Bits of symbols occurring ``counts`` times under this table's model."""
        w = self.weights()
        return float(-(counts * np.log2(w / w.sum())).sum()) if len(w) > 1 else 0.0

    def nbytes(self) -> int:
        """Bytes ``write`` appends (counted, not written)."""
        return support_bytes(self.lo, self.span, self.present) + \
            packed_len(CODE_BITS, len(self.present))

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
