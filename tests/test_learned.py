"""Learned (backward-adaptive) models: no table stored, the model learned while coding."""

from __future__ import annotations

import numpy as np
import pytest

from occ.artifact import codecs
from occ.coding import adaptive, ints, learned
from occ.coding.categorical import Table, write_support
from occ.coding.frame import CHUNK, Sink, Source


def _round_trip(symbols: np.ndarray, nsym: int) -> bytes:
    sink = Sink()
    learned.encode(sink, symbols, nsym)
    data = sink.finish(0)
    source = Source(data)
    assert np.array_equal(learned.decode(source, nsym, len(symbols)), symbols)
    source.finish()
    return data


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 41, 1000, 70_001])
@pytest.mark.parametrize("nsym", [1, 2, 7, 300])
def test_round_trips_at_every_block_boundary_and_costs_its_counted_bits(n, nsym) -> None:
    rng = np.random.default_rng(n * 1000 + nsym)
    p = rng.dirichlet(np.ones(nsym) * 0.3)
    symbols = rng.choice(nsym, size=n, p=p).astype(np.int32)
    data = _round_trip(symbols, nsym)
    bits = learned.bits(symbols, nsym)
    # the ANS words hold the counted bits, plus the coder's flush (< 8 bytes)
    assert bits / 8 - 1 <= len(data) - 2 <= bits / 8 + 8


def test_blocks_grow_geometrically_and_stay_bounded() -> None:
    sizes = learned.block_sizes(10_000_000).tolist()
    assert sum(sizes) == 10_000_000 and sizes[:4] == [16, 24, 36, 54]
    assert max(sizes) == CHUNK and len(sizes) < 60
    assert learned.block_sizes(5).tolist() == [5]


def test_learning_beats_a_stored_table_on_a_small_group_and_loses_little_on_a_big_one() -> None:
    rng = np.random.default_rng(0)
    for n, most in ((300, 1.0), (200_000, 1.002)):
        values = rng.choice(6, size=n, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
        table = Table.fit(values)
        exact = table.bits() + 8 * table.nbytes()
        plan = learned.Plan(table, table.symbols(values))
        assert plan.bits() < most * exact, (n, plan.bits(), exact)


def _narrow_weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Small 4-bit weight rows, 80 % zeros: a few hundred values a table would dominate."""
    q = rng.integers(-7, 8, size=(rows, cols)).astype(np.int8)
    q[rng.random((rows, cols)) < 0.8] = 0
    return q.reshape(-1)


def test_ctx_and_cat_take_learned_models_for_small_tensors_and_get_smaller(monkeypatch) -> None:
    q = _narrow_weights(np.random.default_rng(3), 16, 72)
    for codec, encode, decode, learnt in (
            ("ctx", lambda a: adaptive.encode(a, 72), adaptive.decode,
             lambda tag: tag & (adaptive.LOG | adaptive.KINDS) == adaptive.LOG | adaptive.KINDS),
            ("cat", lambda a: ints.encode(a, 72), ints.decode,
             lambda tag: bool(tag & ints.LEARNED))):
        module = adaptive if codec == "ctx" else ints
        data, meta = encode(q)
        assert learnt(data[0]), codec
        assert np.array_equal(decode(data, meta, q.dtype, q.size), q)
        with monkeypatch.context() as m:
            m.setattr(module, "LEARN", False)
            tables, _ = encode(q)
        assert not learnt(tables[0]) and len(data) < len(tables), (codec, len(data), len(tables))


def test_corrupted_learned_streams_raise_value_error_only(ctx_rejects_corruption) -> None:
    rng = np.random.default_rng(4)
    q = _narrow_weights(rng, 16, 72)
    base, _ = adaptive.encode(q, 72)
    ctx_rejects_corruption(base, q, rng, cuts=(1, 3, len(base) // 2))
    cat, _ = ints.encode(q, 72)
    assert cat[0] & ints.LEARNED
    ctx_rejects_corruption(cat, q, rng, decode=ints.decode)


def test_a_learned_alphabet_outside_the_dtype_or_longer_than_the_stream_is_refused() -> None:
    wide = np.array([0, 300, 0, -300, 5] * 20, dtype=np.int16)
    data, _ = ints.encode(wide)
    assert data[0] & ints.LEARNED
    with pytest.raises(ValueError, match="do not fit int8"):
        ints.decode(data, {}, np.dtype(np.int8), wide.size)
    sink = Sink()
    ten = Table.fit(np.arange(10))
    learned.Plan(ten, ten.symbols(np.arange(10))).write(sink)
    with pytest.raises(ValueError, match="lists 10 values for 4 symbols"):
        learned.read(Source(sink.finish(0)), 4)


def test_an_empty_learned_alphabet_is_refused() -> None:
    sink = Sink()
    write_support(sink.side, 0, 8, np.zeros(0, dtype=np.int64))  # a bitmap with nothing set
    empty = sink.finish(ints.VERSION | ints.LEARNED)  # DENSE: every value under that model
    with pytest.raises(ValueError, match="lists 0 values for 5 symbols"):
        learned.read(Source(empty), 5)
    with pytest.raises(ValueError, match="lists 0 values"):
        ints.decode(empty, {}, np.dtype(np.int8), 5)


def test_the_policy_reads_back_what_it_chose() -> None:
    q = _narrow_weights(np.random.default_rng(5), 16, 72)
    policy = codecs.Policy({}, entropy=True)
    for enc in policy.candidates("w", q, (16, 8, 3, 3)):
        back = codecs.CODECS[enc.codec].decode(enc.data, {}, q.dtype, q.size)
        assert np.array_equal(back, q), enc.codec


def test_wide_alphabets_are_costed_block_by_block_in_little_memory(monkeypatch) -> None:
    import tracemalloc

    rng = np.random.default_rng(6)
    nsym = 1 << 16  # the widest a stored alphabet may be (a hostile stream's choice)
    symbols = rng.integers(0, nsym, 70_000).astype(np.int32)
    tracemalloc.start()
    wide = learned.bits(symbols, nsym)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak  # all blocks' weights at once: tens of MB
    monkeypatch.setattr(learned, "WIDE_TABLE", 1 << 40)  # the all-at-once path
    assert learned.bits(symbols, nsym) == pytest.approx(wide, rel=1e-12)
    _round_trip(symbols[:5000], nsym)
