"""Running a plan: build the context, run each stage, measure, write artifact + report.

``api`` is the thin, torch-free façade; this module does the tensor work.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from occ import distributed
from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.artifact.container import decode_artifact
from occ.callables import source_folder
from occ.data import DataBundle, load_data
from occ.devices import resolve_device
from occ.engine import gates
from occ.engine import load as loader
from occ.engine import resume as resume_mod
from occ.engine.baseline_check import (
    gain_warnings,
    recorded_accuracy,
    recorded_warnings,
)
from occ.engine.classes import check_class_names, checkpoint_classes
from occ.engine.context import ArchRef, RunContext
from occ.engine.measure import (
    gates_unread,
    measure_ctx,
    measure_input,
    measured,
    val_quality,
)
from occ.engine.plan import Plan
from occ.engine.probe import RECIPE_TERMS, InputTerms, build_for_data, check_model_fit
from occ.engine.run_header import final_header, run_header
from occ.errors import (
    ArtifactError,
    DataError,
    ModelError,
    OccError,
    RecipeError,
    StageError,
)
from occ.io import atomic_write_files, file_sha256
from occ.metrics import Metrics
from occ.models.edits import tensor_equal
from occ.outputs import holds, stale_exports
from occ.progress import Progress
from occ.quality import quality
from occ.recipe import Recipe, dump_recipe
from occ.report.data import Report, StageRecord
from occ.report.write import report_files
from occ.techniques.registry import get_stage
from occ.training import predict, seed_everything
from occ.trust import TrustError

log = logging.getLogger("occ")

IN_MEMORY = "in-memory"
"""The header's ``data.dataset`` when the data was handed in from Python (model-in API)."""


def prepare(recipe: Recipe, *, trust_checkpoint: bool, progress: Progress,
            trust_code: bool = False) -> RunContext:
    """Load data, build the model and load the checkpoint: all before any output is written.

    ``trust_code``: the user passed ``--trust-code`` (``occ.trust``): a
    ``pkg.module:callable`` model, dataset or transform may be imported; kept in the context
    for every later model build (students, resumed states, the round-trip check).
    """
    seed_everything(recipe.seed)
    device = distributed.setup() or resolve_device(recipe.device)
    search = source_folder(recipe.source)  # user callables beside the recipe import
    try:
        data = load_data(recipe.data, seed=recipe.seed, trust_code=trust_code, search=search)
    except DataError as err:  # "data.root: ..." -> "recipe.yaml: data.root: ..."
        raise err.located(f"{recipe.source}:") from None
    ckpt_path = str(recipe.model.checkpoint)
    ckpt = load_checkpoint(ckpt_path, trust=trust_checkpoint)
    terms = _recipe_terms(recipe)
    model, kwargs = build_for_data(recipe.model.arch, recipe.model.kwargs, data,
                                   where=f"{recipe.source}: data", terms=terms,
                                   allow_callables=trust_code, source=recipe.source,
                                   search=search)
    load_into(model, ckpt, where=ckpt_path, arch=recipe.model.arch,
              channels_hint=lambda n: terms.checkpoint_hint(n, data))
    model.to(device).eval()
    check_class_names(checkpoint_classes(ckpt.meta), data, where=ckpt_path)
    check_model_fit(model, data, device, where=f"{recipe.source}: data", terms=terms,
                    model_where=f"{recipe.source}: model")
    baseline = copy.deepcopy(model).eval()
    for p in baseline.parameters():
        p.requires_grad_(False)
    ctx = RunContext(model=model, baseline=baseline, data=data, device=device,
                     seed=recipe.seed, out_dir=Path(str(recipe.output)),
                     arch=ArchRef(recipe.model.arch, kwargs), progress=progress, recipe=recipe,
                     trust_code=trust_code, code_search=search)
    ctx.recorded_accuracy = recorded_accuracy(ckpt.meta)
    ctx.warnings += data.warnings  # said while loading; kept in the report
    return ctx


def _recipe_terms(recipe: Recipe) -> InputTerms:
    """The recipe's words for a model that does not fit its data: the model is built for
    the data's channels unless ``model.kwargs`` names them."""
    if "in_channels" in recipe.model.kwargs:
        return replace(RECIPE_TERMS, in_channels="model.kwargs.in_channels: {n}")
    return RECIPE_TERMS


def _warn_baseline(report: Report, message: str | None) -> None:
    """Record in the report the loud warning of ``occ.engine.baseline_check`` (logged
    already)."""
    if message is not None:
        report.plan.setdefault("warnings", []).append(message)


def _check_finite(model: nn.Module, stage: str) -> None:
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise StageError(f"{stage}: tensor {name} has NaN or inf values after the stage")


def run(plan: Plan, ctx: RunContext, *, resume: bool = False) -> Report:
    """Run every stage of ``plan`` on ``ctx`` and write the artifact and reports.

    With ``resume``, leading stages whose saved state matches are restored, not rerun.
    """
    if not distributed.is_main():  # under torchrun only rank 0 writes (and locks)
        return _run_locked(plan, ctx, resume=resume)
    with resume_mod.OutputLock(ctx.out_dir):
        try:
            return _run_locked(plan, ctx, resume=resume)
        except OccError as err:  # nothing written: say what the folder still holds
            earlier = ctx.out_dir / "model.occ"
            if not earlier.exists():
                raise
            raise type(err)(f"{err.message}; the {earlier} there is an earlier run's, not "
                            "this one's", where=err.where) from err


def _run_locked(plan: Plan, ctx: RunContext, *, resume: bool) -> Report:
    recipe = plan.recipe
    started = time.perf_counter()
    checked = measure_input(ctx, plan)
    base_metrics, base_out, warning = checked.metrics, checked.outputs, checked.warning
    report = Report(name=recipe.name, source=recipe.source, plan=plan.to_dict(),
                    baseline=base_metrics, device=str(ctx.device), out_dir=str(ctx.out_dir))
    _warn_baseline(report, warning)
    val = measured(ctx, "val", baseline=True).accuracy if len(ctx.data.val) else None
    for said in recorded_warnings(ctx, base_metrics.accuracy, chance_said=checked.collapsed,
                                  val_accuracy=val):
        _warn_baseline(report, said)
    _warn_baseline(report, gates_unread(ctx))
    below = _floor_broken(ctx, plan, base_metrics, baseline=True)
    if below is not None:  # no stage can raise it: said before any work
        raise StageError(f"the input model's {below} before any stage; nothing was written "
                         "(lower the floor, or compress a better model)")
    main = distributed.is_main()
    for said in plan.warnings if main else ():  # in the report already (its plan)
        log.warning("%s", said)  # what the recipe says that will not happen as written
    for said in ctx.warnings:
        _warn_baseline(report, said)
    sha = (file_sha256(str(recipe.model.checkpoint)) if recipe.model.checkpoint
           else IN_MEMORY)  # a model handed in from Python (occ.engine.model_api)
    prints = resume_mod.fingerprints(recipe, sha)
    outputs = base_out
    restoring = resume
    for i, stage in enumerate(recipe.stages):
        path = resume_mod.state_path(ctx.out_dir, i, stage.type)
        saved = (resume_mod.restorable(path, prints[i], i, stage.label,
                                       report.plan.setdefault("warnings", []))
                 if restoring else None)
        if saved is not None:
            restore(ctx, saved)
            record, outputs = saved.stage_record(i, stage), None
            log.info("stage %d/%d: %s restored from %s", i + 1, len(recipe.stages), stage.label,
                     path)
        else:
            restoring = False
            record, outputs = run_stage(ctx, plan, i, base_out, previous=outputs)
            distributed.broadcast_model(ctx.model)
            if main:
                save_state(ctx, plan, path, prints[i], record)
        report.stages.append(record)
        _check_quality(ctx, plan, record, i)
    if outputs is None:  # the last stage was restored, not run: its outputs are not in hand
        outputs = predict(ctx.model, ctx.loader("test"), ctx.device)[0]
    final_out = outputs
    for said in gain_warnings(ctx, report.baseline.accuracy, report.final_metrics().accuracy):
        _warn_baseline(report, said)
    artifact = ctx.out_dir / "model.occ"
    header = final_header(ctx, plan, report.final_metrics())
    report.seconds = time.perf_counter() - started
    if not main:
        return report
    data = model_io.artifact_bytes(ctx.model, header, ctx.encoding)
    _verify_round_trip(data, artifact, ctx, final_out)
    report.record_artifact(str(artifact), len(data))
    same = holds(artifact, data)  # the same bytes: left, its time too (exports after it)
    for said in stale_exports(ctx.out_dir, same):
        log.warning("%s", said)
        _warn_baseline(report, said)
    report.seconds = time.perf_counter() - started
    # All made before any is written (a report that failed to render left a new model.occ
    # by old reports); a failed run leaves no resolved recipe that looks like a finished one
    atomic_write_files({ctx.out_dir / "recipe.resolved.yaml": dump_recipe(recipe),
                        **({} if same else {artifact: data}), **report_files(report, ctx.out_dir)})
    return report


def run_stage(ctx: RunContext, plan: Plan, i: int, base_out: torch.Tensor, *,
              previous: torch.Tensor | None = None) -> tuple[StageRecord, torch.Tensor]:
    """Run stage ``i`` of ``plan`` on ``ctx``; its record and the model's test outputs.
    ``previous``: the stage's input model's test outputs, where in hand (the drop a stage
    no gate read is said against them)."""
    stage = plan.recipe.stages[i]
    written = plan.written_index(i)  # messages name the stage as the recipe lists it
    log.info("stage %d/%d: %s", i + 1, len(plan.recipe.stages), stage.label)
    before = val_quality(ctx)  # before seeding: the stage's randomness stays as it was
    seed_everything(ctx.seed * 1000 + i)  # per-stage seed: resumed runs repeat exactly
    _begin_stage(ctx.progress, stage.label, ctx.data, ctx.device)
    t0 = time.perf_counter()
    try:
        result = get_stage(stage.type).run(ctx, stage.config)
    except (RecipeError, ModelError, TrustError) as err:  # a config only checkable against
        # the model (``student``, ``exits``): located at the stage, as the recipe lists it
        raise err.located(f"{plan.recipe.source}: stages[{written}]") from None
    except OccError:
        raise
    except Exception as err:  # noqa: BLE001  (any other failure is a failed run: exit 1)
        raise StageError(f"stages[{written}] {stage.label} failed: {type(err).__name__}: "
                         f"{str(err)[:300]}") from err
    _check_finite(ctx.model, stage.label)
    if before is not None:
        after = val_quality(ctx, fresh=True)  # the stage changed the model (in place or not)
        gates.check_stage(plan.recipe.guard, label=stage.label, index=written, before=before,
                          after=after, baseline=val_quality(ctx, baseline=True),
                          config=stage.to_dict(), details=result.details,
                          saved_dir=str(ctx.out_dir / "stages"))
    m, outputs, targets = measure_ctx(ctx, plan, base_out)
    notes = list(result.notes)
    # no gate read this stage: a collapse is said, not silent
    tested = None if before is not None else quality(outputs, targets, ctx.data.num_classes,
                                                     split="test")
    if tested is not None:
        why = ("the quality gates are off" if plan.recipe.guard.enabled is False else
               "no gate could read it (the data has no val split)")
        said = gates.unguarded_collapse(
            label=stage.label, index=written, after=tested,
            baseline=quality(base_out, targets, ctx.data.num_classes, split="test"), why=why)
        if said is None and previous is not None:
            said = gates.unguarded_drop(
                label=stage.label, index=written, after=tested, why=why,
                before=quality(previous, targets, ctx.data.num_classes, split="test"),
                max_drop=plan.recipe.guard.max_stage_drop)
        if said is not None:
            log.warning("%s", said)
            notes.append(said)
    return StageRecord(index=i, type=stage.type, label=stage.label, config=stage.to_dict(),
                       metrics=m, seconds=time.perf_counter() - t0, details=result.details,
                       notes=notes), outputs


def _begin_stage(progress: Progress, label: str, data: DataBundle,
                 device: torch.device) -> None:
    """Tell a per-epoch progress (``occ.progress.LineProgress``) the stage and how to
    measure val accuracy (classification with a val split only)."""
    begin = getattr(progress, "begin_stage", None)
    if begin is None:
        return
    if data.task != "classification" or len(data.val) == 0:
        begin(label, None)
        return

    def val_accuracy(model: nn.Module) -> float | None:
        outputs, targets = predict(model, data.loader("val", 256), device)
        if outputs.dim() != 2:
            return None
        return quality(outputs, targets, data.num_classes).accuracy

    begin(label, val_accuracy)


def _floor_broken(ctx: RunContext, plan: Plan, m: Metrics, *,
                  baseline: bool = False) -> str | None:
    """What broke the recipe's ``min_accuracy`` / ``max_mae`` floor, or None: read on the
    val split, as every decision is (``m``, the test metrics, only without one)."""
    recipe = plan.recipe
    if recipe.min_accuracy is None and recipe.max_mae is None:
        return None
    if len(ctx.data.split("val")):
        # a stage changes the model in place: the gates refresh the cache after it, so
        # only with them off is it measured again here
        fresh = not baseline and not recipe.guard.enabled
        q, split = measured(ctx, "val", baseline=baseline, fresh=fresh), "val"
        accuracy, mae = q.accuracy, q.mae
    else:
        accuracy, mae, split = m.accuracy, m.mae, "test (there is no val split)"
    if recipe.min_accuracy is not None and accuracy is not None \
            and accuracy < recipe.min_accuracy:
        return f"{split} accuracy {accuracy:.2f}% is below min_accuracy {recipe.min_accuracy:g}"
    if recipe.max_mae is not None and mae is not None and mae > recipe.max_mae:
        return f"{split} MAE {mae:.4f} is above max_mae {recipe.max_mae:g}"
    return None


def _check_quality(ctx: RunContext, plan: Plan, record: StageRecord, i: int) -> None:
    """Stop the run (exit 1) when stage ``i`` (run order) broke ``min_accuracy`` /
    ``max_mae``."""
    what = _floor_broken(ctx, plan, record.metrics)
    if what is None:
        return
    recipe = plan.recipe
    last_good = (f"; last good state: "
                 f"{resume_mod.state_path(ctx.out_dir, i - 1, recipe.stages[i - 1].type)}"
                 if i else "")
    raise StageError(f"stages[{plan.written_index(i)}] {record.label}: {what}{last_good}")


def save_state(ctx: RunContext, plan: Plan, path: Path, fingerprint: str,
               record: StageRecord | None = None, *, warnings: list[str] | None = None) -> None:
    """Save ``ctx``'s model as a stage state (``record``: the stage's report entry;
    ``warnings``: what the stages warned, kept for a resumed ``occ ablate``)."""
    header = {**run_header(ctx, plan), "encoding": ctx.encoding}  # plain JSON settings
    kept = record.to_dict() if record else {}
    if warnings:
        kept["warnings"] = list(warnings)
    resume_mod.save_state(path, fingerprint=fingerprint, model=ctx.model, header=header,
                          record=kept)


def restore(ctx: RunContext, saved: resume_mod.SavedState) -> None:
    """Put a saved stage state back into ``ctx`` (model, arch, edits, encoding); an error
    rebuilding it (code refused, tensors that do not fit) names the state file."""
    header = saved.artifact.header
    try:
        model = loader.rebuild(saved.artifact, trust_code=ctx.trust_code,
                               template=_template(ctx))
    except OccError as err:
        raise err.located(f"{saved.path}:") from None
    ctx.model = model.to(ctx.device)
    ctx.arch = ArchRef(artifact_header.model_spec(header)["arch"],
                       artifact_header.model_kwargs(header))
    ctx.edits = list(artifact_header.edits(header))
    ctx.encoding = artifact_header.encoding(header)


def _template(ctx: RunContext) -> tuple[str, nn.Module] | None:
    """The user's model object to rebuild its own class reference from (model-in API)."""
    return None if ctx.template is None else (ctx.template_arch, ctx.template)


def _verify_round_trip(data: bytes, path: Path, ctx: RunContext, outputs: torch.Tensor) -> None:
    """Decode the artifact about to be written at ``path`` and check it reproduces the
    evaluated model exactly (and that occ will read it back: within its size limit)."""
    from occ.limits import MAX_ARTIFACT_BYTES

    if len(data) > MAX_ARTIFACT_BYTES.value():
        raise ArtifactError(f"would be {len(data):,} bytes, more than occ reads back "
                            f"({MAX_ARTIFACT_BYTES.hint()}, where it is loaded too); not "
                            "written", where=str(path))
    try:
        loaded = loader.rebuild(decode_artifact(data), trust_code=ctx.trust_code,
                                template=_template(ctx), source=str(path))
    except ArtifactError as err:  # named like occ.load names it
        raise ArtifactError(err.message, where=str(path)) from None
    own = model_io.state_tensors(ctx.model)
    for name, t in model_io.state_tensors(loaded).items():
        if not tensor_equal(t, own[name]):
            raise StageError(f"{path}: tensor {name} differs after decoding (codec bug)")
    again, _ = predict(loaded, ctx.loader("test"), ctx.device)
    if not torch.equal(again, outputs):
        raise StageError(f"{path}: decoded model's outputs differ from the evaluated model's")
