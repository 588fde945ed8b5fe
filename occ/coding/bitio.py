"""Byte and bit plumbing shared by the codecs: varints, bounded reads, bit packing.

Everything here is numpy-only and bounds-checked: a reader never reads past its buffer
and raises ``ValueError`` (which the container turns into ``ArtifactError``) on anything
malformed, so hostile bytes cannot hang a decoder or make it allocate more than the
element count the container already checked.
"""

from __future__ import annotations

import struct

import numpy as np

MAX_VARINT_BYTES = 10  # a u64 in LEB128


def clamp(values: np.ndarray, lo: int | float, hi: int | float) -> np.ndarray:
    """``np.clip(values, lo, hi)`` for arrays without NaN, as two ufunc calls: np.clip's
    Python wrappers cost several microseconds a call on the small arrays the coders'
    plans are made of."""
    return np.minimum(np.maximum(values, lo), hi)


def varint_len(value: int) -> int:
    """Bytes ``ByteWriter.varint`` takes for ``value`` (>= 0)."""
    return max(1, (value.bit_length() + 6) // 7)


class ByteWriter:
    """Appends varints, fixed-width numbers and byte strings."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def varint(self, value: int) -> None:
        """Unsigned LEB128."""
        if value < 0:
            raise ValueError(f"varint of a negative number {value}")
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
        self._parts.append(bytes(out))

    def svarint(self, value: int) -> None:
        """Signed (zig-zag) LEB128."""
        self.varint(2 * value if value >= 0 else -2 * value - 1)

    def u8(self, value: int) -> None:
        """One byte."""
        self._parts.append(bytes((value,)))

    def f64(self, value: float) -> None:
        """A little-endian IEEE double (bit-exact)."""
        self._parts.append(struct.pack("<d", value))

    def raw(self, data: bytes) -> None:
        """Bytes whose length the reader knows from elsewhere."""
        self._parts.append(bytes(data))

    def blob(self, data: bytes) -> None:
        """Length-prefixed bytes."""
        self.varint(len(data))
        self.raw(data)

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return b"".join(self._parts)


class ByteReader:
    """Reads what ``ByteWriter`` wrote; every read is bounds-checked."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self.pos

    def varint(self, limit: int = (1 << 64) - 1) -> int:
        """An unsigned LEB128 that must be at most ``limit``."""
        value, shift = 0, 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= len(self._data):
                raise ValueError("truncated varint")
            byte = self._data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if i and byte == 0:
                    raise ValueError("non-canonical varint")
                break
        else:
            raise ValueError("varint longer than 10 bytes")
        if value > limit:
            raise ValueError(f"value {value} exceeds its limit {limit}")
        return value

    def svarint(self, limit: int = (1 << 63)) -> int:
        """A zig-zag LEB128 with ``|value| <= limit``."""
        z = self.varint(2 * limit)
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def u8(self) -> int:
        """One byte."""
        return self.raw(1)[0]

    def f64(self) -> float:
        """A little-endian IEEE double."""
        return struct.unpack("<d", self.raw(8))[0]

    def raw(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        if n < 0 or n > self.remaining():
            raise ValueError(f"truncated: wanted {n} bytes, {self.remaining()} left")
        out = bytes(self._data[self.pos:self.pos + n])
        self.pos += n
        return out

    def blob(self, limit: int) -> bytes:
        """Length-prefixed bytes of at most ``limit`` bytes."""
        return self.raw(self.varint(limit))

    def rest(self) -> bytes:
        """Everything not read yet."""
        return self.raw(self.remaining())

    def done(self) -> None:
        """Raise if anything is left unread (trailing garbage)."""
        if self.remaining():
            raise ValueError(f"{self.remaining()} unexpected trailing bytes")


def pack_bits(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate each ``values[j]`` as ``widths[j]`` bits, most significant bit first.

    Vectorised: one bit per element of a temporary array, no Python loop.
    """
    widths = widths.astype(np.int64, copy=False)
    total = int(widths.sum())
    if total == 0:
        return b""
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = (widths - 1)[owner] - (np.arange(total) - starts[owner])
    bits = (values.astype(np.uint64, copy=False)[owner] >> shift.astype(np.uint64)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def unpack_bits(data: bytes, widths: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_bits``: int64 values of the given bit ``widths`` (each <= 52)."""
    widths = widths.astype(np.int64, copy=False)
    total = int(widths.sum())
    if len(data) != (total + 7) // 8:
        raise ValueError(f"bit field holds {len(data)} bytes, expected {(total + 7) // 8}")
    if total == 0:
        return np.zeros(len(widths), dtype=np.int64)
    if int(widths.max()) > 52 or int(widths.min()) < 0:
        raise ValueError("bit field width outside [0, 52]")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=total).astype(np.int64)
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = (widths - 1)[owner] - (np.arange(total) - starts[owner])
    # bincount sums each value's bits at once; float64 weights are exact below 2^53.
    summed = np.bincount(owner, weights=(bits << shift).astype(np.float64),
                         minlength=len(widths))
    return summed.astype(np.int64)


def pack_fixed(values: np.ndarray, width: int) -> bytes:
    """``values`` (non-negative, < 2^width) as ``width``-bit fields, MSB first."""
    if width == 0 or len(values) == 0:
        return b""
    size = next(s for s in (1, 2, 4, 8) if 8 * s >= width)  # bytes of the narrowest word
    octets = values.astype(f">u{size}").view(np.uint8).reshape(-1, size)  # MSB first
    bits = np.unpackbits(octets, axis=1)[:, 8 * size - width:]
    return np.packbits(bits).tobytes()


def unpack_fixed(data: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of ``pack_fixed``: ``count`` int64 values of ``width`` bits."""
    if len(data) != (width * count + 7) // 8:
        raise ValueError(f"packed field holds {len(data)} bytes, expected "
                         f"{(width * count + 7) // 8}")
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    if width > 62:
        raise ValueError("packed field wider than 62 bits")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=width * count)
    weights = (np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits.reshape(count, width).astype(np.int64) @ weights


def packed_len(width: int, count: int) -> int:
    """Bytes ``pack_fixed`` writes for ``count`` fields of ``width`` bits."""
    return (width * count + 7) // 8
