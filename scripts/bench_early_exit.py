"""Benchmark: early exit on LeNet-5 and CIFAR ResNet-20 (mnist5k padded to 32×32).

For each model: train a baseline (``occ.engine.baseline.train_baseline``, the function behind
``occ train``; checkpoints are kept in ``runs/bench/`` and reused), run ``occ compress``
with one ``early_exit`` stage (heads trained on the frozen backbone, thresholds
calibrated on the 500-image val split at ``max_accuracy_drop``), load the artifact with
``occ.load`` and compare it with the baseline checkpoint: test accuracy, (expected)
BitOps, and batch-1 CPU latency on one torch thread, per test image, baseline and
early-exit model interleaved, after a warm-up (median over rounds per image, then the
mean and median over images: the mean is the expected latency). Latency is read on two
clocks: wall time and the thread's CPU time, which stays honest on a shared, loaded
machine (the load average is recorded).

    .venv/bin/python scripts/bench_early_exit.py [--archs lenet5 resnet20] [--images 300]

Prints a table and writes ``scripts/results/bench_early_exit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import occ
from occ import api
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.data import load_data
from occ.engine.baseline import train_baseline
from occ.models import build_model
from occ.progress import NullProgress
from occ.recipe import DataSpec

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_early_exit.json"
DATA = {"dataset": "mnist5k", "pad_to": 32, "batch_size": 64}
TRAIN_BATCH = 32  # baselines: more steps per epoch, as few epochs as possible on 2 cores

# Per model: baseline training and the early_exit stage. Heads pool to 4×4 then one linear
# layer (cheapest and, on these digits, more accurate than GAP or a conv head). LeNet-5's
# first conv is ~11 % of its MACs; the ResNet gets heads after layer1 (~35 %) and layer2.
SETUPS: dict[str, dict[str, Any]] = {
    "lenet5": {"kwargs": {"input_hw": 32}, "epochs": 4, "lr": 0.05,
               "stage": {"type": "early_exit", "exits": ["features.2"], "head_pool": 4,
                         "epochs": 4, "lr": 0.003, "max_accuracy_drop": 0.3}},
    "resnet20": {"kwargs": {"in_channels": 1}, "epochs": 3, "lr": 0.05,
                 "stage": {"type": "early_exit", "exits": ["layer1", "layer2"],
                           "head_pool": 4, "epochs": 4, "lr": 0.003,
                           "max_accuracy_drop": 0.3}},
}


def baseline(arch: str, setup: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The baseline checkpoint (trained here when missing) and its training record."""
    path = ROOT / "runs" / "bench" / f"{arch}_pad32.pt"
    if path.exists():  # the record saved with it (same settings: delete it to retrain)
        return path, {**load_checkpoint(str(path)).meta.get("metrics", {}), "reused": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = DataSpec(**{**DATA, "batch_size": TRAIN_BATCH})
    record = train_baseline(arch, setup["kwargs"], spec, epochs=setup["epochs"],
                            lr=setup["lr"], out=str(path), seed=0, device="cpu",
                            progress=NullProgress())
    return path, {**record, "reused": False}


def compress(arch: str, setup: dict[str, Any], ckpt: Path, work: Path):
    """``occ compress`` of a one-stage early-exit recipe; returns the report."""
    recipe = {"version": 1, "name": f"{arch}-ee", "seed": 0, "device": "cpu",
              "model": {"arch": arch, "kwargs": setup["kwargs"], "checkpoint": str(ckpt)},
              "data": DATA, "stages": [setup["stage"]], "output": str(work / arch)}
    path = work / f"{arch}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return api.compress(path)


@torch.no_grad()
def latency(models: dict[str, torch.nn.Module], images: torch.Tensor, rounds: int,
            warmup: int = 20) -> dict[str, dict[str, float]]:
    """Batch-1 latency (ms) per image: median over ``rounds``; then mean / median over images.

    Two clocks: wall (``perf_counter``) and this thread's CPU time (``thread_time``), which
    other processes on a shared machine do not inflate (one torch thread, so it is the
    compute time).
    """
    for m in models.values():
        m.eval()
        for x in images[:warmup]:
            m(x[None])
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    times = {(k, c): [[] for _ in images] for k in models for c in clocks}
    for _ in range(rounds):
        for i, x in enumerate(images):
            x = x[None]  # (1, C, H, W)
            for name, m in models.items():  # interleaved: load changes hit both alike
                w0, c0 = time.perf_counter(), time.thread_time()
                m(x)
                c1, w1 = time.thread_time(), time.perf_counter()
                times[name, "wall"][i].append(1e3 * (w1 - w0))
                times[name, "cpu"][i].append(1e3 * (c1 - c0))
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for (name, clock), per_image in times.items():
        medians = [statistics.median(t) for t in per_image]
        out[name][f"{clock}_mean_ms"] = statistics.fmean(medians)
        out[name][f"{clock}_median_ms"] = statistics.median(medians)
    return out


def run_arch(arch: str, work: Path, n_images: int, rounds: int) -> dict[str, Any]:
    """One row: baseline vs early exit for ``arch``."""
    setup = SETUPS[arch]
    t0 = time.perf_counter()
    ckpt, trained = baseline(arch, setup)
    t_train = time.perf_counter() - t0
    report = compress(arch, setup, ckpt, work)
    t_compress = time.perf_counter() - t0 - t_train
    ee = occ.load(report.artifact)
    base = build_model(arch, dict(load_checkpoint(str(ckpt)).meta["kwargs"]))
    load_into(base, load_checkpoint(str(ckpt)), where=str(ckpt), arch=arch)
    data = load_data(DataSpec(**DATA), seed=0)
    images = torch.stack([data.test[i][0] for i in range(n_images)])
    torch.set_num_threads(1)
    lat = latency({"baseline": base, "early_exit": ee}, images, rounds)
    torch.set_num_threads(os.cpu_count() or 1)
    b, f = report.baseline, report.final_metrics()
    return {
        "arch": arch, "stage": setup["stage"], "baseline_training": trained,
        "accuracy": {"baseline": b.accuracy, "early_exit": f.accuracy,
                     "change_points": f.accuracy - b.accuracy, "agreement": f.agreement},
        "bitops": {"baseline": b.bitops, "early_exit_expected": f.bitops,
                   "early_exit_all_heads": f.exits["full_bitops"] if f.exits else None,
                   "reduction": b.bitops / f.bitops},
        "exits": {k: f.exits[k] for k in ("points", "thresholds", "shares")} if f.exits else None,
        "per_exit_accuracy": [e["accuracy"] for e in f.exits["per_exit"]] if f.exits else None,
        "calibration": report.stages[-1].details.get("calibration"),
        "latency_ms": lat, "latency_images": n_images, "latency_rounds": rounds,
        "speedup": {f"{c}_{s}": lat["baseline"][f"{c}_{s}_ms"] / lat["early_exit"][f"{c}_{s}_ms"]
                    for c in ("cpu", "wall") for s in ("mean", "median")},
        "artifact_bytes": report.artifact_bytes,
        "seconds": {"baseline_training_this_run": t_train, "compress": t_compress},
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows (latency: thread CPU time, mean over images)."""
    lines = ["| model | acc. base | acc. EE | Δ pts | BitOps base | E[BitOps] EE | BitOps ÷ "
             "| exit shares | CPU ms base | CPU ms EE | speed-up CPU (wall) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, bo, lat, sp = r["accuracy"], r["bitops"], r["latency_ms"], r["speedup"]
        shares = "/".join(f"{100 * s:.0f}%" for s in (r["exits"] or {}).get("shares", [1.0]))
        lines.append(
            f"| {r['arch']} | {a['baseline']:.2f} | {a['early_exit']:.2f} | "
            f"{a['change_points']:+.2f} | {bo['baseline']:.3g} | {bo['early_exit_expected']:.3g} "
            f"| {bo['reduction']:.2f}× | {shares} | {lat['baseline']['cpu_mean_ms']:.3f} | "
            f"{lat['early_exit']['cpu_mean_ms']:.3f} | {sp['cpu_mean']:.2f}× "
            f"({sp['wall_mean']:.2f}×) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--images", type=int, default=300, help="test images timed")
    parser.add_argument("--rounds", type=int, default=5, help="timings per image and model")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench" / "early_exit"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [run_arch(a, work, args.images, args.rounds) for a in args.archs]
    doc = {"command": "python scripts/bench_early_exit.py " + " ".join(
               f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
               for k, v in vars(args).items() if k != "work"),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "torch": torch.__version__, "latency_threads": 1,
                       "load_average": os.getloadavg()},
           "data": DATA, "seconds": time.perf_counter() - started, "rows": rows,
           "table": table(rows)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(doc["table"])
    print(f"wrote {OUT} ({doc['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
