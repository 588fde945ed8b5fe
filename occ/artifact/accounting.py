"""Where an artifact's bytes go, beside what order-0 entropy and zstd-19 would give.

``size_breakdown(path_or_bytes)`` re-reads an artifact and attributes every byte:

- per stream: its codec, bytes split into parts (``values``, ``positions``, ``tables``,
  ``signs``, ``side``: frame, counts, coder flush), the order-0 empirical entropy of its
  values (the bound an i.i.d. coder of those integers / bit patterns cannot beat), and
  zstd-19 of the same values stored plainly;
- per kind, over the file: ``weights`` (the values of tensors with two or more dimensions:
  conv / linear weights, quantized or not, SuRP signs included), ``positions`` (where
  their nonzeros are), ``params`` (the other model parameters: biases, BatchNorm
  statistics and affine terms, any other 0-d / 1-d tensor), ``scales`` (quantizer state:
  every tensor whose name ends in ``scale`` or ``zero_point``, e.g. ``w_scale``,
  ``act_zero_point``), ``tables`` (the streams' model tables), ``side`` (stream framing:
  frame, counts, coder flush) and ``header`` (prefix, header, checksum). The kinds add up
  to the file size exactly.

Side information is everything that is not a model parameter: ``header + tables + scales
+ side``. Weights, positions and params are the model; the rest only says how to read it.

Coded parts share one ANS word stream per tensor; its bytes are split between parts in
proportion to each part's information under its stored model (``frame.Parts``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zstandard

from occ.artifact.container import DTYPES, decode_artifact, parse_layout, to_numpy
from occ.coding.categorical import entropy_bits
from occ.coding.frame import Parts, frame_parts

KINDS = ("weights", "positions", "params", "scales", "tables", "side", "header")
SIDE_KINDS = ("header", "tables", "scales", "side")  # side information: not the model
SCALE_SUFFIXES = ("scale", "zero_point")  # quantizer state (w_scale, act_zero_point ...)
ZSTD_LEVEL = 19
ZSTD_MAX_BYTES = 64 << 20  # zstd-19 runs at a few MB/s: beyond this, no comparison


def _order0_bits(array: np.ndarray) -> float:
    """n·H0 of the values' bit patterns (integers for integer tensors)."""
    if array.size == 0:
        return 0.0
    words = array.view(f"<u{array.dtype.itemsize}" if array.dtype.itemsize > 1 else "u1")
    _, counts = np.unique(words, return_counts=True)
    return entropy_bits(counts)


def stream_parts(stream: dict[str, Any], data: bytes, count: int) -> dict[str, int]:
    """Bytes of one coded stream (``{"codec", "dtype", ["meta"]}``) by what they carry
    (``positions``, ``values``, ``signs``, ``tables``, ``side``), adding up to ``len(data)``;
    all ``values`` for a codec that cannot attribute its bytes."""
    from occ.artifact.codecs import PART_DECODERS

    decoder = PART_DECODERS.get(stream["codec"])
    if decoder is None:
        return {"values": len(data)}
    parts = Parts()
    decoder(data, stream.get("meta", {}), DTYPES[stream["dtype"]][1], count, parts=parts)
    return parts.split(len(data), frame_parts(data)[2])


def role(name: str, shape: list[int]) -> str:
    """What a tensor is: ``scales`` (quantizer state, by name), ``weights`` (two or more
    dimensions) or ``params`` (biases, BatchNorm statistics, other 0-d / 1-d tensors)."""
    if name.rpartition(".")[2].endswith(SCALE_SUFFIXES):
        return "scales"
    return "weights" if len(shape) >= 2 else "params"


def _kind(part: str, tensor_role: str) -> str:
    if part in ("values", "signs"):
        return tensor_role
    if part == "positions":
        return "positions" if tensor_role == "weights" else tensor_role
    return part if part in KINDS else "side"


def size_breakdown(source: str | os.PathLike[str] | bytes, *,
                   zstd: bool = True) -> dict[str, Any]:
    """Bytes per stream and per kind, bits per weight, entropy and zstd-19 comparisons.

    Args:
        source: an artifact's path, or its bytes.
        zstd: compare with zstd-19 (slow on big models: skipped, as ``None``, when the
            tensors hold more than ``ZSTD_MAX_BYTES``).

    Returns:
        ``{"total_bytes", "header_bytes", "kinds": {kind: bytes}, "side_information":
        {"bytes", "share", "kinds"} (header + tables + scales + side), "weights", "nonzero_weights",
        "bits_per_weight", "bits_per_nonzero", "entropy_bytes", "zstd_bytes", "raw_bytes",
        "streams": [{"name", "role", "shape", "dtype", "codec", "bytes", "parts", "numel",
        "nonzero", "entropy_bytes", "zstd_bytes", "raw_bytes"}]}``. ``kinds`` adds up to
        ``total_bytes``; ``entropy_bytes`` and ``zstd_bytes`` (the sum of the streams'
        own) cover the streams only.

    Raises:
        ArtifactError: the file is not a valid artifact.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as fh:
            data = fh.read()
    art = decode_artifact(data)
    at = parse_layout(data)  # the digest is counted in header_bytes
    payload = memoryview(data)[at.payload_start:len(data) - at.digest]
    kinds = dict.fromkeys(KINDS, 0)
    kinds["header"] = art.header_bytes
    rows = []
    raw_total = sum(t.numel() * t.element_size() for t in art.tensors.values())
    packer = zstandard.ZstdCompressor(level=ZSTD_LEVEL) if zstd and raw_total <= \
        ZSTD_MAX_BYTES else None
    weights = nonzero = 0
    for s in art.streams:
        chunk = bytes(payload[s["offset"]:s["offset"] + s["length"]])
        flat = to_numpy(art.tensors[s["name"]])[1]
        tensor_role = role(s["name"], s["shape"])
        is_weight = tensor_role == "weights"
        parts = stream_parts(s, chunk, flat.size)
        for part, nbytes in parts.items():
            kinds[_kind(part, tensor_role)] += nbytes
        nz = int(np.count_nonzero(flat.view(f"u{flat.dtype.itemsize}") if flat.size else flat))
        if is_weight:
            weights += flat.size
            nonzero += nz
        raw = flat.tobytes()
        rows.append({"name": s["name"], "role": tensor_role, "shape": s["shape"],
                     "dtype": s["dtype"],
                     "codec": s["codec"], "bytes": s["length"], "parts": parts,
                     "numel": int(flat.size), "nonzero": nz,
                     "entropy_bytes": round(_order0_bits(flat) / 8, 1),
                     "zstd_bytes": len(packer.compress(raw)) if packer else None,
                     "raw_bytes": len(raw)})
    total = len(data)
    side = sum(kinds[k] for k in SIDE_KINDS)
    return {
        "total_bytes": total, "header_bytes": art.header_bytes,
        "kinds": dict(kinds),
        "side_information": {"bytes": side, "share": side / total if total else 0.0,
                             "kinds": list(SIDE_KINDS)},
        "weights": weights, "nonzero_weights": nonzero,
        "bits_per_weight": 8 * total / weights if weights else 0.0,
        "bits_per_nonzero": 8 * total / nonzero if nonzero else 0.0,
        "entropy_bytes": round(sum(r["entropy_bytes"] for r in rows), 1),
        "zstd_bytes": sum(r["zstd_bytes"] for r in rows) if packer else None,
        "raw_bytes": sum(r["raw_bytes"] for r in rows),
        "streams": rows,
    }

