"""The torch-free config of ``type: distill`` (``occ validate`` and ``occ order`` read it)."""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from occ.config import check
from occ.errors import ModelError, RecipeError
from occ.techniques.spec import ModelRef, StageConfig

if TYPE_CHECKING:

    pass

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
            (``occ.techniques.distill.loss.inherit_channels_``; needs a student of the teacher's own
            architecture, e.g. ``student: {width: 0.5}``); ``random``: fresh weights;
            ``auto`` (default): ``teacher`` where possible, else ``random``. A random
            LeNet-5 student of an overconfident teacher (logits up to ±35) at T = 4,
            α = 0.9 lost its ReLUs in the first epoch and stayed at chance in two seeds
            of three; started from the teacher's channels it never did.
        epochs, optimizer, schedule: the student's training (``occ.training.fit``).
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
    renames_modules = True  # the student replaces the teacher

    def references(self) -> tuple[ModelRef, ...]:
        """The teacher's side of ``hints`` (the student does not exist yet)."""
        return tuple(ModelRef(f"hints[{i}]", pair[0]) for i, pair in enumerate(self.hints)
                     if pair)

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
