"""Measured latency: the result's shape, runs and warm-up honoured, inputs, notes; ``occ eval
--latency`` on checkpoints and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.cli import app
from occ.latency import EXIT_NOTE, FAKE_QUANT_NOTE, measure_latency
from occ.models import build_model

SHAPE = (1, 28, 28)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", {"width": 0.25}, in_channels=1, num_classes=10)


class Recorder(nn.Module):
    """Wraps a model and records the batch of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.model(x)


def test_result_shape_and_figures() -> None:
    result = measure_latency(tiny(), SHAPE, "cpu", batch_sizes=(1, 8), warmup=2, runs=9)
    json.dumps(result)  # plain data
    assert result["device"] == "cpu" and result["timer"] == "perf_counter_ns"
    assert result["threads"] == torch.get_num_threads() and result["device_name"]
    assert result["warmup"] == 2 and result["runs"] == 9 and result["notes"] == []
    assert [b["batch_size"] for b in result["batches"]] == [1, 8]
    for b in result["batches"]:
        assert b["runs"] == 9
        assert 0 < b["min_ms"] <= b["median_ms"] <= b["p90_ms"]
        assert b["min_ms"] <= b["mean_ms"]
        assert b["per_sample_ms"] == pytest.approx(b["median_ms"] / b["batch_size"])
        assert b["samples_per_s"] == pytest.approx(1000.0 * b["batch_size"] / b["median_ms"])


def test_runs_and_warmup_are_honoured_and_mode_restored() -> None:
    model = Recorder(tiny()).train()
    measure_latency(model, SHAPE, "cpu", batch_sizes=(1, 3, 2), warmup=4, runs=7)
    assert [len(x) for x in model.seen] == [1] * 11 + [3] * 11 + [2] * 11
    assert model.training  # eval while timing, the caller's mode afterwards


def test_sample_rows_are_cycled_into_each_batch() -> None:
    model = Recorder(tiny())
    sample = torch.randn(5, *SHAPE)
    measure_latency(model, SHAPE, "cpu", batch_sizes=(12,), warmup=0, runs=1, sample=sample)
    (x,) = model.seen
    assert torch.equal(x, torch.cat([sample, sample, sample[:2]]))
    noise = Recorder(tiny())
    measure_latency(noise, SHAPE, "cpu", batch_sizes=(2,), warmup=0, runs=1)
    assert noise.seen[0].shape == (2, *SHAPE) and noise.seen[0].std() > 0.5


def test_notes_for_fake_quant_and_early_exit() -> None:
    model = tiny()
    model.features[0].occ_bits = (4, 8)  # what occ.techniques.quantize layers expose
    result = measure_latency(model, SHAPE, batch_sizes=(1,), warmup=0, runs=1)
    assert result["notes"] == [FAKE_QUANT_NOTE] and "not int8 latency" in FAKE_QUANT_NOTE

    class Exits(nn.Sequential):
        def exit_metrics(self, costs):  # the early-exit model's hook for occ.metrics
            return {}

    result = measure_latency(Exits(tiny()), SHAPE, batch_sizes=(1,), warmup=0, runs=1)
    assert result["notes"] == [EXIT_NOTE]


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"warmup": -1}, {"batch_sizes": ()},
                                    {"batch_sizes": (1, 0)}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        measure_latency(tiny(), SHAPE, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events() -> None:
    result = measure_latency(tiny(), SHAPE, "cuda", batch_sizes=(1, 64), warmup=3, runs=5)
    assert result["timer"] == "cuda events"
    assert all(b["median_ms"] > 0 for b in result["batches"])


def test_a_cuda_device_is_named_by_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``occ eval --latency`` on a GPU named it with ``torch.cuda.getdevice_name``, which
    does not exist (AttributeError on every CUDA machine); the CPU suite never got there."""
    from occ.latency import device_name

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_name(torch.device("cuda", 0)) == "NVIDIA H200"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact of an untrained tiny LeNet-5 (latency needs no accuracy)."""
    path = tmp_path_factory.mktemp("lat") / "model.occ"
    header = artifact_header.model_header(arch={"arch": "lenet5", "kwargs": {"width": 0.25}},
                                   edits=[], input_shape=SHAPE, num_classes=10,
                                   extra={"recipe": {"data": {"dataset": "mnist5k"}}})
    model_io.save(path, tiny(), header, {"codec": "raw"})
    return path


def _eval_latency(path: Path, runs: str = "3") -> dict:
    result = CliRunner().invoke(app, ["eval", str(path), "--latency", "--latency-runs", runs,
                                      "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_eval_latency_on_artifact_and_checkpoint(artifact: Path, tiny_checkpoint: Path) -> None:
    for path in (artifact, tiny_checkpoint):
        doc = _eval_latency(path)
        lat = doc["latency"]
        assert [b["batch_size"] for b in lat["batches"]] == [1, 64]
        assert all(b["runs"] == 3 and b["median_ms"] > 0 for b in lat["batches"])
        assert doc["bitops"] > 0  # next to the other figures
    plain = CliRunner().invoke(app, ["eval", str(artifact), "--json"])
    assert "latency" not in json.loads(plain.stdout)
    table = CliRunner().invoke(app, ["eval", str(artifact), "--latency", "--latency-runs", "2"])
    assert table.exit_code == 0 and "latency batch 64" in table.output


def test_eval_latency_runs_must_be_positive(artifact: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(artifact), "--latency", "--latency-runs", "0"])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--latency-runs: must be >= 1, got 0" in lines[0]
