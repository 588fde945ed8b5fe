"""Benchmark: measured latency of compressed LeNet-5s in torch (``occ eval --latency``) and in
onnxruntime (the file ``occ export`` writes), next to accuracy and BitOps.

Variants of the mnist5k LeNet-5 baseline (``runs/bench/lenet5.pt``, trained here with
``occ.api.train`` when missing): the baseline itself, channel pruning (slim shapes: fewer
real MACs), 90 % magnitude pruning (zeros in dense kernels: no speed-up), 8-bit PTQ
(fake-quant in float: a simulation, slower than float in torch) and an early exit.
Each is timed with ``occ.latency.measure_latency`` (batch 1 and 64, 10 warm-up + N timed
runs, test inputs) and its ONNX export with the same protocol in onnxruntime (CPU
provider, as many intra-op threads as torch uses). Prints a table and writes
``scripts/results/bench_latency.json``.

    .venv/bin/python scripts/bench_latency.py [--runs 100] [--out-dir runs/bench/latency]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from benchlib import baseline

import occ
from occ import api
from occ.data import load_data
from occ.deploy.onnx import export_ready, to_onnx
from occ.latency import measure_latency
from occ.recipe import DataSpec

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_latency.json"
DATA = {"dataset": "mnist5k", "batch_size": 128}
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "channel-50%": [{"type": "prune", "method": "channel", "channel_ratio": 0.5, "epochs": 1}],
    "magnitude-90%": [{"type": "prune", "method": "magnitude", "sparsity": 0.9, "epochs": 1}],
    "ptq-w8a8": [{"type": "quantize", "weight_bits": 8, "act_bits": 8, "mode": "ptq"}],
    "early-exit": [{"type": "early_exit", "auto": 1, "epochs": 1}],
}


def compress(name: str, stages: list[dict[str, Any]], ckpt: Path, out_dir: Path) -> Path:
    work = out_dir / name
    work.mkdir(parents=True, exist_ok=True)
    recipe = {"version": 1, "name": name, "seed": 0,
              "model": {"arch": "lenet5", "checkpoint": str(ckpt)}, "data": DATA,
              "stages": stages, "output": str(work / "out")}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Path(api.compress(work / "recipe.yaml").artifact)


def ort_latency(path: Path, sample: torch.Tensor, batches: tuple[int, ...], warmup: int,
                runs: int) -> dict[int, float]:
    """Median onnxruntime latency (ms) per batch size, same protocol as measure_latency."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = {}
    for b in batches:
        x = sample.repeat(-(-b // len(sample)), 1, 1, 1)[:b].numpy()
        for _ in range(warmup):
            session.run(None, {"input": x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            session.run(None, {"input": x})
            times.append((time.perf_counter_ns() - t0) / 1e6)
        out[b] = float(np.median(times))
    return out


def bench(name: str, model: torch.nn.Module, metrics: dict[str, Any], sample: torch.Tensor,
          onnx_path: Path, runs: int) -> dict[str, Any]:
    ready, outputs, _ = export_ready(model)
    onnx_path.write_bytes(to_onnx(ready, sample[:2], outputs, opset=17, dynamic_batch=True))
    lat = measure_latency(model, tuple(sample.shape[1:]), "cpu", runs=runs, sample=sample)
    ort_ms = ort_latency(onnx_path, sample, (1, 64), 10, runs)
    torch_ms = {b["batch_size"]: b["median_ms"] for b in lat["batches"]}
    p90 = {b["batch_size"]: b["p90_ms"] for b in lat["batches"]}
    return {"variant": name, "accuracy": metrics["accuracy"], "bitops": metrics["bitops"],
            "torch_b1_ms": torch_ms[1], "torch_b1_p90_ms": p90[1], "torch_b64_ms": torch_ms[64],
            "torch_b64_p90_ms": p90[64], "ort_b1_ms": ort_ms[1], "ort_b64_ms": ort_ms[64],
            "notes": lat["notes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "bench" / "latency")
    args = parser.parse_args()
    ckpt = baseline("lenet5")
    data = load_data(DataSpec(dataset="mnist5k"))
    sample = next(iter(data.loader("test", 64)))[0]
    rows = []
    base = api.evaluate(ckpt)
    from occ.artifact.checkpoint import load_checkpoint, load_into
    from occ.models import build_model

    ck = load_checkpoint(str(ckpt), trust=False)
    model = build_model("lenet5", dict(ck.meta.get("kwargs", {})))
    load_into(model, ck, where=str(ckpt), arch="lenet5")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows.append(bench("baseline", model.eval(), base, sample, args.out_dir / "baseline.onnx",
                      args.runs))
    for name, stages in VARIANTS.items():
        artifact = compress(name, stages, ckpt, args.out_dir)
        rows.append(bench(name, occ.load(artifact), api.evaluate(artifact), sample,
                          args.out_dir / f"{name}.onnx", args.runs))
    header = (f"{'variant':<14} {'acc %':>6} {'BitOps':>9} {'torch b1':>9} {'torch b64':>10} "
              f"{'ORT b1':>8} {'ORT b64':>8}   (median ms)")
    print(header)
    for r in rows:
        print(f"{r['variant']:<14} {r['accuracy']:6.2f} {r['bitops']:9.3g} "
              f"{r['torch_b1_ms']:9.3f} {r['torch_b64_ms']:10.3f} {r['ort_b1_ms']:8.3f} "
              f"{r['ort_b64_ms']:8.3f}")
    doc = {"machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "runs": args.runs,
           "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
