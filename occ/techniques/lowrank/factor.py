"""Low-rank factorisations of one ``Linear`` / ``Conv2d`` and the modules that hold them.

- SVD of a Linear ``W (O, I) = U S V^T``: ``Linear(I -> r, no bias)`` with weight
  ``sqrt(S) V^T``, then ``Linear(r -> O)`` with ``U sqrt(S)`` and the original bias.
- SVD of a Conv2d (Jaderberg / Zhang-style channel decomposition): the kernel reshaped to
  ``(O, I*kh*kw)``; a kxk conv with ``r`` filters (the layer's stride, padding, dilation,
  padding mode) then a 1x1 conv ``r -> O`` with the bias.
- Tucker-2 of a Conv2d (Kim et al. 2016, "Compression of deep convolutional neural networks
  for fast and low power mobile applications"), by HOSVD: ``U_out`` / ``U_in`` are the
  leading left singular vectors of the kernel's mode-0 / mode-1 unfoldings, the core
  ``G = W x_0 U_out^T x_1 U_in^T`` (``r_out, r_in, kh, kw``). Layers: 1x1 ``I -> r_in``
  (``U_in^T``), kxk core ``r_in -> r_out``, 1x1 ``r_out -> O`` (``U_out``, bias). A mode
  kept at full rank drops its 1x1 (its orthogonal factor is folded into the core).

The decompositions run in float64 and are cast to the layer's dtype at the end. At full
rank every factorisation reproduces the layer to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

METHODS = ("svd", "tucker2")


class Factorised(nn.Sequential):
    """The factors of one layer, applied in order (an ``nn.Sequential`` of Conv2d / Linear).

    ``method`` and ``ranks`` are for display; the artifact rebuilds the factors from the
    ``lowrank`` edit (``occ.techniques.lowrank.edit``).
    """

    def __init__(self, *factors: nn.Module, method: str, ranks: tuple[int, ...]) -> None:
        super().__init__(*factors)
        self.method = method
        self.ranks = tuple(ranks)

    def extra_repr(self) -> str:
        return f"method={self.method}, ranks={list(self.ranks)}"


@dataclass(frozen=True)
class Plan:
    """How one layer is factorised: ``method`` and its ranks (svd: ``(r,)``;
    tucker2: ``(r_out, r_in)``)."""

    method: str
    ranks: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "ranks": list(self.ranks)}


def _no_rng() -> Any:
    """Building a layer draws (discarded) init weights: keep the global RNG untouched."""
    return torch.random.fork_rng(devices=[])


def full_ranks(layer: nn.Module, method: str) -> tuple[int, ...]:
    """The largest meaningful ranks: svd ``(min(O, fan_in),)``; tucker2 ``(O, I)``."""
    w = layer.weight
    out, fan_in = w.shape[0], math.prod(w.shape[1:])
    if method == "svd":
        return (min(out, fan_in),)
    return int(w.shape[0]), int(w.shape[1])


def factor_params(layer: nn.Module, plan: Plan) -> int:
    """Parameters of the factorised layer (weights of every factor + the bias)."""
    w = layer.weight
    out, cin = int(w.shape[0]), int(w.shape[1])
    k = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    bias = out if layer.bias is not None else 0
    if plan.method == "svd":
        (r,) = plan.ranks
        return r * cin * k + out * r + bias
    r_out, r_in = plan.ranks
    first = cin * r_in if r_in < cin else 0
    last = r_out * out if r_out < out else 0
    return first + r_in * r_out * k + last + bias


def layer_params(layer: nn.Module) -> int:
    """Parameters of the layer as it is (weight + bias)."""
    return sum(p.numel() for p in layer.parameters(recurse=False))


def _singular_values(mat: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(mat.detach().double())


def rank_for(values: torch.Tensor, kind: str, amount: float) -> int:
    """The rank that ``kind`` (``rank`` | ``share`` | ``energy``) and ``amount`` ask of a
    matrix with singular values ``values`` (descending)."""
    full = int(values.numel())
    if kind == "rank":
        return max(1, min(full, int(amount)))
    if kind == "share":
        return max(1, min(full, math.ceil(amount * full - 1e-9)))
    sq = values.double() ** 2
    total = float(sq.sum())
    if total <= 0.0:
        return 1
    kept = torch.cumsum(sq, 0) / total
    return max(1, min(full, int((kept < amount - 1e-12).sum()) + 1))


def unfold(weight: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding of a 4-d kernel: ``(shape[mode], rest)``."""
    return weight.movedim(mode, 0).reshape(weight.shape[mode], -1)


def plan_layer(layer: nn.Module, method: str, kind: str, amount: float) -> Plan:
    """The ranks ``method`` gives ``layer`` for the target (``kind``, ``amount``)."""
    w = layer.weight.detach()
    if method == "svd" or w.dim() == 2:
        return Plan("svd", (rank_for(_singular_values(w.reshape(w.shape[0], -1)), kind, amount),))
    r_out = rank_for(_singular_values(unfold(w, 0)), kind, amount)
    r_in = rank_for(_singular_values(unfold(w, 1)), kind, amount)
    return Plan("tucker2", (r_out, r_in))


def _conv(layer: nn.Conv2d, cin: int, cout: int, *, spatial: bool, bias: bool) -> nn.Conv2d:
    kw: dict[str, Any] = {"device": layer.weight.device, "dtype": layer.weight.dtype,
                          "bias": bias}
    if spatial:
        kw.update(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                  dilation=layer.dilation, padding_mode=layer.padding_mode)
    else:
        kw.update(kernel_size=1)
    return nn.Conv2d(cin, cout, **kw)


def build(layer: nn.Module, plan: Plan) -> Factorised:
    """Empty factor modules of ``plan``'s shapes for ``layer`` (weights not set)."""
    if plan.method not in METHODS:
        raise ValueError(f"unknown factorisation {plan.method!r}; allowed: {', '.join(METHODS)}")
    if type(layer) not in (nn.Linear, nn.Conv2d):
        raise ValueError(f"cannot factorise {type(layer).__name__}; only Conv2d and Linear")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise ValueError("cannot factorise a grouped conv")
    full = full_ranks(layer, plan.method)
    if len(plan.ranks) != len(full) or not all(
            isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= f
            for r, f in zip(plan.ranks, full, strict=True)):
        raise ValueError(f"ranks {list(plan.ranks)} do not fit a layer of full ranks {list(full)}")
    has_bias = layer.bias is not None
    w = layer.weight
    with _no_rng():
        if isinstance(layer, nn.Linear):
            if plan.method != "svd":
                raise ValueError("a Linear layer is factorised by svd only")
            (r,) = plan.ranks
            kw: dict[str, Any] = {"device": w.device, "dtype": w.dtype}
            factors: list[nn.Module] = [nn.Linear(layer.in_features, r, bias=False, **kw),
                                        nn.Linear(r, layer.out_features, bias=has_bias, **kw)]
        elif plan.method == "svd":
            (r,) = plan.ranks
            factors = [_conv(layer, layer.in_channels, r, spatial=True, bias=False),
                       _conv(layer, r, layer.out_channels, spatial=False, bias=has_bias)]
        else:
            r_out, r_in = plan.ranks
            cin, cout = layer.in_channels, layer.out_channels
            factors = []
            if r_in < cin:
                factors.append(_conv(layer, cin, r_in, spatial=False, bias=False))
            factors.append(_conv(layer, r_in, r_out, spatial=True,
                                 bias=has_bias and r_out == cout))
            if r_out < cout:
                factors.append(_conv(layer, r_out, cout, spatial=False, bias=has_bias))
    out = Factorised(*factors, method=plan.method, ranks=plan.ranks)
    out.train(layer.training)
    return out


def _leading(mat: torch.Tensor, r: int) -> torch.Tensor:
    """The ``r`` leading left singular vectors of ``mat`` (float64), sign-normalised so the
    largest entry of each is positive (a deterministic choice)."""
    u, _, _ = torch.linalg.svd(mat, full_matrices=False)
    u = u[:, :r]
    idx = u.abs().argmax(0)
    signs = torch.sign(u[idx, torch.arange(r)])
    signs[signs == 0] = 1
    return u * signs


@torch.no_grad()
def factorise(layer: nn.Module, plan: Plan) -> Factorised:
    """``layer`` factorised by ``plan`` (weights set; the bias is copied to the last factor)."""
    out = build(layer, plan)
    w = layer.weight.detach().double()
    dtype = layer.weight.dtype
    if plan.method == "svd":
        (r,) = plan.ranks
        mat = w.reshape(w.shape[0], -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        root = s[:r].sqrt()
        first = (root[:, None] * vh[:r]).reshape(r, *w.shape[1:])
        second = u[:, :r] * root[None, :]
        if isinstance(layer, nn.Conv2d):
            second = second[:, :, None, None]
        out[0].weight.copy_(first.to(dtype))
        out[1].weight.copy_(second.to(dtype))
    else:
        r_out, r_in = plan.ranks
        cout, cin = w.shape[:2]
        u_out = _leading(unfold(w, 0), r_out) if r_out < cout else torch.eye(cout, dtype=w.dtype)
        u_in = _leading(unfold(w, 1), r_in) if r_in < cin else torch.eye(cin, dtype=w.dtype)
        core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
        i = 0
        if r_in < cin:
            out[i].weight.copy_(u_in.T[:, :, None, None].to(dtype))
            i += 1
        out[i].weight.copy_(core.to(dtype))
        if r_out < cout:
            out[i + 1].weight.copy_(u_out[:, :, None, None].to(dtype))
    if layer.bias is not None:
        out[-1].bias.copy_(layer.bias.detach())
    return out


def reconstruction_error(layer: nn.Module, factored: Factorised) -> float:
    """Relative Frobenius error of the factored kernel against the layer's."""
    return float((composed_weight(factored) - layer.weight.detach().double()).norm()
                 / layer.weight.detach().double().norm().clamp_min(1e-30))


@torch.no_grad()
def composed_weight(factored: Factorised) -> torch.Tensor:
    """The single kernel (float64) the factors multiply out to (for tests and reports)."""
    mods = list(factored)
    if isinstance(mods[0], nn.Linear):
        return mods[1].weight.double() @ mods[0].weight.double()
    if factored.method == "svd":
        a, b = mods[0].weight.double(), mods[1].weight.double()[:, :, 0, 0]
        return torch.einsum("or,rikl->oikl", b, a)
    kernel = None
    for m in mods:
        wm = m.weight.double()
        if kernel is None:
            kernel = wm
        elif wm.shape[2:] == (1, 1):
            kernel = torch.einsum("or,rikl->oikl", wm[:, :, 0, 0], kernel)
        else:  # the core after a 1x1 input factor
            kernel = torch.einsum("orkl,ri->oikl", wm, kernel[:, :, 0, 0])
    assert kernel is not None
    return kernel
