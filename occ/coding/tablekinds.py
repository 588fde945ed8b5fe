"""Which kind of table each group of ``ctx`` values gets: the costs compared (issue 20).

``occ.coding.adaptive`` writes each group of values (the whole tensor's, or one per
magnitude-floor bucket) under an exact ``categorical.Table``, a rounded
``logtable.LogTable``, a binned ``bintable.BinTable`` or no table at all (a model learned
while coding, ``occ.coding.learned``), whichever its counted bits say. Here those bits are
counted; log tables only where they could be chosen at all.
"""

from __future__ import annotations

import numpy as np

from occ.coding import bintable, learned, logtable
from occ.coding.categorical import Table
from occ.coding.logtable import LogTable

# categorical.Table, logtable.LogTable, bintable.BinTable, learned.Plan
EXACT, LOGT, BINNED, LEARNED = 0, 1, 2, 3

Model = Table | LogTable | bintable.BinTable | learned.Plan
# A group of values: its exact table, its symbols (the values), the table's coded bits
# (``categorical.coded_bits_of``) and the entropy part of those bits.
Group = tuple[Table, np.ndarray, float, float]
Costs = dict[int, tuple[float, Model]]  # {kind: (bits, table or learned plan)}, in kind order
UNIFORM = (EXACT, LOGT, LEARNED)  # kinds a stream may give every group, without kind bytes
SLACK = 1e-9  # relative: far above the rounding of any computed bit count


def kind_costs(groups: list[Group], wide: int, learn: bool = True) -> list[Costs]:
    """Bits (table included) of each group under each kind of table, in kind order; binned
    ones for groups of at least ``wide`` values, learned models with ``learn``. The log
    tables are left out when their lower bounds (entropy + table bytes: a rounded model
    cannot code below the entropy) show that ``adaptive._write_values`` would choose none."""
    others = [{**_binned(t, wide), **({LEARNED: _learned(t, values)} if learn and
                                      learned.worth_trying(t, entropy) else {})}
              for t, values, _, entropy in groups]
    floors = [entropy * (1 - SLACK) + 8 * LogTable.nbytes_of(t) for t, _, _, entropy in groups]
    if not _logs_may_win(groups, others, floors):
        return [{EXACT: (exact, t), **o} for (t, _, exact, _), o in zip(groups, others,
                                                                        strict=True)]
    logs = logtable.costs_of([t for t, _, _, _ in groups])
    return [{EXACT: (exact, t), LOGT: log, **o}
            for (t, _, exact, _), log, o in zip(groups, logs, others, strict=True)]


def uniform_bits(costs: list[Costs]) -> dict[int, float]:
    """Bits of giving every group the same kind, for each kind of ``UNIFORM`` that every
    group has."""
    return {kind: sum(c[kind][0] for c in costs) for kind in UNIFORM
            if all(kind in c for c in costs)}


def _learned(table: Table, values: np.ndarray) -> tuple[float, learned.Plan]:
    plan = learned.Plan(table, table.symbols(values))
    return plan.bits(), plan


def _binned(table: Table, wide: int) -> Costs:
    """{BINNED: (bits, BinTable)} for a table of at least ``wide`` values, else {}."""
    if len(table.present) >= wide:
        fitted = bintable.fit_counts(table.present + table.lo, table.counts)
        if fitted is not None:
            return {BINNED: (fitted[1], fitted[0])}
    return {}


def _logs_may_win(groups: list[Group], others: list[Costs], floors: list[float]) -> bool:
    """Whether log tables could change what ``adaptive._write_values`` writes, given lower
    bounds (``floors``) of their bits: not when each is above its group's cheapest other
    kind (no group picks it) and their sum above what is chosen without them (no uniform
    choice picks them either; sums of bounds bound sums, as rounding is monotone)."""
    without = [{EXACT: (exact, t), **o} for (t, _, exact, _), o in zip(groups, others,
                                                                       strict=True)]
    cheapest = [min(bits for bits, _ in c.values()) for c in without]
    if any(f <= c for f, c in zip(floors, cheapest, strict=True)):
        return True
    mixed = sum(c + 8 for c in cheapest)
    return sum(floors) <= min(mixed, *uniform_bits(without).values())
