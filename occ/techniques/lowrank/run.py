"""``type: lowrank``: factorise Conv2d / Linear layers into low-rank products.

For every float ``Conv2d`` (``groups`` 1) / ``Linear`` not in ``exclude``: choose the ranks
from the target (``rank``: an absolute rank or a share of the full rank; ``energy``: the
smallest rank keeping that share of the squared singular values), by ``method`` (``auto``:
per conv, whichever of SVD / Tucker-2 has fewer parameters; Linears: SVD), and factorise
the layer when that removes at least ``min_params_saving`` of its parameters. The new
shapes are recorded as one ``lowrank`` edit, so the artifact rebuilds the factorised model.
Then fine-tune for ``epochs`` (``distill: true``: the unfactorised model teaches).

Layers already inside a factorisation (a second ``lowrank`` stage) and quantized layers
are left as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from occ import metrics
from occ.errors import StageError
from occ.models.edits import set_submodule
from occ.sparsity import check_names, layers_of
from occ.techniques.finetune import finetune_
from occ.techniques.lowrank import edit as _edit  # noqa: F401  registers the lowrank op
from occ.techniques.lowrank.factor import (
    Factorised,
    Plan,
    factor_params,
    factorise,
    layer_params,
    plan_layer,
    reconstruction_error,
)
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.lowrank.config import LowRankConfig


def candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Float Conv2d (groups 1) / Linear layers (exact types), not already factors."""
    inside = {f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, Factorised)
              for c, _ in m.named_children()}
    return {n: m for n, m in model.named_modules()
            if n and n not in inside and (type(m) is nn.Linear or (
                type(m) is nn.Conv2d and m.groups == 1))}


def choose(layer: nn.Module, config: LowRankConfig) -> Plan:
    """The plan for one layer: its method (``auto`` resolved) and ranks at the target."""
    kind, amount = config.target
    if isinstance(layer, nn.Linear) or config.method == "svd":
        return plan_layer(layer, "svd", kind, amount)
    if config.method == "tucker2":
        return plan_layer(layer, "tucker2", kind, amount)
    svd, tucker = plan_layer(layer, "svd", kind, amount), plan_layer(layer, "tucker2", kind, amount)
    return tucker if factor_params(layer, tucker) < factor_params(layer, svd) else svd


def _macs(ctx: RunContext, model: nn.Module, device: Any) -> int:
    try:
        return sum(c.macs for c in metrics.layer_costs(model, tuple(ctx.data.input_shape),
                                                       device))
    except Exception as err:  # the user's forward: any failure is possible
        raise StageError(f"lowrank: cannot trace the model on one input: {err}") from err


def lowrank_(ctx: RunContext, config: LowRankConfig) -> StageResult:
    """Factorise Conv2d / Linear layers into low-rank products (SVD, Tucker-2)."""
    model = ctx.model
    device = ctx.stage_device(config.device)
    layers = candidates(model)
    check_names(config.exclude, layers_of(model))
    macs_before = _macs(ctx, model, device)
    params_before = sum(p.numel() for p in model.parameters())
    recorded: dict[str, dict[str, Any]] = {}
    per_layer: dict[str, dict[str, Any]] = {}
    for name, layer in layers.items():
        if name in config.exclude:
            continue
        plan = choose(layer, config)
        old, new = layer_params(layer), factor_params(layer, plan)
        saving = 1.0 - new / old if old else 0.0
        entry: dict[str, Any] = {**plan.to_dict(), "params": [old, new],
                                 "saving": round(saving, 6)}
        if new >= old or saving < config.min_params_saving:
            per_layer[name] = {**entry, "factorised": False}
            continue
        factored = factorise(layer, plan)
        entry["rel_error"] = round(reconstruction_error(layer, factored), 6)
        set_submodule(model, name, factored)
        recorded[name] = plan.to_dict()
        per_layer[name] = {**entry, "factorised": True}
    if recorded:
        ctx.record_edit("lowrank", layers=recorded)
    losses = finetune_(ctx, config, description="lowrank fine-tune") if recorded else []
    macs_after = _macs(ctx, ctx.model, device)
    params_after = sum(p.numel() for p in ctx.model.parameters())
    kind, amount = config.target
    details = {"target": {kind: amount}, "layers": per_layer,
               "factorised": sorted(recorded), "params_before": params_before,
               "params_after": params_after, "macs_before": macs_before,
               "macs_after": macs_after, "loss": losses}
    if recorded:
        note = (f"low-rank: {len(recorded)} of {len(per_layer)} layers factorised, "
                f"{100 * (1 - params_after / params_before):.1f}% fewer parameters, "
                f"{100 * (1 - macs_after / macs_before):.1f}% fewer MACs")
    else:
        note = (f"low-rank: no layer saves {100 * config.min_params_saving:.0f}% of its "
                f"parameters at {kind} {amount:g}; model unchanged")
    return StageResult(details=details, notes=[note])

