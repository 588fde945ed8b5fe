"""The version-3 compact header: a stream table in columns, predicted by leaf name."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from occ.artifact import header_v2, header_v3
from occ.artifact.codecs import Policy
from occ.artifact.container import DTYPES, decode_artifact, encode_artifact


def _streams(specs: list[tuple]) -> list[dict]:
    """Streams back to back from (name, dtype, shape, codec, length[, meta])."""
    out, offset = [], 0
    for name, dtype, shape, codec, length, *meta in specs:
        s = {"name": name, "dtype": dtype, "shape": shape, "codec": codec,
             "offset": offset, "length": length}
        if meta:
            s["meta"] = meta[0]
        out.append(s)
        offset += length
    return out


TABLE = _streams([
    ("features.0.w_scale", "float32", [1], "raw", 4),
    ("features.0.w_zero_point", "int32", [1], "zero", 0),
    ("features.0.weight_int", "int8", [10, 1, 5, 5], "ctx", 98),
    ("features.3.w_scale", "float32", [1], "raw", 4),
    ("features.3.w_zero_point", "int32", [1], "rice", 2),  # codec differs from the last
    ("features.3.weight_int", "int8", [25, 10, 5, 5], "ctx", 98),  # length predicted
    ("fc.weight", "float32", [3, 4], "raw", 40),  # a raw stream whose length is not implied
    ("bias", "float64", [], "someday", 0, {"k": [1, 2]}),  # no module, a named codec, meta
    (".x", "bool", [0, 5], "raw", 0),
    ("ü.é", "bfloat16", [2], "fbp", 7),
])


def test_pack_unpack_is_exact() -> None:
    header = {"occ": {"version": "0.1"}, "metrics": {"a": 1.5}, "streams": TABLE}
    data = header_v3.pack(header)
    assert data[0] == header_v3.HEADER_VERSION
    assert header_v3.unpack(data) == header


def test_item_sizes_match_the_container() -> None:
    sizes = tuple(DTYPES[d][1].itemsize for d in header_v2.DTYPE_CODES)
    assert sizes == header_v3.ITEM_SIZES


def test_predicted_fields_are_not_written() -> None:
    """A layer that repeats the last one's dtypes, codecs and shapes costs its names'
    indices, one flag byte per stream and the lengths that differ."""
    one = header_v3.pack({"streams": TABLE[:3]})
    two = header_v3.pack({"streams": _streams([
        *[(s["name"], s["dtype"], s["shape"], s["codec"], s["length"]) for s in TABLE[:3]],
        ("features.3.w_scale", "float32", [1], "raw", 4),
        ("features.3.w_zero_point", "int32", [1], "zero", 0),
        ("features.3.weight_int", "int8", [10, 1, 5, 5], "ctx", 98)])})
    assert len(two) - len(one) == len("features.3.\0") + 3 * 3  # module; ids, flags


_NAMES = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                 max_size=12)
_STREAM = st.tuples(st.lists(_NAMES, min_size=1, max_size=3).map(".".join),
                    st.sampled_from(header_v2.DTYPE_CODES),
                    st.lists(st.integers(0, 300), max_size=4),
                    st.sampled_from([*header_v2.CODEC_CODES, "x"]),
                    st.integers(0, 1 << 40),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.lists(_STREAM, max_size=12, unique_by=lambda s: s[0]))
def test_any_stream_table_round_trips(specs: list[tuple]) -> None:
    header = {"streams": _streams([s if s[5] else s[:5] for s in specs])}
    assert header_v3.unpack(header_v3.pack(header)) == header


def test_malformed_headers_raise_value_error() -> None:
    data = header_v3.pack({"occ": {"version": "0.1"}, "streams": TABLE})
    for cut in range(len(data)):  # every truncation
        try:
            header_v3.unpack(data[:cut])
        except ValueError:
            continue
        pytest.fail(f"a header cut at {cut} bytes was accepted")
    rng = np.random.default_rng(0)
    for _ in range(500):  # bit flips: refused, or a header that is still a mapping
        buf = bytearray(data)
        buf[rng.integers(len(buf))] ^= 1 << int(rng.integers(8))
        with contextlib.suppress(ValueError):
            assert isinstance(header_v3.unpack(bytes(buf))["streams"], list)


@pytest.mark.parametrize(("data", "pattern"), [
    (bytes([2, 0]), "version 2"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 0, 0]), "predict"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 1, 7]), "limit"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 0, 0x20]), "flags"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 0, 7, 0, 2, 1, 1]) + b"{}",
     "length"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 0, 7, 0, 9, 1, 1]) + b"{}",
     "unknown codec"),
    (bytes([3, 1, 1]) + b"m.\0" + bytes([1]) + b"w\0" + bytes([0, 0, 7, 0, 0, 1, 1]) + b"[]",
     "not a mapping"),
])
def test_hostile_headers_name_what_is_wrong(data: bytes, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        header_v3.unpack(data)


def test_version_2_headers_still_read() -> None:
    from occ.artifact.container import _unpack_binary

    streams = [{k: v for k, v in s.items()} for s in TABLE]
    header = {"occ": {"version": "0.1"}, "streams": streams}
    assert _unpack_binary(header_v2.pack(header)) == header
    assert _unpack_binary(header_v3.pack(header)) == header
    with pytest.raises(ValueError, match="this occ reads 2 and 3"):
        _unpack_binary(bytes([4]))


def test_a_name_with_a_nul_byte_or_too_long_falls_back_to_a_json_header() -> None:
    from occ.artifact.container import FLAG_BINARY, parse_layout

    for odd in ("a\0b", "x" * (header_v2.MAX_NAME + 1)):
        tensors = {odd: torch.zeros(3, dtype=torch.int32), "w": torch.ones(2, 2)}
        data = encode_artifact({"model": {"arch": "x"}}, tensors, Policy({}, entropy=True))
        assert not parse_layout(data).flags & FLAG_BINARY
        art = decode_artifact(data)
        assert list(art.tensors) == [odd, "w"] and torch.equal(art.tensors["w"], tensors["w"])
