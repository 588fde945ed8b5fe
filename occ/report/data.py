"""Reports: what a compression run gained and lost, as JSON, Markdown and HTML.

``Report`` holds the baseline's metrics, one ``StageRecord`` per stage (accuracy,
agreement, params, nonzero, MACs, BitOps, bytes, seconds), the order used and why.
``write_reports`` writes ``report.json`` (strict JSON: non-finite numbers become null),
``report.md`` and ``report.html`` (one standalone page, plots inline as PNG) atomically;
``Report.from_dict`` reads ``report.json`` back so ``render`` (``occ report DIR``) redraws
the other two. ``Report.__rich__`` renders the terminal table. The plots and the page's CSS live in
``occ.report.plots``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from occ.errors import OccError
from occ.io import atomic_write_text
from occ.report import plots
from occ.tolerances import ACCURACY_POINTS, MAE_SHARE, REGRESSION_WITHIN

if TYPE_CHECKING:
    from occ.metrics import Metrics

_esc = html.escape


def _metrics(d: dict[str, Any], where: str) -> Metrics:
    from occ.metrics import Metrics  # lazily: occ.metrics imports torch

    known = {f.name for f in fields(Metrics)}
    try:
        return Metrics(**{k: v for k, v in d.items() if k in known})
    except TypeError as err:
        raise OccError(f"not occ metrics ({err})", where=where) from None


@dataclass
class StageRecord:
    """One stage's outcome."""

    index: int
    type: str
    label: str
    config: dict[str, Any]
    metrics: Metrics
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"index": self.index, "type": self.type, "label": self.label,
                "config": self.config, "metrics": self.metrics.to_dict(),
                "seconds": self.seconds, "details": self.details, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "stage") -> StageRecord:
        """The inverse of ``to_dict``."""
        return cls(index=d["index"], type=d["type"], label=d["label"], config=d["config"],
                   metrics=_metrics(d["metrics"], f"{where}.metrics"),
                   seconds=d.get("seconds") or 0.0, details=d.get("details") or {},
                   notes=list(d.get("notes") or []))


@dataclass
class Report:
    """A compression run: baseline, stages, final artifact."""

    name: str
    source: str
    plan: dict[str, Any]
    baseline: Metrics
    device: str = "cpu"
    out_dir: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    artifact: str | None = None
    artifact_bytes: int | None = None
    seconds: float = 0.0

    def final_metrics(self) -> Metrics:
        """The metrics after the last stage (the baseline's when there is none)."""
        return self.stages[-1].metrics if self.stages else self.baseline

    def summary(self) -> dict[str, Any]:
        """Headline figures: final accuracy and its change, reduction factors."""
        from occ.metrics import reduction

        base, final = self.baseline, self.final_metrics()
        size = self.artifact_bytes or final.bytes or 0
        change = (None if final.accuracy is None or base.accuracy is None
                  else final.accuracy - base.accuracy)
        return {
            "accuracy": final.accuracy, "baseline_accuracy": base.accuracy,
            "accuracy_change": change, "agreement": final.agreement,
            "bitops_reduction": reduction(base.bitops, final.bitops),
            "sparse_bitops_reduction": reduction(base.bitops, final.sparse_bitops),
            "size_reduction": reduction(base.bytes or 0, size) if size else None,
            "params_reduction": reduction(base.params, final.params),
            "macs_reduction": reduction(base.macs, final.macs),
            "bytes": size, "baseline_bytes": base.bytes,
            **({"mae": final.mae, "baseline_mae": base.mae, "rmse": final.rmse}
               if final.mae is not None else {}),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per step (baseline first) with the headline columns."""
        steps = [("baseline", self.baseline, 0.0)] + [
            (s.label, s.metrics, s.seconds) for s in self.stages]
        out = []
        for i, (label, m, secs) in enumerate(steps):
            size = self.artifact_bytes if i == len(steps) - 1 and self.artifact_bytes else m.bytes
            out.append({"step": label, "accuracy": m.accuracy, "agreement": m.agreement,
                        "params": m.params, "nonzero": m.nonzero_params, "macs": m.macs,
                        "bitops": m.bitops, "sparse_bitops": m.sparse_bitops, "bytes": size,
                        "seconds": secs,
                        **({"mae": m.mae, "rmse": m.rmse} if m.mae is not None else {})})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``report.json``; ``to_json`` makes it strict JSON)."""
        return {"name": self.name, "recipe": self.source, "device": self.device,
                "plan": self.plan, "summary": self.summary(), "rows": self.rows(),
                "baseline": self.baseline.to_dict(),
                "stages": [s.to_dict() for s in self.stages],
                "artifact": self.artifact, "artifact_bytes": self.artifact_bytes,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, out_dir: str = "",
                  where: str = "report.json") -> Report:
        """Rebuild a report from ``to_dict``'s output (``summary`` and ``rows`` are derived).

        Raises:
            OccError: ``doc`` is not an occ report.
        """
        try:
            if not isinstance(doc["plan"]["order"], list):
                raise TypeError("plan.order is not a list")
            stages = [StageRecord.from_dict(s, f"stages[{i}]")
                      for i, s in enumerate(doc["stages"])]
            return cls(name=str(doc["name"]), source=str(doc["recipe"]), plan=doc["plan"],
                       baseline=_metrics(doc["baseline"], "baseline"),
                       device=str(doc.get("device", "cpu")), out_dir=out_dir, stages=stages,
                       artifact=doc.get("artifact"), artifact_bytes=doc.get("artifact_bytes"),
                       seconds=doc.get("seconds") or 0.0)
        except OccError as err:
            raise OccError(err.message, where=f"{where}: {err.where}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise OccError(f"not an occ report (missing or malformed {err})",
                           where=where) from None

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"occ: {self.name}", title_justify="left")
        rows = self.rows()
        regression = _regression(rows)
        for col in ("step", "acc %", "agree %", *(("MAE", "RMSE") if regression else ()),
                    "params", "nonzero", "MACs", "BitOps", "bytes", "s"):
            table.add_column(col, justify="left" if col == "step" else "right",
                             no_wrap=True, min_width=len(col))
        for r in rows:
            errs = (_num(r.get("mae"), ".4f"), _num(r.get("rmse"), ".4f")) if regression else ()
            table.add_row(r["step"], _num(r["accuracy"]), _num(r["agreement"]), *errs,
                          _si(r["params"]), _si(r["nonzero"]), _si(r["macs"]),
                          _si(r["bitops"]), _si(r["bytes"]), f"{r['seconds']:.1f}")
        lines = [Text(f"order: {' -> '.join(self.plan['order'])}")]
        lines += [Text(f"moved: {m}", style="yellow") for m in self.plan.get("moves", [])]
        lines += [Text(f"warning: {w}", style="yellow") for w in self.plan.get("warnings", [])]
        lines.append(Text(f"{_headline(self)}, artifact {self.artifact}", style="bold"))
        return Group(table, *lines)


def _num(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _x(v: float | None) -> str:
    if v is None:
        return "-"
    return "∞×" if math.isinf(v) else f"{v:,.1f}×"


def _si(v: float | None) -> str:
    return plots.si(v)


def _quality_headline(s: dict[str, Any]) -> str:
    """The quality part of the headline: MAE (regression) or accuracy, and its change."""
    if s.get("mae") is not None:
        change = None if s.get("baseline_mae") is None else s["mae"] - s["baseline_mae"]
        return (f"MAE {_num(s['mae'], '.4f')} ({_num(change, '+.4f')}), "
                f"RMSE {_num(s['rmse'], '.4f')}")
    return f"accuracy {_num(s['accuracy'])}% ({_num(s['accuracy_change'], '+.2f')} pt)"


def _headline(report: Report) -> str:
    s = report.summary()
    return (f"{_quality_headline(s)}, agreement {_num(s['agreement'])}%, "
            f"BitOps {_x(s['bitops_reduction'])} lower "
            f"(sparse {_x(s['sparse_bitops_reduction'])}), size {_x(s['size_reduction'])} "
            f"smaller ({_si(s['bytes'])}B)")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON has no inf / NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(report: Report) -> str:
    """``report.json``: strict JSON (``allow_nan=False``; inf and NaN are written as null)."""
    return json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False) + "\n"


def _final_layers(report: Report) -> list[dict[str, Any]]:
    return list(report.final_metrics().layers or [])


def _final_exits(report: Report) -> dict[str, Any] | None:
    exits = report.final_metrics().exits
    return exits if isinstance(exits, dict) and exits.get("per_exit") else None


def _layer_row(lay: dict[str, Any]) -> list[str]:
    zeros = 100 * (1 - lay["nonzero"] / lay["params"]) if lay["params"] else 0.0
    return [lay["name"], lay["kind"], f"{lay['params']:,}", f"{lay['nonzero']:,}",
            f"{zeros:.1f}", f"{lay['w_bits']}/{lay['a_bits']}", _si(lay["macs"]),
            _si(lay.get("bitops"))]


_LAYER_HEAD = ["layer", "kind", "params", "nonzero", "zeros %", "bits w/a", "MACs", "BitOps"]


def _exit_rows(exits: dict[str, Any]) -> list[list[str]]:
    regression = _exits_regression(exits)
    return [[str(e["point"]), _num(e.get("threshold"), ".3g"), f"{e.get('count', 0):,}",
             _num(100 * float(e.get("share") or 0), ".1f"),
             _num(e.get("mae"), ".4f") if regression else _num(e.get("accuracy")),
             _si(e.get("bitops"))] for e in exits["per_exit"]]


def _exits_regression(exits: dict[str, Any]) -> bool:
    return any("mae" in e for e in exits.get("per_exit", []))


def _exit_head(exits: dict[str, Any]) -> list[str]:
    """The exit table's columns: the threshold is epsilon and quality is MAE on regression."""
    if _exits_regression(exits):
        return ["exit", "epsilon", "inputs", "share %", "MAE", "BitOps to here"]
    return ["exit", "threshold", "inputs", "share %", "acc %", "BitOps to here"]


def _regression(rows: list[dict[str, Any]]) -> bool:
    """Whether the steps carry MAE / RMSE (a regression task): those columns show only then."""
    return any(r.get("mae") is not None for r in rows)


def _step_head(rows: list[dict[str, Any]]) -> list[str]:
    return _STEP_HEAD[:3] + ["MAE", "RMSE"] + _STEP_HEAD[3:] if _regression(rows) else _STEP_HEAD


def _step_cells(r: dict[str, Any], regression: bool = False) -> list[str]:
    errs = [_num(r.get("mae"), ".4f"), _num(r.get("rmse"), ".4f")] if regression else []
    return [r["step"], _num(r["accuracy"]), _num(r["agreement"]), *errs, f"{r['params']:,}",
            f"{r['nonzero']:,}", _si(r["macs"]), _si(r["bitops"]), _si(r["sparse_bitops"]),
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
           f"**{_headline(report)}.**", ""]
    rows = report.rows()
    out += _md_table(_step_head(rows), [_step_cells(r, _regression(rows)) for r in rows])
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


# ---------------------------------------------------------------- HTML (XHTML-compatible)


_LEFT = ' class="l"'


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    def cells(tag: str, values: list[str]) -> str:
        return "".join(f"<{tag}{_LEFT if i < left else ''}>{_esc(str(v))}</{tag}>"
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _figure(png: str | None, alt: str) -> str:
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{png}" /></figure>'
            if png else "")


def _card(key: str, value: str, sub: str, cls: str = "") -> str:
    return (f'<div class="card"><div class="k">{_esc(key)}</div><div class="v">{_esc(value)}'
            f'</div><div class="s {cls}">{_esc(sub)}</div></div>')


def _cards(report: Report) -> str:
    from occ.metrics import reduction

    s, base, final = report.summary(), report.baseline, report.final_metrics()
    change = s["accuracy_change"]
    if s.get("mae") is not None:  # regression: MAE, green within 5 % of the baseline's
        rise = None if s.get("baseline_mae") is None else s["mae"] - s["baseline_mae"]
        tone = "" if rise is None else "good" if rise <= MAE_SHARE * s["baseline_mae"] else "bad"
        quality = _card("MAE", _num(s["mae"], ".4f"),
                        f"{_num(rise, '+.4f')} vs baseline {_num(s['baseline_mae'], '.4f')}; "
                        f"RMSE {_num(s['rmse'], '.4f')}", tone)
        agree = f"outputs within {REGRESSION_WITHIN} of the uncompressed model's"
    else:  # green within the ablation's default tolerance, red beyond it
        tone = "" if change is None else "good" if change >= -ACCURACY_POINTS else "bad"
        quality = _card("accuracy", f"{_num(s['accuracy'])}%", f"{_num(change, '+.2f')} pt vs "
                        f"baseline {_num(s['baseline_accuracy'])}%", tone)
        agree = "top-1 matches the uncompressed model"
    return '<div class="cards">' + "".join((
        quality,
        _card("agreement", f"{_num(s['agreement'])}%", agree),
        _card("BitOps", _x(s["bitops_reduction"]),
              f"lower; sparse {_x(s['sparse_bitops_reduction'])}"),
        _card("size", _x(s["size_reduction"]),
              f"smaller: {_si(s['bytes'])}B from {_si(s['baseline_bytes'])}B"),
        _card("nonzero params", _x(reduction(base.nonzero_params, final.nonzero_params)),
              f"fewer: {_si(final.nonzero_params)} of {_si(base.params)}; "
              f"MACs {_x(s['macs_reduction'])}"),
    )) + "</div>"


def _order_html(plan: dict[str, Any]) -> str:
    pills = '<span class="arrow">→</span>'.join(
        f'<span class="pill">{_esc(o)}</span>' for o in plan["order"])
    out = [f'<div class="chain">{pills}</div>']
    if plan.get("reordered"):
        out.append(f"<p>Written as {_esc(' → '.join(plan.get('written', [])))}; moved:</p><ul>"
                   + "".join(f"<li>{_esc(m)}</li>" for m in plan.get("moves", [])) + "</ul>")
    reasons = plan.get("reasons", [])
    if reasons:
        out.append("<ul>" + "".join(
            f"<li><b>{_esc(r['before'])} → {_esc(r['after'])}</b>: {_esc(r['reason'])} "
            f'<span class="meta">({_esc(r["source"])})</span></li>' for r in reasons) + "</ul>")
    out += [f'<div class="warn">⚠ {_esc(w)}</div>' for w in plan.get("warnings", [])]
    return "".join(out)


def _json_block(title: str, obj: Any) -> str:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    return f"<details><summary>{_esc(title)}</summary><pre>{_esc(text)}</pre></details>"


def _stage_html(st: StageRecord) -> str:
    notes = "".join(f"<li>{_esc(n)}</li>" for n in st.notes)
    return (f'<div class="stage"><h3>{st.index + 1}. {_esc(st.label)} '
            f'<span class="meta">{st.seconds:.1f} s</span></h3>'
            + (f"<ul>{notes}</ul>" if notes else "")
            + _json_block("config", st.config) + _json_block("details", st.details)
            + _json_block("metrics", st.metrics.to_dict(layers=False)) + "</div>")


def to_html(report: Report) -> str:
    """``report.html``: one standalone page (inline PNG plots, no network)."""
    rows = report.rows()
    layers, exits = _final_layers(report), _final_exits(report)
    parts = [
        f"<h1>occ report: {_esc(report.name)}</h1>",
        f'<div class="meta">recipe <code>{_esc(report.source)}</code> · device '
        f"<code>{_esc(report.device)}</code> · {report.seconds:.1f} s · artifact "
        f"<code>{_esc(str(report.artifact))}</code></div>",
        _cards(report),
        "<h2>Compression path</h2>",
        (_figure(plots.path_plot(rows, "mae", "MAE (lower is better)"),
                 "MAE vs BitOps and vs bytes after every stage") if _regression(rows) else
         _figure(plots.path_plot(rows, "accuracy", "accuracy (%)"),
                 "accuracy vs BitOps and vs bytes after every stage")),
        _table(_step_head(rows), [_step_cells(r, _regression(rows)) for r in rows]),
        _figure(plots.size_plot(rows), "bytes and BitOps per stage"),
        "<h2>Order</h2>", _order_html(report.plan),
    ]
    if layers:
        parts += ["<h2>Final model, per layer</h2>",
                  _figure(plots.layers_plot(layers), "per-layer sparsity and bits"),
                  _table(_LAYER_HEAD, [_layer_row(lay) for lay in layers], left=2)]
    if exits:
        parts += ["<h2>Early exit</h2>",
                  f'<p class="meta">criterion {_esc(str(exits.get("criterion")))}, '
                  f'{exits.get("samples", 0):,} test inputs, expected BitOps '
                  f'{_si(exits.get("expected_bitops"))} of {_si(exits.get("full_bitops"))}</p>',
                  _figure(plots.exits_plot(exits), "early-exit distribution"),
                  _table(_exit_head(exits), _exit_rows(exits))]
    parts += ["<h2>Stages</h2>", *(_stage_html(st) for st in report.stages)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />'
            '<meta name="viewport" content="width=device-width, initial-scale=1" />'
            f"<title>occ report: {_esc(report.name)}</title><style>{plots.CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def write_reports(report: Report, out_dir: str | Path) -> None:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    atomic_write_text(out / "report.json", to_json(report))
    _write_views(report, out)


def _write_views(report: Report, out: Path) -> list[str]:
    paths = [atomic_write_text(out / "report.md", to_markdown(report)),
             atomic_write_text(out / "report.html", to_html(report))]
    return [str(p) for p in paths]


def load_report(out_dir: str | Path) -> Report:
    """Read ``out_dir/report.json`` (or that file itself) back into a ``Report``.

    Raises:
        OccError: the file is missing, not JSON, or not an occ report.
    """
    path = Path(out_dir)
    if path.is_dir() or path.suffix != ".json":
        path = path / "report.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OccError("file not found (not an occ compress output?)", where=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OccError(f"cannot read: {err}", where=str(path)) from None
    if not isinstance(doc, dict):
        raise OccError("not an occ report (not a JSON object)", where=str(path))
    return Report.from_dict(doc, out_dir=str(path.parent), where=str(path))


def render(out_dir: str | Path) -> dict[str, Any]:
    """Re-render ``report.md`` and ``report.html`` from ``out_dir/report.json``."""
    report = load_report(out_dir)
    try:
        files = _write_views(report, Path(report.out_dir))
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # fields of wrong types
        where = str(Path(report.out_dir) / "report.json")
        raise OccError(f"not an occ report (cannot render it: {err!r})", where=where) from None
    return {"report": str(Path(report.out_dir) / "report.json"), "written": files,
            "summary": json_safe(report.summary())}
