"""The torch-free config of ``type: early_exit`` (``occ validate`` and ``occ order`` read it)."""


from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from occ.config import check
from occ.techniques.distill.config import KD_ALPHA, KD_TEMPERATURE
from occ.techniques.spec import ModelRef, StageConfig
from occ.tolerances import ACCURACY_POINTS

if TYPE_CHECKING:
    pass

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
            layer (its classifier) when the backbone is quantized, with the quantize
            stage's ``scale_bits`` and ``bias_bits``, else keep them float;
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
    renames_modules = True  # the backbone is wrapped: its paths gain a prefix

    def references(self) -> tuple[ModelRef, ...]:
        """The ``exits`` points (checked against the model before the first stage)."""
        return tuple(ModelRef(f"exits[{i}]", name, "exit") for i, name in enumerate(self.exits))

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
        check(self.max_accuracy_drop is None or 0 <= self.max_accuracy_drop <= 100,
              "max_accuracy_drop", f"must be in [0, 100] (points), got {self.max_accuracy_drop}")
        for fixed, budget in (("threshold", "max_accuracy_drop"), ("epsilon", "max_mae_increase")):
            check(getattr(self, fixed) is None or getattr(self, budget) is None, budget,
                  f"does not apply with {fixed} given: fixed values are not calibrated to a "
                  f"budget, so it would be ignored; give one of {fixed} or {budget}")
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
