"""The ctx encoder's shortcuts make the same choices as the computations they replace.

Tables looked up instead of computed, costs batched over several tables, layouts that
bin alike counted once, and log tables left uncosted when bounds rule them out: each must
give the same floats or the same choice, so the same bytes (what bench_coder relies on).
"""

from __future__ import annotations

import numpy as np
import pytest

from occ.coding import adaptive, bintable, ctxmask, logtable, tablekinds
from occ.coding.categorical import Table, coded_bits_of


def test_count_codes_looked_up_equal_computed() -> None:
    counts = np.arange(1, 1 << logtable.LUT_BITS)
    codes, weights = logtable.code_table(logtable.LUT_BITS)
    assert np.array_equal(codes[counts], logtable._codes_of(counts.astype(np.float64)))
    assert np.array_equal(weights[counts], logtable.WEIGHTS[codes[counts]])
    assert codes[0] == 0 and weights[0] == 0.0
    big = np.array([1 << 16, 3 << 20, 1 << 40])  # past the table: computed
    assert np.array_equal(logtable.count_codes(big, int(big.max())), logtable._codes_of(big))


def test_bin_weights_computed_past_the_table_equal_looked_up() -> None:
    per_bin = np.random.default_rng(3).integers(0, 1 << 12, size=(4, 50)).astype(np.float64)
    looked_up = bintable._bin_weights(per_bin, 1 << 12)
    assert np.array_equal(bintable._bin_weights(per_bin, 1 << 20), looked_up)  # computed
    assert (looked_up[per_bin == 0] == 0).all() and (looked_up[per_bin > 0] >= 1).all()


@pytest.mark.parametrize("length", [1, 2, 9, 784, ctxmask.MAX_TABULATED])
def test_line_bits_looked_up_equal_computed(length: int) -> None:
    counts = np.random.default_rng(length).integers(0, length + 1, size=500)
    direct = float(ctxmask._each_line_bits(counts.astype(np.float64), length).sum())
    assert ctxmask._line_bits(counts, length) == direct


@pytest.mark.parametrize("top", [3, 15, 16, 40, 127, 255, 1000, 32767])
def test_layouts_dropped_bin_like_an_earlier_one(top: int) -> None:
    kept = bintable._all_layouts(top)[0]
    assert len(set(bintable.bins(top, *lay)[0].tobytes() for lay in kept)) == len(kept)
    for e0 in bintable.E0S:
        for sub in bintable.SUBS:
            if (e0, sub) in kept or (e0 and (1 << e0) > top + 1 and sub):
                continue
            same = [lay for lay in kept if np.array_equal(bintable.bins(top, *lay)[0],
                                                          bintable.bins(top, e0, sub)[0])]
            assert same and same[0] < (e0, sub)  # an earlier layout: the first of equals


def tables(seed: int) -> list[Table]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rng.integers(1, 6)):
        scale = rng.choice([0.3, 3.0, 40.0])
        out.append(Table.fit(np.round(rng.laplace(0, scale, rng.integers(1, 3000)))
                             .astype(np.int64)))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_batched_costs_equal_per_table_costs(seed: int) -> None:
    group = tables(seed)
    assert coded_bits_of(group) == [(t.bits() + 8 * t.nbytes(), t.bits()) for t in group]
    for t, (bits, lt) in zip(group, logtable.costs_of(group), strict=True):
        alone = logtable.LogTable.of(t)
        assert np.array_equal(lt.codes, alone.codes)
        assert bits == alone.bits(t.counts) + 8 * alone.nbytes()


@pytest.mark.parametrize("seed", range(24))
def test_log_tables_left_out_only_where_they_cannot_be_written(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(2, 64)), int(rng.choice([9, 27, 64, 144]))
    bits = int(rng.choice([2, 4, 8]))
    q = np.round(rng.laplace(0, rng.choice([0.5, 2.0, 2.0 ** bits]), (rows, cols)))
    q = q.clip(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    q[rng.random(q.shape) < rng.choice([0.0, 0.5, 0.9])] = 0
    flat = q.astype(np.int8).reshape(-1)
    fast, _ = adaptive.encode(flat, cols)
    monkeypatch.setattr(tablekinds, "_logs_may_win", lambda *_: True)  # always cost them
    assert adaptive.encode(flat, cols)[0] == fast
