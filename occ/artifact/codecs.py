"""The codecs occ.coding adds to the container, and the per-tensor choice between them.

Importing this module registers, with ``occ.artifact.container.register_codec``:

- ``cat``  integer tensors: categorical model + sparse positions (``occ.coding.ints``);
- ``fbp``  any tensor by bit pattern, byte plane by byte plane (``occ.coding.floats``);
- ``ctx``  integer weight matrices under row / column contexts (``occ.coding.adaptive``);
- ``rice`` small integer tensors (biases) as Golomb-Rice codes, no table (``occ.coding.rice``);
- ``zero`` a tensor whose bit patterns are all zero (zero points): no bytes at all;
- ``trunc`` each value's bit pattern without the low bytes that are zero in every value
  (a float32 scale rounded to 8 significant bits, ``quantize: {scale_bits: 8}``, is
  exactly its top two bytes): lossless, no meta, the dropped byte count implied by the
  length;
- ``surp`` float weights pruned by SuRP, replayed from their index stream
  (``occ.coding.surp``). Its encoder needs the original weights, so its streams are
  prepared by the prune stage and handed to ``Policy`` rather than encoded here.

``Policy`` is the codec choice ``entropy_code`` turns on: for each tensor it encodes every
applicable candidate (always including ``raw``; ``cat`` for integers, ``ctx`` for integer
tensors of two or more dimensions, ``fbp`` for floats and for integers wider than a byte)
and keeps the smallest.

What the policy needs is plain JSON in ``ctx.encoding`` (``"entropy": true`` and
``"prepared": {digest: {"codec", "data": base64}}``), so ``policy_from_encoding`` can
rebuild it from a saved run state (``occ.artifact.model_io.codec_policy`` does, for every write).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from occ.coding import adaptive, floats, ints, rice, surp
from occ.errors import ArtifactError


def _surp_encode(array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    raise ArtifactError("surp streams are made by `type: prune, method: surp`; they cannot be "
                        "encoded from a tensor alone")


MAX_EXPANSION = 1 << 16  # decoded bytes per coded byte, at most, for any stream


@dataclass(frozen=True)
class Codec:
    """A way to turn one flat numpy array into bytes and back, exactly.

    ``encode(array) -> (bytes, meta)``; ``decode(bytes, meta, dtype, count) -> array`` must
    return exactly ``count`` elements of ``dtype`` and raise ``ArtifactError`` (or
    ``ValueError``) on malformed input. ``meta`` is JSON and stored in the header.
    """

    name: str
    encode: Callable[[np.ndarray], tuple[bytes, dict[str, Any]]]
    decode: Callable[[bytes, dict[str, Any], np.dtype, int], np.ndarray]


@dataclass(frozen=True)
class Encoded:
    """A stream a codec policy has already encoded: ``codec``'s bytes and meta."""

    codec: str
    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)


CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` available to writers and readers under ``codec.name``."""
    CODECS[codec.name] = codec
    return codec


def _raw_decode(data: bytes, meta: dict[str, Any], dtype: np.dtype, count: int) -> np.ndarray:
    if len(data) != count * dtype.itemsize:
        raise ArtifactError(f"raw stream holds {len(data)} bytes, "
                            f"expected {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=count)


register_codec(Codec("raw", lambda a: (a.tobytes(), {}), _raw_decode))

CodecPolicy = str | Callable[[str, np.ndarray], "str | Encoded"]



register_codec(Codec("cat", ints.encode, ints.decode))
register_codec(Codec("fbp", floats.encode, floats.decode))
register_codec(Codec("surp", _surp_encode, surp.decode))
register_codec(Codec("ctx", adaptive.encode, adaptive.decode))
register_codec(Codec("rice", rice.encode, rice.decode))


def _zero_decode(data: bytes, meta: dict[str, Any], dtype: np.dtype, count: int) -> np.ndarray:
    if data:
        raise ArtifactError(f"zero stream holds {len(data)} bytes, expected none")
    return np.zeros(count, dtype=dtype)  # the container bounds count before decoding


register_codec(Codec("zero", lambda a: (b"", {}), _zero_decode))


def _trunc_encode(array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The top bytes of each value, past the low bytes that are zero in all of them."""
    size = array.dtype.itemsize
    planes = np.ascontiguousarray(array).view(np.uint8).reshape(-1, size)  # little-endian
    zero = ~planes.any(axis=0)
    low = int(np.argmin(zero)) if not zero.all() else size - 1  # keep at least one byte
    return planes[:, low:].tobytes(), {}


def _trunc_decode(data: bytes, meta: dict[str, Any], dtype: np.dtype, count: int) -> np.ndarray:
    size = dtype.itemsize
    kept = len(data) // count if count else 0
    if (count and not 1 <= kept <= size) or len(data) != count * kept:
        raise ArtifactError(f"trunc stream holds {len(data)} bytes for {count} values")
    planes = np.zeros((count, size), dtype=np.uint8)
    planes[:, size - kept:] = np.frombuffer(data, dtype=np.uint8).reshape(count, kept)
    return planes.view(dtype).reshape(-1)


register_codec(Codec("trunc", _trunc_encode, _trunc_decode))


def _all_zero(array: np.ndarray) -> bool:
    """Whether every element's bit pattern is zero (-0.0 is not)."""
    size = array.dtype.itemsize
    words = array.view(f"<u{size}" if size > 1 else "u1") if size in (1, 2, 4, 8) else array
    return bool(array.size) and not np.any(words)

# Decoders that can also attribute their bytes to parts (``occ.artifact.accounting``).
PART_DECODERS = {"cat": ints.decode, "fbp": floats.decode, "surp": surp.decode,
                 "ctx": adaptive.decode}


def digest(array: np.ndarray) -> str:
    """A fingerprint of a flat array's bytes (matches a prepared stream to its tensor)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _fits(array: np.ndarray, data: bytes) -> bool:
    """Whether the container's reader will accept ``data`` as ``array``'s stream."""
    return array.nbytes <= max(1 << 20, MAX_EXPANSION * len(data))


class Policy:
    """Per tensor, the smallest of: raw, a prepared stream, and if ``entropy`` ``zero`` (all
    zero), ``cat`` / ``ctx`` / ``rice`` / ``fbp`` (integers wider than a byte try both),
    ``trunc`` (values wider than a byte).

    Args:
        prepared: ``{digest of a flat array: {"codec", "data": base64}}`` made by stages
            that code as they compress (SuRP). Keyed by content, not name, so a stream is
            used exactly while some tensor still holds those bytes (and survives a module
            being renamed).
        entropy: try the entropy coders too (what ``entropy_code`` turns on).
    """

    wants_shape = True  # encode_artifact passes each tensor's shape (for ALIVE positions)

    def __init__(self, prepared: dict[str, dict[str, str]], *, entropy: bool) -> None:
        self.prepared = prepared
        self.entropy = entropy
        self.header_dict = entropy  # entropy coding also deflates the header with a dictionary
        self.compact_header = entropy  # ... and writes the stream table in binary

    @staticmethod
    def encode(codec: str, array: np.ndarray,
               shape: tuple[int, ...] | None = None) -> Encoded:
        """The stream ``codec`` writes for ``array`` (a tensor of ``shape``), encoded the
        way ``candidates`` tries it: ``cat`` / ``fbp`` see rows, ``ctx`` the shape too.

        Raises:
            ValueError: ``codec`` cannot code this array.
        """
        cols = math.prod(shape[1:]) if shape is not None and len(shape) >= 2 else None
        if codec == "cat":
            return Encoded(codec, ints.encode(array, cols)[0])
        if codec == "ctx":
            if cols is None:
                raise ValueError("ctx codes tensors of two or more dimensions")
            return Encoded(codec, adaptive.encode(array, cols, shape)[0])
        if codec == "fbp":
            return Encoded(codec, floats.encode(array, cols)[0])
        data, meta = CODECS[codec].encode(array)
        return Encoded(codec, data, meta)

    def candidates(self, name: str, array: np.ndarray,
                   shape: tuple[int, ...] | None = None) -> list[Encoded]:
        """Every stream this policy could write for ``array``, raw first."""
        matrix = shape is not None and len(shape) >= 2
        out = [Encoded("raw", array.tobytes())]
        if self.entropy and _all_zero(array):
            out.append(Encoded("zero", b""))
        if self.prepared:
            entry = self.prepared.get(digest(array))
            if entry is not None:
                out.append(Encoded(entry["codec"], base64.b64decode(entry["data"])))
        if self.entropy:
            try:
                out.append(self.encode("cat", array, shape))
                if matrix:  # a weight matrix: rows and columns give contexts
                    out.append(self.encode("ctx", array, shape))
                # Wider integers (int32 biases of 8-bit layers) may be mostly distinct
                # values: then cat's table costs more than fbp's byte planes.
                planes = array.dtype.itemsize > 1
            except ValueError:  # not integers, or too wide a range for a table
                planes = True
            if array.size <= rice.MAX_COUNT and array.dtype.name in rice.DTYPES:
                out.append(self.encode("rice", array))
            if planes:
                out.append(self.encode("fbp", array, shape))
            if array.dtype.itemsize > 1:  # scales rounded to a few significant bits
                out.append(self.encode("trunc", array))
        return [e for e in out if e.codec == "raw" or _fits(array, e.data)]

    def __call__(self, name: str, array: np.ndarray,
                 shape: tuple[int, ...] | None = None) -> Encoded:
        key = self._key(array, shape)
        hit = _CHOSEN.get(key)
        if hit is not None:
            _CHOSEN.move_to_end(key)
            return hit
        chosen = min(self.candidates(name, array, shape), key=lambda e: len(e.data))
        _remember(key, chosen)
        return chosen

    def _key(self, array: np.ndarray, shape: tuple[int, ...] | None) -> tuple:
        """What the chosen stream depends on: the bytes, their type and shape, the coders
        tried and any prepared stream for those bytes (never the tensor's name)."""
        d = digest(array)
        prepared = self.prepared.get(d) if self.prepared else None
        offered = (prepared["codec"], hashlib.sha256(prepared["data"].encode()).hexdigest()) \
            if prepared else None
        return (d, array.dtype.str, array.size, shape, self.entropy, offered)


# Streams already chosen in this process, by ``Policy._key``: a run measures its artifact's
# size after every stage and then writes it, and most tensors do not change in between,
# so each tensor state is entropy-coded once (bounded, least recently used out first).
_CHOSEN: OrderedDict[tuple, Encoded] = OrderedDict()
_CHOSEN_MAX_BYTES = 256 << 20
_chosen_bytes = [0]


def _remember(key: tuple, chosen: Encoded) -> None:
    _CHOSEN[key] = chosen
    _chosen_bytes[0] += len(chosen.data)
    while _chosen_bytes[0] > _CHOSEN_MAX_BYTES and _CHOSEN:
        _, old = _CHOSEN.popitem(last=False)
        _chosen_bytes[0] -= len(old.data)


def policy_from_encoding(encoding: dict[str, Any]) -> Policy | None:
    """The policy a run's JSON ``encoding`` settings describe (None: plain ``codec``)."""
    if not encoding.get("entropy") and not encoding.get("prepared"):
        return None
    return Policy(encoding.setdefault("prepared", {}), entropy=bool(encoding.get("entropy")))


def install(encoding: dict[str, Any], *, entropy: bool) -> Policy:
    """Turn on entropy coding (``entropy``) and/or prepared streams in ``encoding``.

    ``entropy`` only ever switches on, so SuRP and ``entropy_code`` can install in either
    order. ``encoding`` stays plain JSON (saved with stage states for ``--resume``);
    ``occ.artifact.model_io.codec_policy`` rebuilds the ``Policy`` from it.
    """
    encoding["entropy"] = bool(entropy or encoding.get("entropy"))
    return Policy(encoding.setdefault("prepared", {}), entropy=encoding["entropy"])


def prepare(encoding: dict[str, Any], array: np.ndarray, stream: Encoded) -> None:
    """Offer ``stream`` for any tensor that holds exactly ``array`` (flat, as stored)."""
    encoding.setdefault("prepared", {})[digest(array)] = {
        "codec": stream.codec, "data": base64.b64encode(stream.data).decode("ascii")}
