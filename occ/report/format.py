"""Number formatting shared by the report's views (terminal, Markdown, HTML)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from occ.report import plots

if TYPE_CHECKING:
    from occ.report.data import Report


def num(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def times(v: float | None) -> str:
    if v is None:
        return "-"
    return "∞×" if math.isinf(v) else f"{v:,.1f}×"


def fold(v: float | None, fewer: str, more: str) -> str:
    """A reduction factor in words: ``3.0× lower``; below 1 it grew, ``3.3× higher``; one
    that rounds to 1.0× either way is ``unchanged`` (a float file 103 B larger read
    "1.0× larger")."""
    if v is not None and math.isfinite(v) and v > 0 and round(max(v, 1 / v), 1) == 1.0:
        return "unchanged"
    if v is None or not math.isfinite(v) or v <= 0 or v >= 1:
        return f"{times(v)} {fewer}"
    return f"{times(1 / v)} {more}"


def si(v: float | None) -> str:
    return plots.si(v)


def _qualityheadline(s: dict[str, Any]) -> str:
    """The quality part of the headline: MAE (regression) or accuracy, and its change."""
    if s.get("mae") is not None:
        change = None if s.get("baseline_mae") is None else s["mae"] - s["baseline_mae"]
        return (f"MAE {num(s['mae'], '.4f')} ({num(change, '+.4f')}), "
                f"RMSE {num(s['rmse'], '.4f')}")
    return f"accuracy {num(s['accuracy'])}% ({num(s['accuracy_change'], '+.2f')} pt)"


def headline(report: Report) -> str:
    s = report.summary()
    return (f"{_qualityheadline(s)}, agreement {num(s['agreement'])}%, "
            f"BitOps {fold(s['bitops_reduction'], 'lower', 'higher')} "
            f"(sparse {fold(s['sparse_bitops_reduction'], 'lower', 'higher')}), "
            f"size {fold(s['size_reduction'], 'smaller', 'larger')} "
            f"({si(s['bytes'])}B from {si(s['baseline_bytes'])}B as float32)")


def is_regression(rows: list[dict[str, Any]]) -> bool:
    """Whether the steps carry MAE / RMSE (a regression task): those columns show only then."""
    return any(r.get("mae") is not None for r in rows)
