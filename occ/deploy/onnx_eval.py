"""``occ eval model.onnx [--latency]``: accuracy and onnxruntime latency of an ONNX file.

The data is the spec occ recorded in the file (``occ_data`` in ``metadata_props``, written
by ``occ export --format onnx-qdq``), else ``--data`` / ``--root``, else mnist5k. The file
runs through ``occ.deploy.runtime``: early-exit files segment by segment (the exits each test row
takes are counted), others as one session. Latency: ``occ.deploy.latency.measure_onnx_latency``
with as many intra-op threads as torch uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occ.errors import CheckpointError, RecipeError


def _spec(meta: dict[str, str], data: str | None, root: str | None) -> Any:
    """The recorded ``occ_data`` spec with ``--data`` / ``--root`` overriding, read like an
    artifact's (``occ.engine.runner.data_for``)."""
    from occ.engine.runner import data_for

    recorded = meta.get("occ_data")
    return data_for(json.loads(recorded) if recorded else None, data, root)


def evaluate_onnx(path: str | os.PathLike[str], *, data: str | None = None,
                  root: str | None = None, latency_runs: int | None = None) -> dict[str, Any]:
    """Accuracy (and exit shares, latency) of the ONNX file ``path`` on its test split.

    Raises:
        CheckpointError: the file is missing or not ONNX that onnxruntime can run.
        RecipeError: a regression dataset (top-1 accuracy only here).
    """
    from occ.data import load_data
    from occ.deploy.runtime import ExitSession, metadata, open_onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("file not found", where=str(path))
    try:
        meta = metadata(path)
        model = open_onnx(path, threads=torch.get_num_threads())
    except Exception as err:  # noqa: BLE001  (onnx / onnxruntime raise many types)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"not an ONNX model onnxruntime can run: {first}",
                              where=str(path)) from None
    spec = _spec(meta, data, root)
    dataset = load_data(spec)
    preds, targets, exits = [], [], []
    for x, y in dataset.loader("test", 256):
        preds.append(model.run(x.numpy()).argmax(1))
        targets.append(y.numpy())
        if isinstance(model, ExitSession):
            exits.append(model.last_exit)
    target = np.concatenate(targets)
    if np.issubdtype(target.dtype, np.floating):
        raise RecipeError("occ eval of an ONNX file scores class predictions only",
                          where=str(path))
    result: dict[str, Any] = {
        "path": str(path), "kind": "onnx", "data": spec.dataset,
        "accuracy": 100.0 * float((np.concatenate(preds) == target).mean()),
        "bytes": path.stat().st_size, "format": meta.get("occ_format", "onnx")}
    if exits:
        counts = np.bincount(np.concatenate(exits), minlength=len(model.segments) + 1)
        result["exits"] = {"counts": counts.tolist(),
                           "shares": (counts / counts.sum()).tolist()}
    if latency_runs is not None:
        from occ.deploy.latency import measure_onnx_latency

        sample = next(iter(dataset.loader("test", 64)))[0]
        result["latency"] = measure_onnx_latency(str(path), dataset.input_shape,
                                                 threads=torch.get_num_threads(),
                                                 runs=latency_runs, sample=sample)
    return result
