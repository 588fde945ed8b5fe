"""Issue 20, side information: the V2 header dictionary, the ``rice`` and ``zero`` codecs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from occ.artifact.codecs import CODECS, Policy
from occ.artifact.container import (
    FLAG_DICT,
    FLAG_DICT2,
    FLAG_DICT3,
    decode_artifact,
    encode_artifact,
    parse_layout,
)
from occ.coding import rice
from occ.errors import ArtifactError


def test_header_dictionary_v2_is_frozen() -> None:
    from occ.artifact.header_dict import HEADER_DICT_V2

    # Artifacts with FLAG_DICT2 decode only with these exact bytes: never edit them.
    assert len(HEADER_DICT_V2) == 24278
    assert hashlib.sha256(HEADER_DICT_V2).hexdigest() == (
        "3657aa36fcf4d78ab08c511097b82c4ec98fae7804fc947d22ca99dbd3f07582")


@pytest.mark.parametrize("dtype", rice.DTYPES)
@pytest.mark.parametrize("n", [0, 1, 9, 250, 4097])
def test_rice_round_trip(dtype: str, n: int) -> None:
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype)
    a = np.clip(rng.laplace(0, 30, n), info.min, info.max).astype(dtype)
    if n:
        a[0], a[-1] = info.min, info.max
    data, meta = rice.encode(a)
    b = rice.decode(data, meta, np.dtype(dtype), n)
    assert b.dtype == a.dtype and np.array_equal(a, b)


def test_rice_refuses_malformed_streams() -> None:
    data, _ = rice.encode(np.arange(-20, 20, dtype=np.int16))
    for bad, count in [(b"", 0), (bytes([40]) + data[1:], 40), (data[:-1], 40),
                       (data + b"\x00", 40), (data, 41), (data, rice.MAX_COUNT + 1)]:
        with pytest.raises(ValueError):
            rice.decode(bad, {}, np.dtype("int16"), count)
    big, _ = rice.encode(np.array([40000], dtype=np.int32))
    with pytest.raises(ValueError):  # decodes, but does not fit int8
        rice.decode(big, {}, np.dtype("int8"), 1)
    with pytest.raises(ValueError):
        rice.encode(np.zeros(3, dtype=np.float32))


def test_zero_codec_and_rice_chosen_for_side_tensors() -> None:
    rng = np.random.default_rng(0)
    tensors = {"zp": torch.zeros(50, dtype=torch.int32),
               "neg0": torch.tensor([-0.0, 0.0]),
               "bias_int": torch.from_numpy(rng.laplace(0, 6, 250).astype(np.int32)),
               "w": torch.from_numpy(rng.integers(-3, 4, (20, 30)).astype(np.int8))}
    data = encode_artifact({"model": {"arch": "x"}}, tensors, Policy({}, entropy=True))
    art = decode_artifact(data)
    codecs = {s["name"]: s["codec"] for s in art.streams}
    assert codecs["zp"] == "zero" and codecs["neg0"] != "zero"  # -0.0 keeps its sign bit
    assert codecs["bias_int"] == "rice"
    for k, v in tensors.items():
        assert torch.equal(art.tensors[k], v) and art.tensors[k].dtype == v.dtype
    assert parse_layout(data).flags & FLAG_DICT3  # the V3 dictionary wins on this header
    with pytest.raises(ArtifactError):
        CODECS["zero"].decode(b"\x00", {}, np.dtype("int32"), 3)


@pytest.mark.parametrize("flags", [FLAG_DICT | FLAG_DICT2, FLAG_DICT | FLAG_DICT3,
                                   FLAG_DICT2 | FLAG_DICT3, FLAG_DICT | FLAG_DICT2 | FLAG_DICT3])
def test_two_dictionary_flags_are_refused(flags: int) -> None:
    from occ.artifact.container import read_header

    with pytest.raises(ArtifactError, match="unknown flags"):
        read_header(b"", 1 | flags)
    with pytest.raises(ArtifactError, match="unknown flags"):
        read_header(b"", FLAG_DICT3)  # a dictionary without deflate


def test_header_dictionary_v3_is_frozen() -> None:
    from occ.artifact.header_dict_v3 import HEADER_DICT_V3

    # Artifacts with FLAG_DICT3 decode only with these exact bytes: never edit them
    # (scripts/make_header_dict.py made them once, from the recipes of the time).
    assert len(HEADER_DICT_V3) == 18404
    assert hashlib.sha256(HEADER_DICT_V3).hexdigest() == (
        "e58b430b664c269a31adb47b4add97b65f676d46896ee8b4aafbf33eaf22796b")


def test_rice_shift_for_rounded_biases() -> None:
    import torch as _t

    from occ.techniques.quantize.qparams import round_bias

    rng = np.random.default_rng(1)
    q = _t.from_numpy(rng.laplace(0, 400, 300).astype(np.int32))
    r = round_bias(q, 5)
    assert int(r.abs().max()) >> int(np.log2(int(r.abs().max()) & -int(r.abs().max()))) < 32
    assert (r - q).abs().max() <= 2 ** (int(q.abs().max()).bit_length() - 4) / 2 + 1
    plain, _ = rice.encode(q.numpy())
    data, _ = rice.encode(r.numpy())
    assert data[0] & 0x80 and len(data) < len(plain) * 0.7
    assert np.array_equal(rice.decode(data, {}, np.dtype("int32"), 300), r.numpy())
    with pytest.raises(ValueError):  # a shift that pushes a value out of int8
        rice.decode(bytes([0x80, 7]) + rice.encode(np.array([5], np.int8))[0][1:], {},
                    np.dtype("int8"), 1)
    assert round_bias(q, 16).equal(q) or int(q.abs().max()) >= 1 << 15


def test_size_breakdown_splits_params_from_scales() -> None:
    """Biases and BatchNorm statistics are model parameters (``params``); only quantizer
    state is ``scales``; side information is header + tables + scales + stream framing."""
    from occ.artifact import accounting

    rng = np.random.default_rng(0)
    tensors = {"fc.w_scale": torch.tensor([0.25]), "fc.act_zero_point": torch.tensor([3]),
               "fc.w_zero_point": torch.zeros(1, dtype=torch.int32),
               "fc.weight_int": torch.from_numpy(rng.integers(-3, 4, (20, 30)).astype(np.int8)),
               "fc.bias_int": torch.from_numpy(rng.laplace(0, 6, 20).astype(np.int32)),
               "bn.running_mean": torch.randn(20), "bn.num_batches_tracked": torch.tensor(7)}
    data = encode_artifact({"model": {"arch": "x"}}, tensors, Policy({}, entropy=True))
    b = accounting.size_breakdown(data)
    rows = {r["name"]: r for r in b["streams"]}
    assert {n: r["role"] for n, r in rows.items()} == {
        "fc.w_scale": "scales", "fc.act_zero_point": "scales", "fc.w_zero_point": "scales",
        "fc.weight_int": "weights", "fc.bias_int": "params", "bn.running_mean": "params",
        "bn.num_batches_tracked": "params"}
    kinds = b["kinds"]
    assert sum(kinds.values()) == b["total_bytes"] == len(data)
    for kind in ("scales", "params"):  # their values; their tables and framing are side
        assert kinds[kind] == sum(n for r in rows.values() if r["role"] == kind
                                  for part, n in r["parts"].items()
                                  if part in ("values", "positions", "signs"))
    assert kinds["scales"] > 0 and kinds["params"] > 80  # the float32 running mean alone
    side = kinds["header"] + kinds["tables"] + kinds["scales"] + kinds["side"]
    assert b["side_information"]["bytes"] == side
    assert b["side_information"]["share"] == pytest.approx(side / len(data))


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<f2", "<u2", "<i2", "<i4", "<i8"])
def test_trunc_codec_is_lossless(dtype: str) -> None:
    rng = np.random.default_rng(0)
    size = np.dtype(dtype).itemsize
    words = rng.integers(0, 256, (50, size), dtype=np.uint8)
    for low in range(size + 1):  # 0 .. all low bytes zero
        planes = words.copy()
        planes[:, :low] = 0
        a = planes.view(dtype).reshape(-1)
        data, meta = CODECS["trunc"].encode(a)
        assert len(data) == a.size * max(1, size - low) and meta == {}
        b = CODECS["trunc"].decode(data, meta, np.dtype(dtype), a.size)
        assert b.dtype == a.dtype and b.tobytes() == a.tobytes()
    assert CODECS["trunc"].decode(b"", {}, np.dtype("<f4"), 0).size == 0
    for bad, count in [(b"\x00" * 9, 2), (b"\x00" * 10, 2), (b"\x00", 2), (b"", 1)]:
        with pytest.raises(ArtifactError, match="trunc stream"):
            CODECS["trunc"].decode(bad, {}, np.dtype("<f4"), count)


def test_rounded_scales_take_two_bytes_and_act_scales_stay_raw() -> None:
    from occ.techniques.quantize.qparams import round_scale

    w_scale = round_scale(torch.tensor([0.0837]), 8)  # what scale_bits: 8 leaves
    tensors = {"fc.w_scale": w_scale, "fc.act_scale": torch.tensor([0.0450649745])}
    art = decode_artifact(encode_artifact({}, tensors, Policy({}, entropy=True)))
    assert {s["name"]: (s["codec"], s["length"]) for s in art.streams} == {
        "fc.w_scale": ("trunc", 2), "fc.act_scale": ("raw", 4)}
    assert torch.equal(art.tensors["fc.w_scale"], w_scale)
