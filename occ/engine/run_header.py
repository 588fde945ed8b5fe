"""The header a run writes into its artifact and stage states: the model (arch, edits),
the data it was measured on, the recipe and plan, where user code came from, and, in the
written artifact, the final metrics. One owner for compress's file and for the size
``occ ablate`` reports for an order (the file compress would write for it)."""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.callables import imported_folders
from occ.trust import code_references

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.engine.plan import Plan
    from occ.metrics import Metrics


def run_header(ctx: RunContext, plan: Plan,
               metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's header for ``ctx.model`` under ``plan`` (``metrics``: the final ones)."""
    data = {"dataset": ctx.data.name, "task": ctx.data.task, "root": plan.recipe.data.root,
            "preprocess": ctx.data.preprocess}
    if ctx.data.classes is not None:  # index order: eval refuses data that renumbers them
        data["classes"] = list(ctx.data.classes)
    recipe = _portable(plan.recipe.to_dict())
    # where the model's and data's user code came from: eval --trust-code looks there too
    folders = imported_folders([ctx.arch.arch, *(ref for _, ref in code_references(recipe))])
    return artifact_header.run_header(arch=ctx.arch.to_dict(), edits=ctx.edits,
                                      input_shape=ctx.data.input_shape,
                                      num_classes=ctx.data.num_classes, recipe=recipe,
                                      plan=plan.to_dict(), data=data, metrics=metrics,
                                      code_folders=folders)


def _portable(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as the artifact records it: the checkpoint by its file name only (the
    output folder is left out: ``occ.artifact.header.run_header``). Where it lies is the
    run's machine's business (an artifact handed on named /home/<user>/...), and with its
    full path the same run wrote another file in another clone (a header some 20 bytes
    longer from a longer path). The data's root stays: occ eval reads the data there."""
    model = dict(recipe.get("model") or {})
    if model.get("checkpoint"):
        model["checkpoint"] = PurePath(str(model["checkpoint"])).name
    return {**recipe, "model": model}


def final_header(ctx: RunContext, plan: Plan, final: Metrics) -> dict[str, Any]:
    """The written artifact's header: the run's, with the final metrics (less the file's
    own size, which it decides)."""
    summary = final.to_dict(layers=False)
    summary.pop("bytes", None)
    summary.pop("bits_per_param", None)
    return run_header(ctx, plan, summary)


def file_size(ctx: RunContext, plan: Plan, final: Metrics) -> int:
    """Bytes of the artifact ``ctx.model`` would be written as under ``plan`` with the
    final metrics ``final`` (``occ ablate``'s size of an order: compress's file)."""
    return len(model_io.artifact_bytes(ctx.model, final_header(ctx, plan, final), ctx.encoding))
