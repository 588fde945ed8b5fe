"""Which ops of an exported float graph onnxruntime's ``quantize_static`` may put Q/DQ
around (``occ.deploy.qdq``), and which must stay float: an early-exit graph's exit
selection."""

from __future__ import annotations

from typing import Any

# Op types the tool may quantize: the integer kernels and the ops between them. A conv's
# output gets its Q/DQ pair, which onnxruntime needs to fuse it into QLinearConv, only when
# a reader is quantized too: Hardswish (exported as HardSigmoid and Mul), squeeze-excite's
# Sigmoid / Mul gates and AveragePool are here, or a MobileNetV3 ran half its convs in float
# (slower than its float graph). The exit-selection tail stays float (``float_tail``).
QUANT_OPS = ["Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "HardSigmoid", "HardSwish",
             "Sigmoid", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
             "Concat"]


def float_tail(proto: Any) -> list[str]:
    """Names of the nodes that read a logits output (``exit<e>_logits``, ``final_logits``),
    directly or not: an early-exit graph's exit selection (Softmax, ReduceMax, Mul ...,
    Where), which must stay float (rounding to 256 steps flips exit decisions). Other
    outputs (the exit export's hand-over tensors) are read by the backbone itself."""
    reached = {o.name for o in proto.graph.output
               if o.name.endswith("_logits") or o.name == "logits"}
    tail: list[str] = []
    for node in proto.graph.node:  # topological order (ONNX requires it)
        if any(i in reached for i in node.input):
            tail.append(node.name)
            reached.update(node.output)
    return [n for n in tail if n]
