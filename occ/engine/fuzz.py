"""Corrupted-artifact generators and the check every corrupted file must pass.

Used by ``scripts/fuzz_artifact.py`` (10,000 files) and the test suite (a sample). Besides
random damage, :func:`lie` writes re-sealed headers whose checksum is valid but whose
content lies (shapes, dtypes, lengths, offsets, duplicate names, codecs, NaN metrics, deep
JSON, huge kwargs, code references, thousands of empty streams, header bombs): see
:data:`LIES`. A
mutation either breaks the checksum (then the file must be rejected) or re-seals it, so
the reader's deeper checks (header, stream table, codecs, edits) are what stand between
the file and the model (then the file must be rejected *or* load as a valid model —
flipping a bit inside a raw float weight gives a different but valid model). Any other
exception, a hang, or an allocation far beyond the file's size is a failure.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from occ.artifact.container import FLAG_DEFLATE, _parse_header, decode_artifact, read_header
from occ.artifact.layout import MAGIC, Layout, checksum, parse_layout, seal
from occ.errors import ArtifactError
from occ.trust import TrustError


@dataclass(frozen=True)
class Mutation:
    """A corrupted file and whether its checksum was re-sealed."""

    kind: str
    data: bytes
    sealed: bool


def _seal(body: bytes, at: Layout) -> bytes:
    """``body`` with the digest of ``at``'s format version after it."""
    return body + checksum(body, at.version)


def _header(data: bytes) -> tuple[dict, Layout]:
    """(header, layout) of a well-formed artifact."""
    at = parse_layout(data)
    raw = read_header(data[at.start:at.payload_start], at.flags)
    return _parse_header(raw, at.flags), at


def _payload(data: bytes, at: Layout) -> bytes:
    return data[at.payload_start:len(data) - at.digest]


def _regions(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of the prefix, header, each stream and the digest."""
    header, at = _header(data)
    start = at.payload_start
    regions = [("prefix", 0, at.start), ("header", at.start, start)]
    for s in header["streams"]:
        regions.append((f"stream:{s['name']}", start + s["offset"],
                        start + s["offset"] + s["length"]))
    regions.append(("digest", len(data) - at.digest, len(data)))
    return regions


def _header_edits(data: bytes, rng: random.Random) -> bytes:
    """Edit one numeric field of the header (lengths, offsets, shapes, counts) and re-seal."""
    header, at = _header(data)
    payload = _payload(data, at)
    streams = header["streams"]
    s = rng.choice(streams) if streams else {}
    choice = rng.randrange(9)
    big = rng.choice([-1, 0, 1, 2**31, 2**40, 2**63, 10**30, len(data)])
    if choice == 0 and s:
        s["length"] = big
    elif choice == 1 and s:
        s["offset"] = big
    elif choice == 2 and s:
        s["shape"] = [big, rng.choice([1, 7, big])]
    elif choice == 3 and s:
        s["dtype"] = rng.choice(["float32", "int8", "bool", "complex64", "object", 3])
    elif choice == 4 and s:
        s["codec"] = rng.choice(["raw", "zip", "", None, "surp", "entropy"])
    elif choice == 5 and s:
        s["meta"] = rng.choice([None, [], {"counts": [big]}, {"kind": "x" * 1000}])
    elif choice == 6:
        header["streams"] = streams * rng.choice([0, 2, 50])
    elif choice == 7:
        header["edits"] = [{"op": rng.choice(["reshape", "exec", "quantize", "early_exit"]),
                            "module": rng.choice(["os", "occ.models.edits",
                                                  "occ.techniques.quantize"]),
                            "args": rng.choice([{}, {"modules": {"x": {}}}, {"a": big}])}]
    else:
        header["model"] = rng.choice([None, {"arch": "os:system"}, {"arch": "resnet9000"},
                                      {"arch": "lenet5", "kwargs": {"width": big}}])
    head = json.dumps(header).encode()  # written back uncompressed (flags 0)
    lie_len = rng.choice([0, big % 2**64]) if rng.random() < 0.2 else None  # header length
    return seal(0, head, payload, version=at.version, head_len=lie_len)


def reseal(data: bytes, edit: Callable[[dict[str, Any]], Any], *,
           head_len: int | None = None) -> bytes:
    """``data`` with its header changed by ``edit(header)`` and the checksum made valid again.

    The header is written back uncompressed; ``head_len`` makes the prefix lie about its
    length. This is what an attacker who knows the format does: the sha256 only proves the
    file is intact, not that what it says is true.
    """
    header, at = _header(data)
    payload = _payload(data, at)
    edited = edit(header)  # None (edited in place), a new header, or the header's JSON text
    text = edited if isinstance(edited, str) else json.dumps(
        header if edited is None else edited)
    return seal(0, text.encode(), payload, version=at.version, head_len=head_len)


def _stream(header: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    streams = [s for s in header.get("streams", []) if isinstance(s, dict)]
    return rng.choice(streams) if streams else {}


# Lies a re-sealed header can tell: each edits the header in place (``rng`` picks details).
LIES: dict[str, Callable[[dict[str, Any], random.Random], None]] = {
    "shape-transposed": lambda h, r: _stream(h, r).update(
        shape=list(reversed(_stream(h, r).get("shape", [])))),
    "shape-grown": lambda h, r: _stream(h, r).update(shape=[2**r.randrange(20, 62), 1]),
    "shape-negative": lambda h, r: _stream(h, r).update(shape=[-1, 4]),
    "shape-float": lambda h, r: _stream(h, r).update(shape=[1.5]),
    "shape-scalar": lambda h, r: _stream(h, r).update(shape=[]),
    "dtype-same-size": lambda h, r: _stream(h, r).update(
        dtype={"float32": "int32", "int32": "float32", "int8": "uint8", "uint8": "bool",
               "int64": "float64", "float64": "int64"}.get(_stream(h, r).get("dtype"), "int8")),
    "dtype-other-size": lambda h, r: _stream(h, r).update(dtype=r.choice(["float64", "float16",
                                                                          "int8", "bfloat16"])),
    "length-off-by-one": lambda h, r: _stream(h, r).update(
        length=_stream(h, r).get("length", 0) + r.choice([-1, 1])),
    "offset-overlap": lambda h, r: _stream(h, r).update(offset=_stream(h, r).get("offset", 0)),
    "duplicate-name": lambda h, r: _stream(h, r).update(name=h["streams"][0].get("name")),
    "drop-stream": lambda h, r: h["streams"].pop(r.randrange(len(h["streams"]))),
    "codec-swap": lambda h, r: _stream(h, r).update(codec=r.choice(["raw", "cat", "fbp", "trunc",
                                                                    "surp"])),
    "meta-garbage": lambda h, r: _stream(h, r).update(meta=r.choice([
        {"counts": [2**40]}, {"kind": "x" * 1000}, {"levels": [-1]}, {"n": 10**30}])),
    "nan-metrics": lambda h, r: h.update(metrics={"accuracy": float("nan"),
                                                  "bitops": float("inf")}),
    "deep-json": lambda h, r: None,  # written as text in ``lie``
    "num-classes": lambda h, r: h.setdefault("model", {}).update(num_classes=10**9),
    "input-shape": lambda h, r: h.setdefault("model", {}).update(
        input_shape=r.choice([[1, 10**6, 10**6], [], "x", [-1, 28, 28]])),
    "kwargs-huge": lambda h, r: h.setdefault("model", {}).update(
        kwargs=r.choice([{"width": 100}, {"num_classes": 300000}, {"width": 1e308}])),
    "arch-code": lambda h, r: h.setdefault("model", {}).update(arch="os:system",
                                                               kwargs={"command": "false"}),
    "edits-lie": lambda h, r: h.update(edits=[{"op": r.choice(["reshape", "quantize",
                                                               "early_exit", "fold_bn"]),
                                               "module": "occ.models.edits",
                                               "args": r.choice([{}, {"modules": 3},
                                                                 {"modules": {"fc": {}}}])}]),
    "recipe-lie": lambda h, r: h.update(recipe={"data": {"dataset": "../../etc",
                                                         "batch_size": -1}}),
    "header-list": lambda h, r: None,  # replaced by a list in ``lie``
    "zero-streams": lambda h, r: h.update(streams=[  # nothing stored, 1 MiB or more each
        {"name": f"z{i}", "dtype": "float32", "shape": [r.choice([262144, 2**20])],
         "codec": "zero", "offset": 0, "length": 0} for i in range(r.choice([100, 3000]))]),
    "header-bomb": lambda h, r: None,  # a deflated header of empty containers, in ``lie``
}


def lie(data: bytes, rng: random.Random, kind: str | None = None) -> Mutation:
    """One re-sealed artifact whose header lies (``kind`` from :data:`LIES`, else random)."""
    kind = kind or rng.choice(sorted(LIES))
    if kind == "header-list":
        return Mutation(f"lie:{kind}", reseal(data, lambda h: [h]), True)
    if kind == "deep-json":  # nesting json.dumps itself could not write
        depth = rng.choice([500, 5000, 100_000])
        deep = "[" * depth + "]" * depth
        return Mutation(f"lie:{kind}", reseal(data, lambda h: json.dumps(h)[:-1]
                                              + f',"deep":{deep}}}'), True)

    if kind == "header-bomb":  # 60 KB that inflate to 60 MB (or 3 MB) of ``[],`` / ``{},``
        n, item = rng.choice([(60 << 20) // 3, 1 << 20]), rng.choice([b"[],", b"{},"])
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = packer.compress(b'{"streams":[],"x":[' + item * n + b"[]]}") + packer.flush()
        return Mutation(f"lie:{kind}", seal(FLAG_DEFLATE, head, b""), True)

    def apply(header: dict[str, Any]) -> None:
        if header.get("streams"):
            LIES[kind](header, rng)

    if rng.random() < 0.1:  # also lie about the header length (by a little)
        head_len = parse_layout(data).head_len
        return Mutation(f"lie:{kind}+len", reseal(data, apply, head_len=head_len + 3), True)
    return Mutation(f"lie:{kind}", reseal(data, apply), True)


def mutations(data: bytes, count: int, *, seed: int = 0) -> Iterator[Mutation]:
    """``count`` corrupted variants of the artifact ``data``, deterministic for ``seed``."""
    rng = random.Random(seed)
    regions = _regions(data)
    at = parse_layout(data)
    foreign = [b"", b"PK\x03\x04" + bytes(100), b"\x89PNG\r\n\x1a\n" + bytes(64),
               MAGIC, MAGIC + bytes(100), b"{}", bytes(range(256)) * 4,
               MAGIC + b"\x02\x00" + b"\xff" * 12, MAGIC + b"\x02\x00\x00\x80\x00" + bytes(40)]
    for i in range(count):
        kind = i % 7
        if kind == 6:  # a re-sealed header that lies (valid checksum, false content)
            yield lie(data, rng)
            continue
        if kind == 0:  # truncation inside every region in turn
            name, start, end = regions[(i // 6) % len(regions)]
            cut = rng.randrange(start, max(start + 1, end))
            yield Mutation(f"truncate:{name}", data[:cut], False)
        elif kind == 1:  # bit flips, checksum left alone
            buf = bytearray(data)
            for _ in range(rng.choice([1, 1, 2, 8])):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            yield Mutation("bitflip", bytes(buf), False)
        elif kind == 2:  # bit flips, then re-sealed: the parser must cope
            buf = bytearray(data[:-at.digest])
            name, start, end = regions[rng.randrange(len(regions) - 1)]
            buf[rng.randrange(start, max(start + 1, min(end, len(buf))))] ^= 1 << rng.randrange(8)
            yield Mutation(f"bitflip-sealed:{name}", _seal(bytes(buf), at), True)
        elif kind == 3:
            yield Mutation("header-edit", _header_edits(data, rng), True)
        elif kind == 4:  # truncated and re-sealed
            cut = rng.randrange(at.start, len(data) - at.digest)
            yield Mutation("truncate-sealed", _seal(data[:cut], at), True)
        else:
            base = rng.choice(foreign)
            yield Mutation("foreign", base + bytes(rng.randrange(64)), False)


@dataclass(frozen=True)
class Outcome:
    """What reading one corrupted file did."""

    result: str  # "rejected" | "loaded" | "crash" | "slow" | "memory"
    detail: str
    seconds: float
    peak_bytes: int


def _inspect(data: bytes) -> None:
    """What ``occ inspect --json`` does with the file: table, size breakdown, strict JSON."""
    import tempfile
    from pathlib import Path

    from occ.engine.evaluate import inspect_artifact
    from occ.report.data import json_safe

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.occ"
        path.write_bytes(data)
        json.dumps(json_safe(inspect_artifact(path)), allow_nan=False)


def check(mutation: Mutation, *, time_limit: float = 2.0, rebuild: bool = True,
          inspect: bool = False) -> Outcome:
    """Read ``mutation``; classify the outcome (rejected, loaded, or a failure).

    ``inspect``: also run what ``occ inspect --json`` runs on it (it must reject or print).
    """
    from occ.engine.load import rebuild as rebuild_model
    from occ.errors import OccError

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        if inspect:  # rejected by inspect too: the reader's verdict follows
            with contextlib.suppress(OccError):
                _inspect(mutation.data)
        artifact = decode_artifact(mutation.data)
        if rebuild:
            rebuild_model(artifact)
        result, detail = "loaded", ""
    except (ArtifactError, TrustError) as err:  # a lying arch naming code: refused
        result, detail = "rejected", str(err)[:120]
    except Exception as err:  # noqa: BLE001  (anything else is the bug being looked for)
        result, detail = "crash", f"{type(err).__name__}: {str(err)[:200]}"
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if result == "loaded" and not mutation.sealed:
        result, detail = "crash", "a file with a broken checksum was accepted"
    if result != "crash" and seconds > time_limit:
        result = "slow"
    if result != "crash" and peak > 64 * 2**20 + 64 * len(mutation.data):
        result, detail = "memory", f"peak {peak} bytes for a {len(mutation.data)}-byte file"
    return Outcome(result, detail, seconds, peak)
