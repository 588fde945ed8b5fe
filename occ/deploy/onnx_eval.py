"""``occ eval model.onnx [--latency]``: accuracy and onnxruntime latency of an ONNX file.

The data is the spec occ recorded in the file (``occ_data`` in ``metadata_props``, written
by ``occ export --format onnx-qdq``), else ``--data`` / ``--root``, else mnist5k. The file
runs through ``occ.deploy.runtime``: early-exit files segment by segment (the exits each test row
takes are counted), others as one session. Latency: ``occ.deploy.onnx_eval.measure_onnx_latency``
with as many intra-op threads as torch uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occ.errors import CheckpointError, RecipeError
from occ.latency import EXIT_NOTE, batches_of, device_name, summary, time_calls


def _spec(meta: dict[str, str], data: str | None, root: str | None) -> Any:
    """The recorded ``occ_data`` spec with ``--data`` / ``--root`` overriding, read like an
    artifact's (``occ.engine.evaluate.data_for``)."""
    from occ.engine.evaluate import data_for

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

        sample = next(iter(dataset.loader("test", 64)))[0]
        result["latency"] = measure_onnx_latency(str(path), dataset.input_shape,
                                                 threads=torch.get_num_threads(),
                                                 runs=latency_runs, sample=sample)
    return result


def measure_onnx_latency(path: str, input_shape: Sequence[int],
                         batch_sizes: Sequence[int] = (1, 64), *, threads: int = 1,
                         warmup: int = 10, runs: int = 100,
                         sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Median and p90 latency of an ONNX file in onnxruntime (CPU), ``measure_latency``'s
    result format. occ early-exit files run through ``occ.deploy.runtime`` (segments stop at the
    first confident exit); each timed run takes the next rows of ``sample``."""
    import onnxruntime as ort

    from occ.deploy.runtime import ExitSession, open_onnx

    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    model = open_onnx(path, threads=threads)
    if sample is None or len(sample) == 0:
        sample = torch.randn(64, *input_shape, generator=torch.Generator().manual_seed(0))
    batches = []
    for batch in batch_sizes:
        inputs = batches_of(sample, batch, max(1, min(runs, -(-len(sample) // batch))))
        batches.append(summary(batch, time_calls(model.run, inputs, warmup=warmup, runs=runs)))
    notes = [EXIT_NOTE] if isinstance(model, ExitSession) else []
    return {"device": "cpu", "device_name": device_name(torch.device("cpu")),
            "threads": threads, "runtime": f"onnxruntime {ort.__version__}",
            "timer": "perf_counter_ns", "warmup": warmup, "runs": runs, "batches": batches,
            "notes": notes}
