"""The prune stage's config, schedules, magnitude pruning and the ID math."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from occ.config import from_dict, to_dict
from occ.errors import RecipeError
from occ.techniques.prune import interp
from occ.techniques.prune.config import PruneConfig
from occ.techniques.prune.run import prune_
from occ.techniques.prune.schedule import Schedule, boundaries, levels

# ---------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def data():
    from occ.data import load_data
    from occ.recipe import DataSpec

    return load_data(DataSpec(dataset="mnist5k", limit_train=512), seed=0)


@pytest.fixture
def make_ctx(data):
    from occ.engine.context import ArchRef, RunContext
    from occ.models import build_model

    def make(arch: str = "lenet300", **kwargs):
        kwargs = {"width": 0.25, **kwargs}
        torch.manual_seed(0)
        model = build_model(arch, kwargs).eval()
        return RunContext(model=model, baseline=copy.deepcopy(model).eval(), data=data,
                          device=torch.device("cpu"), seed=0, out_dir=Path("unused"),
                          arch=ArchRef(arch, kwargs))

    return make


def cfg(**fields) -> PruneConfig:
    return from_dict(PruneConfig, fields, where="stages[0]")


def zeros(ctx, name: str) -> torch.Tensor:
    return ctx.model.get_submodule(name).weight == 0

# ---------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("fields", [
    {},
    {"method": "magnitude", "sparsity": 0.9, "scope": "layer", "schedule": "agp", "epochs": 2},
    {"schedule": {"steps": 4}, "exclude": ["fc3"], "distill": True},
    {"method": "channel", "flops_reduction": 0.5, "importance": "taylor", "samples": 64},
    {"method": "channel", "channel_ratio": 0.3},
    {"method": "id", "keep": 0.5},
    {"method": "id", "flops_reduction": 0.5, "epochs": 1},
    {"method": "surp", "sparsity": 0.9, "alpha": 13.0, "schedule": "geometric"},
])
def test_config_round_trips(fields) -> None:
    config = cfg(**fields)
    assert from_dict(PruneConfig, to_dict(config)) == config
    assert isinstance(config.schedule, Schedule)


def test_schedule_forms() -> None:
    assert cfg().schedule == Schedule(kind="oneshot")
    assert cfg(schedule="agp").schedule == Schedule(kind="agp")
    assert cfg(schedule={"steps": 5}).schedule == Schedule(kind="linear", steps=5)
    assert cfg(schedule={"kind": "agp", "steps": 3}).schedule.n_steps == 3


@pytest.mark.parametrize("fields, match", [
    ({"sparsity": 1.5}, r"stages\[0\]\.sparsity: must be in \[0, 1\), got 1.5"),
    ({"sparsity": -0.1}, r"stages\[0\]\.sparsity: must be in \[0, 1\)"),
    ({"method": "prune"}, r"stages\[0\]\.method: must be one of 'magnitude'"),
    ({"scope": "row"}, r"stages\[0\]\.scope: must be 'global' \| 'layer' \| null, got 'row'"),
    ({"schedule": "cubic"}, r"stages\[0\]\.schedule: must be one of oneshot, linear, agp"),
    ({"schedule": {"steps": 0}}, r"stages\[0\]\.schedule\.steps: must be >= 1, got 0"),
    ({"schedule": {"kind": "agp", "every": 3}}, r"stages\[0\]\.schedule: unknown key 'every'"),
    ({"schedule": {"kind": "oneshot", "steps": 4}}, r"schedule\.steps: oneshot prunes once"),
    ({"method": "channel"}, r"channel_ratio: method channel needs exactly one of"),
    ({"method": "id", "keep": 0.5, "flops_reduction": 0.5},
     r"flops_reduction: method id needs exactly one of keep, flops_reduction; got both"),
    ({"method": "channel", "keep": 0.5}, r"keep: applies to method id, not channel"),
    ({"method": "id", "keep": 0.5, "sparsity": 0.9}, r"sparsity: applies to method magnitude"),
    ({"importance": "l1", "samples": 5}, r"samples: applies to method channel / id"),
    ({"method": "id", "keep": 0.0}, r"keep: must be in \(0, 1\], got 0.0"),
    ({"method": "channel", "flops_reduction": 1.0}, r"flops_reduction: must be in \(0, 1\)"),
    # above 0.95 Torch-Pruning skipped the layers it could not cut that far: 0.97 removed
    # 86 % of LeNet-5's MACs where 0.95 removed 99 % (stage audit F9)
    ({"method": "channel", "channel_ratio": 0.97},
     r"channel_ratio: must be in \[0, 0\.95\] \(no layer loses more than that share of its "
     r"channels; Torch-Pruning skips a layer that would, so a higher ratio pruned less\), "
     r"got 0\.97"),
    ({"method": "surp", "alpha": 0}, r"alpha: must be > 0"),
    ({"exclude": "fc1"}, r"exclude: must be a list of str"),
])
def test_config_rejects(fields, match) -> None:
    with pytest.raises(RecipeError, match=match):
        cfg(**fields)


def test_category_orders_structured_before_unstructured() -> None:
    assert cfg(method="channel", channel_ratio=0.5).category == "channel"
    assert cfg(method="id", keep=0.5).category == "channel"
    assert cfg().category == cfg(method="surp").category == "weight"

# ---------------------------------------------------------------------------------------
# schedules


def test_schedule_levels() -> None:
    assert levels(Schedule(kind="oneshot"), 0.9) == [0.9]
    assert levels(Schedule(kind="linear", steps=4), 0.8) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    agp = levels(Schedule(kind="agp", steps=4), 0.8)
    assert agp == pytest.approx([0.8 * (1 - (1 - j / 4) ** 3) for j in range(1, 5)])
    steps = np.diff([0.0, *agp])
    assert all(later < earlier for earlier, later in zip(steps, steps[1:], strict=False))
    geo = levels(Schedule(kind="geometric", steps=3), 0.875)
    assert geo == pytest.approx([0.5, 0.75, 0.875])  # half of what is left each time
    assert boundaries(4, 100) == [0, 25, 50, 75]

# ---------------------------------------------------------------------------------------
# magnitude


def test_magnitude_global_exact(make_ctx) -> None:
    ctx = make_ctx("lenet5")
    result = prune_(ctx, cfg(sparsity=0.7))
    layers = ["features.0", "features.3", "classifier.1", "classifier.3"]
    total = sum(ctx.model.get_submodule(n).weight.numel() for n in layers)
    assert sum(int(zeros(ctx, n).sum()) for n in layers) == round(0.7 * total)
    assert result.details["sparsity"] == pytest.approx(round(0.7 * total) / total)
    assert set(result.details["layers"]) == set(layers)


def test_magnitude_layer_scope_prunes_every_layer_to_target(make_ctx) -> None:
    ctx = make_ctx("lenet300")
    result = prune_(ctx, cfg(sparsity=0.6, scope="layer"))
    for name in ("fc1", "fc2", "fc3"):
        w = ctx.model.get_submodule(name).weight
        assert int((w == 0).sum()) == round(0.6 * w.numel())
        assert result.details["layers"][name] == pytest.approx(0.6, abs=1e-2)


def test_magnitude_exclude_keeps_layer_dense(make_ctx) -> None:
    ctx = make_ctx("lenet300")
    result = prune_(ctx, cfg(sparsity=0.8, exclude=["fc3"]))
    assert not zeros(ctx, "fc3").any()
    assert result.details["layers"]["fc3"] == 0.0
    assert result.details["sparsity"] == pytest.approx(0.8, abs=1e-4)


def test_a_prune_with_every_layer_excluded_or_a_schedule_without_epochs_says_so(
        make_ctx, caplog) -> None:
    """Both ran without a word (stage audit F7)."""
    ctx = make_ctx("lenet300")
    with caplog.at_level("WARNING", logger="occ"):
        result = prune_(ctx, cfg(sparsity=0.5, exclude=["fc1", "fc2", "fc3"]))
    said = ("prune(magnitude): exclude names every Conv2d / Linear layer, so nothing was "
            "pruned (sparsity 0.5 not reached); exclude fewer layers")
    assert said in caplog.text and said in result.notes
    result = prune_(make_ctx("lenet300"), cfg(sparsity=0.5, schedule="agp", epochs=0))
    assert ("schedule agp prunes in steps while fine-tuning; with epochs: 0 the target was "
            "applied at once") in result.notes


def test_an_id_prune_with_nothing_it_can_prune_is_bad_input(make_ctx) -> None:
    """It was exit 1 (a failed run) without the field; it is known from the model and the
    recipe, so it is exit 2 at stages[i].method (own-model audit F11)."""
    ctx = make_ctx("lenet300")
    with pytest.raises(RecipeError, match=r"^method: prune\(id\) finds no layer it can prune "
                                          r"in this model .*; method: channel prunes"):
        prune_(ctx, cfg(method="id", keep=0.5, exclude=["fc1", "fc2"]))


def test_magnitude_unknown_exclude_names_layer(make_ctx) -> None:
    with pytest.raises(RecipeError, match=r"exclude\[0\]: no Conv2d / Linear layer 'fc9' in the "
                                          r"model; layers: fc1, fc2, fc3"):
        prune_(make_ctx("lenet300"), cfg(exclude=["fc9"]))


def test_a_second_prune_stage_never_regrows_what_the_first_pruned(make_ctx, caplog) -> None:
    """prune 0.9 then prune 0.5 ended at 56.6 % zeros: the second stage's mask was computed
    afresh and its fine-tuning regrew 0.4 of the weights (stage audit F3). What is zero
    stays zero, and a stage asking for less than the model has says so."""
    ctx = make_ctx("lenet300")
    prune_(ctx, cfg(sparsity=0.9))
    before = {n: zeros(ctx, n).clone() for n in ("fc1", "fc2", "fc3")}
    with caplog.at_level("WARNING", logger="occ"):
        result = prune_(ctx, cfg(sparsity=0.5, epochs=1))
    for n, was_zero in before.items():
        assert zeros(ctx, n)[was_zero].all()
    assert result.details["sparsity"] == pytest.approx(0.9, abs=1e-4)
    said = ("prune(magnitude): the model was already 90.0% zero weights before this stage, "
            "more than its sparsity 0.5: those stay zero (pruning never regrows a weight), so "
            "it ends at 90.0%; give it a higher sparsity, or drop it")
    assert said in caplog.text and said in result.notes
    more = prune_(ctx, cfg(sparsity=0.95))  # further: from the survivors, exactly
    total = sum(ctx.model.get_submodule(n).weight.numel() for n in before)
    assert sum(int(zeros(ctx, n).sum()) for n in before) == round(0.95 * total)
    assert not any("already" in note for note in more.notes)


def test_magnitude_masks_hold_through_gradual_fine_tuning(make_ctx, monkeypatch) -> None:
    from occ.techniques.distill import loss as distill
    ctx = make_ctx("lenet300")
    w0 = {n: ctx.model.get_submodule(n).weight.detach().clone() for n in ("fc1", "fc2", "fc3")}
    taught = []
    real = distill.distill_loss_fn
    monkeypatch.setattr(distill, "distill_loss_fn",
                        lambda teacher, **kw: taught.append(kw) or real(teacher, **kw))
    config = cfg(sparsity=0.8, schedule={"kind": "agp", "steps": 4}, epochs=1, distill=True)
    result = prune_(ctx, config)
    # the one set of KD defaults (occ.techniques.distill.run.KD_TEMPERATURE / KD_ALPHA), not a copy
    assert [{k: v for k, v in kw.items() if k != "hard"} for kw in taught] == [{}]
    assert callable(taught[0]["hard"])  # the recipe's task loss is the hard term
    assert result.details["schedule"]["levels"][0] < 0.8
    # Exact final sparsity, and the weights pruned first (smallest at level 1) stayed zero.
    from occ import sparsity

    first = levels(config.schedule, 0.8)[0]
    ref = copy.deepcopy(ctx.baseline)
    for n, w in w0.items():
        ref.get_submodule(n).weight.data.copy_(w)
    early = sparsity.magnitude_masks(ref, first)
    total = sum(w.numel() for w in w0.values())
    assert sum(int(zeros(ctx, n).sum()) for n in w0) == round(0.8 * total)
    for n, keep in early.items():
        assert (ctx.model.get_submodule(n).weight[~keep] == 0).all()
    # ... and the surviving weights were trained.
    assert not torch.equal(ctx.model.fc1.weight[early["fc1"] & (ctx.model.fc1.weight != 0)],
                           w0["fc1"][early["fc1"] & (ctx.model.fc1.weight != 0)])

# ---------------------------------------------------------------------------------------
# interpolative decomposition


def _interpolative(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The size-``k`` ID of ``a``: (kept columns ascending, T (k, n), ||R22||_2)."""
    dec = interp.decompose(a)
    idx, t = dec.interpolate(k)
    return idx, t, dec.error(k)


def test_id_error_is_spectral_norm_of_r22() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 40))
    a += 1e-3 * rng.standard_normal(a.shape)
    for k in (1, 7, 20, 33):
        idx, t, err = _interpolative(a, k)
        from scipy.linalg import qr

        r, _perm = qr(a, mode="r", pivoting=True)
        assert err == pytest.approx(np.linalg.norm(r[k:, k:], 2), rel=1e-10)
        assert np.linalg.norm(a - a[:, idx] @ t, 2) == pytest.approx(err, rel=1e-6, abs=1e-9)
        assert list(idx) == sorted(idx) and t.shape == (k, 40)


def test_id_full_size_is_exact_and_tsqr_matches_direct() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((500, 16))
    idx, t, err = _interpolative(a, 16)
    assert err == 0.0 and list(idx) == list(range(16)) and np.allclose(t, np.eye(16))
    r = None
    for block in np.array_split(a, 7):
        r = interp.tsqr_update(r, torch.from_numpy(block).float().double())
    direct, streamed = interp.decompose(a), interp.decompose(r)
    assert list(direct.perm) == list(streamed.perm)
    assert streamed.error(5) == pytest.approx(direct.error(5), rel=1e-9)


def test_id_rank_deficient_columns_are_reconstructed_exactly() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((100, 6))
    a = np.concatenate([base, base[:, :2] * 3.0, np.zeros((100, 1))], axis=1)  # rank 6 of 9
    for k in (6, 8):
        idx, t, err = _interpolative(a, k)
        assert err < 1e-9
        assert np.allclose(a[:, idx] @ t, a, atol=1e-9)


def test_batchnorm_statistics_left_behind_by_a_short_fine_tune_are_re_estimated() -> None:
    """torchvision's MobileNetV3 / EfficientNet use momentum 0.01: after a fine-tune of a
    few dozen steps their running statistics still mostly describe the unpruned network
    (a channel-pruned MobileNetV3 read 49.9 %; 93.7 % with them re-estimated)."""
    from torch.utils.data import DataLoader, TensorDataset

    from occ.techniques.finetune import lagging_norms, recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.01))
    assert lagging_norms(model, steps=36) == [model[1]]  # 0.99 ** 36: 70 % left
    assert not lagging_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), steps=62)  # 0.1: 0.1 %
    x = torch.randn(64, 1, 8, 8) * 3 + 1
    loader = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=16)
    recalibrate_bn(model, loader, torch.device("cpu"), "test")
    with torch.no_grad():
        out = model[0](x)
    bn = model[1]
    assert torch.allclose(bn.running_mean, out.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, out.var((0, 2, 3)), rtol=0.05)  # per-batch unbiased
    assert bn.momentum == 0.01 and not model.training


def test_a_batchnorm_frozen_with_momentum_0_is_left_as_it_is() -> None:
    from occ.techniques.finetune import lagging_norms

    assert not lagging_norms(torch.nn.Sequential(torch.nn.BatchNorm2d(4, momentum=0.0)), steps=5)
