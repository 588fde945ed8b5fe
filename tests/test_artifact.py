"""The .occ container: bit-exact round trips and clear errors on anything off."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.artifact.container import (
    MAGIC,
    decode_artifact,
    encode_artifact,
    read_artifact,
    write_artifact,
)
from occ.engine import load as loader
from occ.errors import ArtifactError
from occ.models import build_model
from occ.models.edits import module_spec, tensor_equal
from occ.trust import TrustError

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
          torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool]


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for dt in DTYPES:
        base = torch.randn(3, 4, generator=g) * 100
        out[f"t_{str(dt).split('.')[-1]}"] = base > 0 if dt == torch.bool else base.to(dt)
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 5)
    out["special"] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45])
    return out


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    src = tensors()
    header = {"model": {"arch": "x"}, "note": "ü"}
    size = write_artifact(tmp_path / "a.occ", header, src)
    art = read_artifact(tmp_path / "a.occ")
    assert size == (tmp_path / "a.occ").stat().st_size == art.size
    assert art.header == header
    assert list(art.tensors) == list(src)
    for name, t in src.items():
        assert tensor_equal(art.tensors[name], t), name


def test_encoding_is_deterministic() -> None:
    assert encode_artifact({"a": 1}, tensors()) == encode_artifact({"a": 1}, tensors())


def _refresh_digest(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("cut", [0, 1, 8, 20, 40, -33, -1])
def test_truncated_files_are_rejected(cut: int) -> None:
    data = encode_artifact({"a": 1}, tensors())
    with pytest.raises(ArtifactError):
        decode_artifact(data[:cut] if cut >= 0 else data[:len(data) + cut])


def test_bit_flip_fails_checksum() -> None:
    data = bytearray(encode_artifact({"a": 1}, tensors()))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        decode_artifact(bytes(data))


def test_foreign_file_and_bad_version() -> None:
    with pytest.raises(ArtifactError, match="bad magic"):
        decode_artifact(b"PK\x03\x04" + b"\0" * 100)
    data = encode_artifact({}, {})
    body = data[:8] + struct.pack("<H", 99) + data[10:-32]
    with pytest.raises(ArtifactError, match="format version 99"):
        decode_artifact(_refresh_digest(body))


def _with_header(header: bytes) -> bytes:
    return _refresh_digest(MAGIC + struct.pack("<HHQ", 1, 0, len(header)) + header)


@pytest.mark.parametrize(("header", "pattern"), [
    (b"{not json", "unreadable header"),
    (b"[1, 2]", "no stream table"),
    (b'{"streams": [{"name": "w", "dtype": "object", "shape": [1], "codec": "raw", '
     b'"offset": 0, "length": 4}]}', "bad name or dtype"),
    (b'{"streams": [{"name": "w", "dtype": "float32", "shape": [1], "codec": "zip", '
     b'"offset": 0, "length": 4}]}', "unknown codec 'zip'"),
    (b'{"streams": [{"name": "w", "dtype": "float32", "shape": [1], "codec": "raw", '
     b'"offset": 0, "length": 4000}]}', "outside the file"),
    (b'{"streams": [{"name": "w", "dtype": "float32", "shape": [100000, 100000], '
     b'"codec": "raw", "offset": 0, "length": 0}]}', "declares"),
    (b'{"streams": [{"name": "w", "dtype": "float32", "shape": [-1], "codec": "raw", '
     b'"offset": 0, "length": 0}]}', "bad shape"),
])
def test_hostile_headers_are_rejected_before_allocating(header: bytes, pattern: str) -> None:
    with pytest.raises(ArtifactError, match=pattern):
        decode_artifact(_with_header(header))


def _deflated(header: bytes, payload: bytes = b"") -> bytes:
    """A version-2 artifact whose (valid, re-sealed) header is ``header``, deflated."""
    import zlib

    from occ.artifact.container import FLAG_DEFLATE
    from occ.artifact.layout import seal

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return seal(FLAG_DEFLATE, packer.compress(header) + packer.flush(), payload)


def _zero_streams(n: int, count: int) -> bytes:
    streams = [{"name": f"t{i}", "dtype": "float32", "shape": [count], "codec": "zero",
                "offset": 0, "length": 0} for i in range(n)]
    return json.dumps({"streams": streams}).encode()


def test_streams_decoding_past_the_file_budget_are_refused_before_decoding() -> None:
    """3,000 empty ``zero`` streams of 1 MiB each (a 10 KB file) made eval take 6.7 GB."""
    import tracemalloc

    data = _deflated(_zero_streams(3000, 262144))
    assert len(data) < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=r"would decode to 3,145,728,000 bytes from a"):
            decode_artifact(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # memory, not time: the suite has no wall-clock asserts


def test_sparse_and_zero_tensors_within_the_budget_still_load() -> None:
    """Any file may decode to 32 MiB: a model of all-zero tensors stays legal."""
    zeros = {f"w{i}": torch.zeros(1 << 18) for i in range(30)}  # 30 MiB from <2 KB
    data = encode_artifact({}, zeros, "zero")
    assert len(data) < 2000
    art = decode_artifact(data)
    assert all(s["codec"] == "zero" for s in art.streams) and len(art.tensors) == 30
    assert all(not t.any() for t in art.tensors.values())


def test_values_past_max_params_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCC_MAX_PARAMS", "1000")
    data = encode_artifact({}, {"w": torch.ones(1001)})
    with pytest.raises(ArtifactError, match=r"1,001 values, over the limit 1,000 .*OCC_MAX_PARAMS"):
        decode_artifact(data)


def test_too_many_streams_are_refused() -> None:
    with pytest.raises(ArtifactError, match=r"lists 65,537 tensors, over the limit 65,536"):
        decode_artifact(_deflated(_zero_streams(65537, 0)))


@pytest.mark.parametrize(("item", "pattern"), [
    (b"[],", r"header inflates past 16,777,216 bytes"),  # 60 MB: 3.5 GB and 45 s before
    (b"{},", r"header inflates past 16,777,216 bytes"),
    (b"[[1]],", r"header holds about [\d,]+ values and keys, over the limit 1,000,000"),
])
def test_header_bombs_are_refused_before_parsing(item: bytes, pattern: str) -> None:
    """A 61 KB file whose header inflates to 60 MB of ``[],``; under 16 MiB, too many values."""
    import tracemalloc

    n = (60 << 20) // 3 if item != b"[[1]]," else (10 << 20) // len(item)
    data = _deflated(b'{"streams":[],"x":[' + item * n + b"[]]}")
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=pattern):
            decode_artifact(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 128 << 20  # was 3.5 GB: nothing is parsed past the bound


def test_binary_header_stream_count_is_bounded() -> None:
    """A compact header cannot declare more streams than MAX_STREAMS either."""
    from occ.artifact import header_v3
    from occ.coding.bitio import ByteWriter

    w = ByteWriter()
    w.u8(header_v3.HEADER_VERSION)
    w.varint(70_000)
    with pytest.raises(ArtifactError, match=r"70,000 tensors, over the limit 65,536"):
        header_v3.unpack(w.getvalue() + bytes(80_000))


def test_raw_length_mismatch() -> None:
    header = (b'{"streams": [{"name": "w", "dtype": "float32", "shape": [2], "codec": "raw", '
              b'"offset": 0, "length": 4}]}')
    body = MAGIC + struct.pack("<HHQ", 1, 0, len(header)) + header + b"\0\0\0\0"
    with pytest.raises(ArtifactError, match="raw stream holds 4 bytes, expected 8"):
        decode_artifact(_refresh_digest(body))


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        read_artifact(tmp_path / "none.occ")


def shape_changes(model: torch.nn.Module, reference: torch.nn.Module) -> dict[str, dict]:
    """Modules of ``model`` whose spec differs from the same path in ``reference``."""
    ref = dict(reference.named_modules())
    return {name: spec for name, module in model.named_modules()
            if (spec := module_spec(module)) is not None and name in ref
            and module_spec(ref[name]) != spec}


def test_model_round_trip_with_reshape_edit(tmp_path: Path) -> None:
    """A model whose shapes changed rebuilds from arch + recorded edits, bit-exactly."""
    torch.manual_seed(0)
    ref = build_model("lenet5", {"width": 0.5})
    slim = build_model("lenet5", {"width": 0.5})
    # Shrink fc 1 by hand: 400 -> 100 -> 10 hidden units.
    fc1, fc2 = slim.classifier[1], slim.classifier[3]
    slim.classifier[1] = torch.nn.Linear(fc1.in_features, 100)
    slim.classifier[3] = torch.nn.Linear(100, fc2.out_features)
    changes = shape_changes(slim, ref)
    assert set(changes) == {"classifier.1", "classifier.3"}
    from occ.models.edits import edit_record

    header = artifact_header.model_header(arch={"arch": "lenet5", "kwargs": {"width": 0.5}},
                                   edits=[edit_record("reshape", {"modules": changes})],
                                   input_shape=(1, 28, 28), num_classes=10)
    model_io.save(tmp_path / "m.occ", slim, header, {"codec": "raw"})
    loaded = loader.load(tmp_path / "m.occ")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), slim.eval()(x))


def test_unknown_edit_op_and_callable_arch_are_refused(tmp_path: Path) -> None:
    model = build_model("lenet300", {})
    header = artifact_header.model_header(arch={"arch": "lenet300", "kwargs": {}},
                                   edits=[{"op": "exec", "module": "os", "args": {}}],
                                   input_shape=(1, 28, 28), num_classes=10)
    model_io.save(tmp_path / "m.occ", model, header, {"codec": "raw"})
    with pytest.raises(ArtifactError, match="unknown edit op 'exec'"):
        loader.load(tmp_path / "m.occ")
    header = artifact_header.model_header(arch={"arch": "os:system", "kwargs": {}}, edits=[],
                                   input_shape=(1, 28, 28), num_classes=10)
    model_io.save(tmp_path / "c.occ", model, header, {"codec": "raw"})
    with pytest.raises(TrustError, match=r"c\.occ: model\.arch: refused: would import 'os'.*"
                                         "--trust-code"):
        loader.load(tmp_path / "c.occ")


# Quantized layers' int32 biases (occ.techniques.quantize.layers): the old float layout, corrupted
# tensors.

QUANT_KWARGS = {"width": 0.25}


def _quantized_lenet(*, int_bias: bool) -> tuple[torch.nn.Module, dict]:
    """A LeNet-5 with a conv and a linear layer frozen at 4-bit weights and inputs, and the
    ``quantize`` edit that rebuilds it."""
    from occ.models.edits import edit_record
    from occ.techniques.quantize.calibrate import calibrate_acts_
    from occ.techniques.quantize.layers import QuantSpec, freeze_, swap_layers_

    torch.manual_seed(0)
    model = build_model("lenet5", QUANT_KWARGS).eval()
    specs = {n: QuantSpec(4, 4, int_bias=int_bias) for n in ("features.3", "classifier.1")}
    layers = swap_layers_(model, specs)
    calibrate_acts_(model, layers, [torch.randn(8, 1, 28, 28)], method="minmax",
                    percentile=99.9, device=torch.device("cpu"))
    freeze_(model)
    return model, edit_record("quantize", {"layers": {n: m.spec.to_dict()
                                                       for n, m in layers.items()}})


def _quant_header(edit: dict) -> dict:
    return artifact_header.model_header(arch={"arch": "lenet5", "kwargs": QUANT_KWARGS},
                                        edits=[edit], input_shape=(1, 28, 28), num_classes=10)


def test_artifact_with_float_quantized_biases_still_loads(tmp_path: Path) -> None:
    """Written before int32 biases: float ``bias`` tensors, no ``int_bias`` in the edit."""
    model, edit = _quantized_lenet(int_bias=False)  # the old code path: float biases
    for spec in edit["args"]["layers"].values():
        del spec["int_bias"]  # ... and the old edit, key for key
    tensors = model_io.state_tensors(model)
    assert tensors["features.3.bias"].dtype == torch.float32
    assert not any(k.endswith("bias_int") for k in tensors)
    write_artifact(tmp_path / "old.occ", _quant_header(edit), tensors)
    loaded = loader.load(tmp_path / "old.occ")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert loaded.classifier[1].bias_int is None and not loaded.classifier[1].has_int_bias
    for spec in edit["args"]["layers"].values():
        spec["int_bias"] = True  # a header that promises int32 biases the file lacks
    write_artifact(tmp_path / "lie.occ", _quant_header(edit), tensors)
    with pytest.raises(ArtifactError, match=r"missing \['classifier.1.bias_int'"):
        loader.load(tmp_path / "lie.occ")


@pytest.mark.parametrize(("name", "corrupt", "pattern"), [
    ("features.3.bias_int", lambda t: t.float(), r"features.3.bias_int: \(12,\) torch.float32"),
    ("features.3.bias_int", lambda t: t[:-1], r"features.3.bias_int: \(11,\) torch.int32"),
    ("classifier.1.bias_int", lambda t: t.to(torch.int64), "torch.int64 does not fit"),
    ("classifier.1.bias_int", lambda t: t.reshape(-1, 1), r"does not fit \(125,\) torch.int32"),
    ("classifier.1.bias_int", None, r"missing \['classifier.1.bias_int'\]"),
])
def test_corrupt_bias_int_is_an_artifact_error(tmp_path: Path, name: str, corrupt,
                                               pattern: str) -> None:
    model, edit = _quantized_lenet(int_bias=True)
    tensors = model_io.state_tensors(model)
    if corrupt is None:
        del tensors[name]
    else:
        tensors[name] = corrupt(tensors[name])
    write_artifact(tmp_path / "bad.occ", _quant_header(edit), tensors)
    with pytest.raises(ArtifactError, match=pattern):
        loader.load(tmp_path / "bad.occ")


def test_bad_int_bias_flag_in_the_edit_is_an_artifact_error(tmp_path: Path) -> None:
    model, edit = _quantized_lenet(int_bias=True)
    edit["args"]["layers"]["features.3"]["int_bias"] = "yes"
    write_artifact(tmp_path / "bad.occ", _quant_header(edit), model_io.state_tensors(model))
    with pytest.raises(ArtifactError, match="int_bias must be a bool"):
        loader.load(tmp_path / "bad.occ")


def test_the_decode_ratio_is_a_limit_the_environment_can_raise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _deflated(_zero_streams(3000, 262144))  # 3 GB of zeros from ~10 KB
    monkeypatch.setenv("OCC_MAX_DECODED_RATIO", "2")
    with pytest.raises(ArtifactError, match=r"OCC_MAX_DECODED_RATIO"):
        decode_artifact(data)
    zeros = {f"w{i}": torch.zeros(1 << 18) for i in range(30)}  # 30 MiB: under the 32 MiB floor
    assert len(decode_artifact(encode_artifact({}, zeros, "zero")).tensors) == 30
