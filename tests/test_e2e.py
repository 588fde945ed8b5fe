"""End to end: checkpoint -> compress -> artifact -> eval agrees; outputs are complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import occ
from occ import api
from occ.cli import app


def test_compress_then_eval_agree(recipe_factory, tmp_path: Path) -> None:
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.8, "epochs": 1}])
    report = api.compress(recipe)
    out = Path(report.out_dir)
    for name in ("model.occ", "report.json", "report.md", "report.html", "recipe.resolved.yaml"):
        assert (out / name).is_file(), name
    assert report.artifact_bytes == (out / "model.occ").stat().st_size
    final = report.final_metrics()
    assert 0.79 < 1 - final.nonzero_params / final.params < 0.81 + 0.01  # biases stay dense
    result = api.evaluate(out / "model.occ")
    assert result["kind"] == "artifact"
    # eval scores at batch 256, compress at the recipe's 128: float sums differ with batch
    # shape, so a near-tie digit may flip (<= 1 of the 1,000 test digits, 0.1 pt)
    assert abs(result["accuracy"] - final.accuracy) <= 0.1 + 1e-9
    assert result["bytes"] == report.artifact_bytes
    doc = json.loads((out / "report.json").read_text())
    assert doc["rows"][0]["step"] == "baseline" and doc["rows"][1]["step"] == "prune(magnitude)"
    assert doc["summary"]["bytes"] == report.artifact_bytes
    # the last stage's size is the file's too (its header also records the final metrics)
    assert final.bytes == report.artifact_bytes == doc["stages"][-1]["metrics"]["bytes"]
    assert final.bits_per_param == pytest.approx(8 * final.bytes / final.params)


def test_a_rerun_says_an_export_beside_the_artifact_is_of_the_earlier_one(
        recipe_factory, caplog: pytest.LogCaptureFixture) -> None:
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    out = Path(api.compress(recipe).out_dir)
    first = api.compress(recipe).plan.get("warnings", [])
    assert not [w for w in first if "export" in w]  # nothing exported: nothing said
    (out / "model.onnx").write_bytes(b"an export of the first run")
    for _ in range(2):  # the same bytes again (twice): its exports still describe it
        same = api.compress(recipe)
        assert not [w for w in same.plan.get("warnings", []) if "export of an earlier" in w]
    import os
    os.utime(out / "model.onnx", (1, 1))  # made before this model.occ: of another run's
    older = api.compress(recipe)
    assert [w for w in older.plan.get("warnings", []) if "export of an earlier" in w]
    recipe.write_text(recipe.read_text().replace("sparsity: 0.5", "sparsity: 0.6"))
    again = api.compress(recipe)
    said = [w for w in again.plan.get("warnings", []) if "export of an earlier" in w]
    assert len(said) == 1 and str(out / "model.onnx") in said[0] and "occ export" in said[0]
    assert said[0] in caplog.text  # on stderr too
    assert json.loads((out / "report.json").read_text())["plan"]["warnings"] == \
        again.plan["warnings"]


def test_an_order_against_the_built_in_one_is_said_on_stderr(
        recipe_factory, caplog: pytest.LogCaptureFixture) -> None:
    recipe = recipe_factory([{"type": "quantize", "weight_bits": 8},
                             {"type": "prune", "sparsity": 0.5}], order="as-written")
    warned = api.compress(recipe).plan["warnings"]
    warned = [w for w in warned if "against the built-in order" in w]  # (the tiny input is
    assert len(warned) == 1  # at chance, warned too)
    assert warned[0] in caplog.text  # on stderr, not only in report.json


def test_an_artifact_over_the_read_limit_is_not_written(
        recipe_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round trip decodes from memory: the file's size limit is checked there, as
    occ.load / occ eval would check it (before, compress wrote a file they refused)."""
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    monkeypatch.setenv("OCC_MAX_ARTIFACT_BYTES", "3000")
    result = CliRunner().invoke(app, ["compress", str(recipe)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "model.occ: would be" in line and "more than occ reads back" in line
    assert "OCC_MAX_ARTIFACT_BYTES=N" in line
    assert not list(Path(recipe).parent.rglob("model.occ"))


def test_the_same_run_in_another_folder_writes_the_same_artifact(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The header recorded the checkpoint's full path: the same run in a clone at a longer
    path wrote a longer header (the headline's 4,567 B read 4,587 B in an auditor's clone),
    and an artifact handed on named its maker's folders. It records the file name; the
    data's root (which eval reads) stays."""
    import shutil

    from occ.artifact.container import decode_artifact
    from tests.conftest import write_recipe

    written = []
    for folder in (tmp_path / "a", tmp_path / "a much longer folder name" / "b"):
        folder.mkdir(parents=True)
        shutil.copy(tiny_checkpoint, folder / "base.pt")
        path = write_recipe(folder, stages=[{"type": "prune", "sparsity": 0.5},
                                            {"type": "entropy_code"}],
                            checkpoint=str(folder / "base.pt"))
        written.append(Path(api.compress(str(path)).artifact).read_bytes())
    assert written[0] == written[1]
    recipe = decode_artifact(written[0]).header["recipe"]
    assert recipe["model"]["checkpoint"] == "base.pt" and "output" not in recipe


def test_resolved_recipe_reloads_equal(recipe_factory) -> None:
    from occ.recipe import load_recipe

    recipe_path = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    report = api.compress(recipe_path)
    resolved = load_recipe(Path(report.out_dir) / "recipe.resolved.yaml")
    assert resolved == load_recipe(Path(report.out_dir) / "recipe.resolved.yaml")
    assert resolved.stages[0].config.sparsity == 0.5
    assert resolved.model.checkpoint == load_recipe(recipe_path).model.checkpoint


def test_occ_load_returns_a_module(recipe_factory) -> None:
    import torch

    report = api.compress(recipe_factory([{"type": "prune", "sparsity": 0.5}]))
    model = occ.load(report.artifact)
    assert isinstance(model, torch.nn.Module)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_cli_compress_json_and_eval(recipe_factory) -> None:
    runner = CliRunner()
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    result = runner.invoke(app, ["compress", str(recipe), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    artifact = doc["artifact"]
    ev = runner.invoke(app, ["eval", artifact, "--json"])
    assert ev.exit_code == 0, ev.stderr
    # batch 256 vs the recipe's 128: a near-tie digit may flip (<= 1 of 1,000 test digits)
    assert abs(json.loads(ev.stdout)["accuracy"] - doc["rows"][-1]["accuracy"]) <= 0.1 + 1e-9
    ins = runner.invoke(app, ["inspect", artifact, "--json"])
    assert ins.exit_code == 0
    assert json.loads(ins.stdout)["tensors"][0]["name"] == "features.0.weight"


def test_checkpoint_that_does_not_fit(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path, stages=[{"type": "prune"}], checkpoint=str(tiny_checkpoint))
    text = recipe.read_text().replace("width: 0.25", "width: 0.5")
    recipe.write_text(text)
    result = CliRunner().invoke(app, ["compress", str(recipe)])
    assert result.exit_code == 2
    assert "does not fit model lenet5" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_non_state_dict_checkpoint(tmp_path: Path) -> None:
    import torch

    from tests.conftest import write_recipe

    bad = tmp_path / "list.pt"
    torch.save([1, 2, 3], bad)
    recipe = write_recipe(tmp_path, stages=[{"type": "prune"}], checkpoint=str(bad))
    result = CliRunner().invoke(app, ["compress", str(recipe)])
    assert result.exit_code == 2
    assert "not a state dict" in result.stderr
