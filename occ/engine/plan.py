"""A plan: a validated recipe with its stages put in execution order, and why.

``make_plan`` applies the built-in order (``occ.techniques.order``) unless the recipe says
``order: as-written`` (or ``--keep-order``), in which case the written order is kept and
every edge it breaks becomes a warning. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import occ.techniques.order as order_mod
from occ.data.checks import unused_val_size
from occ.errors import RecipeError
from occ.recipe import Recipe, Stage, with_stages


@dataclass(frozen=True)
class Plan:
    """The recipe as it will run (``recipe.stages`` in execution order) and the reasons."""

    recipe: Recipe
    written: tuple[str, ...]
    reordered: bool
    moves: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    reasons: tuple[dict[str, str], ...] = field(default=())
    positions: tuple[int, ...] = ()
    """Each stage's index in the recipe as written, in execution order (``stages[i]``)."""

    def written_index(self, pos: int) -> int:
        """The recipe's ``stages[i]`` index of the stage that runs at ``pos``."""
        return self.positions[pos] if pos < len(self.positions) else pos

    @property
    def labels(self) -> list[str]:
        """Stage labels in execution order."""
        return [s.label for s in self.recipe.stages]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports and ``--json``."""
        return {
            "order": self.labels, "written": list(self.written), "reordered": self.reordered,
            "moves": list(self.moves), "warnings": list(self.warnings),
            "reasons": [dict(r) for r in self.reasons],
        }


def _check_requirements(ordered: tuple[Stage, ...], index: list[int], source: str) -> None:
    """Every stage's ``requires()`` runs before it in the final order, or RecipeError."""
    for pos, stage in enumerate(ordered):
        for needed, key in stage.config.requires().items():
            if not any(s.type == needed for s in ordered[:pos]):
                raise RecipeError(f"needs a {needed} stage before {stage.label} in the order "
                                  "that runs", where=f"{source}: stages[{index[pos]}].{key}")


def make_plan(recipe: Recipe, *, keep_order: bool = False) -> Plan:
    """Order ``recipe``'s stages and record every move and every broken edge."""
    stages = recipe.stages
    cats = [s.category for s in stages]
    written = tuple(s.label for s in stages)
    as_written = keep_order or recipe.order == "as-written"
    if as_written:
        index = list(range(len(stages)))
        warnings = tuple(
            f"stages[{i}] {stages[i].label} runs before stages[{j}] {stages[j].label}, "
            f"against the built-in order ({e.source}): {e.reason}"
            for i, j, e in order_mod.violations(cats)
        )
    else:
        index = order_mod.sort_indices(cats)
        warnings = ()
    unread = unused_val_size(recipe.data)
    warnings += (unread,) if unread is not None else ()
    ordered = tuple(stages[i] for i in index)
    _check_requirements(ordered, index, recipe.source)
    moves = tuple(
        f"{stages[i].label}: stages[{i}] -> position {pos}"
        for pos, i in enumerate(index) if pos != i
    )
    ordered_cats = [s.category for s in ordered]
    reasons = tuple(
        {"before": ordered[i].label, "after": ordered[j].label, "reason": e.reason,
         "source": e.source}
        for i, j, e in order_mod.edges_between(ordered_cats) if j == i + 1
    )
    return Plan(recipe=with_stages(recipe, ordered), written=written, reordered=bool(moves),
                moves=moves, warnings=warnings, reasons=reasons, positions=tuple(index))
