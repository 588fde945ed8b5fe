"""The torch-free config of ``type: quantize`` (``occ validate`` and ``occ order`` read it)."""


from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from occ.config import check
from occ.techniques.spec import StageConfig

if TYPE_CHECKING:
    pass

_BITS = "an integer in 2..8"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class QuantizeConfig(StageConfig):
    """Config of a ``quantize`` stage.

    Attributes:
        weight_bits: 2..8, or ``auto`` for per-layer bits under ``target_avg_bits``
            (parameter-weighted average) or ``bitops_budget`` (absolute BitOps).
        act_bits: bits of each layer's input, 2..8, or 32 to leave inputs in float.
        granularity: one weight scale per output ``channel`` or per ``tensor``.
        symmetric: symmetric weight grid with zero point 0 (else an integer zero point).
        mode: ``ptq`` (calibrate only) or ``qat`` (then fine-tune ``epochs``).
        calibration: how ranges are chosen: ``minmax``, ``percentile``, ``mse``.
        percentile: the input percentile kept by ``calibration: percentile``.
        calib_samples: training inputs used to calibrate (and val inputs for ``auto``).
        epochs: QAT epochs (default 2 for ``qat``; must be 0 or unset for ``ptq``).
        keep_8bit: ``first`` and/or ``last`` compute layers kept at 8 bits.
        distill: during QAT, the uncompressed model teaches (Hinton KD, T=4, alpha=0.9).
        clip_grad_norm: QAT clips the gradients' global norm to this (0: no clipping).
            BN is folded before QAT, so nothing normalises the activations any more and
            an unclipped step can wreck a deep network (ResNet-20 with KD: 98 % -> 36 %).
        scale_bits: round the weight scales up to this many significant bits (4..23) when
            freezing, so the artifact codes each in ~``scale_bits`` bits instead of 32; the
            model is evaluated with the rounded scales (unset: full float32 scales). Later
            quantized exit heads are rounded the same way.
        bias_bits: keep this many significant bits (2..16) of each layer's int32 bias:
            every bias is rounded to a multiple of ``2^s``, the smallest ``s`` that leaves
            the largest in ``bias_bits`` signed bits, so the ``rice`` codec stores
            ``bias_int >> s``; evaluated with the rounded biases (unset: exact int32).
            Later quantized exit heads are rounded the same way. Folded BatchNorm shifts
            live in these biases: 3 bits cost the LeNets nothing measurable, but 4 bits
            broke ResNet-20 (``scripts/bench_params.py``: -3.4 pt on one seed, a quality
            gate stopped another); keep 6 or more where BatchNorm was folded.
    """

    weight_bits: int | Literal["auto"] = 8
    act_bits: int = 8
    granularity: Literal["channel", "tensor"] = "channel"
    symmetric: bool = True
    mode: Literal["ptq", "qat"] = "qat"
    calibration: Literal["minmax", "percentile", "mse"] = "mse"
    percentile: float = 99.99
    calib_samples: int = 512
    epochs: int | None = None
    lr: float = 0.005
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    keep_8bit: tuple[Literal["first", "last"], ...] = ()
    target_avg_bits: float | None = None
    bitops_budget: float | None = None
    distill: bool = False
    clip_grad_norm: float = 5.0
    scale_bits: int | None = None
    bias_bits: int | None = None

    default_category = "bits"

    def __post_init__(self) -> None:
        wb, ab, auto = self.weight_bits, self.act_bits, self.weight_bits == "auto"
        check(auto or (_is_int(wb) and 2 <= wb <= 8), "weight_bits",
              f"must be {_BITS} or 'auto', got {wb!r}")
        check(_is_int(ab) and (2 <= ab <= 8 or ab == 32), "act_bits",
              f"must be {_BITS}, or 32 for float inputs; got {self.act_bits!r}")
        check(50.0 < self.percentile <= 100.0, "percentile",
              f"must be in (50, 100], got {self.percentile}")
        check(self.calib_samples >= 0, "calib_samples", f"must be >= 0, got {self.calib_samples}")
        check(self.act_bits == 32 or self.calib_samples >= 1, "calib_samples",
              f"act_bits: {self.act_bits} needs calibration data: calib_samples must be >= 1")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.clip_grad_norm >= 0, "clip_grad_norm",
              f"must be >= 0 (0: no clipping), got {self.clip_grad_norm}")
        check(self.scale_bits is None or (_is_int(self.scale_bits) and 4 <= self.scale_bits <= 23),
              "scale_bits", f"must be 4..23 or unset, got {self.scale_bits!r}")
        check(self.bias_bits is None or (_is_int(self.bias_bits) and 2 <= self.bias_bits <= 16),
              "bias_bits", f"must be 2..16 or unset, got {self.bias_bits!r}")
        check(len(set(self.keep_8bit)) == len(self.keep_8bit), "keep_8bit",
              f"must list each of 'first', 'last' at most once, got {list(self.keep_8bit)}")
        if self.mode == "ptq":
            check(self.epochs in (None, 0), "epochs",
                  f"must be 0 or unset with mode: ptq (training is mode: qat), got {self.epochs}")
            check(not self.distill, "distill",
                  "applies to mode: qat (the teacher teaches during QAT's training; ptq "
                  "does not train)")
        else:
            check(self.epochs is None or self.epochs >= 1, "epochs",
                  f"must be >= 1 with mode: qat (no training is mode: ptq), got {self.epochs}")
        self._check_budget(auto)

    def _check_budget(self, auto: bool) -> None:
        budgets = [k for k in ("target_avg_bits", "bitops_budget") if getattr(self, k) is not None]
        if not auto:
            check(not budgets, budgets[0] if budgets else "", "only applies with weight_bits: auto")
            return
        check(len(budgets) == 1, "weight_bits",
              "'auto' needs exactly one budget: target_avg_bits (2..8) or bitops_budget (> 0)"
              + (f"; got both {' and '.join(budgets)}" if budgets else ""))
        check(self.calib_samples >= 1, "calib_samples",
              "weight_bits: auto measures sensitivity on data: calib_samples must be >= 1")
        if self.target_avg_bits is not None:
            check(2.0 <= self.target_avg_bits <= 8.0, "target_avg_bits",
                  f"must be in [2, 8], got {self.target_avg_bits}")
        else:
            check(self.bitops_budget > 0, "bitops_budget", f"must be > 0, got {self.bitops_budget}")

    @property
    def qat_epochs(self) -> int:
        """Epochs of QAT actually run (0 for PTQ)."""
        if self.mode == "ptq":
            return 0
        return 2 if self.epochs is None else self.epochs
