"""Shared fixtures: tiny seeded models and data, recipe files in tmp dirs, and the
corruption check every ``ctx`` stream kind's tests run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_DATA = {"dataset": "mnist5k", "batch_size": 128, "limit_train": 512}


def write_recipe(directory: Path, *, stages: list[dict[str, Any]], name: str = "tiny",
                 checkpoint: str | None = None, **top: Any) -> Path:
    """Write a recipe YAML into ``directory`` and return its path."""
    model: dict[str, Any] = {"arch": "lenet5", "kwargs": {"width": 0.25}}
    if checkpoint is not None:
        model["checkpoint"] = checkpoint
    # The tiny model is at chance on its val split, where the gates refuse to start: these
    # recipes test the machinery with them off (``tests/test_gates.py`` tests the gates, on a
    # model well above chance), unless a test gives its own ``guard``.
    doc = {"version": 1, "name": name, "seed": 0, "model": model, "data": dict(TINY_DATA),
           "stages": stages, "output": str(directory / "out"),
           "guard": {"enabled": False}, **top}
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run faster on one thread than fighting over two. ``OMP_NUM_THREADS``, when
    set, wins: the suite must pass at any thread count (``OMP_NUM_THREADS=2 make test``)."""
    import torch

    threads = torch.get_num_threads()
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 (width 0.25) trained for 2 epochs on 512 mnist5k digits."""
    from occ import api

    path = tmp_path_factory.mktemp("ckpt") / "lenet5_tiny.pt"
    api.train("lenet5", data="mnist5k", epochs=2, out=str(path), lr=0.05, seed=0,
              kwargs={"width": 0.25}, limit_train=512, batch_size=128, shift=0,
              weight_decay=5e-4)  # the pre-issue-19 settings: a short run learns more
    return path


@pytest.fixture(scope="session")
def test_split():
    """mnist5k's whole test split as ``(inputs, targets)`` tensors, in order."""
    import torch

    from occ.data import load_data
    from occ.recipe import DataSpec

    data = load_data(DataSpec(dataset="mnist5k"))
    xs, ys = zip(*data.loader("test", 256), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture
def recipe_factory(tmp_path: Path, tiny_checkpoint: Path):
    """``make(stages, **top)`` writes a tiny recipe using the tiny checkpoint."""

    def make(stages: list[dict[str, Any]], **top: Any) -> Path:
        return write_recipe(tmp_path, stages=stages, checkpoint=str(tiny_checkpoint), **top)

    return make


@pytest.fixture
def ctx_rejects_corruption():
    """``check(base, flat, rng, cuts=..., decode=...)``: truncations of the ``ctx`` stream
    ``base`` (of the flat array ``flat``; another codec's with its ``decode``) raise
    ValueError, and 400 copies with 1-3 bytes overwritten either raise ValueError or decode
    to ``flat``'s size and dtype (never anything else)."""
    import numpy as np

    from occ.coding import adaptive

    def check(base: bytes, flat: np.ndarray, rng: np.random.Generator,
              cuts: tuple[int, ...] = (), decode=adaptive.decode) -> None:
        for cut in cuts:
            with pytest.raises(ValueError):
                decode(base[:cut], {}, flat.dtype, flat.size)
        for _ in range(400):
            bad = bytearray(base)
            for _ in range(rng.integers(1, 4)):
                bad[rng.integers(len(bad))] = rng.integers(256)
            try:
                out = decode(bytes(bad), {}, flat.dtype, flat.size)
            except ValueError:
                continue
            assert out.size == flat.size and out.dtype == flat.dtype

    return check


FOLDER_MEAN, FOLDER_STD = [0.3, 0.3, 0.3], [0.25, 0.25, 0.25]


def write_shape_folder(root: Path, classes: list[str], per_class: int = 12, size: int = 8,
                       splits: tuple[str, ...] = ("train", "test"), mode: str = "RGB") -> None:
    """Tiny ImageFolder: noisy PNGs whose class sets which colour channel is bright.

    ``mode="L"`` saves them as grayscale PNGs (one channel: the classes differ in
    brightness, as the channels weigh differently in luminance)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 90, size=(size, size, 3))
                img[..., k % 3] += 120 + 40 * (k // 3)
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).convert(mode).save(
                    root / split / cls / f"{i}.png")


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-class ImageFolder, an occ checkpoint trained on it with mean 0.3 / std 0.25 (and
    the same weights as a plain state dict), and its entropy-coded artifact; images are
    resized to imagefolder's default 32 x 32."""
    import torch

    from occ import api
    from occ.artifact.checkpoint import load_checkpoint
    from occ.engine.baseline import train_baseline
    from occ.progress import NullProgress
    from occ.recipe import DataSpec

    base = tmp_path_factory.mktemp("folder")
    write_shape_folder(base / "data", ["circle", "square", "triangle"])
    spec = DataSpec(dataset="imagefolder", root=str(base / "data"),
                    mean=FOLDER_MEAN, std=FOLDER_STD, batch_size=16, val_size=6)
    ckpt = base / "ckpt.pt"
    train_baseline("lenet5", {"width": 0.25}, spec, epochs=3, lr=0.05, out=str(ckpt), seed=0,
                   device="cpu", progress=NullProgress())
    torch.save(load_checkpoint(ckpt).state_dict, base / "plain.pt")
    doc = {"version": 1, "name": "folder", "seed": 0,
           "model": {"arch": "lenet5", "kwargs": {"width": 0.25}, "checkpoint": str(ckpt)},
           "data": {"dataset": "imagefolder", "root": str(base / "data"),
                    "mean": FOLDER_MEAN, "std": FOLDER_STD, "batch_size": 16, "val_size": 6},
           "stages": [{"type": "entropy_code"}], "output": str(base / "out")}
    recipe = base / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(doc, sort_keys=False))
    artifact = Path(api.compress(recipe).artifact)
    return {"base": base, "data": base / "data", "checkpoint": ckpt,
            "plain": base / "plain.pt", "artifact": artifact}
