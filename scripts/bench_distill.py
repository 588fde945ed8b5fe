"""Benchmark: knowledge distillation of LeNet-5 on mnist5k into LeNet-5 at width 0.5 / 0.25.

The teacher is the shared LeNet-5 baseline in ``runs/bench/lenet5.pt`` (``benchlib.baseline``:
``occ train``'s converged defaults, trained here when missing; the published JSON predates
that and used an older 96.9 % one). Every student is trained by the ``distill`` stage itself
(so through ``occ.training.fit``) for the same epochs, optimiser (SGD), cosine schedule, seed,
initial weights and data order; only the loss (and, in ``kd-T4`` and ``scratch@0.05``,
the lr) differs:

- ``kd``: (1 - α)·CE + α·T²·KL with α 0.9, T 2, at the stage's default lr
  0.05 / ((1 - α) + α·T) = 0.0263;
- ``kd-T4``: the same at T 4 (default lr 0.0135), the temperature often quoted;
- ``scratch``: ``alpha: 0``, which makes the loss exactly cross-entropy (tests check it),
  at the same lr as ``kd``;
- ``scratch@0.05``: cross-entropy at 0.05, ``occ train``'s lr (the teacher's), which is
  better for plain training, so KD is also compared with a tuned scratch run.

Accuracy is top-1 on the fixed 1,000-image test split (one image = 0.1 pt; the binomial
standard error at 96 % is about 0.6 pt per run); agreement is the share of test images whose
top-1 matches the teacher's.

    .venv/bin/python scripts/bench_distill.py [--widths 0.5 0.25] [--epochs 10]
                                              [--seeds 0 1 2] [--threads N]

Prints a table and writes ``scripts/results/bench_distill.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import baseline

from occ import metrics
from occ.artifact.checkpoint import load_checkpoint, load_into
from occ.data import DataBundle, load_data
from occ.engine.context import ArchRef, RunContext
from occ.models import build_model
from occ.recipe import DataSpec
from occ.techniques.distill.config import DistillConfig, StudentSpec
from occ.techniques.distill.run import distill_
from occ.training import predict

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "bench_distill.json"
TEACHER = ROOT / "runs" / "bench" / "lenet5.pt"
ALPHA = 0.9
MODES: dict[str, dict[str, float]] = {  # mode -> the distill stage's temperature, alpha, lr
    "kd": {"temperature": 2.0, "alpha": ALPHA},  # the stage's defaults (lr 0.0263)
    "kd-T4": {"temperature": 4.0, "alpha": ALPHA},  # lr 0.0135
    "scratch": {"temperature": 2.0, "alpha": 0.0,
                "lr": DistillConfig(temperature=2.0, alpha=ALPHA).lr},
    "scratch@0.05": {"temperature": 2.0, "alpha": 0.0, "lr": 0.05},
}


def teacher_checkpoint() -> tuple[Path, bool]:
    """The LeNet-5 baseline (trained here, 15 epochs, when missing) and whether it was."""
    existed = TEACHER.exists()
    return baseline("lenet5"), not existed


def load_teacher(path: Path) -> tuple[torch.nn.Module, ArchRef]:
    """The checkpoint's model (eval mode) and its architecture reference."""
    ckpt = load_checkpoint(path)
    arch, kwargs = ckpt.meta["arch"], dict(ckpt.meta["kwargs"])
    model = build_model(arch, kwargs)
    load_into(model, ckpt, where=str(path), arch=arch)
    return model.eval(), ArchRef(arch, kwargs)


def describe(model: torch.nn.Module, ref: ArchRef, data: DataBundle) -> dict[str, Any]:
    """The teacher's params, MACs and test accuracy."""
    outputs, targets = predict(model, data.loader("test", 256), torch.device("cpu"))
    return {**ref.to_dict(), "params": sum(p.numel() for p in model.parameters()),
            "macs": sum(c.macs for c in metrics.layer_costs(model, data.input_shape)),
            "accuracy": metrics.accuracy(outputs, targets)}


def run_one(teacher: torch.nn.Module, ref: ArchRef, data: DataBundle, *, width: float,
            mode: str, epochs: int, seed: int) -> dict[str, Any]:
    """Train one student with the distill stage; its figures plus wall time."""
    ctx = RunContext(model=teacher, baseline=teacher, data=data, device=torch.device("cpu"),
                     seed=seed, out_dir=ROOT / "runs" / "bench", arch=ref)
    config = DistillConfig(student=StudentSpec(width=width), epochs=epochs, device="cpu",
                           **MODES[mode])
    t0 = time.perf_counter()
    d = distill_(ctx, config).details
    return {"width": width, "mode": mode, "alpha": config.alpha, "lr": config.lr,
            "temperature": config.temperature, "epochs": epochs, "seed": seed,
            "params": d["student"]["params"], "macs": d["student"]["macs"],
            "accuracy": d["student"]["accuracy"], "agreement": d["agreement"],
            "final_loss": d["loss"][-1], "seconds": time.perf_counter() - t0}


def summarise(rows: list[dict[str, Any]], teacher_acc: float) -> list[dict[str, Any]]:
    """One line per (width, mode): means (and range) over seeds."""
    out = []
    for key in dict.fromkeys((r["width"], r["mode"]) for r in rows):
        group = [r for r in rows if (r["width"], r["mode"]) == key]
        accs = [r["accuracy"] for r in group]
        mean = statistics.fmean(accs)
        out.append({"width": key[0], "mode": key[1], "lr": group[0]["lr"],
                    "seeds": len(group), "params": group[0]["params"],
                    "macs": group[0]["macs"], "accuracy": mean, "accuracy_min": min(accs),
                    "accuracy_max": max(accs), "delta_vs_teacher": mean - teacher_acc,
                    "agreement": statistics.fmean(r["agreement"] for r in group),
                    "seconds": statistics.fmean(r["seconds"] for r in group)})
    return out


def table(teacher: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table."""
    head = (f"{'model':<24}{'lr':>8}{'params':>9}{'MACs':>11}{'acc %':>8}{'Δ pt':>7}"
            f"{'agree %':>9}{'s/run':>7}")
    lines = [head, "-" * len(head),
             f"{'teacher lenet5 ×1':<24}{0.05:>8}{teacher['params']:>9,}{teacher['macs']:>11,}"
             f"{teacher['accuracy']:>8.2f}"]
    for s in summary:
        name = f"×{s['width']:g} {s['mode']}"
        lines.append(f"{name:<24}{s['lr']:>8.4g}"
                     f"{s['params']:>9,}{s['macs']:>11,}{s['accuracy']:>8.2f}"
                     f"{s['delta_vs_teacher']:>+7.2f}{s['agreement']:>9.2f}{s['seconds']:>7.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", type=Path, default=OUT, help="JSON to write")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster on a shared, busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    path, trained = teacher_checkpoint()
    teacher, ref = load_teacher(path)
    data = load_data(DataSpec(dataset="mnist5k"), seed=0)
    teacher_info = describe(teacher, ref, data)
    rows = []
    for width in args.widths:
        for mode in args.modes:
            for seed in args.seeds:
                row = run_one(teacher, ref, data, width=width, mode=mode, epochs=args.epochs,
                              seed=seed)
                rows.append(row)
                print(f"width {width:g} {mode:<13} seed {seed}: {row['accuracy']:.2f}% "
                      f"({row['seconds']:.0f} s)", flush=True)
    summary = summarise(rows, teacher_info["accuracy"])
    print()
    print(table(teacher_info, summary))
    doc = {"benchmark": "distill", "data": "mnist5k (3,500 train / 1,000 test)",
           "teacher": {**teacher_info, "checkpoint": str(path.relative_to(ROOT)),
                       "trained_here": trained},
           "settings": {"epochs": args.epochs, "optimizer": "sgd", "schedule": "cosine",
                        "batch_size": 128, "modes": MODES,
                        "seeds": args.seeds},
           "summary": summary, "runs": rows,
           "env": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.machine(), "python": platform.python_version()},
           "seconds": time.perf_counter() - started,
           "command": " ".join([".venv/bin/python scripts/bench_distill.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
