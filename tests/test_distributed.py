"""DDP: two gloo processes on the CPU finish, write one artifact, match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from occ.cli import app

STAGES = [{"type": "prune", "sparsity": 0.7, "epochs": 2}]


@pytest.mark.slow
def test_two_gloo_processes_match_one(recipe_factory, tmp_path: Path) -> None:
    recipe = recipe_factory(STAGES)
    single = CliRunner().invoke(app, ["compress", str(recipe), "--out", str(tmp_path / "one"),
                                      "--json"])
    assert single.exit_code == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "occ", "compress", str(recipe), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    # On failure show where a rank died (the head of stderr) and torchrun's summary (tail).
    assert proc.returncode == 0, f"{proc.stderr[:4000]}\n...\n{proc.stderr[-1500:]}"
    doc = json.loads(proc.stdout)  # only rank 0 printed: one JSON document
    assert "find_unused_parameters" not in proc.stderr  # every parameter is used: not asked
    assert sorted(p.name for p in out.glob("*.occ")) == ["model.occ"]
    one = json.loads(single.stdout)["rows"][-1]
    two = doc["rows"][-1]
    assert two["nonzero"] == one["nonzero"]  # same sparsity target reached exactly
    # Each rank takes half of each batch, so the ranks' batch statistics and the order of
    # sums differ from one process; the tolerance is the accuracy spread of short
    # fine-tunes on this tiny task.
    assert abs(two["accuracy"] - one["accuracy"]) < 5.0


def test_nproc_beyond_the_machine_is_refused(recipe_factory) -> None:
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES)), "--nproc", "999"])
    assert result.exit_code == 2
    assert "--nproc: must be in [1," in result.stderr


@pytest.mark.parametrize("nproc", ["0", "-1"])
def test_nproc_below_one(recipe_factory, nproc: str) -> None:
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES)), "--nproc", nproc])
    assert result.exit_code == 2


def test_each_rank_takes_its_share_of_the_recipe_batch(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    from occ import distributed, training

    data = TensorDataset(torch.randn(200, 4), torch.zeros(200, dtype=torch.long))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        monkeypatch.setattr(distributed, "world_size", lambda: 4)  # as if torchrun started 4
        net, loader, sampler = training._parallel(torch.nn.Linear(4, 2), DataLoader(
            data, batch_size=64), torch.device("cpu"))
        assert sampler is not None and loader.batch_size == 16  # 4 ranks x 16 = 64 a step
        del net
    finally:
        dist.destroy_process_group()


class _TwoHeads(torch.nn.Module):
    """A body with BatchNorm and two heads; the loss reads ``used`` of them."""

    def __init__(self, used: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        self.heads = torch.nn.ModuleList([torch.nn.Linear(8, 2), torch.nn.Linear(8, 2)])
        self.used = used

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads[:self.used]]


@pytest.mark.parametrize(("used", "unused"), [(2, []), (1, ["heads.1.weight", "heads.1.bias"])])
def test_ddp_looks_for_unused_parameters_only_when_a_step_leaves_some_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        used: int, unused: list[str]) -> None:
    """torch warns on every rank and stage when it is told to look and finds none; told
    not to look when a head is unused, its next step fails."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    from occ import distributed, training

    data = TensorDataset(torch.randn(40, 4), torch.arange(40) % 2)
    model = _TwoHeads(used)
    loader = DataLoader(data, batch_size=8)
    assert training.unused_parameters(model, loader, torch.device("cpu"),
                                      training.default_loss) == unused
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        stats, rng = model.body[1].running_mean.clone(), torch.get_rng_state()
        net, _, _ = training._parallel(model, loader, torch.device("cpu"),
                                       training.default_loss)
        assert net.find_unused_parameters is bool(unused)
        # the check ran on a copy with the generators restored: nothing the run sees moved
        assert torch.equal(model.body[1].running_mean, stats)
        assert torch.equal(torch.get_rng_state(), rng)
        for x, y in list(loader)[:3]:  # steps after the first: DDP finished each reduction
            net(x, y).backward()
        assert "find_unused_parameters" not in capfd.readouterr().err
        del net
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("batch", "ranks", "each", "warned"),
                         [(64, 2, 32, False), (64, 4, 16, False), (10, 4, 3, True),
                          (5, 8, 1, True)])
def test_a_batch_the_ranks_do_not_divide_rounds_up_and_says_so(
        batch: int, ranks: int, each: int, warned: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    from occ import training

    training._rank_batch.cache_clear()
    with caplog.at_level("WARNING", logger="occ"):
        assert training._rank_batch(batch, ranks) == each
    assert (f"batch size {batch} does not split evenly over {ranks} processes: each takes "
            f"{each}, a step sees {each * ranks} samples" in caplog.text) == warned


def test_a_world_size_without_torchrun_s_other_variables_exits_2(
        recipe_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES)), "--out", str(out)])
    assert result.exit_code == 2
    assert ("WORLD_SIZE: is 2 but RANK, MASTER_ADDR, MASTER_PORT are not set: start occ with "
            "torchrun" in result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "model.occ").exists()


@pytest.mark.parametrize(("env", "line"), [
    ({"MASTER_PORT": "notaport"},
     "MASTER_PORT: must be an integer in [1, 65535] (a TCP port number), got 'notaport'"),
    ({"MASTER_PORT": "70000"},
     "MASTER_PORT: must be an integer in [1, 65535] (a TCP port number), got '70000'"),
    ({"RANK": "5"}, "RANK: must be an integer in [0, 1] (for WORLD_SIZE 2), got '5'"),
    ({"RANK": "-1"}, "RANK: must be an integer in [0, 1] (for WORLD_SIZE 2), got '-1'"),
    ({"LOCAL_RANK": "3"}, "LOCAL_RANK: must be an integer in [0, 1] (2 GPU(s) here), got '3'"),
], ids=["port-text", "port-range", "rank-high", "rank-negative", "local-rank-gpus"])
def test_torchrun_variables_out_of_range_exit_2_before_joining(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str) -> None:
    """A rank that can never join would wait out torch's 30-minute timeout: refused at once.
    (LOCAL_RANK: on a machine said to have 2 GPUs.)"""
    import torch
    import torch.distributed as dist

    from occ import distributed
    from occ.errors import RecipeError

    def never(**_kwargs: object) -> None:
        raise AssertionError("init_process_group was called")

    monkeypatch.setattr(dist, "init_process_group", never)
    if "LOCAL_RANK" in env:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    base = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RecipeError) as err:
        distributed.setup()
    assert str(err.value) == line


TRAIN = ["train", "lenet5", "--width", "0.25", "--epochs", "1", "--batch-size", "128"]


@pytest.mark.slow
def test_train_under_two_gloo_processes_trains_one_model_that_rank_0_writes(
        tmp_path: Path) -> None:
    single = CliRunner().invoke(app, [*TRAIN, "--out", str(tmp_path / "one.pt"), "--json"])
    assert single.exit_code == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "two.pt"
    proc = subprocess.run(  # occ's own launcher (the compress test above runs torchrun)
        [sys.executable, "-m", "occ", *TRAIN, "--out", str(out), "--json", "--nproc", "2"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{proc.stderr[:4000]}\n...\n{proc.stderr[-1500:]}"
    doc = json.loads(proc.stdout)  # only rank 0 printed: one JSON document
    assert "find_unused_parameters" not in proc.stderr
    from occ.artifact.checkpoint import load_checkpoint

    assert load_checkpoint(str(out), trust=False).meta["metrics"]["accuracy"] == doc["accuracy"]
    # Each rank took half of each batch of 128 (the same steps as one process): one short
    # epoch lands within the spread of such runs of the single process's accuracy.
    assert abs(doc["accuracy"] - json.loads(single.stdout)["accuracy"]) < 5.0


def test_train_one_epoch_prints_its_val_accuracy_without_a_slope(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*TRAIN, "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 0, result.stderr
    said = result.stdout + result.stderr  # the console writes to stderr when not a terminal
    assert "val accuracy, last 1 epoch: " in said
    assert "slope" not in said


def test_train_nproc_beyond_the_machine_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*TRAIN, "--out", str(tmp_path / "x.pt"), "--nproc", "999"])
    assert result.exit_code == 2
    assert "--nproc: must be in [1," in result.stderr
    assert not (tmp_path / "x.pt").exists()


# --- --nproc N: bad input is one line and exit 2, before and after the relaunch ---------

BAD_TRAIN = [
    (["--data", "imagefolder", "--root", "/nonexistent/occ-data"],
     "--root: directory not found: /nonexistent/occ-data"),
    (["--out", "/dev/null"], "--out: /dev/null is a character device, not a file occ may replace"),
    (["--epochs", "0"], "--epochs: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("extra", "line"), BAD_TRAIN, ids=["data-root", "out", "epochs"])
def test_train_nproc_checks_its_input_once_before_starting_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], line: str) -> None:
    import occ.launch

    def never(*_args: object) -> None:
        raise AssertionError("processes were started for bad input")

    monkeypatch.setattr(occ.launch, "run_ranks", never)
    result = CliRunner().invoke(app, [*TRAIN, "--out", str(tmp_path / "x.pt"), *extra,
                                      "--nproc", "2"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {line}"]
    assert list(tmp_path.iterdir()) == []


def test_train_nproc_unknown_model_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "lenet6", "--out", str(tmp_path / "x.pt"),
                                      "--nproc", "2"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.arch: unknown model 'lenet6' (did you mean 'lenet5'?); allowed: "
        "lenet300, lenet5, resnet20, resnet32, resnet56, vgg_small, torchvision.<name>, "
        "pkg.module:callable"]


def test_compress_nproc_checks_its_input_once_before_starting_processes(
        recipe_factory, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["compress", str(recipe_factory(STAGES)), "--out",
                                      str(tmp_path / "file" / "run"), "--nproc", "2", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["where"]) == (2, "--out")
    assert "file is a file, not a directory, so run cannot be created" in error["message"]


def test_a_rank_hands_its_error_to_the_launching_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a process started by --nproc does with bad input: tell the launcher, say nothing."""
    from occ import launch

    with launch._rank_errors() as folder:  # sets OCC_RANK_ERRORS, as for the ranks
        for name, value in {"TORCHELASTIC_RUN_ID": "r", "WORLD_SIZE": "2", "RANK": "1",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(app, ["train", "lenet6", "--out", str(tmp_path / "x.pt")])
        assert result.exit_code == 2 and result.stderr == "" and result.stdout == ""
        failure = launch._first_error(folder)
    assert failure is not None and failure["code"] == 2 and failure["type"] == "ModelError"
    assert failure["message"].startswith("model.arch: unknown model 'lenet6'")


@pytest.mark.parametrize("case", ["no-torchrun", "rank-out-of-range", "shared-folder",
                                  "open-mode", "other-name"])
def test_rank_errors_left_in_the_environment_do_not_silence_occ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """OCC_RANK_ERRORS counts only in a rank torchrun started, naming the launcher's
    private folder; otherwise the error is printed as usual and no file is written."""
    from occ import launch

    folder = tmp_path / "occ-ranks-x"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    env = {"TORCHELASTIC_RUN_ID": "r", "WORLD_SIZE": "2", "RANK": "1",
           launch.RANK_ERRORS_ENV: str(folder)}
    if case == "no-torchrun":
        del env["TORCHELASTIC_RUN_ID"], env["WORLD_SIZE"]
        env["RANK"] = "-3"
    elif case == "rank-out-of-range":
        env["RANK"] = "2"
    elif case == "shared-folder":
        env[launch.RANK_ERRORS_ENV] = "/tmp"
    elif case == "open-mode":
        folder.chmod(0o755)
    else:
        folder = folder.rename(tmp_path / "mine")
        env[launch.RANK_ERRORS_ENV] = str(folder)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    failure: launch.Failure = {"message": "m", "code": 2, "type": "RecipeError", "where": None}
    assert launch.hand_off(failure) is False
    assert list(folder.iterdir()) == []


@pytest.mark.slow
def test_a_rank_failing_on_bad_input_after_the_relaunch_is_one_line_and_exit_2(
        recipe_factory, tmp_path: Path) -> None:
    """The checkpoint is read only in the processes: one line, their exit code, no
    traceback from the launcher; with --json one document."""
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    command = [sys.executable, "-m", "occ", "compress", str(recipe_factory(STAGES)),
               "--checkpoint", str(bad), "--out", str(tmp_path / "run"), "--nproc", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not a readable PyTorch "
                                                   "checkpoint"), proc.stderr[-3000:]
    proc = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"]["type"] == "CheckpointError"
    assert not (tmp_path / "run").exists()
