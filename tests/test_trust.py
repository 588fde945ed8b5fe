"""The trust boundary's parts on their own: trust decisions, bounded YAML, limits, domains,
output checks, resume fingerprints and the state manifest."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from occ.errors import OccError, RecipeError
from occ.limits import MAX_PARAMS, check_input_file, json_depth
from occ.outputs import check_output_dir, check_output_file
from occ.recipe import parse_recipe
from occ.safe_yaml import expanded_size, safe_load
from occ.trust import TrustError, check_recipe, code_references, require_code

BASE = {"version": 1, "name": "t", "model": {"arch": "lenet5"},
        "stages": [{"type": "prune", "sparsity": 0.5}]}


@pytest.mark.parametrize("ref", ["lenet5", "torchvision.resnet18", "not a ref", 3, None])
def test_names_that_run_no_code_pass_untrusted(ref: object) -> None:
    require_code(ref, trusted=False)  # type: ignore[arg-type]


def test_code_reference_needs_trust_and_says_what_would_run() -> None:
    with pytest.raises(TrustError, match=r"r\.yaml: model\.arch: refused: would import 'os' "
                                         r"and call 'os:system'.*--trust-code") as info:
        require_code("os:system", trusted=False, where="r.yaml: model.arch")
    assert info.value.exit_code == 2
    require_code("os:system", trusted=True)  # the user opted in: nothing to refuse


def test_every_arch_in_a_recipe_is_found() -> None:
    doc = {**BASE, "model": {"arch": "a.b:c"},
           "stages": [{"type": "distill", "student": {"arch": "x:y"}}]}
    assert list(code_references(doc)) == [("model.arch", "a.b:c"),
                                          ("stages[0].student.arch", "x:y")]
    with pytest.raises(TrustError, match=r"r\.yaml: model\.arch"):
        check_recipe(doc, source="r.yaml", trusted=False)
    check_recipe(doc, source="r.yaml", trusted=True)


def test_yaml_bounds() -> None:
    assert safe_load("a: &x [1, 2]\nb: *x\n", where="r") == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(RecipeError, match="duplicate key 'a'"):
        safe_load("a: 1\na: 2\n", where="r")
    with pytest.raises(RecipeError, match="recursive alias"):
        safe_load("a: &x [*x]\n", where="r")
    with pytest.raises(RecipeError, match="nested deeper"):
        safe_load("[" * 1000 + "]" * 1000, where="r")


def test_expanded_size_counts_aliases_without_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    # root + 2 keys + a(1+3) + b(1 + 3 * 4) = 1 + 2 + 4 + 13
    assert expanded_size(node, 10**6) == 20
    monkeypatch.setenv("OCC_MAX_YAML_NODES", "19")
    with pytest.raises(RecipeError, match="OCC_MAX_YAML_NODES"):
        safe_load(text, where="r")


def test_limits_are_raised_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_PARAMS.value() == 150_000_000
    monkeypatch.setenv("OCC_MAX_PARAMS", "5")
    assert MAX_PARAMS.value() == 5
    monkeypatch.setenv("OCC_MAX_PARAMS", "lots")
    with pytest.raises(OccError, match="OCC_MAX_PARAMS: must be a positive integer"):
        MAX_PARAMS.value()


def test_model_size_limit_applies_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.models import build_model

    monkeypatch.setenv("OCC_MAX_PARAMS", "1000")
    with pytest.raises(OccError, match="lenet5 would have [\\d,]+ parameters.*OCC_MAX_PARAMS"):
        build_model("lenet5", {"width": 0.25})
    monkeypatch.setenv("OCC_MAX_PARAMS", "10000000")
    assert build_model("torchvision.regnet_x_400mf", {"num_classes": 10}) is not None


def test_input_files_are_checked_by_type(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert check_input_file(tmp_path / "f") == 1
    os.mkfifo(tmp_path / "p")
    for path, what in ((tmp_path, "a directory"), (tmp_path / "p", "a FIFO"),
                       ("/dev/null", "a character device")):
        with pytest.raises(OccError, match=what):
            check_input_file(path)
    with pytest.raises(OccError, match="NUL"):
        check_input_file("a\x00b")


def test_json_depth_is_iterative() -> None:
    deep: object = 0
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep, 64) == 65  # stops just past the cap
    assert json_depth({"a": [1, {"b": 2}]}, 64) == 4  # the innermost scalar is a level


@pytest.mark.parametrize(("edit", "match"), [
    ({"name": "../x"}, "name: must be ASCII"),
    ({"name": "ｘ"}, "name: must be ASCII"),
    ({"device": "cudaXYZ"}, "device: must be auto, cpu, mps, cuda or cuda:N"),
    ({"seed": 2**32}, r"seed: must be an integer in \[0, 4294967295\]"),
    ({"seed": 2**64}, "seed: must fit in 64 bits"),
    ({"min_accuracy": float("nan")}, "min_accuracy: must be a finite number"),
    ({"data": {"num_workers": 65}}, r"data\.num_workers: must be in \[0, 64\]"),
    ({"stages": [{"type": "prune", "sparsity": 0.5, "lr": float("inf")}]},
     r"stages\[0\]\.lr: must be a finite number"),
    ({"stages": [{"type": "prune", "sparsity": 0.5, "device": "gpu"}]},
     r"stages\[0\]\.device: must be auto"),
])
def test_domains(edit: dict, match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        parse_recipe({**BASE, **edit}, source="r.yaml")


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device: str) -> None:
    assert parse_recipe({**BASE, "device": device}, source="r").device == device


def test_output_checks(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "run" / "model.occ").mkdir(parents=True)
    check_output_dir(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created
    assert not (tmp_path / "new").exists()
    with pytest.raises(RecipeError, match=r"file/run: .*file is a file, not a directory, so "
                                          r"run cannot be created there$"):
        check_output_dir(tmp_path / "file" / "run")
    with pytest.raises(RecipeError, match=r"file/x\.pt: .*file is a file, not a directory, "
                                          r"so x\.pt cannot be created there$"):
        check_output_file(tmp_path / "file" / "x.pt")
    with pytest.raises(RecipeError, match=r"file is a file, not a directory$"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(RecipeError, match=r"model\.occ is a directory"):
        check_output_dir(tmp_path / "run")
    with pytest.raises(RecipeError, match="is a directory; give a file name"):
        check_output_file(tmp_path / "run")
    check_output_file(tmp_path / "x.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]  # probes cleaned up


def test_outputs_never_replace_a_fifo_or_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "model.occ")
    (tmp_path / "null").symlink_to("/dev/null")
    with pytest.raises(RecipeError, match=r"f is a FIFO \(named pipe\), not a file occ may"):
        check_output_file(fifo)
    with pytest.raises(RecipeError, match=r"null is a character device, not a file occ may"):
        check_output_file(tmp_path / "null")
    with pytest.raises(RecipeError, match=r"model\.occ is a FIFO"):
        check_output_dir(tmp_path / "run")
    assert fifo.exists() and not fifo.is_file()  # left as it was


def test_fingerprint_covers_every_result_field() -> None:
    from occ.engine.resume import fingerprints

    regression = {**BASE, "data": {"dataset": "mnist5k-rotation"}}
    base = parse_recipe(regression, source="r")
    first = fingerprints(base, "sha")[0]
    assert fingerprints(replace(base, name="other", output="elsewhere"), "sha")[0] == first
    changed = [replace(base, loss="l1"), replace(base, seed=1), replace(base, device="cpu"),
               replace(base, data=replace(base.data, limit_train=10)),
               replace(base, model=replace(base.model, kwargs={"width": 0.5}))]
    assert all(fingerprints(r, "sha")[0] != first for r in changed)
    assert fingerprints(base, "other-sha")[0] != first


def test_state_manifest(tmp_path: Path) -> None:
    from occ.engine.state_manifest import UnverifiedStateError, record_state, verify_state

    state = tmp_path / "00-prune.occst"
    state.write_bytes(b"state")
    with pytest.raises(UnverifiedStateError, match="occ did not write it"):
        verify_state(state, "fp", where="--resume")
    import hashlib

    record_state(state, "fp", hashlib.sha256(b"state").hexdigest())
    verify_state(state, "fp", where="--resume")
    with pytest.raises(UnverifiedStateError, match="different recipe"):
        verify_state(state, "other", where="--resume")
    state.write_bytes(b"edited")
    with pytest.raises(UnverifiedStateError, match="changed after occ wrote it"):
        verify_state(state, "fp", where="--resume")
    assert json.loads((tmp_path / "manifest.json").read_text())["states"][state.name]


def test_an_unreadable_state_manifest_is_named_not_silently_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A manifest occ cannot read was overwritten in silence, and --resume then said the
    states it had listed were "not written by occ". Now both say what the manifest is."""
    import hashlib

    from occ.engine.state_manifest import UnverifiedStateError, record_state, verify_state

    first, second = tmp_path / "00-prune.occst", tmp_path / "01-quantize.occst"
    first.write_bytes(b"state")
    record_state(first, "fp", hashlib.sha256(b"state").hexdigest())
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UnverifiedStateError, match=r"manifest\.json is unreadable "
                                                   r"\(JSONDecodeError\), so it is not trusted"):
        verify_state(first, "fp", where="--resume")
    with caplog.at_level("WARNING", logger="occ"):
        record_state(second, "fp", hashlib.sha256(b"other").hexdigest())
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "manifest.json is unreadable (JSONDecodeError)" in said
    assert "--resume will not restore the states it listed" in said
    assert list(json.loads((tmp_path / "manifest.json").read_text())["states"]) == [second.name]


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


def test_pickle_scan_names_imports_without_running(tmp_path: Path) -> None:
    from occ.artifact.pickle_scan import code_imports

    for protocol in (0, 2, 4):
        path = tmp_path / f"p{protocol}.pt"
        path.write_bytes(pickle.dumps({"x": _Evil()}, protocol=protocol))
        assert code_imports(path) == [f"{os.system.__module__}.system"]
    (tmp_path / "junk").write_bytes(b"\x80\x05garbage")
    assert code_imports(tmp_path / "junk") == []


def test_a_trusted_whole_model_pickle_finds_the_users_classes_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from occ.artifact.checkpoint import load_checkpoint

    package = tmp_path / "usernet_beside"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = torch.nn.Linear(4, 2)\n")
    subprocess.run([sys.executable, "-c", "import torch; from usernet_beside.model import Net;"
                    " torch.save(Net(), 'whole.pt')"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)  # as `occ eval whole.pt --trust-checkpoint` run beside it
    path = sys.path.copy()
    with pytest.raises(TrustError, match="usernet_beside"):
        load_checkpoint(tmp_path / "whole.pt")
    loaded = load_checkpoint(tmp_path / "whole.pt", trust=True)
    assert sorted(loaded.state_dict) == ["fc.bias", "fc.weight"]
    assert sys.path == path  # the folders were on it for the unpickling only


def test_only_rank_0_probes_the_output_folder(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: rank 0 probes (and writes), not
    monkeypatch.setenv("RANK", "1")  # the others
    calls: list[str] = []
    monkeypatch.setattr("tempfile.mkstemp", lambda *a, **k: calls.append("probe") or (0, ""))
    assert check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert calls == [] and not (tmp_path / "new").exists()


def test_a_stray_rank_without_a_world_is_not_a_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.outputs import other_rank

    monkeypatch.setenv("RANK", "3")  # set by SLURM or MPI, not by torchrun
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not other_rank()
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert other_rank()


def test_an_unmounted_proc_does_not_make_every_file_a_pseudo_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import occ.limits as limits

    path = tmp_path / "x.pt"
    path.write_bytes(b"12")
    monkeypatch.setattr(limits.os.path, "ismount", lambda p: False)  # a chroot without /proc
    monkeypatch.setattr(limits.os, "stat", lambda p, *a, **k: os.lstat(path))
    assert not limits._pseudo(path, os.lstat(path))
