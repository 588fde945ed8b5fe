"""Sparsity schedules for gradual pruning. Torch-free: the stage config uses it.

A schedule turns a target sparsity ``s`` into the increasing levels pruning passes
through, ``levels(schedule, s)[-1] == s``:

- ``oneshot``: ``[s]``.
- ``linear``: ``s * j / n`` for ``j = 1..n``.
- ``agp``: Zhu & Gupta's cubic schedule (arXiv 1710.01878),
  ``s * (1 - (1 - j / n) ** 3)``: prune fast while many weights are redundant, slowly
  near the target.
- ``geometric``: ``1 - (1 - s) ** (j / n)``: the same share of the *remaining* weights at
  every step, as in iterative magnitude pruning and SuRP's 0.2, 0.36, 0.488 ... schedule.

While fine-tuning, level ``j`` (1-based) takes effect at optimiser step
``(j - 1) * total // n`` (``boundaries``): the first before any training, the last with
``1 / n`` of the training still to go at the target sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from occ.config import check, from_dict

ScheduleKind = Literal["oneshot", "linear", "agp", "geometric"]
SCHEDULE_KINDS: tuple[str, ...] = ("oneshot", "linear", "agp", "geometric")
DEFAULT_STEPS = 10


@dataclass(frozen=True)
class Schedule:
    """How sparsity rises to its target: ``schedule: agp`` or ``{kind: linear, steps: 5}``.

    Attributes:
        kind: ``oneshot`` | ``linear`` | ``agp`` | ``geometric``; a mapping without
            ``kind`` (``schedule: {steps: 5}``) means ``linear``.
        steps: how many times the masks are recomputed; ``None`` = 1 for ``oneshot``,
            10 otherwise.
    """

    kind: ScheduleKind = "linear"
    steps: int | None = None

    def __post_init__(self) -> None:
        check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.kind != "oneshot" or self.steps in (None, 1), "steps",
              f"oneshot prunes once; got steps: {self.steps} (use kind: linear or agp)")

    @property
    def n_steps(self) -> int:
        """The resolved number of pruning steps."""
        if self.kind == "oneshot":
            return 1
        return self.steps if self.steps is not None else DEFAULT_STEPS


ONESHOT = Schedule(kind="oneshot")


def parse_schedule(value: Any) -> Schedule:
    """A ``Schedule`` from a config value: a ``Schedule``, a kind name or a mapping.

    Raises:
        RecipeError: an unknown kind or bad steps, located at ``schedule``.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        check(value in SCHEDULE_KINDS, "schedule",
              f"must be one of {', '.join(SCHEDULE_KINDS)} or a mapping {{kind, steps}}, "
              f"got {value!r}")
        return Schedule(kind=value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        return from_dict(Schedule, value, where="schedule")
    return from_dict(Schedule, value, where="schedule")  # raises "must be a mapping"


def levels(schedule: Schedule, target: float, start: float = 0.0) -> list[float]:
    """The sparsity after each pruning step, rising from ``start`` to ``target``."""
    n = schedule.n_steps
    span = target - start
    out = []
    for j in range(1, n + 1):
        frac = j / n
        if schedule.kind == "agp":
            out.append(start + span * (1.0 - (1.0 - frac) ** 3))
        elif schedule.kind == "geometric":
            out.append(1.0 - (1.0 - start) * ((1.0 - target) / (1.0 - start)) ** frac)
        else:
            out.append(start + span * frac)
    out[-1] = target  # exact, whatever the rounding above
    return out


def boundaries(n_levels: int, total_steps: int) -> list[int]:
    """Optimiser step at which each level takes effect while fine-tuning (first is 0)."""
    return [(j * total_steps) // n_levels for j in range(n_levels)]


__all__ = ["ONESHOT", "SCHEDULE_KINDS", "Schedule", "ScheduleKind", "boundaries", "levels",
           "parse_schedule"]
