"""The built-in order: a topological sort over the precedence edges the techniques declare.

Techniques are ranked coarse to fine, static before dynamic, lossless last (Order of
Compression's DPQE, PAPERS.md §1). Each edge (``occ.techniques.spec.Edge``, declared in
its technique's ``TechniqueSpec``) says which category must come first, why, and where
that comes from. The order of any set of stages is a topological sort of the edges
between their categories (``graphlib``); stages of the same category keep the order
they were written in.

No torch here.
"""

from __future__ import annotations

import graphlib
from collections.abc import Sequence

from occ.errors import RecipeError
from occ.techniques import registry
from occ.techniques.spec import Edge

__all__ = ["Edge", "categories", "category_of_alias", "edge", "edges_between", "sort_indices",
           "violations"]


def categories() -> dict[str, str]:
    """Every category with its description, in rank order."""
    return registry.categories()


def edge(before: str, after: str) -> Edge | None:
    """The edge that puts category ``before`` ahead of ``after``, if there is one."""
    for e in registry.edges():
        if e.before == before and e.after == after:
            return e
    return None


def category_of_alias(token: str, where: str = "--techniques") -> str:
    """The category of an ``occ order`` token (``KD``, ``P``, ``channel`` ...); an unknown
    one is refused at ``where``."""
    table = registry.aliases()
    key = token if token in table else token.upper() if token.upper() in table else None
    if key is None:
        allowed = ", ".join(table)
        raise RecipeError(f"unknown technique {token!r}; allowed: {allowed}", where=where)
    return table[key][1]


def check_singletons(tokens: Sequence[str], where: str = "--techniques") -> None:
    """Refuse a technique given twice that a recipe may hold once (all but prune), as
    ``occ validate`` refuses the recipe: ``Q,Q`` printed ``Q → Q``."""
    table = registry.aliases()
    kinds = [table[t if t in table else t.upper()][0] for t in tokens]
    found = registry.second_singleton(kinds)
    if found is not None:
        i, first = found
        raise RecipeError(f"{tokens[i]!r} is a second {kinds[i]} ({tokens[first]!r} is the "
                          f"first); {registry.repeatable()}", where=where)


def sort_indices(cats: Sequence[str]) -> list[int]:
    """Indices of ``cats`` in execution order; ties keep the given order.

    Raises:
        RecipeError: on an unknown category or a cycle (impossible with the built-in
            edges, but checked, since the edges are data).
    """
    known = categories()
    for c in cats:
        if c not in known:
            raise RecipeError(f"unknown category {c!r}; allowed: {', '.join(known)}")
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for j, cj in enumerate(cats):
        sorter.add(j, *[i for i, ci in enumerate(cats) if edge(ci, cj)])
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        raise RecipeError(f"order has a cycle: {err.args[1]}") from None
    ready: set[int] = set()
    result: list[int] = []
    while sorter.is_active():
        ready.update(sorter.get_ready())
        first = min(ready)  # ties keep recipe order
        ready.discard(first)
        result.append(first)
        sorter.done(first)
    return result


def violations(cats: Sequence[str]) -> list[tuple[int, int, Edge]]:
    """Pairs (i, j), i written before j, whose edge says j's category goes first."""
    found = []
    for i, ci in enumerate(cats):
        for j in range(i + 1, len(cats)):
            e = edge(cats[j], ci)
            if e is not None:
                found.append((i, j, e))
    return found


def edges_between(cats: Sequence[str]) -> list[tuple[int, int, Edge]]:
    """Every edge between the given (already ordered) categories, as (i, j, edge)."""
    return [
        (i, j, e)
        for i, ci in enumerate(cats)
        for j, cj in enumerate(cats)
        if (e := edge(ci, cj)) is not None
    ]
