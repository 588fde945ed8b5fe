"""Mask cells coded in passes under neighbour contexts (occ.coding.ctxnb, issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from occ.coding import adaptive, ctxnb
from occ.coding.frame import Source


def blobs(rng: np.random.Generator, rows: int, side: int, density: float) -> np.ndarray:
    """(rows, side*side) int8 weights whose nonzeros are spatial blobs on a side x side grid
    (what a pruned first layer of an MLP on images keeps), signed 4-bit values."""
    yy, xx = np.mgrid[:side, :side]
    out = np.zeros((rows, side * side), dtype=np.int8)
    for r in range(rows):
        cy, cx = rng.uniform(0, side, size=2)
        radius = rng.uniform(1.5, side / 3)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2).reshape(-1)
        keep = inside & (rng.random(side * side) < density)
        out[r, keep] = rng.choice([-7, -3, -1, 1, 2, 5, 7], size=int(keep.sum()))
    return out


def uses_neighbours(data: bytes, count: int, rows: int) -> bool:
    """Whether a ctx stream's mask has the NEIGHBOURS flag (its first side byte after
    the row and nonzero counts)."""
    source = Source(data)
    source.side.varint(count)
    k = source.side.varint(count)
    return 0 < k < count and bool(source.side.u8() & ctxnb.NEIGHBOURS)


def roundtrip(q: np.ndarray, shape: tuple[int, ...]) -> bytes:
    flat = q.reshape(-1)
    data, meta = adaptive.encode(flat, int(np.prod(shape[1:])), shape)
    out = adaptive.decode(data, meta, flat.dtype, flat.size)
    assert np.array_equal(out, flat)
    return data


@pytest.mark.parametrize("b", [0, 1, 2, 3, 5, 28])
def test_passes_partition_columns_and_neighbours_come_from_earlier_passes(b: int) -> None:
    cols = 28 * 28
    column_pass = ctxnb.passes(cols, b)
    assert set(np.unique(column_pass)) <= {0, 1, 2}
    for pass_ in (1, 2):
        for s in ctxnb.shifts(b, pass_):
            for c in np.flatnonzero(column_pass == pass_):
                for n in (c - s, c + s):
                    if 0 <= n < cols and 0 < s < cols:
                        # a neighbour in the same or a later pass is never counted: the
                        # encoder zeroes what the decoder does not know yet
                        mask = np.zeros((1, cols), dtype=bool)
                        mask[0, n] = True
                        counted = ctxnb.states(mask, b)[c] - ctxnb.STATE_BASE[pass_]
                        assert counted == (1 if column_pass[n] < pass_ else 0)
            break  # one shift per pass is enough for the property


def test_clustered_masks_take_neighbour_contexts_and_get_smaller() -> None:
    q = blobs(np.random.default_rng(0), 120, 28, 0.6)
    shape = q.shape
    with_nb = roundtrip(q, shape)
    assert uses_neighbours(with_nb, q.size, shape[0])
    keep = adaptive.TRY_OPTIONS
    try:
        adaptive.TRY_OPTIONS = 0  # classes alone
        without = roundtrip(q, shape)
    finally:
        adaptive.TRY_OPTIONS = keep
    assert not uses_neighbours(without, q.size, shape[0])
    assert len(with_nb) < 0.9 * len(without), (len(with_nb), len(without))


def test_conv_kernels_use_a_kernel_wide_grid() -> None:
    rng = np.random.default_rng(1)
    q = blobs(rng, 64 * 8, 5, 0.8).reshape(64, 8, 5, 5)
    assert ctxnb.widths(q.shape, 200) == [5]
    data = roundtrip(q, q.shape)
    assert uses_neighbours(data, q.size, 64)


def test_iid_masks_keep_the_class_model() -> None:
    rng = np.random.default_rng(2)
    q = (rng.random((100, 400)) < 0.1).astype(np.int8) * rng.choice([-1, 1], (100, 400))
    data = roundtrip(q.astype(np.int8), (100, 20, 20))
    assert not uses_neighbours(data, q.size, 100)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_round_trips_any_mask_with_any_grid(data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 6))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    inner = data.draw(st.integers(1, 4))
    shape = (rows, inner, kh, kw)
    q = data.draw(hnp.arrays(np.int8, shape, elements=st.sampled_from([0, 0, 0, 1, -1, 3])))
    roundtrip(q, shape)
    square = data.draw(st.integers(3, 9))
    q2 = data.draw(hnp.arrays(np.int8, (rows, square * square),
                              elements=st.sampled_from([0, 0, 1, -2])))
    roundtrip(q2, q2.shape)


def test_corrupted_neighbour_streams_raise_value_error_only(ctx_rejects_corruption) -> None:
    rng = np.random.default_rng(3)
    q = blobs(rng, 40, 12, 0.7)
    base = roundtrip(q, q.shape)
    assert uses_neighbours(base, q.size, 40)
    ctx_rejects_corruption(base, q.reshape(-1), rng, cuts=(1, 3, len(base) // 2, len(base) - 1))


def test_dead_cells_beside_set_ones_encode() -> None:
    """A dead column between set cells can have more set neighbours than any live cell
    (found by review: the state lookup overran the fitted adjustments)."""
    rng = np.random.default_rng(0)
    q = np.zeros((64, 64), np.int8)
    for r in range(64):
        a = int(rng.integers(0, 8))
        q[r, 2 * a:2 * a + 2 * int(rng.integers(3, 8)):2] = 1  # odd columns dead
        b = 16 + int(rng.integers(0, 15))
        q[r, 2 * b:2 * b + 2] = -1
    for shape in ((64, 64), (64, 64, 1, 1), (64, 16, 2, 2)):
        roundtrip(q, shape)


def test_grid_widths_never_exceed_the_row() -> None:
    assert ctxnb.widths((50, 6, 2, 8), 6) == [0]  # a shape that does not match cols
    q = np.zeros((400, 6), np.int8)
    q[:, :3] = 1
    q[::2, 3:] = -2
    flat = q.reshape(-1)
    data, meta = adaptive.encode(flat, 6, (50, 6, 2, 8))
    assert np.array_equal(adaptive.decode(data, meta, flat.dtype, flat.size), flat)
