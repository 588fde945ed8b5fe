"""Model in, model out: ``occ.compress(model, recipe, train_data=..., test_data=...)``.

The way NNCF, torch.ao and ModelOpt are used: hand over an ``nn.Module`` and your data,
get the compressed ``nn.Module`` back. The recipe is a path, a dict, or a list of typed
stage configs; a dict needs neither ``model:`` nor ``data:`` (they are passed in). The
run is the same runner ``occ compress`` uses, so the report, the gates and the artifact
(``result.save(path)``) are the same.

Your model object is never modified: occ compresses a copy. Its architecture reference in
the artifact is ``arch`` when given, else the matching ``torchvision.<fn>`` when the model
is one of torchvision's, else its class (``pkg.module:Class``; rebuilding that from the
file alone needs ``trust_code`` and a class callable without arguments).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from occ.errors import RecipeError
from occ.progress import NullProgress, Progress
from occ.recipe import Recipe, parse_recipe
from occ.report.data import Report
from occ.techniques.spec import StageConfig

Metric = Callable[[torch.Tensor, torch.Tensor], float]
log = logging.getLogger("occ")


@dataclass
class CompressionResult:
    """What ``occ.compress(model, ...)`` returns.

    Attributes:
        model: The compressed model (an ``nn.Module`` in eval mode, on the run's device).
        report: The run's report (per-stage metrics, ``report.final_metrics()``).
        metric: Your ``metric(outputs, targets)`` on the test data after compression
            (``None`` without a metric); ``baseline_metric`` before.
    """

    model: nn.Module
    report: Report
    artifact: bytes
    metric: float | None = None
    baseline_metric: float | None = None

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (percent) on the test data after the last stage."""
        return self.report.final_metrics().accuracy

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``.occ`` artifact (``occ.load`` / ``occ eval`` read it); returns the path."""
        from occ.io import atomic_write_bytes

        atomic_write_bytes(path, self.artifact)
        return Path(path)


def compress_model(model: nn.Module, recipe: Any, *, train_data: Any = None,
                   val_data: Any = None, test_data: Any = None,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   metric: Metric | None = None, arch: str | None = None,
                   kwargs: dict[str, Any] | None = None, out: str | None = None,
                   keep_order: bool = False, trust_code: bool = False,
                   progress: Progress | None = None) -> CompressionResult:
    """Compress ``model`` with ``recipe`` on the given data; see the module docstring.

    Args:
        model: Your trained ``nn.Module`` (not modified).
        recipe: A recipe path, a dict (``stages`` at least), a ``Recipe`` or a list of
            stage configs (``PruneConfig(...)``).
        train_data: A map-style ``Dataset`` of ``(x, y)`` or a ``DataLoader`` over one,
            preprocessed the way the model expects. Without it, the recipe's ``data:`` is
            loaded; it must name its ``dataset`` (no default is assumed for your model).
        val_data: Held-out data for calibration and thresholds (default: carved out of
            ``train_data`` with ``data.val_size``).
        test_data: What the reported figures are measured on (default: the val data,
            given or carved out, with a warning: calibration and thresholds saw it too).
        loss: ``loss(outputs, targets) -> tensor`` for every stage that trains (default:
            the recipe's ``loss``).
        metric: ``metric(outputs, targets) -> float`` measured before and after on the
            test data (occ's own accuracy is reported either way).
        arch: The architecture reference to record (``torchvision.resnet18``, a zoo name,
            ``pkg.module:fn``); inferred when omitted. ``kwargs`` go with it.
        out: Also write ``model.occ`` and the reports into this directory.
        keep_order: Run the stages as written.
        trust_code: Allow ``pkg.module:callable`` references in the recipe to be imported.
        progress: Progress reporting (silent by default).

    Raises:
        RecipeError, DataError, ModelError: bad input, before any work.
        StageError: a stage failed.
    """
    from occ.engine import runner
    from occ.engine.plan import make_plan

    if not isinstance(model, nn.Module):
        raise RecipeError(f"must be a torch.nn.Module, got {type(model).__name__}",
                          where="compress(model)")
    ref, ref_kwargs = (arch, dict(kwargs or {})) if arch else infer_arch(model)
    parsed, names_data = to_recipe(recipe, arch=ref, kwargs=ref_kwargs)
    if train_data is None and not names_data:  # else: the default dataset, in silence
        raise RecipeError("no data to compress on: pass train_data= (your dataset or "
                          "loader), or give the recipe a data: section naming its dataset",
                          where="compress(train_data)")
    # what the artifact will record: the recipe's own model: when it names one
    # a reference the caller gave (arch=) or occ inferred from the model's own class is the
    # caller's code; one a recipe file names is data: built only with trust_code
    unloadable = rebuild_problem(model, parsed.model.arch, dict(parsed.model.kwargs),
                                 trust_code=trust_code, callers=parsed.model.arch == ref)
    if unloadable is not None:  # said before the work, and kept in the report
        log.warning("%s", unloadable)
    if train_data is not None:
        parsed = replace(parsed, data=replace(parsed.data, batch_size=_batch_size(
            train_data, parsed.data.batch_size)))
    plan = make_plan(parsed, keep_order=keep_order)
    if train_data is None and (val_data is not None or test_data is not None):
        raise RecipeError("val_data / test_data need train_data too (else the recipe's data "
                          "is used and they would be ignored)", where="compress")
    ctx = _context(model, plan.recipe, train_data, val_data, test_data, trust_code,
                   progress or NullProgress())
    ctx.custom_loss = loss
    ctx.warnings += [unloadable] if unloadable is not None else []
    if train_data is not None and test_data is None:
        note = ("no test_data: the figures are measured on the val data"
                f"{' (carved out of train_data)' if val_data is None else ''}, which "
                "calibration and thresholds also use; pass test_data= for held-out figures")
        log.warning("%s", note)
        ctx.warnings.append(note)
    from occ.engine.preflight import check_references

    check_references(plan, ctx.model, ctx)
    with tempfile.TemporaryDirectory(prefix="occ-") as tmp:
        ctx.out_dir = Path(out) if out else Path(tmp)
        # the plan's recipe: its stages in the order they run (``parsed`` is as written)
        plan = replace(plan, recipe=replace(plan.recipe, output=str(ctx.out_dir)))
        report = runner.run(plan, ctx)
        artifact = (ctx.out_dir / "model.occ").read_bytes()
    return CompressionResult(model=ctx.model.eval(), report=report, artifact=artifact,
                             metric=_metric(metric, ctx.model, ctx),
                             baseline_metric=_metric(metric, ctx.baseline, ctx))


def to_recipe(recipe: Any, *, arch: str, kwargs: dict[str, Any]) -> tuple[Recipe, bool]:
    """A validated ``Recipe`` from a path, dict, ``Recipe`` or list of stage configs, and
    whether it names its data (a ``data:`` with a ``dataset``; for a ``Recipe``, whether
    the document it was parsed from did: ``Recipe.data_named``).

    ``version``, ``name`` and ``model`` are filled in when missing (the model is passed
    in); ``data`` keeps its default unless given (data passed in replaces its splits).
    """
    if isinstance(recipe, Recipe):
        return recipe, recipe.data_named
    source = "<recipe>"
    if isinstance(recipe, (str, os.PathLike)):
        from occ.paths import resolve_recipe_paths
        from occ.safe_yaml import read_recipe_text, safe_load

        source = str(recipe)  # the same bounded reader as occ.recipe.load_recipe
        recipe = safe_load(read_recipe_text(source), where=source)
        recipe = resolve_recipe_paths(recipe, Path(source).parent)
    elif isinstance(recipe, Sequence) and all(isinstance(c, StageConfig) for c in recipe):
        recipe = {"stages": [stage_dict(c) for c in recipe]}
    if not isinstance(recipe, dict):
        raise RecipeError("must be a recipe path, a dict or a list of stage configs, got "
                          f"{type(recipe).__name__}", where="compress(recipe)")
    doc = {"version": 1, "name": "model", **recipe}
    doc.setdefault("model", {"arch": arch, "kwargs": kwargs})
    parsed = parse_recipe(doc, source=source)
    return parsed, parsed.data_named


def stage_dict(config: StageConfig) -> dict[str, Any]:
    """``{"type": ..., **fields}`` of a typed stage config (its registered name)."""
    from occ.config import to_dict
    from occ.techniques.registry import TECHNIQUES

    names = [spec.type for spec in TECHNIQUES if type(config) is spec.config]
    if not names:
        raise RecipeError(f"{type(config).__name__} is not a registered stage config",
                          where="compress(recipe)")
    return {"type": names[0], **to_dict(config)}


def infer_arch(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """The reference that rebuilds ``model``'s architecture, and its kwargs.

    A torchvision classifier is matched to the builder in its class's module whose fresh
    model (built on the ``meta`` device: no memory) has the same tensor names and shapes;
    anything else is recorded as its class, ``pkg.module:Class``.
    """
    cls = type(model)
    if cls.__module__.startswith("torchvision.models"):
        found = _torchvision_builder(model)
        if found is not None:
            return found
    name = cls.__qualname__ if cls.__qualname__.isidentifier() else "Module"
    return f"{cls.__module__}:{name}", {}


def rebuild_problem(model: nn.Module, arch: str, kwargs: dict[str, Any], *,
                    trust_code: bool = False, callers: bool = True) -> str | None:
    """Why ``occ.load(path)`` could not rebuild ``model`` from the reference the artifact
    records (``arch``, ``kwargs``), or None when it can (or cannot be checked).

    The reference is built the way ``occ.load`` builds it, on the ``meta`` device (no
    memory, no weights), and its tensor names and shapes compared with ``model``'s. A
    ``pkg.module:callable`` is built only when its module is already imported (the class
    of ``model``, a builder the caller imported) or with ``trust_code``: this check never
    imports code the caller did not. ``callers``: the reference is the caller's own (given
    as ``arch=`` or inferred from ``model``); one a recipe file names is data, and is
    built only with ``trust_code`` (``os:system`` is imported in every process). A class
    of the running script (``__main__``) cannot be imported by another process.
    """
    import sys

    from occ.models import build_model
    from occ.models.names import arch_kind

    fix = ("occ.load(path, model=<a fresh model of this architecture>) reads it; to make "
           "it load by itself, pass arch='pkg.module:builder' (importable, returning this "
           "architecture) and kwargs={...}")
    said = f"the artifact will record {arch}({_kwargs_text(kwargs)}), which"
    if arch.startswith("__main__:"):
        return f"{said} is defined in the running script, not an importable module: {fix}"
    if arch_kind(arch) == "callable" and not trust_code and (
            not callers or arch.partition(":")[0] not in sys.modules):
        return None  # checking would run code not the caller's: occ.load needs trust_code
    try:
        with torch.device("meta"):
            fresh = build_model(arch, dict(kwargs), allow_callables=True)
    except Exception as err:  # noqa: BLE001  (any failure of the user's builder)
        first = (str(getattr(err, "message", err)).strip().splitlines() or [""])[0][:160]
        return f"{said} does not build ({type(err).__name__}: {first}): {fix}"
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    built = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if built == own:
        return None
    missing = sorted(own.keys() - built.keys())
    differ = sorted(k for k in own.keys() & built.keys() if own[k] != built[k])
    what = (f"has no tensor {missing[0]!r} ({len(missing)} missing)" if missing else
            f"gives {differ[0]} the shape {built[differ[0]]}, not {own[differ[0]]}" if differ
            else f"has {len(built.keys() - own.keys())} tensors this model has not")
    return f"{said} builds another model: it {what}: {fix}"


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _torchvision_builder(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    import importlib

    from torchvision import models

    module = importlib.import_module(type(model).__module__)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    kwargs = {"num_classes": linear[-1].out_features} if linear else {}
    for name in models.list_models(module=models):
        if not hasattr(module, name):
            continue
        try:
            with torch.device("meta"):
                fresh = models.get_model(name, weights=None, **kwargs)
        except Exception:  # noqa: BLE001  (a builder that rejects the kwargs is not it)
            continue
        if {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == own:
            return f"torchvision.{name}", kwargs
    return None


def _batch_size(data: Any, default: int) -> int:
    from torch.utils.data import DataLoader

    return data.batch_size if isinstance(data, DataLoader) and data.batch_size else default


def _context(model: nn.Module, recipe: Recipe, train_data: Any, val_data: Any,
             test_data: Any, trust_code: bool, progress: Progress) -> Any:
    """The run context: a copy of ``model``, the data bundle, device and seed."""
    from occ.callables import source_folder
    from occ.data import load_data
    from occ.data.custom import bundle_from_splits
    from occ.devices import resolve_device
    from occ.engine import runner
    from occ.engine.context import RunContext
    from occ.models.names import ArchRef
    from occ.training import seed_everything

    seed_everything(recipe.seed)
    device = resolve_device(recipe.device)
    search = source_folder(recipe.source)  # a recipe file's callables beside it import
    if train_data is None:
        data = load_data(recipe.data, seed=recipe.seed, trust_code=trust_code, search=search)
    else:
        data = bundle_from_splits(runner.IN_MEMORY, {
            "train": train_data, "val": val_data, "test": test_data}, recipe.data,
            test_from_val=True)
    own = copy.deepcopy(model).to(device).eval()
    if train_data is not None:  # the CLI's probe: one batch, before any work
        from occ.engine.probe import API_TERMS, check_model_fit

        check_model_fit(own, data, device, terms=API_TERMS, model_where="compress(model)",
                        where=f"compress({'test' if test_data is not None else 'train'}_data)")
    baseline = copy.deepcopy(own).eval()
    for p in baseline.parameters():
        p.requires_grad_(False)
    ctx = RunContext(model=own, baseline=baseline, data=data, device=device, seed=recipe.seed,
                     out_dir=Path("."), arch=ArchRef(recipe.model.arch,
                                                     dict(recipe.model.kwargs)),
                     progress=progress, recipe=recipe, trust_code=trust_code,
                     code_search=search)
    ctx.template, ctx.template_arch = copy.deepcopy(model).cpu(), recipe.model.arch
    return ctx


def _metric(metric: Metric | None, model: nn.Module, ctx: Any) -> float | None:
    if metric is None:
        return None
    from occ.training import predict

    outputs, targets = predict(model, ctx.loader("test"), ctx.device)
    return float(metric(outputs, targets))
