"""The ``occ`` command line: thin Typer commands over ``occ.api``.

Each command normalises its options, calls one library function and renders the result.
Library errors (``OccError``) become one red line on stderr and their exit code (2 bad
input, 1 run failed) here, in one place; ``--debug`` shows the traceback instead.
``--json`` prints exactly one JSON document on stdout. Human output goes to stderr when
stdout is not a terminal. torch is imported only by commands that need tensors.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; older releases depend on click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from occ.tolerances import REGRESSION_WITHIN

T = TypeVar("T")


class _OccGroup(TyperGroup):
    """Turns usage errors into one line and exit code 2 (click prints several lines)."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click_exc.UsageError as err:
            ctx = err.ctx
            cmd = ctx.command_path if ctx is not None else "occ"
            sys.stderr.write(f"{cmd}: {err.format_message()} (see --help)\n")
            sys.exit(2)
        except typer.Abort:
            sys.stderr.write("occ: aborted\n")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OccGroup, add_completion=False, no_args_is_help=True,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="occ (Order of Compression): chain pruning, quantization, early exit, "
         "distillation and entropy coding in the order that works best.",
)
_state = {"debug": False}
_QUIET_LOGGERS = ("PIL", "matplotlib", "fsspec", "urllib3", "onnxscript", "torch._dynamo")



def _techniques_help() -> str:
    from occ.techniques.registry import techniques_help

    return techniques_help()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TrustCkptOpt = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Allow checkpoints that need full unpickling (runs code!).")]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Allow pkg.module:callable references (model, dataset, transform) "
                         "to be imported: that runs their code.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
          ) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in _QUIET_LOGGERS:  # -v is for occ's own lines, not image decoders' chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(stderr=not tty, width=None if tty else 140)  # logs: no truncated columns


def _run(fn: Callable[[], T], as_json: bool = False) -> T:
    """Call ``fn``; map occ errors to one line + exit code, unless ``--debug``.

    With ``--json`` the error is a JSON document on stdout instead,
    ``{"error": {"message", "code", "type", "where"}}``, with the same exit code.
    """
    from occ.errors import OccError

    try:
        return fn()
    except OccError as err:
        if _state["debug"]:
            raise
        if as_json:
            _emit_json({"error": {"message": str(err), "code": err.exit_code,
                                  "type": type(err).__name__, "where": err.where}})
        else:
            sys.stderr.write(f"error: {err}\n")
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise typer.Exit(130) from None
    except (Exception, RecursionError) as err:  # noqa: BLE001  (a bug: still one line)
        if _state["debug"]:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        sys.stderr.write(f"error: unexpected {type(err).__name__}: {first} "
                         "(a bug in occ; rerun with --debug for the traceback)\n")
        raise typer.Exit(1) from None


def _seed_list(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as integers (exit 2 with one line otherwise)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        from occ.errors import RecipeError

        raise RecipeError(f"must be comma-separated integers, got {text!r}",
                          where="--seeds") from None


def _json_option(text: str | None, flag: str) -> dict[str, Any] | None:
    """Parse a JSON-object option (``--kwargs``); RecipeError naming the flag."""
    from occ.errors import RecipeError

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecipeError(f"not valid JSON: {err.msg}", where=flag) from None
    if not isinstance(value, dict):
        raise RecipeError(f"must be a JSON object, got {text!r}", where=flag)
    return value


def _progress():
    """Bars on a terminal; one line per epoch on stderr otherwise (CI, tee, nohup)."""
    if sys.stderr.isatty():
        return _RichProgress()
    from occ.progress import LineProgress

    return LineProgress(sys.stderr)


def _emit_json(doc: Any) -> None:
    from occ.report.data import json_safe  # torch-free; strict JSON has no inf / NaN

    sys.stdout.write(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")


class _RichProgress:
    """Progress bars on stderr (only when stderr is a terminal; silent in pipelines)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        if not self.console.is_terminal:
            yield from items
            return
        from rich.progress import track

        yield from track(items, total=total, description=description, console=self.console,
                         transient=True)


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

    result = _run(lambda: api.order(techniques.split(",")), as_json)
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
    as_json: JsonOpt = False,
) -> None:
    """Check a recipe (schema and order, no torch work) and print the resolved plan."""
    from occ import api

    plan = _run(lambda: api.validate(recipe, keep_order=keep_order), as_json)
    if as_json:
        _emit_json({"recipe": plan.recipe.to_dict(), **plan.to_dict()})
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


@app.command()
def init(
    model: Annotated[str, typer.Option(help="Zoo name, torchvision.<fn> or pkg.mod:fn.")]
    = "lenet5",
    data: Annotated[str, typer.Option(help="Dataset: mnist5k, digits, imagefolder, ...")]
    = "mnist5k",
    name: Annotated[str | None, typer.Option(help="Run name (default: from the model).")]
    = None,
) -> None:
    """Print a commented starter recipe: occ init --model M --data D > recipe.yaml."""
    from occ.starter import starter_recipe

    sys.stdout.write(_run(lambda: starter_recipe(model, data, name=name)))


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="Print this recipe (e.g. demo).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the example recipes shipped with occ, or print one: occ recipes demo > r.yaml."""
    from occ.starter import list_recipes, recipe_text

    if name is not None:
        sys.stdout.write(_run(lambda: recipe_text(name), as_json))
        return
    found = list_recipes()
    if as_json:
        _emit_json(found)
        return
    width = max(len(r["name"]) for r in found)
    for r in found:
        sys.stdout.write(f"{r['name']:<{width}}  {r['summary']}\n")


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
    import os

    if nproc is not None:
        _relaunch(nproc)
    from occ import api

    report = _run(lambda: api.compress(recipe, checkpoint=checkpoint, out=out,
                                       keep_order=keep_order, resume=resume, seed=seed,
                                       guard=not no_guard, trust_checkpoint=trust_checkpoint,
                                       trust_code=trust_code,
                                       progress=_progress()), as_json)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit_json(report.to_dict())
    else:
        _console().print(report)


def _relaunch(nproc: int) -> None:
    """Rerun this ``occ compress`` under torchrun with ``nproc`` processes, then exit."""
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
    from occ.engine.ablate import quality_label, quality_value

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
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a baseline checkpoint (so a fresh machine can go end to end)."""
    from occ import api

    kwargs = {"width": width} if width is not None else {}
    result = _run(lambda: api.train(model, data=data, root=root, epochs=epochs, out=out, lr=lr,
                                    batch_size=batch_size, seed=seed, kwargs=kwargs,
                                    weight_decay=weight_decay, shift=shift,
                                    pad_to=pad_to, loss=loss, val_size=val_size,
                                    image_size=image_size, trust_code=trust_code,
                                    progress=_progress()), as_json)
    if as_json:
        _emit_json(result)
    else:
        quality = (f"MAE {result['mae']:.4f} / RMSE {result['rmse']:.4f}, "
                   f"{result['accuracy']:.2f}% within {REGRESSION_WITHIN}"
                   if result.get("mae") is not None
                   else f"{result['accuracy']:.2f}% test accuracy")
        _console().print(f"{model} on {data}: {quality}, {result['params']:,} params -> {out}")
        if result.get("val_last"):
            _console().print(f"val accuracy, last {len(result['val_last'])} epochs: "
                             + " ".join(f"{v:.1f}" for v in result["val_last"])
                             + f" (slope {result['val_slope_pt_per_epoch']:+.3f} pt/epoch)")


@app.command("eval")
def eval_(
    path: Annotated[str, typer.Argument(
        help="A checkpoint (.pt), an artifact (.occ) or an ONNX file (.onnx, onnxruntime).")],
    data: Annotated[str | None, typer.Option(help="Dataset (default: the recorded one).")]
    = None,
    root: Annotated[str | None, typer.Option(help="Dataset root.")] = None,
    trust_checkpoint: TrustCkptOpt = False,
    trust_code: TrustCodeOpt = False,
    arch: Annotated[str | None, typer.Option(
        "--arch", help="Architecture of a plain state dict: zoo name, torchvision.<fn> or "
                       "pkg.mod:fn.")] = None,
    kwargs: Annotated[str | None, typer.Option(
        "--kwargs", help="JSON keyword arguments for --arch, e.g. '{\"num_classes\": 3}'.")]
    = None,
    latency: Annotated[bool, typer.Option(
        "--latency", help="Also time batch-1 and batch-64 forwards (median, p90).")] = False,
    latency_runs: Annotated[int, typer.Option(
        "--latency-runs", help="Timed runs per batch size (after 10 warm-up runs).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, params, size, MACs, BitOps (and exits) of a checkpoint or an artifact."""
    from occ import api

    parsed = _run(lambda: _json_option(kwargs, "--kwargs"), as_json)
    result = _run(lambda: api.evaluate(path, data=data, root=root,
                                       trust_checkpoint=trust_checkpoint, trust_code=trust_code,
                                       latency=latency, latency_runs=latency_runs, arch=arch,
                                       kwargs=parsed), as_json)
    if as_json:
        _emit_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{result['kind']}: {path}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    regression = result.get("mae") is not None
    quality = ("mae", "rmse", "accuracy") if regression else ("accuracy",)
    for key in (*quality, "params", "nonzero_params", "macs", "sparse_macs",
                "bitops", "sparse_bitops", "bytes", "bits_per_weight"):
        v = result.get(key)
        if key in ("mae", "rmse"):
            table.add_row(key, f"{v:.4f}")
            continue
        label = (f"% within {REGRESSION_WITHIN} of target" if key == "accuracy" and regression
                 else key)
        table.add_row(label, "-" if v is None else f"{v:,.2f}" if isinstance(v, float)
                      else f"{v:,}")
    if result.get("exits"):
        table.add_row("exits", json.dumps(result["exits"].get("shares")))
    lat = result.get("latency")
    for b in lat["batches"] if lat else []:
        table.add_row(f"latency batch {b['batch_size']} (median / p90)",
                      f"{b['median_ms']:.3f} / {b['p90_ms']:.3f} ms")
    console = _console()
    console.print(table)
    if lat:
        runtime = f", {lat['runtime']}" if lat.get("runtime") else ""
        console.print(f"latency: {lat['device']} ({lat['device_name']}{runtime}), "
                      f"{lat['threads']} threads, {lat['warmup']} warm-up + {lat['runs']} "
                      "timed runs")
        for note in lat["notes"]:
            console.print(f"  note: {note}")


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="An artifact (.occ).")],
    as_json: JsonOpt = False,
) -> None:
    """Header and per-layer table (shape, sparsity, bits, coded bytes) of an artifact."""
    from occ import api

    result = _run(lambda: api.inspect(path), as_json)
    if as_json:
        _emit_json(result)
        return
    from rich.table import Table

    header = result["header"]
    model = header.get("model") if isinstance(header.get("model"), dict) else {}
    table = Table(title=f"{path}: {result['bytes']:,} bytes, model {model.get('arch')}, "
                        f"{len(header.get('edits') or [])} edits", title_justify="left")
    for col in ("tensor", "shape", "dtype", "codec", "bytes", "sparsity", "bits/value"):
        table.add_column(col, justify="left" if col in ("tensor", "codec", "dtype") else "right")
    for r in result["tensors"]:
        table.add_row(r["name"], "×".join(map(str, r["shape"])) or "scalar", r["dtype"],
                      r["codec"], f"{r['bytes']:,}", f"{100 * r['sparsity']:.1f}%",
                      f"{r['bits_per_value']:.2f}")
    console = _console()
    console.print(table)
    size = result.get("size") or {}
    if size:
        kinds = " · ".join(f"{k} {v:,}" for k, v in size["kinds"].items())
        zstd = size.get("zstd_bytes")
        console.print(f"bytes by kind: {kinds}; {size['bits_per_weight']:.2f} bits/weight, "
                      f"{size['bits_per_nonzero'] or 0:.2f} bits/nonzero; order-0 entropy "
                      f"bound {size['entropy_bytes']:,.0f} B; zstd-19 of the same values "
                      f"{'-' if zstd is None else f'{zstd:,} B'}")


@app.command()
def export(
    path: Annotated[str, typer.Argument(help="An artifact (.occ).")],
    fmt: Annotated[str, typer.Option(
        "--format", help="onnx (exact float graph) or onnx-qdq (integer QDQ graph, checked "
        "against occ on the test split).")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Same as --format onnx-qdq.")] = False,
    calib_samples: Annotated[int, typer.Option(
        "--calib-samples", help="onnx-qdq: training inputs that calibrate the tensors occ "
        "did not quantize (a residual sum, a conv output before it).")] = 512,
    min_agreement: Annotated[float, typer.Option(
        "--min-agreement", help="onnx-qdq: least top-1 agreement with occ, in %.")] = 99.0,
    out: Annotated[str | None, typer.Option(help="File to write (default: PATH with "
                                            ".onnx; onnx-qdq: .int8.onnx).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Static batch size (default: a dynamic batch axis).")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17; dynamo 18).")]
    = None,
    exporter: Annotated[str, typer.Option(
        help="torch exporter: torchscript (fast) or dynamo (torch.export; needs onnxscript).")]
    = "torchscript",
    trust_code: Annotated[bool, typer.Option(
        "--trust-code", help="Allow a pkg.module:callable model reference to be imported.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Export an artifact's model to ONNX: the exact float graph (quantized layers as
    dequantized weights; early exits as extra outputs), or with --format onnx-qdq the
    integer graph onnxruntime runs with int8 kernels. Checked in onnxruntime."""
    from occ import api

    int8 = int8 or fmt == "onnx-qdq"
    options = {"calib_samples": calib_samples, "min_agreement": min_agreement} if int8 else None
    result = _run(lambda: api.export(path, out, fmt=fmt, batch_size=batch_size, opset=opset,
                                     exporter=exporter, trust_code=trust_code, int8=int8,
                                     int8_options=options), as_json)
    if as_json:
        _emit_json(result)
        return
    check = result["verify"]
    if int8:
        _console().print(
            f"wrote {result['path']} ({result['bytes']:,} bytes, int8 QDQ, "
            f"{result['quantized_layers']} quantized layers); onnxruntime on "
            f"{check['samples']} test inputs: {check['top1_agreement']:.2f}% top-1 agreement "
            f"with occ, accuracy {check['accuracy_onnx']:.2f}% (occ "
            f"{check['accuracy_occ']:.2f}%)")
        return
    checked = (f"; onnxruntime max |diff| {check['max_abs_diff']:.2g}" if check
               else "; not checked (onnxruntime not installed)")
    _console().print(f"wrote {result['path']} ({result['bytes']:,} bytes, opset "
                     f"{result['opset']}, outputs {', '.join(result['outputs'])}){checked}")


@app.command()
def report(
    out_dir: Annotated[str, typer.Argument(help="A compress output directory (or its "
                                                 "report.json).")],
    as_json: JsonOpt = False,
) -> None:
    """Re-render DIR/report.{md,html} (plots included) from DIR/report.json."""
    from occ import api

    result = _run(lambda: api.report(out_dir), as_json)
    if as_json:
        _emit_json(result)
        return
    for path in result["written"]:
        _console().print(f"wrote {path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
