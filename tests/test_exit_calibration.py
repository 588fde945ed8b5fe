"""Early exit on regression: epsilon calibration within an MAE budget, task resolution."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import occ
from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.data import load_data
from occ.engine.context import ArchRef, RunContext
from occ.errors import RecipeError
from occ.models import build_model
from occ.recipe import DataSpec, parse_recipe
from occ.techniques.early_exit.build import attach
from occ.techniques.early_exit.calibrate import (
    RegressionOutputs,
    _epsilon_candidates,
    agreement_exits,
    calibrate_agreement,
    collect_regression,
    every_exit,
    simulate_agreement,
)
from occ.techniques.early_exit.config import EarlyExitConfig
from occ.techniques.early_exit.run import early_exit_
from occ.techniques.early_exit.training import exit_loss
from occ.techniques.quantize.config import QuantizeConfig
from occ.techniques.quantize.layers import quant_layers
from occ.techniques.quantize.pipeline import quantize_
from occ.training import fit, predict, task_loss

CPU = torch.device("cpu")
BACKBONE = [10.0, 20.0, 30.0, 100.0]  # cumulative cost up to each exit, the last: all of it
HEADS = [1.0, 1.0, 1.0]


def outputs(*columns: list[float], targets: list[float], reference: list[float] | None = None,
            ) -> RegressionOutputs:
    """One column of (N,) outputs per exit, the backbone's last; reference: the backbone's."""
    ref = reference if reference is not None else columns[-1]
    return RegressionOutputs(outputs=[np.array(c)[:, None] for c in columns],
                             reference=np.array(ref)[:, None], targets=np.array(targets)[:, None])


# Exact binary fractions, so every error and difference below is exact in float32.
# Rows 0-3: exits 0 and 2 agree (1/16 apart) and exit 2 is exact; rows 4-7: 1.25 apart,
# and exit 2 is 0.625 to 0.25 off. Exit 1 is 0.5 off everywhere. The backbone is exact.
TARGETS = [i / 8 for i in range(1, 9)]
EXIT0 = [t + 1 / 16 for t in TARGETS[:4]] + [0.0] * 4
EXIT1 = [t + 0.5 for t in TARGETS]
EXIT2 = TARGETS[:4] + [1.25] * 4


def hand_data() -> RegressionOutputs:
    return outputs(EXIT0, EXIT1, EXIT2, TARGETS, targets=TARGETS)


def test_simulate_agreement_by_hand() -> None:
    data = hand_data()
    eps = [0.0, None, 0.5]  # exit 1 dropped: exit 2 compares with exit 0
    assert agreement_exits(data, eps).tolist() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert simulate_agreement(data, eps, BACKBONE, HEADS) == (0.0, 0.0, 0.5 * 32 + 0.5 * 102)
    # Exit 1 active: exit 2 compares with it (0.5 apart on rows 0-3, 0 to 0.25 on 4-7).
    assert agreement_exits(data, [0.0, 0.0, 0.2]).tolist() == [3, 3, 3, 3, 2, 2, 2, 3]
    # Everyone leaving at exit 1: 0.5 off each, which the exact backbone was not.
    assert agreement_exits(data, [0.0, 2.0, 0.2]).tolist() == [1] * 8
    assert simulate_agreement(data, [0.0, 2.0, 0.2], BACKBONE, HEADS) == (0.5, 0.5, 22.0)


def test_first_kept_exit_never_lets_a_row_leave() -> None:
    data = hand_data()
    assert 0 not in agreement_exits(data, [100.0, 100.0, 100.0]).tolist()
    assert 1 not in agreement_exits(data, [None, 100.0, 100.0]).tolist()
    for budget in (0.0, 0.25, 1.0):
        found = calibrate_agreement(data, BACKBONE, HEADS, max_increase=budget)
        first = next(e for e, t in enumerate(found.epsilons) if t is not None)
        assert found.epsilons[first] == 0.0


def test_calibration_drops_the_exit_that_does_not_pay_and_picks_the_cheapest() -> None:
    data = hand_data()
    found = calibrate_agreement(data, BACKBONE, HEADS, max_increase=0.0)
    # Rows 0-3 leave at exit 2 for free; exit 1 would only cost a head and break agreement.
    assert found.feasible and found.epsilons == [0.0, None, (1 / 16 + 1.25) / 2]
    assert agreement_exits(data, found.epsilons).tolist() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert (found.mae, found.increase, found.cost) == (0.0, 0.0, 67.0)
    # Budget for rows 4-7 at exit 2 too (mean increase 0.21875): everyone leaves there.
    wide = calibrate_agreement(data, BACKBONE, HEADS, max_increase=0.25)
    assert wide.epsilons[:2] == [0.0, None]
    assert (wide.mae, wide.increase, wide.cost) == (0.21875, 0.21875, 32.0)
    assert calibrate_agreement(data, BACKBONE, HEADS, max_increase=0.2).cost == 67.0


def test_no_exits_when_the_backbone_alone_breaks_the_budget() -> None:
    worse = [t + 0.125 for t in TARGETS]  # the trained backbone, 0.125 off the reference
    data = outputs(EXIT0, EXIT1, EXIT2, worse, targets=TARGETS, reference=TARGETS)
    found = calibrate_agreement(data, BACKBONE, HEADS, max_increase=0.1)
    assert found.epsilons == [None, None, None] and not found.feasible
    assert (found.increase, found.cost) == (0.125, BACKBONE[-1])
    assert calibrate_agreement(data, BACKBONE, HEADS, max_increase=0.125).feasible


def _brute_force(data: RegressionOutputs, budget: float) -> float:
    """The cheapest cost within budget over every subset and candidate grid (small data)."""
    best = BACKBONE[-1]
    k = len(HEADS)
    for size in range(2, k + 1):
        for subset in itertools.combinations(range(k), size):
            grids = [_epsilon_candidates(data.diff(a, b)) for a, b in itertools.pairwise(subset)]
            for values in itertools.product(*grids):
                eps: list[float | None] = [None] * k
                eps[subset[0]] = 0.0
                for e, v in zip(subset[1:], values, strict=True):
                    eps[e] = float(v)
                _, inc, cost = simulate_agreement(data, eps, BACKBONE, HEADS)
                if inc <= budget + 1e-12:
                    best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", [0, 5, 13, 35])  # 5, 13, 35: one epsilon at a time is
def test_calibration_on_random_outputs_is_cheapest_within_budget_and_deterministic(  # stuck
        seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 24)
    noise = [0.4, 0.2, 0.1, 0.0]  # later exits closer to the targets
    cols = [(y + rng.normal(0, s, 24)).round(2).tolist() for s in noise]
    data = outputs(*cols, targets=y.tolist())
    budget = 0.05
    found = calibrate_agreement(data, BACKBONE, HEADS, budget)
    again = calibrate_agreement(outputs(*cols, targets=y.tolist()), BACKBONE, HEADS, budget)
    assert found == again
    assert found.feasible and found.increase <= budget + 1e-12
    # With up to 3 kept exits the descent (pair moves included) finds the grid's optimum.
    assert found.cost == pytest.approx(_brute_force(data, budget))
    assert found.cost < BACKBONE[-1]  # the budget buys something


# --------------------------------------------------------------------------------------------
# On a model: the simulated exits are what EarlyExitNet does


@pytest.fixture(scope="module")
def rotation():
    data = load_data(DataSpec(dataset="mnist5k-rotation", limit_train=256), seed=0)
    torch.manual_seed(0)
    model = build_model("lenet5", {"width": 0.25}, in_channels=1, num_classes=1)
    fit(model, data.loader("train", 64, shuffle=True), epochs=1, lr=0.01, device=CPU,
        optimizer="adam")
    return data, model.eval()


def context(model, data, tmp_path: Path) -> RunContext:
    return RunContext(model=copy.deepcopy(model), baseline=copy.deepcopy(model), data=data,
                      device=CPU, seed=0, out_dir=tmp_path, arch=ArchRef("lenet5", {"width": 0.25}))


def _row_errors(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.double() - y.double()).abs().reshape(len(y), -1).mean(1)


def test_simulated_exits_match_the_real_forward(rotation, tmp_path: Path) -> None:
    data, model = rotation
    ctx = context(model, data, tmp_path)
    val = ctx.loader("val")
    reference, y = predict(model, val, CPU)
    ee = attach(ctx.model, ["features.2", "features.4", "features.5"],
                next(iter(val))[0][:8], num_classes=1, criterion="agreement")
    sim = collect_regression(every_exit(ee, val, CPU), reference)  # heads at random: fine for this
    cands = _epsilon_candidates(sim.diff(0, 2))
    mid = float(cands[len(cands) // 2])
    eps = [0.0, None, mid]  # exit 1 dropped: exit 2 compares with exit 0
    want = agreement_exits(sim, eps)
    mae, increase, _ = simulate_agreement(sim, eps, [0.0] * 4, [0.0] * 3)
    ee.thresholds = [0.0, 0.0, mid]
    ee.keep_exits([0, 2])
    out, _ = predict(ee, val, CPU)
    got = ee.exit_log()
    assert 0 < int((got == 1).sum()) < len(got)  # a real mix
    assert got.tolist() == [{0: 0, 2: 1, 3: 2}[e] for e in want.tolist()]
    err = _row_errors(out, y)
    assert float(err.mean()) == pytest.approx(mae, abs=1e-6)
    excess = (err - _row_errors(reference, y)).clamp(min=0).mean()
    assert float(excess) == pytest.approx(increase, abs=1e-6)


def test_stage_calibrates_epsilon_within_the_mae_budget(rotation, tmp_path: Path) -> None:
    data, model = rotation
    ctx = context(model, data, tmp_path)
    result = early_exit_(ctx, EarlyExitConfig(exits=["features.2", "features.5"], epochs=1,
                                              lr=3e-3, max_mae_increase=0.02))
    cal = result.details["calibration"]
    assert ctx.model.criterion == "agreement" and cal["budget"] == 0.02
    assert cal["feasible"] and cal["increase"] <= 0.02
    val = ctx.loader("val")
    out, y = predict(ctx.model, val, CPU)
    reference, _ = predict(model, val, CPU)
    err = _row_errors(out, y)
    assert float(err.mean()) == pytest.approx(cal["mae"], abs=1e-6)
    assert float(_row_errors(reference, y).mean()) == pytest.approx(cal["reference_mae"])
    excess = (err - _row_errors(reference, y)).clamp(min=0).mean()
    assert float(excess) == pytest.approx(cal["increase"], abs=1e-6)
    assert ctx.model.exit_stats()[1] > 0 and cal["expected_bitops"] < cal["backbone_bitops"]
    assert ctx.model.thresholds[0] == 0.0 and result.details["thresholds"][0] == 0.0
    assert "within budget 0.02" in result.notes[2]  # after the heads' notes; warnings follow
    assert ctx.edits[-1]["op"] == "early_exit"
    # unset: 5 % of the reference val MAE
    default = early_exit_(context(model, data, tmp_path),
                          EarlyExitConfig(exits=["features.2", "features.5"], epochs=0))
    d = default.details["calibration"]
    assert d["budget"] == pytest.approx(0.05 * d["reference_mae"])
    assert d["increase"] <= d["budget"]


def test_quantized_heads_calibrate_and_round_trip_on_regression(rotation, tmp_path: Path) -> None:
    data, model = rotation
    ctx = context(model, data, tmp_path)
    quantize_(ctx, QuantizeConfig(weight_bits=4, act_bits=4, mode="ptq", calib_samples=128))
    result = early_exit_(ctx, EarlyExitConfig(exits=["features.2", "features.5"], epochs=1,
                                              lr=3e-3, max_mae_increase=0.02))
    ee = ctx.model
    assert result.details["heads"]["quantized"] and len(ee.points) == 2
    assert all(m.occ_bits == (4, 4) and m.mode == "frozen"
               for m in quant_layers(ee.heads).values())
    assert ctx.edits[-1]["args"]["layers"].keys() == {"heads.0.2", "heads.1.2"}
    # epsilons calibrated on the frozen heads: the simulated MAE is the real forward's, up to
    # batch shape (the simulation runs every row through every exit, the forward a sub-batch:
    # an ulp may move a 4-bit input over a rounding boundary; one of 500 rows by 0.5 at most)
    cal = result.details["calibration"]
    out, y = predict(ee, ctx.loader("val"), CPU)
    assert float(_row_errors(out, y).mean()) == pytest.approx(cal["mae"], abs=1e-3)
    assert ee.exit_stats()[1] > 0 and cal["expected_bitops"] < cal["backbone_bitops"]
    arch = {"arch": "lenet5", "kwargs": {"width": 0.25, "num_classes": 1}}
    header = artifact_header.model_header(arch=arch, edits=ctx.edits, input_shape=(1, 28, 28),
                                   num_classes=1)
    model_io.save(tmp_path / "m.occ", ee, header, {"codec": "raw"})
    loaded = occ.load(tmp_path / "m.occ")
    want, _ = predict(ee, ctx.loader("test"), CPU)
    got, _ = predict(loaded, ctx.loader("test"), CPU)
    assert torch.equal(got, want) and torch.equal(loaded.exit_log(), ee.exit_log())


def test_stage_checks_the_task_and_val_data(rotation, tmp_path: Path) -> None:
    data, model = rotation
    with pytest.raises(RecipeError, match="regression tasks exit on agreement") as err:
        early_exit_(context(model, data, tmp_path), EarlyExitConfig(criterion="confidence"))
    assert err.value.where == "criterion"
    no_val = load_data(DataSpec(dataset="mnist5k-rotation", limit_train=64, val_size=0), seed=0)
    with pytest.raises(RecipeError, match="no validation data to calibrate epsilon") as err:
        early_exit_(context(model, no_val, tmp_path), EarlyExitConfig(epochs=0))
    assert err.value.where == "epsilon"


def test_heads_train_on_the_recipes_loss() -> None:
    targets = torch.tensor([[0.0], [1.0]])
    outs = [torch.tensor([[0.5], [0.0]]), torch.tensor([[2.0], [1.0]])]
    l1 = exit_loss([1.0, 0.0], base=task_loss("l1"))(outs, targets, targets)
    assert float(l1) == pytest.approx(float(F.l1_loss(outs[0], targets)))
    mse = exit_loss([1.0, 0.0])(outs, targets, targets)
    assert float(mse) == pytest.approx(float(F.mse_loss(outs[0], targets)))


# --------------------------------------------------------------------------------------------
# Resolution for the recipe's task


def _parse(stage: dict, dataset: str = "mnist5k-rotation"):
    return parse_recipe({"version": 1, "name": "t", "model": {"arch": "lenet5"},
                         "data": {"dataset": dataset},
                         "stages": [{"type": "early_exit", **stage}]}, source="r.yaml")


def test_criterion_auto_resolves_per_task() -> None:
    from occ.recipe import dump_recipe

    regression = _parse({}).stages[0].config
    assert regression.criterion == "agreement" and regression.max_mae_increase is None
    classification = _parse({"threshold": 0.9}, dataset="mnist5k").stages[0].config
    assert classification.criterion == "confidence" and classification.threshold == 0.9
    for recipe in (_parse({"max_mae_increase": 0.01}), _parse({"epsilon": 0.02}),
                   _parse({"criterion": "entropy"}, dataset="mnist5k")):
        assert parse_recipe(recipe.to_dict(), source="r.yaml") == recipe
        assert "criterion" in dump_recipe(recipe)


@pytest.mark.parametrize(("stage", "dataset", "where", "message"), [
    # a budget beside fixed values was ignored without a word (stage audit F15)
    ({"threshold": 0.0, "max_accuracy_drop": 0}, "mnist5k", "max_accuracy_drop",
     "does not apply with threshold given: fixed values are not calibrated to a budget"),
    ({"epsilon": 0.1, "max_mae_increase": 0.01}, "mnist5k-rotation", "max_mae_increase",
     "does not apply with epsilon given"),
    ({"max_accuracy_drop": 101}, "mnist5k", "max_accuracy_drop", r"must be in \[0, 100\]"),
    ({"criterion": "confidence"}, "mnist5k-rotation", "criterion", "exit on agreement"),
    ({"criterion": "entropy"}, "mnist5k-rotation", "criterion", "exit on agreement"),
    ({"criterion": "agreement"}, "mnist5k", "criterion", "is for regression tasks"),
    ({"max_accuracy_drop": 1.0}, "mnist5k-rotation", "max_accuracy_drop", "use max_mae_incr"),
    ({"threshold": 0.9}, "mnist5k-rotation", "threshold", "use epsilon"),
    ({"max_mae_increase": 0.01}, "mnist5k", "max_mae_increase", "use max_accuracy_drop"),
    ({"epsilon": 0.01}, "mnist5k", "epsilon", "use threshold"),
    ({"auto": 1}, "mnist5k-rotation", "exits", "at least 2 exits"),
    ({"criterion": "agreement", "max_accuracy_drop": 1.0}, "mnist5k-rotation",
     "max_accuracy_drop", "does not apply to criterion: agreement"),
    ({"epsilon": -1.0}, "mnist5k-rotation", "epsilon", "must be > 0"),
])
def test_wrong_keys_for_the_task_are_located(stage: dict, dataset: str, where: str,
                                             message: str) -> None:
    with pytest.raises(RecipeError, match=message) as err:
        _parse(stage, dataset)
    assert err.value.where == f"r.yaml: stages[0].{where}"


def test_the_calibration_note_gives_the_net_change_and_the_budgets_measure_apart() -> None:
    """96.07 % -> 96.43 % is +0.36 pt, not '0.36 points lost' (the budget's measure: right
    answers an exit turned wrong, which can be outweighed by wrong ones it turned right)."""
    from occ.techniques.early_exit.run import _calibration_note

    cal = {"feasible": True, "val_samples": 280, "accuracy": 96.43, "reference_accuracy": 96.07,
           "lost": 0.36, "expected_bitops": 1.0, "backbone_bitops": 1.68, "dropped": [],
           "budget": 5.0}
    note = _calibration_note(cal)
    assert "(before 96.07%, +0.36 pt; 0.36% of the inputs turned from right to wrong" in note
    assert "the budget is" not in note  # 14 val inputs: resolved enough to say nothing
    # make demo's: 0.5 pt of 500 val digits is 2.5 digits, spent; the test split lost more
    coarse = _calibration_note({**cal, "val_samples": 500, "budget": 0.5, "lost": 0.4})
    assert "the budget is 2.5 of the 500 val inputs" in coarse and "data.val_size" in coarse
