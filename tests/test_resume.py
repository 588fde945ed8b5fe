"""Never lose work: determinism, kill -9 then --resume, locks, mismatched states."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from occ import api
from occ.cli import app

STAGES = [{"type": "prune", "sparsity": 0.5, "epochs": 1},
          {"type": "prune", "sparsity": 0.8, "epochs": 3}]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_recipe_and_seed_give_byte_identical_artifacts(recipe_factory, tmp_path) -> None:
    recipe = recipe_factory(STAGES[:1])
    a = api.compress(recipe, out=str(tmp_path / "a"))
    b = api.compress(recipe, out=str(tmp_path / "b"))
    assert sha(Path(a.artifact)) == sha(Path(b.artifact))


@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_is_byte_identical(recipe_factory, tmp_path) -> None:
    recipe = recipe_factory(STAGES)
    clean = api.compress(recipe, out=str(tmp_path / "clean"))
    out = tmp_path / "killed"
    # Same thread count as this process (see conftest): float sums depend on it.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "occ", "compress", str(recipe),
                             "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    first_state = out / "stages" / "00-prune.occst"
    deadline = time.monotonic() + 120
    while not first_state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of stage 2's fine-tuning
    proc.wait()
    assert not (out / "model.occ").exists()
    result = CliRunner().invoke(app, ["compress", str(recipe), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.stderr
    assert sha(out / "model.occ") == sha(Path(clean.artifact))


@pytest.mark.slow
def test_resume_refuses_a_state_from_another_recipe(recipe_factory, tmp_path) -> None:
    out = tmp_path / "run"
    api.compress(recipe_factory(STAGES[:1]), out=str(out))
    changed = recipe_factory([{**STAGES[0], "sparsity": 0.6}])
    result = CliRunner().invoke(app, ["compress", str(changed), "--out", str(out), "--resume"])
    assert result.exit_code == 2
    assert "made by a different recipe" in result.stderr


@pytest.mark.slow
def test_resume_after_editing_a_later_stage_reuses_the_earlier_ones(recipe_factory, tmp_path,
                                                                    caplog) -> None:
    """Only the last stage edited: ``--resume`` restores the first and runs the edited one
    again (it refused the whole folder), giving what a clean run of the edited recipe
    gives."""
    out = tmp_path / "run"
    api.compress(recipe_factory(STAGES), out=str(out))
    first = sha(out / "stages" / "00-prune.occst")
    edited = recipe_factory([STAGES[0], {**STAGES[1], "sparsity": 0.7}])
    result = CliRunner().invoke(app, ["compress", str(edited), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.stderr
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "stages[1] prune(magnitude) changed since" in said and "run again" in said
    kept = json.loads((out / "report.json").read_text())["plan"]["warnings"]
    assert any("changed since" in w for w in kept)  # in the report too, not only on stderr
    assert sha(out / "stages" / "00-prune.occst") == first  # restored, not redone
    clean = api.compress(edited, out=str(tmp_path / "clean"))
    assert sha(out / "model.occ") == sha(Path(clean.artifact))


@pytest.mark.slow
def test_output_directory_in_use_is_refused(recipe_factory, tmp_path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".occ.lock").write_text(str(holder.pid))
        result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES[:1])),
                                          "--out", str(out)])
        assert result.exit_code == 2
        assert "in use by another occ run" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    # a stale lock (its process is gone) is taken over
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES[:1])),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert not (out / ".occ.lock").exists()


def test_output_lock_removes_only_the_empty_folders_it_made(tmp_path: Path) -> None:
    from occ.engine.resume import OutputLock

    with OutputLock(tmp_path / "a" / "b" / "run"):  # a run that failed before writing
        assert (tmp_path / "a" / "b" / "run" / ".occ.lock").is_file()
    assert list(tmp_path.iterdir()) == []
    with OutputLock(tmp_path / "a" / "b" / "run"):  # one that wrote its artifact
        (tmp_path / "a" / "b" / "run" / "model.occ").write_bytes(b"x")
    assert [p.name for p in (tmp_path / "a" / "b" / "run").iterdir()] == ["model.occ"]
    (tmp_path / "kept").mkdir()
    with OutputLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()  # there before: never removed


def test_a_fifo_as_the_lock_file_is_refused_not_read(tmp_path: Path) -> None:
    from occ.engine.resume import LOCK_NAME, OutputLock
    from occ.errors import RecipeError

    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / LOCK_NAME)  # reading it as a pid hung
    with pytest.raises(RecipeError,
                       match=r"\.occ\.lock: is a FIFO \(named pipe\), not a regular lock file"):
        OutputLock(tmp_path / "run").__enter__()


@pytest.mark.parametrize("kind", ["directory", "dev-null-link", "proc-link", "dir-link"])
def test_a_lock_that_is_not_a_regular_file_is_refused_with_exit_2(recipe_factory, tmp_path,
                                                                   kind: str) -> None:
    """``DIR/.occ.lock`` as a directory was "unexpected IsADirectoryError" (exit 1): it
    passed the special-file check, then its removal as a stale lock failed."""
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".occ.lock"
    if kind == "directory":
        lock.mkdir()
    else:
        target = {"dev-null-link": "/dev/null", "proc-link": "/proc/self/status",
                  "dir-link": str(tmp_path)}[kind]
        lock.symlink_to(target)
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES[:1])),
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unexpected" not in lines[0], result.stderr
    assert re.search(r"\.occ\.lock: is (a directory|a character device|a kernel pseudo-file)"
                     r".*occ keeps the output folder's lock there", lines[0]), lines[0]
    assert lock.is_symlink() or lock.is_dir()  # left as it was
    assert not (out / "model.occ").exists()


def test_a_lock_being_written_is_held_and_an_old_empty_one_is_stale(tmp_path: Path) -> None:
    """A run that found the lock empty (another had created it and not yet written its
    pid) took it over as stale, and both wrote into the folder. occ now creates the lock
    with its pid in it (a hard link of a written file), and counts a young empty lock
    (a file system without hard links) as held; an empty one older than a few seconds
    is stale."""
    from occ.engine.resume import LOCK_NAME, OutputLock
    from occ.errors import RecipeError

    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    lock.touch()
    with pytest.raises(RecipeError, match="in use by another occ run"), OutputLock(run):
        pass
    old = time.time() - 60
    os.utime(lock, (old, old))
    with OutputLock(run):
        assert lock.read_text().split()[0] == str(os.getpid())
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # no temporary left
    assert not lock.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_a_lock_whose_pid_was_reused_is_stale_and_a_held_one_names_its_pid(
        tmp_path: Path) -> None:
    """After a SIGKILL the lock keeps the pid; in a container the same low pid runs again
    soon, and the folder stayed "in use" for good. The lock records when its holder
    started: another process under that pid does not hold it."""
    from occ.engine.resume import LOCK_NAME, OutputLock, _start_time
    from occ.errors import RecipeError

    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = _start_time(holder.pid)
        assert started is not None
        lock.write_text(f"{holder.pid} {started}")
        held = rf"in use by another occ run \(pid {holder.pid}, lock .*; if no occ run is using"
        with pytest.raises(RecipeError, match=held), OutputLock(run):
            pass
        lock.write_text(f"{holder.pid} {started + 1}")  # that pid, another process
        with OutputLock(run):
            assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
    lock.write_text(str(os.getpid()))  # this pid, written by no lock of this process
    with OutputLock(run):
        pass


def test_without_proc_a_second_lock_in_the_same_process_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc (macOS, Windows) a lock records no start time: a second run in the
    same process (two occ.compress calls into one folder) read its own pid as stale, took
    the lock and removed it on exit, unprotecting the first."""
    import occ.engine.resume as resume_mod
    from occ.errors import RecipeError

    monkeypatch.setattr(resume_mod, "_start_time", lambda pid: None)
    run = tmp_path / "run"
    run.mkdir()
    with resume_mod.OutputLock(run):
        with pytest.raises(RecipeError, match="in use by another occ run"), \
                resume_mod.OutputLock(run):
            pass
        assert (run / resume_mod.LOCK_NAME).exists()  # the first run's, still there
    (run / resume_mod.LOCK_NAME).write_text(str(os.getpid()))  # left by no lock held here
    with resume_mod.OutputLock(run):
        pass


def test_the_lock_is_read_within_a_few_bytes(tmp_path: Path) -> None:
    """A lock linked to a big (sparse) file was read whole: 8 GB of memory for a "pid"."""
    import tracemalloc

    from occ.engine.resume import LOCK_NAME, OutputLock

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: no disk, but read_text() would allocate it all
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).symlink_to(big)
    tracemalloc.start()
    try:
        with OutputLock(tmp_path / "run"):  # not a pid: a stale lock, taken over
            assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"reading the lock allocated {peak:,} bytes"
    assert big.stat().st_size == 64 << 20  # the link was replaced, its target untouched


def test_collapsed_accuracy_stops_with_exit_1(recipe_factory, tmp_path) -> None:
    """min_accuracy is read on the val split, as every decision is (it read the test
    split's figure and called a 0.1 pt miss "collapsed": stage audit F11)."""
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.999}], min_accuracy=15.0)
    result = CliRunner().invoke(app, ["compress", str(recipe)])
    assert result.exit_code == 1
    assert re.search(r"stages\[0\] prune\(magnitude\): val accuracy [0-9.]+% is below "
                     r"min_accuracy 15$", result.stderr.strip()), result.stderr
    # a floor the input model is already under stops the run before any stage
    above = recipe_factory([{"type": "prune", "sparsity": 0.5}], min_accuracy=90.0)
    result = CliRunner().invoke(app, ["compress", str(above)])
    assert result.exit_code == 1
    assert re.search(r"the input model's val accuracy [0-9.]+% is below min_accuracy 90 "
                     r"before any stage; nothing was written", result.stderr), result.stderr
    # a failed run into a folder an earlier run wrote says whose model.occ is there (F10)
    ok = recipe_factory([{"type": "prune", "sparsity": 0.5}])  # the same file, rewritten
    assert CliRunner().invoke(app, ["compress", str(ok)]).exit_code == 0
    above = recipe_factory([{"type": "prune", "sparsity": 0.5}], min_accuracy=90.0)
    result = CliRunner().invoke(app, ["compress", str(above)])
    assert result.exit_code == 1
    out = Path(str(recipe)).parent / "out" / "model.occ"
    assert result.stderr.strip().endswith(f"; the {out} there is an earlier run's, not this "
                                          "one's"), result.stderr


@pytest.mark.parametrize("trust", [False, True])
def test_pickle_payload_checkpoint_is_refused_unless_trusted(tmp_path, trust: bool) -> None:
    import torch

    from tests.conftest import write_recipe

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload()}, bad)
    recipe = write_recipe(tmp_path, stages=[{"type": "prune"}], checkpoint=str(bad))
    args = ["compress", str(recipe)] + (["--trust-checkpoint"] if trust else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    if not trust:
        assert "refused" in result.stderr and "--trust-checkpoint" in result.stderr
        assert not marker.exists()
    else:
        assert marker.exists()  # trusting it really ran its code: that is what trust means


def _forge(state: Path, edit) -> None:
    """Rewrite stage state ``state`` with ``edit(header, tensors)`` applied and put its new
    sha256 in the manifest: what anyone who can write the folder can do (no secret)."""
    from occ.artifact.container import decode_artifact, encode_artifact

    artifact = decode_artifact(state.read_bytes())
    header = {k: v for k, v in artifact.header.items() if k != "streams"}
    tensors = dict(artifact.tensors)
    edit(header, tensors)
    data = encode_artifact(header, tensors)
    state.write_bytes(data)
    manifest = state.parent / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["states"][state.name]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(doc))


def _record(edit):
    return lambda header, tensors: edit(header["state"]["record"])


FORGED = {  # what each edit did before: "unexpected ..." (exit 1), or mixed outputs
    "metrics-missing": (_record(lambda r: r.pop("metrics")),
                        r"state\.record: missing field 'metrics'"),  # KeyError
    "record-list": (lambda h, t: h["state"].update(record=[1]),
                    r"state\.record: must be a mapping, got list"),  # TypeError
    "metrics-str": (_record(lambda r: r.update(metrics="x")),
                    r"state\.record\.metrics: must be a mapping, got str"),  # ValueError
    "accuracy-str": (_record(lambda r: r["metrics"].update(accuracy="high")),
                     r"state\.record\.metrics\.accuracy: must be a number or null, got str"),
    "accuracy-null": (_record(lambda r: r["metrics"].update(accuracy=None)),
                      r"state\.record\.metrics\.accuracy: must be a number, got null"),
    "params-missing": (_record(lambda r: r["metrics"].pop("params")),
                       r"state\.record\.metrics: not occ metrics"),
    "seconds-str": (_record(lambda r: r.update(seconds="slow")),  # wrote model.occ, then crashed
                    r"state\.record\.seconds: must be a number, got str"),
    "notes-int": (_record(lambda r: r.update(notes=[1])),
                  r"state\.record\.notes\[0\]: must be a string, got int"),
    "tensors-missing": (lambda h, t: t.clear(),  # restore's own error, now naming the file
                        r"01-prune\.occst: tensors do not fit the model"),
}


@pytest.mark.slow
def test_resume_refuses_a_forged_state_record_naming_the_file(recipe_factory,
                                                              tmp_path) -> None:
    """A state whose record was edited and its manifest entry re-computed: one line naming
    the state file, exit 2, and the previous run's outputs left as they were."""
    import shutil

    recipe = recipe_factory([STAGES[0], {**STAGES[1], "epochs": 1}])
    done = tmp_path / "done"
    api.compress(recipe, out=str(done))
    outputs = ("model.occ", "report.json", "report.md", "recipe.resolved.yaml")
    for name, (edit, line) in FORGED.items():
        out = tmp_path / name
        shutil.copytree(done, out)
        before = {n: sha(out / n) for n in outputs}
        (out / "model.occ").unlink()  # a resume that wrote nothing must not make one
        _forge(out / "stages" / "01-prune.occst", edit)
        result = CliRunner().invoke(app, ["compress", str(recipe), "--out", str(out),
                                          "--resume"])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (name, result.stderr)
        assert len(lines) == 1 and "error: unexpected" not in lines[0], (name, result.stderr)
        assert re.search(r"01-prune\.occst: " + line if "occst" not in line else line,
                         lines[0]), (name, lines[0])
        assert not (out / "model.occ").exists(), name
        assert {n: sha(out / n) for n in outputs[1:]} == {n: before[n] for n in outputs[1:]}


def test_outputs_are_all_rendered_before_any_is_written(recipe_factory, tmp_path,
                                                        monkeypatch) -> None:
    """A report that fails to render leaves no model.occ or resolved recipe (the artifact
    was written first, then the reports crashed: a new model.occ beside old reports)."""
    from occ.engine import runner

    def broken(report, out_dir):
        raise ValueError("Unknown format code 'f' for object of type 'str'")

    monkeypatch.setattr(runner, "report_files", broken)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="Unknown format code"):
        api.compress(recipe_factory(STAGES[:1]), out=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["stages"]  # the state, nothing final
