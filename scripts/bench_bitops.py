"""The DPQE headline on LeNet-5 / mnist5k: KD -> P -> Q -> EE -> EC versus fp32.

Usage: python scripts/bench_bitops.py [--recipe recipes/dpqe-lenet5.yaml]

Uses the shared fp32 baseline ``runs/bench/lenet5.pt`` (``benchlib``: trained here when
missing), runs the recipe through ``occ.api.compress``, and reports, side by side in one
run: accuracy and its change, expected BitOps (dense and sparse) and artifact bytes with
their reduction factors. Targets (issue 8): expected BitOps >= 1000x lower at <= 0.5 pt
accuracy loss, bytes >= 200x smaller. Writes scripts/results/bench_bitops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from benchlib import baseline

from occ import api
from occ.report.data import json_safe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results" / "bench_bitops.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "dpqe-lenet5.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "dpqe-lenet5"))
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    report = api.compress(args.recipe, checkpoint=str(baseline("lenet5")), out=args.out)
    s = report.summary()
    rows = report.rows()
    print(f"{'step':<22}{'acc %':>8}{'BitOps':>12}{'sparse':>12}{'bytes':>11}")
    for r in rows:
        print(f"{r['step']:<22}{r['accuracy']:>8.2f}{r['bitops']:>12.3g}"
              f"{r['sparse_bitops']:>12.3g}{r['bytes']:>11,}")
    print(f"accuracy {s['accuracy']:.2f}% ({s['accuracy_change']:+.2f} pt), expected BitOps "
          f"{s['bitops_reduction']:.0f}x lower (sparse {s['sparse_bitops_reduction']:.0f}x), "
          f"bytes {s['size_reduction']:.0f}x smaller ({s['bytes']:,} B)")
    doc = {"recipe": args.recipe, "summary": s, "rows": rows,
           "targets": {"bitops_reduction": 1000, "max_accuracy_loss": 0.5,
                       "size_reduction": 200},
           "met": {"bitops": s["bitops_reduction"] >= 1000,
                   "accuracy": s["accuracy_change"] >= -0.5,
                   "size": (s["size_reduction"] or 0) >= 200},
           "seconds": time.perf_counter() - t0, "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
