"""Quantization benchmark: LeNet-5 on mnist5k, PTQ vs QAT at 8/6/4/3/2-bit weights.

For weights at 8, 6, 4, 3 and 2 bits and inputs at 8 and 4 bits, runs occ's ``quantize``
stage as PTQ and as QAT from the same float checkpoint, plus mixed precision at 4 average
weight bits, and reports test accuracy, BitOps (the headline figure), the raw artifact's
bytes (int8 integers before entropy coding) and the stage's wall time. Every quantized
model is written as an artifact, loaded back with ``occ.load`` and checked to give
bit-identical logits. For comparison it also runs what a user would otherwise do for
8-bit: torch.ao FX post-training quantization with real int8 kernels (x86), and times
float, occ's fake-quant and torch.ao's int8 forward passes on the CPU, since fake-quant
is a simulation and is no faster than float.

    .venv/bin/python scripts/bench_quant.py            # ~5-10 minutes on 2 cores

Trains the float baseline once (``occ.api.train``, 15 epochs) unless
``runs/bench/lenet5.pt`` exists. Writes ``scripts/results/bench_quant.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from benchlib import baseline as shared_baseline
from torch import nn

import occ.api
from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.engine import runner
from occ.engine.context import RunContext
from occ.errors import RecipeError
from occ.metrics import measure
from occ.progress import NullProgress
from occ.recipe import parse_recipe
from occ.techniques.registry import get_stage
from occ.training import predict

ROOT = Path(__file__).resolve().parent.parent
W_BITS = (8, 6, 4, 3, 2)
A_BITS = (8, 4)


def _recipe(checkpoint: str, stage: dict[str, Any]) -> Any:
    return parse_recipe({"version": 1, "name": "bench-quant", "seed": 0,
                         "model": {"arch": "lenet5", "checkpoint": checkpoint},
                         "data": {"dataset": "mnist5k", "batch_size": 128},
                         "stages": [stage]}, source="bench_quant")


def _header(ctx: RunContext) -> dict[str, Any]:
    return artifact_header.model_header(arch=ctx.arch.to_dict(), edits=ctx.edits,
                                 input_shape=ctx.data.input_shape,
                                 num_classes=ctx.data.num_classes)


def _save_checked(ctx: RunContext, path: Path, encoding: dict[str, Any],
                  outputs: torch.Tensor) -> int:
    """Write the artifact, load it back with ``occ.load``; its logits must be bit-identical."""
    size = model_io.save(path, ctx.model, _header(ctx), encoding)
    again, _ = predict(occ.load(str(path)), ctx.loader("test"), ctx.device)
    if not torch.equal(again, outputs):
        raise SystemExit(f"{path.name}: artifact round trip is not bit-identical")
    return size


def _coded_encoding(ctx: RunContext) -> dict[str, Any] | None:
    """The run's encoding after occ's ``entropy_code`` stage (None if it is not available)."""
    try:
        info = get_stage("entropy_code")
    except RecipeError:
        return None
    info.run(ctx, info.config())
    return ctx.encoding


def _evaluate(ctx: RunContext, reference: torch.Tensor | None, tmp: Path) -> dict[str, Any]:
    """Accuracy / BitOps / bytes of ``ctx.model``, after exact artifact round trips."""
    outputs, targets = predict(ctx.model, ctx.loader("test"), ctx.device)
    size = _save_checked(ctx, tmp / "raw.occ", {"codec": "raw"}, outputs)
    coded = _coded_encoding(ctx)
    coded_size = _save_checked(ctx, tmp / "coded.occ", coded, outputs) if coded else None
    m = measure(ctx.model, outputs, targets, input_shape=ctx.data.input_shape,
                device=ctx.device, reference=reference, size=size)
    return {"accuracy": m.accuracy, "agreement": m.agreement, "bitops": m.bitops,
            "sparse_bitops": m.sparse_bitops, "bytes": size, "coded_bytes": coded_size,
            "bit_exact": True}


def _fresh(base: RunContext, model: nn.Module) -> RunContext:
    return RunContext(model=copy.deepcopy(model), baseline=base.baseline, data=base.data,
                      device=base.device, seed=base.seed, out_dir=base.out_dir, arch=base.arch,
                      recipe=base.recipe)


def run_config(base: RunContext, model: nn.Module, checkpoint: str, stage: dict[str, Any],
               reference: torch.Tensor, tmp: Path) -> dict[str, Any]:
    """One quantize stage from the float model; its figures and per-layer bits."""
    config = _recipe(checkpoint, stage).stages[0].config
    ctx = _fresh(base, model)
    t0 = time.perf_counter()
    result = get_stage("quantize").run(ctx, config)
    seconds = time.perf_counter() - t0
    row = {"stage": stage, "seconds": seconds, **_evaluate(ctx, reference, tmp),
           "avg_weight_bits": result.details["avg_weight_bits"],
           "layer_bits": {n: [r["w_bits"], r["a_bits"]]
                          for n, r in result.details["layers"].items()}}
    return row


def torch_ao_int8(model: nn.Module, base: RunContext) -> tuple[nn.Module, dict[str, Any]]:
    """torch.ao FX PTQ (x86 int8, per-channel weights), calibrated on 512 training inputs."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    example = next(iter(base.loader("train")))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).cpu().eval(),
                              get_default_qconfig_mapping("x86"), (example,))
        seen = 0
        with torch.no_grad():
            for x, _ in base.loader("train"):
                prepared(x)
                seen += len(x)
                if seen >= 512:
                    break
        q = convert_fx(prepared)
        outputs, targets = predict(q, base.loader("test"), torch.device("cpu"))
    acc = 100.0 * float((outputs.argmax(1) == targets).float().mean())
    return q, {"method": "torch.ao.quantization.quantize_fx prepare_fx/convert_fx, x86 qconfig",
               "w_bits": 8, "a_bits": 8, "accuracy": acc}


@torch.no_grad()
def latency_ms(model: nn.Module, batch: torch.Tensor, repeats: int = 10) -> float:
    """Median CPU time of one forward pass over ``batch``, in milliseconds."""
    model = model.cpu().eval()
    model(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - t0)
    return 1000.0 * sorted(times)[len(times) // 2]


def _configs(qat_epochs: int, qat_lr: float, macs: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, stage) of every row: the uniform grid, PTQ then QAT, then the extras."""
    qat = {"mode": "qat", "epochs": qat_epochs, "lr": qat_lr}
    rows = []
    for mode in ("ptq", "qat"):
        extra = qat if mode == "qat" else {"mode": "ptq"}
        rows += [(f"W{w}A{a}", {"type": "quantize", "weight_bits": w, "act_bits": a, **extra})
                 for a in A_BITS for w in W_BITS]
        # Mixed precision: 4 bits on average over the weights, and at W4A4's BitOps.
        rows.append(("mixed@4A4", {"type": "quantize", "weight_bits": "auto",
                                   "target_avg_bits": 4.0, "act_bits": 4, **extra}))
        rows.append(("mixed@BitOps(W4A4)", {"type": "quantize", "weight_bits": "auto",
                                            "bitops_budget": float(macs * 4 * 4), "act_bits": 4,
                                            **extra}))
    # Calibration ablation (PTQ) and QAT with the float model as teacher.
    for w in (3, 2):
        for method in ("minmax", "percentile"):
            rows.append((f"W{w}A4-{method}", {"type": "quantize", "weight_bits": w, "act_bits": 4,
                                              "mode": "ptq", "calibration": method}))
    rows.append(("W2A4-minmax", {"type": "quantize", "weight_bits": 2, "act_bits": 4, **qat,
                                 "calibration": "minmax"}))
    rows.append(("W2A4-kd", {"type": "quantize", "weight_bits": 2, "act_bits": 4, **qat,
                             "distill": True}))
    return rows


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    head = (f"{'config':<19} {'mode':<4} {'W':>4} {'A':>3} {'calib':<10} {'acc %':>6} "
            f"{'Δ pt':>5} {'agree %':>7} {'BitOps':>9} {'×BitOps':>7} {'raw B':>8} {'coded B':>8} "
            f"{'s':>5}")
    lines = [head, "-" * len(head),
             f"{'float':<19} {'-':<4} {32:>4} {32:>3} {'-':<10} {baseline['accuracy']:>6.1f} "
             f"{0:>+5.1f} {100:>7.1f} {baseline['bitops']:>9.3g} {1:>7.0f} "
             f"{baseline['bytes']:>8} {_opt(baseline['coded_bytes']):>8} {'-':>5}"]
    for r in rows:
        s = r["stage"]
        w = "auto" if s["weight_bits"] == "auto" else str(s["weight_bits"])
        if w == "auto":
            w = f"{r['avg_weight_bits']:.1f}"
        lines.append(
            f"{r['name']:<19} {s['mode']:<4} {w:>4} {s['act_bits']:>3} "
            f"{s.get('calibration', 'mse'):<10} {r['accuracy']:>6.1f} "
            f"{r['accuracy'] - baseline['accuracy']:>+5.1f} {r['agreement']:>7.1f} "
            f"{r['bitops']:>9.3g} {baseline['bitops'] / r['bitops']:>7.0f} {r['bytes']:>8} "
            f"{_opt(r['coded_bytes']):>8} {r['seconds']:>5.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="float baseline (default: the shared runs/bench/lenet5.pt)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-lr", type=float, default=0.01)
    parser.add_argument("--out", default=str(ROOT / "scripts/results/bench_quant.json"))
    parser.add_argument("--only", default="", help="comma-separated config names (W4A4, ...)")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    started = time.perf_counter()
    args.checkpoint = args.checkpoint or str(shared_baseline("lenet5"))  # trained if missing
    base = runner.prepare(_recipe(args.checkpoint, {"type": "quantize"}),
                          trust_checkpoint=False, progress=NullProgress())
    float_model = copy.deepcopy(base.model)
    reference, _ = predict(float_model, base.loader("test"), base.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _evaluate(_fresh(base, float_model), None, Path(tmp))
        baseline["agreement"] = 100.0
        macs = int(baseline["bitops"]) // (32 * 32)
        for name, stage in _configs(args.qat_epochs, args.qat_lr, macs):
            if only and name not in only:
                continue
            row = {"name": name, **run_config(base, float_model, args.checkpoint, stage,
                                              reference, Path(tmp))}
            rows.append(row)
            print(f"{name:<19} {stage['mode']}: {row['accuracy']:.1f}% "
                  f"({row['seconds']:.0f} s)", flush=True)
        eight = _fresh(base, float_model)
        get_stage("quantize").run(eight, _recipe(args.checkpoint, {
            "type": "quantize", "weight_bits": 8, "act_bits": 8, "mode": "ptq"}).stages[0].config)
    ao_model, ao = torch_ao_int8(float_model, base)
    batch = next(iter(base.loader("test", batch_size=256)))[0]
    latency = {"batch": 256, "threads": torch.get_num_threads(),
               "float_ms": latency_ms(float_model, batch),
               "occ_fake_quant_w8a8_ms": latency_ms(eight.model, batch),
               "torch_ao_int8_ms": latency_ms(ao_model, batch)}
    table = _table(baseline, rows)
    print(table)
    print(f"torch.ao int8 PTQ: {ao['accuracy']:.1f}%; latency (ms / 256 images): "
          f"float {latency['float_ms']:.1f}, occ fake-quant W8A8 "
          f"{latency['occ_fake_quant_w8a8_ms']:.1f}, torch.ao int8 "
          f"{latency['torch_ao_int8_ms']:.1f}")
    result = {"benchmark": "quantization, LeNet-5 / mnist5k",
              "command": "python scripts/bench_quant.py",
              "setup": {"checkpoint": os.path.relpath(args.checkpoint, ROOT),
                        "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                        "torch": torch.__version__,
                        "machine": platform.machine(), "cpu_threads": torch.get_num_threads()},
              "baseline": baseline, "rows": rows, "torch_ao": ao, "latency": latency,
              "table": table.splitlines(), "seconds": time.perf_counter() - started}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
