"""ONNX export: onnxruntime reproduces ``occ eval`` on mnist5k; quantized layers, early
exits, static batches, the dynamo exporter; bad input exits 2 with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import occ
from occ import api
from occ.artifact.container import read_artifact, write_artifact
from occ.cli import app
from occ.deploy.onnx import ExitsGraph, export_ready, is_early_exit, verify
from occ.errors import StageError
from tests.conftest import write_recipe

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install "
                          "'occ[export]')")
onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'occ[export]')")

PRUNE = [{"type": "prune", "method": "channel", "channel_ratio": 0.5},
         {"type": "prune", "method": "magnitude", "sparsity": 0.5}]
QUANT_EXIT = [{"type": "prune", "method": "magnitude", "sparsity": 0.5},
              {"type": "quantize", "weight_bits": 4, "act_bits": 4, "mode": "ptq",
               "calib_samples": 128},
              {"type": "early_exit", "exits": ["features.3"], "threshold": 0.5, "epochs": 1}]


def _compress(directory: Path, checkpoint: Path, stages: list[dict[str, Any]]) -> Path:
    recipe = write_recipe(directory, stages=stages, checkpoint=str(checkpoint),
                          name=directory.name)
    return Path(api.compress(recipe).artifact)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """Channel-pruned (slim shapes) then magnitude-pruned tiny LeNet-5 artifact."""
    return _compress(tmp_path_factory.mktemp("pruned"), tiny_checkpoint, PRUNE)


@pytest.fixture(scope="module")
def quant_exit(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path,
               test_split) -> Path:
    """Pruned, 4-bit (weights and inputs) quantized tiny LeNet-5 with one exit head
    (4-bit too: ``quantize_heads: auto``).

    The tiny checkpoint's heads are barely trained, so the recorded threshold is reset to
    the median exit score on the test split: half the rows leave early, whatever the
    training did.
    """
    from occ.techniques.early_exit.net import exit_score

    path = _compress(tmp_path_factory.mktemp("qee"), tiny_checkpoint, QUANT_EXIT)
    model = occ.load(path)
    assert is_early_exit(model) and model.points == ["features.3"]
    with torch.no_grad():
        score = exit_score(model.forward_all(test_split[0])[0], model.criterion)
    artifact = read_artifact(path)
    header = json.loads(json.dumps(artifact.header))
    (edit,) = [e for e in header["edits"] if e["op"] == "early_exit"]
    edit["args"]["thresholds"] = [float(score.median())]
    out = path.with_name("median.occ")
    write_artifact(out, header, artifact.tensors)
    return out


def _run_onnx(path: Path, x: torch.Tensor, batch: int = 250) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    chunks = [session.run(None, {"input": x[i:i + batch].numpy()})
              for i in range(0, len(x), batch)]
    return [torch.cat([torch.from_numpy(c[k]) for c in chunks]) for k in range(len(chunks[0]))]


def _accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == targets).float().mean())


def test_onnx_runtime_matches_occ_eval_on_mnist5k(pruned: Path, tmp_path: Path,
                                                  test_split) -> None:
    out = tmp_path / "model.onnx"
    result = api.export(pruned, out)
    assert out.stat().st_size == result["bytes"] and result["outputs"] == ["logits"]
    assert result["verify"]["max_abs_diff"] <= 1e-4
    x, y = test_split
    (logits,) = _run_onnx(out, x)
    with torch.no_grad():
        reference = occ.load(pruned)(x)
    assert (logits - reference).abs().max() <= 1e-4
    # onnxruntime's float sums are not torch's (logits within 1e-4): <= 1 near-tie digit flips
    assert abs(_accuracy(logits, y) - api.evaluate(pruned)["accuracy"]) <= 100 / len(y) + 1e-9
    # slim shapes: the first conv lost half its channels, and the graph has its shape
    graph = onnx.load(str(out)).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    assert [2, 1, 5, 5] in weights.values() or [3, 1, 5, 5] in weights.values(), weights


def test_quantized_early_exit_model_exports_every_exit(quant_exit: Path, tmp_path: Path,
                                                       test_split) -> None:
    out = tmp_path / "qee.onnx"
    result = api.export(quant_exit, out)
    assert result["outputs"] == ["logits", "exit", "exit0_logits", "final_logits"]
    # 4 backbone layers and the exit head, quantized like the backbone (quantize_heads: auto)
    assert result["quantized_layers"] == 5 and result["exits"]["points"] == ["features.3"]
    x, y = test_split
    logits, taken, head, final = _run_onnx(out, x)
    model = occ.load(quant_exit)
    with torch.no_grad():
        ref_logits = model(x)
        ref_taken = model.last_exit
        ref_head, ref_final = model.forward_all(x)
    assert 0.2 < float((ref_taken == 0).float().mean()) < 0.8  # both exits are taken
    # The exit rule and 4-bit input fake-quant reproduce occ's forward; a value on a
    # rounding boundary may round the other way after onnxruntime's own float sums.
    assert float((taken == ref_taken).float().mean()) >= 0.995
    assert float((logits.argmax(1) == ref_logits.argmax(1)).float().mean()) >= 0.995
    assert abs(_accuracy(logits, y) - api.evaluate(quant_exit)["accuracy"]) <= 0.5
    # occ eval of the file reads its exit output: the shares of its own exit rule
    shares = api.evaluate(out)["exits"]
    assert shares["counts"] == torch.bincount(taken, minlength=2).tolist()
    # Int32 biases put a layer's exact output on the lattice s_w * s_a * Z: where the next
    # layer's scale is commensurate, a value sits exactly on a rounding boundary and the two
    # runtimes' float sums break the tie either way, moving a few rows by one step.
    for got, ref in ((head, ref_head), (final, ref_final)):
        close = (got - ref).abs().amax(1) <= 1e-4
        assert float(close.float().mean()) >= 0.95
        assert float((got - ref).abs().max()) <= 0.1 * max(1.0, float(ref.abs().max()))
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["exit_points"] == "features.3" and meta["quantized_layers"] == "5"
    # The preprocessing the model was measured with travels with the graph.
    pre = json.loads(meta["preprocess"])
    assert pre["mean"] == [pytest.approx(0.1307)] and pre["std"] == [pytest.approx(0.3081)]


def test_exits_graph_is_the_exit_forward(quant_exit: Path, test_split) -> None:
    model = occ.load(quant_exit)
    x = test_split[0][:300]
    ready, names, quantized = export_ready(model)
    assert isinstance(ready, ExitsGraph) and quantized == 5 and len(names) == 4
    with torch.no_grad():
        expected = model(x)
        logits, taken, *_ = ready(x)
    # Not bit-exact by contract: the export graph runs the whole batch through every exit
    # and selects, while occ's forward runs the rows that go on as a sub-batch. Float sums
    # may differ by an ulp with the batch shape (AVX-512 kernels), and a value on a 4-bit
    # rounding boundary then rounds the other way, moving a row by one step.
    assert float((taken == model.last_exit).float().mean()) >= 0.99
    assert float((logits.argmax(1) == expected.argmax(1)).float().mean()) >= 0.99
    close = (logits - expected).abs().amax(1) <= 1e-4
    assert float(close.float().mean()) >= 0.95


def test_static_batch_and_cli_json(pruned: Path, tmp_path: Path) -> None:
    out = tmp_path / "b4.onnx"
    result = CliRunner().invoke(app, ["export", str(pruned), "--format", "onnx", "--out",
                                      str(out), "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input"]["shape"] == [4, 1, 28, 28] and doc["path"] == str(out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 1, 28, 28]
    default = CliRunner().invoke(app, ["export", str(pruned)])
    assert default.exit_code == 0, default.output
    assert pruned.with_suffix(".onnx").is_file()
    # occ eval scores a static-batch graph in pieces of its batch (10,000 = 2,500 x 4; 3
    # does not divide it, so the last piece is padded): the dynamic graph's predictions
    dynamic = api.evaluate(pruned.with_suffix(".onnx"))
    assert api.evaluate(out)["accuracy"] == dynamic["accuracy"]
    api.export(pruned, tmp_path / "b3.onnx", batch_size=3)
    static = api.evaluate(tmp_path / "b3.onnx", latency=True, latency_runs=2)
    assert static["accuracy"] == dynamic["accuracy"]
    assert [b["batch_size"] for b in static["latency"]["batches"]] == [3]  # as it deploys
    assert static["batch_size"] == 3  # scored in its own batch, which every run pads to


def test_a_static_batch_over_the_batch_limit_is_refused_and_occs_batch_is_shrunk(
        pruned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """OCC_MAX_BATCH_VALUES bounds an ONNX eval's batch: occ's 256 shrinks, said on stderr;
    a static-batch graph cannot shrink (every run pads to it), so one over it is refused."""
    api.export(pruned, tmp_path / "b8.onnx", batch_size=8)
    api.export(pruned, tmp_path / "dyn.onnx")
    monkeypatch.setenv("OCC_MAX_BATCH_VALUES", str(5 * 28 * 28))  # 5 digits
    refused = CliRunner().invoke(app, ["eval", str(tmp_path / "b8.onnx")])
    assert refused.exit_code == 2, refused.output
    assert "the graph takes batches of exactly 8 inputs of 1×28×28, over the limit" in \
        refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    shrunk = api.evaluate(tmp_path / "dyn.onnx")
    assert shrunk["batch_size"] == 5 and "evaluated in batches of 5, not occ's 256" in caplog.text


@pytest.mark.slow
def test_dynamo_exporter(pruned: Path, tmp_path: Path, test_split) -> None:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    out = tmp_path / "dynamo.onnx"
    result = api.export(pruned, out, exporter="dynamo")
    assert result["opset"] == 18
    x = test_split[0][:500]
    (logits,) = _run_onnx(out, x)
    with torch.no_grad():
        assert (logits - occ.load(pruned)(x)).abs().max() <= 1e-4


def test_verify_catches_a_wrong_graph(pruned: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    api.export(pruned, out)
    model = occ.load(pruned)
    other = occ.load(pruned)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    x = torch.randn(4, 1, 28, 28)
    assert verify(out.read_bytes(), model, model, x, quantized=False)["max_abs_diff"] <= 1e-4
    with pytest.raises(StageError, match="differ from occ's"):
        verify(out.read_bytes(), other, other, x, quantized=False)


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written


def _one_line(result: Any, expected: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("extra", "expected"), [
    (["--format", "tflite"], "--format: unsupported export format 'tflite'; allowed: onnx"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--opset", "99"], "--opset: must be in 13..20"),
    (["--exporter", "tvm"], "--exporter: unknown exporter 'tvm'"),
], ids=["format", "batch", "opset", "exporter"])
def test_bad_flags(pruned: Path, tmp_path: Path, extra: list[str], expected: str) -> None:
    out = tmp_path / "x.onnx"
    _one_line(CliRunner().invoke(app, ["export", str(pruned), "--out", str(out), *extra]),
              expected)
    assert not out.exists()


def test_bad_files(pruned: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    truncated = tmp_path / "cut.occ"
    truncated.write_bytes(pruned.read_bytes()[:200])
    cases = [(tiny_checkpoint, "not an occ artifact"), (tmp_path / "missing.occ", "cannot read"),
             (truncated, str(truncated))]
    for path, expected in cases:
        _one_line(CliRunner().invoke(app, ["export", str(path), "--out", str(out)]), expected)
    assert not out.exists()
    _one_line(CliRunner().invoke(app, ["export", str(pruned), "--out", str(tmp_path)]),
              "--out: is a directory")
    before = pruned.read_bytes()
    _one_line(CliRunner().invoke(app, ["export", str(pruned), "--out", str(pruned)]),
              "--out: is the input artifact")
    assert pruned.read_bytes() == before


def test_default_output_never_replaces_a_fifo(pruned: Path, tmp_path: Path) -> None:
    """Without --out the file goes beside the artifact; a FIFO there is refused, untouched."""
    import os
    import stat

    artifact = tmp_path / "m.occ"
    artifact.write_bytes(pruned.read_bytes())
    os.mkfifo(tmp_path / "m.onnx")
    _one_line(CliRunner().invoke(app, ["export", str(artifact)]),
              "--out: " + str(tmp_path / "m.onnx")
              + " is a FIFO (named pipe), not a file occ may replace")
    assert stat.S_ISFIFO(os.stat(tmp_path / "m.onnx").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.occ", "m.onnx"]  # no temp left


def test_unexportable_model_exits_2(pruned: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import occ.deploy.onnx

    def fail(*_args: Any, **_kwargs: Any) -> bytes:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX is not supported"
                           "\nsecond line of detail")

    monkeypatch.setattr(occ.deploy.onnx, "to_onnx", fail)
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(app, ["export", str(pruned), "--out", str(out)])
    _one_line(result, "cannot be exported to ONNX: Exporting the operator 'aten::frobnicate'")
    assert str(pruned) in result.stderr and not out.exists()


def test_missing_onnx_package_is_one_line(pruned: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(app, ["export", str(pruned), "--out", str(out)])
    _one_line(result, "needs the onnx package: pip install 'occ[export]'")
    assert not out.exists()


def test_float_export_records_the_data_and_eval_measures_it_like_the_artifact(
        folder_run: dict, tmp_path: Path) -> None:
    """An ImageFolder model trained with mean 0.3 / std 0.25: ``occ eval model.onnx`` finds
    the data, its normalisation and class names in the file, as ``occ eval model.occ``."""
    out = tmp_path / "model.onnx"
    api.export(folder_run["artifact"], out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["occ_data"])["mean"] == [0.3, 0.3, 0.3]
    assert json.loads(meta["occ_classes"]) == ["circle", "square", "triangle"]
    artifact = api.evaluate(folder_run["artifact"])
    for extra in ([], ["--data", "imagefolder", "--root", str(folder_run["data"])]):
        res = CliRunner().invoke(app, ["eval", str(out), *extra, "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["preprocess"] == artifact["preprocess"]
        # onnxruntime's float sums are not torch's: at most one near-tie flip of 36 images
        assert doc["accuracy"] == pytest.approx(artifact["accuracy"], abs=100 / 36 + 1e-4)
    # data the graph's input does not fit: one line, exit 2
    res = CliRunner().invoke(app, ["eval", str(out), "--data", "mnist5k"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "input is batch×3×32×32" in res.stderr and "1×28×28" in res.stderr
    # a file from another exporter records no data: --data is needed, not a guess
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    res = CliRunner().invoke(app, ["eval", str(foreign)])
    assert res.exit_code == 2 and "records no data" in res.stderr and "--data" in res.stderr


def test_root_finds_data_that_moved_since_the_artifact_was_made(folder_run: dict,
                                                                tmp_path: Path) -> None:
    """The artifact records its ImageFolder's absolute path; on another machine, or after
    the project moved, ``--root`` points at the new place (before, the recorded path was
    checked first and eval stopped on 'directory not found')."""
    import shutil

    import yaml

    before = tmp_path / "before"
    shutil.copytree(folder_run["data"], before / "data")
    doc = yaml.safe_load((folder_run["base"] / "recipe.yaml").read_text())
    doc["data"]["root"] = str(before / "data")
    doc["output"] = str(before / "out")
    (before / "recipe.yaml").write_text(yaml.safe_dump(doc))
    made = api.evaluate(api.compress(before / "recipe.yaml").artifact)
    after = tmp_path / "after"
    before.rename(after)  # the project moved: the recorded root is gone
    artifact = after / "out" / "model.occ"
    for command in (["eval", str(artifact)], ["export", str(artifact)]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 2 and "directory not found" in res.stderr  # said, not guessed
        assert "if the data moved, pass --root" in res.stderr
    for extra in (["--root", str(after / "data")],
                  ["--data", "imagefolder", "--root", str(after / "data")]):
        res = CliRunner().invoke(app, ["eval", str(artifact), *extra, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["accuracy"] == made["accuracy"]
    # occ export --root records the new place, so the ONNX file is measured there
    onnx_out = tmp_path / "moved.onnx"
    res = CliRunner().invoke(app, ["export", str(artifact), "--root", str(after / "data"),
                                   "--out", str(onnx_out)])
    assert res.exit_code == 0, res.output
    meta = {p.key: p.value for p in onnx.load(str(onnx_out)).metadata_props}
    assert json.loads(meta["occ_data"])["root"] == str(after / "data")
    assert api.evaluate(onnx_out)["accuracy"] == pytest.approx(made["accuracy"], abs=100 / 36)


def test_onnx_eval_takes_channels_and_image_size_and_names_the_graphs_own(
        folder_run: dict, tmp_path: Path) -> None:
    """``--image-size`` / ``--channels`` read the data for an ONNX file as for an artifact;
    a graph whose fixed input they do not fit is refused with the values it takes."""
    out = tmp_path / "model.onnx"
    api.export(folder_run["artifact"], out)
    recorded = api.evaluate(out)
    same = api.evaluate(out, image_size=32)
    assert (recorded["input_source"], same["input_source"]) == ("recorded", "options")
    assert same["accuracy"] == recorded["accuracy"] and same["input_shape"] == [3, 32, 32]
    res = CliRunner().invoke(app, ["eval", str(out), "--image-size", "28"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert ("input is batch×3×32×32 but the data (imagefolder) gives batches of 3×28×28 "
            "images; set --image-size 32 to read the images at the size it takes") in res.stderr
    res = CliRunner().invoke(app, ["eval", str(out), "--channels", "1", "--mean", "0.3",
                                   "--std", "0.25"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert "set --channels 3 to read the images as the model was trained" in res.stderr
    res = CliRunner().invoke(app, ["eval", str(out), "--channels", "2"])
    assert res.exit_code == 2 and "error: --channels: must be 1 (grayscale) or 3" in res.stderr


def test_onnx_scores_that_are_not_the_data_classes_are_refused_before_scoring(
        folder_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3-class graph (another exporter's: no class names to compare) on 4-class data:
    the probe batch refuses it, as it refuses a module (``occ.engine.probe``)."""
    from tests.conftest import write_shape_folder

    out = tmp_path / "model.onnx"
    api.export(folder_run["artifact"], out)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    onnx.save(proto, str(out))
    four = tmp_path / "four"
    write_shape_folder(four, ["a", "b", "c", "d"], per_class=4)

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test split ran before the graph's outputs were checked")

    monkeypatch.setattr("occ.deploy.onnx_eval._scores", never)
    res = CliRunner().invoke(app, ["eval", str(out), "--data", "imagefolder", "--root",
                                   str(four)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert (f"{out}: the graph gives 3 scores per input but the data (imagefolder: a, b, c, "
            "d) has 4 classes; pass the --data / --root the model was made for") in res.stderr


@pytest.mark.parametrize(("cuts", "thresholds", "match"), [
    ("[" * 5000 + "]" * 5000, "0.5", r"occ_exit_cuts: the ONNX metadata is nested deeper"),
    ('{"a": 1}', "0.5", r"occ_exit_cuts: must list the tensor names"),
    ('["x"]', "half", r"exit_thresholds: must be comma-separated numbers"),
    ('["x", "y"]', "0.5", r"exit_thresholds: occ_exit_cuts and exit_thresholds differ"),
])
def test_exit_metadata_of_a_foreign_onnx_file_is_checked(cuts: str, thresholds: str,
                                                         match: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    from occ.deploy.runtime import ExitSession
    from occ.errors import CheckpointError

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["final_logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("final_logits", TensorProto.FLOAT,
                                                             [1])])
    proto = helper.make_model(graph)
    onnx.helper.set_model_props(proto, {"occ_exit_cuts": cuts, "exit_thresholds": thresholds,
                                        "exit_criterion": "confidence"})
    with pytest.raises(CheckpointError, match=match):
        ExitSession(proto)


class _ExitNamed(torch.nn.Module):
    """A graph whose outputs are named like occ's early-exit export, ``exit`` a constant."""

    def __init__(self, exit_value: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(28 * 28, 10)
        self.exit_value = exit_value

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x.flatten(1)), torch.zeros(x.shape[0], dtype=torch.int64) + self.exit_value


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's torchscript exporter
@pytest.mark.parametrize("value", [-1, 10**9, 0])
def test_an_exit_output_is_read_only_from_occs_exports_and_checked(
        tmp_path: Path, value: int) -> None:
    """A file's ``exit`` output is data: read only when its metadata marks an occ
    early-exit export, and each value must be one of its exits (10**9 made bincount
    allocate 7.5 GiB, -1 was an unexpected ValueError)."""
    path = tmp_path / "named.onnx"
    torch.onnx.export(_ExitNamed(value), torch.zeros(1, 1, 28, 28), str(path),
                      input_names=["input"], output_names=["logits", "exit"],
                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}, "exit": {0: "b"}},
                      dynamo=False)
    plain = CliRunner().invoke(app, ["eval", str(path), "--data", "mnist5k", "--json"])
    assert plain.exit_code == 0, plain.output  # not occ's: its outputs are just names
    assert "exits" not in json.loads(plain.stdout)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "exit_points", ""  # claims to be occ's, with no heads
    onnx.save(proto, str(path))
    marked = CliRunner().invoke(app, ["eval", str(path), "--data", "mnist5k", "--json"])
    if value == 0:  # every row at the end, the one exit it has
        assert marked.exit_code == 0, marked.output
        assert json.loads(marked.stdout)["exits"]["counts"] == [1000]
        return
    assert marked.exit_code == 2, marked.output
    assert "the graph's 'exit' output must be one exit index in [0, 0] per row" in marked.stdout
