"""``method: id``: Model Preserving Compression (Chee, Renz, Damle, De Sa; NeurIPS 2022).

For each prunable layer in forward order, the activations its consumer reads (after BN,
ReLU and pooling, which act channel by channel and so commute with keeping a subset of
channels) on ``samples`` train-split inputs are reduced to an R factor
(``interp.tsqr_update``; a conv's activations as (N*H*W) x C). Their interpolative
decomposition Z ~= Z[:, I] T picks the channels I to keep; the layer keeps those rows
(and bias, BN entries) and the consumer's input weights become W T^T (T (x) I_HW across
a flatten), so the consumer sees almost the activations it saw before. No fine-tuning.

Which layers: Torch-Pruning's dependency graph gives each layer's channel group; a group
is pruned only when it has one producer (Conv2d / Linear), consumers that are dense
Conv2d / Linear layers, and nothing between them but BN and channel-wise ops. Residual
joins (several producers summed), concatenations and depthwise convs are skipped; the
classifier has no consumer. Sizes: ``keep`` for every layer, or ``flops_reduction`` by
the paper's greedy rule: repeatedly shrink the layer whose ID error at a slightly
smaller size (relative, ||R22||_2 / ||Z||_2) per MAC saved is lowest, until the MACs
target is met. The ID of each layer is then recomputed on the already pruned network.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ import metrics
from occ.errors import RecipeError, StageError
from occ.sparsity import check_names, layers_of
from occ.techniques.finetune import finetune_
from occ.techniques.prune import common, interp
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.prune.config import PruneConfig

# grad_fn names (without "Backward<n>") of channel-wise ops allowed between a layer and
# its consumer: keeping a subset of channels commutes with them.
_CHANNELWISE = {
    "Relu", "Hardtanh", "LeakyRelu", "Elu", "Gelu", "Silu", "Sigmoid", "Tanh", "Hardswish",
    "Hardsigmoid", "Mish", "Softplus", "Threshold", "Clamp", "MaxPool2DWithIndices",
    "MaxPool2D", "AvgPool2D", "AdaptiveAvgPool2D", "AdaptiveMaxPool2D", "Mean", "T",
    "View", "Reshape", "UnsafeView", "Clone",
}
# Greedy sizing shrinks a layer by this share of its channels at a time (at least one).
_STEP_SHARE = 0.02


@dataclass
class Group:
    """One prunable channel group: a producer layer and the layers that read its output."""

    producer: str
    consumers: list[str]
    n: int
    keep: int = 0
    dec: interp.Decomposition | None = None
    errors: dict[int, float] = field(default_factory=dict)

    def relative_error(self, k: int) -> float:
        """ID error at size ``k`` over the activations' norm (power-iteration estimates)."""
        if k not in self.errors:
            assert self.dec is not None
            self.errors[k] = self.dec.relative_error(k, exact=False)
        return self.errors[k]


def _grad_name(node: Any) -> str:
    fn = getattr(node, "grad_fn", None)
    name = fn.name() if fn is not None and hasattr(fn, "name") else ""
    return name.split("Backward")[0]


def find_groups(model: nn.Module, example: torch.Tensor, skip: set[str],
                order: list[str]) -> tuple[
        list[Group], Any, list[str]]:
    """The ID-prunable groups in forward order, the dependency graph, and skipped layers.

    Raises:
        StageError: Torch-Pruning cannot trace the model.
    """
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as err:  # tracing runs the user's forward: any failure is possible
        raise StageError(f"prune(id): Torch-Pruning cannot trace the model: {err}") from err
    groups, skipped = [], []
    for g in dg.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        group = _eligible(g, dg, names)
        if group is not None and group.producer not in skip:
            groups.append(group)
        elif group is None:  # every layer whose output channels this group couples
            skipped += [names[i.dep.target.module] for i in g.items
                        if isinstance(i.dep.target.module, (nn.Conv2d, nn.Linear))
                        and dg.is_out_channel_pruning_fn(i.dep.handler)]
    rank = {n: i for i, n in enumerate(order)}
    groups.sort(key=lambda g: rank.get(g.producer, len(rank)))
    skipped = sorted(set(skipped) - skip, key=lambda n: rank.get(n, len(rank)))
    return groups, dg, skipped


def _eligible(group: Any, dg: Any, names: dict[nn.Module, str]) -> Group | None:
    """A ``Group`` if ``group`` is one producer feeding dense layers through channel-wise ops."""
    from torch_pruning.ops import OPTYPE

    producers, consumers = [], []
    for item in group.items:
        node, handler = item.dep.target, item.dep.handler
        out = dg.is_out_channel_pruning_fn(handler)
        if node.type in (OPTYPE.CONV, OPTYPE.LINEAR):
            if isinstance(node.module, nn.Conv2d) and node.module.groups != 1:
                return None
            (producers if out else consumers).append(names[node.module])
        elif node.type == OPTYPE.ELEMENTWISE:
            if len(node.inputs) > 1 or _grad_name(node) not in _CHANNELWISE:
                return None
        elif node.type not in (OPTYPE.BN, OPTYPE.RESHAPE):
            return None
    if len(producers) != 1 or not consumers:
        return None
    module = dict(group.items[0].dep.target.module.named_parameters())
    n = int(module["weight"].shape[0])
    return Group(producer=producers[0], consumers=list(dict.fromkeys(consumers)), n=n)


def _as_columns(x: torch.Tensor, n: int) -> torch.Tensor:
    """A consumer's input as (rows, n): conv (N*H*W, C); linear after a flatten (N*HW, C)."""
    if x.dim() == 4:  # (N, C, H, W)
        return x.permute(0, 2, 3, 1).reshape(-1, n)
    hw = x.shape[-1] // n  # (N, C*HW), channel-major as nn.Flatten writes it
    return x.reshape(-1, n, hw).transpose(1, 2).reshape(-1, n)


class _Stop(Exception):
    """Raised by a hook once the activations it needs are in: the rest of the pass is moot."""


@torch.no_grad()
def collect(model: nn.Module, groups: list[Group], inputs: list[torch.Tensor]) -> None:
    """Set each group's ``dec`` from its consumers' inputs over ``inputs`` (batches).

    Raises:
        StageError: two consumers of one group read different tensors (not foldable).
    """
    modules = dict(model.named_modules())
    qrs = {g.producer: interp.TallSkinnyQR() for g in groups}
    seen: dict[str, torch.Tensor] = {}  # this batch's activations, by producer
    # One group read by one layer: stop each forward pass once that layer's input is in.
    stop_early = len(groups) == 1 and len(groups[0].consumers) == 1

    def hook(g: Group):
        def run(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if g.producer in seen:  # a second consumer: it must read the same tensor
                if not torch.equal(seen[g.producer], x):
                    raise StageError(f"prune(id): the layers reading {g.producer!r} see "
                                     "different activations; exclude it")
                return
            seen[g.producer] = x
            qrs[g.producer].add(_as_columns(x, g.n))
            if stop_early:
                raise _Stop
        return run

    handles = [modules[c].register_forward_pre_hook(hook(g)) for g in groups for c in g.consumers]
    model.eval()
    try:
        for x in inputs:
            seen.clear()
            with contextlib.suppress(_Stop):
                model(x)
    finally:
        for h in handles:
            h.remove()
    for g in groups:
        g.dec, g.errors = interp.decompose(qrs[g.producer].result()), {}


@torch.no_grad()
def fold_(model: nn.Module, group: Group, idx: Any, t: Any) -> None:
    """Fold T into the consumers: their weights on the kept channels become W T^T.

    ``idx`` (k,) are the kept channels, ascending; ``t`` (k, n) the interpolation matrix.
    Columns of pruned channels are left as they are (Torch-Pruning removes them next).
    """
    modules = dict(model.named_modules())
    idx_t = torch.as_tensor(idx, dtype=torch.long)
    for name in group.consumers:
        w = modules[name].weight
        tt = torch.as_tensor(t, dtype=torch.float64, device=w.device)
        idx_d = idx_t.to(w.device)
        view = w.data.view(w.shape[0], group.n, -1)  # (out, n, kh*kw) or (out, n, HW)
        folded = torch.einsum("ons,jn->ojs", view.double(), tt)
        view[:, idx_d] = folded.to(w.dtype)


def prune_group_(dg: Any, model: nn.Module, group: Group, idx: Any) -> None:
    """Remove the producer's channels not in ``idx`` and everything coupled to them."""
    import torch_pruning as tp

    drop = sorted(set(range(group.n)) - {int(i) for i in idx})
    if not drop:
        return
    module = model.get_submodule(group.producer)
    fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else \
        tp.prune_linear_out_channels
    dg.get_pruning_group(module, fn, idxs=drop).prune()


def _macs_model(groups: list[Group], costs: list[metrics.LayerCost]):
    """MACs as a function of the group sizes: each layer's MACs scale with in x out."""
    as_producer = {g.producer: g for g in groups}
    as_consumer = {c: g for g in groups for c in g.consumers}
    terms = [(c.macs, as_consumer.get(c.name), as_producer.get(c.name)) for c in costs]

    def total(sizes: dict[str, int]) -> float:
        out = 0.0
        for macs, g_in, g_out in terms:
            r_in = sizes[g_in.producer] / g_in.n if g_in else 1.0
            r_out = sizes[g_out.producer] / g_out.n if g_out else 1.0
            out += macs * r_in * r_out
        return out

    return total


def greedy_sizes(groups: list[Group], costs: list[metrics.LayerCost],
                 reduction: float) -> dict[str, int]:
    """Per-group sizes meeting ``reduction`` of the MACs by the paper's greedy rule.

    Raises:
        StageError: the target cannot be met even with every group at one channel.
    """
    total = _macs_model(groups, costs)
    sizes = {g.producer: g.n for g in groups}
    full = total(sizes)
    target = (1.0 - reduction) * full
    current = full
    while current > target * (1 + 1e-12):
        best = None
        for g in groups:
            k = sizes[g.producer]
            new = max(1, k - max(1, math.ceil(_STEP_SHARE * g.n)))
            if new == k:
                continue
            saved = current - total({**sizes, g.producer: new})
            if saved <= 0:
                continue
            score = g.relative_error(new) / (saved / full)
            if best is None or score < best[0]:
                best = (score, g, new)
        if best is None:
            floor = total({g.producer: 1 for g in groups}) / full if groups else 1.0
            raise StageError(
                f"prune(id): flops_reduction {reduction} cannot be met: with every prunable "
                f"layer ({', '.join(g.producer for g in groups) or 'none'}) at one channel "
                f"{100 * floor:.1f}% of the MACs remain")
        _, g, new = best
        k = sizes[g.producer]
        # The last step takes only the channels needed to reach the target.
        while new < k - 1 and total({**sizes, g.producer: new + 1}) <= target:
            new += 1
        sizes[g.producer] = new
        current = total(sizes)
    _give_back(groups, sizes, total, target)
    return sizes


def _give_back(groups: list[Group], sizes: dict[str, int], total: Any, target: float) -> None:
    """Re-add single channels while the target still holds, biggest error drop first.

    Greedy steps overshoot where one channel is worth many MACs (a narrow conv feeding a
    wide one); this takes the slack back.
    """
    while True:
        fits = [g for g in groups if sizes[g.producer] < g.n
                and total({**sizes, g.producer: sizes[g.producer] + 1}) <= target]
        if not fits:
            return
        best = max(fits, key=lambda g: g.relative_error(sizes[g.producer])
                   - g.relative_error(sizes[g.producer] + 1))
        sizes[best.producer] += 1


def id_prune_(ctx: RunContext, config: PruneConfig) -> StageResult:
    """Prune channels by interpolative decomposition, folding T into the next layers."""
    device = ctx.stage_device(config.device)
    model = ctx.model.to(device).eval()
    example = common.example_input(ctx, device)
    check_names(config.exclude, layers_of(model))
    costs = common.layer_costs(model, ctx, device, "prune(id)")
    groups, dg, skipped = find_groups(model, example, set(config.exclude),
                                      common.forward_order(costs))
    if not groups:
        raise RecipeError("prune(id) finds no layer it can prune in this model (every layer "
                          "feeds a residual join, a concatenation, a depthwise conv or the "
                          "output, or is excluded); method: channel prunes coupled layers "
                          "together", where="method")
    inputs = [x for x, _ in common.sample_batches(ctx, config.samples, device)]
    macs_before = sum(c.macs for c in costs)
    channels_before, before = common.out_channels(model), common.snapshot(model)
    if config.keep is not None:
        sizes = {g.producer: max(1, round(config.keep * g.n)) for g in groups}
    else:
        collect(model, groups, inputs)
        sizes = greedy_sizes(groups, costs, float(config.flops_reduction))
    layers: dict[str, Any] = {}
    for g in groups:  # forward order: each ID sees the already pruned layers before it
        k = sizes[g.producer]
        if k == g.n and config.keep is None:
            continue
        collect(model, [g], inputs)
        idx, t = g.dec.interpolate(k)
        fold_(model, g, idx, t)
        prune_group_(dg, model, g, idx)
        layers[g.producer] = {"channels": [g.n, k], "error": g.relative_error(k)}
    common.record_reshape_(ctx, before, "prune(id)")
    losses = finetune_(ctx, config, description="prune(id) fine-tune")
    details = common.structure_details(model, ctx, device, channels_before, macs_before)
    details.update(layers=layers, skipped=skipped, samples=sum(len(x) for x in inputs),
                   loss=losses)
    note = (f"interpolative decomposition: {len(layers)} layers, "
            f"{100 * details['macs_reduction']:.1f}% fewer MACs")
    return StageResult(details=details, notes=[note])
