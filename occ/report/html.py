"""``report.html``: one standalone page, plots inline as PNG (CSS in ``occ.report.plots``)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from occ.report import plots
from occ.report.data import StageRecord, json_safe
from occ.report.format import is_regression, num, si, times
from occ.report.markdown import (
    _LAYER_HEAD,
    _exit_head,
    _exit_rows,
    _final_exits,
    _final_layers,
    _layer_row,
    _step_cells,
    _step_head,
)
from occ.tolerances import ACCURACY_POINTS, MAE_SHARE, REGRESSION_WITHIN

if TYPE_CHECKING:
    from occ.report.data import Report

_esc = html.escape


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
        quality = _card("MAE", num(s["mae"], ".4f"),
                        f"{num(rise, '+.4f')} vs baseline {num(s['baseline_mae'], '.4f')}; "
                        f"RMSE {num(s['rmse'], '.4f')}", tone)
        agree = f"outputs within {REGRESSION_WITHIN} of the uncompressed model's"
    else:  # green within the ablation's default tolerance, red beyond it
        tone = "" if change is None else "good" if change >= -ACCURACY_POINTS else "bad"
        quality = _card("accuracy", f"{num(s['accuracy'])}%", f"{num(change, '+.2f')} pt vs "
                        f"baseline {num(s['baseline_accuracy'])}%", tone)
        agree = "top-1 matches the uncompressed model"
    return '<div class="cards">' + "".join((
        quality,
        _card("agreement", f"{num(s['agreement'])}%", agree),
        _card("BitOps", times(s["bitops_reduction"]),
              f"lower; sparse {times(s['sparse_bitops_reduction'])}"),
        _card("size", times(s["size_reduction"]),
              f"smaller: {si(s['bytes'])}B from {si(s['baseline_bytes'])}B as float32"),
        _card("nonzero params", times(reduction(base.nonzero_params, final.nonzero_params)),
              f"fewer: {si(final.nonzero_params)} of {si(base.params)}; "
              f"MACs {times(s['macs_reduction'])}"),
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
                 "MAE vs BitOps and vs bytes after every stage") if is_regression(rows) else
         _figure(plots.path_plot(rows, "accuracy", "accuracy (%)"),
                 "accuracy vs BitOps and vs bytes after every stage")),
        _table(_step_head(rows), [_step_cells(r, is_regression(rows)) for r in rows]),
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
                  f'{si(exits.get("expected_bitops"))} of {si(exits.get("full_bitops"))}</p>',
                  _figure(plots.exits_plot(exits), "early-exit distribution"),
                  _table(_exit_head(exits), _exit_rows(exits))]
    parts += ["<h2>Stages</h2>", *(_stage_html(st) for st in report.stages)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />'
            '<meta name="viewport" content="width=device-width, initial-scale=1" />'
            f"<title>occ report: {_esc(report.name)}</title><style>{plots.CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")
