"""``occ ablate --seeds 0,1,2``: the same orders under several seeds, ranked by their means.

Each seed is one full ablation (``occ.engine.ablate.ablate``, its own folder
``seed<N>/``, every stage seeded by it). Orders are then ranked by the same rule on the
means over seeds: BitOps among the orders whose mean validation quality is within the
tolerance of the best mean, then the rest. Beside each order: the test accuracy's mean ±
std over seeds, the paired bootstrap interval of its change against the baseline and of
its difference to the most accurate order (``occ.stats``), and whether it is statistically
tied with that order (the interval contains 0). An order that failed under any seed is
reported as failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from occ import stats
from occ.engine.ablate import OrderResult, rank
from occ.engine.ablate_views import cell, ranked_on_val
from occ.io import atomic_write_files

_MEANED = ("accuracy", "agreement", "mae", "rmse", "val_accuracy", "val_mae", "params",
           "nonzero_params", "macs", "bitops", "sparse_bitops", "bytes")


def _mean_result(per_seed: list[OrderResult]) -> OrderResult:
    first = per_seed[0]
    failed = [r for r in per_seed if r.status != "ok"]
    if failed:
        return OrderResult(order=first.order, status=failed[0].status, error=failed[0].error,
                           builtin=first.builtin)
    metrics: dict[str, Any] = {}
    for key in _MEANED:
        values = [r.metrics.get(key) for r in per_seed]
        if all(v is not None for v in values):
            metrics[key] = float(np.mean(values))
            metrics[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return OrderResult(order=first.order, metrics=metrics, builtin=first.builtin)


def combine(docs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One ranking over seeds from the per-seed ablation documents (same orders each)."""
    by_order: dict[tuple[str, ...], list[OrderResult]] = {}
    for doc in docs:
        for r in doc["_results"]:
            by_order.setdefault(tuple(r.order), []).append(r)
    if any(len(v) != len(docs) for v in by_order.values()):
        raise ValueError("the seeds ran different orders")
    tolerance = docs[0]["tolerance"]
    ranked = rank([_mean_result(v) for v in by_order.values()], tolerance)
    stat_rows = _statistics(docs, by_order)
    ranking = []
    for r in ranked:
        row = r.to_dict()
        row.update(stat_rows.get(tuple(r.order), {}))
        ranking.append(row)
    first = docs[0]
    return {"recipe": first["recipe"], "techniques": first["techniques"],
            "builtin": first["builtin"], "task": first["task"], "tolerance": tolerance,
            "seeds": seeds, "selection_split": first["selection_split"],
            "ranked_by": "mean over seeds of the val quality (within tolerance), then BitOps",
            "orders_run": first["orders_run"],
            "stage_executions": sum(d["stage_executions"] for d in docs),
            "baseline": first["baseline"], "ranking": ranking,
            "builtin_rank": next(i + 1 for i, r in enumerate(ranked) if r.builtin),
            "pairwise": None, "per_seed": [f"seed{s}/ablation.json" for s in seeds],
            "seconds": sum(d["seconds"] for d in docs)}


def _statistics(docs: list[dict[str, Any]],
                by_order: dict[tuple[str, ...], list[OrderResult]]) -> dict[tuple, dict]:
    """Per order: test accuracy mean ± std, change vs baseline, tie with the best."""
    base = [d.get("_base_correct") for d in docs]
    if any(b is None for b in base):  # regression, or no per-image results
        return {}
    ok = {o: np.stack([r.correct for r in rs]) for o, rs in by_order.items()
          if all(r.status == "ok" and r.correct is not None for r in rs)}
    rows: dict[tuple, dict] = {}
    base_arr = np.stack(base)
    for entry in stats.rank({" → ".join(o): c for o, c in ok.items()}):
        order = tuple(entry["name"].split(" → "))
        summary = stats.seed_summary(base_arr, ok[order])
        rows[order] = {"test_accuracy": entry["accuracy"], "vs_most_accurate": entry["vs_best"],
                       "tied_with_most_accurate": entry["tied"],
                       "change_vs_baseline": summary["accuracy_change"],
                       "change_interval": summary["interval"]}
    return rows


def to_markdown(doc: dict[str, Any]) -> str:
    """``ablation.md`` over seeds: means, intervals and ties."""
    seeds = ", ".join(map(str, doc["seeds"]))
    regression = doc.get("task") == "regression"
    on_val = ranked_on_val(doc)  # else the test figures rank (no val split)
    val_key = "val_mae" if regression else "val_accuracy"
    val_col = f"val {'MAE' if regression else 'acc %'} (mean, ranked) | " if on_val else ""
    lines = [f"# occ ablate: {doc['recipe']} (seeds {seeds})", "",
             f"{doc['orders_run']} orders of {', '.join(doc['techniques'])}; ranked by "
             f"{doc['ranked_by']} (tolerance {doc['tolerance']:.4g}, chosen on the "
             f"{doc['selection_split']} split). Built-in order {' → '.join(doc['builtin'])} "
             f"ranks **{doc['builtin_rank']}** of {len(doc['ranking'])}.", "",
             f"| rank | order | {val_col}test acc % (mean ± std) | change vs baseline "
             "[95 % CI] | tied with most accurate | BitOps (mean) | bytes (mean) | status |",
             f"|---:|---|{'---:|' if on_val else ''}---:|---|---|---:|---:|---|"]
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        acc = r.get("test_accuracy")
        acc_s = f"{acc['mean']:.2f} ± {acc['std']:.2f}" if acc else "-"
        ch, iv = r.get("change_vs_baseline"), r.get("change_interval")
        ch_s = (f"{ch['mean']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]" if ch and iv
                else "-")
        tied = {True: "yes", False: "no"}.get(r.get("tied_with_most_accurate"), "-")
        mark = " (built-in)" if r["builtin"] else ""
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        val_s = f"{cell(m.get(val_key), regression)} | " if on_val else ""
        lines.append(f"| {i} | {' → '.join(r['order'])}{mark} | {val_s}{acc_s} | {ch_s} | "
                     f"{tied} | "
                     f"{m.get('bitops', float('nan')):.3g} | {m.get('bytes', float('nan')):,.0f}"
                     f" | {status} |")
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict[str, Any], out_dir: Path) -> None:
    """``ablation.json`` and ``ablation.md`` over all seeds in ``out_dir``."""
    atomic_write_files({out_dir / "ablation.json": json.dumps(doc, indent=2, default=str) + "\n",
                        out_dir / "ablation.md": to_markdown(doc)})
