"""``occ export model.occ --format onnx-qdq``: the integer ONNX file, checked, then written.

The graph comes from ``occ.deploy.qdq``. Before the file is written it runs in onnxruntime
(CPU provider, all optimisations: the integer kernels it will really use) on the whole test
split of the artifact's recorded data, next to ``occ.load``'s model in torch:

- top-1 agreement with occ's predictions >= ``min_agreement`` % (default 99), and
- accuracy within ``max_accuracy_drop`` points of occ's (default 0.2),

else ``StageError`` (exit 1) and nothing is written. The figures go in the result and in
the file's ``metadata_props`` (``occ_check``), next to the data spec the runtime and
``occ eval model.onnx`` read back (``occ.deploy.data_meta``), and, for early-exit models, the exit
points, thresholds, criterion and the tensors where the graph is cut per segment
(``occ_exit_cuts``, read by ``occ.deploy.runtime``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from occ.artifact import header as artifact_header
from occ.deploy.data_meta import artifact_data, data_metadata
from occ.deploy.onnx import _check_out, _load, _need, is_early_exit
from occ.deploy.runtime import float_kernels, ort_session
from occ.engine import load as loader
from occ.errors import RecipeError, StageError
from occ.io import atomic_write_bytes
from occ.quality import percent
from occ.version import __version__

log = logging.getLogger("occ")

MIN_AGREEMENT = 99.0
MAX_ACCURACY_DROP = 0.2
CALIB_SAMPLES = 512
EVAL_BATCH = 256


def allowed_difference(given: float | None, samples: int) -> float:
    """The accuracy difference (points) the int8 check allows: ``given``, else
    ``MAX_ACCURACY_DROP`` or one test input's worth where that is more (a split of fewer
    than 500 cannot tell 0.2 pt; 1 of 400 is 0.25)."""
    if given is not None:
        return given
    return max(MAX_ACCURACY_DROP, 100.0 / samples) if samples else MAX_ACCURACY_DROP


def check_int8(data: bytes, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
               min_agreement: float, max_accuracy_drop: float | None) -> dict[str, Any]:
    """Agreement and accuracies of the graph (output 0) against ``model`` on ``inputs``;
    ``max_accuracy_drop`` None: ``allowed_difference``'s default.

    Raises:
        StageError: agreement below ``min_agreement`` or accuracy off by more than
            ``max_accuracy_drop`` points.
    """
    got, ref = [], []
    try:
        session = ort_session(data)
        with torch.no_grad():
            for x in inputs.split(EVAL_BATCH):
                got.append(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]))
                ref.append(model(x))
    except Exception as err:  # noqa: BLE001  (as export.verify: the runtime refused the graph)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise StageError(f"onnxruntime cannot run the int8 graph: {first}") from err
    g, r = torch.cat(got).argmax(1), torch.cat(ref).argmax(1)
    max_accuracy_drop = allowed_difference(max_accuracy_drop, len(targets))
    agreement, acc_onnx, acc_occ = percent(g == r), percent(g == targets), percent(r == targets)
    result = {"samples": len(targets), "top1_agreement": agreement, "accuracy_onnx": acc_onnx,
              "accuracy_occ": acc_occ, "min_agreement": min_agreement,
              "max_accuracy_drop": max_accuracy_drop}
    slack = 1e-9  # 50.4 - 50.2 is 0.20000000000000284 in float64
    if agreement < min_agreement - slack or abs(acc_onnx - acc_occ) > max_accuracy_drop + slack:
        raise StageError(
            f"the int8 graph agrees with occ on {agreement:.2f}% of test predictions (needs "
            f">= {min_agreement:g}%), accuracy {acc_onnx:.2f}% vs occ {acc_occ:.2f}% (allowed "
            f"{max_accuracy_drop:g} pt); not written. Loosen --min-agreement / "
            "--max-accuracy-diff to accept it, or --format onnx writes the exact float graph")
    return result


def _split(data: Any, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, n = [], [], 0
    for x, y in data.loader(split, EVAL_BATCH):
        xs.append(x)
        ys.append(y)
        n += len(x)
        if limit is not None and n >= limit:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit is not None else (x, y)


def _metadata(header: dict[str, Any], model: nn.Module, check: dict[str, Any],
              cuts: list[str] | None, layers: int, spec: Any) -> dict[str, str]:
    m = artifact_header.model_spec(header)
    meta = {"occ_version": __version__, "occ_format": "onnx-qdq", "arch": str(m.get("arch")),
            "input_shape": str(m.get("input_shape")), "num_classes": str(m.get("num_classes")),
            "quantized_layers": str(layers),
            "quantization": "QDQ: occ's int8 weights (per-channel scales), int32 biases and "
                            "input scales; other tensors calibrated (MinMax, uint8)",
            **data_metadata(header, spec=spec), "occ_check": json.dumps(check)}
    if cuts is not None:
        meta.update({"exit_points": ",".join(model.points),
                     "exit_thresholds": ",".join(repr(t) for t in model.thresholds),
                     "exit_criterion": str(model.criterion)})
    if cuts:  # none: every exit dropped, one segment (the graph's own exit output says so)
        meta["occ_exit_cuts"] = json.dumps(cuts)
    return meta


def export_int8(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                calib_samples: int = CALIB_SAMPLES, min_agreement: float = MIN_AGREEMENT,
                max_accuracy_drop: float | None = None,
                trust_code: bool = False, align_channels: bool = True,
                root: str | None = None) -> dict[str, Any]:
    """Write the checked integer ONNX of artifact ``path`` to ``out`` (default ``.int8.onnx``).

    ``root``: the data's folder when it moved since the artifact was made (``--root``).

    ``align_channels``: pad conv channels with zeros so every conv runs on onnxruntime's
    fast integer kernel (``occ.deploy.qdq_align``; the same outputs, a few more weights).

    Raises:
        RecipeError: a bad ``out`` or option, or a regression model (the check is top-1).
        ArtifactError: the artifact is unreadable or does not export.
        StageError: the graph does not pass the check (see the module docstring).
    """
    from occ.deploy import qdq as export_qdq
    from occ.deploy import qdq_exits as export_qdq_exits
    from occ.engine.evaluate import load_for_eval

    _need("onnx")
    _need("onnxruntime")
    if calib_samples < 1:
        raise RecipeError(f"must be >= 1, got {calib_samples}", where="--calib-samples")
    if not (math.isfinite(min_agreement) and min_agreement >= 0):  # nan would pass any graph
        raise RecipeError(f"must be a finite percentage >= 0, got {min_agreement}",
                          where="--min-agreement")
    if max_accuracy_drop is not None and not (math.isfinite(max_accuracy_drop)
                                              and max_accuracy_drop >= 0):
        raise RecipeError(f"must be >= 0 and finite, got {max_accuracy_drop}",
                          where="--max-accuracy-diff")
    src = Path(path)
    dst = Path(out) if out is not None else src.with_suffix(".int8.onnx")
    _check_out(src, dst)
    header, model, shape = _load(src, trust_code=trust_code)
    model.eval()
    # errors name --root, or the artifact and field a recorded value came from
    chosen = artifact_data(header, root, where=str(src))
    data = load_for_eval(chosen, trust_code=trust_code,
                         search=loader.code_search(header, trust_code))
    x_test, y_test = _split(data, "test")
    if y_test.is_floating_point():
        raise RecipeError("the int8 export checks class predictions; for a regression model "
                          "use --format onnx", where="--format")
    calib, _ = _split(data, "train", calib_samples)
    example = x_test[:2]
    cuts = None
    if is_early_exit(model):
        proto, cuts = export_qdq_exits.export_int8_exits(model, example, calib,
                                                         align=align_channels)
    else:
        proto = export_qdq.export_int8(model, example, calib, align=align_channels)
    layers = len(export_qdq.int_layers(model))
    padded = _padded_convs(proto)
    floats = float_kernels(proto.SerializeToString())
    if floats:
        named = ", ".join(f"{name} ({op})" for name, op in list(floats.items())[:5])
        log.warning("%s: %d weighted layer(s) of the int8 graph run as float kernels in "
                    "onnxruntime (an op the quantizer does not cover, such as LeakyReLU, "
                    "reads them): %s%s; the file may run slower than the float export "
                    "(--format onnx): time both on your hardware",
                    dst, len(floats), named, " ..." if len(floats) > 5 else "")
    check = check_int8(proto.SerializeToString(), model, x_test, y_test,
                       min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop)
    for key, value in _metadata(header, model, check, cuts, layers, chosen.spec).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "exported by occ export --format onnx-qdq (see metadata_props)"
    import onnx

    onnx.checker.check_model(proto)
    blob = proto.SerializeToString()
    try:
        atomic_write_bytes(dst, blob, where="--out")
    except OSError as err:
        raise RecipeError(f"cannot write: {err.strerror or err}", where="--out") from None
    return {"path": str(dst), "source": str(src), "format": "onnx-qdq", "bytes": len(blob),
            "opset": export_qdq.OPSET, "input": {"name": "input", "shape": ["batch", *shape]},
            "outputs": [o.name for o in proto.graph.output], "quantized_layers": layers,
            "calib_samples": len(calib), "exits": None if cuts is None else {
                "points": list(model.points), "thresholds": list(model.thresholds),
                "criterion": model.criterion, "cuts": cuts},
            "verify": check, "int8_initializer_bytes": _int8_bytes(proto),
            "channel_alignment": padded, "float_layers": floats}


def _padded_convs(proto: Any) -> dict[str, Any]:
    """What ``occ.deploy.qdq_align`` padded (it records it in ``metadata_props``)."""
    from occ.deploy.qdq_align import METADATA_KEY

    found = [p.value for p in proto.metadata_props if p.key == METADATA_KEY]
    return json.loads(found[0]) if found else {}


def _int8_bytes(proto: Any) -> int:
    """Bytes of the 8-bit integer initializers (the weights) in ``proto``."""
    from onnx import TensorProto

    small = (TensorProto.INT8, TensorProto.UINT8)
    return sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type in small)
