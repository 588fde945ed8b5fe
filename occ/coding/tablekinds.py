"""Which kind of table each group of ``ctx`` values gets: the costs compared (issue 20).

``occ.coding.adaptive`` writes each group of values (the whole tensor's, or one per
magnitude-floor bucket) under an exact ``categorical.Table``, a rounded
``logtable.LogTable`` or a binned ``bintable.BinTable``, whichever its counted bits say.
Here those bits are counted.
"""

from __future__ import annotations

import numpy as np

from occ.coding import bintable, logtable
from occ.coding.categorical import Table
from occ.coding.logtable import LogTable

EXACT, LOGT, BINNED = 0, 1, 2  # categorical.Table, logtable.LogTable, bintable.BinTable

Model = Table | LogTable | bintable.BinTable
# A group of values: its exact table, its symbols (the values), and the table's coded bits
# (``categorical.coded_bits_of``).
Group = tuple[Table, np.ndarray, float]
Costs = dict[int, tuple[float, Model]]  # {kind: (bits, table)}, in kind order


def kind_costs(groups: list[Group], wide: int) -> list[Costs]:
    """Bits (table included) of each group under each kind of table, in kind order; binned
    ones for groups of at least ``wide`` values."""
    logs = logtable.costs_of([t for t, _, _ in groups])
    return [{EXACT: (exact, t), LOGT: log, **_binned(t, wide)}
            for (t, _, exact), log in zip(groups, logs, strict=True)]


def _binned(table: Table, wide: int) -> Costs:
    """{BINNED: (bits, BinTable)} for a table of at least ``wide`` values, else {}."""
    if len(table.present) >= wide:
        fitted = bintable.fit_counts(table.present + table.lo, table.counts)
        if fitted is not None:
            return {BINNED: (fitted[1], fitted[0])}
    return {}
