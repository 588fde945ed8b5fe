"""A model table over magnitude bins: a few bytes for a wide alphabet (issue 20).

An 8-bit weight tensor has up to 255 distinct values; ``categorical.Table`` and
``logtable.LogTable`` store a count per value (7-15 bits each), which on a small tensor
costs more than the table saves over a smoother model. Here the magnitudes ``|v|`` are
grouped into bins: ``0 .. E-1`` one bin each (``E = 2^e0``), then every octave
``[E·2^j, E·2^(j+1))`` split into ``2^sub`` equal bins (at least one value wide); the
table stores a quarter-octave count code per present bin (``logtable``'s 7 bits), and
every value of a bin gets the bin's weight divided by its width. A *signed* table
splits each magnitude's weight evenly between ``-a`` and ``+a``: signs cost one bit,
which is what they carry in a trained weight. Stored as::

    u8      layout        bit 7: signed; bits 3-5: e0 (0..4); bits 0-2: sub (0..3)
    varint  M             largest magnitude (at most MAX_MAGNITUDE)
    bytes   bitmap        which bins occur, ceil(bins / 8) bytes
    bytes   codes         7 bits per present bin, MSB first

Weights are ``ldexp`` of exact literals divided by bin widths: IEEE arithmetic, so every
machine builds the same model. The encoder tries every layout on the histogram and keeps
the cheapest (``fit``); the caller compares it with the exact tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import constriction
import numpy as np

from occ.coding import logtable
from occ.coding.bitio import (
    ByteReader,
    ByteWriter,
    pack_fixed,
    packed_len,
    unpack_fixed,
    varint_len,
)
from occ.coding.logtable import CODE_BITS, WEIGHTS

MAX_MAGNITUDE = 1 << 15  # alphabets up to 2^16 values, like categorical.MAX_SPAN
E0S, SUBS = range(5), range(4)
CACHED_TOP = 1 << 10  # layouts of magnitudes up to this are cached (8-bit alphabets: tiny)


def bins(top: int, e0: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin of each magnitude 0..top, width of each bin) for a layout (read-only arrays;
    cached for small ``top``, so a wide int16 alphabet pins no memory)."""
    return _cached_bins(top, e0, sub) if top <= CACHED_TOP else _bins(top, e0, sub)


def _bins(top: int, e0: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    exact = 1 << e0
    a = np.arange(top + 1)
    out = a.copy()
    widths = [1] * min(exact, top + 1)
    start, index = exact, exact
    while start <= top:
        width = max(1, start >> sub)
        for lo in range(start, 2 * start, width):
            if lo > top:
                break
            hi = min(lo + width, top + 1)
            out[lo:hi] = index
            widths.append(hi - lo)
            index += 1
        start *= 2
    widths_array = np.array(widths, dtype=np.int64)
    out.setflags(write=False)
    widths_array.setflags(write=False)
    return out, widths_array


_cached_bins = lru_cache(maxsize=128)(_bins)


@dataclass(frozen=True)
class BinTable:
    """A binned magnitude model: layout, largest magnitude, present bins and their codes."""

    signed: bool
    e0: int
    sub: int
    top: int
    present: np.ndarray  # (P,) bin indices, ascending
    codes: np.ndarray  # (P,) quarter-octave count codes

    @cached_property
    def _spread(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight of every value from ``-top`` (signed; else 0) to ``top``, 0.0 for a
        value the model leaves out; which values it keeps), computed once."""
        bin_of, widths = bins(self.top, self.e0, self.sub)
        per_bin = np.zeros(len(widths))
        per_bin[self.present] = WEIGHTS[self.codes]
        by_magnitude = (per_bin / widths)[bin_of]  # each present bin weighs at least 1
        if self.signed:  # a magnitude's weight split evenly between -a and +a
            half = by_magnitude[1:] / 2
            by_magnitude = np.concatenate((half[::-1], by_magnitude[:1], half))
        return by_magnitude, by_magnitude > 0

    @property
    def alphabet(self) -> np.ndarray:
        """Every value the model gives a probability, ascending."""
        return self._spread[1].nonzero()[0] - (self.top if self.signed else 0)

    def weights(self) -> np.ndarray:
        """Weight of each value of ``alphabet``."""
        spread, kept = self._spread
        return spread[kept]

    def model(self) -> constriction.stream.model.Categorical:
        """The coding model over ``alphabet``."""
        return constriction.stream.model.Categorical(self.weights(), perfect=False)

    def symbols(self, v: np.ndarray) -> np.ndarray:
        """Symbol index (int32) of each value (every value must be in the alphabet)."""
        rank = np.cumsum(self._spread[1], dtype=np.int32) - 1
        if not self.signed:
            return rank[v]
        # by value: 0 .. top first, then -top .. -1, which negative indices reach
        return np.concatenate((rank[self.top:], rank[:self.top]))[v]

    def write(self, w: ByteWriter) -> None:
        """Append the table."""
        w.u8(self.signed << 7 | self.e0 << 3 | self.sub)
        w.varint(self.top)
        n_bins = len(bins(self.top, self.e0, self.sub)[1])
        mask = np.zeros(n_bins, dtype=np.uint8)
        mask[self.present] = 1
        w.raw(np.packbits(mask).tobytes())
        w.raw(pack_fixed(self.codes, CODE_BITS))

    def nbytes(self) -> int:
        """Bytes ``write`` appends."""
        n_bins = len(bins(self.top, self.e0, self.sub)[1])
        return 1 + varint_len(self.top) + (n_bins + 7) // 8 + \
            packed_len(CODE_BITS, len(self.present))

    @classmethod
    def read(cls, r: ByteReader) -> BinTable:
        """Read a table written by ``write``; every field checked."""
        layout = r.u8()
        signed, e0, sub = bool(layout >> 7), layout >> 3 & 7, layout & 7
        if layout & 0x40 or e0 not in E0S or sub not in SUBS:
            raise ValueError(f"bin table layout {layout:#x} unknown")
        top = r.varint(MAX_MAGNITUDE)
        n_bins = len(bins(top, e0, sub)[1])
        bitmap = np.frombuffer(r.raw((n_bins + 7) // 8), dtype=np.uint8)
        present = np.flatnonzero(np.unpackbits(bitmap, count=n_bins)).astype(np.int64)
        if not len(present):
            raise ValueError("bin table lists no bins")
        codes = unpack_fixed(r.raw(packed_len(CODE_BITS, len(present))), CODE_BITS,
                             len(present))
        return cls(signed, e0, sub, top, present, codes)


def _layouts(top: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """``_all_layouts(top)``, cached for small ``top``."""
    return _cached_layouts(top) if top <= CACHED_TOP else _all_layouts(top)


def _all_layouts(top: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Every distinct layout for magnitudes 0..top: (layouts, bin of each magnitude per
    layout (L, top+1), width of each bin per layout (L, B), zero-padded)."""
    layouts, bin_rows, width_rows, seen = [], [], [], set()
    for e0 in E0S:
        for sub in SUBS:
            if e0 and (1 << e0) > top + 1 and sub:
                continue  # every magnitude has its own bin already: one layout is enough
            bin_of, widths = bins(top, e0, sub)
            if (key := bin_of.tobytes()) in seen:
                # the same bins as an earlier layout (e.g. sub 3 whatever e0: the first
                # octaves are one bin per value either way), so the same bits: fit keeps
                # the first of equals anyway
                continue
            seen.add(key)
            layouts.append((e0, sub))
            bin_rows.append(bin_of)
            width_rows.append(widths)
    n_bins = max(len(w) for w in width_rows)
    width = np.zeros((len(layouts), n_bins), dtype=np.int64)
    for i, w in enumerate(width_rows):
        width[i, :len(w)] = w
    out = (layouts, np.stack(bin_rows), width)
    for a in out[1:]:
        a.setflags(write=False)
    return out


def _edges(top: int) -> tuple[np.ndarray, ...]:
    """Per layout of ``_layouts(top)``: 0, then one past the last magnitude of each bin
    (L, B + 1; padding bins empty), bin widths of at least 1 (L, B), and the table bits
    before the codes (L,). Cached like ``_layouts``."""
    return _cached_edges(top) if top <= CACHED_TOP else _all_edges(top)


def _all_edges(top: int) -> tuple[np.ndarray, ...]:
    width = _layouts(top)[2]
    ends = np.zeros((len(width), width.shape[1] + 1), dtype=np.int64)
    ends[:, 1:] = np.cumsum(width, axis=1)  # bins are consecutive runs of magnitudes
    head_bytes = 1 + varint_len(top) + ((width > 0).sum(1) + 7) // 8  # layout, M, bitmap
    out = (ends, np.maximum(width, 1), 8 * head_bytes)
    for a in out:
        a.setflags(write=False)
    return out


_cached_edges = lru_cache(maxsize=32)(_all_edges)


_cached_layouts = lru_cache(maxsize=32)(_all_layouts)


def fit(values: np.ndarray) -> tuple[BinTable, float] | None:
    """The cheapest layout for ``values`` (int64) and its total bits (table included), or
    None when the magnitudes exceed MAX_MAGNITUDE. Every layout is costed at once."""
    distinct, counts = np.unique(values, return_counts=True)
    return fit_counts(distinct, counts)


def fit_counts(distinct: np.ndarray, counts: np.ndarray) -> tuple[BinTable, float] | None:
    """``fit`` of values given as their ``distinct`` values (int64, ascending) and how
    often each occurs."""
    mags = np.abs(distinct)
    top = int(mags.max())
    if top > MAX_MAGNITUDE:
        return None
    total_count = int(counts.sum())
    # shifted by one, so that the running sum starts at 0 (integers: exact in float64)
    cumulative = np.bincount(mags + 1, weights=counts.astype(np.float64),
                             minlength=top + 2).cumsum()
    signed = bool(distinct[0] < 0)
    nonzero = total_count - int(cumulative[1])  # magnitude 0 is the value 0
    layouts = _layouts(top)[0]
    ends, safe_width, head_bits = _edges(top)
    running = cumulative[ends]
    per_bin = running[:, 1:] - running[:, :-1]  # (L, B) values per bin
    w = _bin_weights(per_bin, total_count)
    present = w > 0  # every present bin weighs at least 1
    total = w.sum(1, keepdims=True)
    per_value = np.where(present, w / safe_width, 1.0)
    bits = -(per_bin * np.log2(per_value / total)).sum(1)
    bits += float(nonzero) if signed else 0.0
    bits += head_bits + 8 * packed_len(CODE_BITS, present.sum(1))  # the table's bytes
    i = int(bits.argmin())
    e0, sub = layouts[i]
    chosen = present[i].nonzero()[0]
    codes = logtable.count_codes(per_bin[i, chosen].astype(np.int64), total_count)
    return BinTable(signed, e0, sub, top, chosen, codes), float(bits[i])


def _bin_weights(per_bin: np.ndarray, largest: int) -> np.ndarray:
    """Weight ``2^(code/4)`` of bins holding ``per_bin`` values (at most ``largest``); 0
    for an empty bin."""
    bits = logtable.lookup_bits(largest)
    if bits is not None:
        return logtable.code_table(bits)[1][per_bin.astype(np.intp)]
    present = per_bin > 0
    codes = logtable.count_codes(np.where(present, per_bin, 1).astype(np.int64), largest)
    return np.where(present, WEIGHTS[codes], 0.0)

