"""``occ compress``, ``occ ablate``, ``occ train``: the commands that run stages."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from occ.cli.app import (
    JsonOpt,
    TrustCkptOpt,
    TrustCodeOpt,
    _console,
    _emit_json,
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

    if nproc is not None:
        _relaunch(nproc)
    from occ import api

    report = _run(lambda: api.compress(recipe, checkpoint=checkpoint, out=out,
                                       keep_order=keep_order, resume=resume, seed=seed,
                                       guard=not no_guard, trust_checkpoint=trust_checkpoint,
                                       trust_code=trust_code,
                                       progress=_progress()), as_json)
    if other_rank():
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit_json(report.to_dict())
    else:
        _console().print(report)


def _relaunch(nproc: int) -> None:
    """Rerun this command (``occ compress`` / ``occ train``) under torchrun with ``nproc``
    processes, then exit."""
    import subprocess

    from occ.distributed import launch_command

    argv = sys.argv[1:]
    for i, arg in enumerate(argv):  # drop --nproc N / --nproc=N
        if arg == "--nproc":
            argv = argv[:i] + argv[i + 2:]
            break
        if arg.startswith("--nproc="):
            argv = argv[:i] + argv[i + 1:]
            break
    command = _run(lambda: launch_command(nproc, argv))
    raise typer.Exit(subprocess.call(command))


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
    out: Annotated[str | None, typer.Option(help="Output directory.")] = None,
    trust_checkpoint: TrustCkptOpt = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every order of the recipe's techniques on a fixed budget and rank them."""
    from occ import api

    doc = _run(lambda: api.ablate(recipe, checkpoint=checkpoint, out=out, max_orders=max_orders,
                                  seed=seed, tolerance=tolerance,
                                  trust_checkpoint=trust_checkpoint, trust_code=trust_code,
                                  progress=_progress(), seeds=_seed_list(seeds)), as_json)
    if as_json:
        _emit_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"occ ablate: built-in order ranks {doc['builtin_rank']} of "
                        f"{len(doc['ranking'])}", title_justify="left")
    from occ.engine.ablate_views import quality_label, quality_value

    regression = doc.get("task") == "regression"
    for col in ("rank", "order", quality_label(doc)[1], "agree %", "BitOps", "bytes", "status"):
        table.add_column(col, justify="left" if col in ("order", "status") else "right")
    for i, r in enumerate(doc["ranking"], 1):
        m = r["metrics"]
        name = " → ".join(r["order"]) + (" *" if r["builtin"] else "")
        table.add_row(str(i), name, quality_value(m, regression),
                      f"{m.get('agreement') or 0:.2f}", f"{m.get('bitops', 0):.3g}",
                      f"{m.get('bytes', 0):,}", r["status"])
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
        help="Learning rate (SGD, cosine; default 0.05).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Batch size (default: the model's, 64 for the zoo's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="SGD weight decay (default 5e-4).")] = None,
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

    if nproc is not None:
        _relaunch(nproc)
    from occ import api

    kwargs = {"width": width} if width is not None else {}
    result = _run(lambda: api.train(model, data=data, root=root, epochs=epochs, out=out, lr=lr,
                                    batch_size=batch_size, seed=seed, kwargs=kwargs,
                                    weight_decay=weight_decay, shift=shift,
                                    pad_to=pad_to, loss=loss, val_size=val_size,
                                    image_size=image_size, channels=channels,
                                    trust_code=trust_code,
                                    progress=_progress()), as_json)
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
