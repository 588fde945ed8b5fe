"""``type: early_exit``: heads after intermediate modules; easy inputs leave early.

Exit points are module names (``exits: [layer1, layer2]``; a wrong name lists the valid
ones) or ``auto: N``, N points spaced evenly by cumulative MACs (neither: ``auto: 2``).
A head is global average pooling + linear (``head_pool: p`` pools to p×p instead;
``conv_head: true`` puts a 3×3 conv + BN + ReLU first). ``train: heads`` trains the
heads on the frozen backbone; ``joint`` trains everything on ``loss_weights`` (one per
head, then the backbone's own output); ``distill: true`` makes the heads learn from the
backbone's output as well (KD at ``temperature`` with weight ``alpha``).

The exit rule (``criterion``; ``auto``: ``confidence`` for classification, ``agreement``
for regression). Classification: ``confidence`` leaves when max softmax >= threshold,
``entropy`` when the normalised softmax entropy <= threshold. A given ``threshold`` (one
number, or one per exit) is used as is; otherwise thresholds are calibrated on the
validation split to minimise expected BitOps while at most ``max_accuracy_drop`` percent
(default 0.5) of the val inputs the model before this stage got right come out wrong (so
the accuracy stays within that many points, counting no lucky fixes).

Regression (float targets, e.g. ``mnist5k-rotation``): ``agreement`` leaves at an exit
when every output is within ``epsilon`` (target units) of the previous kept exit's; the
first kept exit has nothing to compare with and never lets a row leave, so at least 2
exits are needed. A given ``epsilon`` is used as is; otherwise epsilons are calibrated on
the validation split to minimise expected BitOps while the val rows' error grows by at
most ``max_mae_increase`` on average (target units; counting only rows that get worse
than the model before this stage, no lucky fixes). Its default is 5 % of that model's
val MAE: targets have task-specific units, so no absolute default fits them all. Heads
train on the recipe's ``loss`` (MSE or L1).

Either way, an exit that does not pay for itself is dropped, and if even the trained
backbone alone breaks the budget every exit is dropped. The model runs early exit for
real (rows that leave stop computing); see ``occ.techniques.early_exit``.

Every trained head is measured on the val split before calibration
(``details["val_heads"]``, and how many val rows take a kept exit,
``details["val_exited"]``). A head near chance (the gates' definition, ``occ.quality``)
is never kept by calibration, whatever it would save (unless the backbone's own end is
near chance too; agreement keeps it only as the reference no row leaves at): an input
that left there would get its guess (a LeNet-5 demo head at 7 % let 1.3 % of the test
digits leave and cost 0.9 points). It and kept exits that no val input takes are a stage
that does nothing useful: a warning on stderr and in the stage's notes names the head and
the options that give it more to see (``occ.techniques.early_exit.checks``).

Heads are added after quantization (early exit comes after it in the built-in order).
``quantize_heads: auto`` (the default) quantizes them like the backbone when it has
quantized layers: each head layer takes the bits, granularity and symmetry of the
backbone's last quantized layer in execution order (its classifier), trains
quantization-aware and is frozen to integers before the thresholds are calibrated, so
calibration prices the heads that will run. A conv head's BN is folded into its conv first.
``true`` insists (a float backbone is an error: put a quantize stage before early_exit);
``false`` keeps float32 heads, counted 32 × 32 bits in BitOps. See
``occ.techniques.early_exit.quant``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from occ.quality import percent
from occ.techniques.spec import StageResult
from occ.tolerances import MAE_SHARE

if TYPE_CHECKING:
    from occ.engine.context import RunContext


from occ.techniques.early_exit.config import EarlyExitConfig

log = logging.getLogger("occ")


def check_exits(ctx: RunContext, config: EarlyExitConfig) -> None:
    """Before any stage runs (``TechniqueSpec.preflight``): the named ``exits`` are valid
    cuts of the model (``split``: a module inside a residual block is not), with the error
    the stage would give after every earlier stage had trained."""
    if config.exits:
        from occ.techniques.early_exit.split import split

        split(ctx.model, config.exits)


def early_exit_(ctx: RunContext, config: EarlyExitConfig) -> StageResult:
    """Attach exit heads, train them and set (or calibrate) the exit thresholds."""
    from occ.errors import RecipeError
    from occ.techniques.early_exit.build import attach, auto_points
    from occ.techniques.early_exit.calibrate import every_exit
    from occ.techniques.early_exit.quant import freeze_heads_, freeze_settings, head_edits
    from occ.techniques.early_exit.training import default_weights, exit_loss, trainable
    from occ.training import fit

    config = config.for_task(ctx.task)  # the parser did this; library callers may not have
    device = ctx.stage_device(config.device)
    calibrating = config.given_thresholds() is None
    if calibrating and len(ctx.data.val) == 0:
        key, what = (("epsilon", "epsilon") if config.criterion == "agreement"
                     else ("threshold", "thresholds"))
        raise RecipeError(f"no validation data to calibrate {what} on (data.val_size is 0); "
                          f"set data.val_size or give {key}", where=key)
    backbone = ctx.model.to(device).eval()
    sample = next(iter(ctx.loader("train", batch_size=8)))[0].to(device)
    reference = _val_reference(ctx, backbone, device, config) if calibrating else None
    points = list(config.exits) or auto_points(backbone, config.num_exits, sample)
    ee = attach(backbone, points, sample, num_classes=ctx.data.num_classes,
                conv_head=config.conv_head, head_pool=config.head_pool,
                thresholds=config.given_thresholds(), criterion=config.criterion)
    like = _quantize_heads_(ctx, ee, config, device)
    trained = list(zip(points, ee.head_specs, strict=True))  # calibration may drop some
    weights = config.loss_weights or default_weights(len(points), config.train)
    losses: list[float] = []
    if config.epochs:
        with trainable(ee, config.train) as params:
            losses = fit(ee, ctx.loader("train", shuffle=True), epochs=config.epochs,
                         lr=config.lr, device=device, optimizer=config.optimizer, params=params,
                         loss_fn=exit_loss(weights, distill=config.distill,
                                           temperature=config.temperature, alpha=config.alpha,
                                           base=ctx.loss_fn),
                         progress=ctx.progress, description="exit heads")
    rounding = freeze_settings(ctx.recipe.stages if ctx.recipe is not None else ())
    if like is not None:  # before calibration: thresholds are priced on the frozen heads
        freeze_heads_(ee, *rounding)
    ctx.model = ee
    details = {"points": points, "train": config.train, "loss": losses,
               "heads": _heads_details(ee, like, rounding)}
    notes = [f"{len(points)} exit head(s) after {', '.join(points)} ({config.train} training)",
             _heads_note(details["heads"], config)]
    val = every_exit(ee, ctx.loader("val"), device) if len(ctx.data.val) else None
    heads = _measure_heads(ctx, trained, val)
    usable = _usable(ctx, heads, val)
    if calibrating and config.criterion == "agreement":
        details["calibration"] = _calibrate_agreement(ctx, ee, config, device, reference, val,
                                                      usable)
        notes.append(_agreement_note(details["calibration"]))
    elif calibrating:
        details["calibration"] = _calibrate(ctx, ee, config, device, reference, val, usable)
        notes.append(_calibration_note(details["calibration"]))
    ctx.record_edit("early_exit", **ee.edit_args())
    for op, args in head_edits(ee):  # replayed after early_exit: fold_bn, then quantize
        ctx.record_edit(op, **args)
    details.update(points_kept=list(ee.points), thresholds=list(ee.thresholds))
    if calibrating and not ee.points:  # a stage that changed nothing: say so, loudly
        log.warning("early_exit dropped every exit (%s): %s; the model runs without early "
                    "exit", ", ".join(points), notes[-1])
    notes += _check_heads(ee, heads, val, config, details)
    return StageResult(details=details, notes=notes)


def _measure_heads(ctx: RunContext, trained: list, val) -> list | None:
    """Every ``trained`` head ((point, spec)) measured on the val split as if every row
    left there (``occ.techniques.early_exit.checks.Head``); None without a val split."""
    from occ.techniques.early_exit.checks import measure_heads

    if val is None:
        return None
    outs, targets = val
    return measure_heads(trained, outs, targets, ctx.data.num_classes)


def _usable(ctx: RunContext, heads: list | None, val) -> list[bool] | None:
    """Which heads calibration may let rows leave at: not those near chance (whoever left
    there would get its guess), unless the backbone's own end is near chance as well
    (then a head's quality says nothing against it, and the budget decides)."""
    from occ.quality import quality

    if heads is None:
        return None
    outs, targets = val
    if quality(outs[-1], targets, ctx.data.num_classes).collapsed:
        return None
    return [not h.quality.collapsed for h in heads]


def _check_heads(ee, heads: list | None, val, config: EarlyExitConfig,
                 details: dict) -> list[str]:
    """Record the ``heads``' val quality (``details["val_heads"]``, and the val rows that
    take a kept exit); log and return the warnings of a stage that does nothing useful
    (``occ.techniques.early_exit.checks``)."""
    from occ.techniques.early_exit.checks import leaving, stage_warnings

    if heads is None:
        return ["heads not checked: the data has no val split"]
    outs, targets = val
    points = [h.point for h in heads]
    left = leaving(outs, [points.index(p) for p in ee.points], ee.thresholds, ee.criterion)
    details["val_heads"] = [{"point": h.point, **h.quality.to_dict()} for h in heads]
    details["val_exited"] = {"rows": len(targets), "left_early": left}
    found = stage_warnings(ee, heads, left, len(targets), config)
    for message in found:
        log.warning("%s", message)
    return found


def _quantize_heads_(ctx: RunContext, ee, config: EarlyExitConfig, device) -> str | None:
    """Make ``ee``'s heads fake-quant like the backbone's last quantized layer, as
    ``quantize_heads`` says; returns that layer's path (None: the heads stay float)."""
    from occ.errors import RecipeError
    from occ.techniques.early_exit.quant import CALIB_SAMPLES, backbone_spec, prepare_
    from occ.techniques.quantize.calibrate import take_inputs

    if config.quantize_heads is False:
        return None
    found = backbone_spec(ee.backbone, ctx.data.input_shape, device)
    if found is None:
        if config.quantize_heads is True:
            raise RecipeError("true needs a quantized backbone, and this model has no "
                              "quantized layer: put a quantize stage before early_exit (as "
                              "order: auto does) or leave quantize_heads: auto",
                              where="quantize_heads")
        return None
    like, spec = found
    prepare_(ee, spec, take_inputs(ctx.loader("train"), CALIB_SAMPLES), device, ctx.seed)
    return like


def _heads_details(ee, like: str | None, rounding: tuple[int | None, int | None]) -> dict:
    """What the heads are: quantized like which backbone layer, with which spec and
    scale / bias rounding."""
    from occ.techniques.quantize.layers import quant_layers

    layers = quant_layers(ee.heads)
    spec = next(iter(layers.values())).spec.to_dict() if layers else None
    scale_bits, bias_bits = rounding if layers else (None, None)
    return {"quantized": bool(layers), "like": like, "spec": spec,
            "scale_bits": scale_bits, "bias_bits": bias_bits}


def _heads_note(heads: dict, config: EarlyExitConfig) -> str:
    if not heads["quantized"]:
        why = ("quantize_heads: false" if config.quantize_heads is False
               else "the backbone is not quantized")
        return f"heads stay float32, 32 x 32 bits in BitOps ({why})"
    s = heads["spec"]
    a = "float inputs" if s["a_bits"] == 32 else f"{s['a_bits']}-bit inputs"
    return (f"heads quantized like {heads['like']}: {s['w_bits']}-bit weights "
            f"({s['granularity']}), {a}{_rounding_note(heads)}; trained quantization-aware, "
            "frozen before calibration")


def _rounding_note(heads: dict) -> str:
    parts = [f"{heads[k]}-bit {what}" for k, what in (("scale_bits", "scales"),
                                                       ("bias_bits", "biases"))
             if heads.get(k) is not None]
    return f", {' and '.join(parts)} (as the quantize stage's)" if parts else ""


def _val_reference(ctx: RunContext, model, device, config: EarlyExitConfig):
    """What calibration compares with: the val rows ``model`` gets right ((N,) bool), or
    for regression its val outputs."""
    from occ.training import predict

    outputs, targets = predict(model, ctx.loader("val"), device)
    return outputs if config.criterion == "agreement" else outputs.argmax(1) == targets


def _cost_model(ctx: RunContext, ee, device) -> tuple[list[float], list[float]]:
    """(cumulative backbone BitOps up to each exit, each head's own BitOps)."""
    from occ.metrics import layer_costs

    seg, head = ee.cost_parts(layer_costs(ee, ctx.data.input_shape, device))
    backbone, run = [], 0.0
    for s in seg:
        run += s["bitops"]
        backbone.append(run)
    return backbone, [h["bitops"] for h in head[:-1]]


def _calibrate(ctx: RunContext, ee, config: EarlyExitConfig, device, reference, val,
               usable: list[bool] | None) -> dict:
    """Calibrate ``ee``'s thresholds on the val split (``val``: every exit's outputs there);
    drop the exits that do not pay, and those not ``usable`` (near chance)."""
    from occ.techniques.early_exit.calibrate import calibrate, collect

    data = collect(ee, val, reference)
    backbone, heads = _cost_model(ctx, ee, device)
    budget = config.accuracy_budget
    chosen, acc, lost, cost = calibrate(data, backbone, heads, budget, usable)
    sign = 1.0 if config.criterion == "confidence" else -1.0  # calibrate: higher = surer
    points = list(ee.points)
    ee.thresholds = [2.0 if t is None else sign * t + 0.0 for t in chosen]
    keep = [e for e, t in enumerate(chosen) if t is not None]
    if len(keep) < len(chosen):
        ee.keep_exits(keep)
    return {"val_samples": data.n, "reference_accuracy": percent(reference),
            "accuracy": acc, "lost": lost, "feasible": lost <= budget + 1e-9, "budget": budget,
            "expected_bitops": cost, "backbone_bitops": backbone[-1],
            "dropped": [p for p, t in zip(points, chosen, strict=True) if t is None]}


def _calibrate_agreement(ctx: RunContext, ee, config: EarlyExitConfig, device, reference,
                         val, usable: list[bool] | None) -> dict:
    """Calibrate ``ee``'s epsilons on the val split (``val``: every exit's outputs there)
    within the MAE budget; drop the exits that do not pay
    (``occ.techniques.early_exit.calibrate.calibrate_agreement``)."""
    from occ.techniques.early_exit.calibrate import calibrate_agreement, collect_regression

    data = collect_regression(val, reference)
    backbone, heads = _cost_model(ctx, ee, device)
    budget = (MAE_SHARE * data.reference_mae if config.max_mae_increase is None
              else config.max_mae_increase)
    found = calibrate_agreement(data, backbone, heads, budget, usable)
    points = list(ee.points)
    ee.thresholds = [0.0 if t is None else t for t in found.epsilons]
    keep = [e for e, t in enumerate(found.epsilons) if t is not None]
    if len(keep) < len(points):
        ee.keep_exits(keep)
    return {"val_samples": data.n, "reference_mae": data.reference_mae, "mae": found.mae,
            "increase": found.increase, "budget": budget, "feasible": found.feasible,
            "expected_bitops": found.cost, "backbone_bitops": backbone[-1],
            "dropped": [p for p, t in zip(points, found.epsilons, strict=True) if t is None]}


def _speedup(cal: dict) -> float:
    return cal["backbone_bitops"] / cal["expected_bitops"] if cal["expected_bitops"] else 0.0


def _dropped(cal: dict) -> str:
    return f"; dropped {', '.join(cal['dropped'])}" if cal["dropped"] else ""


RESOLVED_INPUTS = 10  # a budget of fewer val inputs than this is said to be coarse


def _calibration_note(cal: dict) -> str:
    if not cal["feasible"]:
        return (f"calibration: the trained backbone alone already loses {cal['lost']:.2f} "
                "points of the val inputs the model got right; all exits dropped")
    change = cal["accuracy"] - cal["reference_accuracy"]
    return (f"calibrated on {cal['val_samples']} val inputs: {cal['accuracy']:.2f}% "
            f"(before {cal['reference_accuracy']:.2f}%, {change:+.2f} pt; "
            f"{cal['lost']:.2f}% of the inputs turned from right to wrong at an exit, which "
            f"the budget counts), expected BitOps {_speedup(cal):.2f}x lower than the backbone"
            f"{_dropped(cal)}{_resolution(cal)}")


def _resolution(cal: dict) -> str:
    """What a budget of a few val inputs means on test, when calibration spent it."""
    inputs = cal["budget"] * cal["val_samples"] / 100
    if cal["lost"] <= 0 or inputs >= RESOLVED_INPUTS:
        return ""
    return (f"; the budget is {inputs:.1f} of the {cal['val_samples']} val inputs: the cheapest "
            "setting within it is picked on those few, so the test split can lose more (a "
            "larger val split, data.val_size, bounds it better)")


def _agreement_note(cal: dict) -> str:
    if not cal["feasible"]:
        return (f"calibration: the trained backbone alone already raises the val MAE by "
                f"{cal['increase']:.4g} (budget {cal['budget']:.4g}); all exits dropped")
    return (f"calibrated on {cal['val_samples']} val inputs: MAE {cal['mae']:.4g} (before "
            f"{cal['reference_mae']:.4g}, +{cal['increase']:.4g} within budget "
            f"{cal['budget']:.4g}), expected BitOps {_speedup(cal):.2f}x lower than the "
            f"backbone{_dropped(cal)}")
