"""Progress reporting without printing from the library.

Long loops call ``progress.track(...)``; the CLI passes a rich-backed implementation that
draws on stderr, and library users get ``NullProgress`` (silence) unless they pass one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TextIO, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    """Something that can wrap an iterable and show how far it got."""

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items``, advancing a bar labelled ``description``."""
        ...


class NullProgress:
    """Shows nothing."""

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items`` unchanged."""
        yield from items


class LineProgress:
    """One line per training epoch on a stream (stderr when it is not a terminal).

    ``occ.training.fit`` calls :meth:`epoch_end` after every epoch; the runner names the stage
    and lends a val-accuracy function through :meth:`begin_stage`, so a log reads::

        [prune(magnitude)] epoch 2/3  loss 0.4127  val acc 96.40%  4.1 s
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.stage: str | None = None
        self.evaluate: Callable[[Any], float | None] | None = None

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items`` unchanged (no bar: the epoch lines are the progress)."""
        yield from items

    def begin_stage(self, stage: str, evaluate: Callable[[Any], float | None] | None) -> None:
        """Name the stage the next epochs belong to and how to measure val accuracy."""
        self.stage, self.evaluate = stage, evaluate

    def epoch_end(self, *, description: str, epoch: int, epochs: int, loss: float,
                  seconds: float, model: Any) -> None:
        """Write one line: stage, epoch, loss, val accuracy (when measurable), time."""
        acc = self.evaluate(model) if self.evaluate is not None else None
        label = self.stage or description
        what = "" if description in (label, "train") else f" {description}"
        val = "" if acc is None else f"  val acc {acc:.2f}%"
        self.stream.write(f"[{label}]{what} epoch {epoch}/{epochs}  loss {loss:.4f}{val}  "
                          f"{seconds:.1f} s\n")
        self.stream.flush()
