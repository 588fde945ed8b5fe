"""Measuring a run's model: the test split's metrics, the val split's quality the gates read
(measured once per model state), and the input model's checks before any stage."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch

from occ import metrics as metrics_mod
from occ.artifact import model_io
from occ.engine.baseline_check import check_baseline
from occ.engine.context import RunContext
from occ.engine.plan import Plan
from occ.engine.run_header import run_header
from occ.quality import Quality, quality
from occ.training import predict

log = logging.getLogger("occ")


def measure_ctx(ctx: RunContext, plan: Plan, reference: torch.Tensor | None,
                ) -> tuple[metrics_mod.Metrics, torch.Tensor, torch.Tensor]:
    """All metrics of ``ctx.model`` on the test split, its outputs and the targets."""
    outputs, targets = predict(ctx.model, ctx.loader("test"), ctx.device)
    size = len(model_io.artifact_bytes(ctx.model, run_header(ctx, plan), ctx.encoding))
    m = metrics_mod.measure(ctx.model, outputs, targets, input_shape=ctx.data.input_shape,
                            device=ctx.device, reference=reference, size=size)
    return m, outputs, targets


@dataclass
class InputCheck:
    """What ``measure_input`` found about the input model before any stage."""

    metrics: metrics_mod.Metrics  # on the test split
    outputs: torch.Tensor  # its test outputs
    targets: torch.Tensor
    warning: str | None  # ``check_input_model``'s (near chance, or one class), or None
    collapsed: bool  # near chance: the recorded-accuracy warnings would say nothing more


def measure_input(ctx: RunContext, plan: Plan) -> InputCheck:
    """The input model before any stage: its metrics on the test split and
    ``check_input_model``'s verdict. The chance check reads the val split before the test
    split is read (a refusal needs none); without a val split it reads the test split's
    predictions made here, not a second pass."""
    has_val = len(ctx.data.split("val")) > 0
    q = measured(ctx, "val", baseline=True) if has_val else None
    warning = check_input_model(ctx, q) if q is not None else None
    metrics, outputs, targets = measure_ctx(ctx, plan, None)
    metrics.agreement = 100.0
    if q is None:
        q = quality(outputs, targets, ctx.data.num_classes, split="test")
        warning = check_input_model(ctx, q)
    return InputCheck(metrics, outputs, targets, warning, q.collapsed)


def check_input_model(ctx: RunContext, q: Quality) -> str | None:
    """Before any stage: the input model at chance (``occ.engine.baseline_check``) stops
    the run with the gates on (``StageError``, exit 1); with them off the same sentence is
    logged as a warning and returned (None: the model is above chance).

    ``q``: its quality on the val split, as the gates read it; on the test split only when
    there is no val split (then the gates cannot run, and only the warning is given).
    """
    has_val = len(ctx.data.split("val")) > 0
    checkpoint = ctx.recipe.model.checkpoint if ctx.recipe is not None else None
    gates_on = has_val and ctx.recipe is not None and ctx.recipe.guard.enabled
    message = check_baseline(q, gates_on=gates_on, preprocess=ctx.data.preprocess,
                             where=str(checkpoint) if checkpoint else None,
                             classes=ctx.data.classes)
    if message is not None:
        log.warning("%s", message)
    return message


def gates_unread(ctx: RunContext) -> str | None:
    """The warning (logged, and returned for the report) when the recipe's gates are on
    but the data has no val split, so no stage can be checked: a collapse would go through
    (None: the gates can run, or the recipe turned them off)."""
    recipe = ctx.recipe
    if recipe is None or not recipe.guard.enabled or len(ctx.data.split("val")) > 0:
        return None
    message = ("the quality gates are on but cannot run: the data has no val split "
               "(data.val_size: 0 or a dataset without one), so a stage that collapses the "
               "model is not caught; set data.val_size (e.g. 500), or say "
               "'guard: {enabled: false}' to run without gates")
    log.warning("%s", message)
    return message


def val_quality(ctx: RunContext, *, baseline: bool = False,
                 fresh: bool = False) -> Quality | None:
    """Val quality of ``ctx.model`` (or of the baseline) for the gates; None when the
    gates are off or there is no val split."""
    recipe = ctx.recipe
    if recipe is None or not recipe.guard.enabled or len(ctx.data.split("val")) == 0:
        return None
    return measured(ctx, "val", baseline=baseline, fresh=fresh)


def measured(ctx: RunContext, split: str, *, baseline: bool = False,
              fresh: bool = False) -> Quality:
    """Quality of ``ctx.model`` (or of the baseline) on ``split``, measured once per model
    state.

    The cache holds a weak reference to the model it measured: ``run_stage`` measures
    ``fresh`` after every stage (stages change the model in place), and a swapped-in model
    never matches.
    """
    model = ctx.baseline if baseline else ctx.model
    key = (split, "baseline" if baseline else "current")
    cached = ctx.gate_cache.get(key)
    if not fresh and cached is not None and cached[0]() is model:
        return cached[1]
    outputs, targets = predict(model, ctx.loader(split), ctx.device)
    q = quality(outputs, targets, ctx.data.num_classes, split=split)
    ctx.gate_cache[key] = (weakref.ref(model), q)
    return q


def collapse_since_input(ctx: RunContext) -> str | None:
    """Why ``ctx.model`` counts as collapsed (near chance on the val split, the test split
    without one) where the input model did not; None otherwise. ``occ ablate`` marks such
    an order: it gave "better" / "agrees" verdicts from tie-breaks between chance models."""
    split = "val" if len(ctx.data.split("val")) else "test"
    if measured(ctx, split, baseline=True).collapsed:
        return None  # an input model at chance: nothing to tell apart
    q = measured(ctx, split)
    return f"{q.split} {q.describe()}, {q.collapse()}" if q.collapsed else None
