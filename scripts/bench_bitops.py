"""The DPQE headline on LeNet-5 / mnist5k: KD -> P -> Q -> EE -> EC versus fp32, 3 seeds.

Usage: python scripts/bench_bitops.py [--recipe recipes/dpqe-lenet5.yaml] [--seeds 0 1 2]

Runs the recipe against the converged baseline ``runs/bench/lenet5.pt`` (``benchlib``:
``occ train lenet5`` defaults, trained here when missing) under each seed and reports
mean ± std of the expected dense BitOps reduction and of the test accuracy change, the
paired bootstrap interval over the test images and McNemar per seed (``occ.stats``), and
the val change (what tuning may read). Targets (issue 19): >= 1000x fewer expected dense
BitOps at <= 0.5 pt mean loss. Writes scripts/results/bench_bitops.json (the same body as
``scripts/bench_targets.py --only dpqe-lenet5``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchlib import ROOT, SEEDS, run_seeds

from occ.report.data import json_safe

RESULTS = ROOT / "scripts" / "results" / "bench_bitops.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "dpqe-lenet5.yaml"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "dpqe-lenet5")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    doc = run_seeds(args.recipe, "lenet5", args.out, seeds=args.seeds, metric="bitops",
                    target_ratio=1000, max_loss=0.5)
    doc = {"command": "python scripts/bench_bitops.py " + " ".join(sys.argv[1:]), **doc}
    s = doc["summary"]
    for r in doc["runs"]:
        print(f"seed {r['seed']}: {r['bitops_reduction']:.0f}x BitOps, "
              f"{r['size_reduction_vs_fp32_state_dict']:.0f}x bytes ({r['bytes']:,} B), "
              f"test {r['test_change']:+.2f} pt, val {r['val_change']:+.2f} pt")
    print(f"BitOps {s['ratio']['mean']:.0f} ± {s['ratio']['std']:.0f}x lower, test change "
          f"{s['accuracy_change']['mean']:+.2f} ± {s['accuracy_change']['std']:.2f} pt "
          f"[{s['interval']['low']:+.2f}, {s['interval']['high']:+.2f}]; met: {doc['met']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
