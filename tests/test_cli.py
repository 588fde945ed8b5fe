"""CLI: exit codes 0/1/2, one-line errors, --json is one document, no torch for cheap commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from occ.cli import app
from tests.conftest import write_recipe

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("train", "compress", "order", "validate", "eval", "inspect"):
        assert cmd in result.output


def test_order_prints_dpqe() -> None:
    result = invoke("order", "--techniques", "P,Q,KD,EE")
    assert result.exit_code == 0
    assert result.stdout.strip() == "KD → P → Q → EE"


def test_order_explain_and_json() -> None:
    result = invoke("order", "-t", "P,Q", "--explain")
    assert "P → Q:" in result.stdout and "Order of Compression" in result.stdout
    doc = json.loads(invoke("order", "-t", "EE,KD", "--json").stdout)
    assert doc["order"] == ["KD", "EE"]
    assert doc["edges"][0]["reason"]


@pytest.mark.parametrize("args", [
    ("order", "--techniques", "P,Z"),
    ("order",),
    ("order", "--bogus"),
    ("nonsense",),
    ("validate", "/no/such/recipe.yaml"),
    ("compress", "/no/such/recipe.yaml"),
    ("eval", "/no/such/model.occ"),
    ("inspect", "/no/such/model.occ"),
    ("train", "resnet9000", "--out", "x.pt"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output


def test_validate_prints_plan_and_json(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, stages=[{"type": "prune", "sparsity": 0.5}])
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert "order: prune(magnitude)" in result.stdout
    doc = json.loads(invoke("validate", str(path), "--json").stdout)
    assert doc["recipe"]["stages"][0]["sparsity"] == 0.5
    assert doc["order"] == ["prune(magnitude)"]


def test_validate_error_names_file_and_field(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, stages=[{"type": "prune", "sparsity": 1.5}])
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert f"{path}: stages[0].sparsity: must be in [0, 1), got 1.5" in result.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code_and_json(tmp_path: Path) -> None:
    """--debug turned bad input (exit 2) into 1 and dropped the --json document: a CI job
    debugging a failure could no longer tell bad input from a failed run."""
    result = invoke("--debug", "validate", str(tmp_path / "none.yaml"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == 2
    assert "Traceback (most recent call last)" in result.stderr


def test_a_full_disk_names_the_file_not_a_bug_in_occ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """ENOSPC while writing a stage state said "unexpected OSError ... (a bug in occ)" and
    named no file (or occ's hidden temp file): now the file meant, exit 1 (the run failed)."""
    import errno

    import occ.io
    from occ.cli.app import _run

    # the module (occ.cli's `app` is the Typer object): an earlier --debug test's state
    monkeypatch.setitem(sys.modules["occ.cli.app"]._state, "debug", False)

    def full(target: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device",  # occ's temp file, as mkstemp
                      str(target.parent / f".{target.name}.k3x9q1.tmp"))  # names it

    monkeypatch.setattr(occ.io, "_write_replacing", full)
    state = tmp_path / "stages" / "00-prune.occst"
    with pytest.raises(typer.Exit) as stop:
        _run(lambda: occ.io.atomic_write_bytes(state, b"state"))
    assert stop.value.exit_code == 1
    line = capsys.readouterr().err.strip()
    said = f"error: {state}: cannot write: No space left on device (errno 28)"
    assert line.startswith(said), line
    assert ".tmp" not in line and "a bug in occ" not in line


def test_saving_a_result_over_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    from occ.engine.model_api import CompressionResult
    from occ.errors import RecipeError

    with pytest.raises(RecipeError, match="is a directory; give a file path"):
        CompressionResult(model=None, report=None, artifact=b"x", metric=None,
                          baseline_metric=None).save(tmp_path)


def test_a_reader_that_goes_away_ends_occ_as_a_pipe_ends_a_c_tool() -> None:
    """``occ recipes | head -c 1``: click answered EPIPE with exit 1, the "run failed"
    code, and nothing on stderr; now 141 (128 + SIGPIPE), as a C tool ends."""
    p = subprocess.Popen([sys.executable, "-m", "occ", "recipes"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 141 and err == b""


@pytest.mark.parametrize("argv", [["--help"], ["order", "-t", "P,Q,KD,EE"]])
def test_cheap_commands_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    code = ("import sys; from occ.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("stages", [
    [{"type": "prune", "sparsity": 0.5}],
    [{"type": "lowrank", "energy": 0.8, "epochs": 1}, {"type": "quantize"}],
], ids=["prune", "lowrank"])
def test_validate_does_not_import_torch(stages: list[dict], tmp_path: Path) -> None:
    path = write_recipe(tmp_path, stages=stages)
    code = ("import sys; from occ.cli import app\n"
            "try:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


def test_stage_failure_exits_1(recipe_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from occ.errors import StageError
    from occ.techniques import registry

    def boom(ctx, config):
        raise StageError("prune: loss became nan at epoch 1, step 1")

    failing = dataclasses.replace(registry.get_stage("prune"), run=boom)
    monkeypatch.setitem(registry._STAGES, "prune", failing)
    result = invoke("compress", str(recipe_factory([{"type": "prune", "sparsity": 0.5}])))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: prune: loss became nan at epoch 1, step 1"


def test_relative_overrides_are_recorded_so_the_resolved_recipe_reruns(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--checkpoint / --out relative to the working directory were recorded as written,
    while a recipe's relative paths resolve against its own folder: the resolved recipe
    a run wrote then failed `occ validate`."""
    import shutil

    import yaml

    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, work / "base.pt")
    path = write_recipe(work / "sub", stages=[{"type": "prune", "sparsity": 0.5}])
    monkeypatch.chdir(work)
    assert invoke("compress", str(path), "--checkpoint", "base.pt", "--out", "rel").exit_code == 0
    resolved = work / "rel" / "recipe.resolved.yaml"
    doc = yaml.safe_load(resolved.read_text())
    assert doc["model"]["checkpoint"] == str(work / "base.pt")
    assert doc["output"] == str(work / "rel")
    monkeypatch.chdir(tmp_path)
    assert invoke("validate", str(resolved)).exit_code == 0

