"""``type: distill``: train a smaller student from the model being compressed (KD).

Distillation is the first step of the DPQE order (static architecture). The current model
(the input checkpoint, when the built-in order is kept) is the teacher: it runs in eval
mode with no grad while the student trains on (1 - α)·CE + α·T²·KL(teacher_T ‖ student_T)
(MSE terms for regression targets), optionally plus feature hints through 1×1 / linear
adapters. The student then replaces the model for every later stage and in the artifact.

Recipe::

    - {type: distill, student: {width: 0.5}, temperature: 2, alpha: 0.9, epochs: 10}
    - {type: distill, student: {arch: lenet5, kwargs: {width: 0.25}},
       hints: [[features.3, features.3]]}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from occ.errors import ModelError
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    import torch

    from occ.engine.context import RunContext
    from occ.models.names import ArchRef


from occ.techniques.distill.config import DistillConfig

log = logging.getLogger("occ")


def _where(ctx: RunContext) -> str:
    """Where a student error points: the stage's ``student`` (the runner and the preflight
    check put ``recipe.yaml: stages[i].`` before it)."""
    return "student"


def _summary(model: torch.nn.Module, outputs: torch.Tensor, targets: torch.Tensor,
             ctx: RunContext, device: torch.device) -> dict[str, Any]:
    """Params, MACs and test quality (accuracy, or MAE / RMSE for float targets)."""
    from occ.metrics import accuracy, count_params, layer_costs

    params, _ = count_params(model)
    out: dict[str, Any] = {"params": params, "macs": sum(
        c.macs for c in layer_costs(model, ctx.data.input_shape, device))}
    if targets.is_floating_point():
        err = outputs.reshape(targets.shape) - targets
        out["mae"] = float(err.abs().mean())
        out["rmse"] = float(err.pow(2).mean().sqrt())
    else:
        out["accuracy"] = accuracy(outputs, targets)
    return out


@dataclass
class _Setup:
    """What the distill stage builds before it trains: the teacher on its device, the
    student's reference and model (the teacher's channels inherited or not), one input
    batch and the feature hints (None without ``hints``)."""

    device: torch.device
    teacher: torch.nn.Module
    ref: ArchRef
    student: torch.nn.Module
    sample: torch.Tensor
    inherited: bool
    hints: Any


def _setup(ctx: RunContext, config: DistillConfig) -> _Setup:
    """Build and check the student against the current model (``ModelError`` /
    ``TrustError`` located at ``student``, ``init`` or ``hints``; the runner puts
    ``recipe.yaml: stages[i].`` before it): the stage's first step, and its check before
    any stage runs (``check_student``)."""
    from occ.techniques.distill import loss as distill

    device = ctx.stage_device(config.device)
    teacher = ctx.model.to(device).eval()
    where = _where(ctx)
    spec = config.student
    ref = distill.student_ref(ctx.arch, arch=spec.arch, kwargs=spec.kwargs, width=spec.width,
                              input_shape=ctx.data.input_shape,
                              num_classes=ctx.data.num_classes, where=where)
    sample = next(iter(ctx.loader("train", batch_size=2)))[0].to(device)  # (2, C, H, W)
    try:
        student = distill.build_student(ref, teacher, sample, seed=ctx.seed, where=where,
                                        trust_code=ctx.trust_code,
                                        search=ctx.code_search)
    except ModelError as err:
        if spec.arch is not None:  # the user named the student: the error says it all
            raise
        raise ModelError(f"{err.message}. {_width_hint(ctx.arch, ref, spec.width)}",
                         where=err.where) from None
    inherited = config.init != "random" and distill.inherit_channels_(student, teacher, sample)
    if config.init == "teacher" and not inherited:
        raise ModelError(f"{ref.arch} cannot start from the teacher's channels (init: teacher "
                         "needs the teacher's own architecture at a smaller width); use init: "
                         "random or auto", where="init")
    hints = (distill.FeatureHints(teacher, student, config.hints, sample,
                                  where="hints")
             if config.hints else None)
    return _Setup(device, teacher, ref, student, sample, inherited, hints)


def check_student(ctx: RunContext, config: DistillConfig) -> None:
    """Before any stage runs (``TechniqueSpec.preflight``): the student builds, runs on the
    data and fits the teacher, its init and hints apply; the same error the stage would
    give after the baseline and every earlier stage, now before them. Draws no random
    numbers the stages would see."""
    from occ.training import rng_preserved

    where = next((p.device for p in ctx.model.parameters()), None)
    with rng_preserved(ctx.stage_device(config.device)):
        setup = _setup(ctx, config)
    if setup.hints is not None:
        setup.hints.close()
    if where is not None:
        ctx.model.to(where)  # as it was: the stages before this one run where they run


def distill_(ctx: RunContext, config: DistillConfig) -> StageResult:
    """Train a smaller student from the current model (KD), then swap it in."""
    from occ.techniques.distill import loss as distill
    from occ.training import fit, predict

    setup = _setup(ctx, config)
    teacher, student, ref, hints = setup.teacher, setup.student, setup.ref, setup.hints
    device, inherited = setup.device, setup.inherited
    said = [w for w in (_not_smaller(teacher, student, config), _quantized_teacher(teacher))
            if w is not None]
    for warning in said:  # before the training, so it can be stopped
        log.warning("%s", warning)
    try:
        loss = distill.distill_loss_fn(teacher, temperature=config.temperature,
                                       alpha=config.alpha, hints=hints,
                                       hint_weight=config.hint_weight, hard=ctx.loss_fn)
        params = [*student.parameters(), *(hints.parameters() if hints else [])]
        history = fit(student, ctx.loader("train", shuffle=True), epochs=config.epochs,
                      lr=config.lr, device=device, optimizer=config.optimizer,
                      schedule=config.schedule, loss_fn=loss, params=params,
                      progress=ctx.progress, description="distill")
    finally:
        if hints is not None:
            hints.close()
    t_out, targets = predict(teacher, ctx.loader("test"), device)
    s_out, _ = predict(student, ctx.loader("test"), device)
    details = {"teacher": {**ctx.arch.to_dict(), **_summary(teacher, t_out, targets, ctx, device)},
               "student": {**ref.to_dict(), **_summary(student, s_out, targets, ctx, device)},
               "loss": history, "hints": [list(p) for p in config.hints],
               "init": "teacher" if inherited else "random"}
    if not targets.is_floating_point():
        from occ.metrics import agreement

        details["agreement"] = agreement(s_out, t_out)
    ctx.replace_model(student, ref)
    notes = _notes(details)
    if config.init == "auto" and not inherited:
        notes.append("init auto: the student could not start from the teacher's channels (not "
                     "the teacher's own architecture at a smaller width, or a teacher whose "
                     "layers an earlier stage replaced, e.g. quantized), so it started from "
                     "random weights and needs the epochs of a training from scratch")
    return StageResult(details=details, notes=[*said, *notes])


def _quantized_teacher(teacher: torch.nn.Module) -> str | None:
    """The warning for a teacher an earlier stage quantized: the student is a float model,
    so that quantization does not reach the result."""
    if not any(hasattr(m, "occ_bits") for m in teacher.modules()):  # QuantConv2d / Linear
        return None
    return ("distill: the teacher was quantized by an earlier stage; the student that "
            "replaces it is a float model, so that quantization is not in the result (put "
            "quantize after distill, as the built-in order does)")


def _not_smaller(teacher: torch.nn.Module, student: torch.nn.Module,
                 config: DistillConfig) -> str | None:
    """The warning for a student with at least the teacher's parameters: a distill stage
    that does not shrink the model is a recipe mistake more often than not."""
    from occ.metrics import count_params

    t, s = count_params(teacher)[0], count_params(student)[0]
    if s < t:
        return None
    spec = config.student
    given = (f"student.width {spec.width:g}" if spec.width is not None
             else f"student {spec.arch}" if spec.arch else "the student")
    return (f"distill: the student has {s:,} parameters, {s / max(t, 1):.1f}x the teacher's "
            f"{t:,} ({given}): this stage does not make the model smaller; a width below 1 "
            "(e.g. student: {width: 0.5}) does")


def _width_hint(teacher: ArchRef, ref: ArchRef, factor: float) -> str:
    """Why a student given by ``width`` failed to build: that student is the teacher's own
    builder with ``width`` scaled, which only makes sense for a channel multiplier (a user
    builder's ``width`` may be a channel count, or absent)."""
    base = teacher.kwargs.get("width")
    how = f" (the teacher's width {base:g} x {factor:g})" if base is not None else ""
    return (f"A student given by student.width ({factor:g}; 0.5 unless set) is the teacher's "
            f"own builder with its width kwarg scaled by that factor, here "
            f"{teacher.arch}(width={ref.kwargs['width']!r}){how}: that only works when the "
            f"builder takes width as a channel multiplier. Set the student explicitly: "
            f"student: {{arch: \"{teacher.arch}\", kwargs: {{...}}}}")


def _fewer(teacher: int, student: int) -> str:
    """``4.0× fewer``, or ``2.0× more`` for a student larger than its teacher."""
    if student <= teacher:
        return f"{teacher / max(student, 1):.1f}× fewer"
    return f"{student / max(teacher, 1):.1f}× more"


def _notes(details: dict[str, Any]) -> list[str]:
    t, s = details["teacher"], details["student"]
    kwargs = ", ".join(f"{k}={v}" for k, v in s["kwargs"].items())
    notes = [f"student {s['arch']}({kwargs}): {s['params']:,} params "
             f"({_fewer(t['params'], s['params'])} than the teacher's {t['params']:,}), "
             f"{s['macs']:,} MACs ({_fewer(t['macs'], s['macs'])})"]
    if "accuracy" in s:
        notes.append(f"test accuracy: teacher {t['accuracy']:.2f}%, student "
                     f"{s['accuracy']:.2f}% ({s['accuracy'] - t['accuracy']:+.2f} pt); "
                     f"agreement with the teacher {details['agreement']:.2f}%")
    else:
        notes.append(f"test MAE: teacher {t['mae']:.4g}, student {s['mae']:.4g}")
    if details.get("init") == "teacher":
        notes.append("student started from the teacher's strongest channels (L1 norm)")
    if details["hints"]:
        notes.append(f"feature hints on {len(details['hints'])} layer pair(s); "
                     "adapters dropped after training")
    return notes
