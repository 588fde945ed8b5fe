"""Benchmark: occ's coder against NNCodec (DeepCABAC), zstd-19 and the order-0 bound (issue 20).

On the same integers, side by side in one run: LeNet-5 and LeNet-300-100 (trained briefly
on mnist5k, then globally magnitude-pruned to 90-98 % and quantized per output channel,
symmetric, to 2-8 bits — what ``prune`` + ``quantize`` leave in ``weight_int``), and a
ResNet-20 twice: randomly initialised (i.i.d. weights: no context to find, a worst case)
and trained 3 epochs on mnist5k (about 5 minutes on 2 cores, once: the checkpoint is kept
under ``runs/bench_coder/``).

Per case, over every weight tensor of the model:

- ``occ_bytes``: what ``entropy_code`` writes (``occ.artifact.codecs.Policy``: the smallest
  of raw / ``cat`` / ``ctx`` / ``fbp`` per tensor), tables and side information included;
  ``occ_old_bytes``: the same without the ``ctx`` codec (the coder before issue 20);
- ``nncodec_bytes``: DeepCABAC's payload (``scripts/nncodec_payload.py``, run by the Python
  given with ``--nncodec-python``; NNCodec pins numpy 1.x, so it usually lives in its own
  environment). ``null`` and a note when it is not installed;
- ``zstd_bytes``: zstd-19 of each tensor's int8/int16 bytes; ``entropy_bytes``: the
  order-0 empirical entropy of each tensor's values (zeros included), rounded up;
- ``encode_mps`` / ``decode_mps``: M values per CPU-second (``time.process_time``, one
  thread) of the codec the policy chose, encode and decode of the chosen streams;
  ``policy_encode_mps``: of the whole policy (it encodes every candidate to pick one);
- ``bytes_without``: ``occ_bytes`` with one of ``ctx``'s contexts switched off in turn
  (``neighbour_passes``, ``signs_apart``, ``binned_tables``), or the models learned while
  coding in place of small tables (``learned_models``, in ``ctx`` and ``cat``): what each
  one is worth.
- ``occ_parts``: ``occ_bytes`` split by what the bytes carry (``positions``, ``values``,
  ``signs``, ``tables``, ``side``: tags, counts and the coder's flush), as ``occ inspect``
  splits an artifact;
- ``oracle`` (randomly initialised ResNet-20 only): the ideal code length of its integers
  under their true law (the zoo's init: Kaiming-normal fan-out convolutions, PyTorch's
  default uniform ``fc``), told the pruning threshold and every row's scale (so its
  largest magnitude) for free; ``bytes_scales_withheld``: the same without the scales (each
  row's largest magnitude integrated out under its law). What no coder of these integers
  can beat on average without knowing more than the law and the threshold.

    .venv/bin/python scripts/bench_coder.py [--nncodec-python /path/to/python] [--quick]

Writes ``scripts/results/bench_coder.json`` (``--quick``: ``runs/bench_quick/bench_coder.json``,
so a smoke run leaves the published figures alone; ``--out`` overrides both) and prints a
table. ``OCC_NNCODEC_PYTHON`` in the environment stands for ``--nncodec-python`` (so
``make bench`` can pass it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from occ import api
from occ.artifact.checkpoint import load_checkpoint
from occ.artifact.codecs import Policy
from occ.coding.categorical import entropy_bits
from occ.models import build_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_coder.json"
QUICK_OUT = ROOT / "runs" / "bench_quick" / "bench_coder.json"
WORK = ROOT / "runs" / "bench_coder"
TRAIN_EPOCHS = {"lenet5": 5, "lenet300": 5, "resnet20": 3}
# (model, sparsity, weight bits): the 92 % / 4-bit LeNet-5 is issue 20's headline case.
CASES = [("lenet5", 0.92, 4), ("lenet5", 0.90, 8), ("lenet5", 0.95, 2), ("lenet5", 0.98, 4),
         ("lenet300", 0.90, 8), ("lenet300", 0.95, 4), ("lenet300", 0.98, 2),
         ("resnet20", 0.90, 4), ("resnet20", 0.50, 8),
         ("resnet20-trained", 0.90, 4), ("resnet20-trained", 0.50, 8)]
QUICK = [CASES[0], CASES[5], CASES[7]]
NNCODEC_SCRIPT = Path(__file__).resolve().parent / "nncodec_payload.py"


def trained_weights(arch: str) -> dict[str, np.ndarray]:
    """Float conv / linear weights of a briefly trained LeNet (trained here when missing)."""
    path = WORK / f"{arch}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        api.train(arch, data="mnist5k", epochs=TRAIN_EPOCHS[arch], out=str(path), seed=0)
    state = load_checkpoint(str(path), trust=False).state_dict
    return {k: v.numpy() for k, v in state.items() if k.endswith("weight") and v.ndim >= 2}


def random_weights(arch: str) -> dict[str, np.ndarray]:
    """Conv / linear weights of a freshly initialised model (seed 0)."""
    torch.manual_seed(0)
    model = build_model(arch, {})
    return {k: v.detach().numpy() for k, v in model.state_dict().items()
            if k.endswith("weight") and v.ndim >= 2}


def quantize(weights: dict[str, np.ndarray], sparsity: float, bits: int) -> dict[str, np.ndarray]:
    """Global magnitude pruning to ``sparsity``, then symmetric per-channel ``bits``-bit ints."""
    threshold = np.quantile(np.concatenate([np.abs(w).ravel() for w in weights.values()]),
                            sparsity)
    qmax = 2 ** (bits - 1) - 1
    out = {}
    for name, w in weights.items():
        rows = np.where(np.abs(w) > threshold, w, 0.0).reshape(w.shape[0], -1)
        scale = np.abs(rows).max(axis=1, keepdims=True) / qmax
        scale[scale == 0] = 1.0
        out[name] = np.round(rows / scale).astype(np.int8).reshape(w.shape)
    return out


def occ_sizes(tensors: dict[str, np.ndarray], *, with_ctx: bool = True) -> dict[str, Any]:
    """Bytes, chosen codecs and speeds of occ's entropy_code policy on ``tensors``."""
    from occ.artifact import codecs
    policy = Policy({}, entropy=True)
    chosen, t_policy = {}, 0.0
    for name, q in tensors.items():
        flat = q.reshape(-1)
        t0 = time.process_time()
        cands = policy.candidates(name, flat, q.shape)
        t_policy += time.process_time() - t0
        cands = [c for c in cands if with_ctx or c.codec != "ctx"]
        chosen[name] = min(cands, key=lambda e: len(e.data))
    n = sum(q.size for q in tensors.values())
    t_enc = t_dec = 0.0
    for name, q in tensors.items():
        flat, enc = q.reshape(-1), chosen[name]
        codec = codecs.CODECS[enc.codec]
        t0 = time.process_time()
        data = policy.encode(enc.codec, flat, q.shape).data
        t1 = time.process_time()
        back = codec.decode(data, {}, flat.dtype, flat.size)
        t2 = time.process_time()
        if data != enc.data or not np.array_equal(back, flat):
            raise SystemExit(f"occ round trip failed on {name}")
        t_enc, t_dec = t_enc + t1 - t0, t_dec + t2 - t1
    return {"bytes": sum(len(e.data) for e in chosen.values()),
            "parts": _parts({k: (e, tensors[k]) for k, e in chosen.items()}),
            "codecs": {k: e.codec for k, e in chosen.items()},
            "encode_mps": round(n / t_enc / 1e6, 1), "decode_mps": round(n / t_dec / 1e6, 1),
            "policy_encode_mps": round(n / t_policy / 1e6, 1)}


def _parts(chosen: dict[str, tuple[Any, np.ndarray]]) -> dict[str, int]:
    """Bytes of the chosen streams by part (they add up to their total), as ``occ inspect``
    splits an artifact's."""
    from occ.artifact.accounting import stream_parts

    out: dict[str, int] = {}
    for enc, q in chosen.values():
        split = stream_parts({"codec": enc.codec, "dtype": q.dtype.name}, enc.data, q.size)
        for kind, n in split.items():
            out[kind] = out.get(kind, 0) + n
    return dict(sorted(out.items()))


def oracle(weights: dict[str, np.ndarray], sparsity: float, bits: int) -> dict[str, int]:
    """Ideal code length (bytes) of ``quantize(weights, sparsity, bits)`` for randomly
    initialised weights, under the law they were drawn from (``P(|w| <= x) = G(x)``), given
    the global threshold ``t`` and each row's scale ``s``, i.e. its largest magnitude
    ``M = qmax·s``. In a row with survivors: where its largest entry is (``log2 n`` bits,
    less ``log2`` of the entries at ``qmax``, any of which could be it) and its sign; every
    other entry, below ``M``, is zero with probability ``G(t) / G(M)``, else has magnitude
    ``j`` with the law's mass over ``[(j - 1/2)·s, (j + 1/2)·s]`` between ``t`` and ``M``,
    and a sign bit. A row without survivors: every entry zero, ``G(t)`` each. Positions
    (which entries survive: ``log2(n / k)`` of the largest's place among them) and values
    (the rest: magnitudes, signs, which survivor is the largest) are counted apart.

    ``bytes_scales_withheld``: the same law and threshold, but no row's scale: each row's
    code length under the mixture over its largest magnitude ``M`` (``G(M)^n``'s law,
    ``n`` the row's length, on a grid of ``SCALE_GRID`` cells above ``t``), i.e.
    ``-log2 Σ P(M) P(row | M)``: what the integers cost when all a coder is handed is the
    law and ``t``."""
    from scipy.special import ndtr

    threshold = np.quantile(np.concatenate([np.abs(w).ravel() for w in weights.values()]),
                            sparsity)
    qmax = 2 ** (bits - 1) - 1
    ints = quantize(weights, sparsity, bits)
    position_bits = value_bits = withheld_bits = 0.0
    for name, w in weights.items():
        rows = w.reshape(w.shape[0], -1)
        q = np.abs(ints[name].reshape(rows.shape).astype(np.int64))
        if w.ndim == 4:  # occ.models.zoo: kaiming_normal_(mode="fan_out", relu)
            sd = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))
            within = lambda x, sd=sd: 2 * ndtr(x / sd) - 1  # noqa: E731
        else:  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            b = 1 / math.sqrt(w.shape[1])
            within = lambda x, b=b: np.clip(x / b, 0.0, 1.0)  # noqa: E731
        n = rows.shape[1]
        grid, prior = _largest_grid(within, threshold, n)
        for r in range(rows.shape[0]):
            if not q[r].any():
                empty = -n * math.log2(within(threshold))
                position_bits += empty
                withheld_bits += empty
                continue
            pos, val = _row_bits(q[r], np.array([float(np.abs(rows[r]).max())]), within,
                                 threshold, qmax)
            position_bits, value_bits = position_bits + pos[0], value_bits + val[0]
            pos, val = _row_bits(q[r], grid, within, threshold, qmax)
            withheld_bits -= _log2_sum_exp2(np.log2(prior) - pos - val)
    return {"bytes": math.ceil((position_bits + value_bits) / 8),
            "positions_bytes": round(position_bits / 8), "values_bytes": round(value_bits / 8),
            "bytes_scales_withheld": math.ceil(withheld_bits / 8)}


SCALE_GRID = 512  # cells of a row's largest magnitude in ``bytes_scales_withheld``


def _largest_grid(within, threshold: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell midpoints, their probabilities) of the largest of ``n`` magnitudes drawn from
    ``within`` (a CDF), above ``threshold``, out to where ``within^n`` is 1 - 1e-12."""
    hi = threshold * 1.001
    while within(hi) ** n < 1 - 1e-12:
        hi *= 1.01
    edges = np.linspace(threshold, hi, SCALE_GRID + 1)
    prior = np.diff(within(edges) ** n)
    keep = prior > 0
    return ((edges[1:] + edges[:-1]) / 2)[keep], prior[keep]


def _row_bits(q: np.ndarray, big: np.ndarray, within, threshold: float,
              qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(position bits, value bits) of one row of magnitudes ``q`` (with survivors) given
    its largest magnitude, for each of ``big``'s values (see ``oracle``)."""
    n, k = len(q), int(np.count_nonzero(q))
    s = big / qmax
    whole, zero = within(big), float(within(threshold))
    live = whole - zero
    with np.errstate(divide="ignore"):
        pos = math.log2(n / k) - (n - k) * np.log2(zero / whole) \
            - (k - 1) * np.log2(live / whole)
        j = np.arange(1, qmax + 1)
        lo = np.maximum((j - 0.5) * s[:, None], threshold)
        hi = np.minimum((j + 0.5) * s[:, None], big[:, None])
        mass = np.where(hi > lo, within(hi) - within(lo), 0.0) / live[:, None]
        others = np.bincount(np.sort(q[q > 0])[:-1], minlength=qmax + 1)[1:]  # less the largest
        logs = np.where(others > 0, np.log2(np.where(mass > 0, mass, 1.0)), 0.0)
        logs = np.where((others > 0) & (mass <= 0), -np.inf, logs)
        val = math.log2(k / int((q == qmax).sum())) + 1.0 - logs @ others + (k - 1)
    return pos, val


def _log2_sum_exp2(x: np.ndarray) -> float:
    """log2(Σ 2^x), stable; -inf terms (impossible cells) add nothing."""
    top = float(np.max(x))
    return top + math.log2(float(np.exp2(x - top).sum()))


def best_of(fn, repeats: int) -> dict[str, Any]:
    """``fn()`` ``repeats`` times; sizes from the first, the fastest speeds."""
    runs = [fn() for _ in range(repeats)]
    out = dict(runs[0])
    for key in ("encode_mps", "decode_mps", "policy_encode_mps"):
        out[key] = max(r[key] for r in runs)
    return out


def nncodec_sizes(tensors: dict[str, np.ndarray], python: str | None) -> dict[str, Any] | None:
    """DeepCABAC payload bytes and speed, or None when NNCodec is not available."""
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "q.npz", Path(tmp) / "nnc.json"
        np.savez(npz, **tensors)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([python, str(NNCODEC_SCRIPT), str(npz), str(out)], check=True, env=env)
        doc = json.loads(out.read_text())
    if not all(d["exact"] for d in doc.values()):
        raise SystemExit("NNCodec did not decode its own stream exactly")
    n = sum(q.size for q in tensors.values())
    enc, dec = sum(d["encode_s"] for d in doc.values()), sum(d["decode_s"] for d in doc.values())
    return {"bytes": sum(d["bytes"] for d in doc.values()),
            "encode_mps": round(n / enc / 1e6, 1), "decode_mps": round(n / dec / 1e6, 1)}


def find_nncodec(given: str | None) -> str | None:
    """The Python to run NNCodec with: ``given``, else this one if it imports nncodec."""
    if given:
        return given
    try:
        import nncodec  # noqa: F401
    except ImportError:
        return None
    return sys.executable


@contextlib.contextmanager
def _without(feature: str) -> Iterator[None]:
    """``ctx`` with one of its issue-20 contexts switched off (for the ablation): the
    neighbour passes, signs coded apart, binned value tables, or learned models (``ctx``
    and ``cat``)."""
    from occ.coding import adaptive, ints

    saved = adaptive.TRY_OPTIONS, adaptive.WIDE, adaptive.signs.coherent, adaptive.LEARN, \
        ints.LEARN
    if feature == "learned_models":
        adaptive.LEARN = ints.LEARN = False
    elif feature == "neighbour_passes":
        adaptive.TRY_OPTIONS = 0
    elif feature == "signs_apart":
        adaptive.signs.coherent = lambda *_a, **_k: False
    elif feature == "binned_tables":
        adaptive.WIDE = 1 << 30
    try:
        yield
    finally:
        adaptive.TRY_OPTIONS, adaptive.WIDE, adaptive.signs.coherent, adaptive.LEARN, \
            ints.LEARN = saved


ABLATED = ("neighbour_passes", "signs_apart", "binned_tables", "learned_models")


def ablation(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """occ's bytes with each context switched off in turn (sizes only)."""
    out = {}
    for feature in ABLATED:
        with _without(feature):
            out[feature] = occ_sizes(tensors)["bytes"]
    return out


def run_case(arch: str, sparsity: float, bits: int, nncodec: str | None,
             repeats: int) -> dict[str, Any]:
    weights = random_weights(arch) if arch == "resnet20" else \
        trained_weights(arch.removesuffix("-trained"))
    tensors = quantize(weights, sparsity, bits)
    n = sum(q.size for q in tensors.values())
    packer = zstandard.ZstdCompressor(level=19)
    occ = best_of(lambda: occ_sizes(tensors), repeats)
    old = occ_sizes(tensors, with_ctx=False)
    nnc = nncodec_sizes(tensors, nncodec)
    entropy = sum(entropy_bits(np.unique(q, return_counts=True)[1]) for q in tensors.values())
    label = {"resnet20": "resnet20 (random)", "resnet20-trained": "resnet20 (trained)"}.get(
        arch, arch)
    case = {"name": f"{label} {round(sparsity * 100)}% {bits}-bit", "n_values": int(n),
            "nonzero": int(sum(np.count_nonzero(q) for q in tensors.values())),
            "occ_bytes": occ["bytes"], "occ_old_bytes": old["bytes"],
            "nncodec_bytes": nnc["bytes"] if nnc else None,
            "zstd_bytes": sum(len(packer.compress(q.tobytes())) for q in tensors.values()),
            "entropy_bytes": math.ceil(entropy / 8),
            "encode_mps": occ["encode_mps"], "decode_mps": occ["decode_mps"],
            "policy_encode_mps": occ["policy_encode_mps"], "codecs": occ["codecs"],
            "occ_parts": occ["parts"], "bytes_without": ablation(tensors)}
    if arch == "resnet20":
        case["oracle"] = oracle(weights, sparsity, bits)
    if nnc:
        case["vs_nncodec_pct"] = round(100 * (occ["bytes"] / nnc["bytes"] - 1), 2)
        case["nncodec_encode_mps"], case["nncodec_decode_mps"] = nnc["encode_mps"], \
            nnc["decode_mps"]
    return case


def table(cases: list[dict[str, Any]]) -> str:
    head = (f"{'case':<22} {'values':>8} {'occ':>7} {'old occ':>8} {'NNCodec':>8} {'vs NNC':>7}"
            f" {'zstd-19':>8} {'H0':>7} {'enc M/s':>8} {'dec M/s':>8}")
    lines = [head]
    for c in cases:
        nnc = f"{c['nncodec_bytes']:>8,}" if c["nncodec_bytes"] is not None else f"{'-':>8}"
        vs = f"{c['vs_nncodec_pct']:>+6.1f}%" if "vs_nncodec_pct" in c else f"{'-':>7}"
        lines.append(f"{c['name']:<22} {c['n_values']:>8,} {c['occ_bytes']:>7,} "
                     f"{c['occ_old_bytes']:>8,} {nnc} {vs} {c['zstd_bytes']:>8,} "
                     f"{c['entropy_bytes']:>7,} {c['encode_mps']:>8.1f} {c['decode_mps']:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nncodec-python", default=os.environ.get("OCC_NNCODEC_PYTHON"),
                        help="a Python with nncodec installed (default: this one, if it has it)")
    parser.add_argument("--quick", action="store_true", help="three cases, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: scripts/results/bench_coder.json; with --quick, "
                             "runs/bench_quick/bench_coder.json (a smoke run never replaces the "
                             "published figures)")
    args = parser.parse_args()
    if args.out is None:
        args.out = QUICK_OUT if args.quick else OUT
    torch.set_num_threads(1)
    nncodec = find_nncodec(args.nncodec_python)
    started = time.perf_counter()
    cases = [run_case(*c, nncodec, 1 if args.quick else args.repeats)
             for c in (QUICK if args.quick else CASES)]
    doc = {"command": "python scripts/bench_coder.py " + " ".join(sys.argv[1:]),
           "integers": ("LeNet-5 / LeNet-300-100: trained 5 epochs on mnist5k (occ train, seed "
                        "0); ResNet-20: random init (seed 0), and trained 3 epochs on mnist5k "
                        "(seed 0). Then global magnitude pruning to "
                        "the case's sparsity and symmetric per-output-channel quantization "
                        "(scale = row max / (2^(b-1) - 1)), weight tensors only. Training "
                        "repeats on one machine and thread count, not across them: "
                        "retrained elsewhere, the trained cases' integers (so their bytes) "
                        "move a little."),
           "nncodec": ("DeepCABAC payload (nncodec 2.1.3 encodeLayer, profile 1, row skipping, "
                       "best unary length); NNR unit headers not counted") if nncodec else
                      "absent: nncodec is not installed (pass --nncodec-python)",
           "speed": "M values per CPU-second, one thread, best of repeats",
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "numpy": np.__version__},
           "seconds": round(time.perf_counter() - started, 1), "cases": cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(cases))
    if not nncodec:
        print("NNCodec absent: pass --nncodec-python (a Python with `pip install nncodec`)")
    print(f"wrote {args.out} in {doc['seconds']} s")


if __name__ == "__main__":
    main()
