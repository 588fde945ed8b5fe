"""What ``occ ablate`` writes: ``ablation.json``, ``ablation.md`` and ``ablation.png``, and
the quality cells the CLI's table shares with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from occ.io import atomic_write_files


def to_markdown(doc: dict[str, Any]) -> str:
    """``ablation.md``: the ranking and the pairwise table, plainly."""
    cols = quality_columns(doc)
    lines = [f"# occ ablate: {doc['recipe']}", "",
             f"{doc['orders_run']} orders of {', '.join(doc['techniques'])}; built-in order "
             f"{' → '.join(doc['builtin'])} {builtin_words(doc, '**')} (BitOps among orders "
             f"within {doc['tolerance']:.4g} {tolerance_words(doc)}).", "", ranking_note(doc),
             ""]
    lines += [f"**Warning:** {w}\n" for w in doc.get("warnings", [])]
    lines += [f"| rank | order | {' | '.join(cols)} | agree % | BitOps | bytes | status |",
              f"|---:|---|{'---:|' * len(cols)}---:|---:|---:|---|"]
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        mark = " (built-in)" if r["builtin"] else ""
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        lines.append(f"| {i} | {' → '.join(r['order'])}{mark} | "
                     f"{' | '.join([*quality_cells(m, doc), *cost_cells(m)])} | {status} |")
    lines += _stage_warnings(doc)
    lines += ["", "## Pairwise", "",
              "| pair | A before B better | built-in puts first | verdict |", "|---|---:|---|---|"]
    for p in doc["pairwise"]:
        a, b = p["pair"]
        share = "-" if p["a_before_b_better"] is None else f"{100 * p['a_before_b_better']:.0f}%"
        verdict = ("no comparison" if not p["comparisons"] else "tie" if p["agrees"] is None
                   else "agrees" if p["agrees"]
                   else f"**disagrees**: measured {p['measured_first']} first")
        lines.append(f"| {a}, {b} | {share} ({p['comparisons']}) | {p['builtin_first']} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def builtin_words(doc: dict[str, Any], mark: str = "") -> str:
    """``ranks **2** of 6`` (``mark`` around the rank), with the orders it is tied with;
    ``is not ranked: every order failed or collapsed`` when nothing is."""
    rank = doc.get("builtin_rank")
    if rank is None:
        return "is not ranked: every order failed or collapsed"
    ties = doc.get("builtin_ties", 0)
    tied = (f", tied with {ties} other order{'s' if ties > 1 else ''} (within the tolerance "
            "and 1 % of its BitOps)" if ties else "")
    return f"ranks {mark}{rank}{mark} of {len(doc['ranking'])}{tied}"


def _stage_warnings(doc: dict[str, Any]) -> list[str]:
    """``## Stage warnings``: each warning a stage gave once, with the orders it came in
    (a shared prefix warns for every order that starts with it); none: no section."""
    orders: dict[str, list[str]] = {}
    for r in doc["ranking"]:
        for w in r.get("warnings", []):
            orders.setdefault(w, []).append(" → ".join(r["order"]))
    if not orders:
        return []
    lines = ["", "## Stage warnings", ""]
    for w, where in orders.items():
        every = len(where) == len(doc["ranking"])
        lines.append(f"- {w} ({'every order' if every else 'in ' + ', '.join(where)})")
    return lines


def ranked_on_val(doc: dict[str, Any]) -> bool:
    """The ranking read the val split (``occ.engine.ablate._quality``); else, with no val
    split, the test split."""
    return doc.get("selection_split", "val") == "val"


def _quality_name(doc: dict[str, Any]) -> str:
    return "MAE" if doc.get("task") == "regression" else "acc %"


def tolerance_words(doc: dict[str, Any]) -> str:
    """What the tolerance is measured against: ``pt of the best val accuracy`` or ``MAE of
    the best val MAE`` (``test`` with no val split)."""
    split = "val" if ranked_on_val(doc) else "test"
    if doc.get("task") == "regression":
        return f"MAE of the best {split} MAE"
    return f"pt of the best {split} accuracy"


def quality_columns(doc: dict[str, Any]) -> list[str]:
    """The table's quality columns: the one the ranking reads, marked ``(ranked)``, then the
    test figure beside it (only the test one, marked, with no val split)."""
    name = _quality_name(doc)
    if not ranked_on_val(doc):
        return [f"test {name} (ranked)"]
    return [f"val {name} (ranked)", f"test {name}"]


def quality_cells(m: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    """One order's cells under ``quality_columns``: accuracy (2 decimals) or MAE (4)."""
    regression = doc.get("task") == "regression"
    keys = ["mae"] if regression else ["accuracy"]
    if ranked_on_val(doc):
        keys.insert(0, f"val_{keys[0]}")
    return [cell(m.get(k), regression) for k in keys]


def ranking_note(doc: dict[str, Any]) -> str:
    """One sentence under the title: which figure ranks, which is only reported."""
    what = "MAE" if doc.get("task") == "regression" else "accuracy"
    if not ranked_on_val(doc):
        return (f"Ranked on the test {what}: the data has no val split (give it one so the "
                "choice is not made on the figure it reports).")
    return (f"Ranked on the val {what} (the split decisions read); the test {what} is the "
            "reported figure, read once, and does not change the ranking.")


def cost_cells(m: dict[str, Any]) -> list[str]:
    """One order's agreement (%), BitOps and bytes cells; ``-`` where it has none (a failed
    order), not ``nan`` or ``0``."""
    agree, bitops, size = m.get("agreement"), m.get("bitops"), m.get("bytes")
    return ["-" if agree is None else f"{agree:.2f}", "-" if bitops is None else f"{bitops:.3g}",
            "-" if size is None else f"{size:,}"]


def cell(value: float | None, regression: bool) -> str:
    """A quality cell: MAE (4 decimals), accuracy (2), or ``-``."""
    if value is None:
        return "-"
    return f"{value:.4f}" if regression else f"{value:.2f}"


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
