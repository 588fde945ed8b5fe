"""Which ops of an exported float graph onnxruntime's ``quantize_static`` may put Q/DQ
around (``occ.deploy.qdq``), and which must stay float: an early-exit graph's exit
selection."""

from __future__ import annotations

from typing import Any

# Op types the tool may quantize: the integer kernels and the ops between them. A conv's
# output gets its Q/DQ pair, which onnxruntime needs to fuse it into QLinearConv, only when
# a reader is quantized too: Hardswish (exported as HardSigmoid and Mul) and squeeze-excite's
# Sigmoid / Mul gates are here, or a MobileNetV3 ran half its convs in float (slower than its
# float graph). What follows the last weighted layer stays float (``float_tail``).
QUANT_OPS = ["Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "HardSigmoid", "HardSwish",
             "Sigmoid", "MaxPool", "GlobalAveragePool", "Flatten", "Reshape", "Concat"]
WEIGHTED = ("Conv", "Gemm", "MatMul")


def float_tail(proto: Any) -> list[str]:
    """Names of the nodes after which no weighted layer (Conv, Gemm, MatMul) runs: what
    reads the logits (a temperature Mul, a Sigmoid, an early-exit graph's exit selection:
    Softmax, ReduceMax, Mul ..., Where). They stay float: rounding logits to 256 steps
    flips close top-1 calls and exit decisions. Found as the nodes that are not ancestors
    of a weighted layer (whatever order the graph lists them in)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    feeds: set[int] = set()  # id(node): a weighted layer runs on what it computes
    todo = [node for node in proto.graph.node if node.op_type in WEIGHTED]
    while todo:
        for name in todo.pop().input:
            up = producer.get(name)
            if up is not None and id(up) not in feeds:
                feeds.add(id(up))
                todo.append(up)
    return [n.name for n in proto.graph.node
            if n.name and n.op_type not in WEIGHTED and id(n) not in feeds]

