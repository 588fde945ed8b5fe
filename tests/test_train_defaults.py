"""occ train's converged defaults (issue 19): per-model settings, random shifts, the
recorded val curve, and the README results block generated from the result JSONs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from occ import api
from occ.engine.baseline import curve_summary, train_defaults
from occ.training import random_shift, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_per_model_and_dataset():
    lenet5 = train_defaults("lenet5", "mnist5k")
    assert (lenet5["epochs"], lenet5["batch_size"], lenet5["shift"]) == (30, 64, 2)
    assert train_defaults("lenet5", "digits")["shift"] == 0  # 8x8 digits: no shifts
    assert train_defaults("lenet5", "mnist5k-rotation")["shift"] == 0
    other = train_defaults("torchvision.resnet18", "imagefolder")
    assert (other["epochs"], other["batch_size"], other["shift"]) == (15, 128, 0)


def test_random_shift_translates_each_image_within_bounds():
    seed_everything(0)
    x = torch.zeros(16, 1, 12, 12)
    x[:, :, 5:7, 5:7] = 1.0  # a 2x2 blob in the middle, background 0 (replicated edges)
    y = random_shift(2)(x)
    assert y.shape == x.shape
    moved = 0
    for img in y:
        rows, cols = torch.nonzero(img[0], as_tuple=True)
        assert len(rows) == 4  # the blob is moved whole, never cut or duplicated
        dy, dx = int(rows.min()) - 5, int(cols.min()) - 5
        assert -2 <= dy <= 2 and -2 <= dx <= 2
        moved += (dy, dx) != (0, 0)
    assert moved > 8  # most of 16 images moved (25 equally likely shifts)
    assert torch.equal(random_shift(0)(x), x)


def test_curve_summary_slope():
    s = curve_summary([90.0, 95.0, 97.0, 97.0, 97.2, 97.4, 97.6, 97.8])
    assert s["val_last"] == [97.0, 97.2, 97.4, 97.6, 97.8]
    assert abs(s["val_slope_pt_per_epoch"] - 0.2) < 1e-9
    assert curve_summary([])["val_slope_pt_per_epoch"] is None


def test_train_records_the_val_curve_and_how_it_chose(tmp_path: Path):
    r = api.train("lenet300", data="mnist5k", epochs=2, out=str(tmp_path / "m.pt"),
                  limit_train=300)
    assert (r["batch_size"], r["shift"], r["weight_decay"]) == (64, 2, 2e-3)
    assert len(r["val_curve"]) == 2 and all(0 <= v <= 100 for v in r["val_curve"])
    assert r["val_last"] == r["val_curve"]
    assert r["selection"]["curve"] == "val" and "none selected" in r["selection"]["checkpoint"]


def test_readme_results_block_is_generated_from_the_jsons():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_table.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
