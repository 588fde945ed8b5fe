"""Where user code (``pkg.module:callable``) is found: beside the recipe, then the working
directory, checked before any data is loaded; and, recorded in artifacts and checkpoints,
from any working directory with ``--trust-code``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from occ import api
from occ.callables import import_callable, imported_folders, recorded_folders
from occ.cli import app
from occ.errors import ArtifactError, RecipeError

NETS = """
import torch

def build(in_channels=1, num_classes=10):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(),
                               torch.nn.Linear(in_channels * 8 * 8, num_classes))
"""

DATA = """
CALLS = []

def splits():
    from occ.data import load_data
    from occ.recipe import DataSpec

    CALLS.append(1)
    bundle = load_data(DataSpec(dataset="digits"))
    return {"train": bundle.train, "val": bundle.val, "test": bundle.test}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """A user's project folder: a model package and a dataset module beside a recipe, and
    an empty folder to run from. ``sys.path`` and the imported modules are put back after."""
    suffix = tmp_path.name.replace("-", "_")
    nets, data = f"occ_cf_nets_{suffix}", f"occ_cf_data_{suffix}"
    proj = tmp_path / "proj"
    (proj / nets).mkdir(parents=True)
    (proj / nets / "__init__.py").write_text(NETS)
    (proj / f"{data}.py").write_text(DATA)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    saved = list(sys.path)
    monkeypatch.setattr(sys, "path", list(saved))
    monkeypatch.chdir(elsewhere)

    def forget() -> None:
        """As a fresh process: the user's modules not imported, their folders not on
        sys.path."""
        sys.path[:] = saved
        for name in (nets, data):
            sys.modules.pop(name, None)

    yield {"proj": proj, "elsewhere": elsewhere, "nets": nets, "data": data,
           "forget": forget}
    forget()


def write_recipe(proj: Path, nets: str, data: str, **changes: object) -> Path:
    """A recipe in ``proj`` naming the user's model and data, with a checkpoint beside it."""
    import torch

    builder: dict[str, Any] = {}
    exec(NETS, builder)  # the builder's model, without importing the user's package
    torch.save(builder["build"]().state_dict(), proj / "net.pt")
    doc = {"version": 1, "name": "user-code",
           "model": {"arch": f"{nets}:build", "checkpoint": "net.pt"},
           "data": {"dataset": f"{data}:splits", "batch_size": 128},
           "stages": [{"type": "entropy_code"}], "output": str(proj / "out"),
           "guard": {"enabled": False}, **changes}
    path = proj / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def one_line(result: object) -> str:
    err = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_builder_beside_the_recipe_imports_from_any_working_directory(
        project: dict) -> None:
    recipe = write_recipe(project["proj"], project["nets"], project["data"])
    plan = api.check_compress(str(recipe), trust_code=True)  # imports, nothing else
    assert plan.recipe.model.arch == f"{project['nets']}:build"
    assert project["nets"] in sys.modules
    assert sys.modules[project["data"]].CALLS == []  # imported, not called


def test_a_builder_that_does_not_import_is_refused_before_the_data_loads(
        project: dict) -> None:
    proj = project["proj"]
    recipe = write_recipe(proj, "occ_cf_no_such_pkg", project["data"])
    result = CliRunner().invoke(app, ["compress", str(recipe), "--trust-code"])
    err = one_line(result)
    assert f"{recipe}: model.arch: cannot import 'occ_cf_no_such_pkg'" in err
    assert f"in {proj.resolve()}, {project['elsewhere'].resolve()};" in err  # recipe, cwd
    assert project["data"] not in sys.modules  # the data was not even imported
    assert not (proj / "out").exists()


def test_the_recipe_folder_is_searched_before_the_working_directory(project: dict) -> None:
    name = f"{project['nets']}_twin"
    (project["proj"] / f"{name}.py").write_text("def build():\n    return 'recipe'\n")
    (project["elsewhere"] / f"{name}.py").write_text("def build():\n    return 'cwd'\n")
    try:
        fn = import_callable(f"{name}:build", where="model.arch", search=[project["proj"]])
        assert fn() == "recipe"
        assert imported_folders([f"{name}:build", "lenet5"]) == [str(project["proj"].resolve())]
    finally:
        sys.modules.pop(name, None)


def test_validate_says_the_recipe_names_code_and_with_trust_code_imports_it(
        project: dict) -> None:
    recipe = write_recipe(project["proj"], project["nets"], project["data"])
    plain = CliRunner().invoke(app, ["validate", str(recipe)])
    assert plain.exit_code == 0, plain.output
    assert f"model.arch: '{project['nets']}:build' runs code: compress needs --trust-code" \
        in plain.stdout
    assert project["nets"] not in sys.modules  # nothing imported without the flag
    trusted = CliRunner().invoke(app, ["validate", str(recipe), "--trust-code", "--json"])
    assert trusted.exit_code == 0, trusted.output
    assert {c["where"] for c in json.loads(trusted.stdout)["code"]} == {"model.arch",
                                                                         "data.dataset"}
    bad = write_recipe(project["proj"], "occ_cf_no_such_pkg", project["data"])
    assert "model.arch: cannot import 'occ_cf_no_such_pkg'" in one_line(
        CliRunner().invoke(app, ["validate", str(bad), "--trust-code"]))
    assert "runs code" in CliRunner().invoke(app, ["validate", str(bad)]).stdout


@pytest.mark.parametrize("value", [["relative/folder"], "/one/string", [1], ["/a"] * 17,
                                   ["/a\0b"], ["/x\nerror: all good"], ["/x\x1b[31mred"]])
def test_recorded_folders_must_be_a_short_list_of_absolute_paths(value: object) -> None:
    with pytest.raises(ArtifactError, match="absolute folder paths"):
        recorded_folders(value, where="code_folders", error=ArtifactError)
    assert recorded_folders(None, where="x", error=ArtifactError) == ()
    assert recorded_folders(["/a", "/b"], where="x", error=ArtifactError) == ("/a", "/b")


def test_import_errors_say_where_occ_looked(project: dict) -> None:
    with pytest.raises(RecipeError, match=r"looked on sys\.path and in /nowhere, "):
        import_callable("occ_cf_absent:build", where="model.arch", search=["/nowhere"])
    with pytest.raises(RecipeError) as err:  # a folder that breaks the line is escaped
        import_callable("occ_cf_absent:build", where="model.arch", search=["/x\nerror: y"])
    assert "\n" not in str(err.value) and "'/x\\nerror: y'" in str(err.value)


def test_a_module_that_calls_sys_exit_at_import_is_one_line_exit_2(project: dict) -> None:
    """SystemExit(0) while importing would end occ with 0, as if the check passed."""
    proj = project["proj"]
    (proj / f"{project['nets']}.py").write_text("raise SystemExit(0)\n")
    (proj / project["nets"] / "__init__.py").unlink()
    (proj / project["nets"]).rmdir()
    recipe = write_recipe(proj, project["nets"], project["data"])
    for command in ("validate", "compress"):
        err = one_line(CliRunner().invoke(app, [command, str(recipe), "--trust-code"]))
        assert err == (f"error: {recipe}: model.arch: importing {project['nets']!r} called "
                       "sys.exit(0)\n"), err


def test_a_trusted_import_appends_its_folder_and_a_failed_one_leaves_none(
        project: dict) -> None:
    """After what is installed (never shadowing it), and kept: the builder may import a
    module beside it only when called, and spawn-started DataLoader workers re-import the
    user's module by name. A failed import takes its folders off again."""
    proj = project["proj"]
    (proj / "occ_cf_sibling.py").write_text("VALUE = 7\n")
    (proj / project["nets"] / "__init__.py").write_text(
        "def build():\n    from occ_cf_sibling import VALUE\n    return VALUE\n")
    before = list(sys.path)
    build = import_callable(f"{project['nets']}:build", where="model.arch", search=[proj])
    assert sys.path[:len(before)] == before and str(proj.resolve()) in sys.path[len(before):]
    assert build() == 7  # the sibling module, imported at call time
    sys.modules.pop("occ_cf_sibling", None)
    sys.path[:] = before
    with pytest.raises(RecipeError, match="cannot import"):
        import_callable("occ_cf_absent:build", where="model.arch", search=[proj])
    assert sys.path == before


def _eval(path: Path, *flags: str) -> object:
    return CliRunner().invoke(app, ["eval", str(path), "--json", *flags])


def test_an_artifact_remembers_where_its_code_was_and_evaluates_from_anywhere(
        project: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.artifact import header as artifact_header
    from occ.artifact.container import read_artifact, write_artifact

    proj = project["proj"]
    recipe = write_recipe(proj, project["nets"], project["data"])
    made = CliRunner().invoke(app, ["compress", str(recipe), "--trust-code", "--json"])
    assert made.exit_code == 0, made.output
    accuracy = json.loads(made.stdout)["stages"][-1]["metrics"]["accuracy"]
    artifact = proj / "out" / "model.occ"
    header = read_artifact(artifact).header
    assert artifact_header.code_folders(header) == (str(proj.resolve()),)
    project["forget"]()  # a later session, in another folder, without PYTHONPATH
    refused = _eval(artifact)
    assert refused.exit_code == 2 and "--trust-code" in refused.stdout
    assert project["nets"] not in sys.modules and str(proj.resolve()) not in sys.path
    trusted = _eval(artifact, "--trust-code")
    assert trusted.exit_code == 0, trusted.output
    assert json.loads(trusted.stdout)["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    project["forget"]()
    import occ

    assert occ.load(artifact, trust_code=True) is not None  # the API, likewise
    # its ONNX export records the folders too: eval --trust-code finds the dataset there
    onnx_file = proj.parent / "elsewhere.onnx"
    exported = CliRunner().invoke(app, ["export", str(artifact), "--trust-code", "--out",
                                        str(onnx_file)])
    assert exported.exit_code == 0, exported.output
    project["forget"]()
    assert _eval(onnx_file).exit_code == 2  # the recorded folders are not read without it
    onnx_trusted = _eval(onnx_file, "--trust-code")
    assert onnx_trusted.exit_code == 0, onnx_trusted.output
    assert json.loads(onnx_trusted.stdout)["accuracy"] == pytest.approx(accuracy, abs=5.0)
    # An artifact from before the folders were recorded: it still reads, and finds its
    # code where it always did (the working directory), not from elsewhere.
    old = proj / "old.occ"
    write_artifact(old, {k: v for k, v in header.items() if k != "code_folders"},
                   read_artifact(artifact).tensors)
    project["forget"]()
    assert "cannot import" in json.loads(_eval(old, "--trust-code").stdout)["error"]["message"]
    monkeypatch.chdir(proj)
    assert _eval(old, "--trust-code").exit_code == 0


def test_a_trained_checkpoint_remembers_where_its_code_was(
        project: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.artifact.checkpoint import load_checkpoint

    proj = project["proj"]
    monkeypatch.chdir(proj)  # occ train finds the user's code in the working directory
    out = proj / "base.pt"
    api.train(f"{project['nets']}:build", data=f"{project['data']}:splits", epochs=1,
              out=str(out), trust_code=True)
    ckpt = load_checkpoint(out)
    assert ckpt.code_folders(where=str(out)) == (str(proj.resolve()),)
    project["forget"]()
    monkeypatch.chdir(project["elsewhere"])
    result = _eval(out, "--trust-code")
    assert result.exit_code == 0, result.output


def test_a_header_whose_code_folders_are_not_paths_is_refused() -> None:
    from occ.artifact import header as artifact_header

    assert artifact_header.code_folders({}) == ()
    with pytest.raises(ArtifactError, match="header code_folders: must be a list"):
        artifact_header.code_folders({"code_folders": "/tmp"})


def test_occ_train_says_a_builder_or_dataset_does_not_import_before_loading(
        project: dict) -> None:
    out = project["elsewhere"] / "x.pt"
    for args, where in ((["occ_cf_no_such_pkg:build", "--data", "digits"], "MODEL: "),
                        (["lenet5", "--data", "occ_cf_no_such_pkg:splits"], "--data: ")):
        err = one_line(CliRunner().invoke(app, ["train", *args, "--out", str(out),
                                                "--trust-code"]))
        assert err.startswith(f"error: {where}cannot import 'occ_cf_no_such_pkg'"), err
    assert not out.exists()
