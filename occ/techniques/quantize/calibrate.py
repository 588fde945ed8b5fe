"""Calibration: choose weight clipping and activation ranges from a few batches.

``calibration`` applies to both:

- ``minmax``: the full observed range (weights: per-channel max |w|; inputs: min / max seen).
- ``percentile``: inputs clipped at the ``percentile``-th percentile of a sample of their
  values (outliers cost resolution everywhere else); weights keep their full range (every
  weight is known, none is an outlier of a distribution we only sampled).
- ``mse``: the range (scaled from min / max) that minimises the squared quantization error;
  for weights per output channel, for inputs over a sample of the observed values.

Activation ranges are observed in one pass with the weights already fake-quantized and the
inputs still float, so each range fits what the layer really receives.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from occ.techniques.quantize import qparams as qp
from occ.techniques.quantize.layers import FLOAT_BITS, QuantLayer

SAMPLE_CAP = 1 << 16  # values kept per layer for percentile / MSE searches
_MSE_STEPS = 40


def all_exits(model: nn.Module) -> Any:
    """Context in which an early-exit model runs every head on every input (else a no-op),
    so calibration sees each head's inputs however confident the earlier exits are."""
    every_exit = getattr(model, "evaluate_all_exits", None)
    return every_exit() if callable(every_exit) else contextlib.nullcontext()


def take_inputs(loader: Iterable, samples: int) -> list[torch.Tensor]:
    """The first ``samples`` inputs of ``loader``, as CPU batches."""
    batches, count = [], 0
    for x, _ in loader:
        batches.append(x[: samples - count])
        count += len(batches[-1])
        if count >= samples:
            break
    return batches


@torch.no_grad()
def calibrate_weights_(layers: dict[str, QuantLayer], method: str) -> None:
    """Set each layer's weight clip factors for ``method`` (``mse`` searches; others: 1)."""
    for layer in layers.values():
        if method == "mse":
            s = layer.spec
            layer.w_clip.copy_(qp.mse_weight_clip(layer.weight, s.w_bits,
                                                  channel=s.granularity == "channel",
                                                  symmetric=s.symmetric))
        else:
            layer.w_clip.fill_(1.0)


class _Observer:
    """Running min / max of a layer's input and a uniform sample of its values."""

    def __init__(self, total: int, seed: int) -> None:
        self.lo, self.hi = math.inf, -math.inf
        self.total = max(total, 1)
        self.parts: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().float()
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        flat = x.reshape(-1)
        k = min(flat.numel(), math.ceil(SAMPLE_CAP * len(x) / self.total))
        idx = torch.randint(0, flat.numel(), (k,), generator=self.gen)
        self.parts.append(flat[idx.to(flat.device)].cpu())

    def sample(self) -> torch.Tensor:
        return torch.cat(self.parts)


def _mse_range(sample: torch.Tensor, lo: float, hi: float, bits: int) -> tuple[float, float]:
    """The scaled range alpha * [lo, hi] with the least squared error on ``sample``."""
    qmin, qmax = qp.act_range(bits)
    best, best_err = (lo, hi), math.inf
    for alpha in torch.linspace(1.0 / _MSE_STEPS, 1.0, _MSE_STEPS).tolist():
        a, b = alpha * lo, alpha * hi
        scale, zp = qp.affine_qparams(torch.tensor([a]), torch.tensor([b]), qmin, qmax)
        err = float((qp.fake_quant_act(sample, scale, zp, bits) - sample).pow(2).mean())
        if err < best_err:
            best, best_err = (a, b), err
    return best


def act_range(obs: _Observer, method: str, percentile: float, bits: int) -> tuple[float, float]:
    """The input range of one layer under ``method``."""
    if not math.isfinite(obs.lo):  # the layer never ran on the calibration data
        return 0.0, 1.0
    if method == "minmax" or not obs.parts:
        return obs.lo, obs.hi
    sample = obs.sample()
    if method == "percentile":
        p = percentile / 100.0
        hi = float(torch.quantile(sample, p))
        lo = float(torch.quantile(sample, 1.0 - p)) if obs.lo < 0 else 0.0
        return min(lo, 0.0), max(hi, 0.0)
    return _mse_range(sample, obs.lo, obs.hi, bits)


@torch.no_grad()
def calibrate_acts_(model: nn.Module, layers: dict[str, QuantLayer], batches: list[torch.Tensor],
                    *, method: str, percentile: float, device: torch.device,
                    seed: int = 0) -> dict[str, tuple[float, float]]:
    """Observe every layer's input on ``batches`` and set its activation range.

    Returns:
        ``{path: (lo, hi)}`` for the layers with quantized inputs.
    """
    todo = {n: m for n, m in layers.items() if m.spec.a_bits < FLOAT_BITS}
    for m in todo.values():
        m.act_on = False
    total = sum(len(x) for x in batches)
    observers = {n: _Observer(total, seed + i) for i, n in enumerate(todo)}
    hooks = [m.register_forward_pre_hook(observers[n]) for n, m in todo.items()]
    was_training = model.training
    model.eval()
    try:
        with all_exits(model):
            for x in batches:
                model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    ranges = {}
    for name, m in todo.items():
        ranges[name] = act_range(observers[name], method, percentile, m.spec.a_bits)
        m.set_act_range(*ranges[name])
    return ranges
