"""The ``lowrank`` edit op: replace layers with empty factor modules of recorded ranks.

Args (plain JSON, from the artifact header, checked like untrusted input):
``layers: {path: {"method": "svd" | "tucker2", "ranks": [r] | [r_out, r_in]}}``. Each
layer at ``path`` (a ``Conv2d`` / ``Linear`` of the architecture as rebuilt so far) is
replaced by a ``Factorised`` of the same input / output, stride and padding; the tensors
are then loaded from the artifact, so ``occ.load`` gives the factorised model bit-exactly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from occ.models.edits import register_edit, set_submodule
from occ.techniques.lowrank.factor import METHODS, Plan, build


def plan_from_json(path: str, raw: Any) -> Plan:
    """The ``Plan`` a recorded entry describes; ``ValueError`` naming ``path`` otherwise."""
    if not isinstance(raw, dict) or set(raw) != {"method", "ranks"}:
        raise ValueError(f"{path}: expected {{method, ranks}}, got {raw!r}")
    method, ranks = raw["method"], raw["ranks"]
    if method not in METHODS:
        raise ValueError(f"{path}: method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(ranks, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        raise ValueError(f"{path}: ranks must be a list of ints, got {ranks!r}")
    return Plan(method, tuple(ranks))


@register_edit("lowrank")
def lowrank_edit(model: nn.Module, layers: dict[str, Any]) -> nn.Module:
    """Edit op: replace each listed layer with its (empty) factor modules."""
    if not isinstance(layers, dict):
        raise ValueError("layers must be a mapping of path -> {method, ranks}")
    for path, raw in layers.items():
        plan = plan_from_json(path, raw)
        layer = model.get_submodule(path)
        try:
            factored = build(layer, plan)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        set_submodule(model, path, factored)
    return model
