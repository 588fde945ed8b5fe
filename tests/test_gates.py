"""Quality gates: a stage that collapses or loses too much fails the run loudly (exit 1).

Also the command-line overrides that come before any check they replace (``--checkpoint``,
``--seed``) and the optional recipe ``name``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from occ.cli import app
from occ.engine.gates import check_stage, likely_cause
from occ.errors import RecipeError, StageError
from occ.quality import Quality, quality
from occ.recipe import GuardSpec, load_recipe, parse_recipe

COLLAPSE = {"type": "prune", "method": "magnitude", "sparsity": 0.999, "scope": "global"}
MILD = {"type": "prune", "method": "magnitude", "sparsity": 0.3}


def _classes(acc: float) -> Quality:
    return Quality(accuracy=acc, classes=10)


def _check(before: Quality, after: Quality, baseline: Quality | None = None,
           spec: GuardSpec | None = None, **kw: object) -> None:
    check_stage(spec or GuardSpec(), label="prune(magnitude)", index=1, before=before,
                after=after, baseline=baseline or before,
                config=kw.pop("config", {"sparsity": 0.9, "epochs": 0}),  # type: ignore[arg-type]
                details=kw.pop("details", {}), saved_dir="runs/x/stages")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The gate's rules.


def test_a_stage_at_chance_fails_and_names_stage_accuracies_and_cause() -> None:
    with pytest.raises(StageError) as err:
        _check(_classes(97.2), _classes(11.0))
    msg = str(err.value)
    assert "stages[1] prune(magnitude)" in msg and "97.20% -> 11.00%" in msg
    assert "near chance (10.0% for 10 classes; 19.0% or less counts as near)" in msg
    assert "sparsity 0.9" in msg and "--no-guard" in msg
    assert "\n" not in msg


def test_a_drop_past_max_stage_drop_fails_and_a_smaller_one_passes() -> None:
    _check(_classes(97.0), _classes(92.5))  # -4.5 pt <= 5
    with pytest.raises(StageError, match=r"-5\.50 pt > guard\.max_stage_drop 5"):
        _check(_classes(97.0), _classes(91.5))
    _check(_classes(97.0), _classes(91.5), spec=GuardSpec(max_stage_drop=None))
    with pytest.raises(StageError, match="max_stage_drop 0.5"):
        _check(_classes(97.0), _classes(96.0), spec=GuardSpec(max_stage_drop=0.5))


def test_the_resume_hint_names_only_a_folder_that_holds_earlier_stages(tmp_path: Path) -> None:
    saved = tmp_path / "stages"

    def message(index: int) -> str:
        with pytest.raises(StageError) as err:
            check_stage(GuardSpec(), label="prune(magnitude)", index=index,
                        before=_classes(97.2), after=_classes(11.0), baseline=_classes(97.2),
                        config={"sparsity": 0.9, "epochs": 0}, details={},
                        saved_dir=str(saved))
        return str(err.value)

    assert "--resume" not in message(1)  # no folder: nothing kept to resume from
    saved.mkdir()
    assert "--resume" not in message(0)  # the first stage: nothing earlier
    assert f"earlier stages are kept in {saved} for --resume" in message(1)
    assert "?." not in message(1) and "Nothing was written" in message(1)


def test_disabled_guard_lets_anything_through() -> None:
    _check(_classes(97.0), _classes(10.0), spec=GuardSpec(enabled=False))


def test_a_near_chance_baseline_turns_the_gates_off() -> None:
    # a baseline at chance (an untrained model): no stage can be judged against it
    _check(_classes(18.0), _classes(10.0), baseline=_classes(18.0))


def test_regression_gates_use_the_mae_factor_and_the_constant_predictor() -> None:
    def q(mae: float) -> Quality:
        return Quality(mae=mae, constant_mae=20.0)

    _check(q(9.0), q(12.0))  # 1.33x <= 1.5
    with pytest.raises(StageError, match=r"1\.67x > guard\.max_mae_factor 1\.5"):
        _check(q(9.0), q(15.0))
    with pytest.raises(StageError, match="about as good as predicting a constant"):
        _check(q(9.0), q(18.5), spec=GuardSpec(max_mae_factor=None))
    _check(q(18.5), q(40.0), baseline=q(18.5))  # the baseline is about a constant's


def test_likely_cause_reads_a_diverged_loss_as_the_learning_rate() -> None:
    """One QAT epoch at lr 50 ended with loss 15,105 and the cause read "too few bits"; a
    prune at lr 20 read "sparsity 0.5 is too much" (stage audit F2)."""
    for label, config in (("quantize", {"weight_bits": 4, "act_bits": 8, "mode": "qat",
                                        "lr": 50.0}),
                          ("prune(magnitude)", {"method": "magnitude", "sparsity": 0.5,
                                                "lr": 20.0})):
        history = "qat_loss" if label == "quantize" else "loss"  # what each stage records
        cause = likely_cause(label, config, {history: [15105.7434]})
        assert cause == ("the training diverged (loss 1.511e+04 after epoch 1): learning rate "
                         f"too high (lr {config['lr']:g})?")
    nan = likely_cause("quantize", {"lr": 1.0}, {"loss": [2.0, float("nan")]})
    assert nan.startswith("the training diverged (loss nan after epoch 2)")
    assert "bits" in likely_cause("quantize", {"weight_bits": 2, "lr": 0.01}, {"loss": [9.5]})
    # a regression's MSE on unscaled targets can sit above 100 and fall: not divergence
    mse = likely_cause("prune(magnitude)", {"method": "magnitude", "sparsity": 0.5, "lr": 0.001,
                                            "epochs": 2}, {"loss": [400.0, 250.0]},
                       cross_entropy=False)
    assert "diverged" not in mse and "sparsity 0.5" in mse


def test_likely_cause_reads_a_flat_loss_as_a_step_size_problem() -> None:
    cause = likely_cause("distill", {"lr": 0.0135}, {"loss": [25.9, 25.9, 25.8]})
    assert "did not fall after epoch 1" in cause and "lr 0.0135" in cause
    assert "bits" in likely_cause("quantize", {"weight_bits": 2, "act_bits": 2}, {})


def test_a_quantize_collapse_names_the_rounding_options_it_was_given() -> None:
    """bias_bits / scale_bits are lossy choices the user made: named first when set."""
    plain = likely_cause("quantize", {"weight_bits": 4, "act_bits": 4, "mode": "qat"}, {})
    assert "bias_bits" not in plain and "more bits or more epochs" in plain
    assert "mode qat or more bits" in likely_cause("quantize", {"mode": "ptq"}, {})
    cause = likely_cause("quantize", {"weight_bits": 4, "act_bits": 4, "mode": "qat",
                                      "bias_bits": 4}, {})
    assert cause.startswith("bias_bits 4 (int32 biases, where folded BatchNorm shifts live")
    assert "scale_bits" not in cause and "weights 4, activations 4" in cause
    both = likely_cause("quantize", {"bias_bits": 3, "scale_bits": 6}, {})
    assert "bias_bits 3" in both and "scale_bits 6" in both


@pytest.mark.parametrize(("config", "named"), [
    ({"method": "magnitude", "sparsity": 0.9}, "sparsity 0.9 is too much"),
    ({"method": "channel", "sparsity": 0.5, "channel_ratio": 0.5}, "channel_ratio 0.5 is"),
    ({"method": "channel", "sparsity": 0.5, "flops_reduction": 0.6}, "flops_reduction 0.6 is"),
    ({"method": "id", "sparsity": 0.5, "keep": 0.3, "channel_ratio": None}, "keep 0.3 is"),
])
def test_a_prune_collapse_names_the_setting_its_method_reads(config: dict, named: str) -> None:
    """A channel prune's sparsity is an unused default: the hint names channel_ratio."""
    cause = likely_cause(f"prune({config['method']})", {**config, "epochs": 1}, {})
    assert cause.startswith(named) and "fine-tuning epochs (1)" in cause


def test_a_collapse_after_a_fine_tune_that_could_not_run_says_so() -> None:
    """Epochs asked for, none ran (frozen by a quantize before it): not "too few epochs"."""
    cause = likely_cause("prune(magnitude)", {"method": "magnitude", "sparsity": 0.5,
                                              "epochs": 1}, {"loss": []})
    assert cause.startswith("its 1 fine-tuning epoch(s) did not run: nothing was left to train")
    ran = likely_cause("prune(magnitude)", {"method": "magnitude", "sparsity": 0.5,
                                            "epochs": 1}, {"loss": [0.5]})
    assert ran.startswith("sparsity 0.5 is too much")


def test_accuracies_are_exact_fractions_not_float32_means() -> None:
    """294 of 297 right reads 294 / 297 * 100 everywhere (a float32 mean gave
    98.98989796638489 in occ eval model.occ and 98.98989898989899 in model.onnx)."""
    from occ.metrics import accuracy, agreement

    targets = torch.arange(297) % 10
    logits = torch.nn.functional.one_hot(targets, 10).float()
    logits[:3] = logits[:3].roll(1, dims=1)  # 3 wrong
    assert accuracy(logits, targets) == 100 * 294 / 297
    assert quality(logits, targets, 10).accuracy == 100 * 294 / 297
    assert agreement(logits, torch.nn.functional.one_hot(targets, 10).float()) == 100 * 294 / 297
    hits = torch.zeros(1000, dtype=torch.bool)
    hits[:931] = True
    from occ.quality import percent

    assert repr(percent(hits)) == "93.1"  # the float nearest 93.1, not 93.10000000000001


def test_quality_of_outputs() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    q = quality(logits, torch.tensor([0, 1, 1, 1]), classes=2)
    assert q.accuracy == pytest.approx(75.0) and q.chance == 50.0
    r = quality(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 2.0]), classes=0)
    assert r.mae == pytest.approx(0.5) and r.constant_mae == pytest.approx(0.5)


@pytest.mark.parametrize(("guard", "match"), [
    ({"max_stage_drop": -1}, r"guard\.max_stage_drop: must be accuracy points"),
    ({"max_mae_factor": 0.5}, r"guard\.max_mae_factor: must be >= 1"),
    ({"bogus": 1}, r"guard: unknown key 'bogus'"),
])
def test_bad_guard_is_rejected_at_validate_time(guard: dict, match: str) -> None:
    data = {"version": 1, "model": {"arch": "lenet5"}, "stages": [MILD], "guard": guard}
    with pytest.raises(RecipeError, match=match):
        parse_recipe(data, source="r.yaml")


# ---------------------------------------------------------------------------------------------
# On real runs: a LeNet-300-100 (width 0.25) that reaches ~93 % on scikit-learn's digits, so a
# collapse is a fall from well above chance.


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from occ import api

    path = tmp_path_factory.mktemp("digits") / "lenet300.pt"
    result = api.train("lenet300", data="digits", epochs=10, out=str(path), lr=0.05, seed=0,
                       kwargs={"width": 0.25})
    assert result["accuracy"] > 80
    return path


@pytest.fixture
def make(tmp_path: Path, digits_checkpoint: Path):
    """``make(stages, **top)``: a digits recipe in ``tmp_path`` with its output in ``out/``."""

    def write(stages: list[dict], **top: object) -> Path:
        doc = {"version": 1, "name": "gates",
               "model": {"arch": "lenet300", "kwargs": {"width": 0.25},
                         "checkpoint": str(digits_checkpoint)},
               "data": {"dataset": "digits", "val_size": 300}, "stages": stages,
               "output": str(tmp_path / "out"), **top}
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_compress_stops_on_a_collapsed_stage_and_writes_nothing_final(
        make, tmp_path: Path) -> None:
    path = make([MILD, COLLAPSE], order="as-written")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compress", str(path)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert "stages[1] prune(magnitude)" in line and "val accuracy" in line
    assert "near chance (10.0% for 10 classes" in line and "sparsity 0.999" in line
    assert not (out / "model.occ").exists() and not (out / "report.json").exists()
    states = sorted(p.name for p in (out / "stages").glob("*.occst"))
    assert states == ["00-prune.occst"]  # the finished stage stays resumable; the failed one not

    # the same run with the gates off goes through (and reuses the finished stage)
    again = CliRunner().invoke(app, ["compress", str(path), "--no-guard", "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["stages"][1]["metrics"]["accuracy"] < 25


def test_recipe_guard_off_and_tight_drop(make, caplog: pytest.LogCaptureFixture) -> None:
    off = make([COLLAPSE], guard={"enabled": False})
    with caplog.at_level("WARNING", logger="occ"):
        result = CliRunner().invoke(app, ["compress", str(off), "--json"])
    assert result.exit_code == 0
    # no gate stops it, but the collapse is said (it went by in silence, exit 0)
    said = [r.getMessage() for r in caplog.records if "nothing stops the run" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("stages[0] prune(magnitude): test accuracy")
    assert "near chance" in said[0] and "the quality gates are off" in said[0]
    assert said[0] in json.loads(result.stdout)["stages"][0]["notes"]
    tight = make([{**MILD, "sparsity": 0.8}], guard={"max_stage_drop": 0.0})
    result = CliRunner().invoke(app, ["compress", str(tight)])
    if result.exit_code == 1:  # any loss at all breaks a zero-point gate
        assert "max_stage_drop 0" in _one_error_line(result)
    else:  # the stage lost nothing on val: the gate had nothing to stop
        assert result.exit_code == 0, result.output


def test_gates_on_without_a_val_split_say_they_cannot_run(make, tmp_path: Path) -> None:
    """``data.val_size: 0`` leaves the gates nothing to read: a collapse would go through,
    so the run says so on stderr and in the report, instead of gating nothing in silence."""
    path = make([MILD], data={"dataset": "digits", "val_size": 0})
    result = CliRunner().invoke(app, ["compress", str(path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "the quality gates are on but cannot run: the data has no val split" in said
    assert "data.val_size" in said
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("cannot run" in w for w in report["plan"]["warnings"])
    quiet = CliRunner().invoke(app, ["compress", str(make([MILD], data={
        "dataset": "digits", "val_size": 0}, guard={"enabled": False}, output=str(
            tmp_path / "off")))])
    assert quiet.exit_code == 0, quiet.output
    assert "cannot run" not in quiet.stderr  # the gates off by choice: nothing to warn about
    orders = CliRunner().invoke(app, ["ablate", str(make(
        [MILD, {"type": "quantize", "weight_bits": 8, "act_bits": 8, "mode": "ptq"}],
        data={"dataset": "digits", "val_size": 0})), "--out", str(tmp_path / "abl")])
    assert orders.exit_code == 0, orders.output
    doc = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert any("cannot run" in w for w in doc["warnings"])  # written down, not only logged
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "**Warning:** the quality gates are on but cannot run" in md
    assert "| test acc % (ranked) |" in md and "Ranked on the test accuracy" in md  # no val


def test_without_a_val_split_the_test_split_is_read_once_per_model(
        make, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input model's chance check reads the test split when there is no val split: the
    predictions the baseline's metrics are made of, not a second pass. One stage: the input
    model, the stage's output and the decoded artifact (the round trip), three reads."""
    from occ.engine.context import RunContext

    reads: list[str] = []
    loader = RunContext.loader

    def spy(self, split, **kw):
        reads.append(split)
        return loader(self, split, **kw)

    monkeypatch.setattr(RunContext, "loader", spy)
    path = make([MILD], data={"dataset": "digits", "val_size": 0}, guard={"enabled": False})
    assert CliRunner().invoke(app, ["compress", str(path)]).exit_code == 0
    assert reads.count("test") == 3, reads


def test_a_compressed_model_far_above_its_baseline_is_warned_about(make, tmp_path: Path) -> None:
    """The audit's case: a baseline measured under another normalisation than it was
    trained with (mean 1, std 0.5 for digits it saw at the dataset's own) is far from
    chance but below its real figure; a fine-tuning stage retrains it to this preprocessing,
    and the report showed a gain with no word. Now the gain is the warning."""
    from occ.engine.baseline_check import GAIN, gain_warning

    path = make([{**MILD, "epochs": 3}], data={"dataset": "digits", "val_size": 300,
                                              "mean": [1.0], "std": [0.5]})
    result = CliRunner().invoke(app, ["compress", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    base, final = doc["baseline"]["accuracy"], doc["stages"][-1]["metrics"]["accuracy"]
    assert final - base >= GAIN, (base, final)  # the scenario itself, measured
    said = [w for w in doc["plan"]["warnings"] if "above the input model's" in w]
    assert len(said) == 1 and "check data.mean / data.std" in said[0]
    assert f"{final - base:+.2f} pt above the input model's {base:.2f}%" in said[0]
    assert gain_warning(90.0, 92.9, preprocess=None) is None  # compression that keeps it
    orders = CliRunner().invoke(app, ["ablate", str(make(
        [{**MILD, "epochs": 3}, {"type": "quantize", "weight_bits": 8, "act_bits": 8,
                                 "mode": "ptq"}],
        data={"dataset": "digits", "val_size": 300, "mean": [1.0], "std": [0.5]})),
        "--out", str(tmp_path / "abl")])
    assert orders.exit_code == 0, orders.output
    written = json.loads((tmp_path / "abl" / "ablation.json").read_text())["warnings"]
    assert any("above the input model's" in w for w in written)  # ablate says it too


def test_ablate_records_a_gated_order_as_failed(make, tmp_path: Path) -> None:
    """Every order gated: each recorded as failed, and the run exits 1 (nothing ranked)."""
    path = make([COLLAPSE, {"type": "quantize", "weight_bits": 8, "act_bits": 8,
                                      "mode": "ptq"}])
    result = CliRunner().invoke(app, ["ablate", str(path), "--out", str(tmp_path / "abl"),
                                      "--json"])
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "StageError" and "every one of the 2 orders failed" in error["message"]
    doc = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert {r["status"] for r in doc["ranking"]} == {"failed"}
    assert all("val accuracy" in r["error"] for r in doc["ranking"])


# ---------------------------------------------------------------------------------------------
# Overrides before checks; name optional.


def test_checkpoint_override_replaces_a_missing_recipe_checkpoint(
        make, tmp_path: Path, digits_checkpoint: Path) -> None:
    path = make([MILD])
    doc = yaml.safe_load(path.read_text())
    doc["model"]["checkpoint"] = "runs/nowhere/baseline.pt"  # a shipped recipe's own path
    path.write_text(yaml.safe_dump(doc))
    validate = CliRunner().invoke(app, ["validate", str(path)])
    assert validate.exit_code == 2 and "model.checkpoint: file not found" in validate.stderr
    result = CliRunner().invoke(app, ["compress", str(path), "--checkpoint",
                                      str(digits_checkpoint), "--seed", "3"])
    assert result.exit_code == 0, result.output
    resolved = load_recipe(tmp_path / "out" / "recipe.resolved.yaml")
    assert resolved.model.checkpoint == str(digits_checkpoint) and resolved.seed == 3


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_override_out_of_range_is_bad_input(make, tmp_path: Path,
                                                 seed: str) -> None:
    path = make([MILD])
    result = CliRunner().invoke(app, ["compress", str(path), "--seed", seed])
    assert result.exit_code == 2 and "--seed" in _one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_name_defaults_to_the_recipe_files_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-lenet.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "model": {"arch": "lenet5"},
                                    "stages": [MILD]}))
    recipe = load_recipe(path)
    assert recipe.name == "my-lenet"
    assert parse_recipe(recipe.to_dict(), source="x.yaml") == recipe  # round-trips


def test_an_input_model_at_chance_stops_before_any_stage(make, tmp_path: Path) -> None:
    from occ.artifact.checkpoint import save_checkpoint
    from occ.models import build_model

    torch.manual_seed(0)
    kwargs = {"width": 0.25, "in_channels": 1, "num_classes": 10, "input_hw": 8}
    untrained = tmp_path / "untrained.pt"
    save_checkpoint(untrained, build_model("lenet300", kwargs), arch="lenet300", kwargs=kwargs,
                    metrics={})
    path = make([MILD])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compress", str(path), "--checkpoint", str(untrained)])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    said = line.removeprefix("error: ").split("; nothing was written")[0]
    assert said.startswith(f"{untrained}: the input model scores ")  # which file is at chance
    assert "on the val split, near chance (10.0% for 10 classes; 19.0% or less" in said
    assert "before any stage" in said and "--no-guard" in line
    assert not (out / "model.occ").exists() and not list(out.glob("stages/*.occst"))
    anyway = CliRunner().invoke(app, ["compress", str(path), "--checkpoint", str(untrained),
                                      "--no-guard"])
    assert anyway.exit_code == 0, anyway.output
    assert said in " ".join(anyway.stderr.split())  # compressed as asked, and loudly: same words
    orders = CliRunner().invoke(app, ["ablate", str(make([MILD, {"type": "quantize",
                                                                 "weight_bits": 8}])),
                                      "--checkpoint", str(untrained)])
    assert orders.exit_code == 1, orders.output  # once, before any order, not once per order
    assert "the input model scores" in _one_error_line(orders)
    assert not list((tmp_path / "out-ablation").glob("states/*"))


def test_many_classes_the_model_the_gates_refuse_is_warned_about_with_them_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """100 classes: a model right on 5 % of every split (chance 1 %) is near chance. With
    the gates on it is refused before any stage; with them off the same sentence is the
    report's warning (it once passed silently: the warning's own bar was 1.5x chance)."""
    import occ

    torch.manual_seed(0)

    def split(n: int) -> torch.utils.data.TensorDataset:  # 1 in 20 targets is class 0
        y = torch.tensor([0 if i % 20 == 0 else 1 + i % 99 for i in range(n)])
        return torch.utils.data.TensorDataset(torch.randn(n, 1, 8, 8), y)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 100))
    with torch.no_grad():  # always class 0
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[0] = 1.0
    data = {"train_data": split(200), "val_data": split(100), "test_data": split(100)}
    stages = [{"type": "entropy_code"}]
    with pytest.raises(StageError) as refused:
        occ.compress(model, {"stages": stages}, **data)
    said = str(refused.value).split("; nothing was written")[0]
    assert said.startswith("the input model scores 5.00% on the val split, near chance "
                           "(1.0% for 100 classes; 10.9% or less counts as near)")
    result = occ.compress(model, {"stages": stages, "guard": {"enabled": False}}, **data)
    warnings = [w for w in result.report.plan.get("warnings", []) if "input model" in w]
    assert len(warnings) == 1 and warnings[0].startswith(said), warnings  # (and: a
    # Sequential made here does not rebuild from its recorded class, said apart)
    assert warnings[0].endswith("the gates are off: it is compressed anyway")
    assert said in caplog.text  # logged too: the CLI puts it on stderr


def test_a_model_putting_most_inputs_in_one_class_is_warned_about_above_chance() -> None:
    """A mis-normalised ResNet-18 put 355 of 400 inputs in one class of 4 and scored
    35.5 %, above the 32.5 % near-chance bound: compress and eval said nothing (own-model
    audit F3). Its predictions give it away."""
    from occ.engine.baseline_check import chance_warning, check_baseline

    targets = torch.arange(400) % 4  # balanced labels
    predicted = torch.where(torch.arange(400) < 355, torch.tensor(2), targets)
    outputs = torch.nn.functional.one_hot(predicted, 4).float()
    q = quality(outputs, targets, 4)
    assert not q.collapsed and q.lopsided
    assert (q.top_class, q.top_share, q.top_label_share) == (2, 0.915, 0.25)
    said = check_baseline(q, gates_on=True, where="r18.pt", preprocess=None)
    assert said is not None and said.startswith(
        "r18.pt: the input model puts 92% of the val inputs in class 2, which is 25% of their "
        "labels under this recipe's preprocessing")
    assert "check data.mean / data.std / data.image_size" in said
    told = chance_warning(quality(outputs, targets, 4, split="test"), preprocess=None,
                          where="m.pt", classes=["one", "three", "two", "zero"])
    assert told is not None and "check --mean / --std / --image-size / --channels" in told
    assert "inputs in class 2 ('two'), which is 25% of their labels" in told  # named
    # a good model on skewed labels predicts the majority class as often as it occurs
    skewed = torch.where(torch.arange(400) < 300, torch.tensor(0), targets)
    good = quality(torch.nn.functional.one_hot(skewed, 4).float(), skewed, 4)
    assert not good.lopsided and check_baseline(good, gates_on=True, where=None,
                                                 preprocess=None) is None
    at_chance = quality(torch.zeros(400, 4), targets, 4, split="test")  # all class 0: 25 %
    assert "near chance" in (chance_warning(at_chance, preprocess=None, where="m.pt") or "")


def test_a_drop_no_gate_read_is_said_short_of_a_collapse() -> None:
    """--no-guard: a channel prune to 20.4 % (-76.3 pt) was silent, the near-chance line
    being 19 % (stage audit F14)."""
    from occ.engine.gates import unguarded_drop

    before = Quality(accuracy=96.7, classes=10, split="test")
    after = Quality(accuracy=20.4, classes=10, split="test")
    said = unguarded_drop(label="prune(channel)", index=0, before=before, after=after,
                          why="the quality gates are off", max_drop=5.0)
    assert said == ("stages[0] prune(channel): test accuracy 96.70% -> 20.40% (-76.30 pt, more "
                    "than the 5 pt guard.max_stage_drop allows); the quality gates are off, so "
                    "nothing stops the run")
    small = Quality(accuracy=93.0, classes=10, split="test")
    assert unguarded_drop(label="p", index=0, before=before, after=small, why="w",
                          max_drop=5.0) is None
    assert unguarded_drop(label="p", index=0, before=before, after=after, why="w",
                          max_drop=None) is None
