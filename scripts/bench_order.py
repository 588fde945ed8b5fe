"""Re-measure the order: ``occ ablate`` on LeNet-5 / mnist5k with KD, P, Q and EE.

Usage: python scripts/bench_order.py [--max-orders N]

All 24 orders of distillation (width 0.5), magnitude pruning (90 %), 4-bit QAT and early
exit, each with the same small budget, prefixes shared; entropy coding last in every
order. Prints the ranking and the pairwise table, and writes
scripts/results/bench_order.json (plus runs/bench/order/ablation.{md,png}). The README
quotes the built-in order's rank and every pair where the measurement disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from benchlib import baseline

from occ import api
from occ.report.data import json_safe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results" / "bench_order.json"

RECIPE = {
    "version": 1, "name": "order-lenet5", "seed": 0,
    "model": {"arch": "lenet5", "checkpoint": None},  # the shared baseline, set in main()
    "data": {"dataset": "mnist5k", "batch_size": 64},
    "stages": [
        {"type": "distill", "student": {"width": 0.5}, "epochs": 6},
        {"type": "prune", "method": "magnitude", "sparsity": 0.9, "epochs": 2},
        {"type": "quantize", "weight_bits": 4, "act_bits": 4, "mode": "qat", "epochs": 2},
        {"type": "early_exit", "exits": ["features.3"], "max_accuracy_drop": 0.5,
         "epochs": 2},
        {"type": "entropy_code"},
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-orders", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "order"))
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    RECIPE["model"]["checkpoint"] = str(baseline("lenet5"))
    tmp = Path(tempfile.mkdtemp())
    recipe = tmp / "order.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    try:
        doc = api.ablate(recipe, out=args.out, max_orders=args.max_orders)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"built-in order {' -> '.join(doc['builtin'])}: rank {doc['builtin_rank']} of "
          f"{len(doc['ranking'])}; {doc['stage_executions']} stage runs")
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        acc = f"{m['accuracy']:.2f}" if "accuracy" in m else "-"
        bitops = f"{m['bitops']:.3g}" if "bitops" in m else "-"
        print(f"{i:>3} {' -> '.join(r['order']):<24} acc {acc:>6}  BitOps {bitops:>9}  "
              f"{r['status']}{'  (built-in)' if r['builtin'] else ''}")
    for p in doc["pairwise"]:
        share = "-" if p["a_before_b_better"] is None else f"{100 * p['a_before_b_better']:.0f}%"
        print(f"  {p['pair'][0]} before {p['pair'][1]} better in {share} of "
              f"{p['comparisons']}; built-in puts {p['builtin_first']} first; "
              f"{'agrees' if p['agrees'] else 'DISAGREES' if p['agrees'] is False else '-'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(json_safe(doc), indent=2, default=str) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
