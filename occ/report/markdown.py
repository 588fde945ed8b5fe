"""``report.md``: the run as Markdown tables (and the row helpers the HTML view shares)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from occ.report.format import headline, is_regression, num, si

if TYPE_CHECKING:
    from occ.report.data import Report


def _final_layers(report: Report) -> list[dict[str, Any]]:
    return list(report.final_metrics().layers or [])


def _final_exits(report: Report) -> dict[str, Any] | None:
    exits = report.final_metrics().exits
    return exits if isinstance(exits, dict) and exits.get("per_exit") else None


def _layer_row(lay: dict[str, Any]) -> list[str]:
    zeros = 100 * (1 - lay["nonzero"] / lay["params"]) if lay["params"] else 0.0
    return [lay["name"], lay["kind"], f"{lay['params']:,}", f"{lay['nonzero']:,}",
            f"{zeros:.1f}", f"{lay['w_bits']}/{lay['a_bits']}", si(lay["macs"]),
            si(lay.get("bitops"))]


_LAYER_HEAD = ["layer", "kind", "params", "nonzero", "zeros %", "bits w/a", "MACs", "BitOps"]


def _exit_rows(exits: dict[str, Any]) -> list[list[str]]:
    regression = _exitsregression(exits)
    return [[str(e["point"]), num(e.get("threshold"), ".3g"), f"{e.get('count', 0):,}",
             num(100 * float(e.get("share") or 0), ".1f"),
             num(e.get("mae"), ".4f") if regression else num(e.get("accuracy")),
             si(e.get("bitops"))] for e in exits["per_exit"]]


def _exitsregression(exits: dict[str, Any]) -> bool:
    return any("mae" in e for e in exits.get("per_exit", []))


def _exit_head(exits: dict[str, Any]) -> list[str]:
    """The exit table's columns: the threshold is epsilon and quality is MAE on regression."""
    if _exitsregression(exits):
        return ["exit", "epsilon", "inputs", "share %", "MAE", "BitOps to here"]
    return ["exit", "threshold", "inputs", "share %", "acc %", "BitOps to here"]


def _step_head(rows: list[dict[str, Any]]) -> list[str]:
    return _STEP_HEAD[:3] + ["MAE", "RMSE"] + _STEP_HEAD[3:] if is_regression(rows) else _STEP_HEAD


def _step_cells(r: dict[str, Any], regression: bool = False) -> list[str]:
    errs = [num(r.get("mae"), ".4f"), num(r.get("rmse"), ".4f")] if regression else []
    return [r["step"], num(r["accuracy"]), num(r["agreement"]), *errs, f"{r['params']:,}",
            f"{r['nonzero']:,}", si(r["macs"]), si(r["bitops"]), si(r["sparse_bitops"]),
            f"{r['bytes']:,}" if r["bytes"] is not None else "-", f"{r['seconds']:.1f}"]


_STEP_HEAD = ["step", "acc %", "agree %", "params", "nonzero", "MACs", "BitOps",
              "sparse BitOps", "bytes", "s"]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    return out + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]


def to_markdown(report: Report) -> str:
    """``report.md``: headline, steps, order and reasons, final layers, exits, stages."""
    out = [f"# occ report: {report.name}", "",
           f"Recipe `{report.source}`, device `{report.device}`, {report.seconds:.1f} s.", "",
           f"**{headline(report)}.**", ""]
    rows = report.rows()
    out += _md_table(_step_head(rows), [_step_cells(r, is_regression(rows)) for r in rows])
    out += ["", "## Order", "", " → ".join(report.plan["order"]), ""]
    if report.plan.get("reordered"):
        out += ["Written as: " + " → ".join(report.plan["written"]), ""]
        out += [f"- moved {m}" for m in report.plan["moves"]] + [""]
    out += [f"- **{r['before']} → {r['after']}**: {r['reason']} ({r['source']})"
            for r in report.plan.get("reasons", [])]
    out += [f"- ⚠ {w}" for w in report.plan.get("warnings", [])]
    if layers := _final_layers(report):
        out += ["", "## Final model, per layer", ""]
        out += _md_table(_LAYER_HEAD, [_layer_row(lay) for lay in layers])
    if exits := _final_exits(report):
        out += ["", "## Early exit", ""]
        out += _md_table(_exit_head(exits), _exit_rows(exits))
    out += ["", "## Stages", ""]
    for st in report.stages:
        out.append(f"### {st.index + 1}. {st.label} ({st.seconds:.1f} s)")
        out += [f"- {n}" for n in st.notes]
        out.append(f"- config: `{json.dumps(st.config)}`")
        out.append("")
    return "\n".join(out) + "\n"
