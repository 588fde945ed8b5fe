"""The ``quantize`` stage's work: fold BN, plan bits, calibrate, QAT, freeze, record edits.

``occ.techniques.quantize.run`` holds the config and calls :func:`quantize_`; everything that needs
torch lives here. Steps, in order:

1. remember which weights are exactly zero (pruned): they are held at zero throughout;
2. fold BatchNorm into its conv (``fold_bn`` edit);
3. one spec per Conv2d / Linear in execution order (``keep_8bit`` first / last);
4. ``weight_bits: auto``: per-layer sensitivity on the val split, greedy bits for the budget;
5. calibrate weight clipping and input ranges on ``calib_samples`` training inputs;
6. ``mode: qat``: fine-tune through the one training loop (``occ.training.fit``), optionally
   with the uncompressed model as teacher (``distill: true``);
7. freeze to integers (weights int8; biases int32 at ``s_w * s_a`` where inputs are
   quantized and weights symmetric) and record the ``quantize`` edit.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ import sparsity
from occ.errors import RecipeError, StageError
from occ.techniques.quantize.calibrate import (
    all_exits,
    calibrate_acts_,
    calibrate_weights_,
    take_inputs,
)
from occ.techniques.quantize.fold import fold_bn_
from occ.techniques.quantize.layers import (
    FLOAT_BITS,
    QuantLayer,
    QuantSpec,
    freeze_,
    quantizable,
    swap_layers_,
)
from occ.techniques.quantize.mixed import allocate, sensitivity
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.quantize.config import QuantizeConfig

SIMULATION_NOTE = ("fake-quant simulates integer arithmetic in float32, so CPU latency does not "
                   "drop; BitOps and artifact bytes are the headline figures")


@torch.no_grad()
def layer_order(model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                layers: dict[str, nn.Module] | None = None) -> list[str]:
    """Paths of ``layers`` (default: the float Conv2d / Linear layers) in the order a
    forward pass runs them; layers the pass does not reach come last."""
    layers = quantizable(model) if layers is None else layers
    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=n: seen.append(n))
             for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with all_exits(model):
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    order = list(dict.fromkeys(seen))
    return order + [n for n in layers if n not in order]


def kept_layers(order: list[str], keep_8bit: tuple[str, ...]) -> set[str]:
    """The layers ``keep_8bit`` (``first`` / ``last`` in execution order) names."""
    keep = {order[0]} if "first" in keep_8bit and order else set()
    if "last" in keep_8bit and order:
        keep.add(order[-1])
    return keep


def plan_specs(order: list[str], config: QuantizeConfig) -> dict[str, QuantSpec]:
    """One spec per layer; ``keep_8bit`` layers get 8-bit weights and (quantized) inputs."""
    keep = kept_layers(order, config.keep_8bit)
    w = 8 if config.weight_bits == "auto" else int(config.weight_bits)
    a = config.act_bits
    return {n: QuantSpec(w_bits=8 if n in keep else w,
                         a_bits=(8 if a < FLOAT_BITS else a) if n in keep else a,
                         granularity=config.granularity, symmetric=config.symmetric)
            for n in order}


def _mixed_bits_(model: nn.Module, layers: dict[str, QuantLayer], ctx: RunContext,
                 config: QuantizeConfig, kept: set[str], device: torch.device,
                 fallback: list[torch.Tensor]) -> dict[str, Any]:
    """Choose and set per-layer weight bits for ``weight_bits: auto``; returns the details."""
    from occ.metrics import layer_costs

    batches = take_inputs(ctx.loader("calib"), config.calib_samples) or fallback
    free = {n: m for n, m in layers.items() if n not in kept}
    table = sensitivity(model, free, batches, device,
                        lambda m: calibrate_weights_({"": m}, config.calibration))
    table.update({n: {8: 0.0} for n in kept})
    params = {n: float(m.weight.numel()) for n, m in layers.items()}
    if config.target_avg_bits is not None:
        weights, what = params, f"target_avg_bits {config.target_avg_bits}"
        budget = config.target_avg_bits * sum(params.values())
    else:
        macs = {c.name: c.macs for c in layer_costs(model, ctx.data.input_shape, device)}
        weights = {n: float(macs.get(n, 0) * m.spec.a_bits) for n, m in layers.items()}
        budget, what = float(config.bitops_budget), f"bitops_budget {config.bitops_budget:.4g}"
    bits = allocate(table, weights, budget, fixed={n: 8 for n in kept}, what=what)
    for n, b in bits.items():
        layers[n].set_w_bits(b)
    avg = sum(params[n] * b for n, b in bits.items()) / max(sum(params.values()), 1.0)
    return {"budget": what, "avg_weight_bits": avg,
            "sensitivity": {n: {str(b): e for b, e in row.items()} for n, row in table.items()}}


def _qat_loss(ctx: RunContext, config: QuantizeConfig, device: torch.device) -> Any:
    """The QAT loss: the task's loss, or KD from the uncompressed model (``distill``).

    A model that returns one output per exit while training (early exit placed before
    quantize with ``order: as-written``) gets the mean of the loss over its exits: both
    hooks average over a list of outputs (the teacher runs once per batch).
    """
    if not config.distill:
        return ctx.loss_fn
    from occ.techniques.distill.loss import distill_loss_fn

    teacher = ctx.baseline if ctx.device == device else copy.deepcopy(ctx.baseline).to(device)
    return distill_loss_fn(teacher, hard=ctx.loss_fn)


def _zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks of the layers that already have exact zeros (pruned): True = nonzero."""
    return {n: m.weight.detach() != 0 for n, m in quantizable(model).items()
            if bool((m.weight == 0).any())}


def _details(layers: dict[str, QuantLayer], ranges: dict[str, tuple[float, float]],
             config: QuantizeConfig) -> dict[str, Any]:
    rows = {n: {"kind": type(m).__name__, "w_bits": m.spec.w_bits, "a_bits": m.spec.a_bits,
                "params": m.weight.numel(), "granularity": m.spec.granularity,
                "symmetric": m.spec.symmetric, "int_bias": m.has_int_bias,
                **({"act_range": list(ranges[n])} if n in ranges else {})}
            for n, m in layers.items()}
    total = sum(r["params"] for r in rows.values())
    avg = sum(r["params"] * r["w_bits"] for r in rows.values()) / max(total, 1)
    return {"mode": config.mode, "weight_bits": config.weight_bits, "act_bits": config.act_bits,
            "avg_weight_bits": avg, "layers": rows}


def quantize_(ctx: RunContext, config: QuantizeConfig) -> StageResult:
    """Quantize ``ctx.model`` in place as ``config`` says (see the module docstring)."""
    from occ.training import fit

    device = ctx.stage_device(config.device)
    model = ctx.model.to(device).eval()
    masks = _zero_masks(model)
    pairs = [list(p) for p in fold_bn_(model)]
    if pairs:
        ctx.record_edit("fold_bn", pairs=pairs)
    order = layer_order(model, ctx.data.input_shape, device)
    if not order:
        raise StageError("quantize: the model has no Conv2d or Linear layer to quantize")
    specs = plan_specs(order, config)
    kept = kept_layers(order, config.keep_8bit)
    layers = swap_layers_(model, specs)
    calib = take_inputs(ctx.loader("train"), config.calib_samples)
    if config.calib_samples and not calib:
        raise RecipeError("the train split is empty: no calibration data", where="calib_samples")
    mixed = None
    if config.weight_bits == "auto":
        mixed = _mixed_bits_(model, layers, ctx, config, kept, device, calib)
    calibrate_weights_(layers, config.calibration)
    ranges = calibrate_acts_(model, layers, calib, method=config.calibration,
                             percentile=config.percentile, device=device, seed=ctx.seed)
    losses: list[float] = []
    if config.mode == "qat":
        losses = fit(model, ctx.loader("train", shuffle=True), epochs=config.qat_epochs,
                     lr=config.lr, device=device, optimizer=config.optimizer,
                     loss_fn=_qat_loss(ctx, config, device),
                     max_grad_norm=config.clip_grad_norm or None,
                     after_step=(lambda m: sparsity.apply_masks_(m, masks)) if masks else None,
                     progress=ctx.progress, description="quantize QAT")
    freeze_(model, config.scale_bits, config.bias_bits)
    ctx.record_edit("quantize", layers={n: m.spec.to_dict() for n, m in layers.items()})
    details = _details(layers, ranges, config)
    details.update(folded_bn=pairs, qat_loss=losses, **({"mixed": mixed} if mixed else {}))
    return StageResult(details=details, notes=_notes(config, details, kept, masks))


def _notes(config: QuantizeConfig, details: dict[str, Any], kept: set[str],
           masks: dict[str, torch.Tensor]) -> list[str]:
    a = "float inputs" if config.act_bits == FLOAT_BITS else f"{config.act_bits}-bit inputs"
    w = (f"mixed-precision weights (average {details['avg_weight_bits']:.2f} bits, "
         f"{details['mixed']['budget']})" if config.weight_bits == "auto"
         else f"{config.weight_bits}-bit weights")
    notes = [f"{config.mode.upper()}: {w} ({config.granularity}, "
             f"{'symmetric' if config.symmetric else 'asymmetric'}), {a}, "
             f"{config.calibration} calibration; {len(details['layers'])} layers"]
    if details["folded_bn"]:
        notes.append(f"folded {len(details['folded_bn'])} BatchNorm layers into their convs")
    if kept:
        notes.append(f"kept at 8 bits: {', '.join(sorted(kept))}")
    if masks:
        zeros = sum(int((~m).sum()) for m in masks.values())
        notes.append(f"{zeros} pruned weights held at exactly zero")
    if details["avg_weight_bits"] < 8:
        notes.append("weights are stored as int8 integers with per-"
                     f"{config.granularity} scales; entropy_code packs them to their "
                     f"{details['avg_weight_bits']:.3g}-bit average or less")
    int_bias = sum(row["int_bias"] for row in details["layers"].values())
    if int_bias:
        notes.append(f"biases of {int_bias} layers stored as int32 at scale s_w * s_a (as an "
                     "integer kernel adds them), rounded at freezing after QAT")
    notes.append(SIMULATION_NOTE)
    return notes
