"""``method: channel``: structured pruning with Torch-Pruning (DepGraph, Fang et al. 2023).

Torch-Pruning traces the model into a dependency graph and prunes coupled channels
together (a residual join's producers, a concatenation's inputs, a depthwise conv's
in/out channels), so the slim model stays consistent; the channels really go and the
layers shrink. The last layer (the classifier: the last Conv2d / Linear the forward pass
calls) keeps its outputs, as do the ``exclude`` layers.

Targets: ``channel_ratio`` removes that share of the channels (of every layer's, or of
all together with ``scope: global``); ``flops_reduction`` prunes in small steps until
``occ.metrics`` counts the asked share of MACs gone, every layer by the same share
(``scope: layer``, the default) or ranking channels over the whole network
(``scope: global``, importance normalised per group; it counts channels, not MACs, so it
may thin a cheap layer to almost nothing). Importance: ``l1`` / ``l2`` weight norms,
``bn_scale`` (|gamma| of the following BatchNorm), ``taylor`` (|w * dL/dw| on
``samples`` train inputs).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ.errors import RecipeError, StageError
from occ.sparsity import check_names, layers_of
from occ.techniques.finetune import finetune_
from occ.techniques.prune import common
from occ.techniques.prune.config import MAX_CHANNEL_RATIO
from occ.techniques.spec import StageResult
from occ.training import LossFn

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.prune.config import PruneConfig

log = logging.getLogger("occ")

# flops_reduction: channels are pruned globally in this many steps up to _MAX_RATIO of
# all channels, no layer losing more than _MAX_RATIO of its own (so none vanishes).
_STEPS = 100
_MAX_RATIO = MAX_CHANNEL_RATIO


def _importance(kind: str, model: nn.Module) -> Any:
    import torch_pruning as tp

    if kind == "bn_scale":
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise RecipeError("bn_scale needs BatchNorm layers and the model has none; "
                              "use l1, l2 or taylor", where="importance")
        return tp.importance.BNScaleImportance()
    if kind == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if kind == "l1" else 2)


def _pruner(model: nn.Module, example: torch.Tensor, importance: Any,
            ignored: list[nn.Module], *, global_pruning: bool, ratio: float,
            steps: int) -> Any:
    import torch_pruning as tp

    try:
        return tp.pruner.BasePruner(
            model, example, importance=importance, global_pruning=global_pruning,
            pruning_ratio=ratio, max_pruning_ratio=_MAX_RATIO, iterative_steps=steps,
            ignored_layers=ignored)
    except Exception as err:  # tracing runs the user's forward: any failure is possible
        raise StageError(f"prune(channel): Torch-Pruning cannot trace the model: {err}") from err


def _gradients_(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                loss_fn: LossFn) -> None:
    """Accumulate dL/dw over ``batches`` (Taylor importance reads ``.grad``)."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        (loss_fn(model(x), y, x) * len(x)).backward()


def _step(pruner: Any, model: nn.Module, batches: list[Any] | None, loss_fn: LossFn) -> None:
    if batches is not None:
        _gradients_(model, batches, loss_fn)
    with torch.no_grad():
        pruner.step()
    model.zero_grad(set_to_none=True)


def channel_prune_(ctx: RunContext, config: PruneConfig) -> StageResult:
    """Remove channels with Torch-Pruning to ``channel_ratio`` or ``flops_reduction``."""
    device = ctx.stage_device(config.device)
    model = ctx.model.to(device).eval()
    example = common.example_input(ctx, device)
    compute = layers_of(model)
    check_names(config.exclude, compute)
    costs = common.layer_costs(model, ctx, device, "prune(channel)")
    classifier = costs[-1].name
    ignored = [compute[classifier], *(compute[n] for n in config.exclude)]
    importance = _importance(config.importance, model)
    batches = common.sample_batches(ctx, config.samples, device) \
        if config.importance == "taylor" else None
    macs_before = sum(c.macs for c in costs)
    channels_before, before = common.out_channels(model), common.snapshot(model)
    if config.channel_ratio is not None:
        pruner = _pruner(model, example, importance, ignored,
                         global_pruning=config.resolved_scope == "global",
                         ratio=config.channel_ratio, steps=1)
        _step(pruner, model, batches, ctx.loss_fn)
    else:
        target = (1.0 - float(config.flops_reduction)) * macs_before
        pruner = _pruner(model, example, importance, ignored,
                         global_pruning=config.resolved_scope == "global", ratio=_MAX_RATIO,
                         steps=_STEPS)
        for _ in range(_STEPS):
            _step(pruner, model, batches, ctx.loss_fn)
            if common.total_macs(model, ctx, device) <= target:
                break
        else:
            left = common.total_macs(model, ctx, device) / macs_before
            raise StageError(
                f"prune(channel): flops_reduction {config.flops_reduction} cannot be met: "
                f"with {100 * _MAX_RATIO:.0f}% of the channels pruned {100 * left:.1f}% of "
                f"the MACs remain (classifier {classifier!r} and excluded layers are kept)")
    del pruner
    model.eval()
    common.record_reshape_(ctx, before, "prune(channel)")
    losses = finetune_(ctx, config, description="prune(channel) fine-tune")
    details = common.structure_details(model, ctx, device, channels_before, macs_before)
    details.update(importance=config.importance, classifier=classifier, loss=losses)
    note = (f"channel pruning ({config.importance}): {100 * details['macs_reduction']:.1f}% "
            f"fewer MACs, {len(details['channels'])} layers slimmed (the exported graph "
            "has the slim shapes: fewer real MACs wherever it runs)")
    if not details["channels"]:  # asked to slim, slimmed nothing: say so, not just report it
        note = ("prune(channel) slimmed no layer (0 fewer MACs): no channel group could be "
                f"removed from the layers it may prune (all but the classifier {classifier!r} "
                f"and exclude: {list(config.exclude)}; an excluded layer keeps every channel "
                "it shares with others, e.g. through a residual add); exclude fewer layers "
                "or use method: magnitude")
        log.warning("%s", note)
    return StageResult(details=details, notes=[note])
