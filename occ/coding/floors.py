"""Row magnitude floors: what ``ctx`` (``occ.coding.adaptive``) codes values relative to.

With a global pruning threshold ``t`` and a per-channel scale ``s_r``, every surviving
integer of row ``r`` has ``|q| >= round(t / s_r)``, and the magnitudes above that floor
fall off at a rate set by the same ratio. So each row's smallest magnitude ``m_r`` is
stored, its values are coded as ``sign(q)·(|q| - m_r + 1)`` (``shifted``), and the rows
are grouped by ``bucket(m_r)``, one value table per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BUCKETS = 8  # of magnitude floors (``bucket``)


def bucket(floor: np.ndarray) -> np.ndarray:
    """Context of a row's magnitude floor m >= 1: 0..3 for m = 1..4, then one per octave."""
    m = floor.astype(np.int64, copy=False)
    if len(m) and int(m.max()) < len(_BUCKET_OF):
        return _BUCKET_OF[m]  # the same values, looked up
    return _bucket(m)


def _bucket(m: np.ndarray) -> np.ndarray:
    octave = np.frexp((m - 1).astype(np.float64))[1]  # bit length of m - 1
    return np.where(m <= 4, m - 1, np.minimum(octave + 1, N_BUCKETS - 1))


_BUCKET_OF = _bucket(np.arange(1 << 10))  # bucket of every floor below 2^10
_BUCKET_OF.setflags(write=False)


@dataclass(frozen=True)
class Rows:
    """The nonzeros' values row by row (what every value plan shares): each row with a
    nonzero holds one run of ``lengths[i]`` values, whose smallest magnitude is ``m[i]``
    (``bucket`` ``row_ctx[i]``); ``floor`` repeats ``m`` per value."""

    lengths: np.ndarray  # (A,) values per row that has any
    m: np.ndarray  # (A,) int64 magnitude floor per such row
    row_ctx: np.ndarray  # (A,) int64 bucket of m
    floor: np.ndarray  # (k,) int64

    @classmethod
    def of(cls, magnitudes: np.ndarray, row_counts: np.ndarray) -> Rows:
        """``magnitudes`` (|q| of the nonzeros, row-major) of rows holding ``row_counts``."""
        lengths = row_counts[row_counts > 0]
        starts = lengths.cumsum() - lengths
        m = np.minimum.reduceat(magnitudes, starts) if len(starts) else magnitudes[:0]
        return cls(lengths, m, bucket(m), m.repeat(lengths))


def shifted(values: np.ndarray, magnitudes: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """sign(q)·(|q| - m + 1): nonzero, small where magnitudes sit just above the floor."""
    out = magnitudes - floor  # in place from here: one temporary (big ones cost page faults)
    out += 1
    out *= np.sign(values)
    return out


def by_bucket(row_ctx: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order of the values grouping them by their row's bucket ``row_ctx``, stable; values
    per bucket, N_BUCKETS of them) for rows of ``lengths`` values."""
    ctx = np.repeat(row_ctx.astype(np.uint8), lengths)
    order = np.argsort(ctx, kind="stable")  # bytes: one radix pass
    return order, np.bincount(ctx, minlength=N_BUCKETS)
