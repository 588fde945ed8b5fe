"""Codec ``rice``: small integer tensors (biases, short vectors) as Golomb-Rice codes.

A bias of a few hundred integers spread over a few hundred values pays more for ``cat``'s
table (its presence bitmap and counts) than for its symbols. Rice codes need no table:
one parameter byte, then per value its zigzag ``z`` (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...)
as ``z >> k`` in unary (that many 1 bits, then a 0) and the low ``k`` bits of ``z``, most
significant first. ``k`` is chosen per tensor by exact bit count, so a roughly Laplacian
vector costs close to its entropy with no side information. Values that are all multiples
of ``2^s`` (biases rounded by ``quantize: bias_bits``) are coded as ``v >> s``::

    u8    k | 0x80 if a shift follows     k in 0..MAX_K
    [u8   s]     1..MAX_K: every value is a multiple of 2^s
    bits  codes      back to back, MSB first; the last byte padded with zero bits

Bounded: at most ``MAX_COUNT`` values (the decoder walks them one by one), every value
takes at least one bit (``count <= 8 * len``), each decoded value must fit the stream's
dtype, and trailing bytes or non-zero padding are refused.
"""

from __future__ import annotations

import numpy as np

MAX_K = 31
MAX_COUNT = 1 << 16  # values per stream: the decoder's loop is per value
DTYPES = ("int8", "int16", "int32", "uint8", "uint16")


def _zigzag(v: np.ndarray, signed: bool) -> np.ndarray:
    return np.where(v >= 0, 2 * v, -2 * v - 1) if signed else v


def cost_bits(z: np.ndarray) -> tuple[int, int]:
    """(k, total code bits) of the best Rice parameter for non-negative int64 ``z``."""
    best = (0, 0)
    for k in range(MAX_K + 1):
        bits = int(np.sum(z >> k)) + (k + 1) * len(z)
        if k == 0 or bits < best[1]:
            best = (k, bits)
        if not z.size or int(z.max()) >> k == 0:  # a larger k only adds bits
            break
    return best


def encode(array: np.ndarray) -> tuple[bytes, dict]:
    """Rice-code a flat integer array (``ValueError`` for other dtypes or too many values)."""
    if array.dtype.name not in DTYPES:
        raise ValueError(f"rice codes small integers, not {array.dtype}")
    if array.size > MAX_COUNT:
        raise ValueError(f"rice codes at most {MAX_COUNT} values, got {array.size}")
    v = array.astype(np.int64)
    shift = _common_shift(v)
    if shift:
        v >>= shift  # exact: every value is a multiple of 2^shift
    z = _zigzag(v, array.dtype.kind == "i")
    k, total = cost_bits(z)
    q = z >> k
    length = q + 1 + k
    start = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
    bits = np.zeros(total, dtype=np.uint8)
    if q.sum():  # the unary ones: q[i] of them from start[i]
        first = np.repeat(start, q)
        bits[first + np.arange(len(first)) - np.repeat(np.cumsum(q) - q, q)] = 1
    for j in range(k):  # remainder bits after each terminating zero
        bits[start + q + 1 + j] = (z >> (k - 1 - j)) & 1
    head = bytes([0x80 | k, shift]) if shift else bytes([k])
    return head + np.packbits(bits).tobytes(), {}


def _common_shift(v: np.ndarray) -> int:
    """The largest ``s <= MAX_K`` with every value a multiple of ``2^s`` (0: none, or all 0)."""
    nz = np.abs(v[v != 0])
    if not nz.size:
        return 0
    low = np.bitwise_and(nz, -nz)  # lowest set bit of each
    return min(int(low.min()).bit_length() - 1, MAX_K)


def decode(data: bytes, meta: dict, dtype: np.dtype, count: int) -> np.ndarray:
    """Inverse of ``encode``: exactly ``count`` values of ``dtype``; ValueError if malformed."""
    if np.dtype(dtype).name not in DTYPES:
        raise ValueError(f"rice cannot decode {dtype}")
    if count > MAX_COUNT or not data or count > 8 * (len(data) - 1):
        raise ValueError(f"rice stream of {len(data)} bytes cannot hold {count} values")
    k, shift, skip = data[0] & 0x7F, 0, 1
    if data[0] & 0x80:
        if len(data) < 2 or not 1 <= data[1] <= MAX_K:
            raise ValueError("rice stream has a bad shift")
        shift, skip = data[1], 2
    if k > MAX_K or count > 8 * (len(data) - skip):
        raise ValueError(f"rice parameter {k} > {MAX_K}, or too few bytes for {count} values")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=skip))
    zeros = np.flatnonzero(bits == 0)
    # next_zero[i]: index into ``zeros`` of the first zero bit at or after bit i
    next_zero = np.searchsorted(zeros, np.arange(len(bits) + 1))
    ends = np.empty(count, dtype=np.int64)
    pos, n = 0, len(bits)
    for i in range(count):
        j = next_zero[pos] if pos <= n else len(zeros)
        if j >= len(zeros):
            raise ValueError("rice stream ends inside a value")
        end = int(zeros[j])
        ends[i] = end
        pos = end + 1 + k
    if pos > n or (n - pos) >= 8 or bits[pos:].any():
        raise ValueError("rice stream has a truncated value or trailing bits")
    starts = np.concatenate(([0], ends[:-1] + 1 + k))
    z = (ends - starts).astype(np.int64) << k
    for j in range(k):
        z |= bits[ends + 1 + j].astype(np.int64) << (k - 1 - j)
    info = np.iinfo(dtype)
    values = (z >> 1) ^ -(z & 1) if np.dtype(dtype).kind == "i" else z
    if values.size and (values.min() < info.min >> shift or values.max() > info.max >> shift):
        raise ValueError(f"rice value outside {np.dtype(dtype).name}")
    return (values << shift).astype(dtype)
