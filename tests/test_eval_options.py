"""``occ eval --channels / --image-size`` (with ``--mean`` / ``--std``): laid over what a file
records (``occ.engine.data_options``), named by the option in errors, and said in the
output, for a checkpoint, a plain state dict, an artifact and an ONNX file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from occ.cli import app
from tests.conftest import write_shape_folder


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A grayscale ImageFolder (12×12 PNGs saved in mode L), a one-channel LeNet-5 that
    ``occ train --channels 1 --image-size 16`` trained on it, and its weights as a plain
    state dict (no record of channels, size or normalisation)."""
    base = tmp_path_factory.mktemp("gray")
    write_shape_folder(base / "data", ["a", "b", "c"], per_class=6, size=12, mode="L")
    ckpt = base / "gray.pt"
    trained = CliRunner().invoke(app, [
        "train", "lenet5", "--width", "0.25", "--data", "imagefolder", "--root",
        str(base / "data"), "--channels", "1", "--image-size", "16", "--epochs", "2",
        "--val-size", "3", "--out", str(ckpt), "--json"])
    assert trained.exit_code == 0, trained.output
    torch.save(torch.load(ckpt)["state_dict"], base / "plain.pt")
    return {"data": base / "data", "checkpoint": ckpt, "plain": base / "plain.pt"}


def plain(gray_run: dict[str, Path], *options: str) -> list[str]:
    """``occ eval`` of the plain state dict on the grayscale folder, with ``options``."""
    return ["eval", str(gray_run["plain"]), "--arch", "lenet5", "--kwargs",
            '{"width": 0.25, "input_hw": 16, "num_classes": 3}', "--data", "imagefolder",
            "--root", str(gray_run["data"]), *options]


def one_line(args: list[str]) -> str:
    """The one stderr line of a command that must exit 2."""
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.output, res.output
    return res.stderr


def json_of(args: list[str]) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_a_grayscale_plain_state_dict_needs_channels_1_and_is_measured_with_it(
        gray_run: dict[str, Path]) -> None:
    # imagefolder reads RGB: the probe says the model takes one channel, and the option
    refused = one_line(plain(gray_run, "--image-size", "16"))
    assert "the model cannot take the data's inputs of 3×16×16 (C×H×W)" in refused
    assert ("the model takes 1-channel images: set --channels 1 to read the images as the "
            "model was trained on them") in refused
    # at imagefolder's default 32×32 the size is what does not fit: the hint says how to set it
    sized = one_line(plain(gray_run, "--channels", "1"))
    assert "inputs of 1×32×32" in sized and "--image-size S" in sized
    doc = json_of(plain(gray_run, "--channels", "1", "--image-size", "16"))
    assert doc["input_shape"] == [1, 16, 16]
    assert doc["preprocess"]["channels"] == 1 and doc["preprocess"]["resize"] == 16
    assert (doc["input_source"], doc["preprocess_source"]) == ("options", "default")
    assert doc["preprocess_options"] == ["--channels", "--image-size"]
    # the occ checkpoint records what the options said: the same figure
    recorded = json_of(["eval", str(gray_run["checkpoint"])])
    assert (recorded["input_source"], recorded["input_shape"]) == ("recorded", [1, 16, 16])
    assert recorded["preprocess"] == doc["preprocess"]
    assert doc["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    table = CliRunner().invoke(app, plain(gray_run, "--channels", "1", "--image-size", "16"))
    assert table.exit_code == 0, table.output
    assert "input 1×16×16 (C×H×W, from --channels / --image-size)" in table.output
    table = CliRunner().invoke(app, ["eval", str(gray_run["checkpoint"])])
    assert "input 1×16×16 (C×H×W, recorded with the model)" in table.output


def test_a_torchvision_state_dict_gets_channels_and_classes_as_a_recipe_would(
        gray_run: dict[str, Path], tmp_path: Path) -> None:
    """``--channels 1`` built a 3-channel torchvision model, and any ``--kwargs`` (even
    ``{}``) stopped num_classes from being read off the classifier, so the suggested fix
    failed too (own-model audit F1, F2)."""
    from occ.models import build_model

    path = tmp_path / "gray_r18.pt"
    torch.manual_seed(0)
    torch.save(build_model("torchvision.resnet18", {}, in_channels=1, num_classes=3)
               .state_dict(), path)
    base = ["eval", str(path), "--arch", "torchvision.resnet18", "--data", "imagefolder",
            "--root", str(gray_run["data"]), "--channels", "1", "--image-size", "16"]
    for extra in ([], ["--kwargs", "{}"], ["--kwargs", '{"in_channels": 1}']):
        doc = json_of([*base, *extra])
        assert doc["input_shape"] == [1, 16, 16] and doc["params"] > 11_000_000
    refused = one_line(["eval", str(path), "--data", "imagefolder", "--root",
                        str(gray_run["data"])])
    assert "has no architecture reference (occ's checkpoints record one; a plain state " \
           "dict or a pickled model does not): pass --arch NAME" in refused


@pytest.mark.parametrize(("options", "message"), [
    (["--channels", "2"], "--channels: must be 1 (grayscale) or 3 (RGB), got 2"),
    (["--channels", "0"], "--channels: must be 1 (grayscale) or 3 (RGB), got 0"),
    (["--image-size", "0"], "--image-size: must be in [1, "),
    (["--image-size", "-3"], "--image-size: must be in [1, "),
    (["--data", "digits", "--channels", "1"],
     "--channels: applies to imagefolder only; digits gives its own channels"),
    (["--data", "digits", "--image-size", "16"], "--image-size: is not supported for digits"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_value_is_named_by_its_option(gray_run: dict[str, Path], options: list[str],
                                            message: str) -> None:
    ours = plain(gray_run, *options)
    if "--data" in options:  # other data: the folder's --root would be refused first
        at = ours.index("--root")
        del ours[at:at + 2]
    for args in (ours, ["eval", str(gray_run["checkpoint"]), *options]):
        line = one_line(args)
        assert f"error: {message}" in line, line
        assert "data." not in line


def test_channels_over_a_recorded_normalisation_for_other_channels_needs_mean_and_std(
        folder_run: dict) -> None:
    """The RGB model of ``folder_run`` records mean 0.3 for each of three channels: read as
    grayscale, the record cannot say how one channel was normalised."""
    for path in (folder_run["checkpoint"], folder_run["artifact"]):
        line = one_line(["eval", str(path), "--channels", "1"])
        assert ("--channels: the recorded mean [0.3, 0.3, 0.3] is for 3-channel images, not "
                "1-channel ones; pass --mean and --std for those too") in line, line
        # given both, the data is read as asked, and the model's three channels refuse it
        line = one_line(["eval", str(path), "--channels", "1", "--mean", "0.3", "--std",
                         "0.25"])
        assert "inputs of 1×32×32" in line and "set --channels 3 " in line, line


def test_image_size_overrides_an_artifacts_record(folder_run: dict) -> None:
    recorded = json_of(["eval", str(folder_run["artifact"])])
    same = json_of(["eval", str(folder_run["artifact"]), "--image-size", "32"])
    assert (recorded["input_source"], same["input_source"]) == ("recorded", "options")
    assert same["accuracy"] == recorded["accuracy"]
    assert same["preprocess_source"] == recorded["preprocess_source"] == "recorded"
    line = one_line(["eval", str(folder_run["artifact"]), "--image-size", "28"])
    assert "inputs of 3×28×28" in line and "--image-size S" in line, line


def test_root_stands_in_for_a_recorded_folder_that_moved(gray_run: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """The options are merged before the recorded spec is checked: a checkpoint whose
    recorded root is gone is measured on the ``--root`` given instead."""
    ckpt = torch.load(gray_run["checkpoint"])
    ckpt["data"]["root"] = str(tmp_path / "gone")
    moved = tmp_path / "moved.pt"
    torch.save(ckpt, moved)
    line = one_line(["eval", str(moved)])
    assert "data.root: directory not found" in line, line
    doc = json_of(["eval", str(moved), "--root", str(gray_run["data"])])
    assert doc["accuracy"] == json_of(["eval", str(gray_run["checkpoint"])])["accuracy"]
    line = one_line(["eval", str(moved), "--root", str(tmp_path / "nowhere")])
    assert "error: --root: directory not found" in line, line


def test_eval_data_lays_the_options_over_the_record_and_says_where_each_part_is_from(
        folder_run: dict) -> None:
    from occ.engine.data_options import eval_data

    plain = eval_data(None, {"mean": None})  # a plain state dict, no option given
    assert (plain.spec.dataset, plain.normalisation, plain.input) == ("mnist5k", "default",
                                                                      "default")
    record = {"dataset": "mnist5k", "mean": [0.1], "std": [0.3], "pad_to": 32}
    recorded = eval_data(record, {})
    assert (recorded.spec.pad_to, recorded.normalisation, recorded.input) == (32, "recorded",
                                                                             "recorded")
    other = eval_data(record, {"dataset": "digits"})  # nothing recorded applies to it
    assert (other.spec.pad_to, other.spec.mean, other.normalisation) == (None, None, "default")
    folder = {"dataset": "imagefolder", "root": str(folder_run["data"]), "resize": 40,
              "crop": 32}
    resized = eval_data(folder, {"image_size": 24, "std": (0.2,)})
    assert (resized.spec.image_size, resized.spec.resize, resized.spec.crop) == (24, None, None)
    assert resized.spec.std == [0.2] and resized.sources() == {
        "preprocess_source": "options", "input_source": "options",
        "preprocess_options": ["--std", "--image-size"]}


@pytest.mark.parametrize(("kind", "message"), [
    ("file", "is a file, not a directory"),
    ("fifo", "is a FIFO (named pipe), not a directory"),
    ("device", "/dev/null is a character device, not a directory"),
    ("newline", r"directory not found: '"),
    ("empty", "is empty; give the data's folder (. for the working directory)"),
])
def test_root_that_is_not_a_folder_is_named_by_kind_on_one_line(
        gray_run: dict[str, Path], tmp_path: Path, kind: str, message: str) -> None:
    import os

    root = {"file": tmp_path / "f", "fifo": tmp_path / "p", "device": "/dev/null",
            "newline": tmp_path / "a\nb", "empty": ""}[kind]
    if kind == "file":
        Path(root).write_text("x")
    elif kind == "fifo":
        os.mkfifo(root)
    line = one_line(["eval", str(gray_run["checkpoint"]), "--root", str(root)])
    assert line.startswith("error: --root: ") and message in line, line


def test_root_for_data_that_reads_no_folder_is_refused(tmp_path: Path) -> None:
    """--root with embedded data was ignored (the run went on, on the embedded data)."""
    line = one_line(["train", "lenet5", "--data", "digits", "--root", str(tmp_path),
                     "--out", str(tmp_path / "x.pt")])
    assert line == ("error: --root: digits is embedded in occ and reads no folder; leave "
                    "--root out\n")
    assert not (tmp_path / "x.pt").exists()


def test_a_file_recording_a_batch_over_the_recipe_cap_still_evaluates() -> None:
    """Files written before data.batch_size had a cap may record more: read as the cap (eval
    bounds its batch anyway), not refused, which made them unreadable."""
    from occ.engine.data_options import eval_data
    from occ.limits import MAX_BATCH_SIZE

    chosen = eval_data({"dataset": "mnist5k", "batch_size": 100_000}, {},
                       where="old.occ: header recipe.data")
    assert chosen.spec.batch_size == MAX_BATCH_SIZE


def test_eval_far_below_the_files_recorded_accuracy_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``occ compress`` warns when a baseline reads far below what its checkpoint recorded
    (a preprocessing mismatch, usually); ``occ eval`` of the same file said nothing (33 %
    where the file recorded 100 %). It now says so, naming the options that set it."""
    from occ.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "net.pt"
    torch.save({"state_dict": build_model("lenet5", {"width": 0.25}).state_dict(), "acc": 0.99},
               ckpt)
    with caplog.at_level("WARNING", logger="occ"):
        doc = json_of(["eval", str(ckpt), "--arch", "lenet5", "--kwargs", '{"width": 0.25}',
                       "--data", "mnist5k"])
    assert doc["accuracy"] < 90  # untrained: far below the 99 % it records
    said = doc["warnings"][0]
    assert said.startswith(f"{ckpt}: accuracy ")
    assert "far below the checkpoint's recorded 99.00%" in said
    assert "--mean / --std / --image-size / --channels" in said and said in caplog.text
