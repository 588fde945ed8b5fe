"""What a run's recipe passes before any work, torch-free: the command line's overrides
(checked, and recorded absolute), trusted code that must import, writable outputs. One
owner for ``occ validate --trust-code``, ``compress`` (and ``--nproc``'s check before its
processes start) and ``ablate``."""

from __future__ import annotations

import os
from dataclasses import replace

from occ.errors import CheckpointError, RecipeError
from occ.recipe import Recipe


def import_trusted(recipe: Recipe) -> None:
    """Import (not call) every ``pkg.module:callable`` ``recipe`` names, from beside it and
    then the working directory: a builder that does not import is said before any work."""
    from occ.callables import import_references, source_folder

    import_references(recipe.to_dict(), source=recipe.source,
                      search=source_folder(recipe.source))


def with_overrides(recipe: Recipe, checkpoint: str | None, out: str | None, *,
                   seed: int | None = None, guard: bool = True) -> Recipe:
    """The recipe with the command line's overrides applied (each checked here). Paths
    given here (relative to the working directory) and the default output are recorded
    absolute, as the recipe's own are (resolved against its folder): the resolved recipe
    a run writes then reruns from anywhere."""
    model = recipe.model
    if checkpoint is not None:
        from occ.limits import check_input_file

        check_input_file(checkpoint, error=CheckpointError, what="checkpoint")
        model = replace(model, checkpoint=os.path.abspath(checkpoint))
    if model.checkpoint is None:
        raise RecipeError("is required to compress (or pass --checkpoint)",
                          where=f"{recipe.source}: model.checkpoint")
    output = (os.path.abspath(out) if out else recipe.output
              or os.path.abspath(os.path.join("runs", recipe.name)))
    recipe = replace(recipe, model=model, output=output)
    if seed is not None:
        from occ.domains import check_seed

        check_seed(seed, where="--seed")
        recipe = replace(recipe, seed=seed)
    if not guard:
        recipe = replace(recipe, guard=replace(recipe.guard, enabled=False))
    return recipe


def check_run(recipe: Recipe, *, trust_code: bool, out: str | None, out_dir: str,
              files: tuple[str, ...] | None = None, dirs: tuple[str, ...] | None = None,
              ) -> None:
    """Before any work: the recipe names no code unless trusted, and trusted code imports
    (from beside the recipe, then the working directory); the outputs are writable."""
    from occ.outputs import RUN_DIRS, RUN_FILES, check_output_dir
    from occ.trust import check_recipe

    check_recipe(recipe.to_dict(), source=recipe.source, trusted=trust_code)
    if trust_code:  # a builder that does not import: said now, not after loading the data
        import_trusted(recipe)
    where = "--out" if out is not None else f"{recipe.source}: output"
    check_output_dir(out_dir, where=where, files=RUN_FILES if files is None else files,
                     dirs=RUN_DIRS if dirs is None else dirs)


__all__ = ["check_run", "import_trusted", "with_overrides"]
