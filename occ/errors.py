"""The exceptions occ raises. The CLI maps them to exit codes in one place.

Exit code 2 means bad input (recipe, flags, unreadable or corrupt files); exit code 1
means a run failed (a stage diverged or crashed). Messages are one readable line that
names the file and the field where there is one.
"""

from __future__ import annotations


class OccError(Exception):
    """Base class of every error occ raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, where: str) -> OccError:
        """Return a copy of this error whose location is prefixed with ``where``."""
        if not self.where:
            inner = where.removesuffix(":")  # "state.occst:" + no field: "state.occst"
        elif self.where.startswith("["):
            inner = f"{where}{self.where}"
        elif where.endswith(":"):  # "recipe.yaml:" + "data.root", not "recipe.yaml:.data"
            inner = f"{where} {self.where}"
        else:
            inner = f"{where}.{self.where}"
        return type(self)(self.message, where=inner)


class RecipeError(OccError):
    """A recipe (or a CLI option standing in for one) is malformed or out of range."""


class CheckpointError(OccError):
    """An input checkpoint is missing, unreadable, unsafe or does not fit the model."""


class ArtifactError(OccError):
    """A ``.occ`` artifact is truncated, corrupted, foreign or of an unknown version."""


class DataError(OccError):
    """A dataset is unknown, or its local root is missing or malformed."""


class ModelError(OccError):
    """A model reference does not resolve to a buildable ``nn.Module``."""


class StageError(OccError):
    """A stage failed while running (divergence, collapse, a target no layer can meet)."""

    exit_code = 1
