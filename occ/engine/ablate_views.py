"""What ``occ ablate`` writes: ``ablation.json``, ``ablation.md`` and ``ablation.png``, and
the quality cells the CLI's table shares with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from occ.io import atomic_write_files


def to_markdown(doc: dict[str, Any]) -> str:
    """``ablation.md``: the ranking and the pairwise table, plainly."""
    regression = doc.get("task") == "regression"
    quality, col = quality_label(doc)
    lines = [f"# occ ablate: {doc['recipe']}", "",
             f"{doc['orders_run']} orders of {', '.join(doc['techniques'])}; built-in order "
             f"{' → '.join(doc['builtin'])} ranks **{doc['builtin_rank']}** of "
             f"{len(doc['ranking'])} (BitOps among orders within {doc['tolerance']:.4g} "
             f"{quality}).", ""]
    lines += [f"**Warning:** {w}\n" for w in doc.get("warnings", [])]
    lines += [f"| rank | order | {col} | agree % | BitOps | bytes | status |",
              "|---:|---|---:|---:|---:|---:|---|"]
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        mark = " (built-in)" if r["builtin"] else ""
        lines.append(f"| {i} | {' → '.join(r['order'])}{mark} | "
                     f"{quality_value(m, regression)} | "
                     f"{m.get('agreement') or float('nan'):.2f} | "
                     f"{m.get('bitops', float('nan')):.3g} | {m.get('bytes', '-')} | "
                     f"{r['status'] if r['status'] == 'ok' else 'failed: ' + str(r['error'])} |")
    lines += ["", "## Pairwise", "",
              "| pair | A before B better | built-in puts first | verdict |", "|---|---:|---|---|"]
    for p in doc["pairwise"]:
        a, b = p["pair"]
        share = "-" if p["a_before_b_better"] is None else f"{100 * p['a_before_b_better']:.0f}%"
        verdict = ("no comparison" if p["agrees"] is None else "agrees" if p["agrees"]
                   else f"**disagrees**: measured {p['measured_first']} first")
        lines.append(f"| {a}, {b} | {share} ({p['comparisons']}) | {p['builtin_first']} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def quality_label(doc: dict[str, Any]) -> tuple[str, str]:
    """(what the tolerance is measured against, the table column) for ``doc``'s task."""
    if doc.get("task") == "regression":
        return "MAE of the best MAE", "MAE"
    return "pt of the best accuracy", "acc %"


def quality_value(m: dict[str, Any], regression: bool) -> str:
    """The ranking's quality cell: accuracy (2 decimals) or MAE (4)."""
    if regression:
        return f"{m['mae']:.4f}" if m.get("mae") is not None else "-"
    return f"{m.get('accuracy', float('nan')):.2f}"


def _plot(doc: dict[str, Any]) -> bytes:
    """The ablation's scatter plot as PNG bytes (one point per order)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regression = doc.get("task") == "regression"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in doc["ranking"]:
        if r["status"] != "ok":
            continue
        m = r["metrics"]
        y = m["mae"] if regression else m["accuracy"]
        style = {"color": "crimson", "s": 80, "zorder": 3} if r["builtin"] else \
            {"color": "steelblue", "s": 30}
        ax.scatter(m["bitops"], y, **style)
        ax.annotate("→".join(r["order"]), (m["bitops"], y), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("BitOps (log; expected BitOps with early exit)")
    ax.set_ylabel("MAE (lower is better)" if regression else "accuracy %")
    ax.set_title("occ ablate: one point per order (built-in in red)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(doc: dict[str, Any], out_dir: Path) -> None:
    """``ablation.json``, ``ablation.md`` and ``ablation.png`` in ``out_dir``."""
    atomic_write_files({out_dir / "ablation.json": json.dumps(doc, indent=2, default=str) + "\n",
                        out_dir / "ablation.md": to_markdown(doc),
                        out_dir / "ablation.png": _plot(doc)})
