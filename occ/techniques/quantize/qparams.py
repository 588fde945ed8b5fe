"""Uniform affine quantization: integer ranges, scales / zero points, fake-quant, integers.

Conventions (the same in fake-quant, freezing and loading, so the three agree bit for bit):

- Weights, symmetric: integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (narrow range, so the
  grid is symmetric about 0), zero point 0. Asymmetric: ``[-2^(b-1), 2^(b-1) - 1]`` with an
  integer zero point. Either way the range always contains 0, so a weight that is exactly 0
  (pruned) quantizes to the zero point and dequantizes to exactly 0.
- Activations (a layer's input): unsigned ``[0, 2^b - 1]`` with an integer zero point
  (0 after a ReLU), one scale per tensor.
- Scales are per output channel (``granularity: channel``, axis 0 of the weight) or one per
  tensor, shaped ``(C_out,)`` or ``(1,)``; zero points are int32 of the same shape.
- Biases (symmetric weights, quantized inputs): int32 at scale ``s_w * s_a``, the scale of
  the integer accumulator they are added to, narrow range ``[-(2^31 - 1), 2^31 - 1]``.

``fake_quant_weight`` is ``torch.fake_quantize_per_channel_affine`` (straight-through
gradient inside the clipping range); ``quantize_weight`` returns the integers *that
fake-quant used*, read back from its output, and ``dequantize`` maps them back to exactly the
fake-quant values.
"""

from __future__ import annotations

import torch

MIN_SCALE = 1e-12  # keeps 1 / scale finite for all-zero channels
BIAS_QMAX = 2**31 - 1  # int32 biases: [-BIAS_QMAX, BIAS_QMAX]


def weight_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of ``bits``-bit weight integers."""
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def act_range(bits: int) -> tuple[int, int]:
    """(qmin, qmax) of ``bits``-bit activation integers (unsigned)."""
    return 0, 2**bits - 1


def _per_channel(w: torch.Tensor, channel: bool) -> torch.Tensor:
    """``w`` as (C_out, K) when per-channel, else (1, numel)."""
    return w.reshape(w.shape[0], -1) if channel else w.reshape(1, -1)


def affine_qparams(lo: torch.Tensor, hi: torch.Tensor, qmin: int,
                   qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and int32 zero point mapping ``[lo, hi]`` (widened to contain 0) onto the grid."""
    lo = lo.clamp(max=0.0)
    hi = hi.clamp(min=0.0)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=MIN_SCALE).float()
    zero_point = torch.round(qmin - lo / scale).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def weight_qparams(w: torch.Tensor, bits: int, *, channel: bool, symmetric: bool,
                   clip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ``w`` (shape ``(C_out,)`` or ``(1,)``).

    Args:
        w: the float weight, output channels on axis 0.
        bits: weight bits (2..8).
        channel: one scale per output channel (else one per tensor).
        symmetric: zero point 0 and a range symmetric about 0.
        clip: per-scale factors in (0, 1] that shrink the min/max range (MSE calibration).
    """
    flat = _per_channel(w.detach(), channel)
    qmin, qmax = weight_range(bits, symmetric)
    if symmetric:
        amax = flat.abs().amax(dim=1)
        if clip is not None:
            amax = amax * clip
        scale = (amax / qmax).clamp(min=MIN_SCALE).float()
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    if clip is not None:
        lo, hi = lo * clip, hi * clip
    return affine_qparams(lo, hi, qmin, qmax)


def fake_quant_weight(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                      bits: int, symmetric: bool) -> torch.Tensor:
    """Fake-quantized ``w`` (straight-through gradient inside the range)."""
    qmin, qmax = weight_range(bits, symmetric)
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(w, scale, zero_point, qmin, qmax)
    return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, qmin, qmax)


def _bcast(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A ``(C,)`` or ``(1,)`` tensor shaped to broadcast over axis 0 of an ``ndim`` tensor."""
    return t.reshape(-1, *([1] * (ndim - 1)))


def quantize_weight(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                    bits: int, symmetric: bool) -> torch.Tensor:
    """The int8 integers fake-quant rounds ``w`` to.

    They are read back from fake-quant's own output (``fq / scale`` is within float error of
    an integer, far from a rounding boundary), so ``dequantize`` of them equals that output
    exactly whatever rounding the kernel used internally.
    """
    fq = fake_quant_weight(w.detach(), scale, zero_point, bits, symmetric)
    q = torch.round(fq / _bcast(scale, w.ndim)) + _bcast(zero_point, w.ndim)
    qmin, qmax = weight_range(bits, symmetric)
    return q.clamp(qmin, qmax).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Float weights ``(q - zero_point) * scale`` (per output channel or per tensor)."""
    zp = _bcast(zero_point, q.ndim).float()
    return (q.float() - zp) * _bcast(scale, q.ndim)


def round_scale(scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Float32 scales rounded *up* to ``bits`` significant bits (issue 20).

    The artifact then codes each scale in about ``bits`` bits plus its exponent instead of
    32 (the low mantissa bytes are zero). Rounding up never narrows the grid's range, so
    no weight is clipped that was not before; the grid coarsens by less than 2^(1-bits).
    Done at freezing, before the integers are taken, so the model evaluated is the one
    decoded.
    """
    mantissa, exponent = torch.frexp(scale.double())  # mantissa in [0.5, 1)
    rounded = torch.ceil(torch.ldexp(mantissa, torch.tensor(bits))) / 2.0 ** bits
    return torch.ldexp(rounded, exponent).float()


def bias_scale(w_scale: torch.Tensor, act_scale: torch.Tensor) -> torch.Tensor:
    """``s_w * s_a`` in float32: the scale of an int32 bias, ``(C_out,)`` or ``(1,)``."""
    return w_scale * act_scale


def round_bias(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer bias ``q`` rounded to multiples of ``2^s``: the smallest ``s`` that leaves
    ``max |q| >> s`` within ``bits`` signed bits (to nearest, ties to even; ``q`` unchanged if it
    already fits)."""
    top = int(q.abs().max()) if q.numel() else 0
    shift = max(0, top.bit_length() - (bits - 1))
    if not shift:
        return q
    step = float(1 << shift)
    r = torch.round(q.double() / step) * step
    return r.clamp(-BIAS_QMAX, BIAS_QMAX).to(q.dtype)


def quantize_bias(bias: torch.Tensor, w_scale: torch.Tensor,
                  act_scale: torch.Tensor) -> torch.Tensor:
    """The int32 bias ``round(b / (s_w * s_a))``, clamped to ``±BIAS_QMAX`` (NaN: 0).

    The quotient is taken in float64 on the CPU (one-off, at freezing; float32 would round
    large quotients before ``round`` does, and some devices have no float64).
    """
    scale = bias_scale(w_scale, act_scale).detach().cpu().double()
    q = torch.round(bias.detach().cpu().double() / scale)
    q = torch.nan_to_num(q, nan=0.0).clamp(-BIAS_QMAX, BIAS_QMAX)
    return q.to(torch.int32).to(bias.device)


def dequantize_bias(q: torch.Tensor, w_scale: torch.Tensor,
                    act_scale: torch.Tensor) -> torch.Tensor:
    """Float32 ``q * (s_w * s_a)``: the one way freezing and loading compute a float bias
    (two correctly rounded float32 products, so every device gives the same bits)."""
    return q.float() * bias_scale(w_scale, act_scale)


@torch.no_grad()
def fit_bias_scale(w_scale: torch.Tensor, q: torch.Tensor, bias: torch.Tensor,
                   act_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric weight scales adjusted so every bias is stored well as int32 at ``s_w * s_a``.

    - Per channel, an output channel whose integers ``q`` are all zero (pruned) has no
      scale of its own: it gets ``|b| / s_a``, so its bias is stored as ±1 and keeps its
      value to float rounding (its output is its bias, as before freezing).
    - A scale so small that ``|b| / (s_w * s_a)`` would overflow int32 (weights ~1e-9 of
      their bias, or a per-tensor layer pruned away) is raised to the smallest that fits,
      as TFLite does; the caller re-quantizes the weight with it.

    Returns:
        The scales, shaped like ``w_scale``; unchanged in every ordinary case.
    """
    groups = w_scale.numel()
    b = bias.detach().abs().float().reshape(groups, -1).amax(dim=1)  # (groups,)
    scale = w_scale
    if groups == bias.numel():
        dead = (q.reshape(groups, -1) == 0).all(dim=1) & (b > 0)
        scale = torch.where(dead, (b / act_scale).clamp(min=MIN_SCALE), scale)
    need = b / (act_scale * BIAS_QMAX)
    return torch.where(need > scale, need, scale).float()


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                   bits: int) -> torch.Tensor:
    """Fake-quantized activations (per tensor, unsigned grid)."""
    qmin, qmax = act_range(bits)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)


@torch.no_grad()
def weight_error(w: torch.Tensor, bits: int, *, channel: bool, symmetric: bool,
                 clip: torch.Tensor | None) -> torch.Tensor:
    """Squared quantization error of ``w``, summed per scale group (``(C_out,)`` or ``(1,)``)."""
    scale, zp = weight_qparams(w, bits, channel=channel, symmetric=symmetric, clip=clip)
    err = fake_quant_weight(w, scale, zp, bits, symmetric) - w
    return _per_channel(err, channel).pow(2).sum(dim=1)


@torch.no_grad()
def mse_weight_clip(w: torch.Tensor, bits: int, *, channel: bool, symmetric: bool,
                    steps: int = 25) -> torch.Tensor:
    """Per-group clip factors in [0.25, 1] minimising the weight's squared quantization error."""
    groups = w.shape[0] if channel else 1
    best = torch.ones(groups, device=w.device)
    best_err = weight_error(w, bits, channel=channel, symmetric=symmetric, clip=best)
    for ratio in torch.linspace(0.25, 1.0, steps).tolist()[:-1]:
        clip = torch.full((groups,), ratio, device=w.device)
        err = weight_error(w, bits, channel=channel, symmetric=symmetric, clip=clip)
        better = err < best_err
        best = torch.where(better, clip, best)
        best_err = torch.where(better, err, best_err)
    return best
