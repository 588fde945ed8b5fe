"""occ.coding: exact round trips, sizes near the entropy, hostile streams, the stage, accounting."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import constriction
import numpy as np
import pytest
import torch

from occ import api
from occ.artifact import accounting, codecs
from occ.artifact.codecs import CODECS, Encoded
from occ.artifact.container import (
    MAGIC,
    _parse_header,
    decode_artifact,
    encode_artifact,
    parse_layout,
    read_header,
)
from occ.coding import adaptive, floats, ints, positions
from occ.coding.bitio import ByteWriter, pack_bits, unpack_bits
from occ.coding.categorical import Table, entropy_bits
from occ.errors import ArtifactError

SPARSITIES = [0.0, 0.5, 0.9, 0.99, 0.999]


def random_ints(rng: np.random.Generator, n: int, bits: int, sparsity: float,
                dtype: str = "i1") -> np.ndarray:
    """Symmetric ``bits``-bit integers (a quantizer's grid) with ``sparsity`` zeros."""
    half = 2 ** (bits - 1) - 1
    x = np.round(rng.laplace(scale=half / 3, size=n)).clip(-half, half).astype(dtype)
    x[rng.random(n) < sparsity] = 0
    return x


def roundtrip(codec, array: np.ndarray) -> np.ndarray:
    data, meta = codec.encode(array)
    out = codec.decode(data, meta, array.dtype, array.size)
    assert out.dtype == array.dtype and out.shape == array.shape
    return out


# ---------------------------------------------------------------------------------------
# integers (cat)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_cat_round_trips_every_width_and_sparsity(bits: int, sparsity: float) -> None:
    rng = np.random.default_rng(bits * 100 + int(sparsity * 1000))
    x = random_ints(rng, 20_000, bits, sparsity)
    assert np.array_equal(roundtrip(ints, x), x)


@pytest.mark.parametrize("dtype", ["u1", "<i2", "<i4", "<i8", "?"])
def test_cat_round_trips_other_integer_dtypes(dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2 if dtype == "?" else 200, 5000).astype(dtype)
    x[:2500] = 0
    assert np.array_equal(roundtrip(ints, x), x)


@pytest.mark.parametrize("x", [np.zeros(0, "i1"), np.zeros(7, "i1"), np.full(9, -3, "i1"),
                               np.array([5], "<i8"), np.array([-128, 127], "i1")])
def test_cat_edge_cases(x: np.ndarray) -> None:
    assert np.array_equal(roundtrip(ints, x), x)


def test_cat_refuses_wide_ranges() -> None:
    with pytest.raises(ValueError, match="span"):
        ints.encode(np.array([0, 1 << 20], dtype="<i4"))


@pytest.mark.parametrize("bits,sparsity", [(2, 0.0), (4, 0.0), (8, 0.0), (4, 0.5), (4, 0.9),
                                           (8, 0.99)])
def test_cat_size_within_2pct_of_order0_entropy(bits: int, sparsity: float) -> None:
    rng = np.random.default_rng(7)
    x = random_ints(rng, 1_000_000, bits, sparsity)
    bound = entropy_bits(np.unique(x, return_counts=True)[1]) / 8
    size = len(ints.encode(x)[0])
    assert bound <= size <= 1.02 * bound


def test_positions_pick_gaps_for_clustered_zeros() -> None:
    n = 100_000
    where = np.concatenate([np.arange(0, 5000), np.arange(90_000, 95_000)])  # two blocks
    mode, bits = positions.choose(n, where)
    assert mode == positions.GAPS and bits < positions.bitmask_bits(n, len(where))
    x = np.zeros(n, "i1")
    x[where] = 3
    data, _ = ints.encode(x)
    assert data[0] & 0x0F & ~ints.LEARNED == positions.GAPS
    assert np.array_equal(roundtrip(ints, x), x)


def test_positions_pick_alive_rows_and_columns_for_dead_neurons() -> None:
    rng = np.random.default_rng(2)
    w = random_ints(rng, 300 * 784, 4, 0.9).reshape(300, 784)
    w[::2] = 0  # dead neurons
    w[:, :200] = 0  # dead inputs (border pixels)
    flat = w.reshape(-1)
    data, _ = ints.encode(flat, cols=784)
    assert data[0] & 0x0F & ~ints.LEARNED == positions.ALIVE
    assert len(data) < len(ints.encode(flat)[0])  # better than gaps, the best without shape
    assert np.array_equal(ints.decode(data, {}, flat.dtype, flat.size), flat)
    f = (flat * 0.01).astype("<f4")
    assert np.array_equal(floats.decode(floats.encode(f, 784)[0], {}, f.dtype, f.size), f)
    bad = bytearray(data)
    bad[3] ^= 0x10  # the stored row length: no longer divides the tensor
    with pytest.raises(ValueError):
        ints.decode(bytes(bad), {}, flat.dtype, flat.size)


def test_bit_packing_round_trips() -> None:
    rng = np.random.default_rng(0)
    widths = rng.integers(0, 40, 3000)
    values = rng.integers(0, 1 << 62, 3000) & ((np.int64(1) << widths) - 1)
    assert np.array_equal(unpack_bits(pack_bits(values, widths), widths), values)


# ---------------------------------------------------------------------------------------
# floats (fbp)

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.4e38]


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8", "<u2"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.999])
def test_fbp_is_lossless_bit_for_bit(dtype: str, sparsity: float) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(20_000) * 0.05).astype(dtype)
    x[rng.random(x.size) < sparsity] = 0
    if dtype != "<u2":
        with np.errstate(over="ignore"):  # -3.4e38 is -inf in float16: still a bit pattern
            x[:len(SPECIAL)] = np.array(SPECIAL).astype(dtype)
    bits = f"<u{x.dtype.itemsize}"
    assert np.array_equal(roundtrip(floats, x).view(bits), x.view(bits))


def test_fbp_keeps_nan_payloads_and_negative_zero() -> None:
    x = np.array([0x7FC00001, 0xFFFFFFFF, 0x80000000, 0, 0x7F800001] * 50, dtype="<u4")
    y = roundtrip(floats, x.view("<f4")).view("<u4")
    assert np.array_equal(y, x)


def test_fbp_compresses_trained_like_weights() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * 0.02).astype("<f4")
    assert len(floats.encode(x)[0]) < 0.9 * x.nbytes


# ---------------------------------------------------------------------------------------
# malformed streams: ValueError from the codec, ArtifactError from the container


def test_model_table_that_does_not_sum_is_refused() -> None:
    table = Table(lo=-1, span=3, present=np.arange(3), counts=np.array([5, 6, 7]))
    w = ByteWriter()
    table.write(w)
    from occ.coding.bitio import ByteReader

    assert Table.read(ByteReader(w.getvalue()), 18).counts.sum() == 18
    with pytest.raises(ValueError, match="does not sum"):
        Table.read(ByteReader(w.getvalue()), 19)


def test_truncated_or_padded_codec_streams_are_refused() -> None:
    rng = np.random.default_rng(0)
    x = random_ints(rng, 5000, 4, 0.5)
    data, _ = ints.encode(x)
    for bad in (data[:-1], data[:-4], data[: len(data) // 2], data + b"\0\0\0\1", data[:1]):
        with pytest.raises(ValueError):
            ints.decode(bad, {}, np.dtype("i1"), x.size)


def test_random_bytes_never_crash_the_decoders() -> None:
    rng = np.random.default_rng(5)
    for codec, dtype in ((ints, "i1"), (floats, "<f4")):
        base, _ = codec.encode(random_ints(rng, 300, 4, 0.7).astype(dtype))
        for _ in range(300):
            bad = bytearray(base)
            for _ in range(rng.integers(1, 4)):
                bad[rng.integers(len(bad))] = rng.integers(256)
            try:
                out = codec.decode(bytes(bad), {}, np.dtype(dtype), 300)
            except ValueError:
                continue
            assert out.size == 300


def _artifact(tensors: dict[str, torch.Tensor]) -> bytes:
    return encode_artifact({"x": 1}, tensors, codecs.Policy({}, entropy=True))


def _unpack(data: bytes) -> tuple[dict, bytes]:
    at = parse_layout(data)
    head = read_header(data[at.start:at.payload_start], at.flags)
    return _parse_header(head, at.flags), data[at.payload_start:-at.digest]


def _seal(header: dict, payload: bytes, flags: int = 0) -> bytes:
    head = json.dumps(header).encode()
    body = struct.pack("<8sHHQ", MAGIC, 1, flags, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


@pytest.fixture(scope="module")
def coded() -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(0)
    w = torch.randint(-7, 8, (64, 100), dtype=torch.int8)
    w[torch.rand(64, 100) < 0.8] = 0
    dense = torch.randint(1, 8, (50, 20), dtype=torch.int8)  # no zeros: one table of all
    tensors = {"w": w, "b": torch.randn(64), "n": torch.tensor(3), "d": dense}
    return tensors, _artifact(tensors)


def test_artifact_round_trips_and_uses_entropy_codecs(coded) -> None:
    tensors, data = coded
    art = decode_artifact(data)
    chosen = {s["name"]: s["codec"] for s in art.streams}
    assert chosen["b"] == "fbp" and chosen["n"] == "cat"
    assert chosen["w"] in ("cat", "ctx") and chosen["d"] in ("cat", "ctx")
    for k, t in tensors.items():
        assert torch.equal(art.tensors[k], t)


def test_unknown_codec_name_is_an_artifact_error(coded) -> None:
    header, payload = _unpack(coded[1])
    header["streams"][0]["codec"] = "lzma9"
    with pytest.raises(ArtifactError, match="unknown codec 'lzma9'"):
        decode_artifact(_seal(header, payload))
    with pytest.raises(ArtifactError, match="unknown codec"):
        encode_artifact({}, {"w": torch.zeros(3)}, "lzma9")


def test_model_table_not_summing_is_an_artifact_error(coded, monkeypatch) -> None:
    monkeypatch.setattr(ints, "LEARN", False)  # stored tables (a learned model has no counts)
    monkeypatch.setattr(adaptive, "LEARN", False)
    monkeypatch.setattr(codecs, "_CHOSEN", type(codecs._CHOSEN)())  # not the cached streams
    header, payload = _unpack(_artifact(coded[0]))
    stream = next(s for s in header["streams"] if s["name"] == "d")
    header["streams"] = [stream]
    stream["shape"] = [50, 19]  # the table's counts add up to 1000 values, not 950
    with pytest.raises(ArtifactError, match="streams\\[0\\] \\(d\\).*does not sum"):
        decode_artifact(_seal(header, payload))


def test_corrupted_and_truncated_streams_are_artifact_errors(coded) -> None:
    header, payload = _unpack(coded[1])
    stream = next(s for s in header["streams"] if s["name"] == "w")
    start, end = stream["offset"], stream["offset"] + stream["length"]
    short = dict(stream, length=stream["length"] - 5)
    with pytest.raises(ArtifactError):
        decode_artifact(_seal({**header, "streams": [short]}, payload))
    flipped = bytearray(coded[1])
    flipped[len(flipped) - 40] ^= 1  # a payload byte: the checksum catches it
    with pytest.raises(ArtifactError, match="checksum"):
        decode_artifact(bytes(flipped))
    garbled = bytearray(payload)
    garbled[start + 1:end] = bytes(end - start - 1)  # zeroed side data and words, resealed
    with pytest.raises(ArtifactError, match="streams"):
        decode_artifact(_seal({**header, "streams": [stream]}, bytes(garbled)))


def test_header_is_deflated_and_bombs_are_refused(coded) -> None:
    flags = parse_layout(coded[1]).flags
    # binary stream table, deflated against one of the dictionaries (entropy policy)
    assert flags & 5 == 5 and bin(flags & 10).count("1") == 1
    plain = encode_artifact({"x": 1}, coded[0])  # raw codec: plain deflate at most
    assert parse_layout(plain).flags in (0, 1)
    header, payload = _unpack(coded[1])
    head = json.dumps(header).encode() + b" " * (65 << 20)  # inflates past MAX_HEADER
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    bomb = packer.compress(head) + packer.flush()
    body = struct.pack("<8sHHQ", MAGIC, 1, 1, len(bomb)) + bomb + payload
    with pytest.raises(ArtifactError, match="header"):
        decode_artifact(body + hashlib.sha256(body).digest())
    with pytest.raises(ArtifactError, match="unknown flags"):
        decode_artifact(_seal(header, payload, flags=6))
    with pytest.raises(ArtifactError, match="unknown flags"):
        decode_artifact(_seal(header, payload, flags=2))  # a dictionary without deflate


def test_header_dictionary_is_frozen() -> None:
    from occ.artifact.header_dict import HEADER_DICT_V1

    # Artifacts with FLAG_DICT decode only with these exact bytes: never edit them.
    assert hashlib.sha256(HEADER_DICT_V1).hexdigest() == (
        "dba4726b4a92c093fd8b309eff5c1bafe3eb1a65b8ced46fd1829ecfbfcdd558")


def test_policy_keeps_the_smallest_and_raw_when_incompressible() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 1 << 32, 1000, dtype=np.uint64).astype("<u4").view("<f4")
    policy = codecs.Policy({}, entropy=True)
    assert policy("noise", noise).codec == "raw"
    sparse = np.zeros(10_000, "i1")
    sparse[::97] = 3
    chosen = policy("s", sparse)
    assert chosen.codec == "cat"
    assert len(chosen.data) == min(len(e.data) for e in policy.candidates("s", sparse))
    encoding: dict = {}
    codecs.prepare(encoding, sparse[::-1], Encoded("cat", b"x"))  # a stream for other bytes
    other = codecs.install(encoding, entropy=False)
    assert other("s", sparse).codec == "raw" and len(other("s", sparse).data) == sparse.size
    json.dumps({k: v for k, v in encoding.items() if k != "policy"})  # the settings are data
    rebuilt = codecs.policy_from_encoding(json.loads(json.dumps(
        {k: v for k, v in encoding.items() if k != "policy"})))
    assert rebuilt is not None and not rebuilt.entropy and rebuilt.prepared


def test_codecs_are_listed() -> None:
    assert {"raw", "cat", "fbp", "surp"} <= set(CODECS)


def test_size_breakdown_adds_up(coded) -> None:
    tensors, data = coded
    b = accounting.size_breakdown(data)
    assert sum(b["kinds"].values()) == b["total_bytes"] == len(data)
    assert b["weights"] == 6400 + 1000
    assert b["nonzero_weights"] == int((tensors["w"] != 0).sum()) + 1000
    rows = {r["name"]: r for r in b["streams"]}
    assert sum(rows["w"]["parts"].values()) == rows["w"]["bytes"]
    assert rows["w"]["parts"]["positions"] > 0 and rows["w"]["entropy_bytes"] > 0
    assert b["zstd_bytes"] > 0 and b["bits_per_weight"] == pytest.approx(8 * len(data) / 7400)


# ---------------------------------------------------------------------------------------
# a large stream (speed is measured by scripts/bench_size.py, not asserted here)


def test_large_sparse_quantized_stream_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = random_ints(rng, 2_000_000, 4, 0.9)
    data, _ = ints.encode(x)
    assert len(data) < x.size // 4  # 90 % zeros, 4-bit: well under a byte per weight
    assert np.array_equal(ints.decode(data, {}, x.dtype, x.size), x)


# ---------------------------------------------------------------------------------------
# the stage, end to end


def test_entropy_code_config_is_last_and_strict() -> None:
    from occ.config import from_dict, to_dict
    from occ.errors import RecipeError
    from occ.techniques.registry import get_stage, list_stages

    info = get_stage("entropy_code")
    assert list_stages()[-1] == "entropy_code"
    config = from_dict(info.config, {}, where="stages[0]")
    assert config.category == "coding" and from_dict(info.config, to_dict(config)) == config
    with pytest.raises(RecipeError, match="unknown key 'codec'"):
        from_dict(info.config, {"codec": "zstd"}, where="stages[0]")


@pytest.mark.slow
def test_entropy_code_end_to_end_report_bytes_equal_file_size(recipe_factory) -> None:
    recipe = recipe_factory([
        {"type": "prune", "method": "magnitude", "sparsity": 0.9},
        {"type": "quantize", "weight_bits": 4, "act_bits": 8, "mode": "ptq",
         "calib_samples": 64},
        {"type": "entropy_code"},
    ])
    report = api.compress(recipe)
    size = os.path.getsize(report.artifact)
    assert report.artifact_bytes == size
    coded = report.stages[-1]
    assert coded.type == "entropy_code"
    assert coded.details["streams"]
    assert report.stages[-1].metrics.bytes < report.stages[-2].metrics.bytes / 3
    b = accounting.size_breakdown(report.artifact)
    assert b["total_bytes"] == size and sum(b["kinds"].values()) == size
    assert "cat" in {r["codec"] for r in b["streams"]}


def test_each_tensor_state_is_entropy_coded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run measures its artifact after every stage and then writes it: a tensor whose
    bytes did not change is not coded again, and the artifact is byte-identical."""
    calls = []
    real = ints.encode
    monkeypatch.setattr(ints, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(codecs, "_CHOSEN", type(codecs._CHOSEN)())
    rng = np.random.default_rng(7)
    w = torch.from_numpy(rng.integers(-7, 8, size=(64, 32)).astype(np.int8))
    w[torch.rand(64, 32) < 0.8] = 0
    tensors = {"w": w, "b": torch.randn(64)}
    first = encode_artifact({"m": 1}, tensors, codecs.install({}, entropy=True))
    coded = len(calls)
    second = encode_artifact({"m": 1}, tensors, codecs.install({}, entropy=True))
    assert coded >= 1 and len(calls) == coded and second == first
    w[0, 0] = 3 if int(w[0, 0]) != 3 else 2  # a changed tensor is coded afresh
    third = encode_artifact({"m": 1}, tensors, codecs.install({}, entropy=True))
    assert len(calls) > coded and third != first
    assert decode_artifact(third).tensors["w"].equal(w)


def test_stream_words_drop_the_zero_bytes_ending_their_last_word() -> None:
    from occ.coding.frame import Sink, Source

    model = constriction.stream.model.Categorical(np.array([0.7, 0.3]), perfect=False)
    rng = np.random.default_rng(0)
    trimmed = 0
    for n in range(1, 200):
        symbols = (rng.random(n) < 0.3).astype(np.int32)
        sink = Sink()
        sink.encode(symbols, model)
        data = sink.finish(0)
        trimmed += (len(data) - 2) % 4 != 0
        assert len(data) == 2 or data[-1] != 0  # no high zero bytes of the last word
        source = Source(data)
        assert np.array_equal(source.decode(model, n), symbols)
        source.finish()
    assert trimmed > 100  # most streams are shorter than whole words


def test_a_table_of_every_value_but_zero_stores_a_flag_not_a_bitmap() -> None:
    from occ.coding.bitio import ByteReader
    from occ.coding.categorical import read_support, support_bytes

    values = np.array([-7, -3, -1, 1, 1, 2, 5, 6, 4, -2, -4, -5, -6, 3, 7] * 3)
    table = Table.fit(values)
    w = ByteWriter()
    table.write(w)
    assert support_bytes(table.lo, table.span, table.present) == 3  # lo, span, flags: no bitmap
    back = Table.read(ByteReader(w.getvalue()), table.total)
    assert np.array_equal(back.present, table.present) and np.array_equal(back.counts,
                                                                          table.counts)
    assert np.array_equal(back.values(back.symbols(values)), values)
    for lo in (1, -3):  # a span without zero, or zero at its end, cannot leave zero out
        bad = ByteWriter()
        bad.svarint(lo)
        bad.varint(3)
        bad.u8(2)
        with pytest.raises(ValueError, match="leaves out a zero it lacks"):
            read_support(ByteReader(bad.getvalue()))
