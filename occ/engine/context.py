"""The run context: everything a stage needs, passed in (no hidden globals)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from occ.models.names import ArchRef
from occ.progress import NullProgress, Progress

if TYPE_CHECKING:
    from occ.data import DataBundle
    from occ.recipe import Recipe


@dataclass
class RunContext:
    """The state a stage reads and changes.

    Attributes:
        model: the model being compressed; stages change it in place or replace it
            (distillation swaps in the student, early exit wraps it).
        baseline: the uncompressed input model, in eval mode (teacher, agreement).
        data: train / val / test splits and their shapes.
        device: where stages run (``device: auto`` = CUDA when available).
        seed: the recipe's seed; stages seed their own randomness from it.
        out_dir: the run's output directory.
        arch: the architecture reference the artifact rebuilds from.
        edits: structural edits applied to ``arch`` so far (``occ.models.edits``).
        encoding: how the artifact codes its streams (``entropy_code`` sets ``codec``).
        progress: where long loops report progress.
        recipe: the resolved recipe, for stages that need global settings.
        gate_cache: quality measurements by (split, ``baseline`` / ``current``) for the
            gates and the input-model check (``occ.engine.runner``), so each model state is
            measured once.
        recorded_accuracy: the accuracy the input checkpoint recorded about itself, if any
            (compared with the measured baseline, ``occ.engine.baseline_check``).
        custom_loss: a user's ``loss(outputs, targets)`` (model-in API) replacing the
            recipe's ``loss`` in every stage that trains.
        template: the user's own model object (model-in API), from which artifacts whose
            architecture reference is that object's class are rebuilt in this process.
        trust_code: the user passed ``--trust-code``: ``pkg.module:callable`` models may be
            imported (``occ.trust``); every model build in the run passes it on.
        code_search: folders user callables are imported from when not on ``sys.path``
            (the recipe's folder, ``occ.callables``); every model build in the run uses it.
    """

    model: nn.Module
    baseline: nn.Module
    data: DataBundle
    device: torch.device
    seed: int
    out_dir: Path
    arch: ArchRef
    edits: list[dict[str, Any]] = field(default_factory=list)
    encoding: dict[str, Any] = field(default_factory=lambda: {"codec": "raw"})
    progress: Progress = field(default_factory=NullProgress)
    recipe: Recipe | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("occ"))
    gate_cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    recorded_accuracy: float | None = None
    custom_loss: Callable[..., torch.Tensor] | None = None
    template: nn.Module | None = None
    template_arch: str = ""
    trust_code: bool = False
    warnings: list[str] = field(default_factory=list)
    """Loud warnings given before the run (logged already), kept in the report's plan."""
    code_search: tuple[str, ...] = ()

    def record_edit(self, op: str, **args: Any) -> None:
        """Record a structural edit (already applied to ``model``) for the artifact.

        ``op`` must be registered with ``occ.models.edits.register_edit``; the artifact
        loader replays it with ``args`` (plain JSON data) on the rebuilt architecture.
        """
        from occ.models.edits import edit_record

        self.edits.append(edit_record(op, args))

    def replace_model(self, model: nn.Module, arch: ArchRef) -> None:
        """Swap in a new architecture (distillation): edits start afresh from ``arch``."""
        self.model = model
        self.arch = arch
        self.edits = []

    def loader(self, split: str, *, shuffle: bool = False,
               batch_size: int | None = None) -> torch.utils.data.DataLoader:
        """A data loader over ``split`` with the recipe's batch size."""
        size = batch_size or (self.recipe.data.batch_size if self.recipe else 128)
        workers = self.recipe.data.num_workers if self.recipe else 0
        return self.data.loader(split, size, shuffle=shuffle, seed=self.seed,
                                num_workers=workers)

    @property
    def task(self) -> str:
        """``classification`` or ``regression`` (the data's, which the recipe's ``task``
        was checked against)."""
        return getattr(self.data, "task", "classification")

    @property
    def loss_fn(self):
        """The recipe's training loss (``occ.training.task_loss``) as a ``fit`` hook."""
        from occ.training import custom_task_loss, task_loss

        if self.custom_loss is not None:
            return custom_task_loss(self.custom_loss)
        return task_loss(getattr(self.recipe, "loss", "auto"))

    def stage_device(self, name: str) -> torch.device:
        """The device a stage asked for (``auto`` = the run's device)."""
        from occ.devices import resolve_device

        return self.device if name == "auto" else resolve_device(name)
