"""Channel alignment of a QDQ graph: zero channels put every conv on the fast kernel.

onnxruntime's CPU ``QLinearConv`` has a fast path (MLAS "ConvSym": no im2col) only for
zero weight zero points, input channels a multiple of 4 and output channels a multiple of
8 (4 with AVX-512) and >= 16; other convs fall back to im2col plus a generic integer GEMM.
Pruning and width multipliers leave such counts (6, 12, 25 ...) and images have 1 or 3
channels, so a pruned occ model ran on the slow path while ``quantize_static`` of the
unpruned network ran on the fast one (README "Deployment" has the measurements).

``align_channels`` pads the graph so that every conv qualifies, without changing a value:

- a conv whose output count ``C`` misses the rule gets ``aligned(C) - C`` zero filters
  (zero bias, weight scale 1): their output is exactly 0, the tensor's zero point;
- every reader of a padded tensor gets zero weights for the extra channels (the next
  conv's input channels, a ``Gemm`` / ``MatMul``'s columns after a ``Flatten``), so they
  add exactly 0; per-tensor Q / DQ, ReLU, Clip, pooling and ``Add`` (both inputs padded
  alike, ``aligned`` depends on ``C`` only) carry the padding through unchanged;
- a graph input with too few channels for its first conv (1, 2, 3) is zero-padded by a
  float ``Pad`` before its ``QuantizeLinear`` (0 quantizes to the zero point exactly).

Paddings that meet (the two inputs of a residual ``Add``) go together; a group stays as
it is if a padded tensor would reach anything else (a graph output, a per-channel op,
``Reshape``, ``Concat`` ...) or the classifier after a ``Flatten`` would gain more zero
weights than the convs (``(C' - C) * H * W`` columns for no speed: LeNet-5's last conv).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("occ")

OUT_MULTIPLE = 8  # MLAS ConvSym: output channels % 8 (AVX2, AVX-VNNI), % 4 (AVX-512)
OUT_MINIMUM = 16  # ... and >= its 16-channel filter pack
IN_MULTIPLE = 4  # ... input channels % 4
METADATA_KEY = "occ_channel_alignment"  # what was padded: {"convs": {name: [C, C']}, ...}
# Ops that act on each element (or each channel alike) with per-tensor parameters: a padded
# tensor goes through them as it is (their zero channels stay zero).
_PASS = ("QuantizeLinear", "DequantizeLinear", "Relu", "Clip", "MaxPool", "AveragePool",
         "GlobalAveragePool", "GlobalMaxPool", "Identity", "Add")


def aligned(channels: int) -> int:
    """Output channel count a conv is padded to (``channels`` itself when it qualifies)."""
    if channels >= OUT_MINIMUM and channels % OUT_MULTIPLE == 0:
        return channels
    return max(OUT_MINIMUM, -(-channels // OUT_MULTIPLE) * OUT_MULTIPLE)


@dataclass
class _Plan:
    """What to pad: tensor -> (channels, padded channels, flattened spatial size or 0)."""

    tensors: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    conv_out: dict[int, int] = field(default_factory=dict)  # conv (node index) -> C_out'
    weight_in: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # node -> pad
    input_pad: dict[str, int] = field(default_factory=dict)  # graph input -> padded C


class _Graph:
    """Lookups over a ``ModelProto``'s graph."""

    def __init__(self, proto: Any) -> None:
        from onnx import numpy_helper

        g = proto.graph
        self.proto = proto
        self.producer = {o: n for n in g.node for o in n.output}
        self.readers: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in g.initializer}
        self.arrays = {name: numpy_helper.to_array(i) for name, i in self.inits.items()}
        self.outputs = {o.name for o in g.output}
        self.index = {id(n): i for i, n in enumerate(g.node)}  # names may be empty
        self.shapes: dict[str, list[int | None]] | None = None  # inferred on first use

    def weight_dq(self, node: Any, index: int = 1) -> Any | None:
        """The DequantizeLinear of an int8 initializer feeding ``node.input[index]``."""
        if len(node.input) <= index:
            return None
        dq = self.producer.get(node.input[index])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.inits:
            return None
        return dq

    def per_tensor(self, node: Any) -> bool:
        """A Q / DQ whose scale is one number (an activation's, not a weight's)."""
        scale = self.arrays.get(node.input[1]) if len(node.input) > 1 else None
        return scale is not None and scale.size == 1


def _conv_channels(g: _Graph, node: Any) -> tuple[int, int] | None:
    """(C_out, C_in) of a plain integer conv (group 1, int8 weights via DQ), else None."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    dq = g.weight_dq(node)
    if group != 1 or dq is None:
        return None
    w = g.arrays[dq.input[0]]
    if w.ndim < 3 or w.dtype != np.int8 or len(g.readers.get(dq.input[0], [])) != 1:
        return None
    return int(w.shape[0]), int(w.shape[1])


def plan(proto: Any) -> _Plan:
    """What ``align_channels`` pads.

    Each conv output (and image input) that misses the rule is a seed; the tensors it
    reaches are its padding. Seeds whose paddings meet (the two inputs of a residual
    ``Add``) are padded together or not at all; a group is left alone when one of its
    tensors reaches an op that cannot take it, or an ``Add`` of a padded and an unpadded
    tensor.
    """
    g = _Graph(proto)
    seeds: list[tuple[str, int, int, int | None]] = []  # tensor, C, C', conv index or None
    for k, node in enumerate(proto.graph.node):
        shape = _conv_channels(g, node) if node.op_type == "Conv" else None
        if shape is not None and aligned(shape[0]) != shape[0] and _symmetric(g, node):
            seeds.append((node.output[0], shape[0], aligned(shape[0]), k))
    for inp in proto.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != 4 or not dims[1].HasField("dim_value"):
            continue
        c = int(dims[1].dim_value)
        if c % IN_MULTIPLE and _feeds_conv_only(g, inp.name):
            seeds.append((inp.name, c, -(-c // IN_MULTIPLE) * IN_MULTIPLE, None))
    parts = []
    for name, c, cp, conv in seeds:
        part = _Plan()
        ok = _spread(g, part, name, (c, cp, 0))
        if conv is not None:
            part.conv_out[conv] = cp
        else:
            part.input_pad[name] = cp
        parts.append((part, ok))
    out = _Plan()
    for group in _groups([set(part.tensors) for part, _ in parts]):
        merged, ok = _Plan(), all(parts[i][1] for i in group)
        for i in group:
            for key in ("conv_out", "weight_in", "input_pad"):
                getattr(merged, key).update(getattr(parts[i][0], key))
            for name, pad in parts[i][0].tensors.items():
                ok = ok and merged.tensors.setdefault(name, pad) == pad
        for node in proto.graph.node:  # an Add pads its output only if both inputs are
            if ok and node.op_type == "Add" and node.output[0] in merged.tensors:
                ok = len({merged.tensors.get(i) for i in node.input}) == 1
        convs, dense = _growth(g, merged)
        ok = ok and dense <= convs  # the classifier gains nothing from its padded columns
        if not ok:
            log.info("export: %d conv(s) keep their channels", len(merged.conv_out))
            continue
        for key in ("tensors", "conv_out", "weight_in", "input_pad"):
            getattr(out, key).update(getattr(merged, key))
    return out


def _growth(g: _Graph, p: _Plan) -> tuple[int, int]:
    """Weights ``p`` adds to the convs and to the Gemm / MatMul after a ``Flatten``."""
    convs = dense = 0
    for k, node in enumerate(g.proto.graph.node):
        dq = g.weight_dq(node) if k in p.conv_out or k in p.weight_in else None
        if dq is None:
            continue
        w = g.arrays[dq.input[0]]
        if node.op_type == "Conv":
            c_out = p.conv_out.get(k, w.shape[0])
            c, cp, _ = p.weight_in.get(k, (w.shape[1], w.shape[1], 1))
            convs += c_out * (w.shape[1] - c + cp) * int(np.prod(w.shape[2:])) - w.size
        else:
            c, cp, spatial = p.weight_in[k]
            dense += (cp - c) * spatial * (w.size // (c * spatial))
    return convs, dense


def _symmetric(g: _Graph, node: Any) -> bool:
    """The conv's weight zero points are all 0 (the fast kernel's first condition)."""
    dq = g.weight_dq(node)
    zero = g.arrays.get(dq.input[2]) if dq is not None and len(dq.input) > 2 else None
    return zero is None or not zero.any()


def _groups(sets: list[set[str]]) -> list[list[int]]:
    """Indices of ``sets`` grouped by overlap (connected components)."""
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, names in enumerate(sets):
        for name in names:
            if name in owner:
                parent[root(i)] = root(owner[name])
            else:
                owner[name] = i
    found: dict[int, list[int]] = {}
    for i in range(len(sets)):
        found.setdefault(root(i), []).append(i)
    return list(found.values())


def _feeds_conv_only(g: _Graph, name: str) -> bool:
    """``name`` is read only through per-tensor Q -> DQ by plain convs (an image input)."""
    for q in g.readers.get(name, []):
        if q.op_type != "QuantizeLinear" or not g.per_tensor(q):
            return False
        after = g.readers.get(q.output[0], [])
        if len(after) == 1 and after[0].op_type == "Clip":  # a narrow input's clip
            after = g.readers.get(after[0].output[0], [])
        for dq in after:
            if dq.op_type != "DequantizeLinear" or not g.per_tensor(dq):
                return False
            for conv in g.readers.get(dq.output[0], []):
                if conv.op_type != "Conv" or conv.input[0] != dq.output[0] \
                        or _conv_channels(g, conv) is None:
                    return False
    return True


def _spread(g: _Graph, p: _Plan, name: str, pad: tuple[int, int, int]) -> bool:
    """Follow padded tensor ``name`` to its readers; False if one cannot take it."""
    had = p.tensors.get(name)
    if had is not None:
        return had == pad
    if name in g.outputs:
        return False
    p.tensors[name] = pad
    c, cp, spatial = pad
    for node in g.readers.get(name, []):
        op = node.op_type
        if op in ("QuantizeLinear", "DequantizeLinear"):
            ok = node.input[0] == name and g.per_tensor(node) \
                and _spread(g, p, node.output[0], pad)
        elif op in _PASS:  # an Add's other input: checked in ``plan`` once all are known
            ok = _spread(g, p, node.output[0], pad)
        elif op == "Conv" and spatial == 0:
            shape = _conv_channels(g, node)
            ok = shape is not None and node.input[0] == name and shape[1] == c
            if ok:
                p.weight_in[g.index[id(node)]] = (c, cp, 1)
        elif op == "Flatten" and spatial == 0:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            hw = _spatial(g, name)
            ok = axis == 1 and hw is not None and _spread(g, p, node.output[0], (c, cp, hw))
        elif op in ("Gemm", "MatMul") and spatial > 0:
            ok = _matmul_reads(g, node, name, c * spatial)
            if ok:
                p.weight_in[g.index[id(node)]] = (c, cp, spatial)
        else:
            ok = False
        if not ok:  # ``plan`` logs the group it leaves alone
            return False
    return True


def _spatial(g: _Graph, name: str) -> int | None:
    """H * W of a 4-D tensor, from shape inference (1 after a global pool)."""
    node = g.producer.get(name)
    while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        node = g.producer.get(node.input[0])
    if node is not None and node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return 1
    if g.shapes is None:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(g.proto)
        g.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None
                             for d in v.type.tensor_type.shape.dim]
                    for v in inferred.graph.value_info}
    dims = g.shapes.get(name)
    if dims is None or len(dims) != 4 or dims[2] is None or dims[3] is None:
        return None
    return int(dims[2] * dims[3])


def _matmul_reads(g: _Graph, node: Any, name: str, features: int) -> bool:
    """``node`` reads ``name`` as its data input and has int8 weights with ``features``
    input rows / columns."""
    if node.input[0] != name:
        return False
    dq = g.weight_dq(node)
    if dq is None:
        return False
    w = g.arrays[dq.input[0]]
    return w.ndim == 2 and w.shape[1 if _trans_b(node) else 0] == features


def _trans_b(node: Any) -> bool:
    return node.op_type == "Gemm" and next(
        (a.i for a in node.attribute if a.name == "transB"), 0) == 1


def align_channels(proto: Any) -> dict[str, int]:
    """Pad ``proto`` in place (see the module docstring); padded tensor -> channel count.

    Returns an empty dict (and leaves ``proto`` as it was) when nothing needs padding or a
    padded tensor would reach an op that cannot take it.
    """
    p = plan(proto)
    if not p.tensors:
        return {}
    g = _Graph(proto)
    nodes = list(proto.graph.node)
    record = {"convs": {nodes[k].name or f"#{k}": [p.tensors[nodes[k].output[0]][0], cp]
                        for k, cp in p.conv_out.items()},
              "inputs": {n: [p.tensors[n][0], cp] for n, cp in p.input_pad.items()},
              "why": "zero channels so that onnxruntime's fast integer conv applies; the "
                     "same values"}
    for k, cp in p.conv_out.items():
        _pad_conv_out(g, nodes[k], cp)
    g = _Graph(proto)  # weights padded on axis 0 above
    for k, (c, cp, spatial) in p.weight_in.items():
        _pad_weight_in(g, nodes[k], c, cp, spatial)
    for name, cp in p.input_pad.items():
        _pad_input(proto, name, cp)
    stale = set(p.tensors)
    keep = [v for v in proto.graph.value_info if v.name not in stale]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(record)
    return {name: cp for name, (_, cp, spatial) in p.tensors.items()
            if spatial == 0 and name not in p.input_pad}


def _set(g: _Graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    g.inits[name].CopyFrom(numpy_helper.from_array(value, name))
    g.arrays[name] = value


def _pad_axis(a: np.ndarray, axis: int, extra: int, fill: float = 0) -> np.ndarray:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths, constant_values=fill).astype(a.dtype)


def _pad_conv_out(g: _Graph, node: Any, cp: int) -> None:
    """Extra zero filters (scale 1, zero point 0, bias 0) up to ``cp`` output channels."""
    dq = g.weight_dq(node)
    w = g.arrays[dq.input[0]]
    extra = cp - w.shape[0]
    _set(g, dq.input[0], _pad_axis(w, 0, extra))
    scale = g.arrays[dq.input[1]]
    if scale.size > 1:
        _set(g, dq.input[1], _pad_axis(scale, 0, extra, 1.0))
        if len(dq.input) > 2 and dq.input[2]:
            _set(g, dq.input[2], _pad_axis(g.arrays[dq.input[2]], 0, extra))
    bq = g.weight_dq(node, 2)
    if bq is not None:
        _set(g, bq.input[0], _pad_axis(g.arrays[bq.input[0]], 0, extra))
        b_scale = g.arrays[bq.input[1]]
        if b_scale.size > 1:  # s_x * s_w of the extra filters: s_x * 1
            x_dq = g.producer.get(node.input[0])
            s_x = (float(g.arrays[x_dq.input[1]].reshape(()))
                   if x_dq is not None and x_dq.input[1] in g.arrays else 1.0)
            _set(g, bq.input[1], _pad_axis(b_scale, 0, extra, s_x))
            if len(bq.input) > 2 and bq.input[2]:
                _set(g, bq.input[2], _pad_axis(g.arrays[bq.input[2]], 0, extra))


def _pad_weight_in(g: _Graph, node: Any, c: int, cp: int, spatial: int) -> None:
    """Zero weights for the extra input channels (conv) or flattened features (Gemm)."""
    dq = g.weight_dq(node)
    w = g.arrays[dq.input[0]]
    if node.op_type == "Conv":
        _set(g, dq.input[0], _pad_axis(w, 1, cp - c))
        return
    trans_b = _trans_b(node)
    m = w if trans_b else w.T  # (out, c * spatial)
    m = _pad_axis(m.reshape(len(m), c, spatial), 1, cp - c).reshape(len(m), cp * spatial)
    _set(g, dq.input[0], np.ascontiguousarray(m if trans_b else m.T))


def _pad_input(proto: Any, name: str, cp: int) -> None:
    """A float ``Pad`` of graph input ``name`` to ``cp`` channels, read instead of it."""
    from onnx import helper, numpy_helper

    dims = next(i for i in proto.graph.input if i.name == name).type.tensor_type.shape.dim
    extra = cp - int(dims[1].dim_value)
    padded, pads = name + "_occ_aligned", name + "_occ_pads"
    proto.graph.initializer.append(numpy_helper.from_array(
        np.array([0, 0, 0, 0, 0, extra, 0, 0], dtype=np.int64), pads))
    for n in proto.graph.node:
        for i, x in enumerate(n.input):
            if x == name:
                n.input[i] = padded
    proto.graph.node.insert(0, helper.make_node("Pad", [name, pads], [padded],
                                                name=name + "_occ_align", mode="constant"))
