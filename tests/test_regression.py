"""Image regression: ``mnist5k-rotation``, MAE / RMSE metrics, every stage on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from occ import api
from occ.data import load_data
from occ.errors import RecipeError
from occ.metrics import Metrics, measure, regression_errors, within
from occ.recipe import DataSpec
from tests.conftest import write_recipe

ROT_DATA = {"dataset": "mnist5k-rotation", "batch_size": 128, "limit_train": 256}


def test_rotation_dataset_deterministic_range_shape() -> None:
    a = load_data(DataSpec(dataset="mnist5k-rotation"))
    b = load_data(DataSpec(dataset="mnist5k-rotation"))
    plain = load_data(DataSpec(dataset="mnist5k"))
    assert a.task == "regression" and a.num_classes == 1 and a.input_shape == (1, 28, 28)
    assert plain.task == "classification"
    assert (len(a.train), len(a.val), len(a.test)) == (len(plain.train), len(plain.val),
                                                       len(plain.test))
    x, y = a.test.tensors
    assert y.dtype == torch.float32 and y.shape == (1000, 1)
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0 and float(y.std()) > 0.4
    assert torch.equal(x, b.test.tensors[0]) and torch.equal(y, b.test.tensors[1])
    # The rotation changes the images, not which digits land in which split.
    assert not torch.equal(x, plain.test.tensors[0])
    assert x.shape == plain.test.tensors[0].shape


def test_regression_metrics_hand_case() -> None:
    targets = torch.tensor([[0.0], [0.5], [-1.0], [1.0]])
    outputs = torch.tensor([[0.05], [0.2], [-1.0], [0.6]])  # errors .05 .3 0 .4
    mae, rmse = regression_errors(outputs, targets)
    assert mae == pytest.approx(0.1875)
    assert rmse == pytest.approx((0.0025 + 0.09 + 0.0 + 0.16) ** 0.5 / 2)
    assert within(outputs, targets) == pytest.approx(50.0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    m = measure(model, outputs, targets, input_shape=(1, 2, 2), reference=targets)
    assert isinstance(m, Metrics)
    assert m.mae == pytest.approx(0.1875) and m.accuracy == pytest.approx(50.0)
    assert m.agreement == pytest.approx(50.0)
    # Classification leaves MAE / RMSE unset.
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    c = measure(model, logits, torch.tensor([0, 0]), input_shape=(1, 2, 2))
    assert c.mae is None and c.rmse is None and c.accuracy == pytest.approx(50.0)


@pytest.fixture(scope="module")
def rot_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rot") / "lenet5_rot.pt"
    api.train("lenet5", data="mnist5k-rotation", epochs=1, out=str(path), lr=0.01, seed=0,
              kwargs={"width": 0.25}, limit_train=256)
    return path


def _recipe(tmp_path: Path, ckpt: Path, stages: list[dict], **top) -> Path:
    path = write_recipe(tmp_path, stages=stages, checkpoint=str(ckpt), **top)
    doc = __import__("yaml").safe_load(path.read_text())
    doc["data"] = dict(ROT_DATA)
    path.write_text(__import__("yaml").safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
def test_every_stage_on_regression(tmp_path: Path, rot_checkpoint: Path) -> None:
    stages = [
        {"type": "distill", "student": {"width": 0.5}, "epochs": 1, "lr": 0.01},
        {"type": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 1, "lr": 0.005},
        {"type": "quantize", "weight_bits": 4, "act_bits": 8, "mode": "qat", "epochs": 1,
         "lr": 0.002},
        {"type": "early_exit", "auto": 2, "criterion": "agreement", "epsilon": 0.1,
         "epochs": 1},
        {"type": "entropy_code"},
    ]
    report = api.compress(_recipe(tmp_path, rot_checkpoint, stages))
    out = tmp_path / "out"
    doc = json.loads((out / "report.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert [s["type"] for s in doc["stages"]] == ["distill", "prune", "quantize", "early_exit",
                                                  "entropy_code"]
    exits = doc["stages"][-1]["metrics"]["exits"]
    assert exits["criterion"] == "agreement" and sum(e["count"] for e in exits["per_exit"]) == 1000
    assert all("mae" in e for e in exits["per_exit"])
    for s in doc["stages"]:
        assert 0.0 <= s["metrics"]["mae"] < 2.0 and s["metrics"]["rmse"] >= s["metrics"]["mae"]
    assert doc["summary"]["mae"] == doc["stages"][-1]["metrics"]["mae"]
    md = (out / "report.md").read_text()
    assert "MAE" in md and "| exit | epsilon | inputs | share % | MAE |" in md
    final = report.final_metrics()
    ev = api.evaluate(out / "model.occ")
    # eval runs batch 256, compress 128: float sums differ with batch shape, so a row at an
    # exit's epsilon or an 8-bit rounding boundary may move (one of 1,000 rows, ~0.2 at most)
    assert ev["mae"] == pytest.approx(final.mae, abs=2e-4)
    assert ev["rmse"] == pytest.approx(final.rmse, abs=2e-4)


def test_early_exit_on_regression_needs_agreement(tmp_path: Path, rot_checkpoint: Path) -> None:
    recipe = _recipe(tmp_path, rot_checkpoint,
                     [{"type": "early_exit", "criterion": "confidence", "epochs": 0}])
    with pytest.raises(RecipeError, match="regression tasks exit on agreement"):
        api.compress(recipe)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cfg, field", [
    ({"criterion": "agreement", "epsilon": 0}, "epsilon"),
    ({"criterion": "agreement", "epsilon": 0.1, "threshold": 0.5}, "threshold"),
    ({"criterion": "agreement", "epsilon": 0.1, "auto": 1}, "exits"),
    ({"criterion": "confidence", "epsilon": 0.1}, "epsilon"),
])
def test_agreement_config_checks(cfg: dict, field: str) -> None:
    from occ.config import from_dict
    from occ.techniques.early_exit.config import EarlyExitConfig

    with pytest.raises(RecipeError) as err:
        from_dict(EarlyExitConfig, cfg, where="early_exit")
    assert field in str(err.value.where) or field in str(err.value)


def test_agreement_exit_rule() -> None:
    from occ.techniques.early_exit.net import leaves

    now = torch.tensor([[0.10], [0.50], [-0.2]])
    before = torch.tensor([[0.12], [0.30], [-0.2]])
    assert leaves(now, "agreement", 0.05, before).tolist() == [True, False, True]
    assert not leaves(now, "agreement", 0.05, None).any()


# -- task: regression in the recipe: the task, its loss and its tolerances ------------------


def _parse(**top):
    from occ.recipe import parse_recipe

    doc = {"version": 1, "name": "t", "model": {"arch": "lenet5"},
           "data": {"dataset": "mnist5k-rotation"}, "stages": [{"type": "entropy_code"}], **top}
    return parse_recipe(doc, source="r.yaml")


def test_task_and_loss_resolve_from_the_dataset_and_round_trip() -> None:
    import yaml

    from occ.recipe import dump_recipe, parse_recipe

    auto = _parse()
    assert (auto.task, auto.loss) == ("regression", "mse")
    assert _parse(task="regression", loss="l1").loss == "l1"
    again = parse_recipe(yaml.safe_load(dump_recipe(_parse(loss="l1", max_mae=0.2))))
    assert (again.task, again.loss, again.max_mae) == ("regression", "l1", 0.2)
    classification = _parse(data={"dataset": "mnist5k"})
    assert (classification.task, classification.loss) == ("classification", "cross_entropy")


@pytest.mark.parametrize("top, message", [
    ({"task": "classification"},
     "r.yaml: task: is classification but data.dataset mnist5k-rotation is a regression dataset"),
    ({"loss": "cross_entropy"},
     "r.yaml: loss: cross_entropy does not apply to regression; allowed: auto, mse, l1"),
    ({"min_accuracy": 90},
     "r.yaml: min_accuracy: is a classification floor (percent); regression recipes use max_mae"),
])
def test_regression_recipe_rejects_classification_keys(top: dict, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        _parse(**top)
    assert str(err.value).startswith(message)


def test_task_loss_picks_the_loss() -> None:
    import torch.nn.functional as F

    from occ.training import task_loss

    out, y = torch.tensor([[0.5], [-0.2]]), torch.tensor([[0.1], [0.2]])
    assert task_loss("l1")(out, y).item() == pytest.approx(F.l1_loss(out, y).item())
    assert task_loss("mse")(out, y).item() == pytest.approx(F.mse_loss(out, y).item())
    assert task_loss("auto")(out, y).item() == pytest.approx(F.mse_loss(out, y).item())
    # One output per exit: the mean over exits.
    both = task_loss("l1")([out, y.clone()], y).item()
    assert both == pytest.approx(F.l1_loss(out, y).item() / 2)
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    assert task_loss("l1")(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item())


@pytest.mark.slow
def test_l1_loss_reaches_the_stages(tmp_path: Path, rot_checkpoint: Path) -> None:
    """The recipe's ``loss`` is what QAT trains on: L1 on errors below 1 reads larger than MSE."""
    stage = [{"type": "quantize", "weight_bits": 8, "act_bits": 8, "mode": "qat", "epochs": 1,
              "lr": 0.001}]
    for loss in ("mse", "l1"):
        d = tmp_path / loss
        d.mkdir()
        report = api.compress(_recipe(d, rot_checkpoint, stage, loss=loss))
        trained = report.stages[0].details["qat_loss"][0]
        m = report.stages[0].metrics
        # The train-split loss matches the test error of the same kind, not the other one.
        expected, other = (m.rmse ** 2, m.mae) if loss == "mse" else (m.mae, m.rmse ** 2)
        assert abs(trained - expected) < abs(trained - other), (loss, trained, m)
        resolved = (d / "out" / "recipe.resolved.yaml").read_text()
        assert f"loss: {loss}" in resolved and "task: regression" in resolved


def test_train_loss_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from occ.cli import app

    out = tmp_path / "l1.pt"
    r = api.train("lenet5", data="mnist5k-rotation", epochs=1, out=str(out), lr=0.01,
                  kwargs={"width": 0.25}, limit_train=128, loss="l1")
    assert r["loss"] == "l1" and r["final_loss"] == pytest.approx(r["mae"], rel=0.5)
    bad = CliRunner().invoke(app, ["train", "lenet5", "--out", str(tmp_path / "x.pt"),
                                   "--loss", "l1"])
    assert bad.exit_code == 2 and not (tmp_path / "x.pt").exists()
    assert bad.stderr.strip() == ("error: --loss: l1 does not apply to classification; "
                                  "allowed: auto, cross_entropy")


def data_targets(data) -> torch.Tensor:
    """The val split's float targets, in loader order."""
    return torch.cat([y for _, y in data.loader("val", 128)]).reshape(-1)


@pytest.mark.slow
def test_max_mae_stops_the_run_naming_the_last_good_state(tmp_path: Path,
                                                          rot_checkpoint: Path) -> None:
    from typer.testing import CliRunner

    from occ.cli import app

    stages = [{"type": "prune", "method": "magnitude", "sparsity": 0.3, "epochs": 0},
              {"type": "prune", "method": "magnitude", "sparsity": 0.99, "epochs": 0}]
    free = tmp_path / "free"
    free.mkdir()
    api.compress(_recipe(free, rot_checkpoint, stages))
    from occ.engine.load import load
    from occ.training import predict

    data = load_data(DataSpec(**ROT_DATA), seed=0)
    first, second = (  # the floor reads the val split: each stage's val MAE
        float((predict(load(state), data.loader("val", 128), torch.device("cpu"))[0]
               .reshape(-1) - data_targets(data)).abs().mean())
        for state in sorted((free / "out" / "stages").glob("*.occst")))
    assert second > first
    ceiling = (first + second) / 2
    recipe = _recipe(tmp_path, rot_checkpoint, stages, max_mae=ceiling)
    result = CliRunner().invoke(app, ["compress", str(recipe)])
    assert result.exit_code == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    # read on the val split, as every decision is (the ceiling sits between the test MAEs,
    # far apart on val too)
    assert re.search(rf"stages\[1\] prune\(magnitude\): val MAE [0-9.]+ is above max_mae "
                     rf"{ceiling:g}; last good state: ", line), line
    assert line.endswith("00-prune.occst")
    assert not (tmp_path / "out" / "model.occ").exists()


def test_ablate_ranks_regression_by_mae(tmp_path: Path, rot_checkpoint: Path) -> None:
    from occ.engine.ablate import OrderResult, rank

    def result(order: str, mae: float, bitops: float) -> OrderResult:
        return OrderResult(order=list(order), metrics={"accuracy": 50.0, "mae": mae,
                                                       "bitops": bitops})

    ranked = rank([result("AB", 0.10, 5.0), result("BA", 0.12, 1.0), result("CA", 0.30, 0.1)],
                  tolerance=0.03)
    assert ["".join(r.order) for r in ranked] == ["BA", "AB", "CA"]  # CA is out of tolerance

    stages = [{"type": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 0},
              {"type": "quantize", "weight_bits": 4, "act_bits": 8, "mode": "ptq"}]
    doc = api.ablate(_recipe(tmp_path, rot_checkpoint, stages), out=str(tmp_path / "abl"))
    assert doc["task"] == "regression"
    assert doc["tolerance"] == pytest.approx(0.05 * doc["baseline"]["mae"])
    maes = [r["metrics"]["mae"] for r in doc["ranking"]]
    assert all(m is not None and m > 0 for m in maes)
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert doc["selection_split"] == "val"
    assert "| rank | order | val MAE (ranked) | test MAE |" in md
    assert "MAE of the best val MAE" in md


def test_regression_report_leads_with_mae(tmp_path: Path, rot_checkpoint: Path) -> None:
    stages = [{"type": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 0}]
    api.compress(_recipe(tmp_path, rot_checkpoint, stages))
    out = tmp_path / "out"
    html = (out / "report.html").read_text()
    assert '<div class="k">MAE</div>' in html and "MAE vs BitOps and vs bytes" in html
    assert '<div class="k">accuracy</div>' not in html
    assert "**MAE " in (out / "report.md").read_text()


def test_cli_eval_leads_with_mae(rot_checkpoint: Path) -> None:
    from typer.testing import CliRunner

    from occ.cli import app

    result = CliRunner().invoke(app, ["eval", str(rot_checkpoint)])
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.output.splitlines() if "│" in line]
    names = [r.split("│")[1].strip() for r in rows]
    assert names[:3] == ["mae", "rmse", "% within 0.1 of target"]


def test_unknown_loss_name_is_an_error() -> None:
    from occ.training import task_loss

    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        task_loss("huber")


def test_distilled_exit_heads_use_the_recipes_loss() -> None:
    import torch.nn.functional as F

    from occ.techniques.early_exit.training import exit_loss
    from occ.training import task_loss

    torch.manual_seed(0)
    head, final, y = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    got = exit_loss([1.0, 0.0], distill=True, alpha=0.5, base=task_loss("l1"))([head, final], y,
                                                                               None)
    want = 0.5 * F.l1_loss(head, y) + 0.5 * F.mse_loss(head, final)
    assert got.item() == pytest.approx(want.item())


def test_quantized_heads_need_a_quantize_stage_before_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from occ.cli import app

    path = write_recipe(tmp_path, stages=[{"type": "distill", "student": {"width": 0.5}},
                                          {"type": "early_exit", "auto": 1,
                                           "quantize_heads": True}])
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("stages[1].quantize_heads: needs a quantize stage "
                                          "before early_exit in the order that runs")
