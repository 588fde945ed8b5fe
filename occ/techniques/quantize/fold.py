"""Fold BatchNorm into the preceding conv / linear layer before quantizing.

Quantizing a conv whose output is then rescaled per channel by BN quantizes the wrong
weights: the deployed kernel computes ``BN(conv(x))`` as one conv with weight
``W * gamma / sqrt(var + eps)`` and bias ``beta + (b - mean) * gamma / sqrt(var + eps)``.
Folding does that rewrite in float (eval-mode statistics), so quantization sees the
weights that really run. The BN becomes ``nn.Identity`` and the conv gains a bias: a
structural change, recorded as the ``fold_bn`` edit so ``occ.load`` can rebuild it.

Finding pairs: ``torch.fx`` symbolic tracing gives the real data flow, so a BN is folded
only when it is called on the output of a conv (``Conv2d`` -> ``BatchNorm2d``, or
``Linear`` -> ``BatchNorm1d``) and that output feeds nothing else, and each module is called
exactly once. Models that do not trace fall back to adjacency inside ``nn.Sequential``
containers (a conv immediately followed by its BN in the same container), which is exact
for sequential code and misses nothing the zoo needs.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import nn

from occ.models.edits import register_edit, set_submodule

log = logging.getLogger("occ")

_PAIRS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: nn.BatchNorm2d,
    nn.Linear: nn.BatchNorm1d,
}


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    return (type(layer) in _PAIRS and type(bn) is _PAIRS[type(layer)]
            and bn.track_running_stats and bn.running_mean is not None
            and bn.num_features == layer.weight.shape[0])


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, bn) paths from the traced graph: bn(layer(x)) with nothing else using layer(x)."""
    graph = torch.fx.symbolic_trace(model).graph
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module":
            continue
        if len(prev.users) != 1 or calls[node.target] != 1 or calls[prev.target] != 1:
            continue
        if _foldable(modules[prev.target], modules[node.target]):
            pairs.append((str(prev.target), str(node.target)))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, bn) paths of adjacent children inside ``nn.Sequential`` containers."""
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (a, layer), (b, bn) in zip(children, children[1:], strict=False):
            if _foldable(layer, bn):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Paths of (conv or linear, BatchNorm) pairs that can be folded, in graph order."""
    try:
        return _fx_pairs(model)
    except Exception as err:  # tracing fails on data-dependent Python control flow
        log.info("fold_bn: torch.fx cannot trace the model (%s); using nn.Sequential "
                 "adjacency", type(err).__name__)
        return _sequential_pairs(model)


def _add_bias(layer: nn.Module) -> None:
    if layer.bias is None:
        w = layer.weight
        layer.bias = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))


@torch.no_grad()
def fold_bn_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BN into its layer in place; returns the folded (layer, bn) paths."""
    pairs = find_bn_pairs(model)
    for layer_path, bn_path in pairs:
        layer, bn = model.get_submodule(layer_path), model.get_submodule(bn_path)
        factor = torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
        shift = -bn.running_mean * factor
        if bn.affine:
            factor, shift = factor * bn.weight, shift * bn.weight + bn.bias
        _add_bias(layer)
        layer.weight.mul_(factor.reshape(-1, *([1] * (layer.weight.ndim - 1))))
        layer.bias.copy_(layer.bias * factor + shift)
        set_submodule(model, bn_path, nn.Identity())
    return pairs


@register_edit("fold_bn", meta=False)
def fold_bn_edit(model: nn.Module, pairs: list[list[str]]) -> nn.Module:
    """Edit op: give each layer a bias and replace its BN with ``nn.Identity`` (shapes only;
    the folded values come with the state dict)."""
    if not isinstance(pairs, list):
        raise ValueError("pairs must be a list of [layer, bn] paths")
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(p, str) for p in pair)):
            raise ValueError(f"bad pair {pair!r}; expected [layer, bn] paths")
        layer, bn = model.get_submodule(pair[0]), model.get_submodule(pair[1])
        if not _foldable(layer, bn):
            raise ValueError(f"{pair[0]} -> {pair[1]} is not a foldable layer / BatchNorm pair")
        _add_bias(layer)
        set_submodule(model, pair[1], nn.Identity())
    return model
