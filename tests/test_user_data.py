"""Your data, your preprocessing: recipe-declared preprocessing, ImageFolder layouts,
dataset / transform callables behind --trust-code, val_size at validate time, and the
baseline warning's rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from occ.cli import app
from occ.data import load_data
from occ.engine.baseline_check import check_baseline, recorded_accuracy, recorded_warning
from occ.errors import DataError, RecipeError, StageError
from occ.quality import Quality
from occ.recipe import DataSpec, load_recipe
from occ.trust import TrustError


def write_pngs(folder: Path, counts: dict[str, int], size: int = 8) -> None:
    """Solid PNGs: pixel value 40 * class + image index in every channel."""
    from PIL import Image

    for k, (cls, n) in enumerate(sorted(counts.items())):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.zeros((size, size, 3), dtype=np.uint8)
            pixels[..., 0] = 40 * k + i  # red carries the class, green / blue stay 0
            Image.fromarray(pixels).save(folder / cls / f"{i}.png")


def test_declared_mean_std_size_and_channel_order_are_applied(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 4, "b": 4})
    write_pngs(tmp_path / "test", {"a": 1, "b": 1})
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path), val_size=2, image_size=16,
                    mean=[0.1, 0.2, 0.3], std=[0.5], channel_order="bgr")
    bundle = load_data(spec)
    x = bundle.test[1][0]  # class b, image 0: red = 40
    assert x.shape == (3, 16, 16) and bundle.input_shape == (3, 16, 16)
    # BGR: channel 0 is blue (0), channel 2 red (40 / 255); mean / std in that order.
    assert torch.allclose(x[0], torch.tensor((0 - 0.1) / 0.5))
    assert torch.allclose(x[2], torch.tensor((40 / 255 - 0.3) / 0.5))
    assert bundle.preprocess == {"mean": [0.1, 0.2, 0.3], "std": [0.5] * 3, "resize": 16,
                                 "crop": None, "pad_to": None, "channel_order": "bgr",
                                 "augment": [], "transform": None, "channels": None}


def test_imagefolder_channels_1_gives_grayscale_images(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 4, "b": 4})
    write_pngs(tmp_path / "test", {"a": 1, "b": 1})
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path), val_size=2, channels=1,
                    mean=[0.0], std=[1.0])
    bundle = load_data(spec)
    x = bundle.test[1][0]  # class b, image 0: red 40, green / blue 0 -> L = 0.299 * 40
    assert x.shape == (1, 32, 32) and bundle.input_shape == (1, 32, 32)
    assert torch.allclose(x, torch.full_like(x, round(0.299 * 40) / 255), atol=1 / 255)
    assert bundle.preprocess["channels"] == 1 and bundle.preprocess["mean"] == [0.0]
    default = load_data(DataSpec(dataset="imagefolder", root=str(tmp_path), channels=1))
    assert default.preprocess["mean"] == [0.449] and default.preprocess["std"] == [0.226]


@pytest.mark.parametrize(("data", "pattern"), [
    ({"channels": 2}, r"data\.channels: must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
    ({"channels": 1, "mean": [0.1, 0.2, 0.3]},
     r"data\.mean: must list 1 value for 1-channel images"),
    ({"dataset": "mnist5k", "root": None, "channels": 1},
     r"data\.channels: applies to imagefolder only"),
])
def test_channels_is_checked_at_validate(tmp_path: Path, data: dict, pattern: str) -> None:
    from occ.config import from_dict

    write_pngs(tmp_path / "train", {"a": 2})
    write_pngs(tmp_path / "test", {"a": 1})
    raw = {"dataset": "imagefolder", "root": str(tmp_path), **data}
    with pytest.raises(RecipeError, match=pattern):
        from_dict(DataSpec, {k: v for k, v in raw.items() if v is not None}, where="data")


def test_imagefolder_layout_is_checked_at_validate_time(tmp_path: Path) -> None:
    write_pngs(tmp_path / "data" / "train", {"a": 3, "b": 3})
    doc = {"version": 1, "name": "r", "model": {"arch": "lenet5"},
           "data": {"dataset": "imagefolder", "root": "data"}, "stages": [{"type": "prune"}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {path}: data.root: {tmp_path / 'data'} has neither a test/ nor a val/ folder "
        "(expected test/<class>/*.png or val/<class>/*.png beside train/)"]


def test_resize_crop_and_augment_touch_training_only(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 6, "b": 6}, size=20)
    write_pngs(tmp_path / "test", {"a": 1, "b": 1}, size=20)
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path), val_size=4, resize=12, crop=10,
                    augment=["hflip", "crop"])
    bundle = load_data(spec)
    assert bundle.input_shape == (3, 10, 10)
    # Val and test use the evaluation transform (deterministic); train is augmented.
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])
    names = [type(t).__name__ for t in bundle.train.dataset.transform.transforms]
    assert "RandomCrop" in names and "RandomHorizontalFlip" in names
    assert "CenterCrop" in [type(t).__name__ for t in bundle.test.transform.transforms]


def test_train_val_test_and_calib_folders(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 5, "b": 5})
    write_pngs(tmp_path / "val", {"a": 2, "b": 1})
    write_pngs(tmp_path / "test", {"a": 1, "b": 2})
    write_pngs(tmp_path / "calib", {"a": 3, "b": 3})
    bundle = load_data(DataSpec(dataset="imagefolder", root=str(tmp_path), calib_size=4))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 3, 3)
    assert len(bundle.split("calib")) == 4  # a fixed subset of calib/
    plain = load_data(DataSpec(dataset="imagefolder", root=str(tmp_path)))
    assert len(plain.split("calib")) == 6  # calib/ whole


def _folder_recipe(tmp_path: Path, splits: dict[str, dict[str, int]],
                   val_size: int) -> tuple[dict, Path]:
    """An ImageFolder under ``tmp_path/data`` (``splits``: images per class per split) and
    a recipe beside it reading it with ``val_size``: the recipe's document and path."""
    for split, counts in splits.items():
        write_pngs(tmp_path / "data" / split, counts)
    doc = {"version": 1, "name": "r", "model": {"arch": "lenet5"},
           "data": {"dataset": "imagefolder", "root": "data", "val_size": val_size},
           "stages": [{"type": "prune"}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    return doc, path


def test_val_size_is_checked_at_validate_time_and_auto_by_default(tmp_path: Path) -> None:
    doc, path = _folder_recipe(tmp_path, {"train": {"a": 45, "b": 45},
                                          "test": {"a": 1, "b": 1}}, 500)
    with pytest.raises(RecipeError, match=r"data\.val_size: 500 leaves nothing to train on: "
                                          r".*train has 90 images.*auto: 18"):
        load_recipe(path)
    del doc["data"]["val_size"]
    path.write_text(yaml.safe_dump(doc))
    recipe = load_recipe(path)
    assert recipe.data.root == str(tmp_path / "data")  # resolved against the recipe's folder
    assert len(load_data(recipe.data).val) == 18


def test_a_val_folder_missing_a_class_is_warned_about(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Every decision reads val: one blind to a class was used without a word (own-model
    audit F6)."""
    _, path = _folder_recipe(tmp_path, {"train": {"a": 5, "b": 5, "c": 5},
                                        "val": {"a": 2, "b": 1}, "test": {"a": 1, "c": 2}}, 4)
    with caplog.at_level("WARNING", logger="occ"):
        bundle = load_data(load_recipe(path).data)
    said = (f"data.root: {tmp_path / 'data' / 'val'} holds no image of class c: the quality "
            "gates, calibration and early-exit thresholds read a val split without it")
    assert len(bundle.val) == 3 and said in caplog.text
    assert bundle.warnings == [said]  # the run copies it into report.json's warnings


def test_a_val_size_that_a_val_folder_overrides_is_warned_about(tmp_path: Path) -> None:
    """With val/ and test/ beside train/, val/ is the val split: val_size reads nothing."""
    doc, path = _folder_recipe(tmp_path, {"train": {"a": 5, "b": 5}, "val": {"a": 2, "b": 1},
                                          "test": {"a": 1, "b": 2}}, 4)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    said = (f"warning: data.val_size 4 is not used: {tmp_path / 'data' / 'val'} is the val "
            "split (train/ is not carved)")
    assert said in result.stdout
    recipe = load_recipe(path)
    assert len(load_data(recipe.data).val) == 3  # val/, as the warning says
    del doc["data"]["val_size"]
    path.write_text(yaml.safe_dump(doc))
    assert "warning" not in CliRunner().invoke(app, ["validate", str(path)]).stdout


def _user_module(tmp_path: Path, name: str) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make(n):\n"
        "    g = torch.Generator().manual_seed(n)\n"
        "    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3)\n"
        "def splits():\n"
        "    return {'train': make(30), 'test': make(9)}\n"
        "def flip():\n"
        "    from torchvision.transforms import RandomHorizontalFlip\n"
        "    return RandomHorizontalFlip()\n")


def test_dataset_callable_needs_trust_and_is_found_beside_the_recipe(tmp_path: Path) -> None:
    _user_module(tmp_path, "occ_user_data_a")
    spec = DataSpec(dataset="occ_user_data_a.data:splits", val_size=6)
    with pytest.raises(TrustError, match=r"data\.dataset: refused: would import "
                                         r"'occ_user_data_a\.data'.*--trust-code"):
        load_data(spec)
    bundle = load_data(spec, trust_code=True, search=(str(tmp_path),))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 9)
    assert bundle.num_classes == 3 and bundle.input_shape == (1, 8, 8)


def test_missing_user_module_says_where_it_looked(tmp_path: Path) -> None:
    spec = DataSpec(dataset="occ_no_such_pkg.data:splits")
    with pytest.raises(RecipeError, match=r"cannot import 'occ_no_such_pkg\.data'.*looked on "
                                          r"sys\.path and in .*PYTHONPATH"):
        load_data(spec, trust_code=True)


def test_transform_callable_needs_trust(tmp_path: Path) -> None:
    _user_module(tmp_path, "occ_user_data_b")
    write_pngs(tmp_path / "img" / "train", {"a": 4, "b": 4})
    write_pngs(tmp_path / "img" / "test", {"a": 1, "b": 1})
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path / "img"), val_size=2,
                    transform="occ_user_data_b.data:flip")
    with pytest.raises(TrustError, match=r"data\.transform: refused: .*--trust-code"):
        load_data(spec)
    bundle = load_data(spec, trust_code=True, search=(str(tmp_path),))
    first = bundle.train.dataset.transform.transforms[0]
    assert type(first).__name__ == "RandomHorizontalFlip"


@pytest.mark.parametrize(("field", "value", "pattern"), [
    ("augment", ["hflpi"], r"data\.augment: unknown augmentation 'hflpi' \(did you mean "
                           r"'hflip'\?\)"),
    ("std", [0.2, 0.0, 0.2], r"data\.std: must be > 0"),
    ("mean", [0.1, 0.2], r"data\.mean: must list 1 or 3 values"),
    ("transform", "not a ref", r"data\.transform: must be a pkg\.module:callable"),
])
def test_bad_preprocessing_is_rejected_at_validate(field: str, value: object,
                                                   pattern: str) -> None:
    from occ.config import from_dict

    with pytest.raises(RecipeError, match=pattern):
        from_dict(DataSpec, {"dataset": "mnist5k", field: value}, where="data")


def test_embedded_data_takes_mean_std_but_not_resizing() -> None:
    bundle = load_data(DataSpec(mean=[0.5], std=[0.5], limit_train=10))
    assert bundle.preprocess["mean"] == [0.5]
    with pytest.raises(DataError, match=r"data\.augment: is not supported for mnist5k"):
        load_data(DataSpec(augment=["hflip"]))


PRE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": 32}


@pytest.mark.parametrize(("acc", "recorded", "warns"), [
    (90.0, 100.0, True),    # more than 5 points below the recorded figure
    (96.0, 100.0, False),
    (40.0, None, False),    # nothing recorded: nothing to compare with
])
def test_recorded_accuracy_warning(acc: float, recorded: float | None, warns: bool) -> None:
    message = recorded_warning(acc, recorded=recorded, preprocess=PRE)
    assert (message is not None) == warns
    if warns:
        assert f"baseline accuracy {acc:.2f}% on the test split under this recipe's " \
               "preprocessing (mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), size 32)" in message
        assert f"recorded {recorded:.2f}%" in message and "check data.mean / data.std" in message


@pytest.mark.parametrize("classes", [2, 3, 10, 100, 1000])
@pytest.mark.parametrize("above", [-0.01, 0.0, 0.01])
def test_a_model_the_gates_refuse_is_warned_about_with_them_off(classes: int,
                                                                above: float) -> None:
    """One "near chance": whatever the number of classes, the accuracy the gates refuse
    (exit 1) is exactly the one ``--no-guard`` warns about, in the same words."""
    q = Quality(accuracy=Quality(classes=classes).near_chance + above, classes=classes)
    warning = check_baseline(q, gates_on=False, where="base.pt", preprocess=PRE)
    if above > 0:
        assert warning is None
        assert check_baseline(q, gates_on=True, where="base.pt", preprocess=PRE) is None
        return
    with pytest.raises(StageError) as refused:
        check_baseline(q, gates_on=True, where="base.pt", preprocess=PRE)
    error = str(refused.value)
    assert warning is not None and "\n" not in error and "\n" not in warning
    said = error.split("; nothing was written")[0]
    assert said.startswith("base.pt: the input model scores ") and warning.startswith(said)
    assert f"on the val split, near chance ({100 / classes:.1f}% for {classes} classes" in said
    assert "check data.mean / data.std / data.image_size against the pipeline the model was " \
           "trained with, and the checkpoint" in said
    assert "--no-guard compresses it anyway" in error
    assert warning.endswith("the gates are off: it is compressed anyway")


def test_a_regressor_no_better_than_a_constant_is_refused_or_warned_alike() -> None:
    q = Quality(mae=9.5, constant_mae=10.0)  # within 10 % of predicting the median
    with pytest.raises(StageError, match=r"scores MAE 9\.5 on the val split, about as good "
                                         r"as predicting a constant \(MAE 10\)"):
        check_baseline(q, gates_on=True, where="reg.pt", preprocess=None)
    warning = check_baseline(q, gates_on=False, where="reg.pt", preprocess=None)
    assert warning is not None and warning.startswith("reg.pt: the input model scores MAE 9.5")
    assert check_baseline(Quality(mae=8.9, constant_mae=10.0), gates_on=False, where=None,
                          preprocess=None) is None


def test_without_a_val_split_the_warning_reads_the_test_split_and_says_why() -> None:
    q = Quality(accuracy=12.0, classes=10, split="test")
    warning = check_baseline(q, gates_on=False, where=None, preprocess=None)
    assert warning is not None and warning.startswith("the input model scores 12.00% on the "
                                                      "test split, near chance")
    assert "there is no val split, so the gates are off" in warning


def test_recorded_accuracy_of_occ_and_user_checkpoints() -> None:
    assert recorded_accuracy({"metrics": {"accuracy": 97.5}}) == 97.5
    assert recorded_accuracy({"acc": 0.93}) == pytest.approx(93.0)
    assert recorded_accuracy({"best_acc": torch.tensor(88.0)}) == 88.0
    assert recorded_accuracy({"epoch": 3}) is None


def test_dataparallel_prefix_is_stripped(tmp_path: Path) -> None:
    from occ.artifact.checkpoint import load_checkpoint

    path = tmp_path / "dp.pt"
    torch.save({"model_state_dict": {"module.fc.weight": torch.ones(2, 2),
                                     "module.fc.bias": torch.zeros(2)}, "acc": 0.9}, path)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == {"fc.weight", "fc.bias"}
    assert recorded_accuracy(ckpt.meta) == pytest.approx(90.0)


def test_eval_plain_state_dict_needs_arch(tmp_path: Path) -> None:
    from occ.models import build_model

    model = build_model("lenet5", {"width": 0.25})
    path = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    bare = CliRunner().invoke(app, ["eval", str(path), "--json"])
    assert bare.exit_code == 2
    assert "pass --arch" in json.loads(bare.stdout)["error"]["message"]
    ok = CliRunner().invoke(app, ["eval", str(path), "--arch", "lenet5", "--kwargs",
                                  '{"width": 0.25}', "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["params"] == sum(p.numel() for p in model.parameters())
    bad = CliRunner().invoke(app, ["eval", str(path), "--arch", "lenet5", "--kwargs", "[1"])
    assert bad.exit_code == 2 and "--kwargs: value is not valid JSON" in bad.stderr


def test_compress_model_with_typed_configs_loaders_and_a_custom_loss(tmp_path: Path) -> None:
    import occ
    from occ.techniques.prune.config import PruneConfig
    from occ.techniques.quantize.config import QuantizeConfig

    torch.manual_seed(0)
    x = torch.randn(120, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()  # a learnable two-class task
    data = torch.utils.data.TensorDataset(x, y)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):  # a trained model, as users hand in (at chance the gates refuse it)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    calls = []

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(len(target))
        return torch.nn.functional.cross_entropy(out, target)

    import random

    import numpy as np

    random.seed(123)  # the caller's own generators, drawn from after the call
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (random.Random(123).random(), np.random.RandomState(123).rand(),
                float(torch.rand(1, generator=torch.Generator().manual_seed(123))))
    # written against the built-in order: it ran as written, while the report said
    # "reordered" (the CLI reordered the same stages)
    result = occ.compress(model, [QuantizeConfig(weight_bits=8, act_bits=8, mode="ptq"),
                                  PruneConfig(sparsity=0.5, epochs=1)],
                          train_data=torch.utils.data.DataLoader(data, batch_size=32),
                          test_data=data, loss=loss, out=str(tmp_path / "out"))
    assert calls and all(n <= 32 for n in calls)  # the user's loss, the loader's batch size
    # occ seeds the global generators for its own run and puts the caller's back
    assert (random.random(), np.random.rand(), float(torch.rand(1))) == expected
    assert [s.type for s in result.report.stages] == ["prune", "quantize"]
    assert result.report.plan["reordered"] and result.report.plan["order"][0].startswith("prune")
    assert (tmp_path / "out" / "model.occ").is_file()
    assert isinstance(result, occ.CompressionResult) and result.model is not model
    with pytest.raises(RecipeError, match="applies only when a model is passed in"):
        occ.compress("recipe.yaml", train_data=data)


def test_compress_model_with_train_data_alone_measures_on_the_carved_val_data_and_says_so(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """The docstring's defaults: val carved out of train_data, test = val (it was "data.test:
    no test split given"); the figures are then not held out, which is said."""
    import occ

    torch.manual_seed(0)
    x = torch.randn(120, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(50):  # trained: at chance the gates would refuse it
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with caplog.at_level("WARNING", logger="occ"):
        result = occ.compress(model, {"stages": [{"type": "quantize", "weight_bits": 8,
                                                  "mode": "ptq"}], "data": {"val_size": 30}},
                              train_data=torch.utils.data.TensorDataset(x, y))
    said = ("no test_data: the figures are measured on the val data (carved out of "
            "train_data), which calibration and thresholds also use; pass test_data= for "
            "held-out figures")
    assert said in caplog.text and said in result.report.plan["warnings"]
    assert result.accuracy > 50.0
    from occ.errors import DataError

    with pytest.raises(RecipeError, match=r"no data to compress on: pass train_data="):
        # it fine-tuned and measured the model on the recipes' default dataset (mnist5k)
        occ.compress(model, {"stages": [{"type": "quantize", "weight_bits": 8, "mode": "ptq"}]})
    from occ.recipe import load_recipe

    loaded = tmp_path / "no_data.yaml"  # the same, as a Recipe object from a file
    loaded.write_text("version: 1\nmodel: {arch: lenet5}\n"
                      "stages: [{type: quantize, weight_bits: 8, mode: ptq}]\n")
    with pytest.raises(RecipeError, match=r"no data to compress on: pass train_data="):
        occ.compress(model, load_recipe(str(loaded)))
    with pytest.raises(DataError, match=r"data\.test: no test data given and no val data to "
                                        r"measure on instead \(val_size 0\)"):
        occ.compress(model, {"stages": [{"type": "quantize", "weight_bits": 8, "mode": "ptq"}],
                             "data": {"val_size": 0}},
                     train_data=torch.utils.data.TensorDataset(x, y))


def test_data_passed_in_that_does_not_fit_is_refused_before_any_work() -> None:
    """The Python API ran without the CLI's probe: raw RuntimeError / KeyError / TypeError
    from deep in the run. Now a DataError naming the split, before any stage."""
    import occ

    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 2, (40,))
    good = torch.utils.data.TensorDataset(x, y)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    stages = {"stages": [{"type": "quantize", "weight_bits": 8, "mode": "ptq"}]}
    cases = [
        (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 2)), good,
         r"compress\(test_data\): the model cannot take the data's inputs of 1×8×8"),
        (model, torch.utils.data.TensorDataset(x, torch.rand(40)),
         r"data\.train: train samples have float targets \(regression\), but the test"),
        (model, [{"x": x[i], "y": y[i]} for i in range(40)],
         r"data\.train: train samples must be \(image tensor \(C, H, W\), target\) pairs, "
         r"got dict"),
    ]
    for net, train, message in cases:
        with pytest.raises(DataError, match=message):
            occ.compress(net, stages, train_data=train, test_data=good)


def test_an_artifact_its_reference_cannot_rebuild_is_said_before_the_run_and_loads_on_a_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        ) -> None:
    """A model of the script's own making (an ``nn.Sequential``, a class whose kwargs occ
    cannot see) is recorded as a reference that would not rebuild it: occ says so before
    the work, in the report too, and ``occ.load(path, model=...)`` reads the artifact; with
    ``arch=`` / ``kwargs=`` that build it, nothing is said and ``occ.load`` needs no model."""
    import occ
    from occ.engine.model_api import rebuild_problem

    pkg = tmp_path / "occ_user_net_r"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "def build(hidden=16):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(hidden, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from occ_user_net_r import build

    torch.manual_seed(0)
    x = torch.randn(120, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    model = build(hidden=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    said = rebuild_problem(model, "torch.nn.modules.container:Sequential", {})
    assert said is not None and "has no tensor '1.bias'" in said and "model=" in said
    wrong = rebuild_problem(model, "occ_user_net_r:build", {})  # hidden=16 by default
    assert wrong is not None and "gives 1.bias the shape (16,), not (8,)" in wrong
    assert rebuild_problem(model, "occ_user_net_r:build", {"hidden": 8}) is None
    assert "running script" in rebuild_problem(model, "__main__:Net", {})
    # a module the caller never imported is not imported to check it (without trust_code)
    (tmp_path / "occ_user_net_side.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_suffix('.ran').write_text('x')\n"
        "def build():\n    raise AssertionError('called')\n")
    assert rebuild_problem(model, "occ_user_net_side:build", {}) is None
    assert not (tmp_path / "occ_user_net_side.ran").exists()
    import sys

    assert "occ_user_net_side" not in sys.modules
    # a reference a recipe names is data: never called without trust_code, even when its
    # module is imported in every process (os)
    marker = tmp_path / "ran-from-a-recipe"
    assert rebuild_problem(model, "os:system", {"command": f"touch {marker}"},
                           callers=False) is None
    assert not marker.exists()
    from occ.models import build_model

    zoo = build_model("lenet300", {"width": 0.25})  # a recipe's model: is what is recorded
    assert rebuild_problem(zoo, "lenet300", {"width": 0.25}) is None
    assert "builds another model" in rebuild_problem(zoo, "lenet300", {})

    stages = [{"type": "quantize", "weight_bits": 8, "act_bits": 8, "mode": "ptq"}]
    named = {"model": {"arch": "os:system", "kwargs": {"command": f"touch {marker}"}},
             "stages": stages, "guard": {"enabled": False}}
    occ.compress(model, named, train_data=data, test_data=data)  # the recipe names code
    assert not marker.exists()
    with caplog.at_level("WARNING", logger="occ"):
        result = occ.compress(model, {"stages": stages}, train_data=data, test_data=data)
    assert any("which builds another model" in r.getMessage() for r in caplog.records)
    assert any("builds another model" in w for w in result.report.plan["warnings"])
    path = result.save(tmp_path / "net.occ")
    with pytest.raises(Exception, match="Sequential"):
        occ.load(str(path), trust_code=True)  # the recorded reference: an empty Sequential
    loaded = occ.load(str(path), model=build(hidden=8))
    assert torch.equal(loaded(x), result.model.cpu()(x))  # the same model, no import
    with pytest.raises(Exception, match="the model= given is not the architecture"):
        occ.load(str(path), model=build(hidden=4))
    with pytest.raises(TypeError, match="takes a torch.nn.Module"):
        occ.load(str(path), model="build")

    caplog.clear()
    with caplog.at_level("WARNING", logger="occ"):
        named = occ.compress(model, {"stages": stages}, train_data=data, test_data=data,
                             arch="occ_user_net_r:build", kwargs={"hidden": 8})
    assert not any("builds another model" in r.getMessage() for r in caplog.records)
    again = occ.load(str(named.save(tmp_path / "named.occ")), trust_code=True)
    assert torch.equal(again(x), named.model.cpu()(x))


def test_user_model_in_the_working_directory_imports_without_pythonpath(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.models import build_model

    pkg = tmp_path / "occ_user_net_c"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    monkeypatch.chdir(tmp_path)  # the console script does not put the cwd on sys.path
    assert isinstance(build_model("occ_user_net_c.nets:build", allow_callables=True),
                      torch.nn.Linear)


def _copy_folder(src: Path, dst: Path, rename: dict[str, str]) -> Path:
    """A copy of ImageFolder ``src`` with class folders renamed (``old -> new``)."""
    import shutil

    for split in ("train", "test"):
        for cls in (src / split).iterdir():
            shutil.copytree(cls, dst / split / rename.get(cls.name, cls.name))
    return dst


def test_class_names_are_recorded_and_data_that_renumbers_them_is_refused(
        folder_run: dict, tmp_path: Path) -> None:
    from occ.artifact.checkpoint import load_checkpoint
    from occ.artifact.container import read_artifact, write_artifact

    names = ["circle", "square", "triangle"]
    assert load_checkpoint(folder_run["checkpoint"]).meta["classes"] == names
    inspected = CliRunner().invoke(app, ["inspect", str(folder_run["artifact"]), "--json"])
    assert json.loads(inspected.stdout)["header"]["data"]["classes"] == names
    # "circle" renamed "zircle": same count, but sorting makes it index 2, not 0
    moved = _copy_folder(folder_run["data"], tmp_path / "moved", {"circle": "zircle"})
    for path in (folder_run["artifact"], folder_run["checkpoint"]):
        res = CliRunner().invoke(app, ["eval", str(path), "--root", str(moved)])
        assert res.exit_code == 2, res.output
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert "circle" in res.stderr and "zircle" in res.stderr
    # An artifact from before names were recorded: unknown, so not checked.
    artifact = read_artifact(folder_run["artifact"])
    header = json.loads(json.dumps(artifact.header))
    del header["data"]["classes"]
    old = tmp_path / "old.occ"
    write_artifact(old, header, artifact.tensors)
    res = CliRunner().invoke(app, ["eval", str(old), "--root", str(moved), "--json"])
    assert res.exit_code == 0, res.output


def test_a_model_whose_outputs_are_not_the_data_classes_is_refused(
        folder_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import FOLDER_MEAN, FOLDER_STD, write_shape_folder

    four = tmp_path / "four"
    write_shape_folder(four, ["a", "b", "c", "d"], per_class=4)
    res = CliRunner().invoke(app, ["eval", str(folder_run["plain"]), "--arch", "lenet5",
                                   "--kwargs", '{"width": 0.25, "in_channels": 3, '
                                   '"input_hw": 32, "num_classes": 3}', "--data",
                                   "imagefolder", "--root", str(four)])
    assert res.exit_code == 2, res.output
    assert "3 outputs" in res.stderr and "4 classes" in res.stderr
    assert "num_classes" in res.stderr and res.stderr.count("\n") == 1
    # compress: a user callable that ignores the data's class count, refused before work
    (tmp_path / "threenet.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))\n")
    import torch

    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
               .state_dict(), tmp_path / "three.pt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "version": 1, "name": "three", "model": {"arch": "threenet:build",
                                                 "checkpoint": "three.pt"},
        "data": {"dataset": "imagefolder", "root": str(four), "mean": FOLDER_MEAN,
                 "std": FOLDER_STD, "val_size": 4},
        "stages": [{"type": "entropy_code"}], "output": str(tmp_path / "out")}))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["compress", str(recipe), "--trust-code"])
    assert res.exit_code == 2, res.output
    assert "3 outputs" in res.stderr and "4 classes" in res.stderr
    assert "model.kwargs.num_classes" in res.stderr and "near chance" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_eval_of_a_plain_state_dict_takes_mean_and_std(folder_run: dict) -> None:
    args = ["eval", str(folder_run["plain"]), "--arch", "lenet5", "--kwargs",
            '{"width": 0.25, "in_channels": 3, "input_hw": 32, "num_classes": 3}',
            "--data", "imagefolder", "--root", str(folder_run["data"]), "--json"]
    default = json.loads(CliRunner().invoke(app, args).stdout)
    assert default["preprocess_source"] == "default"
    assert default["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    given = CliRunner().invoke(app, [*args, "--mean", "0.3", "--std", "0.25,0.25,0.25"])
    assert given.exit_code == 0, given.output
    doc = json.loads(given.stdout)
    assert doc["preprocess_source"] == "options"
    assert doc["preprocess"]["mean"] == [0.3] * 3
    assert doc["preprocess"]["std"] == [0.25] * 3
    # the same figure as the occ checkpoint, which records that normalisation
    recorded = json.loads(CliRunner().invoke(
        app, ["eval", str(folder_run["checkpoint"]), "--json"]).stdout)
    assert recorded["preprocess_source"] == "recorded"
    assert doc["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    table = CliRunner().invoke(app, args[:-1] + ["--mean", "0.3", "--std", "0.25"])
    assert "from --mean / --std" in table.output
    for flag, value, expected in (("--std", "0", "must be > 0"), ("--mean", "0.1,0.2",
                                  "must list 1 or 3 values (one per channel"),
                                  ("--mean", "x", "numbers"), ("--std", "nan", "finite")):
        bad = CliRunner().invoke(app, [*args[:-1], flag, value])
        assert bad.exit_code == 2 and f"{flag}: " in bad.stderr and expected in bad.stderr
        assert bad.stderr.count("\n") == 1


def test_train_channels_1_trains_a_grayscale_baseline_on_an_imagefolder(tmp_path: Path) -> None:
    from occ.artifact.checkpoint import load_checkpoint

    write_pngs(tmp_path / "data" / "train", {"a": 4, "b": 4})
    write_pngs(tmp_path / "data" / "test", {"a": 2, "b": 2})
    out = tmp_path / "gray.pt"
    result = CliRunner().invoke(app, ["train", "lenet5", "--data", "imagefolder", "--root",
                                      str(tmp_path / "data"), "--channels", "1", "--epochs",
                                      "1", "--val-size", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    meta = load_checkpoint(out).meta
    assert meta["data"]["channels"] == 1 and meta["kwargs"]["in_channels"] == 1
    bad = CliRunner().invoke(app, ["train", "lenet5", "--data", "mnist5k", "--channels", "1",
                                   "--out", str(tmp_path / "x.pt")])
    assert bad.exit_code == 2 and "channels: applies to imagefolder only" in bad.stderr


def test_a_checkpoint_for_other_channels_than_the_data_says_how_to_read_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``occ train lenet5 --channels 1`` then a recipe that reads the folder as RGB (and an
    RGB checkpoint with ``data.channels: 1``): the state dict does not fit the first conv,
    and the one line says that it is the input channels and which setting fixes it."""
    write_pngs(tmp_path / "data" / "train", {"a": 4, "b": 4})
    write_pngs(tmp_path / "data" / "test", {"a": 2, "b": 2})
    monkeypatch.chdir(tmp_path)
    for name, channels in (("gray", ["--channels", "1"]), ("rgb", [])):
        trained = CliRunner().invoke(app, ["train", "lenet5", "--data", "imagefolder", "--root",
                                           "data", *channels, "--epochs", "1", "--val-size",
                                           "2", "--out", f"{name}.pt", "--json"])
        assert trained.exit_code == 0, trained.output
    for name, data, fix in (("gray", {}, "data.channels: 1"),
                            ("rgb", {"channels": 1}, "data.channels: 3")):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({
            "version": 1, "name": name, "model": {"arch": "lenet5", "checkpoint": f"{name}.pt"},
            "data": {"dataset": "imagefolder", "root": "data", "val_size": 2, **data},
            "stages": [{"type": "entropy_code"}], "output": f"out-{name}"}))
        res = CliRunner().invoke(app, ["compress", str(recipe)])
        assert res.exit_code == 2, res.output
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.output
        ckpt_channels = 1 if name == "gray" else 3
        assert (f"the checkpoint's first layer takes {ckpt_channels}-channel images, the model "
                f"was built for {4 - ckpt_channels}: set {fix} ") in res.stderr, res.stderr
        assert not (tmp_path / f"out-{name}").exists()
    # eval builds a plain state dict from --kwargs: that is what to change there
    torch.save(torch.load("gray.pt")["state_dict"], "gray_plain.pt")
    res = CliRunner().invoke(app, ["eval", "gray_plain.pt", "--arch", "lenet5", "--kwargs",
                                   '{"in_channels": 3, "num_classes": 2, "input_hw": 32}',
                                   "--data", "imagefolder", "--root", "data"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert "takes 1-channel images, the model was built for 3: build the model for 1-channel " \
           "images (--kwargs '{\"in_channels\": 1}')" in res.stderr, res.stderr
    assert "data.channels" not in res.stderr


@pytest.mark.parametrize(("values", "message"), [
    ([0.1, 0.2], "must list 1 or 3 values (one per channel, or one for all), got [0.1, 0.2]"),
    ([0.1, 0.2, 0.3], "must list 1 value for 1-channel images, got [0.1, 0.2, 0.3]"),
    ([0.1, 0.0], "must list 1 or 3 values"),  # the count is checked first
    ([float("nan")], "must be finite numbers, got [nan]"),
])
def test_mean_and_std_get_the_same_check_from_a_recipe_and_from_eval_options(
        tiny_checkpoint: Path, values: list[float], message: str) -> None:
    """One owner (``occ.data.preprocess.normalisation_problem``): ``data.mean`` at validate
    or at load (where mnist5k's one channel is known) and ``occ eval --mean`` say the same."""
    from occ.config import from_dict

    text = ",".join(str(v) for v in values)
    result = CliRunner().invoke(app, ["eval", str(tiny_checkpoint), "--mean", text])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"--mean: {message}" in result.stderr, result.stderr
    with pytest.raises((RecipeError, DataError)) as caught:
        spec = from_dict(DataSpec, {"dataset": "mnist5k", "mean": values}, where="data")
        load_data(spec)  # passes validate when 3 values could fit (channels unknown there)
    if values[0] != values[0]:  # nan: the recipe's type check names the item first
        assert str(caught.value) == "data.mean[0]: must be a finite number, got nan"
    else:
        assert str(caught.value).startswith(f"data.mean: {message.split(', got')[0]}")
    if values == [0.1, 0.0]:
        std = CliRunner().invoke(app, ["eval", str(tiny_checkpoint), "--std", "0.1,0"])
        assert "--std: must list 1 or 3 values" in std.stderr
        alone = CliRunner().invoke(app, ["eval", str(tiny_checkpoint), "--std", "0"])
        assert "--std: must be > 0, got [0.0]" in alone.stderr


def test_torch_compile_prefix_is_stripped_and_an_unknown_layout_lists_its_keys(
        tmp_path: Path) -> None:
    from occ.artifact.checkpoint import load_checkpoint
    from occ.errors import CheckpointError

    state = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}
    path = tmp_path / "compiled.pt"  # torch.compile, and torch.compile of a DDP model
    for prefix in ("_orig_mod.", "module._orig_mod.", "_orig_mod.module."):
        torch.save({f"{prefix}{k}": v for k, v in state.items()}, path)
        assert set(load_checkpoint(path).state_dict) == set(state)
    # pytorch-cifar's layout: {'net': net.state_dict(), 'acc': acc, 'epoch': epoch}
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "acc": 93.1,
                "epoch": 199}, path)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == set(state) and recorded_accuracy(ckpt.meta) == 93.1
    torch.save({"weights": state, "epoch": 3, "opt": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "not a state dict: its top-level keys are 'weights' (2 tensors), 'epoch' (int), " \
           "'opt' (mapping of 1)" in message
    assert "under 'state_dict', 'model_state_dict', 'model' or 'net'" in message
    assert f"torch.save(torch.load('{path}')['weights'], 'model.pt')" in message
    torch.save({f"key{i}": i for i in range(20)}, path)  # bounded: 8 keys, then a count
    with pytest.raises(CheckpointError, match=r"'key7' \(int\) and 12 more; occ reads"):
        load_checkpoint(path)


def test_a_val_slice_of_train_far_above_test_is_said_to_look_seen() -> None:
    """A model trained elsewhere on the whole train split: val 100 % against 94.7 % test
    (a new-user audit's MobileNetV3); sampling noise and given val splits say nothing."""
    from occ.engine.baseline_check import seen_val_warning

    said = seen_val_warning(100.0, 94.71, val_n=280, test_n=397, from_train=True)
    assert said is not None and "280 images held out of the train split" in said
    assert "a val/ folder" in said and "occ train" in said
    assert seen_val_warning(100.0, 94.71, val_n=280, test_n=397, from_train=False) is None
    assert seen_val_warning(99.0, 98.5, val_n=500, test_n=1000, from_train=True) is None
    assert seen_val_warning(100.0, 97.5, val_n=20, test_n=40, from_train=True) is None  # noise
    assert seen_val_warning(None, 97.5, val_n=0, test_n=40, from_train=True) is None


def test_a_checkpoint_without_batchnorm_counters_loads_and_a_wrapper_prefix_is_named(
        tmp_path: Path) -> None:
    """Older or converted checkpoints lack num_batches_tracked, which torch's strict load
    fills and occ refused as "20 missing keys"; a LightningModule's 'model.' prefix got a
    generic mismatch (own-model audit F8, F10)."""
    from occ.artifact.checkpoint import load_checkpoint, load_into
    from occ.errors import CheckpointError
    from occ.models import build_model

    model = build_model("resnet20", {"width": 0.25})
    state = {k: v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pt"
    torch.save(state, path)
    fresh = build_model("resnet20", {"width": 0.25})
    load_into(fresh, load_checkpoint(path), where=str(path), arch="resnet20")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    torch.save({f"model.{k}": v for k, v in state.items()}, path)  # counters missing too
    with pytest.raises(CheckpointError) as info:
        load_into(fresh, load_checkpoint(path), where=str(path), arch="resnet20")
    assert "every key of the checkpoint starts with 'model.' (a wrapper's attribute, e.g. a " \
           "LightningModule's self.model) and fits without it: torch.save({k.removeprefix(" \
           "'model.'): v for k, v in sd.items()}, 'model.pt') writes a file occ reads" \
           in str(info.value)


def test_a_checkpoint_with_two_different_state_dicts_is_refused(tmp_path: Path) -> None:
    """{'model': good, 'state_dict': other} was read from 'state_dict' without a word and
    scored 25.75 % (own-model audit F9); the same weights twice are fine."""
    from occ.artifact.checkpoint import load_checkpoint
    from occ.errors import CheckpointError

    a = {"fc.weight": torch.ones(2, 2)}
    b = {"fc.weight": torch.zeros(2, 2)}
    path = tmp_path / "two.pt"
    torch.save({"model": a, "state_dict": b, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"holds different state dicts under "
                                              r"'state_dict' and 'model': which is the model"):
        load_checkpoint(path)
    torch.save({"model": a, "state_dict": {"fc.weight": torch.ones(2, 2)}}, path)
    assert torch.equal(load_checkpoint(path).state_dict["fc.weight"], a["fc.weight"])
    nan = {"fc.weight": torch.tensor([[float("nan"), 1.0]])}  # the same model, wrapped too
    torch.save({"model": nan, "state_dict": {"module.fc.weight": nan["fc.weight"].clone()}},
               path)
    assert set(load_checkpoint(path).state_dict) == {"fc.weight"}
