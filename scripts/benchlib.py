"""What the benchmarks share: the converged baselines and the three-seed recipe runner.

Baselines: ``runs/bench/<arch>.pt`` is ``occ train ARCH --data mnist5k`` with ``occ
train``'s own converged defaults (``occ.engine.train_settings.TRAIN_DEFAULTS``; ResNet-20 on
mnist5k padded to 32), seed 0, trained here when missing, so every script compares
against the same model whichever runs first.

Seeds: :func:`run_seeds` runs one recipe under several ``--seed`` values against that
baseline and scores every seed's artifact on the val split (what tuning may look at) and
on the test split (read once per seed for the reported figure), with the paired interval
and McNemar test of ``occ.stats`` against the baseline's own test predictions. Scripts
import this as ``benchlib`` (Python puts the script's own folder first on the path).
"""

from __future__ import annotations

import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occ import api, stats

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
PAD = {"resnet20": 32}
"""Archs trained on mnist5k zero-padded to this size (CIFAR ResNets expect 32x32)."""


def baseline(arch: str = "lenet5") -> Path:
    """``runs/bench/<arch>.pt``, trained here with ``occ train``'s defaults when missing."""
    path = ROOT / "runs" / "bench" / f"{arch}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"training the fp32 {arch} baseline (occ train defaults) -> {path}",
              file=sys.stderr)
        api.train(arch, data="mnist5k", out=str(path), seed=0, pad_to=PAD.get(arch))
    return path


def mnist5k_splits(pad_to: int | None):
    """mnist5k's splits as every benchmark reads them (seed 0; zero-padded to ``pad_to``)."""
    from occ.data import load_data
    from occ.recipe import DataSpec

    spec = DataSpec(dataset="mnist5k", **({"pad_to": pad_to} if pad_to else {}))
    return load_data(spec, seed=0)


def correct_on(model: torch.nn.Module, data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-image correctness, targets) of ``model`` on ``split`` of ``data``."""
    from occ.training import predict

    out, y = predict(model, data.loader(split, 256), torch.device("cpu"))
    return stats.correct(out.numpy(), y.numpy()), y.numpy()


def baseline_model(path: Path) -> torch.nn.Module:
    from occ.artifact.checkpoint import load_checkpoint, load_into
    from occ.models import build_model

    ckpt = load_checkpoint(str(path), trust=False)
    arch = ckpt.meta["arch"]
    model = build_model(arch, dict(ckpt.meta["kwargs"]))
    load_into(model, ckpt, where=str(path), arch=arch)
    return model.eval()


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the fp32 size reference."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def run_seeds(recipe: str | Path, arch: str, out_root: Path, *, seeds=SEEDS,
              metric: str = "bytes", target_ratio: float | None = None,
              max_loss: float | None = None) -> dict[str, Any]:
    """Run ``recipe`` once per seed against ``baseline(arch)``; the bench JSON's body.

    ``metric``: ``bytes`` (artifact against the fp32 ``torch.save`` state dict) or
    ``bitops`` (expected dense BitOps against the baseline's). The target is met when the
    mean ratio reaches ``target_ratio`` and the mean test loss is at most ``max_loss``.
    """
    from occ.engine.load import load

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ckpt = baseline(arch)
    data = mnist5k_splits(PAD.get(arch))
    base = baseline_model(ckpt)
    base_val, _ = correct_on(base, data, "val")
    base_test, _ = correct_on(base, data, "test")
    fp32_bytes = state_dict_bytes(base)
    runs, test_rows, ratios = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        out = out_root / f"seed{seed}"
        report = api.compress(str(recipe), checkpoint=str(ckpt), out=str(out), seed=seed)
        s = report.summary()
        model = load(report.artifact)
        val, _ = correct_on(model, data, "val")
        test, _ = correct_on(model, data, "test")
        ratio = (fp32_bytes / report.artifact_bytes if metric == "bytes"
                 else s["bitops_reduction"])
        ratios.append(ratio)
        test_rows.append(test)
        runs.append({
            "seed": seed, "ratio": ratio, "bytes": report.artifact_bytes,
            "bitops_reduction": s["bitops_reduction"],
            "size_reduction_vs_fp32_state_dict": fp32_bytes / report.artifact_bytes,
            "val_accuracy": 100 * float(val.mean()),
            "val_change": 100 * float(val.mean() - base_val.mean()),
            "test_accuracy": 100 * float(test.mean()),
            "test_change": 100 * float(test.mean() - base_test.mean()),
            "report_accuracy": s["accuracy"],
            "rows": report.rows(), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  seed {seed}: {ratio:.0f}x {metric}, val {runs[-1]['val_change']:+.2f} pt, "
              f"test {runs[-1]['test_change']:+.2f} pt, {runs[-1]['seconds']} s",
              file=sys.stderr)
    summary = stats.seed_summary(base_test, np.stack(test_rows), ratios)
    summary["val_change"] = stats.mean_std([r["val_change"] for r in runs])
    mean_loss = -summary["accuracy_change"]["mean"]
    met = None
    if target_ratio is not None and max_loss is not None:
        met = {"ratio": summary["ratio"]["mean"] >= target_ratio,
               "accuracy": mean_loss <= max_loss}
        met["both"] = met["ratio"] and met["accuracy"]
    return {
        "recipe": str(Path(recipe).resolve().relative_to(ROOT)) if Path(recipe).resolve()
        .is_relative_to(ROOT) else str(recipe),
        "recipe_text": Path(recipe).read_text(),
        "arch": arch, "metric": metric, "seeds": list(seeds),
        "baseline": {"checkpoint": str(ckpt.relative_to(ROOT)),
                     "command": f"occ train {arch} --data mnist5k"
                                + (f" --pad-to {PAD[arch]}" if arch in PAD else ""),
                     "val_accuracy": 100 * float(base_val.mean()),
                     "test_accuracy": 100 * float(base_test.mean()),
                     "fp32_state_dict_bytes": fp32_bytes},
        "targets": {"ratio": target_ratio, "max_mean_loss_pt": max_loss},
        "met": met, "summary": summary, "runs": runs,
        "splits": {"recipe settings": "chosen on val (val_change) only",
                   "exit thresholds, gates, quantizer calibration": "val",
                   "reported accuracy": "test, read once per seed after the run",
                   "interval": "paired bootstrap over the test images against the "
                               "baseline's test predictions (seeds pooled)"},
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
    }
