"""Model quality on a split and the one definition of "near chance" (``Quality.collapsed``).

Whatever decides that a model (or an exit head) has learnt nothing reads it here: the
stage gates and the input-model check (``occ.engine.gates``,
``occ.engine.baseline_check``) and the early-exit stage's head check
(``occ.techniques.early_exit.checks``). It sits below the engine and the techniques so
both can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

CHANCE_BAND = 0.1
""""Near chance": within this share of the way from chance to 100 % (10 classes: <= 19 %);
for regression, within this share of the MAE of predicting a constant. The one definition:
the stage gates, the input-model refusal and its ``--no-guard`` warning
(``occ.engine.baseline_check``) and the early-exit head check all read ``Quality.collapsed``."""


LOPSIDED = 0.5
"""``Quality.lopsided``: at least this share of the predictions in one class, and at least
twice that class's share of the labels."""
LOPSIDED_MIN = 20
"""Predictions ``Quality.lopsided`` needs to say anything (2 of 3 is not a pattern)."""


@dataclass(frozen=True)
class Quality:
    """One model's quality on a split (``val`` for every decision).

    ``accuracy`` (percent) for class targets; ``mae`` for float targets, with
    ``constant_mae`` the MAE of predicting the targets' median (the regression "chance").
    """

    accuracy: float | None = None
    mae: float | None = None
    constant_mae: float | None = None
    classes: int = 0
    split: str = "val"
    # the class predicted most, its share of the predictions and of the labels (classifiers)
    top_class: int | None = None
    top_share: float | None = None
    top_label_share: float | None = None

    @property
    def chance(self) -> float:
        """Chance accuracy in percent (uniform over the classes)."""
        return 100.0 / max(self.classes, 1)

    @property
    def near_chance(self) -> float:
        """The accuracy at or below which a classifier counts as collapsed."""
        return self.chance + CHANCE_BAND * (100.0 - self.chance)

    @property
    def near_constant(self) -> float:
        """The MAE at or above which a regressor counts as collapsed (within the band of
        predicting a constant)."""
        return (1.0 - CHANCE_BAND) * (self.constant_mae or 0.0)

    @property
    def collapsed(self) -> bool:
        """At or near chance (classification), or about as good as a constant (regression)."""
        if self.accuracy is not None:
            return self.accuracy <= self.near_chance
        return self.mae is not None and self.mae >= self.near_constant

    @property
    def lopsided(self) -> bool:
        """Most predictions in one class, which the labels are much less often
        (``LOPSIDED``): what a classifier fed inputs unlike its training's does, even where
        it still scores above ``near_chance`` (89 % of the inputs in the class of 25 % of
        the labels scored 35.5 % on 4 classes)."""
        if self.top_share is None or self.top_label_share is None:
            return False
        return self.top_share >= LOPSIDED and self.top_share >= 2 * self.top_label_share

    def lopside(self, names: list[str] | None = None) -> str:
        """``puts 89% of the val inputs in class 2 ('two'), which is 25% of their labels``
        (``names``: the classes' names in index order, where the data has them)."""
        top = self.top_class
        named = (f" ({names[top]!r})" if names and top is not None and 0 <= top < len(names)
                 else "")
        return (f"puts {100 * (self.top_share or 0):.0f}% of the {self.split} inputs in class "
                f"{top}{named}, which is {100 * (self.top_label_share or 0):.0f}% of their "
                "labels")

    def collapse(self) -> str:
        """What ``collapsed`` means, in the words every gate uses: ``near chance (10.0% for
        10 classes; 19.0% or less counts as near)`` or ``about as good as predicting a
        constant (MAE 9.3)``."""
        if self.accuracy is not None:
            return (f"near chance ({self.chance:.1f}% for {self.classes} classes; "
                    f"{self.near_chance:.1f}% or less counts as near)")
        return f"about as good as predicting a constant (MAE {self.constant_mae:.4g})"

    def describe(self) -> str:
        """``97.20%`` or ``MAE 9.18``."""
        return f"{self.accuracy:.2f}%" if self.accuracy is not None else f"MAE {self.mae:.4g}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the report."""
        return {k: v for k, v in (("accuracy", self.accuracy), ("mae", self.mae)) if v is not None}


def quality(outputs: torch.Tensor, targets: torch.Tensor, classes: int,
            split: str = "val") -> Quality:
    """The ``Quality`` of ``outputs`` against ``targets`` (class indices or float targets)
    of ``split``."""
    if targets.is_floating_point():
        err = (outputs.reshape(targets.shape) - targets).abs().mean()
        const = (targets - targets.median()).abs().mean()
        return Quality(mae=float(err), constant_mae=float(const), classes=classes, split=split)
    predicted = outputs.argmax(dim=1)
    top, share, label_share = None, None, None
    if predicted.numel() >= LOPSIDED_MIN:
        counts = torch.bincount(predicted.reshape(-1))
        top = int(counts.argmax())
        share = int(counts[top]) / predicted.numel()
        label_share = int((targets == top).sum()) / max(targets.numel(), 1)
    return Quality(accuracy=percent(predicted == targets), classes=classes, split=split,
                   top_class=top, top_share=share, top_label_share=label_share)


def percent(hits: torch.Tensor) -> float:
    """Percent of ``hits`` (booleans) that are true: ``100 * k / n`` in float64, the
    float nearest the exact fraction (931 of 1000 reads 93.1, where ``100 * (k / n)`` read
    93.10000000000001), not through a float32 mean, whose rounding made the same
    predictions read differently in ``occ eval model.occ`` and ``model.onnx``; nan for
    none, as that mean gave."""
    return 100 * int(hits.sum()) / hits.numel() if hits.numel() else float("nan")


__all__ = ["CHANCE_BAND", "LOPSIDED", "Quality", "percent", "quality"]
