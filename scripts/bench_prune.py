"""Benchmark: interpolative-decomposition pruning (``method: id``) against Torch-Pruning L1.

LeNet-5 and LeNet-300-100 on mnist5k, pruned to 30 / 50 / 70 % fewer MACs, with no
fine-tuning and after one epoch of fine-tuning (SGD, lr 0.01, cosine). Baselines are
trained here with ``occ.api.train`` (15 epochs) unless ``runs/bench/<arch>.pt`` exists.
Prints a table and writes ``scripts/results/bench_prune.json``.

    .venv/bin/python scripts/bench_prune.py [--levels 0.3 0.5 0.7] [--archs lenet5 lenet300]

``--archs resnet20`` works too (28x28 inputs, global pooling) but its baseline takes about
1.5 min per epoch on 2 CPU cores, so it is not in the default run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from benchlib import baseline

from occ import metrics
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.data import load_data
from occ.engine.context import ArchRef, RunContext
from occ.errors import StageError
from occ.models import build_model
from occ.recipe import DataSpec
from occ.techniques.finetune import finetune_
from occ.techniques.prune.config import PruneConfig
from occ.techniques.prune.run import prune_
from occ.training import predict, seed_everything

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_prune.json"
METHODS = {
    "id": {"method": "id"},
    # Torch-Pruning's default: every layer by the same share (the stronger L1 baseline here).
    "l1-layer": {"method": "channel", "importance": "l1", "scope": "layer"},
    # Global ranking over all channels (importance normalised per group).
    "l1-global": {"method": "channel", "importance": "l1", "scope": "global"},
}


def evaluate(model: torch.nn.Module, data, reference: torch.Tensor | None = None) -> dict:
    """Test accuracy, agreement with the baseline, MACs and params of ``model``."""
    out, y = predict(model, data.loader("test", 256), torch.device("cpu"))
    costs = metrics.layer_costs(model, data.input_shape)
    return {"accuracy": metrics.accuracy(out, y),
            "agreement": metrics.agreement(out, reference) if reference is not None else 100.0,
            "macs": sum(c.macs for c in costs),
            "params": sum(p.numel() for p in model.parameters()), "outputs": out}


def run_arch(arch: str, levels: list[float], epochs: int) -> list[dict]:
    """Every (method, level) row for one architecture."""
    data = load_data(DataSpec(dataset="mnist5k"), seed=0)
    ckpt = load_checkpoint(baseline(arch))
    kwargs = dict(ckpt.meta.get("kwargs", {}))
    model = build_model(arch, kwargs)
    load_into(model, ckpt, where=arch, arch=arch)
    model.eval()
    base = evaluate(model, data)
    rows = [{"arch": arch, "method": "baseline", "target": 0.0, "macs_reduction": 0.0,
             "accuracy": base["accuracy"], "accuracy_ft1": base["accuracy"],
             "agreement": 100.0, "params": base["params"], "macs": base["macs"],
             "seconds": 0.0}]
    print(_line(rows[0], base["accuracy"]), flush=True)
    for level in levels:
        for label, fields in METHODS.items():
            seed_everything(0)
            ctx = RunContext(model=copy.deepcopy(model), baseline=model, data=data,
                             device=torch.device("cpu"), seed=0, out_dir=ROOT / "runs" / "bench",
                             arch=ArchRef(arch, kwargs))
            config = PruneConfig(**fields, flops_reduction=level)
            t0 = time.perf_counter()
            try:
                result = prune_(ctx, config)
            except StageError as err:  # e.g. id on a residual net: too few prunable layers
                rows.append({"arch": arch, "method": label, "target": level, "error": str(err)})
                print(f"{arch:<9} {label:<11} {100 * level:>5.0f}%  unreachable: {err}")
                continue
            seconds = time.perf_counter() - t0
            pruned = evaluate(ctx.model, data, base["outputs"])
            finetune_(ctx, replace(config, epochs=1), description="bench fine-tune")
            tuned = evaluate(ctx.model, data, base["outputs"])
            rows.append({
                "arch": arch, "method": label, "target": level,
                "macs_reduction": 1 - pruned["macs"] / base["macs"],
                "accuracy": pruned["accuracy"], "accuracy_ft1": tuned["accuracy"],
                "agreement": pruned["agreement"], "params": pruned["params"],
                "macs": pruned["macs"], "seconds": seconds,
                "channels": result.details.get("channels", {})})
            print(_line(rows[-1], base["accuracy"]), flush=True)
    return rows


def _line(r: dict, base_acc: float) -> str:
    return (f"{r['arch']:<9} {r['method']:<11} {100 * r['target']:>5.0f}% "
            f"{100 * r['macs_reduction']:>8.1f}% {r['accuracy']:>7.2f} "
            f"{r['accuracy'] - base_acc:>+7.2f} {r['agreement']:>7.1f} "
            f"{r['accuracy_ft1']:>7.2f} {r['accuracy_ft1'] - base_acc:>+7.2f} "
            f"{r['params']:>8d} {r['seconds']:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--archs", nargs="+", default=["lenet5", "lenet300"])
    parser.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    args = parser.parse_args()
    print(f"{'arch':<9} {'method':<11} {'target':>6} {'MACs -':>9} {'acc':>7} {'Δ':>7} "
          f"{'agree':>7} {'acc ft1':>7} {'Δ ft1':>7} {'params':>8} {'sec':>6}")
    started = time.perf_counter()
    rows = []
    for arch in args.archs:
        rows += run_arch(arch, args.levels, args.epochs)
    doc = {"benchmark": "bench_prune", "data": "mnist5k (4,000 train incl. 500 val / 1,000 test)",
           "finetune": "1 epoch SGD lr 0.01 cosine", "id_samples": PruneConfig().samples,
           "torch": torch.__version__, "machine": platform.machine(),
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "seconds": time.perf_counter() - started,
           "command": "python scripts/bench_prune.py", "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} in {doc['seconds']:.0f} s")


if __name__ == "__main__":
    main()
