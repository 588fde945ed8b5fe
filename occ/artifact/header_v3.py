"""The compact artifact header, version 3: a stream table in columns, predicted by leaf name.

Version 2 (``occ.artifact.header_v2``) writes each stream's record in full. In a model's
state dict the same leaf names (``w_scale``, ``weight_int``, ``bias_int`` ...) repeat in
every layer with the same dtype and codec, often the same shape; raw and all-zero
streams have lengths their shape implies. Here a name is a module prefix (up to and
including the last ``.``) and a leaf, each written once, and a stream's dtype, codec,
shape and length are written only where they differ from the last stream with the same
leaf. The table is written column by column, so that deflate (which the container applies
to the whole header) sees like beside like::

    u8      version             HEADER_VERSION (3)
    varint  stream count N
    varint  module count, then the modules, each UTF-8 and ended by a NUL byte
    varint  leaf count, then the leaves, likewise
    N x     varint module index, then N x varint leaf index    (name = module + leaf)
    N x     u8 flags: which of DTYPE, CODEC, SHAPE, LENGTH, META are written below
    then, for the flagged streams only, one column after another:
      dtypes  u8 index into DTYPE_CODES
      codecs  u8 index into CODEC_CODES; 255: blob with the name follows
      shapes  varint ndim, varint dims...
      lengths varint                 offsets are implicit: streams lie back to back
      metas   blob, canonical JSON
    rest    JSON                    every other header field (sorted keys, no spaces)

What is not written is predicted: dtype, codec and shape from the last stream with the
same leaf (the first stream of a leaf writes all three); the length is 0 for ``zero``,
elements x item size for ``raw``, otherwise the last same-leaf stream's length. Every
count and index is bounds-checked; a malformed header raises ``ValueError`` (the
container turns it into ``ArtifactError``).
"""

from __future__ import annotations

import math
from typing import Any

from occ.artifact.header_v2 import (
    CODEC_CODES,
    DTYPE_CODES,
    MAX_NAME,
    MAX_NDIM,
    NAMED,
    dumps,
    loads_part,
    stream_count,
)
from occ.coding.bitio import ByteReader, ByteWriter

HEADER_VERSION = 3
ITEM_SIZES = (4, 8, 2, 2, 1, 1, 2, 4, 8, 1)  # bytes per element, in DTYPE_CODES order
DTYPE, CODEC, SHAPE, LENGTH, META = 1, 2, 4, 8, 16
_FLAGS = DTYPE | CODEC | SHAPE | LENGTH | META


def _split(name: str) -> tuple[bytes, bytes]:
    """(module prefix with its trailing dot, leaf): their concatenation is the name."""
    cut = name.rfind(".") + 1
    return name[:cut].encode("utf-8"), name[cut:].encode("utf-8")


def _implied_length(s: dict[str, Any], last: dict[str, Any] | None) -> int | None:
    """The length a reader predicts for ``s`` (None: it cannot)."""
    if s["codec"] == "zero":
        return 0
    if s["codec"] == "raw":
        return math.prod(s["shape"]) * ITEM_SIZES[DTYPE_CODES.index(s["dtype"])]
    return last["length"] if last is not None else None


def _flags(s: dict[str, Any], last: dict[str, Any] | None) -> int:
    flags = META if s.get("meta") else 0
    for bit, key in ((DTYPE, "dtype"), (CODEC, "codec"), (SHAPE, "shape")):
        if last is None or last[key] != s[key]:
            flags |= bit
    return flags | (LENGTH if _implied_length(s, last) != s["length"] else 0)


class NotCompact(ValueError):
    """What the binary header cannot hold (a name with a NUL byte or too long, a dtype
    without a code): the container writes the JSON header instead."""


def _table(names: list[bytes], w: ByteWriter) -> list[int]:
    """Write the distinct ``names`` in first-seen order, each ended by a NUL byte (as
    text, deflate matches them against the dictionary); return each name's index."""
    seen: dict[bytes, int] = {}
    for n in names:
        if b"\0" in n or len(n) > MAX_NAME:  # the container writes JSON instead
            raise NotCompact("compact header: a name with a NUL byte, or too long")
        seen.setdefault(n, len(seen))
    w.varint(len(seen))
    w.raw(b"".join(n + b"\0" for n in seen))
    return [seen[n] for n in names]


def pack(header: dict[str, Any]) -> bytes:
    """The version-3 header of ``header`` (whose ``streams`` lie back to back from 0)."""
    streams = header["streams"]
    offset = 0
    for s in streams:
        if s["offset"] != offset:
            raise ValueError("compact header: streams must lie back to back")
        offset += s["length"]
    w = ByteWriter()
    w.u8(HEADER_VERSION)
    w.varint(len(streams))
    names = [_split(s["name"]) for s in streams]
    module_ids = _table([m for m, _ in names], w)
    leaf_ids = _table([leaf for _, leaf in names], w)
    for i in (*module_ids, *leaf_ids):
        w.varint(i)
    last: dict[int, dict[str, Any]] = {}
    flags = []
    for s, leaf in zip(streams, leaf_ids, strict=True):
        flags.append(_flags(s, last.get(leaf)))
        last[leaf] = s
    for f in flags:
        w.u8(f)
    _columns(list(zip(streams, flags, strict=True)), w)
    w.raw(dumps({k: v for k, v in header.items() if k != "streams"}))
    return w.getvalue()


def _columns(rows: list[tuple[dict[str, Any], int]], w: ByteWriter) -> None:
    """The explicit fields, one column after another."""
    for s, f in rows:
        if f & DTYPE and s["dtype"] not in DTYPE_CODES:
            raise NotCompact(f"compact header: no code for dtype {s['dtype']!r}")
        if f & DTYPE:
            w.u8(DTYPE_CODES.index(s["dtype"]))
    for s, f in rows:
        if f & CODEC and s["codec"] in CODEC_CODES:
            w.u8(CODEC_CODES.index(s["codec"]))
        elif f & CODEC:
            w.u8(NAMED)
            w.blob(s["codec"].encode("utf-8"))
    for s, f in rows:
        if f & SHAPE:
            w.varint(len(s["shape"]))
            for d in s["shape"]:
                w.varint(d)
    for s, f in rows:
        if f & LENGTH:
            w.varint(s["length"])
    for s, f in rows:
        if f & META:
            w.blob(dumps(s["meta"]))


def _read_table(r: ByteReader) -> list[bytes]:
    names = []
    for _ in range(r.varint(r.remaining())):  # every name takes at least its NUL
        name = bytearray()
        while (byte := r.u8()) != 0:
            name.append(byte)
            if len(name) > MAX_NAME:
                raise ValueError("compact header: a name longer than MAX_NAME")
        names.append(bytes(name))
    return names


def _read_ids(r: ByteReader, count: int, table: list[bytes]) -> list[int]:
    if count and not table:
        raise ValueError("compact header: streams without names")
    return [r.varint(len(table) - 1) for _ in range(count)]


def unpack(data: bytes) -> dict[str, Any]:
    """The header dict (with ``streams``, offsets filled in) of a version-3 header.

    Raises:
        ValueError: another version, or malformed bytes.
    """
    r = ByteReader(data)
    version = r.u8()
    if version != HEADER_VERSION:
        raise ValueError(f"compact header version {version}; this reads {HEADER_VERSION}")
    count = stream_count(r)  # every stream takes at least one byte (its flags)
    modules, leaves = _read_table(r), _read_table(r)
    module_ids = _read_ids(r, count, modules)
    leaf_ids = _read_ids(r, count, leaves)
    flags = [r.u8() for _ in range(count)]
    if any(f & ~_FLAGS for f in flags):
        raise ValueError("compact header: unknown stream flags")
    streams = _read_columns(r, [modules[m] + leaves[leaf]
                                for m, leaf in zip(module_ids, leaf_ids, strict=True)],
                            leaf_ids, flags)
    rest = loads_part(r.rest())
    if not isinstance(rest, dict):
        raise ValueError("compact header: the JSON part is not a mapping")
    return {**rest, "streams": streams}


def _read_columns(r: ByteReader, names: list[bytes], leaf_ids: list[int],
                  flags: list[int]) -> list[dict[str, Any]]:
    """The streams: explicit fields read column by column, the rest predicted by leaf."""
    dtypes = [r.u8() if f & DTYPE else None for f in flags]
    if any(d is not None and d >= len(DTYPE_CODES) for d in dtypes):
        raise ValueError("compact header: unknown dtype code")
    codecs = [_read_codec(r) if f & CODEC else None for f in flags]
    shapes = [[r.varint() for _ in range(r.varint(MAX_NDIM))] if f & SHAPE else None
              for f in flags]
    lengths = [r.varint() if f & LENGTH else None for f in flags]
    metas = [r.blob(r.remaining()) if f & META else None for f in flags]
    last: dict[int, dict[str, Any]] = {}
    streams, offset = [], 0
    for i, leaf in enumerate(leaf_ids):
        before = last.get(leaf)
        if before is None and (~flags[i] & (DTYPE | CODEC | SHAPE)):
            raise ValueError("compact header: nothing to predict a stream from")
        s = {"name": names[i].decode("utf-8"),
             "dtype": DTYPE_CODES[dtypes[i]] if dtypes[i] is not None else before["dtype"],
             "shape": shapes[i] if shapes[i] is not None else list(before["shape"]),
             "codec": codecs[i] if codecs[i] is not None else before["codec"],
             "offset": offset}
        length = lengths[i] if lengths[i] is not None else _implied_length(s, before)
        if length is None:
            raise ValueError("compact header: a stream's length is missing")
        s["length"] = length
        if metas[i] is not None:
            s["meta"] = loads_part(metas[i])
        streams.append(s)
        last[leaf] = s
        offset += length
    return streams


def _read_codec(r: ByteReader) -> str:
    code = r.u8()
    if code == NAMED:
        return r.blob(MAX_NAME).decode("utf-8")
    if code >= len(CODEC_CODES):
        raise ValueError(f"unknown codec code {code}")
    return CODEC_CODES[code]
