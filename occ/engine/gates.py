"""Quality gates: after every stage, the model is checked on the validation split.

A stage that ends at or near chance (classification), no better than predicting a
constant (regression), or that loses more than the recipe's ``guard`` allows fails the
run with ``StageError`` (exit 1) and one line naming the stage, the quality before and
after, and the likely cause. The runner checks the gate before it saves the stage's
state, so the finished earlier stages stay resumable and nothing reaches the final path.

The split is ``val``, never ``test``: gates are decisions, and decisions read the
validation split only. ``Quality`` and what counts as near chance live in ``occ.quality``
(re-exported here), one level down, so the early-exit stage reads the same definition.
"""

from __future__ import annotations

import math
import os
from typing import Any

from occ.errors import StageError
from occ.quality import Quality
from occ.recipe import GuardSpec


def check_stage(spec: GuardSpec, *, label: str, index: int, before: Quality, after: Quality,
                baseline: Quality, config: dict[str, Any], details: dict[str, Any],
                saved_dir: str) -> None:
    """Raise ``StageError`` when stage ``index`` (``label``) broke a gate.

    Args:
        spec: the recipe's ``guard``.
        before, after: val quality of the stage's input and output model.
        baseline: val quality of the input checkpoint; a baseline at chance turns the
            gates off (``Quality.collapsed``).
        config, details: the stage's config and result details (for the likely cause).
        saved_dir: where the finished earlier stages are kept (for the resume hint).
    """
    if not spec.enabled:
        return
    broken = _broken(spec, before, after, baseline)
    if broken is None:
        return
    cause = likely_cause(label, config, details,
                         cross_entropy=after.accuracy is not None).rstrip(".")
    stop = "" if cause.endswith(("?", "!")) else "."
    kept = (f"; earlier stages are kept in {saved_dir} for --resume"
            if index > 0 and os.path.isdir(saved_dir) else "")
    raise StageError(
        f"stages[{index}] {label}: {broken}; likely cause: {cause}{stop} Nothing was "
        f"written{kept} (gate: guard in the recipe, 'guard: {{enabled: false}}' or "
        "--no-guard turns it off)")


def unguarded_collapse(*, label: str, index: int, baseline: Quality, after: Quality,
                       why: str) -> str | None:
    """The loud warning for a stage that left the model near chance (``after``, on the
    test split) where no gate read it (``why``: the gates are off, or there is no val
    split): the run goes on and writes that model, so it is said. None when it did not
    collapse, or the input model (``baseline``, same split) was near chance already."""
    if baseline.collapsed or not after.collapsed:
        return None
    measure = "accuracy" if after.accuracy is not None else "MAE"
    return (f"stages[{index}] {label}: test {measure} {baseline.describe()} (input model) -> "
            f"{after.describe()}, {after.collapse()}; {why}, so nothing stops the run and "
            "the artifact it writes is this collapsed model")


def unguarded_drop(*, label: str, index: int, before: Quality, after: Quality, why: str,
                   max_drop: float | None) -> str | None:
    """The warning for a stage that lost more test accuracy than ``guard.max_stage_drop``
    (``max_drop``) allows where no gate read it (``why``), short of a collapse: the user
    turned the stop off, not the news (-76 pt to 20.4 % went by in silence). None
    otherwise, and for regression (its gate is a factor on the MAE, said by the table)."""
    if max_drop is None or before.accuracy is None or after.accuracy is None:
        return None
    drop = before.accuracy - after.accuracy
    if drop <= max_drop:
        return None
    return (f"stages[{index}] {label}: test accuracy {before.describe()} -> "
            f"{after.describe()} (-{drop:.2f} pt, more than the {max_drop:g} pt "
            f"guard.max_stage_drop allows); {why}, so nothing stops the run")


def _broken(spec: GuardSpec, before: Quality, after: Quality, baseline: Quality) -> str | None:
    """What the stage broke, or None."""
    if baseline.collapsed:  # a baseline at chance: no collapse or drop can be told from
        return None  # noise (and it is refused before any stage: baseline_check)
    if after.accuracy is not None:
        shift = f"val accuracy {before.describe()} -> {after.describe()}"
        if after.collapsed:
            return f"{shift}, {after.collapse()}"
        drop = before.accuracy - after.accuracy
        if spec.max_stage_drop is not None and drop > spec.max_stage_drop:
            return f"{shift} (-{drop:.2f} pt > guard.max_stage_drop {spec.max_stage_drop:g})"
        return None
    shift = f"val MAE {before.mae:.4g} -> {after.mae:.4g}"
    if after.collapsed:
        return f"{shift}, {after.collapse()}"
    if (spec.max_mae_factor is not None and before.mae > 0
            and after.mae > spec.max_mae_factor * before.mae):
        return (f"{shift} ({after.mae / before.mae:.2f}x > guard.max_mae_factor "
                f"{spec.max_mae_factor:g})")
    return None


DIVERGED_LOSS = 100.0
"""A classifier's mean training loss above this diverged, whatever the stage: cross-entropy
that high means the true class gets e^-100 (a uniform guess over 1,000 classes costs 6.9;
distillation's T²-scaled term stays far below it unless the student diverged)."""


def likely_cause(label: str, config: dict[str, Any], details: dict[str, Any], *,
                 cross_entropy: bool = True) -> str:
    """A short guess at why a stage broke a gate, from its config and training history.
    ``cross_entropy``: the loss is a classifier's, so one above ``DIVERGED_LOSS`` diverged
    (a regression's MSE on unscaled targets may sit that high and be fine)."""
    history = details.get("loss", details.get("qat_loss", []))  # quantize: qat_loss
    losses = [x for x in history if isinstance(x, (int, float))]
    lr = config.get("lr")
    too_high = f"learning rate too high{f' (lr {lr:g})' if lr else ''}?"
    if losses and not (math.isfinite(losses[-1])
                       and (losses[-1] <= DIVERGED_LOSS or not cross_entropy)):
        return (f"the training diverged (loss {losses[-1]:.4g} after epoch {len(losses)}): "
                f"{too_high}")
    if len(losses) >= 2 and losses[-1] >= 0.9 * losses[0]:
        return (f"the training loss did not fall after epoch 1 ({losses[0]:.4g} -> "
                f"{losses[-1]:.4g}): {too_high}")
    kind = label.split("(")[0]
    if config.get("epochs") and details.get("loss") == []:  # asked for, none ran
        return (f"its {config['epochs']} fine-tuning epoch(s) did not run: nothing was left to "
                "train (an earlier stage froze its layers, e.g. a quantize before it; see the "
                "warning above); put it before that stage, or give it nothing to fine-tune")
    if kind == "prune":
        return (f"{_prune_amount(config)} is too much for this model, or too few "
                f"fine-tuning epochs ({config.get('epochs')})?")
    if kind == "quantize":
        return _quantize_cause(config)
    if kind == "distill":
        return _distill_cause(config, details)
    if kind == "early_exit":
        return "the exits leave too early: a looser max_accuracy_drop or threshold?"
    return "the stage's settings are too aggressive for this model?"


def _distill_cause(config: dict[str, Any], details: dict[str, Any]) -> str:
    """The distill stage's guess: "too small" only for a student with fewer parameters than
    its teacher; one as large that started from random weights had too few epochs."""
    student, teacher = details.get("student") or {}, details.get("teacher") or {}
    if student.get("params", 0) >= teacher.get("params", 1) > 0:
        start = ("from random weights (init could not take the teacher's channels)"
                 if details.get("init") == "random" else "from the teacher's channels")
        return (f"the student is not smaller than the teacher, and started {start}: too few "
                f"epochs ({config.get('epochs')}) to train it?")
    return "the student is too small, or its training diverged (dead ReLUs)?"


def _prune_amount(config: dict[str, Any]) -> str:
    """The setting that says how much a prune stage removes, as the recipe gave it: the
    structured methods' ``channel_ratio`` / ``keep`` / ``flops_reduction``, else
    ``sparsity``."""
    keys = (("flops_reduction", "channel_ratio") if config.get("method") == "channel" else
            ("flops_reduction", "keep") if config.get("method") == "id" else ("sparsity",))
    return next((f"{k} {config[k]}" for k in keys if config.get(k) is not None),
                f"sparsity {config.get('sparsity')}")


def _quantize_cause(config: dict[str, Any]) -> str:
    """The quantize stage's guess: the lossy rounding options it was given name first."""
    remedy = ("more bits or more epochs" if config.get("mode") == "qat"
              else "mode qat or more bits")
    bits = (f"too few bits (weights {config.get('weight_bits')}, activations "
            f"{config.get('act_bits')}) for mode {config.get('mode')}? try {remedy}")
    rounded = [f"{key} {config[key]} ({what})" for key, what in (
        ("bias_bits", "int32 biases, where folded BatchNorm shifts live, to that many "
                      "significant bits"),
        ("scale_bits", "weight scales to that many significant bits"))
        if config.get(key) is not None]
    if not rounded:
        return bits
    return (f"{' and '.join(rounded)} may round too coarsely: try more or unset it; or {bits}")


__all__ = ["DIVERGED_LOSS", "check_stage", "likely_cause", "unguarded_collapse",
           "unguarded_drop"]
