"""``occ order``, ``occ validate``, ``occ init``, ``occ recipes``: torch-free commands."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from occ.cli.app import (
    JsonOpt,
    _emit_json,
    _run,
    _techniques_help,
    app,
)


@app.command()
def order(
    techniques: Annotated[str, typer.Option(
        "--techniques", "-t",
        help=_techniques_help())],
    explain: Annotated[bool, typer.Option("--explain", help="Give the reason for every edge.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the built-in order of the given techniques (e.g. KD -> P -> Q -> EE)."""
    from occ import api

    result = _run(lambda: api.order(techniques.split(","), where="--techniques"), as_json)
    if as_json:
        _emit_json(result)
        return
    print(" → ".join(result["order"]))
    if explain:
        for e in result["edges"]:
            print(f"  {e['before']} → {e['after']}: {e['reason']} [{e['source']}]")


@app.command()
def validate(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Keep the written order.")]
    = False,
    trust_code: Annotated[bool, typer.Option(
        "--trust-code", help="Also import (not call) the pkg.module:callable references the "
                             "recipe names, to check they import: that runs their module.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a recipe (schema and order, no torch work) and print the resolved plan."""
    from occ import api
    from occ.trust import code_references

    plan = _run(lambda: api.validate(recipe, keep_order=keep_order, trust_code=trust_code),
                as_json)
    code = [{"where": where, "ref": ref, "imported": trust_code}
            for where, ref in code_references(plan.recipe.to_dict())]
    if as_json:
        _emit_json({"recipe": plan.recipe.to_dict(), **plan.to_dict(), "code": code})
        return
    out = sys.stdout
    out.write(f"{recipe}: ok — {plan.recipe.name}\n")
    out.write(f"order: {' → '.join(plan.labels)}\n")
    for m in plan.moves:
        out.write(f"  moved {m}\n")
    for r in plan.reasons:
        out.write(f"  {r['before']} → {r['after']}: {r['reason']}\n")
    for w in plan.warnings:
        out.write(f"  warning: {w}\n")
    for c in code:
        out.write(f"  code: {c['where']}: {c['ref']!r} imports\n" if trust_code else
                  f"  code: {c['where']}: {c['ref']!r} runs code: compress needs --trust-code "
                  "(not imported here; `occ validate --trust-code` checks that it imports)\n")


@app.command()
def init(
    model: Annotated[str, typer.Option(help="Zoo name, torchvision.<fn> or pkg.mod:fn.")]
    = "lenet5",
    data: Annotated[str, typer.Option(help="Dataset: mnist5k, digits, imagefolder, ...")]
    = "mnist5k",
    name: Annotated[str | None, typer.Option(help="Run name (default: from the model).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a commented starter recipe: occ init --model M --data D > recipe.yaml."""
    from occ.starter import starter_recipe

    text = _run(lambda: starter_recipe(model, data, name=name), as_json)
    if as_json:
        _emit_json({"text": text})
        return
    sys.stdout.write(text)


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="Print this recipe (e.g. demo).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the example recipes shipped with occ, or print one: occ recipes demo > r.yaml."""
    from occ.starter import list_recipes, printed_recipe

    if name is not None:
        text = _run(lambda: printed_recipe(name), as_json)
        if as_json:
            _emit_json({"name": name.removesuffix(".yaml"), "text": text})
            return
        sys.stdout.write(text)
        return
    found = list_recipes()
    if as_json:
        _emit_json(found)
        return
    width = max(len(r["name"]) for r in found)
    for r in found:
        sys.stdout.write(f"{r['name']:<{width}}  {r['summary']}\n")
