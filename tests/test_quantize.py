"""Tests for the ``quantize`` stage and ``occ.techniques.quantize``: configs, integers, BN
folding, QAT,
mixed precision, pruning interplay and bit-exact artifacts."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from occ import sparsity
from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.config import from_dict, to_dict
from occ.engine import load as loader
from occ.engine.context import ArchRef, RunContext
from occ.errors import ArtifactError, RecipeError
from occ.metrics import layer_costs
from occ.models import build_model
from occ.models.edits import apply_edits
from occ.techniques.quantize import qparams as qp
from occ.techniques.quantize.calibrate import calibrate_acts_, calibrate_weights_
from occ.techniques.quantize.config import QuantizeConfig
from occ.techniques.quantize.fold import find_bn_pairs, fold_bn_
from occ.techniques.quantize.layers import (
    QuantConv2d,
    QuantLinear,
    QuantSpec,
    freeze_,
    quant_layers,
)
from occ.techniques.quantize.pipeline import quantize_
from occ.training import fit, predict

LENET = {"width": 0.25, "in_channels": 1, "num_classes": 10, "input_hw": 28}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    from occ.data import load_data
    from occ.recipe import DataSpec

    return load_data(DataSpec(dataset="mnist5k", limit_train=512))


@pytest.fixture(scope="module")
def small(data):
    """``data`` with 128 training samples, for tests that only need a few QAT steps."""
    return dataclasses.replace(data, train=Subset(data.train, range(128)))


@pytest.fixture(scope="module")
def lenet_state(data) -> dict[str, torch.Tensor]:
    """A tiny LeNet-5 trained for two epochs (a model quantization can hurt)."""
    torch.manual_seed(0)
    model = build_model("lenet5", LENET)
    fit(model, data.loader("train", 32, shuffle=True), epochs=2, lr=0.05, device=CPU)
    return copy.deepcopy(model.state_dict())


def _lenet(state: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model("lenet5", LENET)
    model.load_state_dict(state)
    return model.eval()


def _ctx(model: nn.Module, data, tmp_path: Path, arch: str = "lenet5",
         kwargs: dict | None = None) -> RunContext:
    baseline = copy.deepcopy(model).eval()
    recipe = SimpleNamespace(data=SimpleNamespace(batch_size=32, num_workers=0))
    return RunContext(model=model, baseline=baseline, data=data, device=CPU, seed=0,
                      out_dir=tmp_path, arch=ArchRef(arch, dict(kwargs or LENET)),
                      recipe=recipe)  # type: ignore[arg-type]


def _config(**kw) -> QuantizeConfig:
    kw.setdefault("calib_samples", 128)
    return from_dict(QuantizeConfig, kw, where="r.yaml: stages[0]")


def _round_trip(ctx: RunContext, path: Path) -> nn.Module:
    header = artifact_header.model_header(arch=ctx.arch.to_dict(), edits=ctx.edits,
                                   input_shape=ctx.data.input_shape,
                                   num_classes=ctx.data.num_classes)
    model_io.save(path, ctx.model, header, {"codec": "raw"})
    return loader.load(path)


def _loss(model: nn.Module, data) -> float:
    out, y = predict(model, data.loader("train", 256), CPU)
    return float(F.cross_entropy(out, y))


# ---------------------------------------------------------------------------------------------
# Config: bad input is a RecipeError naming the key and the allowed values.


@pytest.mark.parametrize(("raw", "match"), [
    ({"weight_bits": 1}, r"stages\[0\]\.weight_bits: must be an integer in 2\.\.8 or 'auto'"),
    ({"weight_bits": 9}, r"weight_bits: .*got 9"),
    ({"weight_bits": "fast"}, r"weight_bits: must be int \| 'auto'"),
    ({"weight_bits": True}, r"weight_bits"),
    ({"act_bits": 1}, r"act_bits: must be an integer in 2\.\.8, or 32"),
    ({"act_bits": 16}, r"act_bits"),
    ({"weight_bits": "auto"}, r"weight_bits: 'auto' needs exactly one budget: target_avg_bits"),
    ({"weight_bits": "auto", "target_avg_bits": 4, "bitops_budget": 1e6}, r"got both"),
    ({"weight_bits": "auto", "target_avg_bits": 1.5}, r"target_avg_bits: must be in \[2, 8\]"),
    ({"weight_bits": 4, "target_avg_bits": 4}, r"target_avg_bits: only applies with"),
    ({"act_bits": 8, "calib_samples": 0}, r"calib_samples: act_bits: 8 needs calibration"),
    ({"mode": "ptq", "epochs": 3}, r"epochs: must be 0 or unset with mode: ptq"),
    # accepted and ignored before (stage audit F7)
    ({"mode": "ptq", "distill": True}, r"distill: applies to mode: qat \(the teacher teaches "
                                       r"during QAT's training; ptq does not train\)"),
    ({"mode": "qat", "epochs": 0}, r"epochs: must be >= 1 with mode: qat"),
    ({"granularity": "row"}, r"granularity: must be one of 'channel', 'tensor'"),
    ({"calibration": "kl"}, r"calibration: must be one of 'minmax', 'percentile', 'mse'"),
    ({"keep_8bit": ["first", "first"]}, r"keep_8bit: must list each"),
    ({"keep_8bit": ["middle"]}, r"keep_8bit\[0\]: must be one of 'first', 'last'"),
    ({"bits": 4}, r"unknown key 'bits'"),
    ({"scale_bits": 3}, r"scale_bits: must be 4\.\.23 or unset"),
    ({"scale_bits": 24}, r"scale_bits"),
])
def test_bad_config_is_a_located_recipe_error(raw: dict, match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        from_dict(QuantizeConfig, raw, where="r.yaml: stages[0]")


def test_config_round_trips_and_weight_only_needs_no_data() -> None:
    cfg = _config(weight_bits="auto", target_avg_bits=4, keep_8bit=["first", "last"],
                  mode="ptq", calibration="percentile")
    assert from_dict(QuantizeConfig, to_dict(cfg)) == cfg
    assert cfg.category == "bits" and cfg.qat_epochs == 0
    assert QuantizeConfig(act_bits=32, calib_samples=0).qat_epochs == 2


def test_recipe_with_quantize_validates_without_torch_work() -> None:
    from occ.recipe import parse_recipe

    recipe = parse_recipe({"version": 1, "name": "q", "model": {"arch": "lenet5"},
                           "stages": [{"type": "quantize", "weight_bits": 4, "act_bits": 4}]},
                          source="r.yaml")
    assert recipe.stages[0].config.weight_bits == 4


# ---------------------------------------------------------------------------------------------
# Integers, scales and the frozen layer.


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize(("granularity", "symmetric"),
                         [("channel", True), ("channel", False), ("tensor", True)])
def test_frozen_integers_in_range_and_equal_to_fake_quant(bits: int, granularity: str,
                                                          symmetric: bool) -> None:
    torch.manual_seed(bits)
    conv = nn.Conv2d(3, 8, 3)
    layer = QuantConv2d.from_float(conv, QuantSpec(bits, 32, granularity, symmetric))
    calibrate_weights_({"c": layer}, "mse")
    x = torch.randn(4, 3, 9, 9)
    fake = layer(x)
    layer.freeze()
    q = layer.weight_int
    qmin, qmax = qp.weight_range(bits, symmetric)
    assert q.dtype == torch.int8 and int(q.min()) >= qmin and int(q.max()) <= qmax
    assert len(torch.unique(q)) <= 2**bits
    assert torch.equal(layer(x), fake)  # frozen forward == fake-quant forward, bit for bit
    state = layer.state_dict()
    assert "weight" not in state and state["weight_int"].dtype == torch.int8
    assert state["w_scale"].shape == ((8,) if granularity == "channel" else (1,))


def test_frozen_layer_loads_bit_identical_from_its_state_dict() -> None:
    torch.manual_seed(0)
    lin = QuantLinear.from_float(nn.Linear(20, 7), QuantSpec(3, 4))
    calibrate_acts_(lin, {"l": lin}, [torch.randn(16, 20)], method="minmax",
                    percentile=99.9, device=CPU)
    lin.freeze()
    fresh = QuantLinear.from_float(nn.Linear(20, 7), QuantSpec(3, 4))
    fresh._placeholder_frozen()
    fresh.load_state_dict(lin.state_dict())
    x = torch.randn(5, 20)
    assert torch.equal(fresh(x), lin(x)) and torch.equal(fresh.weight, lin.weight)
    assert not fresh.weight.requires_grad


def test_activation_ranges_contain_zero_and_percentile_clips() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10))
    layers = {"0": QuantLinear.from_float(model[0], QuantSpec(8, 4))}
    model[0] = layers["0"]
    x = [torch.randn(64, 10) * 3 + 1]
    lo, hi = calibrate_acts_(model, layers, x, method="minmax", percentile=99.0, device=CPU)["0"]
    plo, phi = calibrate_acts_(model, layers, x, method="percentile", percentile=99.0,
                               device=CPU)["0"]
    mlo, mhi = calibrate_acts_(model, layers, x, method="mse", percentile=99.0, device=CPU)["0"]
    assert lo <= plo <= 0 <= phi <= hi and lo <= mlo <= 0 <= mhi <= hi
    assert phi < hi and layers["0"].act_on
    assert 0 <= int(layers["0"].act_zero_point) <= 15


# ---------------------------------------------------------------------------------------------
# BatchNorm folding.


def _resnet_with_bn_stats() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", {"width": 0.25, "in_channels": 1, "num_classes": 10})
    for m in model.modules():  # non-trivial statistics, so folding has work to do
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_bn_folding_keeps_outputs_on_resnet20() -> None:
    model = _resnet_with_bn_stats()
    x = torch.randn(8, 1, 28, 28)
    before = model(x)
    pairs = fold_bn_(model)
    assert ("conv1", "bn1") in pairs and ("layer2.0.shortcut.0", "layer2.0.shortcut.1") in pairs
    assert ("layer3.2.conv2", "layer3.2.bn2") in pairs and len(pairs) == 21
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), before, atol=1e-5, rtol=0)
    rebuilt = build_model("resnet20", {"width": 0.25, "in_channels": 1, "num_classes": 10})
    rebuilt = apply_edits(rebuilt, [{"op": "fold_bn", "module": "occ.techniques.quantize.fold",
                                     "args": {"pairs": [list(p) for p in pairs]}}])
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model(x))


def test_bn_pairs_fall_back_to_sequential_adjacency_when_untraceable() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) if x.sum() > 0 else -self.body(x)  # not traceable

    assert find_bn_pairs(Branchy()) == [("body.0", "body.1")]


# ---------------------------------------------------------------------------------------------
# The stage: artifacts, QAT, mixed precision, pruning.


def test_quantize_artifact_load_is_bit_identical(data, lenet_state, tmp_path: Path) -> None:
    ctx = _ctx(_lenet(lenet_state), data, tmp_path)
    result = quantize_(ctx, _config(weight_bits=4, act_bits=4, mode="ptq",
                                    keep_8bit=["first", "last"]))
    out, _ = predict(ctx.model, data.loader("test", 256), CPU)
    loaded = _round_trip(ctx, tmp_path / "m.occ")
    again, _ = predict(loaded, data.loader("test", 256), CPU)
    assert torch.equal(again, out)
    assert [e["op"] for e in ctx.edits] == ["quantize"]
    assert {n: m.occ_bits for n, m in quant_layers(loaded).items()} == {
        "features.0": (8, 8), "features.3": (4, 4), "classifier.1": (4, 4),
        "classifier.3": (8, 8)}
    assert result.details["layers"]["features.3"]["w_bits"] == 4
    assert any("simulates integer arithmetic" in n for n in result.notes)
    assert not any(k.endswith(".weight") for k in loaded.state_dict())
    assert {k for k in loaded.state_dict() if k.endswith("bias_int")} == {
        f"{n}.bias_int" for n in quant_layers(loaded)}
    assert all(row["int_bias"] for row in result.details["layers"].values())
    assert any("int32 at scale s_w * s_a" in n for n in result.notes)


def test_scale_bits_rounds_scales_and_the_decoded_model_is_the_evaluated_one(
        data, lenet_state, tmp_path: Path) -> None:
    ctx = _ctx(_lenet(lenet_state), data, tmp_path)
    quantize_(ctx, _config(weight_bits=4, act_bits=4, mode="ptq", scale_bits=6))
    for layer in quant_layers(ctx.model).values():
        words = layer.w_scale.numpy().view("<u4")
        assert not (words & ((1 << 18) - 1)).any()  # 23 - 5 stored mantissa bits are zero
    out, _ = predict(ctx.model, data.loader("test", 256), CPU)
    loaded = _round_trip(ctx, tmp_path / "m.occ")
    again, _ = predict(loaded, data.loader("test", 256), CPU)
    assert torch.equal(again, out)


def test_round_scale_rounds_up_by_less_than_one_step() -> None:
    from occ.techniques.quantize.qparams import round_scale

    scale = torch.rand(1000) * 10.0 ** torch.randint(-8, 2, (1000,)).float() + 1e-12
    for bits in (4, 8, 12):
        r = round_scale(scale, bits)
        assert r.dtype == torch.float32 and (r >= scale).all()
        assert ((r / scale - 1) < 2.0 ** (1 - bits)).all()
        assert torch.equal(round_scale(r, bits), r)  # already on the grid


def test_resnet_fold_and_quantize_round_trip(data, tmp_path: Path) -> None:
    kwargs = {"width": 0.25, "in_channels": 1, "num_classes": 10}
    model = _resnet_with_bn_stats()
    ctx = _ctx(model, data, tmp_path, arch="resnet20", kwargs=kwargs)
    quantize_(ctx, _config(weight_bits=6, act_bits=8, mode="ptq", symmetric=False,
                           granularity="tensor", calibration="percentile", calib_samples=64))
    assert [e["op"] for e in ctx.edits] == ["fold_bn", "quantize"]
    x = torch.randn(4, 1, 28, 28)
    loaded = _round_trip(ctx, tmp_path / "r.occ")
    assert torch.equal(loaded(x), ctx.model(x))


def test_bitops_use_each_layers_bits(data, lenet_state, tmp_path: Path) -> None:
    model = _lenet(lenet_state)
    float_costs = layer_costs(model, data.input_shape)
    ctx = _ctx(model, data, tmp_path)
    quantize_(ctx, _config(weight_bits=4, act_bits=4, mode="ptq", calibration="minmax"))
    costs = layer_costs(ctx.model, data.input_shape)
    assert [c.macs for c in costs] == [c.macs for c in float_costs]
    assert all((c.w_bits, c.a_bits) == (4, 4) for c in costs)
    assert sum(c.bitops for c in float_costs) == 64 * sum(c.bitops for c in costs)


def test_weight_only_quantization_keeps_float_inputs(data, lenet_state, tmp_path: Path) -> None:
    ctx = _ctx(_lenet(lenet_state), data, tmp_path)
    quantize_(ctx, _config(weight_bits=8, act_bits=32, mode="ptq", calib_samples=0))
    layer = quant_layers(ctx.model)["classifier.1"]
    assert layer.occ_bits == (8, 32) and layer.act_scale is None
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(ctx.model(x), ctx.baseline(x), atol=0.05)


def test_qat_lowers_the_loss_of_a_4bit_model(data, lenet_state, tmp_path: Path) -> None:
    ptq = _ctx(_lenet(lenet_state), data, tmp_path)
    quantize_(ptq, _config(weight_bits=4, act_bits=4, mode="ptq"))
    qat = _ctx(_lenet(lenet_state), data, tmp_path)
    result = quantize_(qat, _config(weight_bits=4, act_bits=4, mode="qat", epochs=2, lr=0.02))
    assert _loss(qat.model, data) < _loss(ptq.model, data)
    assert len(result.details["qat_loss"]) == 2


def test_qat_with_distillation_runs(small, lenet_state, tmp_path: Path) -> None:
    ctx = _ctx(_lenet(lenet_state), small, tmp_path)
    result = quantize_(ctx, _config(weight_bits=3, act_bits=8, mode="qat", epochs=1,
                                    distill=True))
    assert result.details["qat_loss"][0] > 0
    assert all(torch.isfinite(t).all() for t in ctx.model.state_dict().values()
               if t.is_floating_point())


@pytest.mark.parametrize("symmetric", [True, False])
def test_pruned_zeros_stay_exactly_zero(small, lenet_state, tmp_path: Path,
                                        symmetric: bool) -> None:
    model = _lenet(lenet_state)
    masks = sparsity.magnitude_masks(model, 0.7)
    sparsity.apply_masks_(model, masks)
    ctx = _ctx(model, small, tmp_path)
    result = quantize_(ctx, _config(weight_bits=4, act_bits=8, mode="qat", epochs=1,
                                    lr=0.05, symmetric=symmetric))
    for name, layer in quant_layers(ctx.model).items():
        pruned = ~masks[name]
        assert bool((layer.weight[pruned] == 0).all())
        zp = layer.w_zero_point.reshape(-1, *([1] * (layer.weight_int.ndim - 1)))
        assert torch.equal(layer.weight_int[pruned], zp.expand_as(layer.weight_int)[pruned]
                           .to(torch.int8))
    pruned_share = sum(int((~m).sum()) for m in masks.values()) / sum(
        m.numel() for m in masks.values())
    assert sparsity.overall_sparsity(ctx.model) >= pruned_share > 0.69
    assert any("held at exactly zero" in n for n in result.notes)


@pytest.mark.parametrize("budget", ["target_avg_bits", "bitops_budget"])
def test_mixed_precision_meets_its_budget(data, lenet_state, tmp_path: Path,
                                          budget: str) -> None:
    model = _lenet(lenet_state)
    float_bitops = sum(c.bitops for c in layer_costs(model, data.input_shape))
    macs = float_bitops / 32 / 32
    value = 4.0 if budget == "target_avg_bits" else macs * 8 * 5  # 8-bit inputs, ~5-bit weights
    ctx = _ctx(model, data, tmp_path)
    result = quantize_(ctx, _config(weight_bits="auto", act_bits=8, mode="ptq", calib_samples=64,
                                    keep_8bit=["first"], **{budget: value}))
    mixed = result.details["mixed"]
    layers = result.details["layers"]
    assert layers["features.0"]["w_bits"] == 8
    assert set(mixed["sensitivity"]["features.3"]) == {str(b) for b in range(2, 9)}
    if budget == "target_avg_bits":
        assert result.details["avg_weight_bits"] <= 4.0
    else:
        assert sum(c.bitops for c in layer_costs(ctx.model, data.input_shape)) <= value
    assert len({row["w_bits"] for row in layers.values()}) >= 2  # really mixed


def test_allocate_spends_what_a_big_layers_step_overshot() -> None:
    from occ.techniques.quantize.mixed import allocate

    table = {"big": {2: 10.0, 3: 0.2, 4: 0.1, 8: 0.0},
             "small": {2: 0.05, 3: 0.04, 4: 0.03, 8: 0.0}}
    weights = {"big": 100.0, "small": 10.0}
    # Lowering ends at big 3 / small 4 (340 <= 385); the 45 left buy small's step back to 8.
    bits = allocate(table, weights, 3.5 * 110, fixed={}, what="t")
    assert bits == {"big": 3, "small": 8}
    assert allocate(table, weights, 3.5 * 110, fixed={"small": 8}, what="t") == {
        "big": 3, "small": 8}


def test_mixed_precision_budget_out_of_reach_fails_cleanly(data, lenet_state,
                                                           tmp_path: Path) -> None:
    from occ.errors import StageError

    ctx = _ctx(_lenet(lenet_state), data, tmp_path)
    with pytest.raises(StageError, match="cannot be met"):
        quantize_(ctx, _config(weight_bits="auto", act_bits=8, mode="ptq", bitops_budget=1.0,
                               calib_samples=32))


def test_corrupt_quantize_edit_is_an_artifact_error() -> None:
    model = build_model("lenet5", LENET)
    bad = {"op": "quantize", "module": "occ.techniques.quantize.layers",
           "args": {"layers": {"features.0": {"w_bits": 12, "a_bits": 8}}}}
    with pytest.raises(ArtifactError, match="w_bits must be in 2..8"):
        apply_edits(model, [bad])
    wrong = {"op": "quantize", "module": "occ.techniques.quantize.layers",
             "args": {"layers": {"features.1": {"w_bits": 4, "a_bits": 8}}}}
    with pytest.raises(ArtifactError, match="only Conv2d and Linear"):
        apply_edits(model, [wrong])


def test_freeze_is_idempotent_and_layers_are_conv_subclasses(data, lenet_state) -> None:
    model = _lenet(lenet_state)
    assert isinstance(QuantConv2d.from_float(model.features[0], QuantSpec(4, 8)), nn.Conv2d)
    from occ.techniques.quantize.layers import swap_layers_

    swap_layers_(model, {"features.0": QuantSpec(4, 32)})
    freeze_(model)
    w = model.features[0].weight.clone()
    freeze_(model)
    assert torch.equal(model.features[0].weight, w)


def test_compress_prune_then_quantize_end_to_end(lenet_state, tmp_path: Path) -> None:
    """The full runner: recipe -> prune -> quantize -> artifact (its own bit-exact check)."""
    import yaml

    import occ.api
    from occ.artifact.checkpoint import save_checkpoint

    ckpt = tmp_path / "base.pt"
    save_checkpoint(ckpt, _lenet(lenet_state), arch="lenet5", kwargs=LENET, metrics={})
    recipe = {"version": 1, "name": "pq", "seed": 0,
              "model": {"arch": "lenet5", "kwargs": {"width": 0.25}, "checkpoint": str(ckpt)},
              "data": {"dataset": "mnist5k", "limit_train": 256},
              "stages": [{"type": "quantize", "weight_bits": 4, "act_bits": 8, "mode": "qat",
                          "epochs": 1, "calib_samples": 64},
                         {"type": "prune", "method": "magnitude", "sparsity": 0.5}],
              "output": str(tmp_path / "out")}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    report = occ.api.compress(str(path))
    assert [s.type for s in report.stages] == ["prune", "quantize"]  # built-in order: P -> Q
    final = report.stages[-1].metrics
    assert final.bitops * 32 == report.baseline.bitops  # 32*32 / (4*8)
    loaded = occ.load(report.artifact)
    assert all(m.occ_bits == (4, 8) for m in quant_layers(loaded).values())
    assert sparsity.overall_sparsity(loaded) >= 0.5


# ---------------------------------------------------------------------------------------------
# Biases as int32 at s_w * s_a.

QUANT_PATHS = ("features.0", "features.3", "classifier.1", "classifier.3")  # 2 conv, 2 linear


def _frozen_lenet(granularity: str = "channel", a_bits: int = 4, *, symmetric: bool = True,
                  dead: tuple[str, ...] = ()) -> tuple[nn.Module, dict[str, torch.Tensor], list]:
    """A LeNet-5 with every layer frozen at 4-bit weights; ``dead`` layers lose output
    channel 1's weights (pruned). Returns the model, the float biases before freezing and
    the ``quantize`` edit."""
    from occ.models.edits import edit_record
    from occ.techniques.quantize.layers import swap_layers_

    torch.manual_seed(0)
    model = build_model("lenet5", LENET).eval()
    with torch.no_grad():
        for n in dead:
            model.get_submodule(n).weight[1] = 0
    specs = {n: QuantSpec(4, a_bits, granularity, symmetric) for n in QUANT_PATHS}
    layers = swap_layers_(model, specs)
    calibrate_acts_(model, layers, [torch.randn(16, 1, 28, 28)], method="minmax",
                    percentile=99.9, device=CPU)
    biases = {n: m.bias.detach().clone() for n, m in layers.items()}
    freeze_(model)
    edit = edit_record("quantize", {"layers": {n: m.spec.to_dict() for n, m in layers.items()}})
    return model, biases, [edit]


def _save_load(model: nn.Module, edits: list, path: Path, *, entropy: bool = False) -> nn.Module:
    header = artifact_header.model_header(arch={"arch": "lenet5", "kwargs": LENET}, edits=edits,
                                   input_shape=(1, 28, 28), num_classes=10)
    model_io.save(path, model, header, {"entropy": True} if entropy else {"codec": "raw"})
    return loader.load(path)


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_bias_int_is_round_b_over_sw_sa_and_loads_bit_identical(granularity: str,
                                                                tmp_path: Path) -> None:
    model, biases, edits = _frozen_lenet(granularity)
    x = torch.randn(6, 1, 28, 28)
    before = model(x)
    state = model.state_dict()
    for n, layer in quant_layers(model).items():
        scale = layer.w_scale * layer.act_scale  # (C_out,) or (1,)
        expected = torch.round(biases[n].double() / scale.double()).to(torch.int32)
        q = state[f"{n}.bias_int"]
        assert q.dtype == torch.int32 and q.shape == (layer.weight.shape[0],)
        assert torch.equal(q, expected)
        assert torch.equal(layer.bias, q.float() * scale)  # the one way it is computed
        assert float((layer.bias - biases[n]).abs().max()) <= float(scale.max()) / 2 + 1e-7
        assert f"{n}.bias" not in state and f"{n}.weight" not in state
        assert not layer.bias.requires_grad and layer.has_int_bias
    for entropy in (False, True):
        loaded = _save_load(model, edits, tmp_path / f"m{entropy}.occ", entropy=entropy)
        assert torch.equal(loaded(x), before)  # conv and linear layers, bit for bit
        for n, layer in quant_layers(loaded).items():
            assert torch.equal(layer.bias, quant_layers(model)[n].bias)


def test_float_inputs_asymmetric_weights_and_no_bias_keep_float_biases(tmp_path: Path) -> None:
    assert not QuantSpec(4, 32).int_bias and not QuantSpec(4, 8, symmetric=False).int_bias
    assert QuantSpec(4, 8).int_bias and not QuantSpec(4, 8, int_bias=False).int_bias
    for a_bits, symmetric in ((32, True), (8, False)):
        model, biases, edits = _frozen_lenet(a_bits=a_bits, symmetric=symmetric)
        state = model.state_dict()
        for n, layer in quant_layers(model).items():
            assert layer.bias_int is None and not layer.has_int_bias
            assert state[f"{n}.bias"].dtype == torch.float32
            assert torch.equal(layer.bias, biases[n])  # untouched
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(_save_load(model, edits, tmp_path / f"{a_bits}.occ")(x), model(x))
    plain = QuantLinear.from_float(nn.Linear(6, 3, bias=False), QuantSpec(4, 8))
    plain.freeze()
    assert plain.bias_int is None and set(plain.state_dict()) == {
        "w_scale", "w_zero_point", "act_scale", "act_zero_point", "weight_int"}


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_pruned_output_channel_keeps_its_bias(granularity: str, tmp_path: Path) -> None:
    model, biases, edits = _frozen_lenet(granularity, dead=("features.3", "classifier.1"))
    for n in ("features.3", "classifier.1"):
        layer = quant_layers(model)[n]
        assert not layer.weight[1].any() and not layer.weight_int[1].any()
        if granularity == "channel":  # its own scale: stored as ±1, value kept
            assert abs(int(layer.bias_int[1])) == 1
            assert torch.allclose(layer.bias[1], biases[n][1], rtol=1e-6, atol=0)
        else:  # shares the layer's scale: rounded like every other channel
            step = float(layer.w_scale * layer.act_scale)
            assert abs(float(layer.bias[1] - biases[n][1])) <= step / 2 + 1e-7
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(_save_load(model, edits, tmp_path / "m.occ")(x), model(x))


def test_bias_scale_is_raised_only_where_int32_would_overflow() -> None:
    w_scale = torch.tensor([0.1, 1e-12, 1e-12, 1e-12])
    q = torch.tensor([[3, 0], [0, 0], [0, 0], [1, 0]], dtype=torch.int8)
    bias = torch.tensor([0.5, 0.25, 0.0, 0.5])
    act = torch.tensor([0.02])
    fitted = qp.fit_bias_scale(w_scale, q, bias, act)
    assert fitted[0] == w_scale[0] and fitted[2] == w_scale[2]  # ordinary / no bias to keep
    assert torch.allclose(fitted[1] * act, bias[1:2])  # pruned channel: bias stored as 1
    assert fitted[3] > w_scale[3]  # live but tiny: raised until the bias fits int32
    q_bias = qp.quantize_bias(bias, fitted, act)
    assert q_bias.tolist()[:3] == [250, 1, 0] and abs(int(q_bias[3])) <= qp.BIAS_QMAX
    assert torch.allclose(qp.dequantize_bias(q_bias, fitted, act), bias, rtol=1e-6)
    whole = qp.fit_bias_scale(torch.tensor([1e-12]), torch.zeros(4, 2, dtype=torch.int8), bias,
                              act)  # per tensor, every channel pruned: fits, keeps the values
    assert torch.allclose(qp.dequantize_bias(qp.quantize_bias(bias, whole, act), whole, act),
                          bias, rtol=1e-6)


def test_int32_biases_code_compactly() -> None:
    from occ.artifact.codecs import Policy
    from occ.coding.floats import encode as fbp

    def codecs_fbp(a: np.ndarray) -> bytes:
        return fbp(a)[0]

    policy = Policy({}, entropy=True)
    rng = np.random.default_rng(0)
    narrow = np.round(rng.normal(0, 4, 120)).astype("<i4")  # 3-4 bit layers
    wide = np.round(rng.normal(0, 3000, 120)).astype("<i4")  # 8-bit layers
    # no table to store: Golomb-Rice (issue 20) beats the categorical model here
    assert policy("b", narrow).codec == "rice" and len(policy("b", narrow).data) < 70
    chosen = policy("b", wide)  # mostly distinct values: a table costs more than its symbols
    assert chosen.codec in ("fbp", "rice") and len(chosen.data) < 0.8 * wide.nbytes
    assert len(chosen.data) <= len(codecs_fbp(wide))


def test_fit_clips_the_gradient_norm() -> None:
    """``max_grad_norm`` bounds every step: a huge loss moves the weights by lr * norm at most."""
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)

    def huge(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return 1e4 * outputs.sum()

    moved = {}
    for clip in (None, 1.0):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        fit(model, loader, epochs=1, lr=0.1, device=torch.device("cpu"), weight_decay=0.0,
            schedule="constant", loss_fn=huge, max_grad_norm=clip)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved[clip] = float((after - before).norm())
    # One Nesterov step (momentum 0.9) of the clipped gradient: lr * 1.9 * norm 1.
    assert moved[1.0] == pytest.approx(0.19, rel=1e-4)
    assert moved[None] > 100 * moved[1.0]


def test_qat_clips_gradients_by_default() -> None:
    from occ.techniques.quantize.config import QuantizeConfig

    assert QuantizeConfig().clip_grad_norm == 5.0
    with pytest.raises(RecipeError, match="clip_grad_norm: must be >= 0"):
        from_dict(QuantizeConfig, {"clip_grad_norm": -1}, where="")


@pytest.mark.slow
def test_pruning_after_quantization_runs_without_training(recipe_factory, caplog) -> None:
    """Frozen integer layers leave nothing to fine-tune: the prune stage still prunes."""
    from occ import api

    recipe = recipe_factory([{"type": "quantize", "weight_bits": 4, "act_bits": 8,
                              "mode": "ptq"},
                             {"type": "prune", "sparsity": 0.5, "epochs": 1}],
                            order="as-written")
    with caplog.at_level("WARNING", logger="occ"):
        report = api.compress(recipe)
    assert [s.type for s in report.stages] == ["quantize", "prune"]
    assert report.stages[1].details["sparsity"] >= 0.45
    said = " ".join(caplog.text.split())
    assert "prune fine-tune: nothing left to train: a quantize stage earlier in the order " \
           "froze every layer to integers" in said
    assert "the 1 epoch of training asked for is skipped" in said
    assert "run this stage before quantize, as order: auto does" in said


def test_surp_after_quantization_is_refused(recipe_factory) -> None:
    """SuRP rebuilds float values off the layer's integer grid: refused, not mis-stored."""
    from occ import api

    recipe = recipe_factory([{"type": "quantize", "weight_bits": 4, "act_bits": 8,
                              "mode": "ptq"},
                             {"type": "prune", "method": "surp", "sparsity": 0.5, "epochs": 0}],
                            order="as-written")
    with pytest.raises(RecipeError, match=r"stages\[1\]\.method: surp cannot prune quantized "
                                          r"layers \(features\.0, features\.3, "):
        api.compress(recipe)


def test_fit_with_nothing_to_train_leaves_eval_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))
    assert fit(model, loader, epochs=1, lr=0.1, device=torch.device("cpu")) == []
    assert not model.training
