"""The loud warning when a baseline measures far below what it should.

The commonest silent failure of a compression run is wrong preprocessing: a network
trained with one normalisation and measured with another loses most of its accuracy, and
every later stage (QAT, fine-tuning) then retrains it to occ's preprocessing, so the
report looks fine while the model no longer works in the user's pipeline. Before any
stage runs, the baseline's accuracy under the recipe's preprocessing is compared with
chance and with the accuracy the checkpoint recorded (``occ train``'s, or an
``accuracy`` / ``acc`` / ``best_acc`` entry beside a user's state dict).
"""

from __future__ import annotations

from typing import Any

CHANCE_FACTOR = 1.5
"""Warn when the baseline is below this multiple of chance (100 / classes)."""
RECORDED_DROP = 5.0
"""Warn when the baseline is this many points below the checkpoint's recorded accuracy."""


def baseline_warning(accuracy: float, *, num_classes: int, recorded: float | None,
                     preprocess: dict[str, Any] | None) -> str | None:
    """The warning to give for a baseline ``accuracy`` (percent), or ``None`` if it looks fine.

    Args:
        accuracy: The baseline's test accuracy under the recipe's preprocessing.
        num_classes: Classes of the data (chance is ``100 / num_classes``).
        recorded: The checkpoint's own recorded accuracy (percent), if any.
        preprocess: The resolved preprocessing (``DataBundle.preprocess``), named in the
            message.
    """
    chance = 100.0 / max(num_classes, 1)
    how = _describe(preprocess)
    if recorded is not None and accuracy < recorded - RECORDED_DROP:
        return (f"baseline accuracy {accuracy:.1f}% under this recipe's preprocessing ({how}) "
                f"is far below the checkpoint's recorded {recorded:.1f}% — check data.mean / "
                "data.std / data.image_size against the pipeline the model was trained with")
    if num_classes > 1 and accuracy < CHANCE_FACTOR * chance:
        return (f"baseline accuracy {accuracy:.1f}% under this recipe's preprocessing ({how}) "
                f"is near chance ({chance:.1f}% for {num_classes} classes) — check data.mean / "
                "data.std / data.image_size against the pipeline the model was trained with")
    return None


def _describe(pre: dict[str, Any] | None) -> str:
    if not pre:
        return "the dataset's own"
    mean = ", ".join(f"{v:g}" for v in pre.get("mean", []))
    std = ", ".join(f"{v:g}" for v in pre.get("std", []))
    size = pre.get("crop") or pre.get("resize")
    return f"mean ({mean}), std ({std})" + (f", size {size}" if size else "")


def recorded_accuracy(meta: dict[str, Any]) -> float | None:
    """The accuracy (percent) a checkpoint recorded about itself, if it did.

    occ checkpoints keep it under ``metrics.accuracy``; user checkpoints often save an
    ``accuracy`` / ``acc`` / ``best_acc`` / ``val_acc`` / ``top1`` number beside the state
    dict (a fraction in [0, 1] is read as such).
    """
    metrics = meta.get("metrics")
    if isinstance(metrics, dict) and _number(metrics.get("accuracy")) is not None:
        if metrics.get("mae") is not None:  # regression: accuracy is a within-band share
            return None
        return float(metrics["accuracy"])
    for key in ("accuracy", "acc", "best_acc", "val_acc", "top1", "acc1"):
        value = _number(meta.get(key))
        if value is not None:
            return 100.0 * value if value <= 1.0 else value
    return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)  # a 0-d tensor works too
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 100.0 else None
