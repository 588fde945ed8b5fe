"""occ ablate: prefix sharing, deterministic rankings, resume, bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from occ import api
from occ.cli import app
from occ.errors import StageError
from occ.techniques import registry
from occ.techniques.registry import StageInfo
from occ.techniques.spec import StageConfig, StageResult


@dataclass(frozen=True)
class _Fake(StageConfig):
    scale: float = 1.0


def _fake(category: str) -> type:
    return dataclass(frozen=True)(type(f"Fake_{category}", (_Fake,),
                                       {"default_category": category}))


def _scale_run(ctx, config) -> StageResult:
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.mul_(config.scale)
    return StageResult(notes=[f"scaled by {config.scale}"])


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.get_stage("prune")  # fill the registry first
    for name, cat in (("fake_a", "architecture"), ("fake_w", "weight"), ("fake_b", "bits")):
        monkeypatch.setitem(registry._STAGES, name,
                            StageInfo(name, _fake(cat), _scale_run, "test stage"))


STAGES = [{"type": "fake_b", "scale": 0.9}, {"type": "fake_a", "scale": 1.1},
          {"type": "fake_w", "scale": 0.95}]


@pytest.mark.slow
def test_prefixes_run_once_and_ranking_is_deterministic(fake_stages, recipe_factory,
                                                        tmp_path: Path) -> None:
    recipe = recipe_factory(STAGES)
    doc = api.ablate(recipe, out=str(tmp_path / "abl"))
    assert doc["orders_run"] == 6
    # prefixes of length 1, 2, 3: 3 + 6 + 6 stage runs instead of 6 * 3 = 18
    assert doc["stage_executions"] == 15
    assert doc["builtin"] == ["fake_a", "fake_w", "fake_b"]
    again = api.ablate(recipe, out=str(tmp_path / "abl2"))
    assert [r["order"] for r in again["ranking"]] == [r["order"] for r in doc["ranking"]]
    for name in ("ablation.json", "ablation.md", "ablation.png"):
        assert (tmp_path / "abl" / name).is_file()
    assert len(doc["pairwise"]) == 3
    assert all(p["comparisons"] == 3 for p in doc["pairwise"])


@pytest.mark.slow
def test_rerun_resumes_from_saved_prefixes(fake_stages, recipe_factory, tmp_path: Path) -> None:
    recipe = recipe_factory(STAGES)
    first = api.ablate(recipe, out=str(tmp_path / "abl"))
    second = api.ablate(recipe, out=str(tmp_path / "abl"))
    assert second["stage_executions"] == 0
    assert [r["metrics"] for r in second["ranking"]] == [r["metrics"] for r in first["ranking"]]


def _warning_run(ctx, config) -> StageResult:
    import logging
    if config.scale > 1:  # fake_a warns, like an early-exit head at chance
        logging.getLogger("occ").warning("fake_a: head at chance (scale %s)", config.scale)
    return _scale_run(ctx, config)


@pytest.mark.slow
def test_stage_warnings_reach_each_order_and_survive_a_resume(
        fake_stages, recipe_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._STAGES, "fake_a",
                        StageInfo("fake_a", _fake("architecture"), _warning_run, "test stage"))
    recipe = recipe_factory(STAGES)
    said = "fake_a: head at chance (scale 1.1)"
    for run in (1, 2):  # the second run restores every prefix from disk
        doc = api.ablate(recipe, out=str(tmp_path / "abl"))
        assert doc["stage_executions"] == (15 if run == 1 else 0)
        assert all(r["warnings"] == [said] for r in doc["ranking"])  # fake_a is in all
        saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
        assert all(r["warnings"] == [said] for r in saved["ranking"])
        md = (tmp_path / "abl" / "ablation.md").read_text()
        assert f"## Stage warnings\n\n- {said} (every order)" in md


def test_sampled_orders_include_the_builtin(fake_stages, recipe_factory, tmp_path: Path) -> None:
    doc = api.ablate(recipe_factory(STAGES), out=str(tmp_path / "s"), max_orders=2, seed=3)
    assert doc["orders_run"] == 2
    assert any(r["builtin"] for r in doc["ranking"])


@pytest.mark.parametrize(("extra", "stages", "expected"), [
    ([], [{"type": "fake_a"}], "needs at least two techniques"),
    (["--max-orders", "0"], STAGES, "--max-orders: must be >= 1"),
    (["--tolerance", "-1"], STAGES, "--tolerance: must be >= 0"),
])
def test_bad_input(fake_stages, recipe_factory, extra, stages, expected) -> None:
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(stages)), *extra])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_json(fake_stages, recipe_factory, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES[:2])), "--json",
                                      "--out", str(tmp_path / "j")])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["orders_run"] == 2 and doc["builtin_rank"] in (1, 2)
    assert doc["output"] == str(tmp_path / "j")


def test_cli_says_where_it_wrote(fake_stages, recipe_factory, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES[:2])),
                                      "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())  # rich may wrap a long path
    assert f"wrote ablation.json, ablation.md and ablation.png to {tmp_path / 't'}" in said
    # the figure the ranking reads (val) beside the reported one (test), labelled as such
    doc = json.loads((tmp_path / "t" / "ablation.json").read_text())
    top = doc["ranking"][0]["metrics"]
    assert "val acc % (ranked)" in said and "test acc %" in said
    assert f"{top['val_accuracy']:.2f} │ {top['accuracy']:.2f}" in said
    assert "Ranked on the val accuracy" in said
    md = (tmp_path / "t" / "ablation.md").read_text()
    assert "| rank | order | val acc % (ranked) | test acc % | agree % |" in md
    assert f"| {top['val_accuracy']:.2f} | {top['accuracy']:.2f} |" in md
    assert "within 0.5 pt of the best val accuracy" in md


def test_an_edited_recipe_in_the_same_directory_stops_with_one_error(
        fake_stages, recipe_factory, tmp_path: Path) -> None:
    out = tmp_path / "abl"
    api.ablate(recipe_factory(STAGES), out=str(out))
    states = sorted(p.read_bytes() for p in (out / "states").iterdir())
    edited = [{**STAGES[0], "scale": 0.8}, *STAGES[1:]]
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(edited)), "--out", str(out)])
    assert result.exit_code == 2
    assert "was made by a different recipe" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.read_bytes() for p in (out / "states").iterdir()) == states  # kept


PRUNE = {"type": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 1}
QUANT = {"type": "quantize", "weight_bits": 8, "mode": "ptq"}


@pytest.mark.parametrize(("stages", "expected"), [
    ([QUANT, {**PRUNE, "exclude": ["nope"]}],
     "recipe.yaml: stages[1].exclude[0]: no Conv2d / Linear layer 'nope' in the model"),
    ([PRUNE, {"type": "early_exit", "exits": ["features.99"], "epochs": 1}, QUANT],
     "recipe.yaml: stages[1].exits[0]: 'features.99' is not a valid exit point"),
])
def test_an_unknown_model_reference_exits_2_before_any_stage(
        recipe_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        stages: list[dict], expected: str) -> None:
    """The names a recipe gives (``exclude``, ``exits``, ``hints``) are checked against the
    model before any order trains, as ``occ compress`` checks them: one line, exit 2, at
    the stage's place in the recipe as written (not in the order that ran it)."""
    from occ.engine import runner

    def no_stage(*args, **kwargs):
        raise AssertionError("a stage ran before the recipe's references were checked")

    monkeypatch.setattr(runner, "run_stage", no_stage)
    out = tmp_path / "abl"
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(stages)), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not list(out.glob("states/*")) and not (out / "ablation.json").exists()


def _broken_run(ctx, config) -> StageResult:
    raise StageError("diverged (test stage)")


def test_every_order_failing_exits_1_naming_the_cause(fake_stages, recipe_factory,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """Nothing ranked is a failure, not a ranking (the outputs still say what happened)."""
    monkeypatch.setitem(registry._STAGES, "fake_w",
                        StageInfo("fake_w", _fake("weight"), _broken_run, "test stage"))
    out = tmp_path / "abl"
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES[1:])), "--out", str(out)])
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert "every one of the 2 orders failed" in message and "diverged (test stage)" in message
    assert "Traceback" not in result.output
    doc = json.loads((out / "ablation.json").read_text())
    assert {r["status"] for r in doc["ranking"]} == {"failed"}


def _warn_then_break(ctx, config) -> StageResult:
    import logging
    logging.getLogger("occ").warning("fake_w: nothing left to train (test)")
    raise StageError("diverged (test stage)")


@pytest.mark.slow
def test_a_failed_order_keeps_what_its_stages_warned_and_shows_no_figures(
        fake_stages, recipe_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The warning is often why it failed (a fine-tune that could not run); its cells are
    '-', not nan or 0."""
    monkeypatch.setitem(registry._STAGES, "fake_w",
                        StageInfo("fake_w", _fake("weight"), _warn_then_break, "test stage"))
    monkeypatch.setitem(registry._STAGES, "fake_a",
                        StageInfo("fake_a", _fake("architecture"), _warning_run, "test stage"))
    out = tmp_path / "abl"
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES[1:])), "--out",
                                      str(out), "--no-guard"])
    assert result.exit_code == 1, result.output
    doc = json.loads((out / "ablation.json").read_text())
    by_order = {tuple(r["order"]): r for r in doc["ranking"]}
    assert by_order[("fake_a", "fake_w")]["warnings"] == [
        "fake_a: head at chance (scale 1.1)", "fake_w: nothing left to train (test)"]
    assert by_order[("fake_w", "fake_a")]["warnings"] == ["fake_w: nothing left to train (test)"]
    md = (out / "ablation.md").read_text()
    assert "| - | - | - | failed: " in md and "nan" not in md


def test_failed_orders_decide_no_pairwise_verdict() -> None:
    from occ.engine.ablate import OrderResult, Unit, pairwise

    def r(order: str, status: str = "ok") -> OrderResult:
        return OrderResult(order=list(order), status=status,
                           metrics={"accuracy": 90.0, "bitops": 1.0} if status == "ok" else {})

    from types import SimpleNamespace

    units = [Unit("A", (SimpleNamespace(category="architecture"),)),
             Unit("B", (SimpleNamespace(category="bits"),))]
    # Both failed: no comparison, not "100 %" for whichever sorts first.
    rows = pairwise([r("AB", "failed"), r("BA", "failed")], units)
    assert rows[0]["comparisons"] == 0 and rows[0]["agrees"] is None
    rows = pairwise([r("BA"), r("AB", "failed")], units)
    assert rows[0]["comparisons"] == 0


def test_a_bitops_tie_at_equal_quality_decides_no_verdict() -> None:
    """Equal accuracy and BitOps 0.3 % apart printed "measured EE first is better" (stage
    audit F12): within the tolerance and 1 % of BitOps, the pair is a tie."""
    from types import SimpleNamespace

    from occ.engine.ablate import OrderResult, Unit, pairwise

    def r(order: str, acc: float, bitops: float) -> OrderResult:
        return OrderResult(order=list(order), metrics={"val_accuracy": acc, "accuracy": acc,
                                                       "bitops": bitops})

    units = [Unit("A", (SimpleNamespace(category="architecture"),)),
             Unit("B", (SimpleNamespace(category="bits"),))]
    tie = pairwise([r("BA", 98.4, 6.14e7), r("AB", 98.4, 6.16e7)], units, tolerance=0.5)
    assert tie[0]["a_before_b_better"] == 0.5 and tie[0]["agrees"] is None
    clear = pairwise([r("BA", 98.4, 3.0e7), r("AB", 98.4, 6.16e7)], units, tolerance=0.5)
    assert clear[0]["a_before_b_better"] == 0.0 and clear[0]["measured_first"] == "B"
    # the built-in order's place: "ranks 3 of 3" came from such a tie
    from occ.engine.ablate_rank import builtin_place
    from occ.engine.ablate_views import builtin_words

    first, second = r("BA", 98.4, 6.14e7), r("AB", 98.4, 6.16e7)
    second.builtin = True
    place = builtin_place([first, second], 0.5)
    assert place == {"builtin_rank": 1, "builtin_ties": 1}
    assert builtin_words({**place, "ranking": [1, 2]}) == (
        "ranks 1 of 2, tied with 1 other order (within the tolerance and 1 % of its BitOps)")
    first.status = second.status = "collapsed"
    place = builtin_place([first, second], 0.5)
    assert builtin_words({**place, "ranking": [1, 2]}) == (
        "is not ranked: every order failed or collapsed")


def test_an_order_near_chance_is_collapsed_where_its_input_model_was_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two chance-level orders (--no-guard) ranked "ok" and gave a pairwise verdict from a
    tie-break between them (stage audit F12): such an order is "collapsed", ranked after
    those that work, in no verdict."""
    from types import SimpleNamespace

    from occ.engine import measure
    from occ.quality import Quality

    good, chance = Quality(accuracy=98.4, classes=10), Quality(accuracy=9.0, classes=10)
    ctx = SimpleNamespace(data=SimpleNamespace(split=lambda name: [0] * 5))
    for base, now, expected in ((good, chance, "val 9.00%, near chance (10.0% for 10 classes; "
                                               "19.0% or less counts as near)"),
                                (good, good, None), (chance, chance, None)):
        monkeypatch.setattr(measure, "measured", lambda c, split, baseline=False, b=base, n=now:
                            b if baseline else n)
        assert measure.collapse_since_input(ctx) == expected


def test_seeds_rank_by_means_with_intervals_and_ties(fake_stages, recipe_factory,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "seeds"
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES[:2])), "--json",
                                      "--seeds", "0,1", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["seeds"] == [0, 1] and doc["orders_run"] == 2
    assert doc["selection_split"] == "val"
    for s in (0, 1):  # one full ablation per seed, kept
        assert (out / f"seed{s}" / "ablation.json").is_file()
    assert (out / "ablation.json").is_file() and (out / "ablation.md").is_file()
    rows = doc["ranking"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["test_accuracy"]["n"] == 2  # mean over both seeds
        assert "val_accuracy" in r["metrics"] and "bitops_std" in r["metrics"]
        iv = r["change_interval"]
        assert iv["low"] <= iv["estimate"] <= iv["high"]
    best = max(rows, key=lambda r: r["test_accuracy"]["mean"])
    assert best["tied_with_most_accurate"] is True and best["vs_most_accurate"] is None


def test_bad_seeds_exit_2(fake_stages, recipe_factory) -> None:
    for value, expected in (("0,x", "--seeds: must be comma-separated integers"),
                            ("1,1", "--seeds: must be distinct seeds")):
        result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES)),
                                          "--seeds", value])
        assert result.exit_code == 2
        assert expected in result.stderr


def test_under_torchrun_exits_2_pointing_at_compress(fake_stages, recipe_factory, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each process it starts
    out = tmp_path / "abl"
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES)), "--out", str(out)])
    assert result.exit_code == 2
    assert "occ ablate: runs in one process, not under torchrun" in result.stderr
    assert "occ compress --nproc N" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # refused before any output or lock


@pytest.mark.parametrize("value", ["two", "0", "-3"])
def test_a_world_size_that_is_not_a_count_exits_2(fake_stages, recipe_factory, value: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", value)
    result = CliRunner().invoke(app, ["ablate", str(recipe_factory(STAGES))])
    assert result.exit_code == 2
    assert f"WORLD_SIZE: must be a positive integer (torchrun sets it), got '{value}'" in \
        result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_orders_bytes_are_the_file_compress_writes_for_it(recipe_factory) -> None:
    """The built-in order's row, and the baseline, read what occ compress writes and
    measures for the same recipe (before: the header ablate sized held another plan and
    no final metrics, 52 B short on a 23.5 KB file)."""
    recipe = recipe_factory([{"type": "prune", "sparsity": 0.5},
                             {"type": "quantize", "weight_bits": 8, "act_bits": 8,
                              "mode": "ptq", "calib_samples": 64}])
    doc = api.ablate(recipe)
    report = api.compress(recipe)
    (row,) = [r for r in doc["ranking"] if r["builtin"]]
    assert row["metrics"]["bytes"] == report.artifact_bytes
    assert row["metrics"]["accuracy"] == report.final_metrics().accuracy
    assert doc["baseline"]["bytes"] == report.baseline.bytes


def test_warnings_read_back_from_a_saved_state_stay_lines_within_bounds() -> None:
    from occ.engine.ablate import SAVED_WARNINGS, WARNING_CHARS, _saved_warnings

    planted = {"warnings": ["a\n## injected heading\n- b", "x" * 10**5, 7, *["w"] * 100]}
    said = _saved_warnings(planted)
    assert said[0] == "a ## injected heading - b" and len(said[1]) == WARNING_CHARS
    assert len(said) == SAVED_WARNINGS - 1 and all("\n" not in w for w in said)
    assert _saved_warnings({"warnings": "not a list"}) == []
