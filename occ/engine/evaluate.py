"""``occ eval`` and ``occ inspect``: an artifact or checkpoint measured on its data, and an
artifact's header and layer table."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from occ import metrics as metrics_mod
from occ.artifact import header as artifact_header
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.artifact.container import read_artifact
from occ.artifact.layout import has_magic
from occ.data import DataBundle, load_data
from occ.devices import resolve_device
from occ.engine import load as loader
from occ.engine.baseline_check import (
    EVAL_ADVICE,
    chance_warning,
    recorded_accuracy,
    recorded_warning,
)
from occ.engine.classes import check_class_names, checkpoint_classes
from occ.engine.data_options import (
    EVAL_OPTIONS,
    EvalData,
    eval_data,
    named_by_file,
    named_by_options,
)
from occ.engine.probe import EVAL_TERMS, check_model_fit
from occ.engine.runner import IN_MEMORY
from occ.errors import ArtifactError
from occ.limits import MAX_BATCH_VALUES, batch_within
from occ.models import build_model
from occ.quality import quality
from occ.training import predict

log = logging.getLogger("occ")


def load_for_eval(chosen: EvalData, *, trust_code: bool,
                  search: tuple[str, ...] = ()) -> DataBundle:
    """``load_data`` of ``chosen.spec``; an error about a field an option set (a mean that
    does not fit the images, a size the data cannot take) names that option. ``search``:
    the folders the file recorded its user code came from (``occ.callables``)."""
    with named_by_options(EVAL_OPTIONS, chosen.given), named_by_file(chosen):
        return load_data(chosen.spec, trust_code=trust_code, search=search)


def _open_checkpoint(path: Path, options: dict[str, Any], *, arch: str | None,
                     kwargs: dict[str, Any] | None, trust_checkpoint: bool, trust_code: bool,
                     ) -> tuple[nn.Module, Any, tuple[str, ...], EvalData]:
    """Build and load a checkpoint's model: its recorded ``arch`` or the given one. Returns
    the model, the checkpoint, where to look for its user code (``code_folders``) and the
    data to evaluate on (its record with ``options`` over it, checked first).

    What the kwargs (``kwargs``, else the recorded ones) leave out is filled in as a recipe
    fills it from the data: ``num_classes`` from the classifier's rows, ``in_channels``
    from the data's ``channels`` (``--channels``); each only where the builder takes it.

    The ``arch`` a checkpoint names is data: a ``pkg.module:callable`` in it is imported only
    with ``trust_code`` (``occ.trust``), like one in a recipe; so are the folders it
    records, only read with ``trust_code``.
    """
    from occ.errors import CheckpointError

    ckpt = load_checkpoint(path, trust=trust_checkpoint)
    spec_recorded = ckpt.meta.get("data")
    chosen = eval_data(spec_recorded if isinstance(spec_recorded, dict) else None, options,
                       where=f"{path}: data")
    arch = arch or ckpt.meta.get("arch")
    if not isinstance(arch, str):
        raise CheckpointError("has no architecture reference (occ's checkpoints record one; a "
                              "plain state dict or a pickled model does not): pass --arch NAME "
                              "(e.g. torchvision.resnet18) and --kwargs JSON if needed",
                              where=str(path))
    recorded = ckpt.meta.get("kwargs") or {}
    if not isinstance(recorded, dict):
        raise CheckpointError("must be a mapping", where=f"{path}: kwargs")
    build_kwargs = dict(recorded) if kwargs is None else dict(kwargs)
    classes = (None if "num_classes" in build_kwargs
               else _classes_from_state(ckpt.state_dict).get("num_classes"))
    in_channels = None if "in_channels" in build_kwargs else chosen.spec.channels
    search = ckpt.code_folders(where=str(path)) if trust_code else ()
    model = build_model(arch, build_kwargs, in_channels=in_channels, num_classes=classes,
                        allow_callables=trust_code, source=str(path), search=search)
    load_into(model, ckpt, where=str(path), arch=arch,
              channels_hint=lambda n: EVAL_TERMS.checkpoint_hint(n, None))
    return model, ckpt, search, chosen


def _classes_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``num_classes`` from a plain state dict's last 2-D weight (the classifier)."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return {"num_classes": int(last[-1].shape[0])} if last else {}


def evaluate_path(path: Path, *, data: str | None, root: str | None, trust_checkpoint: bool,
                  trust_code: bool, latency_runs: int | None = None, arch: str | None = None,
                  kwargs: dict[str, Any] | None = None,
                  preprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate an artifact (``.occ``) or a checkpoint on its data's test split.

    An artifact is evaluated with the preprocessing it records, an occ checkpoint with the
    data spec it records; ``preprocess`` (``--mean`` / ``--std`` / ``--channels`` /
    ``--image-size`` as ``mean``, ``std``, ``channels``, ``image_size``) overrides either
    (``occ.engine.data_options.eval_data``), and is how a plain state dict gets the
    preprocessing it was trained with. A plain state dict needs ``arch`` (and ``kwargs``
    unless ``num_classes`` follows from its classifier). Data whose classes the model was
    not made for is refused (``occ.engine.classes``). With ``latency_runs``, also time
    batch-1 and batch-64 forwards (``occ.latency.measure_latency``), under ``latency``.
    """
    from occ.errors import CheckpointError
    from occ.limits import check_input_file

    check_input_file(path, error=CheckpointError)  # by type: a FIFO would block the open
    options = {"dataset": data, "root": root, **(preprocess or {})}
    if has_magic(path, error=CheckpointError, what="file"):
        model, chosen, classes, search, recorded = _open_artifact(path, options,
                                                                  trust_code=trust_code)
        kind = "artifact"
    else:
        model, ckpt, search, chosen = _open_checkpoint(
            path, options, arch=arch, kwargs=kwargs, trust_checkpoint=trust_checkpoint,
            trust_code=trust_code)
        classes, kind = checkpoint_classes(ckpt.meta), "checkpoint"
        recorded = recorded_accuracy(ckpt.meta)
    spec = chosen.spec
    size = os.path.getsize(path)
    dataset = load_for_eval(chosen, trust_code=trust_code, search=search)
    device = resolve_device("auto")
    model.to(device).eval()  # the probe's batch goes to ``device``: so must the model
    check_class_names(classes, dataset, where=str(path))
    check_model_fit(model, dataset, device, where="--data" if data is not None else str(path),
                    terms=EVAL_TERMS, model_where=str(path))
    # the batch size the run measured with: float sums (and so near-ties, exit decisions on
    # a threshold) depend on the batch shape, so this repeats the report's figures exactly;
    # unless the file asks for more input per batch than OCC_MAX_BATCH_VALUES
    batch = eval_batch(spec.batch_size, dataset.input_shape, where=str(path))
    outputs, targets = predict(model, dataset.loader("test", batch), device)
    m = metrics_mod.measure(model, outputs, targets, input_shape=dataset.input_shape,
                            device=device, size=size)
    result = {"path": str(path), "kind": kind, "data": spec.dataset,
              "preprocess": dataset.preprocess, **chosen.sources(),
              "input_shape": list(dataset.input_shape), "batch_size": batch,
              **({"batch_size_recorded": spec.batch_size} if batch < spec.batch_size else {}),
              **m.to_dict()}
    said = [recorded_warning(m.accuracy, recorded=recorded, preprocess=dataset.preprocess,
                             subject=f"{path}: accuracy", advice=EVAL_ADVICE, whose=kind,
                             under="this")]
    if dataset.task != "regression":
        if said[0] is None:  # one warning for one cause: the recorded one says it already
            said.append(chance_warning(quality(outputs, targets, dataset.num_classes,
                                               split="test"),
                                       preprocess=dataset.preprocess, where=str(path),
                                       classes=dataset.classes))
        for warning in filter(None, said):
            log.warning("%s", warning)
        if any(said):
            result["warnings"] = [w for w in said if w]
    if latency_runs is not None:  # after the metrics: timing forwards reset exit statistics
        from occ.latency import measure_latency

        big = batch_within(64, dataset.input_shape)
        sample = next(iter(dataset.loader("test", big)))[0]
        result["latency"] = measure_latency(model, dataset.input_shape, device,
                                            batch_sizes=(1, big) if big > 1 else (1,),
                                            runs=latency_runs, sample=sample)
    return result


def eval_batch(recorded: int, input_shape: tuple[int, ...], *, where: str,
               whose: str = "the recorded") -> int:
    """The batch size to evaluate a file in: the one it records (``recorded``; ``whose``
    names it: an ONNX file's is occ's default), shrunk (and said, on stderr) when one batch
    of inputs would pass ``OCC_MAX_BATCH_VALUES``: a few-KB file recording batch 100,000
    and 1024 x 1024 images asked for 6 GB. The figures then differ from the run's by float
    rounding at most."""
    batch = batch_within(recorded, input_shape)
    if batch < recorded:
        shape = "×".join(str(d) for d in input_shape)
        log.warning("%s: evaluated in batches of %s, not %s %s: %s inputs of %s "
                    "are over the %s (figures may differ from the run's in float rounding)",
                    where, f"{batch:,}", whose, f"{recorded:,}", f"{recorded:,}", shape,
                    MAX_BATCH_VALUES.hint())
    return batch


def _open_artifact(path: Path, options: dict[str, Any], *, trust_code: bool,
                   ) -> tuple[nn.Module, EvalData, list[str] | None, tuple[str, ...],
                              float | None]:
    """An artifact's rebuilt model, the data to evaluate it on (its record with
    ``options`` over it), its class names, where to look for its user code
    (``occ.engine.load.code_search``) and the accuracy it recorded."""
    from occ.errors import DataError

    artifact = read_artifact(path)
    recorded = artifact_header.recorded_data(artifact.header)
    if recorded.get("dataset") == IN_MEMORY and options.get("dataset") is None:
        raise DataError("this artifact was measured on data handed in from Python; pass "
                        "--data (and --root), or from Python data= (and root=)",
                        where=str(path))
    chosen = eval_data(artifact_header.recipe_data(artifact.header), options,
                       preprocess=recorded.get("preprocess"),
                       where=f"{path}: header recipe.data",
                       preprocess_where=f"{path}: header data.preprocess")
    try:
        model = loader.rebuild(artifact, trust_code=trust_code, source=str(path))
        classes = artifact_header.recorded_classes(artifact.header)
        search = loader.code_search(artifact.header, trust_code)
    except ArtifactError as err:  # name the file (and the field), like occ.load does
        raise err.located(f"{path}:") from None
    return model, chosen, classes, search, recorded_accuracy(artifact.header)


def inspect_artifact(path: Path) -> dict[str, Any]:
    """Header and per-tensor table of an artifact."""
    artifact = read_artifact(path)
    rows = []
    for s in artifact.streams:
        t = artifact.tensors[s["name"]]
        numel = t.numel()
        zeros = numel - int(torch.count_nonzero(t)) if numel else 0
        rows.append({"name": s["name"], "shape": s["shape"], "dtype": s["dtype"],
                     "codec": s["codec"], "bytes": s["length"],
                     "sparsity": zeros / numel if numel else 0.0,
                     "bits_per_value": 8.0 * s["length"] / numel if numel else 0.0,
                     **({"meta": s["meta"]} if s.get("meta") else {})})
    from occ.artifact.accounting import size_breakdown

    header = {k: v for k, v in artifact.header.items() if k != "recipe"}
    return {"path": str(path), "bytes": artifact.size, "header": header,
            "size": size_breakdown(path),
            "recipe": artifact_header.recipe(artifact.header), "tensors": rows,
            "header_json": len(json.dumps(artifact.header))}
