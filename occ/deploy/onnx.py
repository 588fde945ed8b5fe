"""Export a compressed model to ONNX (``occ export model.occ --format onnx``).

What the file holds:

- The model ``occ.load`` rebuilds from the artifact: structurally pruned layers with their
  slim shapes; unstructured-pruning zeros as stored zeros (ONNX has no sparse kernels).
- Quantized layers as **dequantized float weights**: the exact float32 values occ's own
  forward uses, ``(q - zero_point) * scale``. Where a layer quantizes its input, that
  fake-quant is written out as float ops (``Mul`` by 1/scale, ``Round``, ``Add``, ``Clip``,
  ``Sub``, ``Mul``) — the same float32 operations as torch's fake-quant kernel, for any
  width 2..8 (ONNX ``QuantizeLinear`` covers 8 bits only and divides by the scale rather
  than multiplying by its inverse, so it would round some values differently). The graph
  computes what ``occ eval`` computes, in float: a runtime runs it as a simulation, not
  with int8 kernels.
- Early-exit models: output ``logits`` is each row's logits from the exit it takes (what
  ``occ eval`` scores), ``exit`` (int64) which exit that was (``len(points)`` = the
  backbone's end), then every head's logits ``exit<i>_logits`` and the backbone's own
  ``final_logits``. ONNX has no per-row early stop, so the graph runs every head for every
  row and picks with ``Where``: same outputs as occ, full compute.
- ``metadata_props``: occ version, input shape, classes, the data spec, class names and
  preprocessing ``occ eval model.onnx`` reads back (``occ.deploy.data_meta``), exit points
  and thresholds, quantized layers.

Exporter: torch's TorchScript-based exporter (``dynamo=False``) by default: it needs only
the ``onnx`` package and exports a LeNet in about a second, on every torch occ supports.
``exporter="dynamo"`` uses ``torch.export`` (needs ``onnxscript``; opset >= 18), torch's
default since 2.9: about 20 s the first time in a process on 2 CPU cores.

Before writing, if ``onnxruntime`` is installed, the exported graph is run on a seeded
random batch and compared with the torch model; a mismatch raises ``StageError``.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from occ.artifact import header as artifact_header
from occ.artifact.container import read_artifact
from occ.artifact.layout import has_magic
from occ.deploy.data_meta import data_metadata
from occ.engine import load as loader
from occ.errors import ArtifactError, OccError, RecipeError, StageError
from occ.io import atomic_write_bytes, refuse_special
from occ.models.edits import set_submodule
from occ.quality import percent
from occ.version import __version__

log = logging.getLogger("occ")

FORMATS = ("onnx", "onnx-qdq")  # onnx-qdq: integer graph, occ.deploy.int8
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
MAX_OPSET = {"torchscript": 20, "dynamo": 23}
VERIFY_BATCH = 8
FLOAT_TOL = 1e-4  # float graphs: |onnx - torch| <= FLOAT_TOL * max(1, max |torch|)
QUANT_TOL = 0.1  # fake-quant graphs: a rounding flip moves one step; only gross errors fail


class QuantInputLayer(nn.Module):
    """A quantized Conv2d / Linear as plain float ops: input fake-quant, dequantized weight.

    ``fq(x) = (clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s``: bit-identical to
    ``torch.fake_quantize_per_tensor_affine`` (same float32 steps, round half to even).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = _plain_copy(layer)
        a_bits = int(layer.occ_bits[1])
        active = (getattr(layer, "act_on", False) and getattr(layer, "mode", "") != "float"
                  and a_bits < 32)
        self.quant_input = bool(active)
        if self.quant_input:
            scale = layer.act_scale.detach().float().reshape(()).clone()
            self.register_buffer("scale", scale)
            self.register_buffer("inv_scale", 1.0 / scale)
            self.register_buffer("zero_point", layer.act_zero_point.detach().float()
                                 .reshape(()).clone())
            self.qmax = float(2**a_bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant_input:
            q = torch.clamp(torch.round(x * self.inv_scale) + self.zero_point, 0.0, self.qmax)
            x = (q - self.zero_point) * self.scale
        return self.layer(x)


def _plain_copy(layer: nn.Module) -> nn.Module:
    """A float ``nn.Conv2d`` / ``nn.Linear`` with the weight the quantized layer computes with."""
    weight = layer.quantized_weight().detach().float().clone()
    bias = layer.bias is not None
    with torch.device(weight.device):
        if isinstance(layer, nn.Conv2d):
            plain: nn.Module = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=bias,
                padding_mode=layer.padding_mode)
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=bias)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias:
            plain.bias.copy_(layer.bias.detach())
    return plain


def is_quantized(module: nn.Module) -> bool:
    """A quantized compute layer (``occ.techniques.quantize``): has ``occ_bits`` and
    ``quantized_weight``."""
    return (isinstance(module, (nn.Conv2d, nn.Linear)) and hasattr(module, "occ_bits")
            and callable(getattr(module, "quantized_weight", None)))


def is_early_exit(model: nn.Module) -> bool:
    """An early-exit wrapper (``occ.techniques.early_exit.EarlyExitNet``)."""
    return callable(getattr(model, "forward_all", None)) and hasattr(model, "thresholds")


class ExitsGraph(nn.Module):
    """An early-exit model as one static graph: every exit runs, ``Where`` picks per row."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from occ.techniques.early_exit.net import leaves

        outs = self.net.forward_all(x)  # [head_0 (B, K), ..., backbone's end (B, K)]
        logits = outs[-1]
        taken = torch.zeros_like(logits[:, 0], dtype=torch.long) + (len(outs) - 1)  # (B,)
        for e in reversed(range(len(outs) - 1)):  # earliest exit wins: apply it last
            go = leaves(outs[e], self.net.criterion, self.net.thresholds[e])  # (B,) bool
            logits = torch.where(go[:, None], outs[e].to(logits.dtype), logits)
            taken = torch.where(go, torch.full_like(taken, e), taken)
        return (logits, taken, *outs)


def export_ready(model: nn.Module) -> tuple[nn.Module, list[str], int]:
    """A copy of ``model`` that exporters turn into the graph described above.

    Returns:
        (module, output names, number of quantized layers rewritten).
    """
    ready = copy.deepcopy(model).eval()
    quantized = [name for name, m in ready.named_modules() if is_quantized(m)]
    for name in quantized:
        set_submodule(ready, name, QuantInputLayer(ready.get_submodule(name)))
    if not is_early_exit(ready):
        return ready, ["logits"], len(quantized)
    heads = [f"exit{e}_logits" for e in range(len(ready.thresholds))]
    return ExitsGraph(ready).eval(), ["logits", "exit", *heads, "final_logits"], len(quantized)


def check_options(fmt: str, exporter: str, opset: int | None,
                   batch_size: int | None) -> int:
    if fmt not in FORMATS:
        raise RecipeError(f"unsupported export format {fmt!r}; allowed: {', '.join(FORMATS)}",
                          where="--format")
    if exporter not in EXPORTERS:
        raise RecipeError(f"unknown exporter {exporter!r}; allowed: {', '.join(EXPORTERS)}",
                          where="--exporter")
    if exporter == "dynamo" and not _has_dynamo_flag():
        raise RecipeError(f"dynamo needs torch >= 2.5 (this is {torch.__version__})",
                          where="--exporter")
    if batch_size is not None and batch_size < 1:
        raise RecipeError(f"must be >= 1 (or omitted for a dynamic batch), got {batch_size}",
                          where="--batch-size")
    low = DEFAULT_OPSET["dynamo"] if exporter == "dynamo" else 13
    high = MAX_OPSET[exporter]
    opset = DEFAULT_OPSET[exporter] if opset is None else opset
    if not low <= opset <= high:
        raise RecipeError(f"must be in {low}..{high} for the {exporter} exporter, got {opset}",
                          where="--opset")
    return opset


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OccError(f"needs the {module} package: pip install 'occ[export]'",
                       where="occ export") from None


def _has_dynamo_flag() -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def to_onnx(module: nn.Module, example: torch.Tensor, outputs: Sequence[str], *, opset: int,
            dynamic_batch: bool, exporter: str = "torchscript") -> bytes:
    """Serialised ONNX of ``module`` traced on ``example`` (input named ``input``)."""
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        if exporter == "dynamo":
            _need("onnxscript")
            shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            program = torch.onnx.export(module, (example,), None, dynamo=True, verbose=False,
                                        input_names=["input"], output_names=list(outputs),
                                        opset_version=opset, dynamic_shapes=shapes)
            data = program.model_proto.SerializeToString()
        else:
            axes = {n: {0: "batch"} for n in ("input", *outputs)} if dynamic_batch else None
            buf = io.BytesIO()
            legacy = {"dynamo": False} if _has_dynamo_flag() else {}  # torch < 2.5: no flag
            torch.onnx.export(module, (example,), buf, input_names=["input"],
                              output_names=list(outputs), opset_version=opset,
                              dynamic_axes=axes, do_constant_folding=True, **legacy)
            data = buf.getvalue()
    for w in caught:  # the legacy exporter's deprecation notice, tracer notes
        log.debug("onnx export: %s", w.message)
    return data


def unshare_initializers(proto: Any) -> int:
    """Give every tensor the exporter deduplicated its own initializer again.

    torch's exporter stores equal constants once and feeds the copies through ``Identity``
    nodes (two convs whose folded biases are both zero share ``0.bias``). A quantizer then
    sees a bias that is not an initializer and leaves it float. Each such ``Identity`` of an
    initializer becomes a copy of that initializer under the Identity's output name.
    Returns how many were restored.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    restored = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits:
            copy_ = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]),
                                            name=node.output[0])
            graph.initializer.append(copy_)
            restored.append(node)
    for node in restored:
        graph.node.remove(node)
    return len(restored)


def _metadata(header: dict[str, Any], model: nn.Module, quantized: int,
              root: str | None, where: str) -> dict[str, str]:
    spec = artifact_header.model_spec(header)
    meta = {"occ_version": __version__, "arch": str(spec.get("arch")),
            "input_shape": str(spec.get("input_shape")),
            "num_classes": str(spec.get("num_classes")),
            "quantized_layers": str(quantized)}
    # What the inputs must look like and which data scores it (occ eval model.onnx).
    meta.update(data_metadata(header, root, where=where))
    if quantized:
        meta["quantization"] = "dequantized float32 weights; input fake-quant as float ops"
    if is_early_exit(model):
        meta["exit_points"] = ",".join(model.points)
        meta["exit_thresholds"] = ",".join(repr(t) for t in model.thresholds)
        meta["exit_criterion"] = str(model.criterion)
    return meta


def _finish(data: bytes, metadata: dict[str, str]) -> bytes:
    """Add ``metadata`` to the model and check it with ``onnx.checker``."""
    onnx = _need("onnx")
    proto = onnx.load_from_string(data)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "exported by occ export (dequantized weights; see metadata_props)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def verify(data: bytes, model: nn.Module, ready: nn.Module, example: torch.Tensor, *,
           quantized: bool) -> dict[str, Any] | None:
    """Run the graph in onnxruntime on ``example`` and compare it with the torch model.

    ``logits`` is compared with ``model``'s own forward (what ``occ eval`` scores), the
    other outputs with ``ready``'s. Returns None when onnxruntime is not installed.

    Raises:
        StageError: the outputs differ beyond the tolerance (float: 1e-4 of the output
            scale; with input fake-quant, 10%: a value on a rounding boundary may land on
            the neighbouring step, never more).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(g) for g in session.run(None, {"input": example.numpy()})]
    except Exception as err:  # noqa: BLE001  (onnxruntime's own exception types)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise StageError(f"onnxruntime cannot run the exported graph: {first}") from None
    with torch.no_grad():
        ref = ready(example)
        ref = [model(example), *ref[1:]] if isinstance(ref, tuple) else [model(example)]
    diff, scale, same = 0.0, 1.0, True
    for r, g in zip(ref, got, strict=True):
        if r.is_floating_point():
            diff = max(diff, float((g - r).abs().max()))
            scale = max(scale, float(r.abs().max()))
        else:
            same = same and torch.equal(g, r)
    tol = (QUANT_TOL if quantized else FLOAT_TOL) * scale
    # Top-1 agreement means something for class scores only (one output: regression).
    agree = (percent(got[0].argmax(1) == ref[0].argmax(1))
             if ref[0].dim() == 2 and ref[0].shape[1] > 1 else None)
    result = {"runtime": f"onnxruntime {ort.__version__}", "samples": len(example),
              "inputs": "random normal (a check of the graph, not of accuracy on data)",
              "max_abs_diff": diff, "tolerance": tol, "top1_agreement": agree}
    if not math.isfinite(diff) or diff > tol or not (same or quantized):
        raise StageError(f"the exported graph's outputs differ from occ's by {diff:.3g} "
                         f"(tolerance {tol:.3g}); please report this model")
    return result


def _check_out(src: Path, dst: Path) -> None:
    """Refuse an output (given or the default beside ``src``) before any export work."""
    if dst.is_dir():
        raise RecipeError("is a directory; give a file name such as model.onnx", where="--out")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise RecipeError("is the input artifact; choose another file", where="--out")
    refuse_special(dst, where="--out")


def _load(src: Path, *, trust_code: bool) -> tuple[dict[str, Any], nn.Module, list[int]]:
    """The artifact's header, its rebuilt model and the input shape (C, H, W)."""
    from occ.limits import MAX_ARTIFACT_BYTES, check_input_file

    check_input_file(src, limit=MAX_ARTIFACT_BYTES, error=ArtifactError, what="artifact")
    if not has_magic(src, error=ArtifactError, what="artifact"):
        raise ArtifactError("not an occ artifact; occ export takes the model.occ "
                            "that occ compress writes", where=str(src))
    artifact = read_artifact(src)
    try:
        model = loader.rebuild(artifact, trust_code=trust_code, source=str(src))
    except ArtifactError as err:
        raise err.located(f"{src}:") from None
    shape = artifact_header.model_spec(artifact.header).get("input_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0
                                                      for d in shape)):
        raise ArtifactError("header model.input_shape is missing or not a list of sizes",
                            where=str(src))
    return artifact.header, model, shape


def export_float(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 fmt: str = "onnx", batch_size: int | None = None, opset: int | None = None,
                 exporter: str = "torchscript", check: bool = True,
                 trust_code: bool = False, root: str | None = None) -> dict[str, Any]:
    """The float ONNX export of ``occ.deploy.export.export_artifact`` (same arguments)."""
    opset = check_options(fmt, exporter, opset, batch_size)
    _need("onnx")
    src = Path(path)
    dst = Path(out) if out is not None else src.with_suffix(".onnx")
    _check_out(src, dst)
    header, model, shape = _load(src, trust_code=trust_code)
    ready, outputs, quantized = export_ready(model)
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size or 2, *shape, generator=gen)  # dynamic: 2 avoids 0/1
    try:
        data = to_onnx(ready, example, outputs, opset=opset, dynamic_batch=batch_size is None,
                       exporter=exporter)
        data = _finish(data, _metadata(header, model, quantized, root, str(src)))
    except OccError:
        raise
    except Exception as err:  # noqa: BLE001  (exporters raise many types; one line for all)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ArtifactError(f"cannot be exported to ONNX: {first}", where=str(src)) from None
    checked = None
    if check:
        probe = torch.randn(batch_size or VERIFY_BATCH, *shape, generator=gen)
        checked = verify(data, model, ready, probe, quantized=quantized > 0)
    try:
        atomic_write_bytes(dst, data, where="--out")
    except OSError as err:
        raise RecipeError(f"cannot write: {err.strerror or err}", where="--out") from None
    exits = ({"points": list(model.points), "thresholds": list(model.thresholds),
              "criterion": model.criterion} if is_early_exit(model) else None)
    return {"path": str(dst), "source": str(src), "format": fmt, "bytes": len(data),
            "exporter": exporter, "opset": opset,
            "input": {"name": "input", "shape": [batch_size or "batch", *shape]},
            "outputs": outputs, "quantized_layers": quantized,
            "quantization": "dequantized float weights, input fake-quant as float ops"
            if quantized else None, "exits": exits, "verify": checked}
