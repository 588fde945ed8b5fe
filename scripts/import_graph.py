"""The import graph of ``occ/``: modules, edges, levels, cycles, modules over 400 lines.

    python scripts/import_graph.py          # summary
    python scripts/import_graph.py --json   # the same, as JSON

Type-only imports (under ``if TYPE_CHECKING``) are left out, as import-linter does with
``exclude_type_checking_imports``. Exit status 1 when there is a cycle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grimp

MAX_LINES = 400
DATA_MODULES = {"occ.artifact.header_dict", "occ.artifact.header_dict_v3"}  # frozen: data


def _sccs(adj: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(adj):
        if v not in index:
            visit(v)
    return out


def graph_summary() -> dict:
    """Modules, edges, levels (longest import chain), cycles and long modules of ``occ``."""
    g = grimp.build_graph("occ", exclude_type_checking_imports=True)
    mods = sorted(g.modules)
    adj = {m: {b for b in g.find_modules_directly_imported_by(m) if b in g.modules} for m in mods}
    # a package's __init__ importing its own children is how packages work, not a layer
    cycles = [c for c in _sccs(adj) if len(c) > 1]
    level: dict[str, int] = {}

    def depth(m: str, seen: frozenset[str] = frozenset()) -> int:
        if m in level:
            return level[m]
        if m in seen:
            return 0
        level[m] = 1 + max((depth(d, seen | {m}) for d in adj[m]), default=0)
        return level[m]

    for m in mods:
        depth(m)
    root = Path(__file__).resolve().parents[1]
    long = {}
    for m in mods:
        if m in DATA_MODULES:
            continue
        path = root / (m.replace(".", "/") + ".py")
        if not path.exists():
            path = root / m.replace(".", "/") / "__init__.py"
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            long[m] = n
    return {"modules": len(mods), "edges": sum(len(v) for v in adj.values()),
            "levels": max(level.values()), "cycles": cycles, "over_400_lines": long}


def main() -> int:
    s = graph_summary()
    if "--json" in sys.argv:
        print(json.dumps(s, indent=1))
    else:
        print(f"{s['modules']} modules, {s['edges']} import edges, {s['levels']} levels, "
              f"{len(s['cycles'])} cycles")
        for c in s["cycles"]:
            print("  cycle:", " <-> ".join(c))
        for m, n in s["over_400_lines"].items():
            print(f"  over {MAX_LINES} lines: {m} ({n})")
    return 1 if s["cycles"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
