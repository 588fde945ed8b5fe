"""The first hour: occ init / occ recipes, suggestions, --json errors, progress lines in
logs, quiet third-party loggers, and the README's bring-your-own-model examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from occ.cli import app
from occ.errors import RecipeError

ROOT = Path(__file__).parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(("model", "data"), [("lenet5", "mnist5k"),
                                             ("torchvision.resnet18", "imagefolder")])
def test_init_writes_a_recipe_that_validates(tmp_path: Path, model: str, data: str) -> None:
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir()
    result = invoke("init", "--model", model, "--data", data)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# occ recipe written by `occ init`")
    path = tmp_path / "recipe.yaml"
    path.write_text(result.stdout)
    checked = invoke("validate", str(path))
    assert checked.exit_code == 0, checked.output
    assert "prune(magnitude) → quantize → entropy_code" in checked.stdout


def test_init_on_digits_writes_a_recipe_lenet5_can_run(tmp_path: Path) -> None:
    """``occ init --data digits`` (lenet5 by default) validated, then compress always
    refused it: 8x8 images are too small for lenet5. The recipe now pads them to 16."""
    from occ.models import build_model

    text = invoke("init", "--data", "digits").stdout
    data = yaml.safe_load(text)["data"]
    assert data["pad_to"] == 16
    build_model("lenet5", {"input_hw": data["pad_to"]})  # what refused 8


def test_occ_api_and_errors_after_import_occ_without_torch() -> None:
    """README: ``occ.api.compress / evaluate / order``; after ``import occ`` alone,
    ``occ.api`` was an AttributeError."""
    code = ("import sys, occ\n"
            "assert occ.api.order(['P', 'Q'])['order']\n"
            "assert issubclass(occ.errors.RecipeError, occ.errors.OccError)\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_init_for_a_callable_says_its_arguments_are_passed_as_written() -> None:
    result = invoke("init", "--model", "mynet.model:build")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "kwargs:" in x)
    assert "num_classes" in line and "comes from the data" not in line


def test_init_rejects_unknown_names_with_a_suggestion() -> None:
    result = invoke("init", "--model", "torchvision.resnet19")
    assert result.exit_code == 2
    assert "did you mean 'torchvision.resnet18'?" in result.stderr


def test_recipes_are_shipped_in_the_package_and_equal_the_repos() -> None:
    packaged = sorted(p.name for p in (ROOT / "occ" / "recipes").glob("*.yaml"))
    assert packaged == sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    for name in packaged:  # one source of truth: the copies may not drift
        assert (ROOT / "occ" / "recipes" / name).read_bytes() == \
            (ROOT / "recipes" / name).read_bytes(), name
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'occ = ["recipes/*.yaml"]' in pyproject
    listed = invoke("recipes", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == [n[:-5] for n in packaged]
    shown = invoke("recipes", "demo")
    shipped = (ROOT / "recipes" / "demo.yaml").read_text()
    assert shown.exit_code == 0 and shown.stdout.endswith(shipped.replace("../runs/", "runs/"))
    assert "#   occ train lenet5 --data mnist5k --out runs/demo/baseline.pt\n" in shown.stdout
    as_json = invoke("recipes", "demo", "--json")
    assert json.loads(as_json.stdout) == {"name": "demo", "text": shown.stdout}
    assert "did you mean 'demo'" in invoke("recipes", "dmeo").stderr


@pytest.mark.parametrize("argv", [["init"], ["recipes"], ["recipes", "demo"]])
def test_init_and_recipes_do_not_import_torch(argv: list[str]) -> None:
    code = ("import sys; from occ.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("change", "pattern"), [
    ({"model": {"arch": "torchvision.resnet19"}},
     r"r\.yaml: model\.arch: unknown torchvision classifier 'torchvision\.resnet19' \(did you "
     r"mean 'torchvision\.resnet18'\?\)"),
    ({"model": {"arch": "lenet6"}}, r"model\.arch: unknown model 'lenet6' \(did you mean "
                                    r"'lenet5'\?\)"),
    ({"stages": [{"type": "quantise"}]}, r"r\.yaml: stages\[0\]\.type: unknown stage type "
                                         r"'quantise' \(did you mean 'quantize'\?\)"),
    ({"stages": [{"type": "prune", "sparsty": 0.5}]},
     r"r\.yaml: stages\[0\]: unknown key 'sparsty' \(did you mean 'sparsity'\?\)"),
    ({"seeed": 1}, r"r\.yaml: unknown key 'seeed' \(did you mean 'seed'\?\)"),
    ({"data": {"dataset": "mnist5k", "batch_size": 0}}, r"^r\.yaml: data\.batch_size: must"),
])
def test_validate_suggests_the_closest_name(tmp_path: Path, change: dict, pattern: str) -> None:
    from occ.recipe import load_recipe

    doc = {"version": 1, "name": "r", "model": {"arch": "lenet5"},
           "stages": [{"type": "prune"}], **change}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value).replace(str(tmp_path) + "/", "")
    assert re.search(pattern, message), message
    assert ":." not in message


def test_shipped_torchvision_names_match_torchvision() -> None:
    from torchvision import models

    from occ.models.torchvision_names import TORCHVISION_CLASSIFIERS

    assert sorted(TORCHVISION_CLASSIFIERS) == sorted(models.list_models(module=models)), \
        "regenerate occ/models/torchvision_names.py (see its docstring)"


def test_json_errors_are_a_json_document_with_the_exit_code(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "none.yaml"), "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["code"] == 2 and doc["error"]["type"] == "RecipeError"
    assert "cannot read recipe" in doc["error"]["message"]
    assert result.stderr == ""


def test_epoch_lines_when_not_a_terminal(recipe_factory) -> None:
    path = recipe_factory([{"type": "prune", "sparsity": 0.5, "epochs": 2}])
    result = invoke("compress", str(path), "--json")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("[prune(magnitude)]")]
    assert len(lines) == 2, result.stderr
    assert re.fullmatch(r"\[prune\(magnitude\)\] prune fine-tune epoch 2/2  loss \d+\.\d{4}  "
                        r"val acc \d+\.\d\d%  \d+\.\d s", lines[1]), lines[1]
    json.loads(result.stdout)  # stdout stays one JSON document


def test_verbose_keeps_third_party_loggers_quiet() -> None:
    import logging

    invoke("-v", "order", "-t", "P,Q")
    assert logging.getLogger("PIL").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("matplotlib").getEffectiveLevel() == logging.WARNING


def readme_block(title: str) -> str:
    """The first fenced block after the README heading ``title``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(title):]
    match = re.search(r"```(\w+)\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(2)


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_block("### From Python: model in, model out")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 14  # short enough to copy
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102  (our own README)
    result = scope["result"]
    assert result.accuracy > 50 and (tmp_path / "digits-net.occ").is_file()
    assert result.report.final_metrics().bitops < result.report.baseline.bitops
    torch = scope["torch"]
    x = torch.stack([scope["test"][i][0] for i in range(len(scope["test"]))])
    assert torch.equal(scope["same"](x), result.model.cpu()(x))  # the saved file, read back


def test_a_printed_recipe_runs_from_the_folder_it_is_printed_into(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its paths lead into that folder (runs/...), not above it (../runs/...)."""
    import shutil

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(invoke("recipes", "demo").stdout)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "runs" / "demo" / "baseline.pt")
    checked = invoke("validate", "demo.yaml", "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["recipe"]["output"] == str(tmp_path / "runs" / "demo")


def test_version_init_json_and_usage_errors_as_json() -> None:
    from occ.version import __version__

    shown = invoke("--version")
    assert shown.exit_code == 0 and shown.stdout == f"occ {__version__}\n"
    init = invoke("init", "--json")
    assert init.exit_code == 0 and json.loads(init.stdout)["text"].startswith("# occ recipe")
    usage = invoke("eval", "model.occ", "--bogus", "--json")
    assert usage.exit_code == 2 and usage.stderr == ""
    error = json.loads(usage.stdout)["error"]
    assert error["code"] == 2 and "No such option: --bogus" in error["message"]
