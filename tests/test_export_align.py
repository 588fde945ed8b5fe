"""Channel alignment of the integer ONNX export (``occ.deploy.qdq_align``): a pruned or
narrow ResNet's convs are padded with zero channels so that onnxruntime runs every one on
its fast integer kernel, and the graph computes exactly what the unpadded one computes
(4-bit residual network, with and without exits, cut by ``occ.deploy.runtime``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from occ import api
from occ.artifact.checkpoint import save_checkpoint
from occ.models import build_model
from tests.conftest import write_recipe

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install "
                          "'occ[export]')")
onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'occ[export]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402  (after the importorskip)

from occ.deploy.qdq_align import METADATA_KEY, align_channels, aligned  # noqa: E402

LOOSE = {"min_agreement": 0.0, "max_accuracy_drop": 100.0}
W4A4 = {"type": "quantize", "weight_bits": 4, "act_bits": 4, "mode": "ptq",
        "calib_samples": 128}
DATA = {"dataset": "mnist5k", "batch_size": 64, "pad_to": 32}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet-20 at width 0.25 (4 / 8 / 16 channels: all below the fast
    kernel's rule) on 1-channel input, its BN statistics spread so that folded biases
    differ (the export's structure is under test, not its accuracy)."""
    torch.manual_seed(0)
    model = build_model("resnet20", {"width": 0.25}, in_channels=1, num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("r20") / "r20.pt"
    save_checkpoint(path, model, arch="resnet20", kwargs={"width": 0.25}, metrics={},
                    data={"dataset": "mnist5k", "pad_to": 32})
    return path


def _compress(directory: Path, checkpoint: Path, stages: list[dict[str, Any]]) -> Path:
    directory.mkdir()
    recipe = write_recipe(directory, stages=stages, checkpoint=str(checkpoint),
                          name=directory.name, data=DATA, guard={"enabled": False},
                          model={"arch": "resnet20", "checkpoint": str(checkpoint),
                                 "kwargs": {"width": 0.25}})
    return Path(api.compress(recipe).artifact)


def _session(path: str | Path, optimized: Path | None = None) -> Any:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _fast_kernel_shapes(path: str | Path) -> list[tuple[int, int]]:
    """(C_out, C_in) of every conv weight in the file."""
    proto = onnx.load(str(path))
    return [tuple(i.dims[:2]) for i in proto.graph.initializer
            if len(i.dims) == 4 and i.data_type == TensorProto.INT8]


def test_w4a4_resnet_is_padded_to_the_fast_kernel_and_computes_the_same(
        resnet: Path, tmp_path: Path) -> None:
    artifact = _compress(tmp_path / "q4", resnet, [W4A4])
    padded = api.export(artifact, tmp_path / "a.onnx", int8=True, int8_options=LOOSE)
    plain = api.export(artifact, tmp_path / "u.onnx", int8=True,
                       int8_options={**LOOSE, "align_channels": False})
    # Unpadded: 4 / 8 / 16 channels, 1 input channel: most convs miss the kernel's rule.
    assert any(co < 16 or ci % 4 for co, ci in _fast_kernel_shapes(plain["path"]))
    assert plain["channel_alignment"] == {}
    # Padded: every conv qualifies (C_out >= 16 and a multiple of 8, C_in a multiple of 4).
    shapes = _fast_kernel_shapes(padded["path"])
    assert len(shapes) == 21
    assert all(co >= 16 and co % 8 == 0 and ci % 4 == 0 for co, ci in shapes)
    record = padded["channel_alignment"]
    assert record["inputs"] == {"input": [1, 4]}
    assert sorted(set(c for c, _ in record["convs"].values())) == [4, 8]
    meta = {p.key: p.value for p in onnx.load(padded["path"]).metadata_props}
    assert json.loads(meta[METADATA_KEY])["convs"] == record["convs"]
    # Integer kernels end to end: the optimised graph has no float conv or matmul left.
    _session(padded["path"], tmp_path / "opt.onnx")
    ran = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "QLinearConv" in ran and not {"Conv", "Gemm", "MatMul", "FusedConv"} & ran
    # The zero channels add exactly 0: the same logits, bit for bit, and the same check.
    x = np.random.default_rng(0).normal(size=(32, 1, 32, 32)).astype(np.float32)
    got = _session(padded["path"]).run(None, {"input": x})[0]
    ref = _session(plain["path"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, ref)
    assert padded["verify"] == plain["verify"]


def test_exit_cuts_keep_their_padded_channels(resnet: Path, tmp_path: Path) -> None:
    from occ.deploy.runtime import ExitSession, open_onnx

    exit_stage = {"type": "early_exit", "exits": ["layer1"], "threshold": 0.3, "epochs": 1}
    artifact = _compress(tmp_path / "q4e", resnet, [W4A4, exit_stage])
    padded = api.export(artifact, tmp_path / "e.onnx", int8=True, int8_options=LOOSE)
    plain = api.export(artifact, tmp_path / "eu.onnx", int8=True,
                       int8_options={**LOOSE, "align_channels": False})
    # the hand-over tensor is the 4-bit input's uint8 Clip output, declared with its
    # padded channel count (4 -> 16)
    (cut,) = padded["exits"]["cuts"]
    assert cut.endswith("_occ_clip")
    info = {v.name: v for v in onnx.load(padded["path"]).graph.value_info}
    dims = info[cut].type.tensor_type.shape.dim
    assert info[cut].type.tensor_type.elem_type == TensorProto.UINT8
    assert dims[1].dim_value == 16
    runtime, unpadded = open_onnx(padded["path"]), open_onnx(plain["path"])
    assert isinstance(runtime, ExitSession)
    full = _session(padded["path"])
    x = np.random.default_rng(1).normal(size=(64, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(runtime.run(x), unpadded.run(x))
    np.testing.assert_array_equal(runtime.last_exit, unpadded.last_exit)
    for i in range(8):  # batch 1: the cut graph is the file's own graph
        logits = runtime.run(x[i:i + 1])
        graph_logits, graph_exit = full.run(None, {"input": x[i:i + 1]})[:2]
        np.testing.assert_array_equal(logits, graph_logits)
        assert runtime.last_exit.tolist() == graph_exit.tolist()


def test_aligned_channel_counts() -> None:
    assert [aligned(c) for c in (1, 6, 15, 16, 17, 24, 25, 50, 64)] == \
        [16, 16, 16, 16, 24, 24, 32, 56, 64]


def _tiny_qdq(tail: str) -> Any:
    """input (1 ch) -> Q -> DQ -> Conv(6 5x5 filters, int8) -> Q -> DQ -> ``tail``."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(rng.integers(-127, 128, (6, 1, 5, 5)).astype(np.int8), "w"),
        numpy_helper.from_array(np.full(6, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(6, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["x", "wf"], ["y"], name="conv", pads=[2, 2, 2, 2]),
             helper.make_node("QuantizeLinear", ["y", "ys", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "z"], ["yd"])]
    out = "yd"
    if tail == "pool":
        nodes += [helper.make_node("GlobalAveragePool", ["yd"], ["p"]),
                  helper.make_node("Flatten", ["p"], ["f"], axis=1)]
        inits += [numpy_helper.from_array(rng.integers(-127, 128, (10, 6)).astype(np.int8),
                                          "fw"),
                  numpy_helper.from_array(np.array(0.01, np.float32), "fs"),
                  numpy_helper.from_array(np.array(0, np.int8), "fz")]
        nodes += [helper.make_node("DequantizeLinear", ["fw", "fs", "fz"], ["fwf"]),
                  helper.make_node("Gemm", ["f", "fwf"], ["logits"], transB=1)]
        out = "logits"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["b", 1, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                       ["b", 10] if tail == "pool" else ["b", 6, 8, 8])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_whose_output_leaves_the_graph_keeps_its_channels() -> None:
    proto = _tiny_qdq("output")  # the conv's 6 channels are the model's output
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert set(align_channels(proto)) == {"xq", "x"}  # only the 1-channel input is padded
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert inits["w"].shape == (6, 4, 5, 5)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(got.run(None, {"input": x})[0],
                                  ref.run(None, {"input": x})[0])


def test_padding_through_pool_flatten_gemm_is_exact() -> None:
    proto = _tiny_qdq("pool")
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert align_channels(proto)
    onnx.checker.check_model(proto)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert inits["w"].shape == (16, 4, 5, 5) and inits["fw"].shape == (10, 16)
    assert not inits["w"][6:].any() and not inits["w"][:, 1:].any()
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).normal(size=(4, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(got.run(None, {"input": x})[0],
                                  ref.run(None, {"input": x})[0])
