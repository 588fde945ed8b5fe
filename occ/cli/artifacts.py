"""``occ eval``, ``occ inspect``, ``occ export``, ``occ report``: commands on outputs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from occ.cli.app import (
    JsonOpt,
    TrustCkptOpt,
    TrustCodeOpt,
    _channel_values,
    _console,
    _emit_json,
    _json_option,
    _run,
    app,
)
from occ.tolerances import REGRESSION_WITHIN


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
    mean: Annotated[str | None, typer.Option(
        "--mean", help="Per-channel mean the model was trained with, e.g. 0.3,0.3,0.3 "
                       "(default: the recorded one, else the dataset's).")] = None,
    std: Annotated[str | None, typer.Option(
        "--std", help="Per-channel std, e.g. 0.25,0.25,0.25 (default: as --mean).")] = None,
    channels: Annotated[int | None, typer.Option(
        "--channels", help="Read an imagefolder with 1 (grayscale) or 3 (RGB) channels, as "
                           "the model was trained (default: the recorded ones, else RGB).")]
    = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Resize images to this square side, as the model was trained "
                             "(imagefolder, torchvision sets; default: the recorded size, "
                             "else the dataset's).")] = None,
    latency: Annotated[bool, typer.Option(
        "--latency", help="Also time batch-1 and batch-64 forwards (median, p90).")] = False,
    latency_runs: Annotated[int, typer.Option(
        "--latency-runs", help="Timed runs per batch size (after 10 warm-up runs).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, params, size, MACs, BitOps (and exits) of a checkpoint or an artifact."""
    from occ import api

    parsed = _run(lambda: _json_option(kwargs, "--kwargs"), as_json)
    means = _run(lambda: _channel_values(mean, "--mean"), as_json)
    stds = _run(lambda: _channel_values(std, "--std"), as_json)
    result = _run(lambda: api.evaluate(path, data=data, root=root,
                                       trust_checkpoint=trust_checkpoint, trust_code=trust_code,
                                       latency=latency, latency_runs=latency_runs, arch=arch,
                                       kwargs=parsed, mean=means, std=stds,
                                       channels=channels, image_size=image_size), as_json)
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
                "bitops", "sparse_bitops", "bytes", "bits_per_param"):
        v = result.get(key)
        if key in ("mae", "rmse"):
            table.add_row(key, f"{v:.4f}")
            continue
        label = (f"% within {REGRESSION_WITHIN} of target" if key == "accuracy" and regression
                 else key)
        table.add_row(label, "-" if v is None else f"{v:,.2f}" if isinstance(v, float)
                      else f"{v:,}")
    if result.get("batch_size"):
        recorded = result.get("batch_size_recorded")
        table.add_row("batch size", f"{result['batch_size']:,}" + (
            f" (recorded {recorded:,}: over OCC_MAX_BATCH_VALUES)" if recorded else ""))
    if result.get("exits"):
        table.add_row("exits", json.dumps(result["exits"].get("shares")))
    if result.get("preprocess"):
        table.add_row("preprocess", _preprocessing(result))
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


_SOURCES = {"recorded": "recorded with the model", "default": "the dataset's default"}


def _source(result: dict, key: str, options: tuple[str, ...], hint: bool = False) -> str:
    """Where one part of the preprocessing comes from, in words (``result[key]``): ``from
    --channels``, ``recorded with the model`` or the dataset's default (with ``hint``: and
    the options to use if the model was trained otherwise)."""
    source = result.get(key, "")
    if source == "options":
        given = [o for o in options if o in result.get("preprocess_options", options)]
        return f"from {' / '.join(given or options)}"
    text = _SOURCES.get(source, "")
    if hint and source == "default":
        text += f"; {' / '.join(options)} if trained otherwise"
    return text


def _preprocessing(result: dict) -> str:
    """``mean (...), std (...) (where from)`` and, on a second line, ``input C×H×W (where
    from)``: the preprocessing ``occ eval`` used and where each part came from."""
    pre = result["preprocess"]
    text = ", ".join(f"{key} ({', '.join(f'{v:g}' for v in pre.get(key) or [])})"
                     for key in ("mean", "std"))
    source = _source(result, "preprocess_source", ("--mean", "--std"), hint=True)
    text = f"{text} ({source})" if source else text
    shape = result.get("input_shape")
    if shape:
        source = _source(result, "input_source", ("--channels", "--image-size"))
        text += f"\ninput {'×'.join(map(str, shape))} (C×H×W{', ' + source if source else ''})"
    return text


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
    from occ.artifact.header import arch_summary

    arch, n_edits = arch_summary(header)
    table = Table(title=f"{path}: {result['bytes']:,} bytes, model {arch}, "
                        f"{n_edits} edits", title_justify="left")
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
    max_accuracy_drop: Annotated[float | None, typer.Option(
        "--max-accuracy-diff", help="onnx-qdq: largest test accuracy difference from occ's, "
        "in points (default 0.2, or one test input's worth on a split of fewer than 500).",
        show_default=False)] = None,
    out: Annotated[str | None, typer.Option(help="File to write (default: PATH with "
                                            ".onnx; onnx-qdq: .int8.onnx).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Static batch size, float ONNX only (default: a dynamic batch "
                             "axis; the int8 export keeps it dynamic).")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17; dynamo 18).")]
    = None,
    exporter: Annotated[str, typer.Option(
        help="torch exporter: torchscript (fast) or dynamo (torch.export; needs onnxscript).")]
    = "torchscript",
    trust_code: Annotated[bool, typer.Option(
        "--trust-code", help="Allow a pkg.module:callable model reference to be imported.")]
    = False,
    root: Annotated[str | None, typer.Option(
        "--root", help="The data's folder, when it moved since the artifact was made "
        "(recorded in the file; onnx-qdq checks on it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export an artifact's model to ONNX: the exact float graph (quantized layers as
    dequantized weights; early exits as extra outputs), or with --format onnx-qdq the
    integer graph onnxruntime runs with int8 kernels. Checked in onnxruntime."""
    from occ import api

    int8 = int8 or fmt == "onnx-qdq"
    options = ({"calib_samples": calib_samples, "min_agreement": min_agreement,
                "max_accuracy_drop": max_accuracy_drop} if int8 else None)
    result = _run(lambda: api.export(path, out, fmt=fmt, batch_size=batch_size, opset=opset,
                                     exporter=exporter, trust_code=trust_code, int8=int8,
                                     int8_options=options, root=root), as_json)
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
    checked = (f"; onnxruntime max |diff| {check['max_abs_diff']:.2g} on {check['samples']} "
               "random inputs (occ eval model.onnx scores it on the data)" if check
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
