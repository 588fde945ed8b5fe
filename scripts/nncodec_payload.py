"""DeepCABAC (NNCodec, the MPEG NNR coder) payload bytes of integer tensors, for bench_coder.

Runs under any Python that has ``nncodec`` installed (it pins numpy 1.x, so it usually
lives in a separate environment): ``python scripts/nncodec_payload.py IN.npz OUT.json``.
Each array of IN.npz (integers, first axis = output channels) is coded with DeepCABAC's
``encodeLayer`` in general profile 1 with row skipping and parameter optimisation, for
every CABAC unary length in 1..15; the smallest payload is kept, decoded back and checked.
The bytes are DeepCABAC's payload alone: NNR unit headers are not counted, so the figure
is a lower bound for an NNCodec bitstream (the comparison favours NNCodec).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from nncodec.extensions import deepCABAC
from nncodec.nnc_core.hdsp.hdsp_tool import HDSP_OPTS_OFF

UNARY = range(1, 16)


def _skips(q: np.ndarray) -> np.ndarray:
    flat = q.reshape(q.shape[0], -1)
    return (~flat.any(axis=1)).astype(np.int32)


def encode(q: np.ndarray, unary: int) -> bytes:
    enc = deepCABAC.Encoder()
    enc.initCtxModels(unary, 1)
    enc.encodeLayer(q, 0, 0, 1, 0, 1, _skips(q), *HDSP_OPTS_OFF(), 0, 0)
    return bytes(enc.finish().tobytes())


def decode(data: bytes, shape: tuple[int, ...], unary: int) -> np.ndarray:
    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(data, dtype=np.uint8))
    dec.initCtxModels(unary)
    out = np.zeros(shape, dtype=np.int32)
    dec.decodeLayer(out, 0, 0, 1, 0, *HDSP_OPTS_OFF(), 0, 0)
    dec.finish()
    return out


def main() -> None:
    arrays = np.load(sys.argv[1])
    doc = {}
    for name in arrays.files:
        q = np.ascontiguousarray(arrays[name].astype(np.int32))
        sizes = {u: len(encode(q, u)) for u in UNARY}
        best = min(sizes, key=sizes.get)
        t0 = time.process_time()
        data = encode(q, best)
        t1 = time.process_time()
        back = decode(data, q.shape, best)
        t2 = time.process_time()
        doc[name] = {"bytes": len(data), "unary": best, "exact": bool(np.array_equal(back, q)),
                     "encode_s": t1 - t0, "decode_s": t2 - t1}
    with open(sys.argv[2], "w") as fh:
        json.dump(doc, fh, indent=1)


if __name__ == "__main__":
    main()
