"""The ``.occ`` container: one versioned, checksummed file of named tensor streams.

Layout (little-endian), format version 2 (what occ writes)::

    magic      8 bytes   b"\\x89OCC\\r\\n\\x1a\\n"
    version    u16       2
    flags      varint    bit 0 (FLAG_DEFLATE): the header is raw-deflate compressed;
                         bit 1 (FLAG_DICT): ... with occ's frozen preset dictionary
                         bit 2 (FLAG_BINARY): binary stream table (header_v3; header_v2 reads)
                         bit 3 (FLAG_DICT2): deflated with the version-2 dictionary
                         bit 4 (FLAG_DICT3): ... with the version-3 one
    header_len varint    length of the header as stored
    header     JSON      {"streams": [...], ...caller's fields (model, edits, recipe, metrics)}
    payload    bytes     every stream's encoded bytes, back to back
    digest     16 bytes  SHA-256 of everything above, its first 128 bits

Format version 1 (what occ wrote before issue 20, still read) has the same magic and
version field, then ``flags u16, header_len u64`` and the full 32-byte SHA-256: 35 bytes
more per file. Version 2's digest is SHA-256 truncated to 128 bits (NIST SP 800-107): a
corrupted file still passes with probability 2^-128; collision resistance drops from 128
to 64 bits, which matters to no one here since the digest proves only that the file is
intact (anyone can re-seal a file they edited; nothing signs it).

Nothing is unpickled: tensors are decoded by registered codecs from bytes into numpy
arrays of allow-listed dtypes. Every declared size is checked against the file before
anything is allocated, so a corrupt or hostile file raises ``ArtifactError``, never
crashes or balloons memory: the header inflates to at most ``MAX_HEADER`` bytes and is
counted and depth-checked (``occ.safe_json``) before it is parsed, and the whole stream
table is checked (``_check_streams``: per stream, in total against the file's size and
``OCC_MAX_PARAMS``) before any tensor is decoded. Each stream names its ``codec``; ``raw``
is built in and the entropy coders (``occ.coding``: ``cat``, ``fbp``, ``surp``) register more with
``register_codec``; the reader imports them before decoding, so any artifact occ wrote
reads back without further imports.

The header is JSON, deflated when that makes it smaller (it holds the recipe and metrics,
and on a 200x-compressed LeNet it would otherwise be a fifth of the file); a stream's
``meta`` is left out when empty. A codec policy with ``header_dict = True`` (the one
``entropy_code`` installs) also lets the writer deflate against a preset dictionary of
typical header text (``occ.artifact.header_dict``), which halves a LeNet header again;
the writer keeps whichever of the frozen dictionaries (V1, V2: ``FLAG_DICT2``, V3:
``FLAG_DICT3``, ``occ.artifact.header_dict_v3``) is smaller. With
``compact_header = True`` (also the entropy policy's) the stream table is written in binary
(flag ``FLAG_BINARY``: ``occ.artifact.header_v3``, columns predicted by leaf name; the
version-2 table of ``occ.artifact.header_v2`` and JSON headers still read as before).

A codec policy may return a ready ``Encoded`` stream instead of a codec name, so a coder
that has to try several codecs encodes only once; a policy with ``wants_shape = True`` is
also given each tensor's shape (keyword ``shape``).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from occ.artifact import layout
from occ.artifact.codecs import (
    CODECS,
    MAX_EXPANSION,
    CodecPolicy,
    Encoded,
)
from occ.artifact.layout import (  # noqa: F401  (re-exported: part of the container's API)
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER,
    parse_layout,
    seal,
)
from occ.errors import ArtifactError
from occ.io import atomic_write_bytes

FLAG_DEFLATE = 1  # the header is raw-deflate (RFC 1951) compressed
FLAG_DICT = 2  # ... against occ.artifact.header_dict.HEADER_DICT_V1 (needs FLAG_DEFLATE)
FLAG_BINARY = 4  # the header is a binary stream table + JSON (header_v3; header_v2 reads)
FLAG_DICT2 = 8  # deflated against HEADER_DICT_V2 instead (needs FLAG_DEFLATE, not FLAG_DICT)
FLAG_DICT3 = 16  # ... against header_dict_v3.HEADER_DICT_V3 (at most one dictionary flag)
DICT_FLAGS = (FLAG_DICT, FLAG_DICT2, FLAG_DICT3)
KNOWN_FLAGS = FLAG_DEFLATE | FLAG_BINARY | FLAG_DICT | FLAG_DICT2 | FLAG_DICT3

# Allowed tensor dtypes: name -> (torch dtype, numpy storage dtype).
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype("<f4")), "float64": (torch.float64, np.dtype("<f8")),
    "float16": (torch.float16, np.dtype("<f2")), "bfloat16": (torch.bfloat16, np.dtype("<u2")),
    "int8": (torch.int8, np.dtype("i1")), "uint8": (torch.uint8, np.dtype("u1")),
    "int16": (torch.int16, np.dtype("<i2")), "int32": (torch.int32, np.dtype("<i4")),
    "int64": (torch.int64, np.dtype("<i8")), "bool": (torch.bool, np.dtype("?")),
}
_TORCH_NAMES = {t: name for name, (t, _) in DTYPES.items()}
# Decoded bytes per byte of the whole file, at most ``limits.MAX_DECODED_RATIO``; a small
# file may always decode to MIN_DECODED (a few all-zero tensors in a tiny file are legal,
# 3,000 of 1 MiB are not).
MIN_DECODED = 32 << 20


@dataclass
class Artifact:
    """A decoded artifact: its header (without ``streams``), tensors and stream table."""

    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    streams: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    header_bytes: int = 0  # prefix + stored header + checksum: everything but the streams


def to_numpy(tensor: torch.Tensor) -> tuple[str, np.ndarray]:
    """(dtype name, flat little-endian numpy array) for an allow-listed tensor dtype."""
    if tensor.dtype not in _TORCH_NAMES:
        raise ArtifactError(f"tensor dtype {tensor.dtype} cannot be stored")
    name = _TORCH_NAMES[tensor.dtype]
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if name == "bfloat16":
        flat = flat.view(torch.uint16) if hasattr(torch, "uint16") else flat.view(torch.int16)
    return name, flat.numpy().astype(DTYPES[name][1], copy=False)


def encode_artifact(header: dict[str, Any], tensors: dict[str, torch.Tensor],
                    codec: CodecPolicy = "raw") -> bytes:
    """The bytes of an artifact holding ``header`` and ``tensors``.

    Args:
        header: JSON-serialisable fields (model reference, edits, recipe, metrics).
        tensors: named tensors (a state dict); each becomes one stream.
        codec: a codec name for every stream, or ``policy(name, array) -> codec name``.
    """

    streams, chunks, offset = [], [], 0
    for name, tensor in tensors.items():
        dtype, array = to_numpy(tensor)
        if not callable(codec):
            chosen: str | Encoded = codec
        elif getattr(codec, "wants_shape", False):  # e.g. weights coded as matrices
            chosen = codec(name, array, shape=tuple(tensor.shape))
        else:
            chosen = codec(name, array)
        if isinstance(chosen, Encoded):
            if chosen.codec not in CODECS:
                raise ArtifactError(f"unknown codec {chosen.codec!r}; known: {', '.join(CODECS)}")
            chosen, data, meta = chosen.codec, chosen.data, chosen.meta
        elif chosen not in CODECS:
            raise ArtifactError(f"unknown codec {chosen!r}; known: {', '.join(CODECS)}")
        else:
            data, meta = CODECS[chosen].encode(array)
        stream = {"name": name, "dtype": dtype, "shape": list(tensor.shape),
                  "codec": chosen, "offset": offset, "length": len(data)}
        if meta:
            stream["meta"] = meta
        streams.append(stream)
        chunks.append(data)
        offset += len(data)
    head = _compact(header, streams) if getattr(codec, "compact_header", False) else None
    compact = head is not None
    if head is None:
        head = json.dumps({**header, "streams": streams}, separators=(",", ":"),
                          sort_keys=True, allow_nan=False).encode("utf-8")
    head, flags = _pack_header(head, getattr(codec, "header_dict", False))
    flags |= FLAG_BINARY if compact else 0
    return seal(flags, head, b"".join(chunks))


def _header_dict(flags: int) -> bytes | None:
    """The preset dictionary ``flags`` name (None: plain deflate)."""
    from occ.artifact.header_dict import HEADER_DICT_V1, HEADER_DICT_V2

    if flags & FLAG_DICT3:
        from occ.artifact.header_dict_v3 import HEADER_DICT_V3
        return HEADER_DICT_V3
    if flags & FLAG_DICT2:
        return HEADER_DICT_V2
    return HEADER_DICT_V1 if flags & FLAG_DICT else None


def _compact(header: dict[str, Any], streams: list[dict[str, Any]]) -> bytes | None:
    """The binary (version-3) header, or None where it cannot hold these names or dtypes
    (``header_v3.NotCompact``; any other error is a bug, raised)."""
    from occ.artifact import header_v3

    try:
        return header_v3.pack({**header, "streams": streams})
    except header_v3.NotCompact:
        return None


def _unpack_binary(head: bytes) -> Any:
    """A binary header: version 3 (what occ writes) or 2 (what it wrote before)."""
    from occ.artifact import header_v2, header_v3

    version = head[0] if head else None
    if version == header_v2.HEADER_VERSION:
        return header_v2.unpack(head)
    if version == header_v3.HEADER_VERSION:
        return header_v3.unpack(head)
    raise ValueError(f"compact header version {version}; this occ reads "
                     f"{header_v2.HEADER_VERSION} and {header_v3.HEADER_VERSION}")


def _parse_header(head: bytes, flags: int) -> Any:
    """The header dict of stored header bytes (JSON, or binary with FLAG_BINARY)."""
    from occ import safe_json

    # Bounded before parsing; a binary table's JSON parts lie inside it: one count for all.
    safe_json.check_text(head, max_bytes=MAX_HEADER, error=ArtifactError, what="header",
                         embedded=bool(flags & FLAG_BINARY))
    try:
        if flags & FLAG_BINARY:
            return _unpack_binary(head)
        return json.loads(head.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise ArtifactError(f"unreadable header: {err}") from None


def _pack_header(head: bytes, use_dict: bool) -> tuple[bytes, int]:
    """The smallest of the header as is, deflated, and (``use_dict``) dictionary-deflated."""
    options = [(head, 0)]
    dicts = tuple(FLAG_DEFLATE | f for f in DICT_FLAGS) if use_dict else ()
    for flags in (FLAG_DEFLATE, *dicts):
        zdict = _header_dict(flags)
        extra = {"zdict": zdict} if zdict is not None else {}
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, **extra)
        options.append((packer.compress(head) + packer.flush(), flags))
    return min(options, key=lambda o: len(o[0]))


def read_header(stored: bytes, flags: int) -> bytes:
    """The header JSON bytes as written, inflated (bounded by MAX_HEADER) per ``flags``.

    Raises:
        ArtifactError: unknown flags, or a compressed header that is corrupt or too large.
    """
    dicts = sum(bool(flags & f) for f in DICT_FLAGS)
    if flags & ~KNOWN_FLAGS or (dicts and not flags & FLAG_DEFLATE) or dicts > 1:
        raise ArtifactError(f"artifact has unknown flags {flags:#x}; written by a newer occ?")
    if not flags & FLAG_DEFLATE:
        return stored
    zdict = _header_dict(flags)
    inflater = zlib.decompressobj(-15, **({"zdict": zdict} if zdict is not None else {}))
    try:
        head = inflater.decompress(stored, MAX_HEADER + 1)  # never inflates past the bound
    except zlib.error as err:
        raise ArtifactError(f"unreadable header: {err}") from None
    if len(head) > MAX_HEADER:
        raise ArtifactError(f"header inflates past {MAX_HEADER:,} bytes (occ writes a few "
                            "KB); refused before parsing")
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ArtifactError("unreadable header: bad or oversized compressed header")
    return head


def _check_stream(i: int, s: Any, payload_len: int) -> tuple[str, np.dtype, list[int], int]:
    where = f"streams[{i}]"
    if not isinstance(s, dict):
        raise ArtifactError(f"{where}: not a mapping")
    name, dtype, shape = s.get("name"), s.get("dtype"), s.get("shape")
    offset, length, codec = s.get("offset"), s.get("length"), s.get("codec")
    if not isinstance(name, str) or dtype not in DTYPES:
        raise ArtifactError(f"{where}: bad name or dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArtifactError(f"{where} ({name}): bad shape {shape!r}")
    if codec not in CODECS:
        raise ArtifactError(f"{where} ({name}): unknown codec {codec!r}; "
                            f"known: {', '.join(CODECS)}")
    if not (isinstance(offset, int) and isinstance(length, int) and offset >= 0
            and length >= 0 and offset + length <= payload_len):
        raise ArtifactError(f"{where} ({name}): offset/length outside the file")
    if not isinstance(s.get("meta", {}), dict):
        raise ArtifactError(f"{where} ({name}): bad meta")
    count = math.prod(shape)
    np_dtype = DTYPES[dtype][1]
    # A sparse tensor codes to far fewer bytes than it decodes to, but never by more than
    # MAX_EXPANSION; checking this before decoding bounds allocation by the file's size.
    if count * np_dtype.itemsize > max(1 << 20, MAX_EXPANSION * length):
        raise ArtifactError(f"{where} ({name}): declares {count} elements for {length} bytes")
    return name, np_dtype, shape, count


def _check_streams(streams: list[Any], payload_len: int,
                   file_len: int) -> list[tuple[str, np.dtype, list[int], int]]:
    """Every stream's checked fields, once the whole table is within bounds.

    Each stream may decode to at most ``MAX_EXPANSION`` bytes per coded byte (1 MiB
    whatever its length), so that a stream of no bytes (``zero``) is cheap; the table as a
    whole may decode to at most ``MAX_DECODED_RATIO`` bytes per byte of the file (at least
    ``MIN_DECODED``), and to no more values than ``OCC_MAX_PARAMS`` allows a model. A
    header listing thousands of empty streams is refused here, before any is decoded.
    """
    from occ.limits import MAX_DECODED_RATIO, MAX_PARAMS, MAX_STREAMS

    if len(streams) > MAX_STREAMS:
        raise ArtifactError(f"header lists {len(streams):,} tensors, over the limit "
                            f"{MAX_STREAMS:,}")
    checked, names, values, size = [], set(), 0, 0
    for i, s in enumerate(streams):
        name, np_dtype, shape, count = _check_stream(i, s, payload_len)
        if name in names:
            raise ArtifactError(f"streams[{i}]: duplicate tensor name {name!r}")
        names.add(name)
        values += count
        size += count * np_dtype.itemsize
        checked.append((name, np_dtype, shape, count))
    budget = max(MIN_DECODED, MAX_DECODED_RATIO.value() * file_len)
    if size > budget:
        raise ArtifactError(f"tensors would decode to {size:,} bytes from a {file_len:,}-byte "
                            f"file (at most {budget:,}: {MIN_DECODED >> 20} MiB for any file, "
                            f"else the {MAX_DECODED_RATIO.hint()}); refused before decoding")
    if values > MAX_PARAMS.value():
        raise ArtifactError(f"tensors hold {values:,} values, over the {MAX_PARAMS.hint()}; "
                            "refused before decoding")
    return checked


def decode_artifact(data: bytes) -> Artifact:
    """Verify and decode artifact bytes. Raises ``ArtifactError`` on anything off."""
    at = parse_layout(data)
    if not layout.intact(data, at):
        raise ArtifactError("checksum mismatch: the file is corrupted or truncated")

    head = read_header(data[at.start:at.payload_start], at.flags)
    header = _parse_header(head, at.flags)
    if not isinstance(header, dict) or not isinstance(header.get("streams"), list):
        raise ArtifactError("header has no stream table")
    from occ.limits import MAX_JSON_DEPTH, json_depth

    if json_depth(header, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ArtifactError(f"header nested deeper than {MAX_JSON_DEPTH} levels")
    payload = memoryview(data)[at.payload_start:len(data) - at.digest]
    tensors: dict[str, torch.Tensor] = {}
    streams = header.pop("streams")
    checked = _check_streams(streams, len(payload), len(data))
    for i, (s, (name, np_dtype, shape, count)) in enumerate(zip(streams, checked, strict=True)):
        chunk = bytes(payload[s["offset"]:s["offset"] + s["length"]])
        try:
            array = CODECS[s["codec"]].decode(chunk, s.get("meta", {}), np_dtype, count)
        except ArtifactError as err:
            raise ArtifactError(f"streams[{i}] ({name}): {err.message}") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as err:
            raise ArtifactError(f"streams[{i}] ({name}): cannot decode: {err}") from None
        if array.dtype != np_dtype or array.size != count:
            raise ArtifactError(f"streams[{i}] ({name}): decoded {array.size} values, "
                                f"expected {count}")
        tensors[name] = _to_tensor(array, s["dtype"], shape)
    return Artifact(header=header, tensors=tensors, streams=streams, size=len(data),
                    header_bytes=at.payload_start + at.digest)


def _to_tensor(array: np.ndarray, dtype: str, shape: list[int]) -> torch.Tensor:
    # A codec's own fresh array becomes the tensor as is; a view (raw: the file's bytes) is
    # copied, so the decoded size is held once, not twice.
    if array.base is not None or not array.flags.writeable:
        array = array.copy()
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).reshape(shape)
    return torch.from_numpy(array).reshape(shape)


def write_artifact(path: str | os.PathLike[str], header: dict[str, Any],
                   tensors: dict[str, torch.Tensor], codec: CodecPolicy = "raw") -> int:
    """Encode and write an artifact atomically; returns its size in bytes."""
    data = encode_artifact(header, tensors, codec)
    atomic_write_bytes(path, data)
    return len(data)


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and verify the artifact at ``path``.

    Raises:
        ArtifactError: unreadable, truncated, corrupted or foreign file (named in the message).
    """
    from occ.limits import MAX_ARTIFACT_BYTES, check_input_file

    size = check_input_file(path, limit=MAX_ARTIFACT_BYTES, error=ArtifactError,
                            what="artifact")
    try:
        with open(path, "rb") as fh:
            data = fh.read(size)  # read(n) allocates n bytes first: never the limit itself
    except OSError as err:
        raise ArtifactError(f"cannot read: {err.strerror}", where=str(path)) from None
    try:
        return decode_artifact(data)
    except ArtifactError as err:
        raise ArtifactError(err.message, where=str(path)) from None
