"""Quantized ``Conv2d`` / ``Linear`` layers and the ``quantize`` edit op that rebuilds them.

``QuantConv2d`` and ``QuantLinear`` subclass the float layers, so every tool that looks for
``nn.Conv2d`` / ``nn.Linear`` (``occ.metrics`` MAC hooks, sparsity masks, early-exit taps)
still sees them; ``occ_bits = (w_bits, a_bits)`` tells ``occ.metrics`` their BitOps.

A layer goes through three modes:

- ``float``: plain float forward (sensitivity analysis switches layers off this way);
- ``fake``: fake-quantized weights, scales recomputed from the current weight on every
  forward (straight-through gradient, for QAT), and once calibrated fake-quantized inputs;
- ``frozen``: the weight is integers (``weight_int``, int8) + ``w_scale`` / ``w_zero_point``;
  the float ``weight`` parameter holds their dequantized values (exactly the last fake-quant
  output, unless ``qparams.fit_bias_scale`` had to widen a scale) and is *not* in the state
  dict. Loading recomputes it from the integers, so a
  frozen layer's forward is bit-identical before saving and after ``occ.load``.

Biases are held as an integer kernel holds them where that is defined: with symmetric
weights and quantized inputs (``spec.int_bias``), freezing stores ``bias_int`` (int32,
``(C_out,)``) at scale ``s_w * s_a`` (per output channel with per-channel weight scales;
``s_a`` = ``act_scale``). The float ``bias`` then holds ``qparams.dequantize_bias`` of it,
is left out of the state dict and is recomputed on load exactly like the weight. State dict
of such a layer: ``w_scale``, ``w_zero_point``, ``act_scale``, ``act_zero_point``,
``weight_int``, ``bias_int``. Float inputs (``a_bits`` 32), asymmetric weights (their zero
point would need correction terms) and artifacts written before int32 biases (their
``quantize`` edit has no ``int_bias`` key) keep a float32 ``bias`` in the state dict.

Where the bias rounding shows up: at ``freeze``, the end of the ``quantize`` stage, after QAT
(which trains float biases; fake mode leaves them float). Each bias moves by at most
``s_w * s_a / 2``: half of one unit of the integer accumulator it is added to (one weight
step times one input step), a fraction of the output's own spread of many such units. The
stage's metrics are measured after freezing, so the reported accuracy includes it, and the
frozen forward is what is stored. A pruned output channel (its integers all zero,
per-channel scales) keeps its bias to float rounding (``qparams.fit_bias_scale``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from occ.models.edits import register_edit, set_submodule
from occ.techniques.quantize import qparams as qp

FLOAT_BITS = 32
GRANULARITIES = ("channel", "tensor")


@dataclass(frozen=True)
class QuantSpec:
    """How one layer is quantized: weight / input bits, scale granularity, symmetry.

    ``int_bias``: freezing stores the bias as int32 at ``s_w * s_a``; always False with float
    inputs or asymmetric weights (normalised here, so the recorded edit says what is stored).
    """

    w_bits: int
    a_bits: int
    granularity: str = "channel"
    symmetric: bool = True
    int_bias: bool = True

    def __post_init__(self) -> None:
        # Edits come from artifact headers: check them like untrusted input.
        if not (isinstance(self.w_bits, int) and 2 <= self.w_bits <= 8):
            raise ValueError(f"w_bits must be in 2..8, got {self.w_bits!r}")
        if not (isinstance(self.a_bits, int) and (2 <= self.a_bits <= 8 or self.a_bits == 32)):
            raise ValueError(f"a_bits must be in 2..8 or 32, got {self.a_bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, "
                             f"got {self.granularity!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be a bool, got {self.symmetric!r}")
        if not isinstance(self.int_bias, bool):
            raise ValueError(f"int_bias must be a bool, got {self.int_bias!r}")
        if self.a_bits == FLOAT_BITS or not self.symmetric:
            object.__setattr__(self, "int_bias", False)  # frozen dataclass

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the ``quantize`` edit's per-layer arguments)."""
        return asdict(self)


class _QuantMixin:
    """Quantization state and behaviour shared by ``QuantConv2d`` and ``QuantLinear``."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    spec: QuantSpec
    mode: str
    act_on: bool

    def _setup_quant(self, spec: QuantSpec) -> None:
        """(Re)create the quantization buffers for ``spec`` on the weight's device."""
        dev = self.weight.device
        groups = self.weight.shape[0] if spec.granularity == "channel" else 1
        self.spec = spec
        self.mode = "fake"
        self.act_on = False  # switched on once activation ranges are calibrated
        self.register_buffer("w_scale", torch.ones(groups, device=dev))
        self.register_buffer("w_zero_point", torch.zeros(groups, dtype=torch.int32, device=dev))
        # Clip factors from calibration (MSE search); only used until frozen.
        self.register_buffer("w_clip", torch.ones(groups, device=dev), persistent=False)
        has_act = spec.a_bits < FLOAT_BITS
        self.register_buffer("act_scale", torch.ones(1, device=dev) if has_act else None)
        self.register_buffer("act_zero_point", torch.zeros(1, dtype=torch.int32, device=dev)
                             if has_act else None)
        self.register_buffer("weight_int", None)
        self.register_buffer("bias_int", None)

    @property
    def occ_bits(self) -> tuple[int, int]:
        """(weight bits, input activation bits), read by ``occ.metrics`` for BitOps."""
        return self.spec.w_bits, self.spec.a_bits

    @property
    def has_int_bias(self) -> bool:
        """Whether freezing stores this layer's bias as int32 (see the module docstring)."""
        return self.spec.int_bias and self.bias is not None

    def set_w_bits(self, bits: int) -> None:
        """Change the weight bits before freezing (mixed precision); resets the clip."""
        if self.mode == "frozen":
            raise RuntimeError("cannot change the bits of a frozen layer")
        self.spec = replace(self.spec, w_bits=bits)
        self.w_clip.fill_(1.0)

    def weight_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for the current weight (and calibrated clip)."""
        s = self.spec
        return qp.weight_qparams(self.weight, s.w_bits, channel=s.granularity == "channel",
                                 symmetric=s.symmetric, clip=self.w_clip)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses in the current mode."""
        if self.mode != "fake":
            return self.weight
        scale, zp = self.weight_qparams()
        return qp.fake_quant_weight(self.weight, scale, zp, self.spec.w_bits, self.spec.symmetric)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input, fake-quantized once activation ranges are set."""
        if not self.act_on or self.mode == "float" or self.spec.a_bits >= FLOAT_BITS:
            return x
        return qp.fake_quant_act(x, self.act_scale, self.act_zero_point, self.spec.a_bits)

    @torch.no_grad()
    def set_act_range(self, lo: float, hi: float) -> None:
        """Set the input range [lo, hi] (widened to contain 0) and switch input quant on."""
        if self.spec.a_bits >= FLOAT_BITS:
            return
        qmin, qmax = qp.act_range(self.spec.a_bits)
        scale, zp = qp.affine_qparams(torch.tensor([lo]), torch.tensor([hi]), qmin, qmax)
        self.act_scale.copy_(scale)
        self.act_zero_point.copy_(zp)
        self.act_on = True

    @torch.no_grad()
    def freeze(self, scale_bits: int | None = None, bias_bits: int | None = None) -> None:
        """Store the weight (and bias, ``has_int_bias``) as integers; the float tensors
        become their exact dequantization. ``scale_bits``: round the weight scales up to
        that many significant bits first (``qp.round_scale``); ``bias_bits``: keep that
        many significant bits of the int32 bias (``qp.round_bias``)."""
        s = self.spec
        scale, zp = self.weight_qparams()
        q = qp.quantize_weight(self.weight, scale, zp, s.w_bits, s.symmetric)
        if self.has_int_bias:
            fitted = qp.fit_bias_scale(scale, q, self.bias, self.act_scale)
            if not torch.equal(fitted, scale):
                scale = fitted
                q = qp.quantize_weight(self.weight, scale, zp, s.w_bits, s.symmetric)
        if scale_bits is not None:
            scale = qp.round_scale(scale, scale_bits)
            q = qp.quantize_weight(self.weight, scale, zp, s.w_bits, s.symmetric)
        self.w_scale.copy_(scale)
        self.w_zero_point.copy_(zp)
        self.weight_int = q
        self.weight.copy_(qp.dequantize(q, self.w_scale, self.w_zero_point))
        self.weight.requires_grad_(False)
        if self.has_int_bias:
            self.bias_int = qp.quantize_bias(self.bias, self.w_scale, self.act_scale)
            if bias_bits is not None:
                self.bias_int = qp.round_bias(self.bias_int, bias_bits)
            self._set_int_bias()
        self.mode = "frozen"
        self.act_on = s.a_bits < FLOAT_BITS

    def _set_int_bias(self) -> None:
        """The float bias as ``bias_int`` dequantized; no longer trainable (it is derived)."""
        with torch.no_grad():
            self.bias.copy_(qp.dequantize_bias(self.bias_int, self.w_scale, self.act_scale))
        self.bias.requires_grad_(False)

    def _placeholder_frozen(self) -> None:
        """A frozen layer with zero integers, ready for ``load_state_dict`` (rebuild)."""
        dev = self.weight.device
        with torch.no_grad():
            self.weight_int = torch.zeros(self.weight.shape, dtype=torch.int8, device=dev)
            self.weight.copy_(qp.dequantize(self.weight_int, self.w_scale, self.w_zero_point))
        self.weight.requires_grad_(False)
        if self.has_int_bias:
            self.bias_int = torch.zeros(self.bias.shape, dtype=torch.int32, device=dev)
            self._set_int_bias()
        self.mode = "frozen"
        self.act_on = self.spec.a_bits < FLOAT_BITS

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        if self.mode == "frozen":
            destination.pop(prefix + "weight", None)  # the integers stand for it
            if self.bias_int is not None:
                destination.pop(prefix + "bias", None)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # load_state_dict works on its own copy of the dict: derive the float weight (and
        # bias) from the integers exactly as freeze() did. Tensors that do not fit are left
        # to the strict load below to report.
        if self.mode == "frozen":
            if self._fits(state_dict, prefix, ("weight_int", "w_scale", "w_zero_point")):
                q, scale, zp = (state_dict[prefix + k]
                                for k in ("weight_int", "w_scale", "w_zero_point"))
                state_dict[prefix + "weight"] = qp.dequantize(q, scale, zp)
            if self.bias_int is not None and self._fits(state_dict, prefix,
                                                        ("bias_int", "w_scale", "act_scale")):
                q, scale, act = (state_dict[prefix + k]
                                 for k in ("bias_int", "w_scale", "act_scale"))
                state_dict[prefix + "bias"] = qp.dequantize_bias(q, scale, act)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]

    def _fits(self, state_dict: dict[str, Any], prefix: str, names: tuple[str, ...]) -> bool:
        """Whether ``state_dict`` holds every buffer in ``names`` with this layer's shapes."""
        for n in names:
            got, own = state_dict.get(prefix + n), getattr(self, n)
            if not isinstance(got, torch.Tensor) or own is None or got.shape != own.shape:
                return False
        return True

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{super().extra_repr()}, w_bits={s.w_bits}, a_bits={s.a_bits}, "  # type: ignore[misc]
                f"granularity={s.granularity}, symmetric={s.symmetric}, "
                f"int_bias={self.has_int_bias}, mode={self.mode}")


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """A ``Conv2d`` with fake-quantized weights and input (see the module docstring)."""

    def __init__(self, *args: Any, spec: QuantSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup_quant(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, m: nn.Conv2d, spec: QuantSpec) -> QuantConv2d:
        """A quantized layer sharing ``m``'s parameters (same shape, stride, padding ...)."""
        with _no_rng():
            q = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                    padding=m.padding, dilation=m.dilation, groups=m.groups,
                    bias=m.bias is not None, padding_mode=m.padding_mode, spec=spec,
                    device=m.weight.device)
        return _adopt(q, m)


class QuantLinear(_QuantMixin, nn.Linear):
    """A ``Linear`` with fake-quantized weights and input (see the module docstring)."""

    def __init__(self, *args: Any, spec: QuantSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup_quant(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ..., in_features)
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, m: nn.Linear, spec: QuantSpec) -> QuantLinear:
        """A quantized layer sharing ``m``'s parameters."""
        with _no_rng():
            q = cls(m.in_features, m.out_features, bias=m.bias is not None, spec=spec,
                    device=m.weight.device)
        return _adopt(q, m)


def _no_rng() -> Any:
    """Building a layer draws its (discarded) init weights: keep the global RNG untouched."""
    return torch.random.fork_rng(devices=[])


def _adopt(q: _QuantMixin, m: nn.Module) -> Any:
    """Give the new layer ``q`` the float layer ``m``'s parameters (shared, not copied)."""
    q.weight = m.weight
    if m.bias is not None:
        q.bias = m.bias
    q.train(m.training)  # type: ignore[attr-defined]
    return q


QuantLayer = QuantConv2d | QuantLinear
_FLOAT_TO_QUANT: dict[type[nn.Module], Any] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def quantizable(model: nn.Module) -> dict[str, nn.Module]:
    """Float ``Conv2d`` / ``Linear`` layers (exact types; quantized ones are skipped)."""
    return {n: m for n, m in model.named_modules() if n and type(m) in _FLOAT_TO_QUANT}


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The quantized layers of ``model``, by path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _QuantMixin)}


def swap_layers_(model: nn.Module, specs: dict[str, QuantSpec]) -> dict[str, QuantLayer]:
    """Replace each float layer at a path in ``specs`` with its quantized twin (fake mode)."""
    out = {}
    for path, spec in specs.items():
        m = model.get_submodule(path)
        if type(m) not in _FLOAT_TO_QUANT:
            raise ValueError(f"{path}: cannot quantize {type(m).__name__}; "
                             "only Conv2d and Linear")
        out[path] = _FLOAT_TO_QUANT[type(m)].from_float(m, spec)
        set_submodule(model, path, out[path])
    return out


def freeze_(model: nn.Module, scale_bits: int | None = None,
            bias_bits: int | None = None) -> None:
    """Freeze every quantized layer of ``model`` (integers + scales; see ``freeze``)."""
    for layer in quant_layers(model).values():
        if layer.mode != "frozen":
            layer.freeze(scale_bits, bias_bits)


@register_edit("quantize", meta=False)
def quantize_edit(model: nn.Module, layers: dict[str, dict[str, Any]]) -> nn.Module:
    """Edit op: replace each listed layer with a frozen quantized layer of the given spec."""
    if not isinstance(layers, dict):
        raise ValueError("layers must be a mapping of path -> spec")
    specs = {}
    for path, raw in layers.items():
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: spec must be a mapping")
        # Edits written before int32 biases have no int_bias key: those layers stored floats.
        specs[path] = QuantSpec(**{"int_bias": False, **raw})
    for layer in swap_layers_(model, specs).values():
        layer._placeholder_frozen()
    return model
