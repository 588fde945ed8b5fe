"""Binned magnitude tables (occ.coding.bintable) and ctx streams that use them (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest

from occ.coding import adaptive, bintable
from occ.coding.bitio import ByteReader, ByteWriter


@pytest.mark.parametrize("top", [0, 1, 5, 16, 127, 255, 32767])
@pytest.mark.parametrize(("e0", "sub"), [(0, 0), (2, 1), (3, 3), (4, 2)])
def test_bins_cover_every_magnitude_once_in_order(top: int, e0: int, sub: int) -> None:
    bin_of, widths = bintable.bins(top, e0, sub)
    assert len(bin_of) == top + 1
    assert np.all(np.diff(bin_of) >= 0) and np.all(np.diff(bin_of) <= 1)
    assert np.array_equal(np.bincount(bin_of), widths)
    assert widths.sum() == top + 1


def wide_weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """8-bit per-row quantized weights of a uniform init, half pruned: ~200 distinct values."""
    w = rng.uniform(-1, 1, size=(rows, cols))
    w[np.abs(w) < 0.5] = 0
    return np.round(w / np.abs(w).max(1, keepdims=True) * 127).astype(np.int8)


def test_fit_round_trips_through_its_bytes() -> None:
    rng = np.random.default_rng(0)
    v = wide_weights(rng, 64, 64).reshape(-1).astype(np.int64)
    v = v[v != 0]
    table, bits = bintable.fit(v)
    w = ByteWriter()
    table.write(w)
    assert len(w.getvalue()) == table.nbytes()
    back = bintable.BinTable.read(ByteReader(w.getvalue()))
    assert np.array_equal(back.alphabet, table.alphabet)
    assert np.array_equal(back.weights(), table.weights())
    assert set(np.unique(v)) <= set(table.alphabet.tolist())
    probs = table.weights() / table.weights().sum()
    exact = -np.log2(probs[table.symbols(v)]).sum() + 8 * table.nbytes()
    assert bits == pytest.approx(exact, rel=1e-9)


def test_signed_weights_split_evenly_and_are_exact_dyadic() -> None:
    table = bintable.BinTable(True, 1, 0, 3, np.array([1, 2]), np.array([8, 4]))
    # bins: {0}, {1}, {2, 3}; present: {1} (code 8: 2^2) and {2, 3} (code 4: 2^1)
    assert table.alphabet.tolist() == [-3, -2, -1, 1, 2, 3]
    assert table.weights().tolist() == [0.5, 0.5, 2.0, 2.0, 0.5, 0.5]


def test_corrupt_tables_raise_value_error() -> None:
    for data in (bytes([0x40, 3, 0xFF, 0]), bytes([0x05 << 3, 3, 0xFF, 0]),
                 bytes([0x80, 3, 0x00]), bytes([0x80]) + b"\xff\xff\x7f"):
        with pytest.raises(ValueError):
            bintable.BinTable.read(ByteReader(data))


def test_ctx_takes_binned_tables_for_wide_alphabets_and_gets_smaller(monkeypatch) -> None:
    monkeypatch.setattr(adaptive, "LEARN", False)  # tables only: binned against the rest
    q = wide_weights(np.random.default_rng(1), 64, 144).reshape(-1)
    data, meta = adaptive.encode(q, 144)
    assert np.array_equal(adaptive.decode(data, meta, q.dtype, q.size), q)
    assert data[0] & adaptive.KINDS
    keep = adaptive.WIDE
    try:
        adaptive.WIDE = 1 << 20  # exact and log tables only
        plain, _ = adaptive.encode(q, 144)
    finally:
        adaptive.WIDE = keep
    assert not plain[0] & adaptive.KINDS
    assert len(data) < 0.99 * len(plain), (len(data), len(plain))


def test_corrupted_binned_streams_raise_value_error_only(ctx_rejects_corruption,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(adaptive, "LEARN", False)
    rng = np.random.default_rng(2)
    q = wide_weights(rng, 16, 72).reshape(-1)
    base, _ = adaptive.encode(q, 72)
    assert base[0] & adaptive.KINDS
    ctx_rejects_corruption(base, q, rng, cuts=(1, 3, len(base) // 2, len(base) - 1))


@pytest.mark.parametrize("seed", range(5))
def test_log_table_counts_its_bytes_exactly(seed: int) -> None:
    from occ.coding.categorical import Table
    from occ.coding.logtable import LogTable

    rng = np.random.default_rng(seed)
    values = rng.integers(-300, 300, size=rng.integers(1, 400)) * rng.integers(1, 3)
    table = LogTable.of(Table.fit(values))
    w = ByteWriter()
    table.write(w)
    assert table.nbytes() == len(w.getvalue())
