"""What the CLI calls: one function per command. The library never prints or exits.

``order`` and ``validate`` need no tensors and import no torch; the rest import it
when called.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import occ.techniques.order as order_mod
from occ.engine.plan import Plan, make_plan
from occ.engine.run_checks import check_run, import_trusted, with_overrides
from occ.engine.train_settings import check_train
from occ.errors import RecipeError
from occ.progress import NullProgress, Progress
from occ.recipe import dump_recipe, load_recipe

if TYPE_CHECKING:
    from occ.engine.model_api import CompressionResult
    from occ.report.data import Report


def order(techniques: list[str], *, where: str = "order(techniques)") -> dict[str, Any]:
    """The built-in order of ``techniques`` (aliases like ``KD``, ``P``, ``channel``);
    errors name ``where`` (the CLI: ``--techniques``).

    Returns:
        ``{"order": [...], "categories": [...], "edges": [{before, after, reason, source}]}``
        with the tokens as given, in execution order.
    """
    tokens = [t.strip() for t in techniques if t.strip()]
    if not tokens:
        raise RecipeError("no techniques given; e.g. P,Q,KD,EE", where=where)
    cats = [order_mod.category_of_alias(t, where) for t in tokens]
    order_mod.check_singletons(tokens, where)
    index = order_mod.sort_indices(cats)
    ordered = [tokens[i] for i in index]
    ordered_cats = [cats[i] for i in index]
    edges = [{"before": ordered[i], "after": ordered[j], "reason": e.reason, "source": e.source}
             for i, j, e in order_mod.edges_between(ordered_cats)]
    return {"order": ordered, "categories": ordered_cats, "edges": edges}


def validate(path: str | os.PathLike[str], *, keep_order: bool = False,
             check_files: bool = True, trust_code: bool = False) -> Plan:
    """Load, check and order a recipe without touching tensors.

    ``check_files=False``: the recipe's ``model.checkpoint`` may be missing (it is about
    to be replaced by a ``--checkpoint`` override, which is checked instead).
    ``trust_code``: also import (not call) every ``pkg.module:callable`` the recipe names,
    as ``compress --trust-code`` would find it (``occ.callables``); importing runs the
    module's code, and may import torch.
    """
    plan = make_plan(load_recipe(path, check_files=check_files), keep_order=keep_order)
    if trust_code:
        import_trusted(plan.recipe)
    return plan


def check_compress(recipe_path: str | os.PathLike[str], *, checkpoint: str | None = None,
                   out: str | None = None, keep_order: bool = False, seed: int | None = None,
                   guard: bool = True, trust_code: bool = False) -> Plan:
    """What ``compress`` checks before it loads anything: the recipe, its order and files,
    the overrides, trust and the output directory. Returns the resolved plan.

    ``occ compress --nproc N`` calls it once before starting N processes, so bad input is
    one line rather than one per process.

    Raises:
        RecipeError, CheckpointError, DataError, ModelError: bad input.
    """
    plan = validate(recipe_path, keep_order=keep_order, check_files=checkpoint is None)
    resolved = with_overrides(plan.recipe, checkpoint, out, seed=seed, guard=guard)
    check_run(resolved, trust_code=trust_code, out=out, out_dir=str(resolved.output))
    return replace(plan, recipe=resolved)


T = TypeVar("T")


def _keeps_your_rng(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` seeds Python's, NumPy's and torch's global generators for its own
    repeatability; the caller's are put back after it (``occ.training.rng_preserved``), so
    a script drawing random numbers between two calls does not draw occ's."""
    @functools.wraps(fn)
    def kept(*args: Any, **kwargs: Any) -> T:
        from occ.training import rng_preserved

        with rng_preserved(every_cuda=True):
            return fn(*args, **kwargs)

    return kept


@_keeps_your_rng
def compress(recipe_path: Any, recipe: Any = None, *, checkpoint: str | None = None,
             out: str | None = None, keep_order: bool = False, resume: bool = False,
             seed: int | None = None, guard: bool = True,
             trust_checkpoint: bool = False, trust_code: bool = False,
             progress: Progress | None = None, **model_in: Any,
             ) -> Report | CompressionResult:
    """Validate, order and run a recipe; write ``model.occ`` and the reports.

    ``compress("recipe.yaml")`` runs a recipe file and returns its ``Report``;
    ``checkpoint``, ``out`` and ``seed`` override the recipe's, and ``guard=False`` turns
    the quality gates off (``occ.engine.gates``).
    ``compress(model, recipe, train_data=..., ...)`` takes an ``nn.Module`` and returns a
    ``CompressionResult`` (see ``occ.engine.model_api.compress_model``).

    Raises:
        RecipeError, CheckpointError, DataError, ModelError: bad input, before any work.
        StageError: a stage failed (divergence, a round trip that is not exact).
    """
    if not isinstance(recipe_path, (str, os.PathLike)):  # model in, model out
        from occ.engine.model_api import compress_model

        return compress_model(recipe_path, recipe, out=out, keep_order=keep_order,
                              trust_code=trust_code, progress=progress, **model_in)
    if model_in or recipe is not None:
        extra = sorted(model_in)[0] if model_in else "a second argument"
        raise RecipeError(f"{extra} applies only when a model is passed in (compress(model, "
                          "recipe, train_data=...))", where="compress")
    from occ.engine import runner
    plan = check_compress(recipe_path, checkpoint=checkpoint, out=out, keep_order=keep_order,
                          seed=seed, guard=guard, trust_code=trust_code)
    resolved = plan.recipe
    from occ import distributed

    ctx = runner.prepare(resolved, trust_checkpoint=trust_checkpoint,
                         progress=progress or NullProgress(), trust_code=trust_code)
    from occ.engine.preflight import check_references

    check_references(plan, ctx.model, ctx)  # before the first stage trains
    try:
        return runner.run(plan, ctx, resume=resume)
    finally:
        distributed.teardown()


@_keeps_your_rng
def ablate(recipe_path: str | os.PathLike[str], *, checkpoint: str | None = None,
           out: str | None = None, max_orders: int | None = None, seed: int | None = None,
           tolerance: float | None = None, trust_checkpoint: bool = False,
           progress: Progress | None = None, trust_code: bool = False,
           seeds: list[int] | None = None, guard: bool = True) -> dict[str, Any]:
    """Run every order of the recipe's techniques (prefixes shared) and rank them.

    ``seeds``: run the whole ablation once per seed (``out/seed<N>/``) and rank the orders
    by their means, with paired intervals and statistical ties (``occ.engine.ablate_seeds``).

    Writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` under ``out``
    (default: the recipe's output directory + ``-ablation``); rerunning into the same
    directory reuses every prefix already computed. ``tolerance``: accuracy points, or MAE
    (target units) on a regression task; None = 0.5 points / 5 % of the baseline's MAE.
    ``guard``: False turns the recipe's quality gates off (``--no-guard``). The returned
    document also names that directory (``output``).
    """
    from occ import distributed
    from occ.engine import ablate as ablate_mod
    from occ.engine import resume, runner
    from occ.io import file_sha256

    if (size := distributed.launched_size()) > 1:  # every rank would run every order
        raise RecipeError(f"runs in one process, not under torchrun ({size} processes here); "
                          "data-parallel training is `occ compress --nproc N`",
                          where="occ ablate")
    if max_orders is not None and max_orders < 1:
        raise RecipeError(f"must be >= 1, got {max_orders}", where="--max-orders")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise RecipeError(f"must be >= 0 and finite, got {tolerance}", where="--tolerance")
    from occ.domains import check_seed

    if seed is not None:
        check_seed(seed, where="--seed")
    for s in seeds or ():
        check_seed(s, where="--seeds")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise RecipeError(f"must be distinct seeds, got {seeds}", where="--seeds")
    recipe = load_recipe(recipe_path, check_files=checkpoint is None)
    units, _ = ablate_mod.units_of(recipe)
    if len(units) < 2:
        raise RecipeError(f"needs at least two techniques to permute, got "
                          f"{[u.label for u in units]}", where=f"{recipe.source}: stages")
    recipe = with_overrides(recipe, checkpoint, None, guard=guard)
    out_dir = Path(out or f"{recipe.output}-ablation")
    from occ.outputs import ABLATE_DIRS, ABLATE_FILES, check_output_dir

    check_run(recipe, trust_code=trust_code, out=out, out_dir=str(out_dir),
             files=ABLATE_FILES, dirs=ABLATE_DIRS)
    for s in seeds or ():  # each seed's run keeps its own files and states
        check_output_dir(out_dir / f"seed{s}", where="--out" if out is not None else
                         f"{recipe.source}: output", files=ABLATE_FILES, dirs=ABLATE_DIRS)
    sha = file_sha256(str(recipe.model.checkpoint))
    sample_seed = recipe.seed if seed is None else seed
    docs = []
    with resume.OutputLock(out_dir):
        for s in seeds if seeds is not None else [None]:
            run_recipe = recipe if s is None else replace(recipe, seed=s)
            run_dir = out_dir if s is None else out_dir / f"seed{s}"
            ctx = runner.prepare(replace(run_recipe, output=str(run_dir)),
                                 trust_checkpoint=trust_checkpoint,
                                 progress=progress or NullProgress(), trust_code=trust_code)
            docs.append(ablate_mod.ablate(run_recipe, ctx, out_dir=run_dir,
                                          max_orders=max_orders, seed=sample_seed,
                                          tolerance=tolerance, checkpoint_sha=sha))
        if seeds is None:
            return {**_public(docs[0]), "output": str(out_dir)}
        from occ.engine import ablate_seeds

        combined = ablate_seeds.combine(docs, list(seeds))
        ablate_seeds.write_outputs(combined, out_dir)
        return {**combined, "output": str(out_dir)}


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """An ablation document without its in-memory parts (per-image results)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


@_keeps_your_rng
def train(arch: str, *, data: str = "mnist5k", epochs: int | None = None, out: str,
          lr: float | None = None, batch_size: int | None = None, seed: int = 0,
          device: str = "auto", weight_decay: float | None = None, shift: int | None = None,
          kwargs: dict[str, Any] | None = None, root: str | None = None,
          limit_train: int | None = None, pad_to: int | None = None, loss: str = "auto",
          val_size: int | None = None, image_size: int | None = None,
          channels: int | None = None, progress: Progress | None = None,
          trust_code: bool = False) -> dict[str, Any]:
    """Train a baseline so a fresh machine can go end to end; writes an occ checkpoint.

    Under torchrun (``occ train --nproc N``) the ranks train one model with
    DistributedDataParallel, as ``compress`` does; rank 0 writes it.

    ``loss``: ``auto`` (cross-entropy, or MSE on a regression dataset), ``mse`` or ``l1``.
    ``channels``: 1 reads an imagefolder as grayscale (``data.channels``).
    ``trust_code``: allow ``arch`` to be a ``pkg.module:callable`` (``occ.trust``).

    ``epochs``, ``lr``, ``batch_size``, ``weight_decay`` and ``shift`` (random shifts of
    the training digits, in pixels) left ``None`` take the model's converged defaults
    (``occ.engine.train_settings.train_defaults``: LeNet-5 30 epochs, batch 64, shifts of 2
    pixels on mnist5k, ...).
    """
    settings = check_train(arch, data=data, epochs=epochs, out=out, lr=lr,
                           batch_size=batch_size, seed=seed, device=device,
                           weight_decay=weight_decay, shift=shift, kwargs=kwargs, root=root,
                           limit_train=limit_train, pad_to=pad_to, loss=loss,
                           val_size=val_size, image_size=image_size, channels=channels,
                           trust_code=trust_code)
    from occ import distributed
    from occ.engine import baseline

    try:  # under torchrun (``occ train --nproc N``): data-parallel, only rank 0 writes
        ranked = distributed.setup()
        return baseline.train_baseline(arch, kwargs or {}, settings.pop("spec"), out=out,
                                       seed=seed, device=str(ranked) if ranked else device,
                                       progress=progress or NullProgress(),
                                       trust_code=trust_code, **settings)
    finally:
        distributed.teardown()


def evaluate(path: str | os.PathLike[str], *, data: str | None = None, root: str | None = None,
             trust_checkpoint: bool = False, trust_code: bool = False, latency: bool = False,
             latency_runs: int = 100, arch: str | None = None,
             kwargs: dict[str, Any] | None = None, mean: list[float] | None = None,
             std: list[float] | None = None, channels: int | None = None,
             image_size: int | None = None) -> dict[str, Any]:
    """Accuracy, params, size, MACs, BitOps (and exits) of a checkpoint or an artifact.

    A plain state dict (no occ metadata) needs ``arch`` (zoo name, ``torchvision.<fn>`` or
    ``pkg.module:callable``) and, where the classifier does not imply them, ``kwargs``.
    ``mean`` / ``std`` (per channel, or one value for all), ``channels`` (imagefolder: 1
    reads the images as grayscale, 3 as RGB) and ``image_size`` (the square side images
    are resized to) replace what the file records or the dataset's default. The result
    says what was used: ``preprocess``, ``input_shape`` (C, H, W), and where they came
    from, ``preprocess_source`` (the normalisation) and ``input_source`` (the channels and
    size), each ``options``, ``recorded`` or ``default``, with ``preprocess_options`` the
    options that set them.

    With ``latency``, also the median / p90 batch-1 and batch-64 forward latency over
    ``latency_runs`` timed runs (``occ.latency``), under the key ``latency``. An ``.onnx``
    file is run in onnxruntime (``occ.deploy.onnx_eval``; early exits through
    ``occ.deploy.runtime``).

    Raises:
        RecipeError: a bad option (the message names it: ``--channels``, ``--image-size``).
        CheckpointError, ArtifactError: the file cannot be read or does not fit ``arch``.
        DataError: the data cannot be loaded, or the model does not fit it (the message
            says which option fixes that).
    """
    from occ.engine import evaluate
    if latency and latency_runs < 1:
        raise RecipeError(f"must be >= 1, got {latency_runs}", where="--latency-runs")
    preprocess = {"mean": mean, "std": std, "channels": channels, "image_size": image_size}
    if Path(path).suffix.lower() == ".onnx":  # onnxruntime, through occ.deploy.runtime
        from occ.deploy.onnx_eval import evaluate_onnx

        return evaluate_onnx(path, data=data, root=root, preprocess=preprocess,
                             latency_runs=latency_runs if latency else None,
                             trust_code=trust_code)
    return evaluate.evaluate_path(Path(path), data=data, root=root,
                                trust_checkpoint=trust_checkpoint, trust_code=trust_code,
                                latency_runs=latency_runs if latency else None, arch=arch,
                                kwargs=kwargs, preprocess=preprocess)


def export(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
           fmt: str = "onnx", batch_size: int | None = None, opset: int | None = None,
           exporter: str = "torchscript", trust_code: bool = False, int8: bool = False,
           int8_options: dict[str, Any] | None = None,
           root: str | None = None) -> dict[str, Any]:
    """Export an artifact's model to ONNX (``out`` defaults to ``path`` with ``.onnx``).

    ``root``: the data's folder when it moved since the artifact was made.

    ``fmt="onnx-qdq"`` or ``int8``: the integer QDQ graph instead, checked against occ on
    the test split before it is written (``occ.deploy.int8``).

    Quantized layers become dequantized float weights (plus their input fake-quant as
    float ops); early-exit models get every exit as an extra output. See ``occ.deploy.onnx``.

    Raises:
        RecipeError: unsupported ``fmt`` / ``exporter`` / ``opset`` / ``batch_size``.
        ArtifactError: the artifact is unreadable or cannot be exported.
        StageError: the exported graph does not compute what occ's model computes.
    """
    from occ.deploy.export import export_artifact

    if out is not None:
        from occ.outputs import check_output_file

        check_output_file(out, where="--out")

    return export_artifact(path, out, fmt=fmt, batch_size=batch_size, opset=opset,
                           exporter=exporter, trust_code=trust_code, int8=int8,
                           int8_options=int8_options, root=root)


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An artifact's header and per-tensor table (shape, sparsity, bits, coded bytes)."""
    from occ.engine import evaluate
    return evaluate.inspect_artifact(Path(path))


def report(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Re-render ``report.md`` and ``report.html`` in ``out_dir`` from its ``report.json``.

    Returns:
        ``{"report": path of report.json, "written": [md, html paths], "summary": {...}}``.

    Raises:
        OccError: ``out_dir`` has no readable occ ``report.json``.
    """
    from occ.report.write import render

    return render(out_dir)


__all__ = ["check_compress", "check_train", "compress", "dump_recipe", "evaluate", "export",
           "inspect", "order", "report", "train", "validate"]
