"""What the pruning methods share: layer lookup, recording new shapes (fine-tuning is
``occ.techniques.finetune``, shared with other techniques)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ import metrics
from occ.errors import StageError
from occ.models.edits import module_spec

if TYPE_CHECKING:
    from occ.engine.context import RunContext

COMPUTE = (nn.Conv2d, nn.Linear)


def example_input(ctx: RunContext, device: torch.device) -> torch.Tensor:
    """One all-zeros input of the data's shape, for tracing: (1, C, H, W)."""
    return torch.zeros(1, *ctx.data.input_shape, device=device)


def layer_costs(model: nn.Module, ctx: RunContext, device: torch.device,
                label: str = "prune") -> list[metrics.LayerCost]:
    """``occ.metrics.layer_costs`` of one input: Conv2d / Linear layers in forward order.

    Raises:
        StageError: the model does not run on one example input, or has no Conv2d /
            Linear layer.
    """
    shape = tuple(ctx.data.input_shape)
    try:
        costs = metrics.layer_costs(model, shape, device)
    except Exception as err:  # the user's forward: any failure is possible
        raise StageError(f"{label}: cannot trace the model on a {(1, *shape)} input: "
                         f"{err}") from err
    if not costs:
        raise StageError(f"{label}: the model has no Conv2d / Linear layer to prune")
    return costs


def forward_order(costs: list[metrics.LayerCost]) -> list[str]:
    """Layer names in the order the forward pass first calls them."""
    return list(dict.fromkeys(c.name for c in costs))


def total_macs(model: nn.Module, ctx: RunContext, device: torch.device) -> int:
    """Dense MACs of one input, from ``occ.metrics`` (the figure reports show)."""
    return sum(c.macs for c in metrics.layer_costs(model, ctx.data.input_shape, device))


def out_channels(model: nn.Module) -> dict[str, int]:
    """Output channels / features of every Conv2d / Linear layer."""
    return {n: int(m.weight.shape[0]) for n, m in model.named_modules() if isinstance(m, COMPUTE)}


def _tensor_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    own = {**dict(module.named_parameters(recurse=False)),
           **dict(module.named_buffers(recurse=False))}
    return {k: tuple(v.shape) for k, v in own.items() if v is not None}


def snapshot(model: nn.Module) -> dict[str, tuple[Any, dict[str, tuple[int, ...]]]]:
    """Every module's rebuild spec and tensor shapes, to diff after a structural change."""
    return {n: (module_spec(m), _tensor_shapes(m)) for n, m in model.named_modules()}


def record_reshape_(ctx: RunContext, before: dict[str, Any], label: str) -> dict[str, Any]:
    """Record every module whose shape changed since ``before`` as a ``reshape`` edit.

    The artifact replays it on the rebuilt architecture (``occ.models.edits.reshape``),
    so ``occ.load`` gives the slim model without the recipe.

    Raises:
        StageError: a module whose tensors changed shape is of a type ``reshape`` cannot
            rebuild (the artifact could not be loaded).
    """
    changes: dict[str, Any] = {}
    for name, module in ctx.model.named_modules():
        spec, shapes = module_spec(module), _tensor_shapes(module)
        old_spec, old_shapes = before.get(name, (None, None))
        if spec is not None and spec != old_spec:
            changes[name] = spec
        elif spec is None and old_shapes is not None and shapes != old_shapes:
            feeders = [n for n, m in ctx.model.named_modules() if n in changes
                       and isinstance(m, COMPUTE)][-2:]  # the last slimmed before it
            hint = (f"add the layer that feeds it ({' or '.join(map(repr, feeders))}) to the "
                    "stage's exclude" if feeders else
                    "exclude the Conv2d / Linear layer that feeds it")
            raise StageError(f"{label}: layer {name!r} ({type(module).__name__}) changed shape "
                             f"but occ cannot rebuild that module type; {hint}")
    if changes:
        ctx.record_edit("reshape", modules=changes)
    return changes


def structure_details(model: nn.Module, ctx: RunContext, device: torch.device,
                      channels_before: dict[str, int], macs_before: int) -> dict[str, Any]:
    """Per-layer channels before/after and the MACs reduction, for ``StageResult``."""
    after = out_channels(model)
    macs_after = total_macs(model, ctx, device)
    layers = {n: [channels_before[n], c] for n, c in after.items()
              if n in channels_before and channels_before[n] != c}
    return {"macs_before": macs_before, "macs_after": macs_after,
            "macs_reduction": 1.0 - macs_after / macs_before if macs_before else 0.0,
            "channels": layers}


def sample_batches(ctx: RunContext, samples: int, device: torch.device,
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``samples`` train-split examples, in fixed order, as (x, y) batches."""
    out, count = [], 0
    for x, y in ctx.loader("train", shuffle=False):
        take = min(len(x), samples - count)
        out.append((x[:take].to(device), y[:take].to(device)))
        count += take
        if count >= samples:
            break
    return out
