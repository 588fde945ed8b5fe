"""``type: quantize``: 2-8-bit weights and inputs for every Conv2d / Linear, PTQ or QAT.

- ``config``: ``QuantizeConfig`` (torch-free); ``run``: the stage (``quantize_``);
- ``qparams``: integer ranges, scales / zero points, fake-quant, integers;
- ``layers``: ``QuantConv2d`` / ``QuantLinear`` and the ``quantize`` edit op;
- ``fold``: BatchNorm folding and the ``fold_bn`` edit op;
- ``calibrate``: weight clipping and activation ranges;
- ``mixed``: per-layer sensitivity and greedy bit allocation;
- ``pipeline``: the stage's steps in order.
"""

from occ.techniques.quantize.config import QuantizeConfig
from occ.techniques.spec import Edge, TechniqueSpec

OOC = "Order of Compression (Shen et al., arXiv 2403.17447)"

SPEC = TechniqueSpec(
    type="quantize", config=QuantizeConfig, run="occ.techniques.quantize.run:quantize_",
    summary="Quantize weights and inputs of every Conv2d / Linear (PTQ or QAT, 2–8 bits).",
    label="Q", aliases={"Q": "bits", "quantize": "bits"},
    categories={"bits": "static sub-neuron (quantization)"},
    edges=(
        Edge("architecture", "bits",
             "a full-precision student learns the teacher's function better than a quantized "
             "one; bits are set on the final architecture", f"{OOC}: D before Q"),
        Edge("channel", "bits",
             "quantization ranges are fit to the channels that survive; removing channels "
             "afterwards invalidates the calibration and the QAT", f"{OOC}: P before Q"),
        Edge("weight", "bits",
             "weight magnitudes rank saliency at full precision; pruning after rounding "
             "re-rounds the survivors and wastes the QAT", f"{OOC}: P before Q; Deep Compression"),
    ),
    singleton=True,
    edit_modules=("occ.techniques.quantize.layers", "occ.techniques.quantize.fold"),
)
