"""The compact artifact header (container flag ``FLAG_BINARY``): a binary stream table.

The JSON header spends most of its bytes on the stream table: every stream repeats
``"codec"``, ``"dtype"``, ``"length"``, ``"name"``, ``"offset"`` and ``"shape"`` and a
full tensor name. Here the table is binary and the rest of the header (model, edits,
recipe, plan, metrics) stays canonical JSON::

    u8      version                 HEADER_VERSION (2); a reader refuses newer ones
    varint  stream count
    per stream:
      varint  shared prefix         bytes shared with the previous stream's name
      blob    name suffix           UTF-8
      u8      dtype                 index into DTYPE_CODES
      varint  ndim, varint dims...
      u8      codec                 index into CODEC_CODES; 255: blob with the name follows
      varint  length                offsets are implicit: streams lie back to back
      blob    meta                  canonical JSON, empty when there is none
    rest    JSON                    every other header field (sorted keys, no spaces)

The container deflates the whole of it (with its preset dictionary) when that is smaller.
Codes are append-only: a code, once given, keeps its meaning, so every later occ reads
every earlier header. Everything is bounds-checked; a malformed header raises
``ValueError`` (the container turns it into ``ArtifactError``).
"""

from __future__ import annotations

import json
from typing import Any

from occ.coding.bitio import ByteReader, ByteWriter
from occ.errors import ArtifactError
from occ.limits import MAX_STREAMS

HEADER_VERSION = 2
# Append-only: never reorder or remove (stored artifacts hold these indices).
DTYPE_CODES = ("float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16",
               "int32", "int64", "bool")
CODEC_CODES = ("raw", "cat", "fbp", "surp", "ctx", "zero", "rice", "trunc")
NAMED = 255  # a codec outside CODEC_CODES, stored by name
MAX_NDIM = 16
MAX_NAME = 4096


def dumps(value: Any) -> bytes:
    """Canonical JSON (sorted keys, no spaces, no NaN) as UTF-8: what header tables store."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode("utf-8")


def _common(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def pack(header: dict[str, Any]) -> bytes:
    """The binary header of ``header`` (whose ``streams`` are back to back from offset 0)."""
    w = ByteWriter()
    w.u8(HEADER_VERSION)
    streams = header["streams"]
    w.varint(len(streams))
    previous, offset = b"", 0
    for s in streams:
        if s["offset"] != offset:
            raise ValueError("compact header: streams must lie back to back")
        name = s["name"].encode("utf-8")
        shared = _common(previous, name)
        w.varint(shared)
        w.blob(name[shared:])
        w.u8(DTYPE_CODES.index(s["dtype"]))
        w.varint(len(s["shape"]))
        for d in s["shape"]:
            w.varint(d)
        if s["codec"] in CODEC_CODES:
            w.u8(CODEC_CODES.index(s["codec"]))
        else:
            w.u8(NAMED)
            w.blob(s["codec"].encode("utf-8"))
        w.varint(s["length"])
        w.blob(dumps(s["meta"]) if s.get("meta") else b"")
        previous, offset = name, offset + s["length"]
    w.raw(dumps({k: v for k, v in header.items() if k != "streams"}))
    return w.getvalue()


def _stream(r: ByteReader, previous: bytes, offset: int) -> tuple[dict[str, Any], bytes]:
    shared = r.varint(len(previous))
    name = previous[:shared] + r.blob(MAX_NAME)
    dtype = r.u8()
    if dtype >= len(DTYPE_CODES):
        raise ValueError(f"unknown dtype code {dtype}")
    shape = [r.varint() for _ in range(r.varint(MAX_NDIM))]
    code = r.u8()
    if code == NAMED:
        codec = r.blob(MAX_NAME).decode("utf-8")
    elif code < len(CODEC_CODES):
        codec = CODEC_CODES[code]
    else:
        raise ValueError(f"unknown codec code {code}")
    length = r.varint()
    s: dict[str, Any] = {"name": name.decode("utf-8"), "dtype": DTYPE_CODES[dtype],
                         "shape": shape, "codec": codec, "offset": offset, "length": length}
    meta = r.blob(r.remaining())
    if meta:
        s["meta"] = loads_part(meta)
    return s, name


def unpack(data: bytes) -> dict[str, Any]:
    """The header dict (with ``streams``, offsets filled in) of a binary header.

    Raises:
        ValueError: a newer version, or malformed bytes.
    """
    r = ByteReader(data)
    version = r.u8()
    if version != HEADER_VERSION:
        raise ValueError(f"compact header version {version}; this occ reads {HEADER_VERSION}")
    count = stream_count(r)
    streams, previous, offset = [], b"", 0
    for _ in range(count):
        s, previous = _stream(r, previous, offset)
        streams.append(s)
        offset += s["length"]
    rest = loads_part(r.rest())
    if not isinstance(rest, dict):
        raise ValueError("compact header: the JSON part is not a mapping")
    return {**rest, "streams": streams}


def stream_count(r: ByteReader) -> int:
    """The stream count at ``r``, refused past ``MAX_STREAMS`` before any stream is read."""
    count = r.varint(r.remaining())  # every stream takes at least one byte
    if count > MAX_STREAMS:
        raise ArtifactError(f"header lists {count:,} tensors, over the limit {MAX_STREAMS:,}")
    return count


def loads_part(data: bytes) -> Any:
    """A JSON part of a compact header (the rest, a stream's meta), its depth bounded.

    Raises:
        ArtifactError: nested too deep (the container has counted every part's values).
        ValueError: not JSON.
    """
    from occ import safe_json

    safe_json.check_text(data, max_bytes=len(data), error=ArtifactError,
                         what="header JSON part")
    return json.loads(data)
