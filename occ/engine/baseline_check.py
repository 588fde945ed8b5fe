"""What occ says about the input model before any stage: refused (or warned about) at
chance, warned about when far below the accuracy it recorded.

The commonest silent failure of a compression run is wrong preprocessing: a network
trained with one normalisation and measured with another loses most of its accuracy, and
every later stage (QAT, fine-tuning) then retrains it to occ's preprocessing, so the
report looks fine while the model no longer works in the user's pipeline. Two checks, each
on the split that fits it:

* Near chance (``check_baseline``): the input model's quality on the val split, the split
  every decision reads, against the gates' one definition (``occ.quality.Quality.
  collapsed``). With the gates on the run stops (``StageError``, exit 1); with them off
  (``--no-guard``, ``guard: {enabled: false}``) the same sentence is the loud warning, so a
  model the gates refuse is always warned about without them. With no val split the gates
  cannot run and the test split is read for the warning.
* Far below the recorded accuracy (``recorded_warning``): the baseline's test accuracy
  against the checkpoint's own figure (``occ train`` records its test accuracy; a user's
  ``accuracy`` / ``acc`` / ``best_acc`` entry beside a state dict counts too).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from occ.errors import StageError
from occ.quality import Quality

if TYPE_CHECKING:
    from occ.engine.context import RunContext

log = logging.getLogger("occ")

RECORDED_DROP = 5.0
"""Warn when the baseline is this many points below the checkpoint's recorded accuracy."""

GAIN = 3.0
"""Warn when compression leaves the model this many points above its baseline."""

ADVICE = "data.mean / data.std / data.image_size against the pipeline the model was trained with"
"""What to check, in both warnings and the refusal."""

EVAL_ADVICE = "--mean / --std / --image-size / --channels against the pipeline it was trained with"
"""The same for ``occ eval``, in its options."""


def check_baseline(quality: Quality, *, gates_on: bool, where: str | None,
                   preprocess: dict[str, Any] | None,
                   classes: list[str] | None = None) -> str | None:
    """None when the input model's ``quality`` is above chance; else raise ``StageError``
    (``gates_on``) or return the warning to give (the gates off). A model above chance
    whose predictions are ``lopsided`` gets a warning whatever the gates.

    Args:
        quality: The input model's quality (``split`` ``val``; ``test`` without a val split).
        gates_on: The recipe's gates are on and have a val split to read.
        where: The input checkpoint's path, named first (None: a model handed in from
            Python).
        preprocess: The resolved preprocessing (``DataBundle.preprocess``), named in the
            message.
    """
    if not quality.collapsed:
        if not quality.lopsided:
            return None
        return (f"{where + ': ' if where else ''}the input model {quality.lopside(classes)} under "
                f"this recipe's preprocessing ({_describe(preprocess)}) before any stage "
                f"(it scores {quality.describe()}): a model fed inputs unlike its training's "
                f"does that; check {ADVICE}")
    said = (f"the input model scores {quality.describe()} on the {quality.split} split, "
            f"{quality.collapse()}, under this recipe's preprocessing "
            f"({_describe(preprocess)}) before any stage: check {ADVICE}, and the checkpoint")
    if gates_on:
        raise StageError(f"{said}; nothing was written ('guard: {{enabled: false}}' or "
                         "--no-guard compresses it anyway)", where=where)
    off = ("the gates are off" if quality.split == "val"
           else "there is no val split, so the gates are off")
    return f"{where + ': ' if where else ''}{said}; {off}: it is compressed anyway"


def chance_warning(quality: Quality, *, preprocess: dict[str, Any] | None, where: str,
                   classes: list[str] | None = None) -> str | None:
    """``occ eval``'s warning for a model near chance or ``lopsided`` on the test split
    under the preprocessing it was given (a plain state dict records no accuracy to compare
    with): what a wrong ``--mean`` / ``--std`` / ``--image-size`` looks like. None when
    neither."""
    if quality.collapsed:
        what = f"scores {quality.describe()}, {quality.collapse()}"
    elif quality.lopsided:
        what = f"{quality.lopside(classes)} (it scores {quality.describe()})"
    else:
        return None
    return (f"{where}: the model {what} on the test split under this preprocessing "
            f"({_describe(preprocess)}): check {EVAL_ADVICE}, or the model's classes")


def recorded_warning(accuracy: float | None, *, recorded: float | None,
                     preprocess: dict[str, Any] | None,
                     subject: str = "baseline accuracy", advice: str = ADVICE,
                     whose: str = "checkpoint", under: str = "this recipe's") -> str | None:
    """The warning for a test ``accuracy`` (percent) more than ``RECORDED_DROP`` points
    below the ``recorded`` accuracy of the file (``whose``), or ``None``: what a
    preprocessing other than the training one looks like (``occ compress``'s baseline;
    ``occ eval`` of a checkpoint or artifact, with its options' ``advice``)."""
    if recorded is None or accuracy is None or accuracy >= recorded - RECORDED_DROP:
        return None
    return (f"{subject} {accuracy:.2f}% on the test split under {under} preprocessing "
            f"({_describe(preprocess)}) is far below the {whose}'s recorded "
            f"{recorded:.2f}%: check {advice}")


def gain_warning(baseline: float | None, final: float | None, *,
                 preprocess: dict[str, Any] | None) -> str | None:
    """The warning for a compressed model ``GAIN`` points or more above its ``baseline``
    (test accuracies, percent), or ``None``.

    Compression loses accuracy or keeps it; a large gain is the mark of a baseline that was
    not measured the way it was trained: its fine-tuning stages retrained it to this
    preprocessing, so the figure is right for occ's pipeline and wrong for the user's.
    (An under-trained baseline gains too: then the warning says what to look at.)
    """
    if baseline is None or final is None or final - baseline < GAIN:
        return None
    return (f"the compressed model scores {final:.2f}% on the test split, {final - baseline:+.2f} "
            f"pt above the input model's {baseline:.2f}% under this recipe's preprocessing "
            f"({_describe(preprocess)}): compression does not usually gain accuracy; check "
            f"{ADVICE} (the stages may have retrained the model to this preprocessing), or "
            "whether the input model was trained to convergence")


def recorded_warnings(ctx: RunContext, accuracy: float | None, *,
                      chance_said: bool, val_accuracy: float | None = None) -> list[str]:
    """The warnings (logged, and returned for the report) for a baseline test ``accuracy``
    far below what its checkpoint recorded (:func:`recorded_warning`), and for a val slice
    of the train split that reads far above it (:func:`seen_val_warning`); none when the
    input model was already said to be near chance."""
    if chance_said or ctx.task != "classification" or accuracy is None:
        return []
    return [*_logged(recorded_warning(accuracy, recorded=ctx.recorded_accuracy,
                                      preprocess=ctx.data.preprocess)),
            *_logged(seen_val_warning(val_accuracy, accuracy, val_n=len(ctx.data.val),
                                      test_n=len(ctx.data.test),
                                      from_train=ctx.data.val_from_train))]


SEEN_GAP = 2.0
"""Points by which a val slice of the train split may read above the test split before it
is said to look like data the model was trained on (and 3 standard errors)."""


def seen_val_warning(val: float | None, test: float, *, val_n: int, test_n: int,
                     from_train: bool) -> str | None:
    """The warning for a val split held out of the train split (``from_train``) that scores
    ``SEEN_GAP`` points or more above the test split, beyond sampling noise (3 standard
    errors of the difference, both splits at their pooled accuracy): a model trained
    elsewhere on the whole train split has seen it, and the gates, calibration and exit
    thresholds read it as if held out."""
    if not from_train or val is None or not val_n or not test_n:
        return None
    pooled = (val * val_n + test * test_n) / (100 * (val_n + test_n))  # one accuracy, if
    noise = 100 * math.sqrt(pooled * (1 - pooled) * (1 / val_n + 1 / test_n))  # both unseen
    if val - test < max(SEEN_GAP, 3 * noise):
        return None
    return (f"the val split, {val_n} images held out of the train split, scores {val:.2f}% "
            f"against {test:.2f}% on the test split: if the model was trained on the whole "
            "train split it has seen them, and the quality gates, calibration and early-exit "
            "thresholds read them as held out; give the data a val split it did not train on "
            "(ImageFolder: a val/ folder), or train with occ train, which holds this slice out")


def gain_warnings(ctx: RunContext, baseline: float | None, final: float | None,
                  label: str | None = None) -> list[str]:
    """The warning (logged, and returned for the report) for a compressed model far above
    its baseline (:func:`gain_warning`); ``label``: the order that gained."""
    if ctx.task != "classification":
        return []
    said = gain_warning(baseline, final, preprocess=ctx.data.preprocess)
    return _logged(None if said is None else f"{label}: {said}" if label else said)


def _logged(message: str | None) -> list[str]:
    if message is None:
        return []
    log.warning("%s", message)
    return [message]


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
