"""The file's layout: format version 2 (varint prefix, 128-bit digest); version 1 still reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from occ.artifact import accounting
from occ.artifact.codecs import Policy
from occ.artifact.container import FLAG_BINARY, decode_artifact, encode_artifact
from occ.artifact.layout import FORMAT_VERSION, MAGIC, checksum, parse_layout, seal
from occ.errors import ArtifactError

# The seed-0 size-lenet5 artifact as occ wrote it before issue 20's second pass: format
# version 1 (20-byte prefix, 32-byte SHA-256), a version-2 binary stream table.
OLD = Path(__file__).parent / "data" / "size-lenet5-seed0-v1.occ"


def test_version_2_prefix_and_digest() -> None:
    data = encode_artifact({"a": 1}, {"w": torch.arange(6, dtype=torch.int8)})
    at = parse_layout(data)
    assert (at.version, at.digest) == (FORMAT_VERSION, 16) == (2, 16)
    assert data[:10] == MAGIC + b"\x02\x00" and at.start == 12  # one byte each: flags, length
    assert data[-16:] == hashlib.sha256(data[:-16]).digest()[:16]
    assert len(data) == at.start + at.head_len + 6 + 16


def test_version_1_artifacts_still_read() -> None:
    old = OLD.read_bytes()
    at = parse_layout(old)
    assert (at.version, at.start, at.digest) == (1, 20, 32) and at.flags & FLAG_BINARY
    art = decode_artifact(old)
    assert art.header_bytes == 373 and len(art.tensors) == 24
    assert art.header["recipe"]["name"] == "size-lenet5"
    v1 = seal(0, b'{"streams":[],"x":1}', b"", version=1)
    assert len(v1) == 20 + 20 + 32 and decode_artifact(v1).header == {"x": 1}


def test_old_headline_artifact_rewritten_is_bit_exact_and_under_10_percent_side_info() -> None:
    """Issue 20's target, on the real file: header + tables + scales + stream framing
    <= 10 % of the seed-0 size-lenet5 artifact once rewritten by this occ."""
    old = decode_artifact(OLD.read_bytes())
    data = encode_artifact(old.header, old.tensors, Policy({}, entropy=True))
    new = decode_artifact(data)
    assert new.header == old.header and list(new.tensors) == list(old.tensors)
    for name, t in old.tensors.items():
        assert new.tensors[name].dtype == t.dtype
        assert new.tensors[name].numpy().tobytes() == t.numpy().tobytes(), name
    assert new.header_bytes <= old.header_bytes - 30
    side = accounting.size_breakdown(data, zstd=False)["side_information"]
    assert side["share"] <= 0.10, side


@pytest.mark.parametrize(("data", "pattern"), [
    (MAGIC[:5], "only 5 bytes"),
    (MAGIC + b"\x03\x00" + bytes(40), "version 3; this occ reads 1 and 2"),
    (MAGIC + b"\x02\x00", "bad prefix"),  # no flags
    (MAGIC + b"\x02\x00\x00", "bad prefix"),  # no header length
    (MAGIC + b"\x02\x00" + b"\xff" * 12, "bad prefix"),  # a varint that never ends
    (MAGIC + b"\x02\x00\x80\x00\x00" + bytes(40), "bad prefix"),  # non-canonical flags
    (MAGIC + b"\x02\x00\x80\x80\x04\x00" + bytes(40), "bad prefix"),  # flags past u16
    (MAGIC + b"\x02\x00\x00\x80\x80\x80\x80\x01" + bytes(40), "exceeds the file"),  # > 64 MB
    (MAGIC + b"\x02\x00\x00\x40" + bytes(40), "header length exceeds the file"),
    (MAGIC + b"\x01\x00" + bytes(40), "only 50 bytes"),
])
def test_bad_prefixes_are_refused(data: bytes, pattern: str) -> None:
    with pytest.raises(ArtifactError, match=pattern):
        parse_layout(data)
    with pytest.raises(ArtifactError, match=pattern):
        decode_artifact(data)


def test_every_byte_is_covered_by_the_digest() -> None:
    data = encode_artifact({"a": 1}, {"w": torch.randn(4)}, Policy({}, entropy=True))
    for i in range(len(data)):
        for bit in (0, 7):
            buf = bytearray(data)
            buf[i] ^= 1 << bit
            with pytest.raises(ArtifactError):
                decode_artifact(bytes(buf))
    body = data[:-16]
    assert decode_artifact(body + checksum(body)).header == {"a": 1}
    with pytest.raises(ArtifactError, match="checksum"):
        decode_artifact(body + hashlib.sha256(body).digest()[:15] + b"\0")
