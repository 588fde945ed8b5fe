"""occ.coding.adaptive (codec ``ctx``), its mask model and the compact header (issue 20)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from occ.artifact import codecs, header_v2
from occ.artifact.container import (
    FLAG_BINARY,
    MAGIC,
    decode_artifact,
    encode_artifact,
    parse_layout,
)
from occ.coding import adaptive, ctxmask, dyadic, ints
from occ.coding.categorical import Table
from occ.coding.frame import Sink
from occ.coding.logtable import LogTable
from occ.engine import fuzz
from occ.errors import ArtifactError


def pruned_quantized(rng: np.random.Generator, rows: int, cols: int, sparsity: float,
                     bits: int) -> np.ndarray:
    """What prune + quantize leave: neurons and inputs of unequal importance, a global
    magnitude threshold, then symmetric per-row integers. (rows, cols) int8."""
    w = rng.laplace(size=(rows, cols)) * rng.gamma(2.0, size=(rows, 1)) \
        * rng.gamma(1.0, size=(1, cols))
    w[np.abs(w) <= np.quantile(np.abs(w), sparsity)] = 0.0
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=1, keepdims=True) / qmax
    scale[scale == 0] = 1.0
    return np.round(w / scale).astype(np.int8)


def roundtrip(array: np.ndarray, cols: int | None) -> bytes:
    data, meta = adaptive.encode(array, cols)
    out = adaptive.decode(data, meta, array.dtype, array.size)
    assert out.dtype == array.dtype and np.array_equal(out, array)
    return data


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.98, 0.999])
def test_ctx_round_trips_pruned_quantized_weights(bits: int, sparsity: float) -> None:
    q = pruned_quantized(np.random.default_rng(bits), 60, 150, sparsity, bits)
    roundtrip(q.reshape(-1), 150)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ctx_round_trips_any_integer_matrix(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(["i1", "u1", "<i2", "<i4"]))
    rows = data.draw(st.integers(1, 12))
    cols = data.draw(st.integers(1, 40))
    array = data.draw(hnp.arrays(np.dtype(dtype), rows * cols,
                                 elements=st.integers(-300, 300).filter(
                                     lambda v: np.can_cast(np.min_scalar_type(v), dtype))
                                 | st.just(0)))
    roundtrip(array, data.draw(st.sampled_from([cols, None])))


def test_ctx_edge_cases() -> None:
    for x in (np.zeros(0, "i1"), np.zeros(50, "i1"), np.full(50, -128, "i1"),
              np.array([0, 127, -128, 0], "i1"), np.arange(-1000, 1000, dtype="<i4")):
        roundtrip(x, 2 if x.size % 2 == 0 and x.size else None)
    with pytest.raises(ValueError, match="integer"):
        adaptive.encode(np.zeros(4, "<f4"))
    with pytest.raises(ValueError, match="2\\^16"):
        adaptive.encode(np.array([0, -(1 << 30), 1 << 30], "<i4"))


@pytest.mark.parametrize(("bits", "sparsity"), [(2, 0.95), (4, 0.9), (4, 0.98), (8, 0.9)])
def test_ctx_is_smaller_than_cat_on_pruned_quantized_weights(bits: int, sparsity: float) -> None:
    q = pruned_quantized(np.random.default_rng(0), 300, 400, sparsity, bits).reshape(-1)
    ctx = len(roundtrip(q, 400))
    cat = len(ints.encode(q, 400)[0])
    assert ctx < 0.97 * cat, (ctx, cat)


def test_mask_model_skips_dead_rows_and_columns() -> None:
    q = pruned_quantized(np.random.default_rng(1), 100, 200, 0.9, 4)
    q[::3] = 0
    q[:, 50:] = 0  # a dead input region
    nz = np.flatnonzero(q)
    plan = ctxmask.MaskPlan(nz, 100, 200)
    ctx = ctxmask.cell_classes(plan.flags, plan.row_cls, plan.col_cls).reshape(100, 200)
    assert (ctx[::3] == -1).all() and (ctx[:, 50:] == -1).all()
    roundtrip(q.reshape(-1), 200)


def test_probabilities_are_exact_dyadic_floats() -> None:
    e = np.arange(0, dyadic.E_MAX + 1)
    p = ctxmask.probability(e, 1, 0)
    expected = np.clip([2.0 ** (-v / 4) for v in e], dyadic.P_MIN, dyadic.P_MAX)
    assert np.allclose(p, expected, rtol=1e-15, atol=0)
    assert p[0] == dyadic.P_MAX and p[-1] == dyadic.P_MIN


def test_corrupted_ctx_streams_raise_value_error_only(ctx_rejects_corruption) -> None:
    rng = np.random.default_rng(7)
    q = pruned_quantized(rng, 40, 60, 0.9, 4).reshape(-1)
    base = roundtrip(q, 60)
    ctx_rejects_corruption(base, q, rng, cuts=(1, 2, 4, len(base) // 2, len(base) - 1))


def test_counts_are_checked_before_allocating() -> None:
    sink = Sink()
    sink.side.varint(3)  # 3 rows ...
    sink.side.varint(10)  # ... of a tensor said to hold 10 values: 3 does not divide 10
    with pytest.raises(ValueError, match="rows do not divide"):
        adaptive.decode(sink.finish(adaptive.VERSION), {}, np.dtype("i1"), 10)
    sink = Sink()
    sink.side.varint(1)
    sink.side.varint(1 << 40)  # more nonzeros than values
    with pytest.raises(ValueError, match="exceeds"):
        adaptive.decode(sink.finish(adaptive.VERSION), {}, np.dtype("i1"), 10)


def test_policy_offers_ctx_for_weight_matrices_and_picks_it_when_smaller() -> None:
    q = pruned_quantized(np.random.default_rng(3), 200, 300, 0.92, 4)
    policy = codecs.Policy({}, entropy=True)
    names = [e.codec for e in policy.candidates("w", q.reshape(-1), q.shape)]
    assert "ctx" in names and "ctx" not in [e.codec for e in policy.candidates("b", q[0])]
    assert policy("w", q.reshape(-1), shape=q.shape).codec == "ctx"


# ---------------------------------------------------------------------------------------
# the compact header


def _model_artifact(policy) -> tuple[dict[str, torch.Tensor], bytes]:
    q = torch.from_numpy(pruned_quantized(np.random.default_rng(4), 50, 80, 0.9, 4))
    tensors = {"layer.weight_int": q, "layer.w_scale": torch.rand(50),
               "layer.bias": torch.randn(50), "head.weight_int": q[:10].clone()}
    return tensors, encode_artifact({"model": {"arch": "x"}, "metrics": {"a": 1.5}}, tensors,
                                    policy)


def test_compact_header_round_trips_and_is_smaller_than_json() -> None:
    tensors, data = _model_artifact(codecs.Policy({}, entropy=True))
    assert parse_layout(data).flags & FLAG_BINARY
    art = decode_artifact(data)
    assert art.header == {"model": {"arch": "x"}, "metrics": {"a": 1.5}}
    assert [s["name"] for s in art.streams] == list(tensors)
    for k, t in tensors.items():
        assert torch.equal(art.tensors[k], t)
    json_policy = codecs.Policy({}, entropy=True)
    json_policy.compact_header = False
    old = decode_artifact(encode_artifact(art.header, tensors, json_policy))
    assert not parse_layout(encode_artifact(art.header, tensors, json_policy)).flags \
        & FLAG_BINARY
    assert art.header_bytes < old.header_bytes
    assert old.header == art.header  # old (JSON) headers still read


def test_compact_header_pack_unpack_is_exact() -> None:
    streams = [{"name": "features.0.weight", "dtype": "int8", "shape": [4, 1, 5, 5],
                "codec": "ctx", "offset": 0, "length": 7},
               {"name": "features.0.w_scale", "dtype": "float32", "shape": [4],
                "codec": "someday", "offset": 7, "length": 0, "meta": {"k": [1, 2]}}]
    header = {"occ": {"version": "0.1"}, "streams": streams}
    assert header_v2.unpack(header_v2.pack(header)) == header


@pytest.mark.parametrize(("mutate", "pattern"), [
    (lambda b: bytes([9]) + b[1:], "version 9"),
    (lambda b: b[:-3], "unreadable header"),
    (lambda b: b[:6], "unreadable header"),
])
def test_malformed_compact_headers_are_artifact_errors(mutate, pattern: str) -> None:
    _, data = _model_artifact(codecs.Policy({}, entropy=True))
    header = decode_artifact(data)
    head = header_v2.pack({**header.header, "streams": header.streams})
    at = parse_layout(data)
    payload = data[at.payload_start:-at.digest]
    bad = mutate(head)
    body = struct.pack("<8sHHQ", MAGIC, 1, FLAG_BINARY, len(bad)) + bad + payload
    with pytest.raises(ArtifactError, match=pattern):
        decode_artifact(body + hashlib.sha256(body).digest())


def test_fuzzed_compact_artifacts_with_ctx_streams_are_rejected_or_valid() -> None:
    _, data = _model_artifact(codecs.Policy({}, entropy=True))
    assert "ctx" in json.dumps(decode_artifact(data).streams)
    outcomes = [fuzz.check(m, rebuild=False) for m in fuzz.mutations(data, 300, seed=2)]
    bad = [o for o in outcomes if o.result not in ("rejected", "loaded")]
    assert not bad, bad[:3]


def test_small_tensors_use_rounded_log_tables_and_round_trip() -> None:
    tags = set()
    for seed in range(3):
        q = pruned_quantized(np.random.default_rng(seed), 100, 200, 0.9, 4).reshape(-1)
        tags.add(roundtrip(q, 200)[0])
    assert any(t & adaptive.LOG for t in tags)
    table = Table.fit(np.repeat(np.array([1, 2, 5, 6, 9]), [3000, 1000, 4000, 77, 5]))
    log = LogTable.of(table)
    assert log.nbytes() < table.nbytes()
    assert np.array_equal(log.present, table.present)


def test_a_stream_listed_twice_is_refused() -> None:
    _, data = _model_artifact(codecs.Policy({}, entropy=True))
    art = decode_artifact(data)
    head = json.dumps({**art.header, "streams": art.streams * 2}).encode()
    at = parse_layout(data)
    payload = data[at.payload_start:-at.digest]
    body = struct.pack("<8sHHQ", MAGIC, 1, 0, len(head)) + head + payload
    with pytest.raises(ArtifactError, match="duplicate tensor name"):
        decode_artifact(body + hashlib.sha256(body).digest())


def test_ctx_refuses_64_bit_integers_and_wild_table_starts() -> None:
    for array in (np.array([-2 ** 63, 0], np.int64), np.array([2 ** 63, 0], np.uint64)):
        with pytest.raises(ValueError, match="32 bits"):
            adaptive.encode(array, 2)
    sink = Sink()
    sink.side.varint(1)
    sink.side.varint(2)  # both values nonzero: no mask, straight to the value table
    sink.side.svarint(1 << 63)  # a table starting past int64
    with pytest.raises(ValueError, match="64-bit"):
        adaptive.decode(sink.finish(adaptive.VERSION), {}, np.dtype("i1"), 2)
