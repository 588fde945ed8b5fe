"""``method: magnitude``: unstructured magnitude pruning along a schedule, masks held.

Without fine-tuning (``epochs: 0``) a schedule changes nothing: pruning the smallest
weights in steps ends where pruning them at once does, so the target is applied directly.
With fine-tuning, the masks are recomputed at each schedule level inside the one training
loop (``after_step``), and every step re-applies them, so pruned weights stay exactly
zero and no pruned weight ever comes back. That holds across stages too: a weight that is
already exactly zero (an earlier prune stage's) stays pruned, so a second stage asking for
less sparsity than the model has keeps it (and says so).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from occ import sparsity
from occ.techniques.finetune import finetune_
from occ.techniques.prune import schedule as sched
from occ.techniques.spec import StageResult

log = logging.getLogger("occ")

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.prune.config import PruneConfig


class _GradualMasks:
    """An ``after_step`` hook: raise sparsity at the schedule's boundaries, hold the masks."""

    def __init__(self, config: PruneConfig, levels: list[float], starts: list[int],
                 masks: dict[str, torch.Tensor]) -> None:
        self.config, self.levels, self.starts, self.masks = config, levels, starts, masks
        self.step, self.level = 0, 0

    def __call__(self, model: nn.Module) -> None:
        self.step += 1
        nxt = self.level + 1
        if nxt < len(self.levels) and self.step >= self.starts[nxt]:
            self.level = nxt
            self.masks = sparsity.magnitude_masks(
                model, self.levels[nxt], scope=self.config.resolved_scope,
                exclude=self.config.exclude, previous=self.masks)
        sparsity.apply_masks_(model, self.masks)


def magnitude_prune_(ctx: RunContext, config: PruneConfig) -> StageResult:
    """Prune by magnitude to ``config.sparsity`` (gradually while fine-tuning), masks held."""
    model = ctx.model
    layers = sparsity.prunable(model, config.exclude)  # RecipeError on an unknown name
    target = config.sparsity
    steps = len(ctx.loader("train")) * config.epochs
    levels = sched.levels(config.schedule, target) if steps else [target]
    already = sparsity.overall_sparsity(model, config.exclude)
    held = sparsity.nonzero_masks(model, config.exclude)  # pruning never regrows a weight
    masks = sparsity.magnitude_masks(model, levels[0], scope=config.resolved_scope,
                                     exclude=config.exclude, previous=held)
    sparsity.apply_masks_(model, masks)
    hook = _GradualMasks(config, levels, sched.boundaries(len(levels), steps), masks)
    losses = finetune_(ctx, config, description="prune fine-tune", after_step=hook)
    if hook.level < len(levels) - 1:  # fewer optimiser steps than schedule levels
        hook.masks = sparsity.magnitude_masks(model, target, scope=config.resolved_scope,
                                              exclude=config.exclude, previous=hook.masks)
        sparsity.apply_masks_(model, hook.masks)
    per_layer = sparsity.layer_sparsity(model)
    reached = sparsity.overall_sparsity(model, config.exclude)
    details = {"sparsity": reached, "target": target, "scope": config.resolved_scope,
               "schedule": {"kind": config.schedule.kind, "levels": levels},
               "layers": per_layer, "pruned_layers": list(layers),
               "excluded": list(config.exclude), "loss": losses}
    note = (f"magnitude pruning ({config.resolved_scope}) to {100 * reached:.1f}% zero "
            f"weights in {len(layers)} layers")
    if losses:
        note += f", fine-tuned {len(losses)} epoch(s) with masks held"
    notes = [note]
    if not layers:  # asked to prune, pruned nothing
        said = (f"prune(magnitude): exclude names every Conv2d / Linear layer, so nothing was "
                f"pruned (sparsity {target:g} not reached); exclude fewer layers"
                if config.exclude else "prune(magnitude): the model has no Conv2d / Linear "
                f"layer to prune (sparsity {target:g} not reached)")
        log.warning("%s", said)
        notes.append(said)
    if not steps and config.schedule.kind != "oneshot":
        notes.append(f"schedule {config.schedule.kind} prunes in steps while fine-tuning; with "
                     "epochs: 0 the target was applied at once")
    if already > target + 0.005:  # an earlier prune stage went further: nothing regrows
        said = (f"prune(magnitude): the model was already {100 * already:.1f}% zero weights "
                f"before this stage, more than its sparsity {target:g}: those stay zero "
                f"(pruning never regrows a weight), so it ends at {100 * reached:.1f}%; "
                "give it a higher sparsity, or drop it")
        log.warning("%s", said)
        notes.append(said)
    deploy = ("deployment: unstructured zeros stay in dense kernels (PyTorch, ONNX, "
              "onnxruntime's int8 kernels), so they buy no speed there; they buy size (the "
              "artifact's entropy coding) and sparse BitOps. Channel pruning is what makes "
              "the exported graph smaller and faster")
    return StageResult(details=details, notes=[*notes, deploy])
