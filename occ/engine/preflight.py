"""Stage references checked against the model before the first stage runs.

A recipe names parts of the model (``exclude`` layers, ``exits``, distillation ``hints``).
``occ validate`` cannot check them (it builds no model); without this check a wrong name
surfaces only when its stage runs, after every earlier stage has trained. Here each name
is looked up in the loaded model right after it is built, in execution order, up to the
first stage that renames modules (``StageConfig.renames_modules``: a student, factorised
layers, a wrapped backbone); later stages' names are checked when they run. ``occ compress``
checks its one order, ``occ ablate`` every order it will run.

Every stage's own ``device`` is checked too (``occ.devices.check_stage_devices``). Given
the run's context, the same stages' own preflight checks run too
(``TechniqueSpec.preflight``: a distill student is built and fitted to the model), once
per stage however many orders run it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from torch import nn

from occ.devices import check_stage_devices
from occ.engine.plan import Plan
from occ.errors import ModelError, RecipeError
from occ.recipe import Recipe, Stage
from occ.sparsity import check_layer, layers_of
from occ.techniques.registry import get_stage
from occ.trust import TrustError

if TYPE_CHECKING:
    from occ.engine.context import RunContext

SHOWN = 12
"""Module names listed in the error at most."""


def _listing(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def check_references(plan: Plan, model: nn.Module, ctx: RunContext | None = None) -> None:
    """Raise ``RecipeError`` at ``stages[i].<field>`` for the first name not in ``model``.

    ``exclude`` entries must be Conv2d / Linear layers (``occ.sparsity.check_layer``, the
    check the stages run); exits and hints any submodule (a missing exit lists the valid
    exit points, as the stage itself would). With ``ctx`` (the run's, ``ctx.model`` being
    ``model``), the stages' own preflight checks too.
    """
    stages = plan.recipe.stages
    written = [plan.written_index(pos) for pos in range(len(stages))]
    check_stage_devices(plan.recipe.source, stages, written)
    _check_stages(plan.recipe.source, stages, written, _Names(model), ctx, set())


def check_order_references(recipe: Recipe, orders: Iterable[Sequence[Stage]],
                           model: nn.Module, ctx: RunContext | None = None) -> None:
    """``occ ablate``: each order that will run (its stages in run order, objects of
    ``recipe.stages``), checked as ``check_references`` checks compress's one order.

    A stage is checked wherever some order runs it before any stage that renames modules;
    the error names its ``stages[i]`` in the recipe as written, not its place in the order.
    """
    written = {id(stage): i for i, stage in enumerate(recipe.stages)}
    check_stage_devices(recipe.source, recipe.stages, range(len(recipe.stages)))
    done: set[int] = set()
    names = _Names(model)
    for stages in orders:
        _check_stages(recipe.source, stages, [written[id(s)] for s in stages], names, ctx, done)


class _Names:
    """The model's submodules and its Conv2d / Linear layers by name, listed once."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = {n: m for n, m in model.named_modules() if n}
        self.layers = layers_of(model)


def _check_stages(source: str, stages: Sequence[Stage], written: Sequence[int],
                  names: _Names, ctx: RunContext | None, done: set[int]) -> None:
    """The names of ``stages`` (run order; ``written``: their recipe indices) up to the
    first stage that renames modules, and with ``ctx`` their preflight checks (each stage
    once: ``done`` holds the ids of those already checked)."""
    model, modules, layers = names.model, names.modules, names.layers
    for stage, index in zip(stages, written, strict=True):
        where = f"{source}: stages[{index}]"
        for ref in stage.config.references():
            if ref.kind == "layer":
                check_layer(ref.name, layers, where=f"{where}.{ref.where}")
            if ref.kind == "exit" and ref.name not in modules:
                from occ.techniques.early_exit.split import exit_candidates

                raise RecipeError(f"{ref.name!r} is not a valid exit point (no such module); "
                                  f"valid: {', '.join(exit_candidates(model))}",
                                  where=f"{where}.{ref.where}")
            if ref.kind == "module" and ref.name not in modules:
                raise RecipeError(f"no module {ref.name!r} in the model; modules: "
                                  f"{_listing(list(modules))}", where=f"{where}.{ref.where}")
        spec = get_stage(stage.type).spec
        check = spec.load_preflight() if ctx is not None and spec is not None else None
        if check is not None and id(stage) not in done:
            done.add(id(stage))
            try:
                check(ctx, stage.config)
            except (RecipeError, ModelError, TrustError) as err:  # as ``runner.run_stage``
                raise err.located(where) from None
        if stage.config.renames_modules:
            return
