"""What a technique is: one ``TechniqueSpec`` per recipe ``type``, torch-free.

Every table that used to be kept by hand (the order's categories and edges, ``occ order``'s
aliases, ablate's labels, the recipe's once-only types, the CLI's help, the stage
reference) is derived from these entries (``occ.techniques.registry``). A technique's
package (``occ/techniques/<type>/``) holds its torch-free ``config.py``, its ``run.py``
(the torch half, imported only when the stage runs) and the method modules it needs; its
``__init__.py`` declares ``SPEC``.

A stage's run function takes the run context (``occ.engine.context.RunContext``; run
modules import it for typing only, so this layer never imports the engine) and the
config, changes ``ctx.model`` in place and returns a ``StageResult``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    """A name a stage config gives for a part of the model, checked before the first stage.

    Attributes:
        where: the config field, e.g. ``exclude[1]`` or ``exits[0]``.
        name: the module path named there.
        kind: ``layer`` (a Conv2d / Linear), ``exit`` (an early-exit point) or ``module``
            (any submodule).
    """

    where: str
    name: str
    kind: str = "module"


@dataclass(frozen=True)
class StageConfig:
    """Fields every stage config has. Subclasses are frozen dataclasses too."""

    device: str = "auto"

    @property
    def category(self) -> str:
        """The order category (see ``TechniqueSpec.categories``) this config belongs to."""
        return type(self).default_category

    default_category = ""

    renames_modules = False
    """True where the model's module paths differ after this stage (a student, factorised
    layers, a wrapped backbone): the references of later stages are then checked when they
    run, not before the first stage."""

    def references(self) -> tuple[ModelRef, ...]:
        """Module paths this config names (``occ.engine.preflight`` checks them against the
        model before the first stage runs). Default: none."""
        return ()

    def for_task(self, task: str) -> StageConfig:
        """This config resolved for the recipe's ``task`` (``classification`` or
        ``regression``): ``auto`` values filled in, keys that do not apply rejected with
        ``RecipeError`` located at the field. The recipe parser calls it; the default
        accepts every task unchanged.
        """
        return self

    def requires(self) -> dict[str, str]:
        """Stage types that must run before this one, each with the config key that needs
        it (``occ.engine.plan`` checks the order before any work). Default: none."""
        return {}


@dataclass
class StageResult:
    """What a stage returns besides the changed model: facts for the report.

    ``details`` is JSON-serialisable (per-layer sparsity, chosen bits, exit shares ...).
    ``notes`` are short human sentences. Figures common to every stage (accuracy, params,
    MACs, BitOps, bytes) are measured by the engine after the stage, not here.
    """

    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


RunFn = Callable[[Any, Any], StageResult]


@dataclass(frozen=True)
class Edge:
    """Category ``before`` must run before category ``after``, for ``reason`` (``source``)."""

    before: str
    after: str
    reason: str
    source: str


@dataclass(frozen=True)
class TechniqueSpec:
    """One technique, everything occ needs to know about it outside its own package.

    Attributes:
        type: the recipe ``type`` and the package name under ``occ/techniques/``.
        config: the torch-free config dataclass (a ``StageConfig``).
        run: ``"occ.techniques.<type>.run:function"``, imported when the stage runs.
        summary: one line for the CLI's help and the stage reference.
        label: the short name in ablate's orders and ``occ order``'s output (``P``).
        aliases: ``occ order --techniques`` tokens, each with the category it stands for.
        categories: the order categories this technique's configs report, each with a
            description (rank follows the edges).
        edges: precedence edges this technique declares (its own category on either side).
        singleton: at most one stage of this type per recipe.
        edit_modules: modules that register this technique's edit ops
            (``occ.models.edits``), imported before an artifact is rebuilt.
        preflight: ``"occ.techniques.<type>.<module>:<function>"`` or empty: called as
            ``function(ctx, config)`` before any stage runs (``occ.engine.preflight``,
            when no earlier stage renames modules) to raise the errors the stage would
            give only after the baseline and every earlier stage (a student that does
            not build).
    """

    type: str
    config: type
    run: str
    summary: str
    label: str
    aliases: Mapping[str, str]
    categories: Mapping[str, str]
    edges: tuple[Edge, ...] = ()
    singleton: bool = False
    edit_modules: tuple[str, ...] = ()
    preflight: str = ""

    def __post_init__(self) -> None:
        for key, ref in (("run", self.run), ("preflight", self.preflight or self.run)):
            module, _, name = ref.partition(":")
            if not module.startswith(f"occ.techniques.{self.type}.") or not name.isidentifier():
                raise ValueError(f"{self.type}: {key} must be 'occ.techniques.{self.type}."
                                 f"<module>:<function>', got {ref!r}")
        for alias, category in self.aliases.items():
            if category not in self.categories:
                raise ValueError(f"{self.type}: alias {alias!r} names category {category!r}, "
                                 f"not one of {sorted(self.categories)}")

    def load_run(self) -> RunFn:
        """The run function (imports the technique's torch half)."""
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)

    def load_preflight(self) -> Callable[[Any, Any], None] | None:
        """The preflight check (imports the technique's torch half), or None."""
        if not self.preflight:
            return None
        module, _, name = self.preflight.partition(":")
        return getattr(importlib.import_module(module), name)

    def load_edit_ops(self) -> None:
        """Import the modules that register this technique's edit ops."""
        for module in self.edit_modules:
            importlib.import_module(module)
