"""``type: quantize``: 2–8-bit weights and inputs for every Conv2d / Linear, PTQ or QAT.

Uniform affine quantization with ``torch.fake_quantize_per_{channel,tensor}_affine`` and
the straight-through estimator; BatchNorm is folded into its conv first. Weights are
per output channel (``granularity: channel``) or per tensor, symmetric or not; each layer's
input is quantized per tensor to ``act_bits`` (32 = weight-only). ``weight_bits: auto``
picks per-layer bits from per-layer sensitivity for a ``target_avg_bits`` or a
``bitops_budget``. The artifact stores the integers (int8) with their scales and zero
points, never the float weights. Work is done in ``occ.techniques.quantize`` (imported in ``run``:
this
module stays torch-free for ``occ validate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext


from occ.techniques.quantize.config import QuantizeConfig


def quantize_(ctx: RunContext, config: QuantizeConfig) -> StageResult:
    """Quantize weights and inputs of every Conv2d / Linear (PTQ or QAT, 2–8 bits)."""
    from occ.techniques.quantize.pipeline import quantize_ as run

    return run(ctx, config)
