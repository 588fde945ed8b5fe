"""Where an artifact's parts lie: the prefix of each format version and the digest.

Every version starts with the 8-byte magic and a u16 version, so any occ names the
version it cannot read. Version 1 then has ``flags u16, header_len u64`` and a 32-byte
SHA-256; version 2 (written since issue 20) has ``flags varint, header_len varint`` and
SHA-256 truncated to 16 bytes: 35 bytes less per file (``occ.artifact.container`` has the
whole layout and why 128 bits is enough).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from occ.coding.bitio import ByteReader, ByteWriter
from occ.errors import ArtifactError, OccError

MAGIC = b"\x89OCC\r\n\x1a\n"
FORMAT_VERSION = 2  # what this occ writes
DIGEST_BYTES = {1: 32, 2: 16}  # the versions this occ reads, and their digests' sizes
MAX_HEADER = 16 << 20  # stored or inflated; occ writes a few KB (~300 bytes per tensor)
_START = struct.Struct("<8sH")  # magic, version: the same in every version
_PREFIX_V1 = struct.Struct("<8sHHQ")  # magic, version, flags, header_len
_MAX_FLAGS = 0xFFFF


@dataclass(frozen=True)
class Layout:
    """An artifact's format version, header flags and the spans of its parts."""

    version: int
    flags: int
    start: int  # where the stored header begins (the prefix's size)
    head_len: int  # the stored header's length
    digest: int  # the trailing digest's size

    @property
    def payload_start(self) -> int:
        """Where the streams begin."""
        return self.start + self.head_len


def parse_layout(data: bytes) -> Layout:
    """The layout of artifact bytes, from their prefix (the digest is not checked here).

    Raises:
        ArtifactError: not an artifact, a version this occ does not read, or a prefix
            whose header would not fit in the file.
    """
    if len(data) < _START.size:
        raise ArtifactError(f"not an occ artifact: only {len(data)} bytes")
    magic, version = _START.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError("not an occ artifact (bad magic bytes)")
    if version not in DIGEST_BYTES:
        raise ArtifactError(f"artifact format version {version}; this occ reads "
                            f"{' and '.join(map(str, DIGEST_BYTES))}")
    digest = DIGEST_BYTES[version]
    if version == 1:
        if len(data) < _PREFIX_V1.size + digest:
            raise ArtifactError(f"not an occ artifact: only {len(data)} bytes")
        _, _, flags, head_len = _PREFIX_V1.unpack_from(data)
        start = _PREFIX_V1.size
    else:
        r = ByteReader(memoryview(data)[_START.size:])
        try:  # LEB128 varints, canonical and bounded (occ.coding.bitio)
            flags, head_len = r.varint(_MAX_FLAGS), r.varint()  # too long: said below
        except ValueError:
            raise ArtifactError("truncated or corrupt: bad prefix") from None
        start = _START.size + r.pos
    if head_len > min(MAX_HEADER, len(data) - start - digest):
        raise ArtifactError("truncated or corrupt: header length exceeds the file")
    return Layout(version, flags, start, head_len, digest)


def checksum(body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """The digest ``version`` stores after ``body``: SHA-256, truncated in version 2."""
    return hashlib.sha256(body).digest()[:DIGEST_BYTES[version]]


def intact(data: bytes, at: Layout) -> bool:
    """Whether the digest at the end of ``data`` matches everything before it."""
    body = memoryview(data)[:len(data) - at.digest]
    return checksum(body, at.version) == data[len(data) - at.digest:]


def seal(flags: int, head: bytes, payload: bytes, *, version: int = FORMAT_VERSION,
         head_len: int | None = None) -> bytes:
    """Artifact bytes: ``version``'s prefix, the stored header, the payload, the digest.

    ``head_len`` makes the prefix declare another header length (the fuzzer's lies).
    """
    declared = len(head) if head_len is None else head_len
    if version == 1:
        prefix = _PREFIX_V1.pack(MAGIC, 1, flags, declared % 2**64)
    else:
        w = ByteWriter()
        w.varint(flags)
        w.varint(declared)
        prefix = _START.pack(MAGIC, version) + w.getvalue()
    body = prefix + head + payload
    return body + checksum(body, version)


def has_magic(path: str | os.PathLike[str], *, error: type[OccError], what: str) -> bool:
    """Whether file ``path`` starts with an occ artifact's ``MAGIC``; a read that fails is
    ``error`` (``cannot read <what>: ...``), one line."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror or err}", where=str(path)) from None
