"""Choose ``occ train``'s per-model defaults on the validation split only.

Usage: python scripts/tune_train.py --arch lenet300 [--grid epochs=30,60 lr=0.05,0.1 ...]

Trains every combination of the grid with ``occ.api.train`` (seed 0), scores each by the
mean val accuracy of its last five epochs (the recorded ``val_curve``; the test split is
not looked at to choose), and writes ``scripts/results/tune_train_<arch>.json`` with every
configuration's val figures and, for the chosen one only, its test accuracy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from occ import api

ROOT = Path(__file__).resolve().parents[1]


def parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for item in items:
        key, values = item.split("=", 1)
        cast = int if key in ("epochs", "batch_size", "shift") else float
        grid[key] = [cast(v) for v in values.split(",")]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--pad-to", type=int, default=None)
    parser.add_argument("--grid", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = parse_grid(args.grid)
    keys = list(grid)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for values in itertools.product(*(grid[k] for k in keys)):
            cfg = dict(zip(keys, values, strict=True))
            t0 = time.perf_counter()
            out = Path(tmp) / "m.pt"
            r = api.train(args.arch, data=args.data, out=str(out), seed=0, pad_to=args.pad_to,
                          **cfg)
            tail = r["val_last"]
            rows.append({"config": cfg, "val_last": tail,
                         "val_score": sum(tail) / len(tail),
                         "val_slope_pt_per_epoch": r["val_slope_pt_per_epoch"],
                         "test_accuracy": r["accuracy"],  # not shown, not used to choose
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{cfg}: val(last 5) {rows[-1]['val_score']:.2f}", file=sys.stderr)
    best = max(rows, key=lambda r: r["val_score"])
    for r in rows:
        if r is not best:
            r.pop("test_accuracy")
    doc = {"command": "python scripts/tune_train.py " + " ".join(sys.argv[1:]),
           "arch": args.arch, "data": args.data,
           "selection": {"chose": "config", "by": "mean val accuracy of the last 5 epochs",
                         "split": "val", "test": "read for the chosen config only"},
           "chosen": best, "rows": rows}
    path = ROOT / "scripts" / "results" / f"tune_train_{args.arch}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"chose {best['config']} (val {best['val_score']:.2f}, test "
          f"{best['test_accuracy']:.2f}) -> {path}")


if __name__ == "__main__":
    main()
