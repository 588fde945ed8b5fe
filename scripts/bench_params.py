"""What rounding the int32 biases costs: ``quantize: bias_bits`` side by side, three seeds.

Usage: python scripts/bench_params.py [--only size-lenet5 dpqe-lenet5 ...]
                                      [--bits none 8 6 4] [--seeds 0 1 2]

For each issue-19 target (``bench_targets.TARGETS``: its shipped recipe, its converged
baseline, its seeds) the recipe is run once per ``bias_bits`` value in one invocation:
the recipe as shipped (``none``: exact int32 biases) and with its quantize stage's
``bias_bits`` set. The biases carry the folded BatchNorm shifts (ResNet-20) and the exit
heads' biases (DPQE recipes; heads round like the quantize stage since issue 20). Per
value: bytes of the biases (``occ inspect`` kind ``params``) and of the whole artifact,
the mean ± std over seeds of the val and test accuracy change against the baseline, the
paired bootstrap interval of the test change, and the change against ``none`` on both
splits. A value whose run a quality gate stops (exit 1 in ``occ compress``) is recorded as
``failed`` with the gate's message.

``suggested`` is chosen on the val split only: the fewest bits whose mean val change is
within ``VAL_SLACK`` pt of ``none``'s; the test figures are read once per run and only
reported. Writes ``scripts/results/bench_params.json``; variant recipes go to
``scripts/results/candidates/<target>_bias<N>.yaml``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench_targets import TARGETS
from benchlib import ROOT, SEEDS, run_seeds

from occ.artifact.accounting import size_breakdown
from occ.errors import OccError
from occ.report.data import json_safe

RECIPES = {name: ROOT / "recipes" / f"{name}.yaml" for name in TARGETS}
CANDIDATES = ROOT / "scripts" / "results" / "candidates"
OUT = ROOT / "scripts" / "results" / "bench_params.json"
VAL_SLACK = 0.1  # pt of mean val accuracy a rounding may lose and still be suggested
QUANTIZE = re.compile(r"(\{type: quantize,)")


def variant(name: str, bits: int | None) -> Path:
    """The target's shipped recipe, with ``bias_bits: bits`` in its quantize stage."""
    text = RECIPES[name].read_text()
    if bits is None:
        return RECIPES[name]
    if len(QUANTIZE.findall(text)) != 1 or "bias_bits" in text:
        raise SystemExit(f"{RECIPES[name]}: expected one inline quantize stage without "
                         "bias_bits")
    path = CANDIDATES / f"{name}_bias{bits}.yaml"
    path.write_text(f"# {RECIPES[name].name} with bias_bits: {bits} "
                    "(written by scripts/bench_params.py)\n"
                    + QUANTIZE.sub(rf"\1 bias_bits: {bits},", text))
    return path


def params_bytes(out_root: Path, seeds: list[int]) -> list[int]:
    """Bytes of kind ``params`` (biases) in each seed's artifact."""
    return [size_breakdown(out_root / f"seed{s}" / "model.occ")["kinds"].get("params", 0)
            for s in seeds]


def run_target(name: str, bits_list: list[int | None], seeds: list[int]) -> dict[str, Any]:
    """Every ``bias_bits`` value of ``bits_list`` on target ``name``, side by side."""
    t = TARGETS[name]
    rows = []
    for bits in bits_list:
        label = "none" if bits is None else str(bits)
        print(f"{name}, bias_bits {label}:", file=sys.stderr)
        out_root = ROOT / "runs" / "params" / f"{name}_bias{label}"
        try:
            doc = run_seeds(variant(name, bits), t["arch"], out_root, seeds=seeds,
                            metric=t["metric"])
        except OccError as err:  # a gate stopped a seed: that is this setting's result
            print(f"  failed: {err}", file=sys.stderr)
            rows.append({"bias_bits": bits, "recipe": str(variant(name, bits).relative_to(ROOT)),
                         "failed": str(err)})
            continue
        s = doc["summary"]
        params = params_bytes(out_root, seeds)
        rows.append({"bias_bits": bits, "recipe": doc["recipe"],
                     "params_bytes": params, "bytes": [r["bytes"] for r in doc["runs"]],
                     "val_change": s["val_change"], "test_change": s["accuracy_change"],
                     "test_interval": s["interval"], "ratio": s["ratio"],
                     "val": [r["val_change"] for r in doc["runs"]],
                     "test": [r["test_change"] for r in doc["runs"]]})
    ref = rows[0]
    if "failed" in ref:
        raise SystemExit(f"{name}: the shipped recipe itself failed: {ref['failed']}")
    for row in (r for r in rows if "failed" not in r):  # against the unrounded recipe
        row["val_vs_none"] = round(row["val_change"]["mean"] - ref["val_change"]["mean"], 3)
        row["test_vs_none"] = round(row["test_change"]["mean"] - ref["test_change"]["mean"], 3)
        row["params_vs_none"] = sum(row["params_bytes"]) / max(1, sum(ref["params_bytes"]))
    ok = [r for r in rows if r["bias_bits"] is not None and "failed" not in r
          and r["val_vs_none"] >= -VAL_SLACK]
    suggested = min(ok, key=lambda r: r["bias_bits"])["bias_bits"] if ok else None
    return {"target": name, "metric": t["metric"], "seeds": seeds,
            "baseline": doc["baseline"], "rows": rows, "suggested_on_val": suggested}


def table(doc: dict[str, Any]) -> str:
    """A markdown table of one target's rows."""
    lines = [f"{doc['target']} (suggested on val: bias_bits {doc['suggested_on_val']})",
             "| bias_bits | biases B (mean) | artifact B (mean) | val change pt | "
             "test change pt | test vs none pt |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in doc["rows"]:
        if "failed" in r:
            lines.append(f"| {r['bias_bits']} | failed: {r['failed'][:120]} | | | | |")
            continue
        mean = sum(r["params_bytes"]) / len(r["params_bytes"])
        size = sum(r["bytes"]) / len(r["bytes"])
        lines.append(f"| {r['bias_bits'] or 'none'} | {mean:,.0f} | {size:,.0f} | "
                     f"{r['val_change']['mean']:+.2f} ± {r['val_change']['std']:.2f} | "
                     f"{r['test_change']['mean']:+.2f} ± {r['test_change']['std']:.2f} | "
                     f"{r['test_vs_none']:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(TARGETS),
                        default=["size-lenet5", "size-lenet300", "dpqe-lenet5"])
    parser.add_argument("--bits", nargs="+", default=["none", "8", "6", "4"],
                        help="bias_bits values (2..16, or none); none always runs first")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    bits = [None] + sorted({int(b) for b in args.bits if b != "none"}, reverse=True)
    if any(not 2 <= b <= 16 for b in bits[1:]):
        parser.error("--bits: each value must be 2..16 or none")
    started = time.perf_counter()
    done = json.loads(OUT.read_text())["targets"] if OUT.exists() else {}
    for name in args.only:
        done[name] = run_target(name, bits, list(args.seeds))
        done[name]["command"] = (f"python scripts/bench_params.py --only {name} --bits "
                                 + " ".join(args.bits) + " --seeds "
                                 + " ".join(map(str, args.seeds)))
        print(table(done[name]), file=sys.stderr)
    doc = {"val_slack_pt": VAL_SLACK,
           "splits": {"suggested bias_bits": "val only",
                      "test": "read once per run, reported only"},
           "seconds_last_invocation": round(time.perf_counter() - started, 1),
           "targets": done}
    OUT.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
