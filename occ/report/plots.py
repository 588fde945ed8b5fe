"""How ``report.html`` looks: its plots (matplotlib, Agg, as base64 PNG) and its CSS.

Each plot function takes plain data from ``Report`` (its ``rows()``, the final model's
per-layer list, the early-exit metrics) so ``report.json`` alone can redraw them. The
plot style ``_STYLE`` is applied in a context: the caller's rcParams are left as they
were. ``CSS`` is the page's only style sheet (inline; no fonts or files are fetched).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

BLUE, ORANGE, GREEN, GREY, RED = "#2563eb", "#ea580c", "#16a34a", "#94a3b8", "#dc2626"
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#64748b",
    "axes.grid": True, "axes.axisbelow": True, "grid.color": "#e2e8f0", "grid.linewidth": 0.8,
    "xtick.color": "#334155", "ytick.color": "#334155", "legend.frameon": False,
    "figure.dpi": 100, "savefig.dpi": 144,
}

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f8fafc;color:#0f172a;line-height:1.5;font:15px/1.5 system-ui,
-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:26px;margin:0 0 2px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;
border-bottom:1px solid #e2e8f0}h3{font-size:15px;margin:18px 0 4px}
.meta{color:#64748b;font-size:13px}code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,
Menlo,Consolas,monospace}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;
margin:20px 0 6px}.card{background:#fff;border:1px solid #e2e8f0;border-radius:10px;
padding:12px 16px}.card .k{font-size:12px;color:#64748b;text-transform:uppercase;
letter-spacing:.04em}.card .v{font-size:24px;font-weight:650}.card .s{font-size:12.5px;
color:#475569}.card .good{color:#15803d}.card .bad{color:#b91c1c}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13.5px;
font-variant-numeric:tabular-nums;border:1px solid #e2e8f0}
th,td{padding:6px 10px;text-align:right;border-bottom:1px solid #eef2f7;white-space:nowrap}
th{background:#f1f5f9;font-weight:600;color:#334155}td.l,th.l{text-align:left}
tbody tr:nth-child(even){background:#fafcff}
figure{margin:12px 0;background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:8px}
figure img{display:block;width:100%;height:auto}
.chain{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin:6px 0 10px}
.pill{background:#e0e7ff;color:#1e3a8a;border-radius:999px;padding:2px 12px;font-weight:600;
font-size:13.5px}.arrow{color:#64748b}
.warn{background:#fff7ed;border:1px solid #fed7aa;border-radius:8px;padding:8px 12px;
margin:6px 0}ul{margin:6px 0;padding-left:22px}li{margin:3px 0}
.stage{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:6px 16px 12px;
margin:10px 0}details{margin:2px 0}summary{cursor:pointer;color:#334155;font-size:13.5px}
pre{background:#f1f5f9;border-radius:6px;padding:10px;overflow:auto;max-height:420px}
"""


@contextmanager
def _figure(nrows: int, ncols: int, *, figsize: tuple[float, float], **kwargs: Any,
            ) -> Iterator[tuple[Any, Any]]:
    # A bare Figure, not pyplot: no global figure registry, and the caller's backend
    # (a notebook's, say) is left alone.
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=figsize)
        yield fig, fig.subplots(nrows, ncols, **kwargs)


def _png(fig: Any) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def si(v: float | None, unit: str = "") -> str:
    """``1234567 -> '1.23M'`` (``'-'`` for None)."""
    if v is None:
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{prefix}{unit}"
    return f"{v:.0f}{unit}" if float(v).is_integer() else f"{v:.3g}{unit}"


def _si_axis(axis: Any) -> None:
    """Log axis ticks as ``10M`` / ``1G`` (major decades only; minor ticks unlabelled)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: si(v)))
    axis.set_minor_formatter(NullFormatter())


def _merged_points(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str],
                   ) -> list[tuple[float, float, str]]:
    """Consecutive steps that land on the same point share one label (``a, b``)."""
    out: list[tuple[float, float, str]] = []
    for x, y, label in zip(xs, ys, labels, strict=True):
        if out and abs(out[-1][0] - x) <= 1e-9 * max(abs(x), 1) and out[-1][1] == y:
            out[-1] = (x, y, f"{out[-1][2]}, {label}")
        else:
            out.append((x, y, label))
    return out


def path_plot(rows: Sequence[dict[str, Any]], quality: str, quality_label: str) -> str | None:
    """Quality vs BitOps and vs bytes after every step: the path of the compression."""
    pts = [r for r in rows if r.get(quality) is not None]
    if not pts:
        return None
    with _figure(1, 2, figsize=(10.5, 3.9)) as (fig, axes):
        panels = ((axes[0], "bitops", "BitOps (log)", "after every stage: BitOps"),
                  (axes[1], "bytes", "bytes (log)", "after every stage: size"))
        for ax, key, xlabel, title in panels:
            xs = [max(float(r[key] or 0), 1.0) for r in pts]
            ys = [float(r[quality]) for r in pts]
            ax.plot(xs, ys, "-", color=GREY, lw=1.2, zorder=1)
            ax.scatter(xs[1:], ys[1:], s=38, color=BLUE, zorder=3)
            ax.scatter(xs[:1], ys[:1], s=70, marker="*", color=ORANGE, zorder=3, label="baseline")
            if key == "bitops" and any(r.get("sparse_bitops") != r["bitops"] for r in pts):
                sx = [max(float(r["sparse_bitops"] or 0), 1.0) for r in pts]
                ax.scatter(sx, ys, s=22, facecolors="none", edgecolors=GREEN, zorder=2,
                           label="sparse BitOps")
            for i, (x, y, label) in enumerate(_merged_points(xs, ys, [r["step"] for r in pts])):
                ax.annotate(label, (x, y), fontsize=7.5, color="#0f172a",
                            xytext=(6, 8 if i % 2 == 0 else -13), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(quality_label)
            ax.set_title(title, loc="left")
            _pad_log(ax, xs + ([max(float(r["sparse_bitops"] or 0), 1.0) for r in pts]
                               if key == "bitops" else []))
            lo, hi = min(ys), max(ys)
            span = max(hi - lo, 0.5 if quality == "accuracy" else 0.05 * max(abs(hi), 1e-9))
            ax.set_ylim(lo - 0.25 * span, hi + 0.3 * span)
        axes[0].legend(loc="lower left", fontsize=7.5)
        return _png(fig)


def _pad_log(ax: Any, xs: Sequence[float]) -> None:
    """Room for the labels on a log x axis, which spans at least two decades."""
    lo, hi = min(xs) / 2.5, max(xs) * 2.5
    if hi / lo < 100:  # a narrow range: widen it around its geometric middle
        mid = (lo * hi) ** 0.5
        lo, hi = mid / 10, mid * 10
    ax.set_xlim(lo, hi)
    _si_axis(ax.xaxis)


def size_plot(rows: Sequence[dict[str, Any]]) -> str | None:
    """Bytes and BitOps per step (bars, log scale), each labelled with its reduction."""
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    with _figure(1, 2, figsize=(10.5, 3.4)) as (fig, axes):
        for ax, key, title, color in ((axes[0], "bytes", "size per stage (bytes)", BLUE),
                                      (axes[1], "bitops", "BitOps per stage", ORANGE)):
            vals = [float(r[key] or 0) for r in rows]
            base = vals[0]
            bars = ax.bar(range(len(vals)), [max(v, 1.0) for v in vals], color=color, width=0.6)
            if key == "bitops" and any(r.get("sparse_bitops") != r["bitops"] for r in rows):
                ax.scatter(range(len(vals)), [max(float(r["sparse_bitops"] or 0), 1.0)
                                              for r in rows],
                           marker="_", s=260, color="#0f172a", zorder=3, label="sparse")
                ax.legend(loc="upper right", fontsize=7.5)
            ax.set_yscale("log")
            shown = [max(v, 1.0) for v in vals] + (
                [max(float(r["sparse_bitops"] or 0), 1.0) for r in rows] if key == "bitops"
                else [])
            ax.set_ylim(min(shown) / 3, max(shown) * 6)
            _si_axis(ax.yaxis)
            for b, v in zip(bars, vals, strict=True):
                changed = v and base and abs(base / v - 1) > 0.005
                text = si(v) + (f"\n{base / v:.3g}×" if changed else "")
                ax.annotate(text, (b.get_x() + b.get_width() / 2, max(v, 1.0)), ha="center",
                            va="bottom", fontsize=7.5, xytext=(0, 2), textcoords="offset points")
            ax.set_xticks(range(len(steps)), steps, rotation=20, ha="right", fontsize=8)
            ax.set_title(title, loc="left")
            ax.grid(axis="x", visible=False)
            _bar_room(ax, len(vals))
        return _png(fig)


def _bar_room(ax: Any, n: int) -> None:
    """Keep one or two bars from filling the whole panel."""
    pad = max(0.6, (3 - n) / 2)
    ax.set_xlim(-pad, n - 1 + pad)


def layers_plot(layers: Sequence[dict[str, Any]]) -> str | None:
    """Per-layer sparsity (share of zero parameters) and weight / activation bits."""
    if not layers:
        return None
    names = [lay["name"] for lay in layers]
    sparsity = [100.0 * (1 - lay["nonzero"] / lay["params"]) if lay["params"] else 0.0
                for lay in layers]
    height = 1.2 + 0.28 * len(layers)
    with _figure(1, 2, figsize=(10.5, height), sharey=True) as (fig, (left, right)):
        ys = list(range(len(names)))
        left.barh(ys, sparsity, color=BLUE, height=0.6)
        for y, s in zip(ys, sparsity, strict=True):
            left.annotate(f"{s:.1f}%", (s, y), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=7.5)
        left.set_xlim(0, 115)
        left.set_xlabel("zero parameters (%)")
        left.set_title("sparsity per layer", loc="left")
        left.set_yticks(ys, names, fontsize=8 if len(names) < 30 else 6)
        left.invert_yaxis()
        w = [lay["w_bits"] for lay in layers]
        a = [lay["a_bits"] for lay in layers]
        right.barh([y - 0.18 for y in ys], w, height=0.36, color=ORANGE, label="weights")
        right.barh([y + 0.18 for y in ys], a, height=0.36, color=GREY, label="activations")
        for y, wb, ab in zip(ys, w, a, strict=True):
            right.annotate(f"{wb}/{ab}", (max(wb, ab), y), xytext=(3, 0),
                           textcoords="offset points", va="center", fontsize=7.5)
        right.set_xscale("log", base=2)
        right.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
        right.set_xlim(1, 64)
        right.set_xlabel("bits (log2)")
        right.set_title("bits per layer", loc="left")
        right.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7.5)
        for ax in (left, right):
            ax.grid(axis="y", visible=False)
        return _png(fig)


def exits_plot(exits: dict[str, Any]) -> str | None:
    """Early exit: the share of test inputs leaving at each exit, and each exit's cost."""
    per_exit = exits.get("per_exit") or []
    if not per_exit:
        return None
    names = [str(e["point"]) for e in per_exit]
    shares = [100.0 * float(e.get("share") or 0) for e in per_exit]
    xs = list(range(len(names)))
    with _figure(1, 2, figsize=(10.5, 3.2)) as (fig, (left, right)):
        bars = left.bar(xs, shares, color=GREEN, width=0.6)
        for b, e, s in zip(bars, per_exit, shares, strict=True):
            acc, mae = e.get("accuracy"), e.get("mae")
            text = f"{s:.1f}%" + (f"\nMAE {mae:.3g}" if mae is not None else
                                  f"\nacc {acc:.1f}%" if acc is not None else "")
            left.annotate(text, (b.get_x() + b.get_width() / 2, s), ha="center", va="bottom",
                          fontsize=7.5, xytext=(0, 2), textcoords="offset points")
        left.set_ylim(0, 125)
        left.set_ylabel("test inputs leaving here (%)")
        left.set_title("exit distribution", loc="left")
        costs = [float(e.get("bitops") or 0) for e in per_exit]
        cbars = right.bar(xs, costs, color=GREY, width=0.6)
        for b, c in zip(cbars, costs, strict=True):
            right.annotate(si(c), (b.get_x() + b.get_width() / 2, c), ha="center", va="bottom",
                           fontsize=7.5, xytext=(0, 2), textcoords="offset points")
        expected = exits.get("expected_bitops")
        if expected:
            right.axhline(expected, color=RED, lw=1.2, ls="--",
                          label=f"expected {si(expected)}")
            right.legend(loc="upper left", fontsize=7.5)
        right.set_ylim(0, max(costs + [expected or 0, 1.0]) * 1.25)
        _si_axis(right.yaxis)
        right.set_title("BitOps to reach each exit", loc="left")
        for ax in (left, right):
            ax.set_xticks(xs, names, fontsize=8)
            ax.grid(axis="x", visible=False)
            _bar_room(ax, len(xs))
        return _png(fig)
