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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from occ.config import check
from occ.errors import ModelError, RecipeError
from occ.registry import StageConfig, StageResult, register_stage

if TYPE_CHECKING:
    import torch

    from occ.context import RunContext

BASE_LR = 0.05
"""The plain cross-entropy learning rate the default ``lr`` is scaled from."""

KD_TEMPERATURE = 4.0
"""The one default temperature of every distillation loss (this stage, ``distill: true``
in fine-tunes, early-exit heads): Hinton et al.'s and most of the literature's."""

KD_ALPHA = 0.9
"""The one default weight of the soft (teacher) term, beside ``KD_TEMPERATURE``."""


@dataclass(frozen=True)
class StudentSpec:
    """The student: a model reference (``arch`` + ``kwargs``) or the teacher at ``width``.

    ``arch`` is a zoo name, ``torchvision.<name>`` or ``pkg.module:callable``. Without it,
    ``width`` takes the teacher's own architecture with its channel multiplier scaled by
    ``width`` (``kwargs`` then override the teacher's other kwargs).
    """

    arch: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    width: float | None = None

    def __post_init__(self) -> None:
        from occ.models.names import check_arch_name

        check((self.arch is None) != (self.width is None), "width" if self.arch else "arch",
              "give exactly one of arch (a model reference) or width (a channel multiplier "
              "of the teacher's architecture)")
        if self.arch is not None:
            try:
                check_arch_name(self.arch)
            except ModelError as err:
                raise RecipeError(err.message, where="arch") from None
        if self.width is not None:
            check(self.width > 0, "width", f"must be > 0, got {self.width}")
            check("width" not in self.kwargs, "kwargs.width",
                  "conflicts with student.width; give one of them")


@dataclass(frozen=True)
class DistillConfig(StageConfig):
    """Config of a ``distill`` stage.

    Attributes:
        student: the student architecture (see ``StudentSpec``); default: the teacher at
            half its width.
        temperature: T > 0, softens both distributions; the soft term is scaled by T².
        alpha: weight of the soft (teacher) term in [0, 1]; 0 is plain cross-entropy.
        init: how the student starts. ``teacher``: from the teacher's strongest channels
            (``occ.distill.inherit_channels_``; needs a student of the teacher's own
            architecture, e.g. ``student: {width: 0.5}``); ``random``: fresh weights;
            ``auto`` (default): ``teacher`` where possible, else ``random``. A random
            LeNet-5 student of an overconfident teacher (logits up to ±35) at T = 4,
            α = 0.9 lost its ReLUs in the first epoch and stayed at chance in two seeds
            of three; started from the teacher's channels it never did.
        epochs, optimizer, schedule: the student's training (``occ.train.fit``).
        lr: the learning rate; by default ``BASE_LR / ((1 - alpha) + alpha * T)``. The
            T²-scaled soft term's gradient is T times the size of cross-entropy's for the
            same error, so the step is scaled down to match plain training at ``BASE_LR``
            (``occ train``'s default): at a fixed 0.05, T = 4, α = 0.9, a LeNet-5 student
            collapsed to chance in its first epoch.
        hints: ``[teacher_layer, student_layer]`` module-name pairs for feature hints.
        hint_weight: weight of the mean hint MSE added to the loss.
    """

    student: StudentSpec = field(default_factory=lambda: StudentSpec(width=0.5))
    temperature: float = KD_TEMPERATURE
    alpha: float = KD_ALPHA
    init: Literal["auto", "teacher", "random"] = "auto"
    epochs: int = 10
    lr: float | None = None
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    schedule: Literal["cosine", "step"] = "cosine"
    hints: tuple[tuple[str, ...], ...] = ()
    hint_weight: float = 1.0

    default_category = "architecture"

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        if self.lr is None:  # frozen: fill the default in once, so the resolved recipe shows it
            scale = (1.0 - self.alpha) + self.alpha * self.temperature
            object.__setattr__(self, "lr", round(BASE_LR / scale, 6))
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.hint_weight >= 0, "hint_weight", f"must be >= 0, got {self.hint_weight}")
        for i, pair in enumerate(self.hints):
            check(len(pair) == 2, f"hints[{i}]",
                  f"must be [teacher_layer, student_layer], got {list(pair)}")


def _where(ctx: RunContext) -> str:
    source = ctx.recipe.source if ctx.recipe is not None else "<recipe>"
    return f"{source}: distill.student"


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


@register_stage("distill", DistillConfig)
def distill_(ctx: RunContext, config: DistillConfig) -> StageResult:
    """Train a smaller student from the current model (KD), then swap it in."""
    from occ import distill
    from occ.train import fit, predict

    device = ctx.stage_device(config.device)
    teacher = ctx.model.to(device).eval()
    where = _where(ctx)
    spec = config.student
    ref = distill.student_ref(ctx.arch, arch=spec.arch, kwargs=spec.kwargs, width=spec.width,
                              input_shape=ctx.data.input_shape,
                              num_classes=ctx.data.num_classes, where=where)
    sample = next(iter(ctx.loader("train", batch_size=2)))[0].to(device)  # (2, C, H, W)
    student = distill.build_student(ref, teacher, sample, seed=ctx.seed, where=where,
                                    trust_code=ctx.trust_code)
    inherited = config.init != "random" and distill.inherit_channels_(student, teacher, sample)
    if config.init == "teacher" and not inherited:
        raise ModelError(f"{ref.arch} cannot start from the teacher's channels (init: teacher "
                         "needs the teacher's own architecture at a smaller width); use init: "
                         "random or auto", where=where.replace(".student", ".init"))
    hints = (distill.FeatureHints(teacher, student, config.hints, sample,
                                  where=where.replace(".student", ".hints"))
             if config.hints else None)
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
    return StageResult(details=details, notes=_notes(details))


def _notes(details: dict[str, Any]) -> list[str]:
    t, s = details["teacher"], details["student"]
    kwargs = ", ".join(f"{k}={v}" for k, v in s["kwargs"].items())
    notes = [f"student {s['arch']}({kwargs}): {s['params']:,} params "
             f"({t['params'] / max(s['params'], 1):.1f}× fewer than the teacher's "
             f"{t['params']:,}), {s['macs']:,} MACs ({t['macs'] / max(s['macs'], 1):.1f}× fewer)"]
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
