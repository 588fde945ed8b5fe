"""Benchmark ``type: lowrank`` on LeNet-5 and LeNet-300-100 (mnist5k, CPU).

Baselines are trained with ``occ train`` (short: ``--epochs`` below, default 4, on the
embedded mnist5k digits, so the baselines are weaker than the usual 15-epoch ones). Each
baseline is then compressed by one ``lowrank`` stage (``method: auto``) at settings fixed
before any run (never tuned on the test split): energy 0.95, energy 0.8, rank share 0.25;
each without fine-tuning and with a 2-epoch fine-tune (SGD, lr 0.01). Reported: params,
MACs and test-split accuracy before / after, per seed, and the mean over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lowrank.py --seeds 0 1 2

Writes ``scripts/results/bench_lowrank.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from occ import api

MODELS = ("lenet5", "lenet300")
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("energy0.95", {"energy": 0.95}),
    ("energy0.8", {"energy": 0.8}),
    ("rank0.25", {"rank": 0.25}),
)
FINETUNE_EPOCHS = (0, 2)
OUT = Path(__file__).parent / "results" / "bench_lowrank.json"


def _compress(tmp: Path, arch: str, ckpt: Path, seed: int, stage: dict[str, Any],
              tag: str) -> dict[str, Any]:
    recipe = {"version": 1, "name": tag, "seed": seed, "model": {"arch": arch, "checkpoint":
              str(ckpt)}, "data": {"dataset": "mnist5k", "batch_size": 128},
              "stages": [stage], "output": str(tmp / tag), "guard": {"enabled": False}}
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    report = api.compress(path)
    base, final = report.baseline, report.final_metrics()
    details = report.stages[0].details
    return {"params": [base.params, final.params], "macs": [base.macs, final.macs],
            "accuracy": [base.accuracy, final.accuracy],
            "delta_accuracy": round(final.accuracy - base.accuracy, 3),
            "params_ratio": round(final.params / base.params, 4),
            "macs_ratio": round(final.macs / base.macs, 4),
            "artifact_bytes": report.artifact_bytes,
            "layers": {n: {k: v for k, v in d.items() if k in ("method", "ranks", "factorised",
                                                               "rel_error")}
                       for n, d in details["layers"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=4, help="baseline training epochs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    start = time.time()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for arch in MODELS:
            for seed in args.seeds:
                ckpt = tmp / f"{arch}-{seed}.pt"
                api.train(arch, data="mnist5k", epochs=args.epochs, out=str(ckpt), seed=seed)
                for name, target in SETTINGS:
                    for ft in FINETUNE_EPOCHS:
                        stage = {"type": "lowrank", "method": "auto", **target, "epochs": ft,
                                 "lr": 0.01}
                        tag = f"{arch}-{seed}-{name}-ft{ft}"
                        row = _compress(tmp, arch, ckpt, seed, stage, tag)
                        runs.append({"model": arch, "seed": seed, "setting": name,
                                     "finetune_epochs": ft, **row})
                        print(f"{tag}: params x{row['params_ratio']:.3f} "
                              f"MACs x{row['macs_ratio']:.3f} acc {row['accuracy'][0]:.2f} -> "
                              f"{row['accuracy'][1]:.2f} ({row['delta_accuracy']:+.2f})",
                              flush=True)
    summary = []
    for arch in MODELS:
        for name, _ in SETTINGS:
            for ft in FINETUNE_EPOCHS:
                rows = [r for r in runs if r["model"] == arch and r["setting"] == name
                        and r["finetune_epochs"] == ft]
                deltas = [r["delta_accuracy"] for r in rows]
                summary.append({
                    "model": arch, "setting": name, "finetune_epochs": ft, "seeds": len(rows),
                    "params": rows[0]["params"], "macs": rows[0]["macs"],
                    "params_ratio_mean": round(statistics.mean(r["params_ratio"] for r in rows), 4),
                    "macs_ratio_mean": round(statistics.mean(r["macs_ratio"] for r in rows), 4),
                    "baseline_accuracy_mean": round(statistics.mean(
                        r["accuracy"][0] for r in rows), 3),
                    "delta_accuracy_mean": round(statistics.mean(deltas), 3),
                    "delta_accuracy_min": min(deltas), "delta_accuracy_max": max(deltas)})
    doc = {"command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lowrank.py --seeds "
                      + " ".join(map(str, args.seeds)) + f" --epochs {args.epochs}",
           "data": "mnist5k (embedded), accuracy on its test split",
           "baseline_training": f"occ train, {args.epochs} epochs, lr 0.05 (short)",
           "settings": {name: target for name, target in SETTINGS},
           "finetune": {"epochs": list(FINETUNE_EPOCHS), "lr": 0.01, "optimizer": "sgd"},
           "settings_chosen": "a priori, before any run; not tuned on test",
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": "cpu"},
           "seconds": round(time.time() - start, 1), "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
