"""``occ compress``, ``occ ablate``, ``occ train``: the commands that run stages."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer

from occ.cli.app import (
    JsonOpt,
    TrustCkptOpt,
    TrustCodeOpt,
    _console,
    _emit_json,
    _fail,
    _progress,
    _run,
    _seed_list,
    app,
)
from occ.outputs import other_rank
from occ.tolerances import REGRESSION_WITHIN


@app.command()
def compress(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    checkpoint: Annotated[str | None, typer.Option(help="Input checkpoint (overrides the "
                                                   "recipe's model.checkpoint).")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (overrides output).")]
    = None,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Run stages as written.")]
    = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Reuse the stages an interrupted run into the same --out finished.")]
    = False,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", help="Train with N data-parallel processes (launches torchrun).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the recipe's seed).")]
    = None,
    no_guard: Annotated[bool, typer.Option(
        "--no-guard", help="Turn the quality gates off (the recipe's guard).")] = False,
    trust_checkpoint: TrustCkptOpt = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate, order and run a recipe; write DIR/model.occ and DIR/report.{json,md,html}."""

    from occ import api

    checks = {"checkpoint": checkpoint, "out": out, "keep_order": keep_order, "seed": seed,
              "guard": not no_guard, "trust_code": trust_code}
    if nproc is not None:
        _relaunch(nproc, lambda: api.check_compress(recipe, **checks), as_json)
    report = _run(lambda: api.compress(recipe, resume=resume, trust_checkpoint=trust_checkpoint,
                                       progress=_progress(), **checks), as_json)
    if other_rank():
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit_json(report.to_dict())
    else:
        _console().print(report)


def _relaunch(nproc: int, check: Callable[[], object], as_json: bool) -> NoReturn:
    """Rerun this command (``occ compress`` / ``occ train``) in ``nproc`` processes, then
    exit with their outcome.

    ``check`` (the command's ``api.check_*``) runs here first, so bad input is one line and
    exit 2 before any process starts; a process that still fails is reported once, with
    its exit code (``occ.launch``).
    """
    from occ.launch import check_nproc, run_ranks

    _run(check, as_json)  # torch-free: bad input says so in a second
    _run(lambda: check_nproc(nproc), as_json)
    failure = _run(lambda: run_ranks(nproc, _without_nproc(sys.argv[1:])), as_json)
    if failure is not None:
        _fail(failure, as_json)
    raise typer.Exit(0)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    for i, arg in enumerate(argv):
        if arg == "--nproc":
            return argv[:i] + argv[i + 2:]
        if arg.startswith("--nproc="):
            return argv[:i] + argv[i + 1:]
    return argv


@app.command()
def ablate(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file (two or more techniques).")],
    max_orders: Annotated[int | None, typer.Option(
        "--max-orders", help="Run a seeded sample of N orders (the built-in one included).")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the sample (default: recipe's).")]
    = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Comma-separated run seeds (e.g. 0,1,2): the ablation runs once per "
                        "seed and orders are ranked by their means, with paired intervals "
                        "and statistical ties.")] = None,
    tolerance: Annotated[float | None, typer.Option(
        help="Rank by BitOps among orders within this many points of the best accuracy "
             "(regression: this much MAE of the best MAE). Default 0.5 points, or 5% of "
             "the baseline's MAE.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Input checkpoint.")] = None,
    out: Annotated[str | None, typer.Option(
        help="Output directory (default: the recipe's output with -ablation appended).")] = None,
    no_guard: Annotated[bool, typer.Option(
        "--no-guard", help="Turn the quality gates off (the recipe's guard).")] = False,
    trust_checkpoint: TrustCkptOpt = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every order of the recipe's techniques on a fixed budget and rank them."""
    from occ import api

    doc = _run(lambda: api.ablate(recipe, checkpoint=checkpoint, out=out, max_orders=max_orders,
                                  seed=seed, tolerance=tolerance, guard=not no_guard,
                                  trust_checkpoint=trust_checkpoint, trust_code=trust_code,
                                  progress=_progress(), seeds=_seed_list(seeds)), as_json)
    if as_json:
        _emit_json(doc)
        return
    from rich.table import Table

    from occ.engine.ablate_views import (
        builtin_words,
        cost_cells,
        quality_cells,
        quality_columns,
        ranking_note,
    )

    table = Table(title=f"occ ablate: built-in order {builtin_words(doc)}", title_justify="left",
                  caption=ranking_note(doc), caption_justify="left")
    for col in ("rank", "order", *quality_columns(doc), "agree %", "BitOps", "bytes",
                "status"):
        table.add_column(col, justify="left" if col in ("order", "status") else "right")
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        name = " → ".join(r["order"]) + (" *" if r["builtin"] else "")
        table.add_row(str(i), name, *quality_cells(m, doc), *cost_cells(m), r["status"])
    console = _console()
    console.print(table)
    for p in doc["pairwise"] or ():
        if p["agrees"] is False:
            console.print(f"[yellow]{p['pair'][0]}/{p['pair'][1]}: measured "
                          f"{p['measured_first']} first is better, the built-in order puts "
                          f"{p['builtin_first']} first[/yellow]")
    console.print(f"wrote ablation.json, ablation.md and ablation.png to {doc['output']}")


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo name, torchvision.<fn> or pkg.mod:fn.")],
    out: Annotated[str, typer.Option(help="Checkpoint to write.")],
    data: Annotated[str, typer.Option(help="Dataset name.")] = "mnist5k",
    root: Annotated[str | None, typer.Option(help="Dataset root (torchvision sets).")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Epochs (default: the model's converged default, e.g. LeNet-5 30).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate (SGD, cosine; default: the model's, e.g. LeNet-5 0.05, "
             "LeNet-300-100 0.1).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Batch size (default: the model's, 64 for the zoo's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="SGD weight decay (default: the model's, e.g. LeNet-5 "
                                "5e-4, LeNet-300-100 2e-3).")] = None,
    shift: Annotated[int | None, typer.Option(
        "--shift", help="Random shifts of the training images, in pixels (default: 2 on "
                        "mnist5k, else 0).")] = None,
    width: Annotated[float | None, typer.Option(help="Zoo channel multiplier.")] = None,
    pad_to: Annotated[int | None, typer.Option(
        "--pad-to", help="Zero-pad images to this square size (e.g. 32 for CIFAR ResNets).")]
    = None,
    loss: Annotated[str, typer.Option(
        help="auto (cross_entropy; mse on a regression dataset), mse or l1.")] = "auto",
    val_size: Annotated[int | None, typer.Option(
        "--val-size", help="Train images held out for validation (default: min(500, 1/5)).")]
    = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Resize images to this square side (imagefolder, torchvision "
                             "sets).")] = None,
    channels: Annotated[int | None, typer.Option(
        "--channels", help="1: read an imagefolder as grayscale (default: RGB).")] = None,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", help="Train with N data-parallel processes (launches torchrun).")] = None,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a baseline checkpoint (so a fresh machine can go end to end)."""

    from occ import api

    options = {"data": data, "root": root, "epochs": epochs, "out": out, "lr": lr,
               "batch_size": batch_size, "seed": seed,
               "kwargs": {"width": width} if width is not None else {},
               "weight_decay": weight_decay, "shift": shift, "pad_to": pad_to, "loss": loss,
               "val_size": val_size, "image_size": image_size, "channels": channels,
               "trust_code": trust_code}
    if nproc is not None:
        _relaunch(nproc, lambda: api.check_train(model, **options), as_json)
    result = _run(lambda: api.train(model, progress=_progress(), **options), as_json)
    if other_rank():
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit_json(result)
    else:
        quality = (f"MAE {result['mae']:.4f} / RMSE {result['rmse']:.4f}, "
                   f"{result['accuracy']:.2f}% within {REGRESSION_WITHIN}"
                   if result.get("mae") is not None
                   else f"{result['accuracy']:.2f}% test accuracy")
        _console().print(f"{model} on {data}: {quality}, {result['params']:,} params -> {out}")
        if result.get("val_last"):
            slope = result.get("val_slope_pt_per_epoch")  # None after a single epoch
            last = len(result["val_last"])
            _console().print(f"val accuracy, last {last} epoch{'s' if last > 1 else ''}: "
                             + " ".join(f"{v:.1f}" for v in result["val_last"])
                             + (f" (slope {slope:+.3f} pt/epoch)" if slope is not None else ""))
