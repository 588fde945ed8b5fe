"""occ train's converged defaults (issue 19): per-model settings, random shifts, the
recorded val curve, and the README results block generated from the result JSONs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from occ import api
from occ.engine.baseline import curve_summary
from occ.engine.train_settings import train_defaults
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


AUGMENTED = '''
import random

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


class Augmented(Dataset):
    """A train split whose augmentation draws from torch's, NumPy's and Python's RNGs."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        noise = torch.rand_like(x) + float(np.random.rand()) + random.random()
        return x + 0.1 * noise, y


def make(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3)


def splits():
    return {"train": Augmented(make(40, 1)), "val": make(10, 2), "test": make(10, 3)}
'''


def _augmented_data(tmp_path: Path, monkeypatch) -> str:
    (tmp_path / "occ_aug_train.py").write_text(AUGMENTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "occ_aug_train:splits"


def test_the_input_probe_leaves_the_random_generators_as_they_were(tmp_path: Path,
                                                                   monkeypatch) -> None:
    import random

    import numpy as np

    from occ.data import load_data
    from occ.engine.probe import TRAIN_TERMS, check_model_fit
    from occ.recipe import DataSpec

    data = load_data(DataSpec(dataset=_augmented_data(tmp_path, monkeypatch)),
                     trust_code=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    seed_everything(3)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    check_model_fit(model, data, "cpu", where="--data", terms=TRAIN_TERMS, split="train")
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2]


def test_train_on_augmented_data_trains_as_if_there_were_no_probe(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """Same seed, same weights: the probe before training draws nothing the run sees."""
    import occ.engine.baseline as baseline
    from occ.artifact.checkpoint import load_checkpoint

    data = _augmented_data(tmp_path, monkeypatch)

    def train(out: str) -> dict[str, torch.Tensor]:
        api.train("lenet300", data=data, epochs=1, batch_size=8, out=out, device="cpu",
                  trust_code=True)
        return load_checkpoint(out, trust=False).state_dict

    probed = train(str(tmp_path / "probed.pt"))
    monkeypatch.setattr(baseline, "check_model_fit", lambda *args, **kwargs: None)
    unprobed = train(str(tmp_path / "unprobed.pt"))
    assert probed.keys() == unprobed.keys()
    assert all(torch.equal(probed[k], unprobed[k]) for k in probed)
