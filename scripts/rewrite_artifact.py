"""Rewrite an artifact with this occ's writer and entropy policy; print where the bytes go.

Usage: python scripts/rewrite_artifact.py IN.occ [OUT.occ]

Decodes ``IN`` (any format version occ wrote), encodes the same header and tensors as
``entropy_code`` would (every codec tried per tensor, compact header, dictionary), checks
that every tensor reads back bit-exactly and prints, before and after, the kinds of
``occ inspect --json`` and the side information (header + tables + scales + framing).
``OUT`` (optional) receives the rewritten file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from occ.artifact import accounting
from occ.artifact.codecs import Policy
from occ.artifact.container import decode_artifact, encode_artifact
from occ.io import atomic_write_bytes
from occ.models.edits import tensor_equal


def rewrite(data: bytes) -> bytes:
    """``data`` re-encoded; exits 1 naming the tensor if any does not read back exactly."""
    old = decode_artifact(data)
    new_bytes = encode_artifact(old.header, old.tensors, Policy({}, entropy=True))
    new = decode_artifact(new_bytes)
    if new.header != old.header or list(new.tensors) != list(old.tensors):
        raise SystemExit("rewrite changed the header or the tensor list (codec bug)")
    for name, t in old.tensors.items():
        if not tensor_equal(new.tensors[name], t):
            raise SystemExit(f"tensor {name} differs after rewriting (codec bug)")
    return new_bytes


def _row(label: str, data: bytes) -> str:
    b = accounting.size_breakdown(data, zstd=False)
    kinds, side = b["kinds"], b["side_information"]
    return (f"{label:<7} " + " ".join(f"{k} {v:,}" for k, v in kinds.items())
            + f" | side information {side['bytes']:,} B of {b['total_bytes']:,}"
            f" ({100 * side['share']:.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path, nargs="?")
    args = parser.parse_args()
    data = args.source.read_bytes()
    new = rewrite(data)
    print(_row("before", data))
    print(_row("after", new))
    if args.out is not None:
        atomic_write_bytes(args.out, new)


if __name__ == "__main__":
    main()
