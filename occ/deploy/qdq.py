"""Integer ONNX export (``occ export model.occ --format onnx-qdq``): a QDQ graph.

The graph is the standard QuantizeLinear / DequantizeLinear (QDQ) form that onnxruntime's
CPU execution provider fuses into integer kernels (``DQ -> Conv -> Q`` becomes
``QLinearConv``, ``DQ -> Gemm -> Q`` ``QGemm``, ``DQ + DQ -> Add -> Q`` ``QLinearAdd``,
``MaxPool`` / ``Reshape`` / ``Flatten`` run on uint8 directly). How it is made:

1. ``occ.load``'s model with every quantized layer as a plain float layer holding its exact
   dequantized weight, exported by torch's TorchScript exporter (``occ.deploy.onnx.to_onnx``).
2. onnxruntime's own ``quantize_static`` places the Q/DQ nodes (it knows the topology:
   residual adds, pooling, which ReLUs a quantized output makes redundant) with
   ``TensorQuantOverrides`` that pin every input occ quantized to occ's own scale and zero
   point (uint8, unsigned grid as in ``occ.techniques.quantize.qparams``).
3. occ's integers replace whatever the tool computed: ``weight_int`` (int8, per-channel
   scales on axis 0; weights below 8 bits are the same small integers stored in int8),
   ``bias_int`` (int32 at ``s_w * s_a``), so the file holds exactly the values in the
   artifact. Inputs below 8 bits get a uint8 ``Clip(0, 2^b - 1)`` between their Q and DQ:
   exactly occ's ``clamp(round(x / s) + z, 0, 2^b - 1)``.
4. ``occ.deploy.qdq_align`` pads conv channels with zeros so that onnxruntime runs every
   conv on its fast integer kernel (the same values). Early-exit models go through
   ``occ.deploy.qdq_exits`` (the same steps on one graph with every exit).

What is *not* in occ's model and is added here (the approximation, checked below):

- Tensors occ never quantized but an integer kernel needs quantized: a conv's output that
  feeds a residual add rather than the next quantized layer, the add's output before its
  ReLU, the logits. Their ranges come from onnxruntime's MinMax calibration on
  ``calib_samples`` training inputs (uint8, asymmetric).
- A tensor read by a quantized layer and by something else (a residual shortcut) is read
  through the same Q/DQ, so the shortcut sees the quantized values too.
- onnxruntime's ``QuantizeLinear`` divides by the scale where torch's fake-quant multiplies
  by its inverse: a value on a rounding boundary may land on the neighbouring step.
- Layers occ left in float stay float (excluded from the tool). A quantized layer that
  kept a float bias (asymmetric weights) gets the tool's int32 bias at ``s_w * s_a``.
- The logits (a layer output no integer kernel reads) are left unrounded (``_float_outputs``).

So the export is checked before it is written: the graph runs in onnxruntime on the test
split and must agree with occ's model on ``min_agreement`` % of top-1 predictions and be
within ``max_accuracy_drop`` points of its accuracy; otherwise ``StageError`` (exit 1).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from occ.deploy.onnx import (
    _plain_copy,
    is_early_exit,
    is_quantized,
    to_onnx,
    unshare_initializers,
)
from occ.deploy.qdq_align import align_channels
from occ.deploy.qdq_ops import QUANT_OPS, float_tail
from occ.errors import ArtifactError, StageError
from occ.models.edits import set_submodule

log = logging.getLogger("occ")

OPSET = 17  # per-channel DequantizeLinear needs >= 13; 17 is what occ export uses
CALIB_BATCH = 64


@dataclass(frozen=True)
class IntLayer:
    """One quantized layer of occ's model, as the graph stores it (numpy, exact values)."""

    path: str
    weight_int: np.ndarray  # int8, (C_out, ...)
    w_scale: np.ndarray  # float32, (C_out,) or (1,)
    w_zero_point: np.ndarray  # int8, same shape as w_scale
    bias_int: np.ndarray | None  # int32 (C_out,) at w_scale * act_scale, or None
    act_scale: float | None  # None: float input (weight-only layer)
    act_zero_point: int | None
    a_bits: int


def int_layers(model: nn.Module) -> dict[str, IntLayer]:
    """The frozen quantized layers of ``model`` by path (``occ.load`` gives frozen layers).

    Raises:
        ArtifactError: a quantized layer is not frozen (it has no stored integers).
    """
    out = {}
    for path, m in model.named_modules():
        if not is_quantized(m):
            continue
        if getattr(m, "weight_int", None) is None:
            raise ArtifactError(f"{path}: quantized layer has no stored integers (not frozen)")
        has_act = bool(m.act_on) and m.spec.a_bits < 32
        out[path] = IntLayer(
            path=path,
            weight_int=m.weight_int.detach().cpu().numpy().astype(np.int8),
            w_scale=m.w_scale.detach().cpu().float().numpy(),
            w_zero_point=m.w_zero_point.detach().cpu().numpy().astype(np.int8),
            bias_int=(m.bias_int.detach().cpu().numpy().astype(np.int32)
                      if m.bias_int is not None else None),
            act_scale=float(m.act_scale.reshape(())) if has_act else None,
            act_zero_point=int(m.act_zero_point.reshape(())) if has_act else None,
            a_bits=int(m.spec.a_bits))
    return out


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized layers are plain float layers with the same paths
    and the exact dequantized weights (so ONNX initializers are named ``<path>.weight``)."""
    twin = copy.deepcopy(model).eval()
    for path in [n for n, m in twin.named_modules() if is_quantized(m)]:
        set_submodule(twin, path, _plain_copy(twin.get_submodule(path)))
    return twin


class _Reader:
    """onnxruntime ``CalibrationDataReader``: ``{"input": batch}`` dicts from a tensor."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self._batches: Iterator[torch.Tensor] = iter(inputs.split(CALIB_BATCH))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch.numpy()}


def _nodes_by_weight(proto: Any, prefix: str) -> dict[str, Any]:
    """Conv / Gemm / MatMul nodes by the layer path of their weight initializer."""
    inits = {i.name for i in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 \
                and node.input[1] in inits and node.input[1].endswith(".weight"):
            found[node.input[1].removeprefix(prefix).removesuffix(".weight")] = node
    return found


# Ops through which a quantized input's grid may be pushed upstream without changing a
# value: Q(flatten(x)) = flatten(Q(x)); Q is monotone, so Q(maxpool(x)) = maxpool(Q(x));
# with zero point 0 (the grid's lowest step is 0), Q(relu(x)) = Q(x).
_SAME_GRID = ("Flatten", "Reshape", "MaxPool", "Squeeze", "Unsqueeze")


def _grid_chain(proto: Any, name: str, zero_point: int) -> list[str]:
    """``name`` and the tensors upstream of it that can share its grid exactly.

    Pinning only a layer's own input would leave the tool free to give the tensors before a
    Flatten / MaxPool / ReLU other (calibrated) grids, and requantize in between.
    """
    producer = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for i in node.input:
            readers[i] = readers.get(i, 0) + 1
    chain = [name]
    while True:
        node = producer.get(chain[-1])
        if node is None or not (node.op_type in _SAME_GRID
                                or (node.op_type == "Relu" and zero_point == 0)):
            return chain
        src = node.input[0]
        if readers.get(src, 0) != 1:  # read elsewhere too: its own grid
            return chain
        chain.append(src)


def _overrides(proto: Any, layers: dict[str, IntLayer],
               nodes: dict[str, Any]) -> dict[str, list[dict]]:
    """``TensorQuantOverrides``: each quantized layer's input at occ's scale / zero point
    (and the tensors upstream of it that share the grid exactly, ``_grid_chain``)."""
    from onnxruntime.quantization import QuantType

    out: dict[str, list[dict[str, Any]]] = {}
    for path, layer in layers.items():
        if layer.act_scale is None:
            continue
        want = {"quant_type": QuantType.QUInt8,
                "scale": np.array(layer.act_scale, dtype=np.float32),
                "zero_point": np.array(layer.act_zero_point, dtype=np.uint8)}
        for name in _grid_chain(proto, nodes[path].input[0], layer.act_zero_point):
            had = out.get(name)
            if had and (had[0]["scale"] != want["scale"]
                        or had[0]["zero_point"] != want["zero_point"]):
                log.info("export: %s reads a tensor another quantized layer reads on "
                         "another grid; it uses the first one's", path)
                continue
            out[name] = [want]
    return out


def quantize_graph(float_onnx: bytes, layers: dict[str, IntLayer], calib: torch.Tensor,
                   prefix: str = "") -> Any:
    """The QDQ ``ModelProto`` of ``float_onnx`` with occ's integers and scales (see above).

    Args:
        float_onnx: the float twin's ONNX (``float_twin`` + ``to_onnx``).
        layers: ``int_layers`` of the model.
        calib: (N, C, H, W) float inputs for the ranges occ did not calibrate.
        prefix: module-path prefix of the exported module's initializers (a wrapper's).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = onnx.load_from_string(float_onnx)
    if unshare_initializers(proto):  # equal biases the exporter stored once
        float_onnx = proto.SerializeToString()
    nodes = _nodes_by_weight(proto, prefix)
    missing = sorted(set(layers) - set(nodes))
    if missing:
        raise ArtifactError(f"quantized layers not found in the exported graph: {missing[:3]}")
    tail = float_tail(proto)
    float_layers = [n.name for p, n in nodes.items() if p not in layers] + tail
    extra = {"TensorQuantOverrides": _overrides(proto, layers, nodes),
             "ActivationSymmetric": False, "WeightSymmetric": True,
             "QDQDisableWeightAdjustForInt32Bias": True}
    with tempfile.TemporaryDirectory(prefix="occ-qdq-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        src.write_bytes(float_onnx)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # the tool's "consider pre-processing"
        try:
            quantize_static(str(src), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=QUANT_OPS,
                            nodes_to_exclude=[n for n in float_layers if n],
                            extra_options=extra)
        finally:
            root.setLevel(level)
        qdq = onnx.load(str(dst))
    _float_outputs(qdq, set(tail))
    _pin_integers(qdq, layers, {p: nodes[p].name for p in layers})
    _clip_narrow_inputs(qdq, layers, {p: nodes[p].name for p in layers})
    return qdq


def _float_outputs(proto: Any, tail: set[str]) -> None:
    """Drop the Q/DQ pair the tool puts on a layer's output that no integer kernel reads
    (the logits, an exit head's logits read by the exit test, or by a ``tail`` node that
    stays float): occ never rounds them, and rounding logits to 256 steps flips close
    top-1 calls and exit decisions. onnxruntime still runs the layer with integer inputs
    (float-output kernels)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    drop = []
    for q in [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]:
        layer = producer.get(q.input[0])
        after = readers.get(q.output[0], [])
        if layer is None or layer.op_type not in ("Conv", "Gemm", "MatMul") \
                or len(readers.get(q.input[0], [])) != 1 or len(after) != 1 \
                or after[0].op_type != "DequantizeLinear":
            continue
        dq = after[0]
        if any(r.op_type in QUANT_OPS and r.name not in tail
               for r in readers.get(dq.output[0], [])):
            continue
        layer.output[0] = dq.output[0]
        drop += [id(q), id(dq)]
    kept = [n for n in proto.graph.node if id(n) not in drop]
    if len(kept) == len(proto.graph.node):
        return
    copies = [copy.deepcopy(n) for n in kept]
    del proto.graph.node[:]
    proto.graph.node.extend(copies)
    used = {i for n in proto.graph.node for i in n.input}
    inits = [copy.deepcopy(i) for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)


def _pin_integers(proto: Any, layers: dict[str, IntLayer], node_names: dict[str, str]) -> None:
    """Replace the tool's weight / bias integers and scales with occ's stored ones."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    by_name = {n.name: n for n in proto.graph.node}

    def set_init(name: str, value: np.ndarray) -> None:
        old = inits[name]
        old.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(old).dtype)
                                             .reshape(numpy_helper.to_array(old).shape), name))

    for path, layer in layers.items():
        node = by_name.get(node_names[path])
        dq = producer.get(node.input[1]) if node is not None else None
        if dq is None or dq.op_type != "DequantizeLinear":
            raise ArtifactError(f"{path}: the quantizer left no DequantizeLinear on its weight")
        set_init(dq.input[0], layer.weight_int)
        set_init(dq.input[1], layer.w_scale)
        set_init(dq.input[2], layer.w_zero_point)
        if layer.bias_int is None or len(node.input) < 3:
            continue
        bq = producer.get(node.input[2])
        if bq is None or bq.op_type != "DequantizeLinear":
            raise ArtifactError(f"{path}: the quantizer left no DequantizeLinear on its bias")
        # The input grid in the graph is occ's, unless another layer pinned the tensor
        # first (a shortcut conv reading its block's input): then the same bias values at
        # that grid's accumulator scale (one rounding), so the integer kernel still applies.
        x_dq = producer.get(node.input[0])
        grid = (float(numpy_helper.to_array(inits[x_dq.input[1]]).reshape(()))
                if x_dq is not None and x_dq.op_type == "DequantizeLinear" else layer.act_scale)
        bias_int = layer.bias_int
        if grid != layer.act_scale:
            bias_int = np.clip(np.round(bias_int.astype(np.float64) * layer.act_scale / grid),
                               -(2**31 - 1), 2**31 - 1).astype(np.int32)
        set_init(bq.input[0], bias_int)
        set_init(bq.input[1], (layer.w_scale * np.float32(grid)).astype(np.float32))


def _clip_narrow_inputs(proto: Any, layers: dict[str, IntLayer],
                        node_names: dict[str, str]) -> None:
    """Inputs below 8 bits: a uint8 ``Clip(0, 2^b - 1)`` between their Q and DQ."""
    from onnx import helper, numpy_helper

    producer = {o: n for n in proto.graph.node for o in n.output}
    by_name = {n.name: n for n in proto.graph.node}
    done: set[str] = set()
    for path, layer in layers.items():
        if layer.act_scale is None or layer.a_bits >= 8:
            continue
        dq = producer.get(by_name[node_names[path]].input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" \
            else None
        if dq is not None and dq.input[0].removesuffix("_occ_clip") in done:
            continue  # another layer reading the same tensor (a shortcut) clipped it already
        if q is None or q.op_type != "QuantizeLinear":
            raise ArtifactError(f"{path}: the quantizer left no QuantizeLinear on its input")
        if q.output[0] in done:
            continue
        done.add(q.output[0])
        clipped, lo, hi = q.output[0] + "_occ_clip", q.output[0] + "_lo", q.output[0] + "_hi"
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array(0, dtype=np.uint8), lo),
            numpy_helper.from_array(np.array(2**layer.a_bits - 1, dtype=np.uint8), hi)])
        for n in proto.graph.node:
            for i, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[i] = clipped
        proto.graph.node.append(helper.make_node("Clip", [q.output[0], lo, hi], [clipped],
                                                 name=q.name + "_occ_clip"))
    if done:
        _toposort(proto)


def _toposort(proto: Any) -> None:
    """Reorder ``proto.graph.node`` topologically (ONNX requires it; appended nodes break it)."""
    ready = {i.name for i in proto.graph.input} | {i.name for i in proto.graph.initializer} | {""}
    pending = list(proto.graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise StageError("internal error: the QDQ graph has a cycle")
        pending = rest
    copies = [copy.deepcopy(n) for n in ordered]
    del proto.graph.node[:]
    proto.graph.node.extend(copies)


def export_int8(model: nn.Module, example: torch.Tensor, calib: torch.Tensor, *,
                align: bool = True) -> Any:
    """QDQ ``ModelProto`` of a plain (non early-exit) occ model; input ``input``, output
    ``logits``, dynamic batch. ``align``: pad channels for onnxruntime's fast integer conv
    (``occ.deploy.qdq_align``; the same values)."""
    if is_early_exit(model):
        raise ArtifactError("early-exit models: use occ.deploy.qdq_exits.export_int8_exits")
    layers = int_layers(model)
    data = to_onnx(float_twin(model), example, ["logits"], opset=OPSET, dynamic_batch=True)
    proto = quantize_graph(data, layers, calib)
    if align:
        align_channels(proto)
    return proto
