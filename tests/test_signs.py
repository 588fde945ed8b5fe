"""Signs coded apart under their neighbours' signs (occ.coding.signs, issue 20)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from occ.coding import adaptive, ctxnb, signs
from occ.coding.frame import Sink, Source


def signed_blobs(rng: np.random.Generator, rows: int, side: int) -> np.ndarray:
    """(rows, side*side) int8: each row a positive blob beside a negative one, like the
    receptive fields a pruned first layer keeps; magnitudes 1..7."""
    yy, xx = np.mgrid[:side, :side]
    out = np.zeros((rows, side * side), dtype=np.int8)
    for r in range(rows):
        for sign in (1, -1):
            cy, cx = rng.uniform(0, side, size=2)
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(2, side / 3) ** 2)
            keep = inside.reshape(-1) & (rng.random(side * side) < 0.7)
            out[r, keep] = sign * rng.integers(1, 8, size=int(keep.sum()))
    return out


def nonzeros(q: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(rows, cols, flat positions of the nonzeros, whether each is negative)."""
    nz = np.flatnonzero(q)
    return *q.shape, nz, q.reshape(-1)[nz] < 0


def test_contexts_only_use_signs_of_earlier_passes() -> None:
    rows, cols, nz, negative = nonzeros(signed_blobs(np.random.default_rng(0), 20, 12))
    ctx = signs.contexts(nz, negative, rows, cols, 12)
    column_pass = ctxnb.passes(cols, 12)[nz % cols]
    later = column_pass == 2
    flipped = negative.copy()
    flipped[later] = ~flipped[later]  # signs the decoder does not know yet when in pass 3
    again = signs.contexts(nz, flipped, rows, cols, 12)
    assert np.array_equal(ctx, again)
    assert (ctx[column_pass == 0] == 0).all()
    assert ctx.max() < signs.N_CONTEXTS


def test_signs_round_trip_alone() -> None:
    rows, cols, nz, negative = nonzeros(signed_blobs(np.random.default_rng(1), 30, 10))
    chosen = signs.plan(nz, negative, rows, cols, [10])
    bits = chosen.bits
    sink = Sink()
    signs.encode(sink, negative, chosen)
    source = Source(sink.finish(0))
    back = signs.decode(source, nz, rows, cols)
    source.finish()
    assert np.array_equal(back, negative)
    assert bits < 0.75 * len(nz)  # well under a bit per sign on coherent blobs


def test_ctx_codes_coherent_signs_apart_and_gets_smaller() -> None:
    q = signed_blobs(np.random.default_rng(2), 100, 20)
    flat = q.reshape(-1)
    data, meta = adaptive.encode(flat, q.shape[1], q.shape)
    assert data[0] & 0xF0 == adaptive.SIGNS_APART
    assert np.array_equal(adaptive.decode(data, meta, flat.dtype, flat.size), flat)
    shuffled = q.copy()  # same magnitudes and positions, signs at random
    rng = np.random.default_rng(3)
    shuffled[shuffled != 0] *= rng.choice(np.array([-1, 1], dtype=np.int8),
                                          size=int((shuffled != 0).sum()))
    plain, _ = adaptive.encode(shuffled.reshape(-1), q.shape[1], q.shape)
    assert plain[0] & 0xF0 == adaptive.VERSION
    assert len(data) < 0.95 * len(plain), (len(data), len(plain))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_signed_matrix_round_trips(data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 8))
    side = data.draw(st.integers(3, 8))
    q = data.draw(hnp.arrays(np.int8, (rows, side * side),
                             elements=st.sampled_from([0, 0, 1, 2, -1, -3, 5])))
    flat = q.reshape(-1)
    encoded, meta = adaptive.encode(flat, side * side, q.shape)
    assert np.array_equal(adaptive.decode(encoded, meta, flat.dtype, flat.size), flat)


def test_corrupted_sign_streams_raise_value_error_only(ctx_rejects_corruption) -> None:
    rng = np.random.default_rng(4)
    q = signed_blobs(rng, 30, 10)
    flat = q.reshape(-1)
    base, _ = adaptive.encode(flat, q.shape[1], q.shape)
    assert base[0] & 0xF0 == adaptive.SIGNS_APART
    ctx_rejects_corruption(base, flat, rng, cuts=(1, 5, len(base) // 2, len(base) - 1))