"""Structured pruning: channels really go (Torch-Pruning, ID) and artifacts rebuild them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from occ import metrics
from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.config import from_dict
from occ.engine import load as loader
from occ.engine.context import ArchRef, RunContext
from occ.errors import RecipeError, StageError
from occ.models import build_model
from occ.techniques.prune.config import PruneConfig
from occ.techniques.prune.run import prune_


@pytest.fixture(scope="module")
def mnist():
    from occ.data import load_data
    from occ.recipe import DataSpec

    return load_data(DataSpec(dataset="mnist5k", limit_train=512), seed=0)


@pytest.fixture(scope="module")
def rgb32():
    """A tiny random 3x32x32 bundle for the torchvision models (only shapes matter)."""
    from occ.data import DataBundle

    g = torch.Generator().manual_seed(0)
    split = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 10)
    return DataBundle(name="random", train=split, val=split, test=split, num_classes=10,
                      input_shape=(3, 32, 32))


def make_ctx(arch: str, kwargs: dict, data) -> RunContext:
    torch.manual_seed(0)
    model = build_model(arch, kwargs).eval()
    return RunContext(model=model, baseline=copy.deepcopy(model).eval(), data=data,
                      device=torch.device("cpu"), seed=0, out_dir=Path("unused"),
                      arch=ArchRef(arch, kwargs))


LENET = {"width": 0.25, "in_channels": 1, "num_classes": 10, "input_hw": 28}


def cfg(**fields) -> PruneConfig:
    return from_dict(PruneConfig, fields, where="stages[0]")


def costs(ctx: RunContext) -> tuple[int, int]:
    """(params, MACs) as occ.metrics reports them."""
    layers = metrics.layer_costs(ctx.model, ctx.data.input_shape)
    return metrics.count_params(ctx.model)[0], sum(c.macs for c in layers)


def assert_rebuilds(ctx: RunContext, tmp_path: Path) -> None:
    """The artifact (architecture + recorded edits + tensors) gives the same outputs."""
    header = artifact_header.model_header(arch=ctx.arch.to_dict(), edits=ctx.edits,
                                   input_shape=ctx.data.input_shape,
                                   num_classes=ctx.data.num_classes)
    path = tmp_path / "model.occ"
    model_io.save(path, ctx.model, header, {"codec": "raw"})
    loaded = loader.load(path)
    x = torch.randn(3, *ctx.data.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), ctx.model.eval()(x))


def outputs(model: torch.nn.Module, data) -> torch.Tensor:
    x = torch.stack([data.test[i][0] for i in range(64)])
    with torch.no_grad():
        return model.eval()(x)

# ---------------------------------------------------------------------------------------
# interpolative decomposition (method: id)


@pytest.mark.parametrize("arch", ["lenet5", "lenet300"])
def test_id_keep_everything_reproduces_outputs(arch, mnist) -> None:
    ctx = make_ctx(arch, LENET, mnist)
    result = prune_(ctx, cfg(method="id", keep=1.0, samples=256))
    assert set(result.details["layers"])  # every layer went through ID, fold and prune
    assert (outputs(ctx.model, mnist) - outputs(ctx.baseline, mnist)).abs().max() < 1e-5


@pytest.mark.parametrize("arch, layer, exclude", [
    ("lenet300", "fc1", ["fc2"]),
    ("lenet5", "features.3", ["features.0", "classifier.1"]),  # T (x) I_HW across flatten
])
def test_id_removes_a_duplicate_channel_exactly(arch, layer, exclude, mnist, tmp_path) -> None:
    ctx = make_ctx(arch, LENET, mnist)
    producer = ctx.model.get_submodule(layer)
    with torch.no_grad():  # channel 1 copies channel 0: the ID can drop one of them exactly
        producer.weight[1] = producer.weight[0]
        producer.bias[1] = producer.bias[0]
    ctx.baseline = copy.deepcopy(ctx.model)
    n = producer.weight.shape[0]
    result = prune_(ctx, cfg(method="id", keep=(n - 1) / n, exclude=exclude, samples=256))
    assert result.details["layers"][layer]["channels"] == [n, n - 1]
    assert ctx.model.get_submodule(layer).weight.shape[0] == n - 1
    assert (outputs(ctx.model, mnist) - outputs(ctx.baseline, mnist)).abs().max() < 1e-4
    assert_rebuilds(ctx, tmp_path)


@pytest.mark.parametrize("arch", ["lenet5", "lenet300"])
def test_id_flops_target_shrinks_and_rebuilds(arch, mnist, tmp_path) -> None:
    ctx = make_ctx(arch, LENET, mnist)
    params, macs = costs(ctx)
    result = prune_(ctx, cfg(method="id", flops_reduction=0.4, samples=256))
    new_params, new_macs = costs(ctx)
    assert new_macs <= 0.6 * macs and new_params < params
    assert result.details["macs_after"] == new_macs
    assert ctx.edits and ctx.edits[-1]["op"] == "reshape"
    assert_rebuilds(ctx, tmp_path)


def test_id_skips_residual_joins(mnist, tmp_path) -> None:
    import torch.nn.functional as F

    data = copy.copy(mnist)
    data.input_shape = (1, 28, 28)
    ctx = make_ctx("resnet20", {"width": 0.25, "in_channels": 1}, data)
    result = prune_(ctx, cfg(method="id", keep=0.5, samples=32))
    pruned = set(result.details["layers"])
    assert pruned == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
    assert "conv1" in result.details["skipped"]  # the stem feeds the first residual join
    assert ctx.model.layer1[0].conv1.out_channels == 2 and ctx.model.conv1.out_channels == 4
    x = torch.stack([data.test[i][0] for i in range(8)])
    assert F.softmax(ctx.model(x), 1).isfinite().all()
    assert_rebuilds(ctx, tmp_path)


@pytest.mark.parametrize("arch, kwargs, pruned, skipped", [
    ("vgg_small", {"width": 0.25}, "features.0", "classifier"),
    # Block 1's project conv feeds block 2's expand conv; block 2's expand conv feeds a
    # depthwise conv, its project conv a residual join: both skipped.
    ("torchvision.mobilenet_v2", {"num_classes": 10}, "features.1.conv.1",
     ("features.2.conv.0.0", "features.2.conv.2")),
])
def test_id_on_plain_and_depthwise_models(arch, kwargs, pruned, skipped, rgb32,
                                          tmp_path) -> None:
    ctx = make_ctx(arch, kwargs, rgb32)
    result = prune_(ctx, cfg(method="id", keep=0.5, samples=8))
    assert pruned in result.details["layers"]
    assert set([skipped] if isinstance(skipped, str) else skipped) <= set(
        result.details["skipped"])
    assert result.details["macs_after"] < result.details["macs_before"]
    assert_rebuilds(ctx, tmp_path)


def test_id_target_no_layer_can_meet(mnist) -> None:
    ctx = make_ctx("lenet300", LENET, mnist)
    with pytest.raises(StageError, match=r"prune\(id\): flops_reduction 0.99 cannot be met"):
        prune_(ctx, cfg(method="id", flops_reduction=0.99, samples=64))

# ---------------------------------------------------------------------------------------
# Torch-Pruning (method: channel)


@pytest.mark.parametrize("importance, scope", [("l1", "layer"), ("l2", "global")])
def test_channel_flops_target_shrinks_and_rebuilds(importance, scope, mnist, tmp_path) -> None:
    ctx = make_ctx("lenet5", LENET, mnist)
    params, macs = costs(ctx)
    result = prune_(ctx, cfg(method="channel", flops_reduction=0.5, importance=importance,
                             scope=scope))
    new_params, new_macs = costs(ctx)
    assert new_macs <= 0.5 * macs and new_params < params
    assert ctx.model.classifier[3].out_features == 10  # the classifier keeps its outputs
    assert result.details["macs_reduction"] >= 0.5
    assert_rebuilds(ctx, tmp_path)


def test_channel_taylor_importance(mnist) -> None:
    ctx = make_ctx("lenet5", LENET, mnist)
    result = prune_(ctx, cfg(method="channel", channel_ratio=0.4, importance="taylor",
                             samples=64))
    assert result.details["channels"]["features.3"] == [12, 7]


def test_channel_ratio_and_exclude(mnist) -> None:
    ctx = make_ctx("lenet300", LENET, mnist)
    prune_(ctx, cfg(method="channel", channel_ratio=0.5, exclude=["fc1"]))
    assert ctx.model.fc1.out_features == 75 and ctx.model.fc2.out_features < 25


@pytest.mark.parametrize("fields, error, match", [
    ({"channel_ratio": 0.5, "exclude": ["fc7"]}, RecipeError,
     r"exclude\[0\]: no Conv2d / Linear layer 'fc7' in the model; layers: fc1, fc2, fc3"),
    ({"channel_ratio": 0.5, "importance": "bn_scale"}, RecipeError,
     r"importance: bn_scale needs BatchNorm layers"),
    ({"flops_reduction": 0.99}, StageError,
     r"prune\(channel\): flops_reduction 0.99 cannot be met"),
])
def test_channel_bad_input(fields, error, match, mnist) -> None:
    with pytest.raises(error, match=match):
        prune_(make_ctx("lenet300", LENET, mnist), cfg(method="channel", **fields))


def test_channel_untraceable_model(mnist) -> None:
    class NeedsTwo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            if x.shape[0] < 2:
                raise RuntimeError("batch of one")
            return self.fc(x.flatten(1))

    ctx = make_ctx("lenet300", LENET, mnist)
    ctx.model = NeedsTwo()
    with pytest.raises(StageError, match=r"prune\(channel\): cannot trace the model on a "
                                         r"\(1, 1, 28, 28\) input: batch of one"):
        prune_(ctx, cfg(method="channel", channel_ratio=0.5))


MODELS = [
    pytest.param("resnet20", {"width": 0.25}, id="resnet20"),  # residual joins (zoo)
    pytest.param("vgg_small", {"width": 0.25}, id="vgg_small"),
    pytest.param("torchvision.resnet18", {"num_classes": 10}, id="resnet18"),
    pytest.param("torchvision.mobilenet_v2", {"num_classes": 10}, id="mobilenet_v2"),  # depthwise
    pytest.param("torchvision.vgg11_bn", {"num_classes": 10}, id="vgg11_bn",
                 marks=pytest.mark.slow),
    pytest.param("torchvision.densenet121", {"num_classes": 10}, id="densenet121",  # concat
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("arch, kwargs", MODELS)
def test_channel_on_residual_depthwise_and_dense_models(arch, kwargs, rgb32, tmp_path) -> None:
    ctx = make_ctx(arch, kwargs, rgb32)
    params = metrics.count_params(ctx.model)[0]
    result = prune_(ctx, cfg(method="channel", channel_ratio=0.3))
    assert metrics.count_params(ctx.model)[0] < params
    assert result.details["macs_after"] < 0.8 * result.details["macs_before"]
    assert result.details["channels"]
    assert ctx.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert_rebuilds(ctx, tmp_path)

# ---------------------------------------------------------------------------------------
# end to end: recipe -> compress -> artifact


def test_compress_recipe_with_id_then_magnitude(tmp_path) -> None:
    import yaml

    from occ import api
    from occ.artifact.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"width": 0.25, "in_channels": 1, "num_classes": 10, "input_hw": 28}
    ckpt = tmp_path / "base.pt"
    save_checkpoint(ckpt, build_model("lenet300", kwargs), arch="lenet300", kwargs=kwargs,
                    metrics={})
    recipe = {"version": 1, "name": "tiny-id", "model": {"arch": "lenet300",
              "checkpoint": str(ckpt), "kwargs": {"width": 0.25}},
              "data": {"dataset": "mnist5k", "limit_train": 256},
              "stages": [{"type": "prune", "method": "magnitude", "sparsity": 0.5},
                         {"type": "prune", "method": "id", "flops_reduction": 0.5,
                          "samples": 128}],
              "output": str(tmp_path / "out"),
              "guard": {"enabled": False}}  # an untrained model: at chance, the gates refuse it
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    report = api.compress(path)  # the runner checks the artifact decodes bit-exact
    labels = [s.label for s in report.stages]
    assert labels == ["prune(id)", "prune(magnitude)"]  # channels before weights
    assert report.stages[0].metrics.macs <= 0.5 * report.baseline.macs
    loaded = loader.load(tmp_path / "out" / "model.occ")
    assert loaded.fc1.out_features < 75


def test_a_norm_occ_cannot_rebuild_names_the_layer_to_exclude() -> None:
    from types import SimpleNamespace

    from occ.techniques.prune.common import record_reshape_, snapshot

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8),
                                torch.nn.Conv2d(8, 4, 1))
    before = snapshot(model)
    model[0] = torch.nn.Conv2d(3, 4, 3)  # as a channel prune slims it (and what it feeds)
    model[1].weight = torch.nn.Parameter(torch.ones(4))
    model[1].bias = torch.nn.Parameter(torch.zeros(4))
    ctx = SimpleNamespace(model=model, record_edit=lambda *a, **k: None)
    with pytest.raises(StageError, match=r"layer '1' \(GroupNorm\) changed shape but occ "
                                         r"cannot rebuild that module type; add the layer "
                                         r"that feeds it \('0'\) to the stage's exclude"):
        record_reshape_(ctx, before, "prune(channel)")


def test_channel_prune_that_slims_nothing_says_so(mnist, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx("lenet300", LENET, mnist)
    with caplog.at_level("WARNING", logger="occ"):
        result = prune_(ctx, cfg(method="channel", channel_ratio=0.5, exclude=["fc1", "fc2"],
                                 epochs=0))
    assert ctx.model.fc1.out_features == 75 and ctx.model.fc2.out_features == 25
    assert "prune(channel) slimmed no layer (0 fewer MACs)" in caplog.text
    assert "exclude: ['fc1', 'fc2']" in caplog.text
    assert result.notes[0].startswith("prune(channel) slimmed no layer")
