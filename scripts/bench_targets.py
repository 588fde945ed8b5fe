"""The raised targets of issue 19, three seeds each, against converged baselines.

Usage: python scripts/bench_targets.py [--only size-lenet5 dpqe-lenet5 ...]
                                        [--recipe PATH] [--seeds 0 1 2] [--tag T]

Each target is a shipped recipe run by ``benchlib.run_seeds`` with ``--checkpoint`` at
the ``occ train``-default baseline (``runs/bench/<arch>.pt``, trained when missing) and
``--seed`` 0, 1, 2. Reports mean ± std over the seeds of the reduction factor and of the
test accuracy change, the paired bootstrap interval over the test images (seeds pooled)
and McNemar per seed against the baseline's predictions, and the val-split change that
any tuning of the recipe may look at. Writes ``scripts/results/target_<name>[_<tag>].json``
(``--recipe`` with ``--tag``: a candidate recipe for that target, kept as a Pareto point).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import ROOT, SEEDS, run_seeds

from occ.report.data import json_safe

TARGETS = {
    "size-lenet5": {"arch": "lenet5", "metric": "bytes", "ratio": 800, "max_loss": 0.5},
    "size-lenet300": {"arch": "lenet300", "metric": "bytes", "ratio": 300, "max_loss": 0.5},
    "dpqe-lenet5": {"arch": "lenet5", "metric": "bitops", "ratio": 1000, "max_loss": 0.5},
    "dpqe-resnet20": {"arch": "resnet20", "metric": "bitops", "ratio": 500, "max_loss": 1.0},
}


def run(name: str, recipe: Path, seeds: list[int], tag: str | None) -> Path:
    t = TARGETS[name]
    t0 = time.perf_counter()
    out_root = ROOT / "runs" / "targets" / (name + (f"_{tag}" if tag else ""))
    doc = run_seeds(recipe, t["arch"], out_root, seeds=seeds, metric=t["metric"],
                    target_ratio=t["ratio"], max_loss=t["max_loss"])
    cmd = f"python scripts/bench_targets.py --only {name}"
    if tag:
        cmd += f" --recipe {doc['recipe']} --tag {tag}"
    if list(seeds) != list(SEEDS):
        cmd += " --seeds " + " ".join(map(str, seeds))
    doc = {"target": name, "command": cmd, **doc,
           "seconds": round(time.perf_counter() - t0, 1)}
    path = ROOT / "scripts" / "results" / f"target_{name}{'_' + tag if tag else ''}.json"
    path.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    s = doc["summary"]
    print(f"{name}: {s['ratio']['mean']:.0f} ± {s['ratio']['std']:.0f}x {t['metric']}, "
          f"test change {s['accuracy_change']['mean']:+.2f} ± {s['accuracy_change']['std']:.2f}"
          f" pt, interval [{s['interval']['low']:+.2f}, {s['interval']['high']:+.2f}], "
          f"val change {s['val_change']['mean']:+.2f} pt; met: {doc['met']} -> {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--recipe", type=Path, default=None,
                        help="a candidate recipe (one target) instead of the shipped one")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--tag", default=None, help="suffix of the result file")
    args = parser.parse_args()
    if args.recipe is not None and len(args.only) != 1:
        parser.error("--recipe needs exactly one --only target")
    for name in args.only:
        recipe = args.recipe or ROOT / "recipes" / f"{name}.yaml"
        run(name, recipe, args.seeds, args.tag)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
