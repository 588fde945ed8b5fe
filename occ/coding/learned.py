"""Learned (backward-adaptive) categorical models: a group of symbols coded without a table.

A stored table (``occ.coding.categorical``) costs bytes that a small group cannot earn
back: a 3×3 convolution of a few hundred nonzeros pays as much for its value table as for
a tenth of its values. A learned model stores nothing but the alphabet (the support
``categorical.write_support`` writes: which values occur). Encoder and decoder start from
equal weights and learn from the symbols already coded: each symbol weighs
``2·count + 1`` (Krichevsky–Trofimov counts, in integers), refreshed at the start of each
block. Blocks grow geometrically (``FIRST`` symbols, then half as many again each time, at
most ``frame.CHUNK``), so a group of n symbols takes O(log n) vectorised ANS calls and
pays, measured, some ``0.4–0.9·(K - 1)`` bits per block to learn K symbol probabilities,
where a table pays for its counts (about ``K·log2 n`` bits). Which of the two is smaller is
counted per group (``occ.coding.tablekinds``, ``occ.coding.ints``).

The weights are integers, converted to float64 exactly, so encoder and decoder build
identical models on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from occ.coding.categorical import Table, read_support, support_bytes, write_support
from occ.coding.frame import CHUNK, Parts, Sink, Source

FIRST = 16  # symbols in the first block, coded under equal weights
# A learned model is tried only for groups whose table takes at least this share of their
# entropy (it saves a part of the table's bytes, and costs a pass over the symbols) and
# that have fewer distinct values than this (wider ones have cheap binned tables; learning
# their many probabilities costs more than those tables).
TABLE_SHARE = 0.01
NARROW = 24


def worth_trying(table: Table, entropy: float) -> bool:
    """Whether a learned model could save more than a sliver of what ``table`` (fitted to a
    group of ``entropy`` bits) costs: a group of one value (its alphabet is all it costs),
    or of fewer than ``NARROW`` whose table is at least ``TABLE_SHARE`` of its bits."""
    nsym = len(table.present)
    return nsym == 1 or (nsym < NARROW and 8 * table.nbytes() >= TABLE_SHARE * entropy)


@lru_cache(maxsize=1024)
def block_sizes(n: int) -> np.ndarray:
    """(B,) int64, read-only: how many of ``n`` symbols each block codes (they add up to
    ``n``)."""
    sizes, size, done = [], FIRST, 0
    while done < n:
        sizes.append(min(size, n - done))
        done += sizes[-1]
        size = min(size + size // 2, CHUNK)
    out = np.array(sizes, dtype=np.int64)
    out.setflags(write=False)
    return out


WIDE_TABLE = 1 << 16  # blocks × alphabet beyond which the blocks' weights are not all
# held at once (a wide alphabet read from a hostile stream would make them large)


def _weights_before(symbols: np.ndarray, nsym: int) -> tuple[np.ndarray, np.ndarray]:
    """((B, nsym) symbols of each block, (B, nsym) weights each block is coded under)."""
    sizes = block_sizes(len(symbols))
    key = np.repeat(np.arange(len(sizes), dtype=np.int64) * nsym, sizes)
    key += symbols
    hist = np.bincount(key, minlength=len(sizes) * nsym).reshape(len(sizes), nsym)
    weights = np.cumsum(hist, axis=0)
    weights -= hist  # counts before each block
    weights *= 2
    weights += 1
    return hist, weights


def _each_block(symbols: np.ndarray, nsym: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(the block's symbols, the weights they are coded under), block by block: all at
    once where that is small, else one block's weights at a time."""
    sizes = block_sizes(len(symbols))
    starts = (np.cumsum(sizes) - sizes).tolist()
    if len(sizes) * nsym <= WIDE_TABLE:
        _, weights = _weights_before(symbols, nsym)
        for start, size, w in zip(starts, sizes.tolist(), weights, strict=True):
            yield symbols[start:start + size], w
        return
    counts = np.zeros(nsym, dtype=np.int64)
    for start, size in zip(starts, sizes.tolist(), strict=True):
        block = symbols[start:start + size]
        yield block, 2 * counts + 1
        counts += np.bincount(block, minlength=nsym)


def bits(symbols: np.ndarray, nsym: int) -> float:
    """Information (bits) of ``symbols`` (ranks below ``nsym``) under the learned model."""
    if nsym < 2 or not len(symbols):
        return 0.0
    sizes = block_sizes(len(symbols))
    totals = 2 * (np.cumsum(sizes) - sizes) + nsym  # the weights' sum in each block
    if len(sizes) * nsym <= WIDE_TABLE:
        hist, weights = _weights_before(symbols, nsym)
        return float(sizes @ np.log2(totals) - (hist * np.log2(weights)).sum())
    return float(sizes @ np.log2(totals)) - sum(
        float(np.log2(w)[block].sum()) for block, w in _each_block(symbols, nsym))


def _model(weights: np.ndarray) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(weights.astype(np.float64), perfect=False)


def encode(sink: Sink, symbols: np.ndarray, nsym: int) -> None:
    """Code ``symbols`` (ranks below ``nsym``) block by block; nothing when ``nsym`` is 1."""
    if nsym < 2 or not len(symbols):
        return
    for block, weights in _each_block(symbols, nsym):
        sink.encode(block, _model(weights))


def decode(source: Source, nsym: int, count: int) -> np.ndarray:
    """``count`` symbols (int32 ranks below ``nsym``) that ``encode`` wrote."""
    out = np.zeros(count, dtype=np.int32)
    if nsym < 2:
        return out
    counts = np.zeros(nsym, dtype=np.int64)
    start = 0
    for size in block_sizes(count).tolist():
        block = source.decode(_model(2 * counts + 1), size)
        out[start:start + size] = block
        counts += np.bincount(block, minlength=nsym)
        start += size
    return out


@dataclass(frozen=True)
class Plan:
    """A group of values to code under a learned model: the alphabet (an exact table's
    support; its counts are not stored) and the values' ranks in it."""

    table: Table
    ranks: np.ndarray  # (n,) int32

    def bits(self) -> float:
        """Bits it takes, the alphabet included."""
        t = self.table
        return bits(self.ranks, len(t.present)) + 8 * support_bytes(t.lo, t.span, t.present)

    def write(self, sink: Sink) -> None:
        """Append the alphabet to the side bytes and the ranks to the coded words."""
        t = self.table
        write_support(sink.side, t.lo, t.span, t.present)
        encode(sink, self.ranks, len(t.present))


def read_alphabet(source: Source, total: int) -> tuple[int, np.ndarray]:
    """(lo, present offsets) of the next ``Plan``, which codes ``total`` symbols."""
    lo, _, present = read_support(source.side)
    if not 1 <= len(present) <= total:
        raise ValueError(f"learned model lists {len(present)} values for {total} symbols")
    return lo, present


def read_ranks(source: Source, nsym: int, total: int, parts: Parts | None = None) -> np.ndarray:
    """The ``total`` int32 ranks (below ``nsym``) of the ``Plan`` whose alphabet was read."""
    ranks = decode(source, nsym, total)
    if parts is not None:
        parts.add_bits("values", bits(ranks, nsym))
    return ranks


def read(source: Source, total: int, parts: Parts | None = None) -> np.ndarray:
    """``total`` int64 values a ``Plan`` wrote (its alphabet, then its ranks)."""
    lo, present = read_alphabet(source, total)
    return present[read_ranks(source, len(present), total, parts)] + lo
