"""Bring your own model: a user's torchvision model, trained in the user's own loop with
non-default normalisation on an ImageFolder, compressed through the CLI and the Python API.

Done-when of issue 22: the compressed model's accuracy in the user's own pipeline equals
what occ reported (to 0.1 pt), and a wrong normalisation is warned about loudly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from occ.cli import app

ROOT = Path(__file__).parents[1]


def readme_recipe() -> dict:
    """The recipe of the README's "Your ImageFolder, your normalisation" (run as written)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Your ImageFolder, your normalisation"):]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return yaml.safe_load(match.group(1))


# The user's normalisation (the README's): neither occ's old 0.5 / 0.5 nor ImageNet's.
MEAN, STD = tuple(readme_recipe()["data"]["mean"]), tuple(readme_recipe()["data"]["std"])
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, SIZE = 3, 30, 10, 32


def write_imagefolder(root: Path, seed: int = 0) -> None:
    """3 classes of 40x36 noisy PNGs: class k is bright in channel k, plus a stripe."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for k in range(CLASSES):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, size=(36, 40, 3))
                img[..., k] += 110
                img[4 * k: 4 * k + 6] = 250  # a stripe at a class-dependent height
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")


def user_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(MEAN, STD)])


def user_split(root: Path, split: str):
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(root / split), transform=user_transform())


def user_accuracy(model: torch.nn.Module, root: Path) -> float:
    """Top-1 accuracy (percent) in the user's own pipeline: their transforms, their loop."""
    loader = torch.utils.data.DataLoader(user_split(root, "test"), batch_size=16)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The user's script: an ImageFolder, resnet18 trained in their own loop, a state dict."""
    from torchvision.models import resnet18

    base = tmp_path_factory.mktemp("byom")
    write_imagefolder(base / "data")
    torch.manual_seed(0)
    model = resnet18(num_classes=CLASSES)
    loader = torch.utils.data.DataLoader(user_split(base / "data", "train"), batch_size=16,
                                         shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.save(model.state_dict(), base / "r18.pt")
    return {"base": base, "model": model.eval(), "accuracy": user_accuracy(model, base / "data")}


STAGES = readme_recipe()["stages"]


def write_user_recipe(base: Path, **data: object) -> Path:
    """The README's recipe beside the data (its paths are relative to its own folder)."""
    doc = readme_recipe()
    doc["data"].update(data)
    path = base / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
def test_cli_compressed_accuracy_matches_the_users_pipeline(user_run: dict, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    base = user_run["base"]
    assert user_run["accuracy"] > 80  # the user's model works in the user's pipeline
    recipe = write_user_recipe(base)  # exactly as the README writes it
    monkeypatch.chdir(tmp_path)  # another folder: paths resolve against the recipe's
    result = CliRunner().invoke(app, ["compress", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    baseline = report["baseline"]["accuracy"]
    final = report["stages"][-1]["metrics"]["accuracy"]
    assert baseline == pytest.approx(user_run["accuracy"], abs=0.1)
    assert not report["plan"].get("warnings")  # right preprocessing: no warning

    import occ

    compressed = occ.load(str(base / "out" / "model.occ"))
    assert user_accuracy(compressed, base / "data") == pytest.approx(final, abs=0.1)

    # occ eval from yet another folder finds the data (absolute root) and its preprocessing.
    monkeypatch.chdir(base.parent)
    evaluated = CliRunner().invoke(app, ["eval", str(base / "out" / "model.occ"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    doc = json.loads(evaluated.stdout)
    assert doc["accuracy"] == pytest.approx(final, abs=0.1)
    assert doc["preprocess"]["mean"] == pytest.approx(list(MEAN))

    # The plain state dict evaluates with --arch (num_classes from its classifier).
    plain = CliRunner().invoke(app, ["eval", str(base / "r18.pt"), "--arch",
                                     "torchvision.resnet18", "--data", "imagefolder", "--root",
                                     str(base / "data"), "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["data"] == "imagefolder"


@pytest.mark.slow
def test_api_model_in_model_out_matches_the_users_pipeline(user_run: dict,
                                                           tmp_path: Path) -> None:
    import occ

    base = user_run["base"]
    model = user_run["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = occ.compress(model, {"stages": STAGES},
                          train_data=user_split(base / "data", "train"),
                          test_data=user_split(base / "data", "test"),
                          metric=lambda out, y: float((out.argmax(1) == y).float().mean()))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    assert result.report.baseline.accuracy == pytest.approx(user_run["accuracy"], abs=0.1)
    assert user_accuracy(result.model.cpu(), base / "data") == pytest.approx(result.accuracy,
                                                                            abs=0.1)
    assert result.metric == pytest.approx(result.accuracy / 100, abs=1e-3)
    path = result.save(tmp_path / "m.occ")
    assert user_accuracy(occ.load(str(path)), base / "data") == pytest.approx(result.accuracy,
                                                                             abs=0.1)


@pytest.mark.slow
def test_wrong_normalisation_stops_the_run_or_is_warned_loudly(user_run: dict, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    base = user_run["base"]
    # A checkpoint that records its own accuracy, as user scripts often do.
    state = torch.load(base / "r18.pt", weights_only=True)
    torch.save({"state_dict": state, "acc": user_run["accuracy"] / 100}, base / "r18acc.pt")
    recipe = write_user_recipe(base, mean=[0.9], std=[0.05])  # far from the user's
    doc = yaml.safe_load(recipe.read_text())
    doc["model"]["checkpoint"] = "r18acc.pt"
    doc["stages"] = [{"type": "prune", "method": "magnitude", "sparsity": 0.1}]
    doc["output"] = str(tmp_path / "out")
    recipe.write_text(yaml.safe_dump(doc))
    stopped = CliRunner().invoke(app, ["compress", str(recipe), "--json"])
    assert stopped.exit_code == 1, stopped.output  # at chance under it: stopped before work
    error = json.loads(stopped.stdout)["error"]["message"]
    assert "near chance" in error and "data.mean / data.std" in error
    assert not (tmp_path / "out" / "model.occ").exists()
    result = CliRunner().invoke(app, ["compress", str(recipe), "--json", "--no-guard"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["plan"]["warnings"]
    assert any("under this recipe's preprocessing (mean (0.9, 0.9, 0.9)" in w
               and "check data.mean / data.std" in w for w in warnings)
    # Logged as a warning too: the CLI's logging puts it on stderr before any stage runs.
    assert any(r.levelname == "WARNING" and "check data.mean / data.std" in r.getMessage()
               for r in caplog.records)
