"""Bad input: every case exits 2 with exactly one line naming what is wrong, no traceback,
and nothing written at the output paths."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from occ.artifact import header as artifact_header
from occ.cli import app

GOOD: dict[str, Any] = {
    "version": 1, "name": "bad", "seed": 0,
    "model": {"arch": "lenet5", "kwargs": {"width": 0.25}},
    "data": {"dataset": "mnist5k", "batch_size": 64, "limit_train": 256},
    "stages": [{"type": "prune", "method": "magnitude", "sparsity": 0.5}],
}


def edit(path: str, value: Any) -> Callable[[dict], dict]:
    """A recipe transform setting dotted ``path`` (``stages.0.lr``); ``...`` deletes it."""

    def apply(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is ...:
            del node[int(last) if last.isdigit() else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc

    return apply


# (id, recipe transform, expected text in the one stderr line)
RECIPE_CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("top-list", lambda d: [d], "must be a mapping"),
    ("top-unknown-key", edit("stagez", []), "unknown key 'stagez'"),
    ("version-missing", edit("version", ...), "version: is required"),
    ("version-2", edit("version", 2), "version: must be 1, got 2"),
    ("version-str", edit("version", "1"), "version: must be 1"),
    ("name-empty", edit("name", "  "), "name: must not be empty"),
    ("name-int", edit("name", 3), "name: must be str"),
    ("model-missing", edit("model", ...), "model: is required"),
    ("model-not-mapping", edit("model", "lenet5"), "model: must be a mapping"),
    ("arch-missing", edit("model.arch", ...), "model.arch: is required"),
    ("arch-unknown", edit("model.arch", "lenet6"), "model.arch: unknown model 'lenet6'"),
    ("arch-bad-callable", edit("model.arch", "a:b:c"), "model.arch: unknown model"),
    ("model-unknown-key", edit("model.weights", "x"), "model: unknown key 'weights'"),
    ("kwargs-not-mapping", edit("model.kwargs", [1]), "model.kwargs: must be a mapping"),
    ("checkpoint-missing", edit("model.checkpoint", "nope.pt"),
     "model.checkpoint: file not found: nope.pt"),
    ("dataset-unknown", edit("data.dataset", "imagenet"), "data.dataset: unknown dataset"),
    ("batch-zero", edit("data.batch_size", 0), "data.batch_size: must be >= 1, got 0"),
    ("batch-str", edit("data.batch_size", "big"), "data.batch_size: must be int"),
    ("batch-float", edit("data.batch_size", 1.5), "data.batch_size: must be int"),
    ("root-required", edit("data.dataset", "torchvision.CIFAR10"), "data.root: is required"),
    ("root-missing", edit("data", {"dataset": "torchvision.MNIST", "root": "/nope/mnist"}),
     "data.root: directory not found: /nope/mnist"),
    ("data-unknown-key", edit("data.download", True), "data: unknown key 'download'"),
    ("val-negative", edit("data.val_size", -1), "data.val_size: must be >= 0"),
    ("pad-zero", edit("data.pad_to", 0), "data.pad_to: must be in [1, 8192]"),
    ("order-unknown", edit("order", "random"), "order: must be one of 'auto', 'as-written'"),
    ("seed-negative", edit("seed", -1), "seed: must be an integer in [0, 4294967295]"),
    ("seed-float", edit("seed", 0.5), "seed: must be int"),
    ("device-tpu", edit("device", "tpu"), "device: must be auto, cpu, mps, cuda or cuda:N"),
    ("min-accuracy-range", edit("min_accuracy", 150), "min_accuracy: must be a percentage"),
    ("task-unknown", edit("task", "ranking"), "task: must be one of 'auto', 'classification'"),
    ("task-mismatch", edit("task", "regression"),
     "task: is regression but data.dataset mnist5k is a classification dataset; regression "
     "datasets: mnist5k-rotation"),
    ("loss-other-task", edit("loss", "l1"),
     "loss: l1 does not apply to classification; allowed: auto, cross_entropy"),
    ("loss-unknown", edit("loss", "huber"), "loss: must be one of 'auto', 'cross_entropy'"),
    ("max-mae-classification", edit("max_mae", 0.1),
     "max_mae: applies to regression tasks; mnist5k is classification (use min_accuracy)"),
    ("max-mae-zero", edit("max_mae", 0), "max_mae: must be > 0 (target units), got 0"),
    ("output-int", edit("output", 5), "output: must be str"),
    ("stages-missing", edit("stages", ...), "stages: is required"),
    ("stages-empty", edit("stages", []), "stages: must be a non-empty list"),
    ("stages-mapping", edit("stages", {"type": "prune"}), "stages: must be a non-empty list"),
    ("stage-string", edit("stages.0", "prune"), "stages[0]: must be a mapping"),
    ("stage-no-type", edit("stages.0.type", ...), "stages[0].type: is required; allowed:"),
    ("stage-type-unknown", edit("stages.0.type", "shrink"),
     "stages[0].type: unknown stage type 'shrink'; allowed:"),
    ("stage-type-int", edit("stages.0.type", 7), "stages[0].type: must be a string"),
    ("stage-unknown-key", edit("stages.0.sparsty", 0.5), "stages[0]: unknown key 'sparsty'"),
    ("sparsity-high", edit("stages.0.sparsity", 1.5),
     "stages[0].sparsity: must be in [0, 1), got 1.5"),
    ("sparsity-one", edit("stages.0.sparsity", 1), "stages[0].sparsity: must be in [0, 1)"),
    ("sparsity-negative", edit("stages.0.sparsity", -0.1), "stages[0].sparsity: must be in"),
    ("sparsity-str", edit("stages.0.sparsity", "most"), "stages[0].sparsity: must be float"),
    ("epochs-negative", edit("stages.0.epochs", -1), "stages[0].epochs: must be >= 0"),
    ("lr-zero", edit("stages.0.lr", 0), "stages[0].lr: must be > 0"),
    ("method-unknown", edit("stages.0.method", "random"), "stages[0].method: must be one of"),
    ("stage-device", edit("stages.0.device", 3), "stages[0].device: must be str"),
]


def run_cli(args: list[str]):
    return CliRunner().invoke(app, args)


def assert_one_line(result: Any, expected: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("transform", "expected"),
                         [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
@pytest.mark.parametrize("command", ["validate", "compress"])
def test_bad_recipe(tmp_path: Path, transform, expected: str, command: str) -> None:
    out = tmp_path / "out"
    doc = transform(GOOD)
    if isinstance(doc, dict) and command == "compress" and "checkpoint" not in str(expected):
        doc.setdefault("output", str(out))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli([command, str(path)])
    assert_one_line(result, expected)
    assert str(path) in result.stderr  # names the file
    assert not out.exists()


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "must be a mapping"),
    (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    (b"stages: [unclosed\n", "not valid YAML at line"),
    (b"version: 1\n  name: x\n bad", "not valid YAML"),
    (b"!!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
], ids=["empty", "binary", "unclosed", "indent", "python-tag"])
def test_unparseable_recipe_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    assert_one_line(run_cli(["validate", str(path)]), expected)
    assert not (tmp_path / "pwned").exists()


def test_recipe_is_a_directory(tmp_path: Path) -> None:
    assert_one_line(run_cli(["validate", str(tmp_path)]),
                    "is a directory, not a regular recipe file")


@pytest.fixture
def good_recipe(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    doc = copy.deepcopy(GOOD)
    doc["model"]["checkpoint"] = str(tiny_checkpoint)
    doc["output"] = str(tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _write(tmp_path: Path, name: str, make: Callable[[Path], None]) -> Path:
    path = tmp_path / name
    make(path)
    return path


def _torch_save(obj_factory: Callable[[], Any]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        import torch

        torch.save(obj_factory(), path)

    return make


def _wrong_arch_state() -> Any:
    from occ.models import build_model

    return build_model("lenet300", {}).state_dict()


CHECKPOINT_CASES = [
    ("text-file", lambda p: p.write_text("not a checkpoint"), "not a readable PyTorch checkpoint"),
    ("empty-file", lambda p: p.write_bytes(b""), "is empty (0 bytes), not a PyTorch checkpoint"),
    ("list", _torch_save(lambda: [1, 2, 3]), "not a state dict"),
    ("empty-dict", _torch_save(dict), "not a state dict"),
    ("wrong-arch", _torch_save(_wrong_arch_state), "does not fit model lenet5"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CHECKPOINT_CASES],
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoints(tmp_path: Path, good_recipe: Path, make, expected: str) -> None:
    ckpt = _write(tmp_path, "bad.pt", make)
    result = run_cli(["compress", str(good_recipe), "--checkpoint", str(ckpt)])
    assert_one_line(result, expected)
    assert str(ckpt) in result.stderr
    assert not (tmp_path / "out").exists()


def test_checkpoint_flag_missing_file(tmp_path: Path, good_recipe: Path) -> None:
    result = run_cli(["compress", str(good_recipe), "--checkpoint", str(tmp_path / "x.pt")])
    assert_one_line(result, "file not found")


def test_recipe_without_checkpoint_needs_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "output": str(tmp_path / "out")}))
    assert_one_line(run_cli(["compress", str(path)]), "model.checkpoint: is required")
    assert not (tmp_path / "out").exists()


def test_dataset_root_without_the_dataset(tmp_path: Path, tiny_checkpoint: Path) -> None:
    empty = tmp_path / "cifar"
    empty.mkdir()
    doc = {**GOOD, "data": {"dataset": "torchvision.CIFAR10", "root": str(empty)},
           "output": str(tmp_path / "out")}
    doc["model"] = {**GOOD["model"], "checkpoint": str(tiny_checkpoint)}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli(["compress", str(path)])
    assert_one_line(result, str(empty))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["compress"], "Missing argument"),
    (["compress", "r.yaml", "--bogus"], "No such option: --bogus"),
    (["frobnicate"], "No such command"),
    (["order"], "Missing option"),
    (["order", "--techniques", "P,X"], "unknown technique 'X'"),
    (["order", "--techniques", ","], "no techniques given"),
    # a plan occ validate refuses printed "Q → Q" (stage audit F7)
    (["order", "--techniques", "P,Q,Q"], "'Q' is a second quantize ('Q' is the first); only "
                                         "prune and lowrank may appear more than once"),
    (["eval"], "Missing argument"),
    (["eval", "/nope/model.occ"], "file not found"),
    (["inspect", "/nope/model.occ"], "cannot read"),
    (["train", "lenet6", "--out", "x.pt"], "unknown model 'lenet6'"),
    (["train", "lenet5", "--out", "x.pt", "--epochs", "0"], "--epochs: must be >= 1"),
    (["train", "lenet5", "--out", "x.pt", "--epochs", "two"], "Invalid value"),
    (["train", "lenet5", "--out", "x.pt", "--data", "imagenet"], "--data: unknown dataset"),
    # the data fields occ train sets are named by its options, not a recipe's data.<field>
    (["train", "lenet5", "--out", "x.pt", "--channels", "1"],
     "--channels: applies to imagefolder only; mnist5k gives its own channels"),
    (["train", "lenet5", "--out", "x.pt", "--data", "imagefolder"],
     "--root: is required for imagefolder"),
    (["train", "lenet5", "--out", "x.pt", "--image-size", "0"], "--image-size: must be in [1, "),
    # ... when loading the data and building the model for it, too (8×8 digits)
    (["train", "lenet5", "--out", "x.pt", "--data", "digits"],
     "--data: lenet5 needs inputs of at least 16×16, got 8×8: pad or resize the images to a "
     "size it takes (--pad-to or --image-size)"),
    (["train", "lenet5", "--out", "x.pt", "--data", "digits", "--pad-to", "12"],
     "--pad-to: lenet5 needs inputs of at least 16×16, got 12×12: pad or resize"),
    (["train", "lenet5", "--out", "x.pt", "--data", "digits", "--pad-to", "4"],
     "--pad-to: 4 is smaller than the 8x8 images; padding cannot crop"),
    (["train", "lenet5", "--out", "x.pt", "--data", "digits", "--image-size", "16"],
     "--image-size: is not supported for digits (in-memory digits: only padding and mean / "
     "std apply)"),
    (["train", "lenet5", "--out", "x.pt", "--lr", "-1"], "--lr: must be a finite number > 0"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_bad_flags(args: list[str], expected: str, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line(run_cli(args), expected)
    assert not (tmp_path / "x.pt").exists()


def test_eval_and_inspect_of_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.occ"
    text.write_text("hello")
    assert_one_line(run_cli(["inspect", str(text)]), "not an occ artifact")
    assert_one_line(run_cli(["eval", str(text)]), "not a readable PyTorch checkpoint")


def test_eval_of_files_shorter_than_the_artifact_magic(tmp_path: Path) -> None:
    """``occ eval`` tells an artifact from a checkpoint by its first bytes: a file too short
    to hold them is a checkpoint that cannot be read, said in one line, not a crash."""
    from occ.artifact.container import MAGIC

    empty, short = tmp_path / "empty.occ", tmp_path / "short.pt"
    empty.write_bytes(b"")
    short.write_bytes(MAGIC[:3])
    assert_one_line(run_cli(["eval", str(empty)]),
                    f"{empty}: is empty (0 bytes), not a PyTorch checkpoint")
    assert_one_line(run_cli(["eval", str(short)]),
                    f"{short}: not a readable PyTorch checkpoint")


def test_truncated_artifact(tmp_path: Path) -> None:
    import torch

    from occ.artifact import model_io
    from occ.models import build_model

    model = build_model("lenet300", {"width": 0.1})
    header = artifact_header.model_header(arch={"arch": "lenet300", "kwargs": {"width": 0.1}},
                                   edits=[], input_shape=(1, 28, 28), num_classes=10)
    path = tmp_path / "m.occ"
    model_io.save(path, model, header, {"codec": "raw"})
    path.write_bytes(path.read_bytes()[:-100])
    for cmd in ("eval", "inspect"):
        assert_one_line(run_cli([cmd, str(path)]), "checksum mismatch")
    del torch


# --- Inputs that only the model can judge: checked right after it is loaded -------------

PLAIN_NET = '''
import torch
from torch import nn

def plain(num_classes=2):
    """Fixed 8x8 RGB input: flatten into a Linear, as many user models do."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, num_classes))
'''


@pytest.fixture
def plain_net(tmp_path: Path) -> dict[str, Any]:
    """A user model for 8x8 RGB images, its plain state dict, and 8x8 RGB ImageFolder data."""
    import importlib
    import sys

    import torch

    from tests.test_user_data import write_pngs

    name = f"occ_plain_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(PLAIN_NET)
    sys.path.insert(0, str(tmp_path))
    try:
        model = importlib.import_module(name).plain()
    finally:
        sys.path.remove(str(tmp_path))
    ckpt = tmp_path / "plain.pt"
    torch.save(model.state_dict(), ckpt)
    write_pngs(tmp_path / "img" / "train", {"a": 6, "b": 6})
    write_pngs(tmp_path / "img" / "test", {"a": 2, "b": 2})
    doc = {"version": 1, "name": "plain", "seed": 0,
           "model": {"arch": f"{name}:plain", "checkpoint": "plain.pt"},
           "data": {"dataset": "imagefolder", "root": "img", "image_size": 8, "batch_size": 4},
           "stages": [{"type": "prune", "sparsity": 0.5, "epochs": 1}],
           "output": str(tmp_path / "out")}
    return {"doc": doc, "ckpt": ckpt, "arch": f"{name}:plain", "dir": tmp_path}


def _write_recipe(directory: Path, doc: dict[str, Any]) -> Path:
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("data", "shape", "hints"), [
    ({"image_size": 6}, "3×6×6 (C×H×W)", ("set data.image_size or data.pad_to",
                                          "data.channels (imagefolder: 1 or 3)")),
    # the model's first conv takes 3 channels: the hint says so, and how to read RGB
    ({"channels": 1, "mean": [0.5], "std": [0.25]}, "1×8×8 (C×H×W)",
     ("the model takes 3-channel images: set data.channels: 3",)),
])
def test_model_and_data_shapes_that_do_not_fit_are_bad_input(
        plain_net: dict[str, Any], data: dict[str, Any], shape: str,
        hints: tuple[str, ...]) -> None:
    doc = copy.deepcopy(plain_net["doc"])
    doc["data"].update(data)
    path = _write_recipe(plain_net["dir"], doc)
    result = run_cli(["compress", str(path), "--trust-code"])
    assert_one_line(result, f"{path}: data: the model cannot take the data's inputs of {shape}")
    assert all(hint in result.stderr for hint in hints), result.stderr
    assert "--" not in result.stderr.split(shape)[1]  # recipe fields, not CLI options
    assert not (plain_net["dir"] / "out").exists()
    as_json = run_cli(["compress", str(path), "--trust-code", "--json"])
    assert as_json.exit_code == 2
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == 2 and error["type"] == "DataError" and shape in error["message"]


def test_eval_on_data_the_model_cannot_take_is_bad_input(plain_net: dict[str, Any]) -> None:
    result = run_cli(["eval", str(plain_net["ckpt"]), "--arch", plain_net["arch"],
                      "--trust-code", "--data", "digits"])
    assert_one_line(result, "--data: the model cannot take the data's inputs of 1×8×8 (C×H×W)")
    # eval's options, not a recipe's fields (--channels reads an imagefolder only: for
    # digits other data is the fix)
    assert "the model takes 3-channel images: use 3-channel data" in result.stderr
    assert "(--data / --root)" in result.stderr and "data.channels" not in result.stderr
    folder = ["eval", str(plain_net["ckpt"]), "--arch", plain_net["arch"], "--trust-code",
              "--data", "imagefolder", "--root", str(plain_net["dir"] / "img")]
    sized = run_cli(folder)  # imagefolder's default 32×32
    assert_one_line(sized, "--data: the model cannot take the data's inputs of 3×32×32")
    assert "read the images at the size and channels it was trained on (--image-size S, " \
           "--channels N: imagefolder 1 or 3)" in sized.stderr
    assert "evaluate it on the data it was made for (--data / --root)" in sized.stderr
    assert "data.image_size" not in sized.stderr
    gray = run_cli([*folder, "--image-size", "8", "--channels", "1"])
    assert_one_line(gray, "the model takes 3-channel images: set --channels 3 ")
    assert run_cli([*folder, "--image-size", "8"]).exit_code == 0


def test_compress_on_data_too_small_for_the_zoo_model_names_the_data_fields(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """lenet5 on 8×8 digits: the model is built for the data, so its refusal of the size
    is about the recipe's data, not a ``model.kwargs.input_hw`` the recipe never wrote."""
    doc = {**GOOD, "data": {"dataset": "digits", "batch_size": 64},
           "model": {**GOOD["model"], "checkpoint": str(tiny_checkpoint)},
           "output": str(tmp_path / "out")}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert_one_line(run_cli(["compress", str(path)]),
                    f"{path}: data: lenet5 needs inputs of at least 16×16, got 8×8: pad or "
                    "resize the images to a size it takes (data.pad_to or data.image_size)")
    assert not (tmp_path / "out").exists()


def test_train_on_data_the_model_cannot_take_names_train_options(
        plain_net: dict[str, Any], tmp_path: Path) -> None:
    args = ["train", plain_net["arch"], "--trust-code", "--data", "imagefolder", "--root",
            str(plain_net["dir"] / "img"), "--epochs", "1", "--val-size", "2"]
    out = tmp_path / "t.pt"
    result = run_cli([*args, "--image-size", "6", "--out", str(out)])
    assert_one_line(result, "--data: the model cannot take the data's inputs of 3×6×6 (C×H×W)")
    assert "set --image-size or --pad-to" in result.stderr and "--channels" in result.stderr
    assert "data.image_size" not in result.stderr and "data.channels" not in result.stderr
    gray = run_cli([*args, "--image-size", "8", "--channels", "1", "--out", str(out)])
    assert_one_line(gray, "the model takes 3-channel images: set --channels 3 ")
    assert not out.exists()


def test_json_reports_unexpected_errors_too(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("occ.api.compress", broken)
    result = run_cli(["compress", str(tmp_path / "r.yaml"), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == 1 and error["type"] == "RuntimeError"
    assert "unexpected RuntimeError: simulated bug (a bug in occ" in error["message"]


@pytest.mark.parametrize(("stage", "expected"), [
    ({"type": "early_exit", "exits": ["nonexistent"]},
     "stages[1].exits[0]: 'nonexistent' is not a valid exit point (no such module); valid: "),
    ({"type": "lowrank", "exclude": ["classifier.1", "fc9"]},
     "stages[1].exclude[1]: no Conv2d / Linear layer 'fc9' in the model; layers: "),
])
def test_stage_references_are_checked_before_the_first_stage(
        recipe_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        stage: dict[str, Any], expected: str) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a stage ran before the references were checked")

    monkeypatch.setattr("occ.engine.runner.run_stage", never)
    path = recipe_factory([{"type": "prune", "sparsity": 0.5, "epochs": 1}, stage])
    assert run_cli(["validate", str(path)]).exit_code == 0  # no model there: no names
    assert_one_line(run_cli(["compress", str(path)]), f"{path}: {expected}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", [
    {"type": "lowrank", "exclude": ["classifier.1", "fc9"]},
    {"type": "prune", "method": "magnitude", "sparsity": 0.5, "exclude": ["classifier.1", "fc9"]},
    {"type": "prune", "method": "channel", "channel_ratio": 0.5,
     "exclude": ["classifier.1", "fc9"]},
])
def test_an_unknown_exclude_reads_the_same_before_the_run_and_in_its_stage(
        recipe_factory, monkeypatch: pytest.MonkeyPatch, stage: dict[str, Any]) -> None:
    """One owner (``occ.sparsity.check_layer``): the preflight and the stage itself (which
    checks when an earlier stage renamed the modules) give the same line."""
    path = recipe_factory([stage])
    expected = f"{path}: stages[0].exclude[1]: no Conv2d / Linear layer 'fc9' in the model; "
    early = run_cli(["compress", str(path)])
    assert_one_line(early, expected)
    monkeypatch.setattr("occ.engine.preflight.check_references", lambda plan, model, ctx=None: None)
    late = run_cli(["compress", str(path)])
    assert_one_line(late, expected)
    assert late.stderr == early.stderr


def test_a_run_that_fails_before_writing_leaves_no_folder(
        recipe_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.errors import StageError

    def fail(*args: Any, **kwargs: Any) -> None:
        raise StageError("simulated failure before the first output")

    monkeypatch.setattr("occ.engine.measure.measure_ctx", fail)
    path = recipe_factory([{"type": "prune", "sparsity": 0.5}],
                          output=str(tmp_path / "deep" / "out"))
    result = run_cli(["compress", str(path)])
    assert result.exit_code == 1 and "simulated failure" in result.stderr
    assert not (tmp_path / "deep").exists()


def test_output_that_cannot_be_created_is_bad_input(recipe_factory, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    target = tmp_path / "ro"
    target.mkdir()
    monkeypatch.setattr(os, "access", lambda *a, **k: True)  # as root: access says yes
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
        if target in (self, *self.parents) and self != target:
            raise PermissionError(13, "Permission denied")
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    path = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    result = run_cli(["compress", str(path), "--out", str(target / "a" / "b")])
    assert_one_line(result, f"--out: cannot write in {target / 'a' / 'b'}: Permission denied")
    assert list(target.iterdir()) == []
