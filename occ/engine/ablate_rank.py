"""``occ ablate``'s verdicts: orders ranked, pairs compared, the built-in order placed.

Orders are ranked by BitOps among those within ``tolerance`` of the best quality (val
accuracy points, or the val MAE on a regression task; the test figures without a val
split), then the rest by quality; failed and collapsed orders last. Two orders within the
tolerance whose BitOps differ by less than ``TIE_BITOPS`` are a tie: neither is better in a
pairwise verdict, and the built-in order's rank counts only the orders before it that are
not tied with it.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import occ.techniques.order as order_mod
from occ.tolerances import ACCURACY_POINTS, MAE_SHARE, TIE_BITOPS

if TYPE_CHECKING:
    from occ.engine.ablate import OrderResult, Unit
    from occ.recipe import Recipe


def builtin_order(units: list[Unit]) -> tuple[str, ...]:
    """The order ``occ`` would use for these units."""
    cats = [u.stages[0].category for u in units]
    return tuple(units[i].label for i in order_mod.sort_indices(cats))


def _score(r: OrderResult) -> float:
    return r.metrics.get("bitops", float("inf"))


def _quality(r: OrderResult) -> float:
    """Higher is better: val accuracy (%), or minus the val MAE on a regression task (the
    test figures when there is no val split)."""
    m = r.metrics
    mae = m.get("val_mae", m.get("mae"))
    if mae is not None and (m.get("val_mae") is not None or m.get("val_accuracy") is None):
        return -mae
    acc = m.get("val_accuracy")
    return acc if acc is not None else m["accuracy"]


def default_tolerance(recipe: Recipe, baseline_mae: float | None) -> float:
    """0.5 accuracy points, or 5 % of the baseline's MAE on a regression task."""
    if recipe.task == "regression" and baseline_mae is not None:
        return MAE_SHARE * baseline_mae
    return ACCURACY_POINTS


def rank(results: list[OrderResult], tolerance: float) -> list[OrderResult]:
    """Orders within ``tolerance`` of the best quality (accuracy points, or MAE for
    regression), by BitOps; then the rest, best quality first."""
    ok = [r for r in results if r.status == "ok"]
    best = max((_quality(r) for r in ok), default=0.0)
    good = sorted((r for r in ok if _quality(r) >= best - tolerance),
                  key=lambda r: (_score(r), -_quality(r), r.order))
    rest = sorted((r for r in ok if _quality(r) < best - tolerance),
                  key=lambda r: (-_quality(r), _score(r), r.order))
    return good + rest + sorted((r for r in results if r.status != "ok"), key=lambda r: r.order)


def _tied(a: OrderResult, b: OrderResult, tolerance: float) -> bool:
    """Equal within ``tolerance`` in quality and within ``TIE_BITOPS`` in (finite) BitOps."""
    cost = sorted((_score(a), _score(b)))
    return (math.isfinite(cost[1]) and cost[1] - cost[0] <= TIE_BITOPS * cost[1]
            and abs(_quality(a) - _quality(b)) <= tolerance)


def pairwise(ranked: list[OrderResult], units: list[Unit],
             tolerance: float = 0.0) -> list[dict[str, Any]]:
    """For each pair (A, B): how often the order with A before B beat its A/B swap (a tie
    within ``tolerance`` counts half). A failed order beats nothing and loses to nothing."""
    position = {tuple(r.order): i for i, r in enumerate(ranked) if r.status == "ok"}
    builtin = builtin_order(units)
    rows = []
    for a, b in itertools.combinations(sorted(u.label for u in units), 2):
        wins = total = 0
        for order, pos in position.items():
            if order.index(a) > order.index(b):
                continue
            swapped = list(order)
            i, j = swapped.index(a), swapped.index(b)
            swapped[i], swapped[j] = b, a
            other = position.get(tuple(swapped))
            if other is None:
                continue
            total += 1
            wins += 0.5 if _tied(ranked[pos], ranked[other], tolerance) else pos < other
        builtin_first = a if builtin.index(a) < builtin.index(b) else b
        share = wins / total if total else None
        measured_first = None if share is None or share == 0.5 else (a if share > 0.5 else b)
        rows.append({"pair": [a, b], "a_before_b_better": share, "comparisons": total,
                     "builtin_first": builtin_first, "measured_first": measured_first,
                     "agrees": None if measured_first is None else measured_first == builtin_first})
    return rows


def builtin_place(ranked: list[OrderResult], tolerance: float) -> dict[str, Any]:
    """Where the built-in order is: ``builtin_rank`` (1 + the orders ranked before it that
    are not tied with it) and ``builtin_ties`` (the other orders it is tied with); a rank of
    None when no order worked (nothing is ranked)."""
    if not any(r.status == "ok" for r in ranked):
        return {"builtin_rank": None, "builtin_ties": 0}
    at = next(i for i, r in enumerate(ranked) if r.builtin)
    me = ranked[at]
    ok = me.status == "ok"
    ties = sum(1 for i, r in enumerate(ranked) if i != at and ok and r.status == "ok"
               and _tied(me, r, tolerance))
    ahead = sum(1 for r in ranked[:at] if not (ok and r.status == "ok" and _tied(me, r,
                                                                                   tolerance)))
    return {"builtin_rank": ahead + 1, "builtin_ties": ties}


__all__ = ["builtin_order", "builtin_place", "default_tolerance", "pairwise", "rank"]
