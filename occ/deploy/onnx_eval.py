"""``occ eval model.onnx [--latency]``: accuracy and onnxruntime latency of an ONNX file.

The data is the spec occ recorded in the file (``occ.deploy.data_meta``, written by ``occ
export`` in both formats) with ``--data`` / ``--root`` / ``--mean`` / ``--std`` /
``--channels`` / ``--image-size`` overriding;
a file that records none (another exporter's) needs ``--data``. A graph whose input shape
or number of scores does not fit the data, or data whose class names differ from the
recorded ones, is refused (``DataError``, exit 2) before the test split runs: the
number of scores on one probe batch (``occ.engine.probe.check_fit``). The file
runs through ``occ.deploy.runtime``: early-exit files segment by segment (the exits each test row
takes are counted), others as one session. Latency: ``occ.deploy.onnx_eval.measure_onnx_latency``
with as many intra-op threads as torch uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occ.deploy.data_meta import DATA_KEY, recorded_classes, recorded_code, recorded_spec
from occ.errors import CheckpointError, DataError, RecipeError
from occ.latency import EXIT_NOTE, batches_of, device_name, summary, time_calls
from occ.quality import percent


def _data(meta: dict[str, str], path: Path, options: dict[str, Any]) -> Any:
    """The recorded ``occ_data`` spec with eval's options over it, read like an artifact's
    (``occ.engine.data_options.eval_data``); a file that records none needs ``--data``."""
    from occ.engine.data_options import eval_data

    recorded = recorded_spec(meta, where=str(path))
    if recorded is None and options.get("dataset") is None:
        raise DataError("this ONNX file records no data to evaluate on (occ export writes "
                        "it; other exporters do not); pass --data (and --root), or from Python "
                        "data= (and root=)",
                        where=str(path))
    return eval_data(recorded, options, where=f"{path}: metadata {DATA_KEY}")


def evaluate_onnx(path: str | os.PathLike[str], *, data: str | None = None,
                  root: str | None = None, latency_runs: int | None = None,
                  preprocess: dict[str, Any] | None = None,
                  trust_code: bool = False) -> dict[str, Any]:
    """Accuracy (and exit shares, latency) of the ONNX file ``path`` on its test split.

    ``preprocess``: ``mean``, ``std``, ``channels``, ``image_size`` over the recorded
    preprocessing (``occ eval --mean`` ...; None: as recorded). ``trust_code``: the
    recorded data may be a ``pkg.module:callable`` (imported from ``sys.path``, beside
    the file or the working directory; an ONNX file records no code folders).

    Raises:
        CheckpointError: the file is missing, not a regular file (a FIFO, device, /proc
            file), over ``OCC_MAX_ARTIFACT_BYTES``, or not ONNX that onnxruntime can run.
        DataError: no data recorded nor given, or the file's input or output does not fit
            the data (its shape, its number or names of classes).
        RecipeError: a regression dataset (top-1 accuracy only here).
    """
    from occ.deploy.runtime import ExitSession, open_onnx
    from occ.engine.classes import check_class_names
    from occ.engine.evaluate import load_for_eval
    from occ.engine.probe import ONNX_TERMS, check_fit
    from occ.limits import MAX_ARTIFACT_BYTES, batch_within, check_input_file

    path = Path(path)
    # by type and size before onnx opens it: a FIFO would block the read, /dev/zero or a
    # /proc file never ends; 4 GiB is past protobuf's 2 GiB cap for one ONNX file
    check_input_file(path, limit=MAX_ARTIFACT_BYTES, error=CheckpointError, what="ONNX file")
    try:
        model = open_onnx(path, threads=torch.get_num_threads())
        meta = model.meta
    except CheckpointError:  # refused by occ's own checks (external data): already clear
        raise
    except Exception as err:  # noqa: BLE001  (onnx / onnxruntime raise many types)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"not an ONNX model onnxruntime can run: {first}",
                              where=str(path)) from None
    chosen = _data(meta, path, {"dataset": data, "root": root, **(preprocess or {})})
    spec = chosen.spec
    search = ((*recorded_code(meta, where=str(path)), str(path.parent)) if trust_code
              else ())  # the recorded folders are data: read only with the opt-in
    dataset = load_for_eval(chosen, trust_code=trust_code, search=search)
    check_class_names(recorded_classes(meta, where=str(path)), dataset, where=str(path))
    _check_input(model, dataset, path)
    batch = _batch(model, dataset.input_shape, path)  # before any run: a static one pads
    check_fit(lambda x: model.run(x.numpy()), dataset, where=str(path), terms=ONNX_TERMS,
              errors=(Exception,), scores_only=True)  # onnxruntime's errors are Exceptions
    preds, targets, exits = [], [], []
    for x, y in dataset.loader("test", batch):
        preds.append(_scores(model, x.numpy(), dataset, path).argmax(1))
        targets.append(y.numpy())
        if model.last_exit is not None:  # an early-exit graph: cut, or run whole
            exits.append(model.last_exit)
    target = np.concatenate(targets)
    if np.issubdtype(target.dtype, np.floating):
        raise RecipeError("occ eval of an ONNX file scores class predictions only",
                          where=str(path))
    result: dict[str, Any] = {
        "path": str(path), "kind": "onnx", "data": spec.dataset,
        "preprocess": dataset.preprocess, **chosen.sources(),
        "input_shape": list(dataset.input_shape), "batch_size": batch,
        "accuracy": percent(torch.from_numpy(np.concatenate(preds) == target)),
        "bytes": path.stat().st_size, "format": meta.get("occ_format", "onnx")}
    if exits:
        every = len(model.segments) + 1 if isinstance(model, ExitSession) else model.exits
        counts = np.bincount(np.concatenate(exits), minlength=every)
        result["exits"] = {"counts": counts.tolist(),
                           "shares": (counts / counts.sum()).tolist()}
    if latency_runs is not None:

        big = batch_within(64, dataset.input_shape)
        sample = next(iter(dataset.loader("test", big)))[0]
        result["latency"] = measure_onnx_latency(str(path), dataset.input_shape,
                                                 batch_sizes=(1, big) if big > 1 else (1,),
                                                 threads=torch.get_num_threads(),
                                                 runs=latency_runs, sample=sample)
    return result


def _batch(model: Any, input_shape: tuple[int, ...], path: Path) -> int:
    """The batch to score in: occ's 256, shrunk within ``OCC_MAX_BATCH_VALUES`` (256 x 3 x
    8192 x 8192 is 200 GB; said on stderr), or a static-batch graph's own (it pads every
    run to it: one over the limit is refused)."""
    from occ.engine.evaluate import eval_batch
    from occ.limits import MAX_BATCH_VALUES, batch_within

    fixed = getattr(model, "batch", None)
    if fixed is None:
        return eval_batch(256, input_shape, where=str(path), whose="occ's")
    if batch_within(fixed, input_shape) < fixed:
        shape = "×".join(str(d) for d in input_shape)
        raise DataError(f"the graph takes batches of exactly {fixed:,} inputs of {shape}, over "
                        f"the {MAX_BATCH_VALUES.hint()}; refused before running it",
                        where=str(path))
    return fixed


def _check_input(model: Any, dataset: Any, path: Path) -> None:
    """Refuse a graph whose declared input shape does not fit the data's samples."""
    declared = model.input_shape()  # e.g. ["batch", 3, 32, 32]; names for dynamic sizes
    want = (len(dataset.input_shape) + 1, *dataset.input_shape)
    fits = len(declared) == want[0] and all(
        not isinstance(d, int) or d <= 0 or d == w for d, w in zip(declared[1:], want[1:],
                                                                   strict=True))
    if not fits:
        shown = "×".join(str(d) for d in declared)
        raise DataError(f"the graph's input is {shown} but the data ({dataset.name}) gives "
                        f"batches of {'×'.join(str(d) for d in dataset.input_shape)} images; "
                        f"{_input_hint(declared, dataset)}", where=str(path))


def _input_hint(declared: list[Any], dataset: Any) -> str:
    """How to read the data the way a graph declaring input ``declared`` takes it: the
    graph's own channels (``--channels``) and square side (``--image-size``) where it fixes
    them and they differ from the data's, else the general hint."""
    from occ.data.names import EMBEDDED
    from occ.engine.probe import ONNX_TERMS

    fixes = []
    if len(declared) == 4:
        channels, height, width = declared[1:]
        if isinstance(channels, int) and channels > 0 and channels != dataset.input_shape[0]:
            fixes.append(ONNX_TERMS.channels_hint(channels, dataset))
        if (isinstance(height, int) and height > 0 and height == width
                and [height, width] != list(dataset.input_shape[1:])
                and dataset.name not in EMBEDDED):  # in-memory digits are never resized
            fixes.append(f"set --image-size {height} to read the images at the size it takes")
    return "; ".join(fixes) or ONNX_TERMS.shape


def _scores(model: Any, x: np.ndarray, dataset: Any, path: Path) -> np.ndarray:
    """(B, K) scores of ``x`` (their shape was checked on the probe batch,
    ``occ.engine.probe.check_fit``); the graph's refusal of a later batch is a DataError."""
    try:
        return model.run(x)
    except Exception as err:  # noqa: BLE001  (onnxruntime's own exception types)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"onnxruntime cannot run it on the data ({dataset.name}): {first}",
                        where=str(path)) from None


def measure_onnx_latency(path: str, input_shape: Sequence[int],
                         batch_sizes: Sequence[int] = (1, 64), *, threads: int = 1,
                         warmup: int = 10, runs: int = 100,
                         sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Median and p90 latency of an ONNX file in onnxruntime (CPU), ``measure_latency``'s
    result format. occ early-exit files run through ``occ.deploy.runtime`` (segments stop at the
    first confident exit); each timed run takes the next rows of ``sample``. A static-batch
    graph (``occ export --batch-size N``) is timed at its own batch size only."""
    import onnxruntime as ort

    from occ.deploy.runtime import ExitSession, open_onnx
    from occ.latency import check_timing

    check_timing(runs, warmup)
    model = open_onnx(path, threads=threads)
    fixed = getattr(model, "batch", None)
    if fixed is not None:  # a static-batch graph (occ export --batch-size N): timed as it is
        batch_sizes = (fixed,)
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
