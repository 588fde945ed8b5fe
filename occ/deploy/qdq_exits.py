"""Integer ONNX export of an early-exit model (``occ export --format onnx-qdq`` of an
``EarlyExitNet``): one QDQ graph that runs every exit and picks per row, plus the tensors
where ``occ.deploy.runtime`` cuts it into one session per segment (see ``occ.deploy.qdq`` for how
the integers and scales are placed, ``occ.deploy.qdq_align`` for the channel padding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from occ.deploy.onnx import to_onnx
from occ.deploy.qdq import OPSET, float_twin, int_layers, quantize_graph
from occ.deploy.qdq_align import align_channels

BOUNDARY = "occ_segment{}"  # the tensor an early-exit segment hands to the next

BOUNDARY = "occ_segment{}"  # the tensor an early-exit segment hands to the next


class ExitsTwin(nn.Module):
    """An early-exit model as one graph (``occ.deploy.onnx.ExitsGraph``'s outputs) that also
    outputs each segment's hand-over tensor, so the runtime can cut the graph there."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from occ.techniques.early_exit.net import leaves
        from occ.techniques.early_exit.split import run_segment

        net, outs, bounds, h = self.net, [], [], x
        for e, seg in enumerate(net.segments):
            h = run_segment(net.backbone, seg, h)
            if e < len(net.heads):
                bounds.append(h)
                outs.append(net.heads[e](h))  # (B, K)
            else:
                outs.append(h)
        logits = outs[-1]
        taken = torch.zeros_like(logits[:, 0], dtype=torch.long) + (len(outs) - 1)  # (B,)
        previous = [None, *outs[:-2]]
        for e in reversed(range(len(outs) - 1)):  # earliest exit wins: apply it last
            go = leaves(outs[e], net.criterion, net.thresholds[e], previous[e])
            logits = torch.where(go[:, None], outs[e], logits)
            taken = torch.where(go, torch.full_like(taken, e), taken)
        return (logits, taken, *outs, *bounds)


def exit_outputs(n_heads: int) -> list[str]:
    """Graph outputs of an early-exit export (the hand-over tensors are dropped after)."""
    return ["logits", "exit", *[f"exit{e}_logits" for e in range(n_heads)], "final_logits"]


def export_int8_exits(net: nn.Module, example: torch.Tensor, calib: torch.Tensor, *,
                      align: bool = True) -> tuple[Any, list[str]]:
    """QDQ ``ModelProto`` of an ``EarlyExitNet`` and the names of its hand-over tensors.

    Outputs as ``occ.deploy.onnx``'s early-exit graph (every exit runs; ``logits`` picks per
    row). The hand-over tensor of segment ``e`` is the uint8 output of the QuantizeLinear
    that the next segment's first layer reads, where there is one (so a cut there leaves
    every integer kernel intact), else the float tensor. ``align``: as
    ``occ.deploy.qdq.export_int8`` (a cut tensor keeps its padded channels: the next
    segment reads them).
    """
    layers = int_layers(net)
    n = len(net.heads)
    bounds = [BOUNDARY.format(e) for e in range(n)]
    twin = ExitsTwin(float_twin(net)).eval()
    data = to_onnx(twin, example, [*exit_outputs(n), *bounds], opset=OPSET, dynamic_batch=True)
    proto = quantize_graph(data, layers, calib, prefix="net.")
    keep = [o for o in proto.graph.output if o.name not in bounds]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    padded = align_channels(proto) if align else {}
    with torch.no_grad():
        outputs = twin(example)
        shapes = [list(t.shape[1:]) for t in outputs[len(outputs) - n:]]  # none: no heads
    cuts = [_quantized_name(proto, b) for b in bounds]
    shapes = [[padded.get(c, s[0]), *s[1:]] if len(s) == 3 else s
              for c, s in zip(cuts, shapes, strict=True)]
    _declare(proto, cuts, shapes)
    return proto, cuts


def _declare(proto: Any, names: list[str], shapes: list[list[int]]) -> None:
    """``value_info`` (type, (batch, *shape)) for tensors the runtime cuts the graph at:
    ``onnx.utils.Extractor`` needs it and shape inference does not reach every QDQ tensor."""
    from onnx import TensorProto, helper

    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    known = {v.name for v in proto.graph.value_info}
    for name, shape in zip(names, shapes, strict=True):
        node = producer.get(name)
        if name in known or node is None:
            continue
        while node.op_type == "Clip" and node.input[0] in producer:  # a narrow input's clip
            node = producer[node.input[0]]
        dtype = (inits.get(node.input[2], TensorProto.UINT8)
                 if node.op_type == "QuantizeLinear" and len(node.input) > 2
                 else TensorProto.FLOAT)
        proto.graph.value_info.append(
            helper.make_tensor_value_info(name, dtype, ["batch", *shape]))


def _quantized_name(proto: Any, name: str) -> str:
    """The uint8 tensor behind float tensor ``name``: the output of the QuantizeLinear that
    reads it, or, where the tool kept ``name`` on the DequantizeLinear side (a graph output
    keeps its name), that DequantizeLinear's input; else ``name`` itself."""
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == name:
            return str(node.output[0])
        if node.op_type == "DequantizeLinear" and node.output[0] == name:
            return str(node.input[0])
    return name
