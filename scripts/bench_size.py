"""Benchmark: artifact bytes and accuracy, LeNet-5 and LeNet-300-100 on mnist5k (issue 7).

Side by side, in one run, for each model:

- ``fp32``: the trained baseline, ``torch.save(model.state_dict())``.
- ``torch``: what PyTorch's built-ins give — global magnitude pruning
  (``torch.nn.utils.prune.global_unstructured``, L1) to the same number of nonzero weights
  as the ``occ-magnitude`` row, as many fine-tuning epochs as that row's pruning stages
  (cross-entropy, masks held by prune's hooks), then int8 dynamic quantization
  (``torch.ao.quantization.quantize_dynamic`` on the Linear layers; convs stay fp32, as
  dynamic quantization has no conv kernel), ``torch.save``, zstd-19.
- occ recipes through ``occ.api.compress``, KD from the baseline in every fine-tuning:
  structured pruning of whole neurons / channels first (``method: channel``), then
  ``occ-magnitude``: magnitude pruning (AGP schedule) + low-bit QAT + ``entropy_code``;
  ``occ-surp``: SuRP pruning + the same QAT + ``entropy_code``;
  ``occ-surp-stream``: SuRP pruning + ``entropy_code`` (weights stored as SuRP streams).

Sizes are real bytes on disk (every byte of the artifact: header, tables, scales).
Baselines are trained here (``--base-epochs``) unless ``--work``/<arch>/baseline.pt exists.
Rows needing a stage that is not registered are reported as skipped. Prints a table and
writes ``scripts/results/bench_size.json`` (``--quick``: ``runs/bench_quick/bench_size.json``,
so a smoke run leaves the published figures alone; ``--out`` overrides both).

    .venv/bin/python scripts/bench_size.py [--archs lenet5 lenet300] [--rows ...] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
import zstandard
from torch import nn

from occ import api
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.data import load_data
from occ.metrics import accuracy
from occ.models import build_model
from occ.recipe import DataSpec
from occ.techniques.registry import list_stages
from occ.training import fit, predict, seed_everything

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_size.json"
QUICK_OUT = ROOT / "runs" / "bench_quick" / "bench_size.json"
CPU = torch.device("cpu")

# Per model: baseline epochs (None: occ train's converged defaults); share of channels removed
# first and its fine-tuning;
# sparsity of what remains and its fine-tuning epochs; QAT bits and epochs.
SETTINGS: dict[str, dict[str, Any]] = {
    "lenet5": {"base_epochs": None, "channel_ratio": 0.5, "channel_epochs": 10,
               "sparsity": 0.95, "prune_epochs": 20, "weight_bits": 3, "qat_epochs": 5,
               "lr": 0.01},
    "lenet300": {"base_epochs": None, "channel_ratio": 0.67, "channel_epochs": 20,
                 "sparsity": 0.94, "prune_epochs": 20, "weight_bits": 3, "qat_epochs": 5,
                 "lr": 0.02},
}
ROWS = ("occ-magnitude", "torch", "occ-surp", "occ-surp-stream")


def baseline(arch: str, work: Path, epochs: int | None) -> Path:
    """The trained baseline checkpoint (``occ train``'s converged defaults when ``epochs``
    is None; trained here when missing)."""
    path = work / arch / "baseline.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        api.train(arch, data="mnist5k", epochs=epochs, out=str(path), seed=0)
    return path


def load_model(path: Path) -> nn.Module:
    ckpt = load_checkpoint(str(path), trust=False)
    arch = ckpt.meta["arch"]
    model = build_model(arch, dict(ckpt.meta["kwargs"]))
    load_into(model, ckpt, where=str(path), arch=arch)
    return model.eval()


def test_accuracy(model: nn.Module, data) -> float:
    out, y = predict(model, data.loader("test", 256), CPU)
    return accuracy(out, y)


def saved_bytes(model: nn.Module, *, zstd: bool = False) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return len(zstandard.ZstdCompressor(level=19).compress(raw)) if zstd else len(raw)


def torch_row(model: nn.Module, data, s: dict[str, Any], nonzero: int | None) -> dict[str, Any]:
    """Global L1 pruning + masked fine-tuning + int8 dynamic quantization + torch.save + zstd."""
    from torch.nn.utils import prune

    model = copy.deepcopy(model)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(m.weight.numel() for m, _ in layers)
    amount = 1.0 - nonzero / total if nonzero else s["sparsity"]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    fit(model, data.loader("train", 128, shuffle=True, seed=0),
        epochs=s["prune_epochs"] + s["channel_epochs"], lr=s["lr"], device=CPU,
        description="torch fine-tune")
    for module, name in layers:
        prune.remove(module, name)
    pruned_acc = test_accuracy(model, data)
    quant = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return {"bytes": saved_bytes(quant, zstd=True), "accuracy": test_accuracy(quant, data),
            "details": {"pruned_fp32_accuracy": pruned_acc, "sparsity": round(amount, 5),
                        "pruned_fp32_zstd_bytes": saved_bytes(model, zstd=True)}}


def recipe(arch: str, row: str, ckpt: Path, out: Path, s: dict[str, Any]) -> dict[str, Any]:
    """The occ recipe of ``row``."""
    method = "magnitude" if row == "occ-magnitude" else "surp"
    prune: dict[str, Any] = {"type": "prune", "method": method, "sparsity": s["sparsity"],
                             "epochs": s["prune_epochs"], "lr": s["lr"], "distill": True}
    if method == "magnitude":
        prune["schedule"] = "agp"
    else:  # iterative SuRP: three levels of a geometric schedule, epochs split between them
        prune["schedule"] = {"kind": "geometric", "steps": 3}
        prune["epochs"] = max(1, s["prune_epochs"] // 3)
    stages = [prune]
    if s.get("channel_ratio"):
        stages.insert(0, {"type": "prune", "method": "channel",
                          "channel_ratio": s["channel_ratio"], "epochs": s["channel_epochs"],
                          "lr": s["lr"], "distill": True})
    if row != "occ-surp-stream":
        stages.append({"type": "quantize", "weight_bits": s["weight_bits"], "act_bits": 8,
                       "granularity": "tensor", "mode": "qat", "epochs": s["qat_epochs"],
                       "lr": 0.005, "distill": True})
    stages.append({"type": "entropy_code"})
    return {"version": 1, "name": f"bench-size-{arch}-{row}", "seed": 0,
            "model": {"arch": arch, "checkpoint": str(ckpt)},
            "data": {"dataset": "mnist5k", "batch_size": 128},
            "stages": stages, "output": str(out)}


def occ_row(arch: str, row: str, ckpt: Path, work: Path, s: dict[str, Any]) -> dict[str, Any]:
    from occ.artifact.accounting import size_breakdown

    out = work / arch / row
    doc = recipe(arch, row, ckpt, out, s)
    path = work / arch / f"{row}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = api.compress(path)
    size = os.path.getsize(report.artifact)
    assert size == report.artifact_bytes
    b = size_breakdown(report.artifact)
    return {"bytes": size, "accuracy": report.stages[-1].metrics.accuracy,
            "details": {"recipe": doc["stages"], "kinds": b["kinds"],
                        "bits_per_nonzero": b["bits_per_nonzero"],
                        "nonzero_weights": b["nonzero_weights"],
                        "entropy_bytes": b["entropy_bytes"], "zstd_bytes": b["zstd_bytes"],
                        "codecs": sorted({r["codec"] for r in b["streams"]}),
                        "stages": [{"stage": st.label, "accuracy": st.metrics.accuracy,
                                    "seconds": round(st.seconds, 1)} for st in report.stages]}}


def run_arch(arch: str, rows: list[str], work: Path, s: dict[str, Any]) -> dict[str, Any]:
    seed_everything(0)
    data = load_data(DataSpec(dataset="mnist5k"), seed=0)
    t0 = time.perf_counter()
    ckpt = baseline(arch, work, s["base_epochs"])
    model = load_model(ckpt)
    fp32 = {"bytes": saved_bytes(model), "accuracy": test_accuracy(model, data),
            "seconds": round(time.perf_counter() - t0, 1)}
    result = {"settings": s, "rows": [{"row": "fp32", **fp32}]}
    stages = set(list_stages())
    nonzero = None  # the occ-magnitude row's, for the torch row
    for row in rows:
        t0 = time.perf_counter()
        needs = {"prune", "entropy_code"} | ({"quantize"} if row in ("occ-magnitude",
                                                                     "occ-surp") else set())
        if row.startswith("occ") and not needs <= stages:
            result["rows"].append({"row": row, "skipped": f"needs {sorted(needs - stages)}"})
            continue
        seed_everything(0)
        if row == "torch":
            got = torch_row(model, data, s, nonzero)
        else:
            got = occ_row(arch, row, ckpt, work, s)
            nonzero = nonzero or got["details"]["nonzero_weights"]
        got["seconds"] = round(time.perf_counter() - t0, 1)
        result["rows"].append({"row": row, **got})
        print(f"  {arch} {row}: {got['bytes']:,} B, {got['accuracy']:.2f} %, {got['seconds']} s",
              file=sys.stderr)
    for r in result["rows"]:
        if "bytes" in r:
            r["ratio"] = round(fp32["bytes"] / r["bytes"], 1)
            r["delta_pt"] = round(r["accuracy"] - fp32["accuracy"], 2)
    return result


def throughput(n: int = 2_000_000, repeats: int = 3) -> dict[str, Any]:
    """Encode / decode speed of the codecs in M weights per CPU-second (one core).

    CPU time (``time.process_time``), not wall time, so a busy machine does not distort
    it; the codecs are single-threaded numpy + constriction.
    """
    import numpy as np

    from occ.coding import floats, ints

    rng = np.random.default_rng(0)

    def quantized(bits: int, sparsity: float) -> np.ndarray:
        half = 2 ** (bits - 1) - 1
        x = np.round(rng.laplace(scale=half / 3, size=n)).clip(-half, half).astype("i1")
        x[rng.random(n) < sparsity] = 0
        return x

    cases = {"int4, 90% zeros (cat)": (ints, quantized(4, 0.9)),
             "int4, dense (cat)": (ints, quantized(4, 0.0)),
             "int8, dense (cat)": (ints, quantized(8, 0.0)),
             "float32, 90% zeros (fbp)": (floats, np.where(rng.random(n) < 0.9, 0.0,
                                                           rng.standard_normal(n) * 0.05)
                                          .astype("<f4")),
             "float32, dense (fbp)": (floats, (rng.standard_normal(n) * 0.05).astype("<f4"))}
    out = {}
    for name, (codec, x) in cases.items():
        enc = dec = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            data, meta = codec.encode(x)
            t1 = time.process_time()
            y = codec.decode(data, meta, x.dtype, x.size)
            t2 = time.process_time()
            enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
        assert np.array_equal(y.view("u1"), x.view("u1"))
        out[name] = {"encode_mweights_s": round(n / enc / 1e6, 1),
                     "decode_mweights_s": round(n / dec / 1e6, 1),
                     "bits_per_weight": round(8 * len(data) / n, 3)}
    return out


def table(results: dict[str, Any]) -> str:
    lines = [f"{'model':<9} {'row':<16} {'bytes':>10} {'ratio':>8} {'acc %':>7} {'Δ pt':>6}"]
    for arch, res in results.items():
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"{arch:<9} {r['row']:<16} skipped: {r['skipped']}")
                continue
            lines.append(f"{arch:<9} {r['row']:<16} {r['bytes']:>10,} {r['ratio']:>7.1f}x "
                         f"{r['accuracy']:>7.2f} {r['delta_pt']:>+6.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--work", type=Path, default=None,
                        help="default: runs/bench_size; with --quick, runs/bench_quick/size "
                             "(its 2-epoch baselines must not be reused by a full run)")
    parser.add_argument("--quick", action="store_true", help="few epochs: a smoke test")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: scripts/results/bench_size.json; with --quick, "
                             "runs/bench_quick/bench_size.json (a smoke run never replaces the "
                             "published figures)")
    args = parser.parse_args()
    if args.out is None:
        args.out = QUICK_OUT if args.quick else OUT
    if args.work is None:
        args.work = ROOT / "runs" / ("bench_quick/size" if args.quick else "bench_size")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    results = {}
    for arch in args.archs:
        s = dict(SETTINGS[arch])
        if args.quick:
            s.update(base_epochs=2, prune_epochs=1, qat_epochs=1)
        results[arch] = run_arch(arch, args.rows, args.work, s)
    speed = throughput()
    doc = {"command": "python scripts/bench_size.py " + " ".join(sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch": torch.__version__},
           "seconds": round(time.perf_counter() - started, 1), "models": results,
           "throughput": speed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(results))
    for name, t in speed.items():
        print(f"{name:<26} encode {t['encode_mweights_s']:>6.1f} M/s  decode "
              f"{t['decode_mweights_s']:>6.1f} M/s  {t['bits_per_weight']:.3f} bits/weight")
    print(f"wrote {args.out} in {doc['seconds']} s")


if __name__ == "__main__":
    main()
