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
real (rows that leave stop computing); see ``occ.exits``.

Heads are added after quantization (early exit comes after it in the built-in order).
``quantize_heads: auto`` (the default) quantizes them like the backbone when it has
quantized layers: each head layer takes the bits, granularity and symmetry of the
backbone's last quantized layer in execution order (its classifier), trains
quantization-aware and is frozen to integers before the thresholds are calibrated, so
calibration prices the heads that will run. A conv head's BN is folded into its conv first.
``true`` insists (a float backbone is an error: put a quantize stage before early_exit);
``false`` keeps float32 heads, counted 32 × 32 bits in BitOps. See ``occ.exits.quant``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from occ.config import check
from occ.registry import StageConfig, StageResult, register_stage
from occ.stages.distill import KD_ALPHA, KD_TEMPERATURE
from occ.tolerances import ACCURACY_POINTS, MAE_SHARE

if TYPE_CHECKING:
    from occ.context import RunContext

DEFAULT_AUTO = 2  # exits placed when neither ``exits`` nor ``auto`` is given


@dataclass(frozen=True)
class EarlyExitConfig(StageConfig):
    """Config of an ``early_exit`` stage (see the module docstring).

    Attributes:
        exits, auto: exit points (module names), or how many to place by MACs.
        conv_head, head_pool: the heads' shape.
        train, loss_weights, epochs, lr, optimizer: how the heads (``heads``) or
            everything (``joint``) train; ``loss_weights``: one per head, then the
            backbone's output.
        distill, temperature, alpha: the heads also learn from the backbone's output.
        criterion: ``auto`` (resolved for the recipe's task) | ``confidence`` |
            ``entropy`` (classification) | ``agreement`` (regression).
        threshold: classification; one number or one per exit; unset: calibrated.
        epsilon: regression, target units; unset: calibrated.
        max_accuracy_drop: classification budget, points of val accuracy (unset: 0.5).
        max_mae_increase: regression budget, target units (unset: 5 % of the val MAE of
            the model before this stage, since target units differ from task to task).
        quantize_heads: ``auto``: quantize the heads like the backbone's last quantized
            layer (its classifier) when the backbone is quantized, else keep them float;
            ``true``: the same, but a float backbone is an error; ``false``: float32 heads.
    """

    exits: list[str] = field(default_factory=list)
    auto: int | None = None
    conv_head: bool = False
    head_pool: int = 1
    train: Literal["heads", "joint"] = "heads"
    loss_weights: list[float] | None = None
    epochs: int = 3
    lr: float = 0.001
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    distill: bool = False
    temperature: float = KD_TEMPERATURE
    alpha: float = KD_ALPHA
    criterion: Literal["auto", "confidence", "entropy", "agreement"] = "auto"
    threshold: float | list[float] | None = None
    epsilon: float | None = None
    max_accuracy_drop: float | None = None
    max_mae_increase: float | None = None
    quantize_heads: bool | Literal["auto"] = "auto"

    default_category = "dynamic"

    @property
    def num_exits(self) -> int:
        """How many heads the config asks for (neither exits nor auto: auto 2)."""
        return len(self.exits) if self.exits else (self.auto or DEFAULT_AUTO)

    @property
    def accuracy_budget(self) -> float:
        """``max_accuracy_drop`` with its default filled in (points)."""
        return ACCURACY_POINTS if self.max_accuracy_drop is None else self.max_accuracy_drop

    def __post_init__(self) -> None:
        check(not (self.exits and self.auto is not None), "exits",
              "give either exits (module names) or auto (a number of exits), not both")
        check(self.auto is None or self.auto >= 1, "auto", f"must be >= 1, got {self.auto}")
        check(len(set(self.exits)) == len(self.exits), "exits", "names an exit point twice")
        check(self.head_pool >= 1, "head_pool", f"must be >= 1, got {self.head_pool}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.max_accuracy_drop is None or self.max_accuracy_drop >= 0,
              "max_accuracy_drop", f"must be >= 0 (points), got {self.max_accuracy_drop}")
        check(self.max_mae_increase is None or self.max_mae_increase >= 0, "max_mae_increase",
              f"must be >= 0 (target units), got {self.max_mae_increase}")
        check(self.epsilon is None or self.epsilon > 0, "epsilon",
              f"must be > 0 (target units), got {self.epsilon}")
        n = self.num_exits
        if self.loss_weights is not None:
            check(len(self.loss_weights) == n + 1, "loss_weights",
                  f"needs {n + 1} numbers (one per exit, then the backbone's output), "
                  f"got {len(self.loss_weights)}")
            check(all(w >= 0 for w in self.loss_weights) and sum(self.loss_weights) > 0,
                  "loss_weights", "must be >= 0 and not all 0")
        if isinstance(self.threshold, list):
            check(len(self.threshold) == n, "threshold",
                  f"needs one number per exit ({n}), got {len(self.threshold)}")
        if self.criterion == "agreement":  # auto: checked once for_task resolves it
            for key in ("threshold", "max_accuracy_drop"):
                check(getattr(self, key) is None, key, "does not apply to criterion: "
                      "agreement (the regression rule, which takes epsilon and "
                      "max_mae_increase)")
            check(n >= 2, "exits", "criterion: agreement needs at least 2 exits (the first "
                  "exit has nothing to agree with)")
        elif self.criterion != "auto":
            for key in ("epsilon", "max_mae_increase"):
                check(getattr(self, key) is None, key, f"does not apply to criterion: "
                      f"{self.criterion} (a classification rule, which takes threshold and "
                      "max_accuracy_drop)")
            for t in self.given_thresholds() or []:
                check(0.0 <= t <= 1.0, "threshold",
                      f"must be in [0, 1] for {self.criterion}, got {t}")

    def for_task(self, task: str) -> EarlyExitConfig:
        """``criterion: auto`` resolved for ``task``; keys of the other task rejected."""
        if task == "regression":
            check(self.criterion in ("auto", "agreement"), "criterion",
                  f"{self.criterion} scores class probabilities; regression tasks exit on "
                  "agreement (or leave criterion unset)")
            wrong = {"threshold": "epsilon", "max_accuracy_drop": "max_mae_increase"}
            criterion = "agreement"
        else:
            check(self.criterion != "agreement", "criterion",
                  "agreement is for regression tasks; classification exits on confidence or "
                  "entropy (or leave criterion unset)")
            wrong = {"epsilon": "threshold", "max_mae_increase": "max_accuracy_drop"}
            criterion = "confidence" if self.criterion == "auto" else self.criterion
        for key, use in wrong.items():
            check(getattr(self, key) is None, key, f"does not apply to {task} tasks; use {use}")
        return self if criterion == self.criterion else replace(self, criterion=criterion)

    def requires(self) -> dict[str, str]:
        """``quantize_heads: true`` needs a quantize stage before early exit."""
        return {"quantize": "quantize_heads"} if self.quantize_heads is True else {}

    def given_thresholds(self) -> list[float] | None:
        """The exit thresholds (or epsilons) as given, one per exit; None: calibrate."""
        value = self.epsilon if self.criterion == "agreement" else self.threshold
        if value is None:
            return None
        if isinstance(value, list):
            return [float(v) for v in value]
        return [float(value)] * self.num_exits


@register_stage("early_exit", EarlyExitConfig)
def early_exit_(ctx: RunContext, config: EarlyExitConfig) -> StageResult:
    """Attach exit heads, train them and set (or calibrate) the exit thresholds."""
    from occ.errors import RecipeError
    from occ.exits import attach, auto_points
    from occ.exits.quant import freeze_heads_, head_edits
    from occ.exits.training import default_weights, exit_loss, trainable
    from occ.train import fit

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
    if like is not None:
        freeze_heads_(ee)  # before calibration: thresholds are priced on the frozen heads
    ctx.model = ee
    details = {"points": points, "train": config.train, "loss": losses,
               "heads": _heads_details(ee, like)}
    notes = [f"{len(points)} exit head(s) after {', '.join(points)} ({config.train} training)",
             _heads_note(details["heads"], config)]
    if calibrating and config.criterion == "agreement":
        details["calibration"] = _calibrate_agreement(ctx, ee, config, device, reference)
        notes.append(_agreement_note(details["calibration"]))
    elif calibrating:
        details["calibration"] = _calibrate(ctx, ee, config, device, reference)
        notes.append(_calibration_note(details["calibration"]))
    ctx.record_edit("early_exit", **ee.edit_args())
    for op, args in head_edits(ee):  # replayed after early_exit: fold_bn, then quantize
        ctx.record_edit(op, **args)
    details.update(points_kept=list(ee.points), thresholds=list(ee.thresholds))
    return StageResult(details=details, notes=notes)


def _quantize_heads_(ctx: RunContext, ee, config: EarlyExitConfig, device) -> str | None:
    """Make ``ee``'s heads fake-quant like the backbone's last quantized layer, as
    ``quantize_heads`` says; returns that layer's path (None: the heads stay float)."""
    from occ.errors import RecipeError
    from occ.exits.quant import CALIB_SAMPLES, backbone_spec, prepare_
    from occ.quant.calibrate import take_inputs

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


def _heads_details(ee, like: str | None) -> dict:
    """What the heads are: quantized like which backbone layer, with which spec."""
    from occ.quant.layers import quant_layers

    layers = quant_layers(ee.heads)
    spec = next(iter(layers.values())).spec.to_dict() if layers else None
    return {"quantized": bool(layers), "like": like, "spec": spec}


def _heads_note(heads: dict, config: EarlyExitConfig) -> str:
    if not heads["quantized"]:
        why = ("quantize_heads: false" if config.quantize_heads is False
               else "the backbone is not quantized")
        return f"heads stay float32, 32 x 32 bits in BitOps ({why})"
    s = heads["spec"]
    a = "float inputs" if s["a_bits"] == 32 else f"{s['a_bits']}-bit inputs"
    return (f"heads quantized like {heads['like']}: {s['w_bits']}-bit weights "
            f"({s['granularity']}), {a}; trained quantization-aware, frozen before "
            "calibration")


def _val_reference(ctx: RunContext, model, device, config: EarlyExitConfig):
    """What calibration compares with: the val rows ``model`` gets right ((N,) bool), or
    for regression its val outputs."""
    from occ.train import predict

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


def _calibrate(ctx: RunContext, ee, config: EarlyExitConfig, device, reference) -> dict:
    """Calibrate ``ee``'s thresholds on the val split; drop the exits that do not pay."""
    from occ.exits.calibrate import calibrate, collect

    data = collect(ee, ctx.loader("val"), device, reference)
    backbone, heads = _cost_model(ctx, ee, device)
    budget = config.accuracy_budget
    chosen, acc, lost, cost = calibrate(data, backbone, heads, budget)
    sign = 1.0 if config.criterion == "confidence" else -1.0  # calibrate: higher = surer
    points = list(ee.points)
    ee.thresholds = [2.0 if t is None else sign * t + 0.0 for t in chosen]
    keep = [e for e, t in enumerate(chosen) if t is not None]
    if len(keep) < len(chosen):
        ee.keep_exits(keep)
    return {"val_samples": data.n, "reference_accuracy": 100.0 * float(reference.float().mean()),
            "accuracy": acc, "lost": lost, "feasible": lost <= budget + 1e-9,
            "expected_bitops": cost, "backbone_bitops": backbone[-1],
            "dropped": [p for p, t in zip(points, chosen, strict=True) if t is None]}


def _calibrate_agreement(ctx: RunContext, ee, config: EarlyExitConfig, device,
                         reference) -> dict:
    """Calibrate ``ee``'s epsilons on the val split within the MAE budget; drop the exits
    that do not pay (``occ.exits.calibrate.calibrate_agreement``)."""
    from occ.exits.calibrate import calibrate_agreement, collect_regression

    data = collect_regression(ee, ctx.loader("val"), device, reference)
    backbone, heads = _cost_model(ctx, ee, device)
    budget = (MAE_SHARE * data.reference_mae if config.max_mae_increase is None
              else config.max_mae_increase)
    found = calibrate_agreement(data, backbone, heads, budget)
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


def _calibration_note(cal: dict) -> str:
    if not cal["feasible"]:
        return (f"calibration: the trained backbone alone already loses {cal['lost']:.2f} "
                "points of the val inputs the model got right; all exits dropped")
    return (f"calibrated on {cal['val_samples']} val inputs: {cal['accuracy']:.2f}% "
            f"(before {cal['reference_accuracy']:.2f}%, {cal['lost']:.2f} points lost), "
            f"expected BitOps {_speedup(cal):.2f}x lower than the backbone{_dropped(cal)}")


def _agreement_note(cal: dict) -> str:
    if not cal["feasible"]:
        return (f"calibration: the trained backbone alone already raises the val MAE by "
                f"{cal['increase']:.4g} (budget {cal['budget']:.4g}); all exits dropped")
    return (f"calibrated on {cal['val_samples']} val inputs: MAE {cal['mae']:.4g} (before "
            f"{cal['reference_mae']:.4g}, +{cal['increase']:.4g} within budget "
            f"{cal['budget']:.4g}), expected BitOps {_speedup(cal):.2f}x lower than the "
            f"backbone{_dropped(cal)}")
