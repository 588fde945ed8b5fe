"""``type: lowrank``: config checks, factorisation maths, order, artifact round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from occ import api
from occ.cli import app
from occ.config import from_dict
from occ.errors import RecipeError
from occ.techniques.lowrank.config import LowRankConfig
from tests.conftest import write_recipe

runner = CliRunner()


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"rank": 0}, "rank", "must be >= 1"),
    ({"rank": 1.0}, "rank", "share of the full rank must be in (0, 1)"),
    ({"rank": -0.5}, "rank", "(0, 1)"),
    ({"energy": 0.0}, "energy", "must be in (0, 1]"),
    ({"energy": 1.5}, "energy", "must be in (0, 1]"),
    ({"rank": 4, "energy": 0.9}, "energy", "got both"),
    ({"min_params_saving": 1.0}, "min_params_saving", "[0, 1)"),
    ({"epochs": -1}, "epochs", ">= 0"),
    ({"lr": 0}, "lr", "> 0"),
    ({"method": "cp"}, "method", "must be one of"),
    ({"rank": True}, "rank", "must be"),
])
def test_bad_config_names_the_field(data: dict, field: str, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        from_dict(LowRankConfig, data, where="stages[0]")
    assert f"stages[0].{field}" in str(err.value) and message in str(err.value)


def test_targets() -> None:
    assert LowRankConfig().target == ("energy", 0.9)
    assert LowRankConfig(rank=8).target == ("rank", 8.0)
    assert LowRankConfig(rank=0.25).target == ("share", 0.25)
    assert LowRankConfig(energy=0.5).target == ("energy", 0.5)
    assert LowRankConfig().category == "factor"


def test_cli_validate_bad_rank_exits_2(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, stages=[{"type": "lowrank", "rank": 0}])
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "stages[0].rank: an int rank must be >= 1, got 0" in result.stderr


# --- order -------------------------------------------------------------------------------


def test_order_puts_lowrank_after_distill_before_quantize() -> None:
    result = runner.invoke(app, ["order", "--techniques", "Q,P,LR,KD", "--json"])
    assert result.exit_code == 0, result.output
    order = json.loads(result.stdout)["order"]
    assert order.index("KD") < order.index("LR") < order.index("Q")
    assert api.order(["KD", "LR", "P", "Q"])["order"] == ["KD", "LR", "P", "Q"]
    assert api.order(["EC", "EE", "Q", "svd", "KD"])["order"] == ["KD", "svd", "Q", "EE", "EC"]


# --- factorisation -----------------------------------------------------------------------


def _layers():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return (nn.Linear(40, 24), nn.Conv2d(6, 12, 3, stride=2, padding=1))


@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_error_falls_with_rank_and_full_rank_reproduces(method: str) -> None:
    import torch
    from torch import nn

    from occ.techniques.lowrank.factor import Plan, factorise, full_ranks, reconstruction_error

    for layer in _layers():
        if method == "tucker2" and isinstance(layer, nn.Linear):
            continue
        full = full_ranks(layer, method)
        errors = []
        for r in (1, 2, 4, max(full)):
            plan = Plan(method, tuple(min(r, f) for f in full))
            errors.append(reconstruction_error(layer, factorise(layer, plan)))
        assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
        assert errors[-1] < 1e-6
        x = torch.randn(3, 40) if isinstance(layer, nn.Linear) else torch.randn(3, 6, 9, 9)
        factored = factorise(layer, Plan(method, full))
        torch.testing.assert_close(factored(x), layer(x), atol=1e-5, rtol=1e-5)


def test_tucker2_reproduces_a_kernel_of_low_mode_ranks() -> None:
    import torch
    from torch import nn

    from occ.techniques.lowrank.factor import Plan, factorise, plan_layer

    torch.manual_seed(1)
    conv = nn.Conv2d(8, 10, 3, padding=1)
    core, u_out, u_in = torch.randn(3, 2, 3, 3), torch.randn(10, 3), torch.randn(8, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("rskl,or,is->oikl", core, u_out, u_in))
    assert plan_layer(conv, "tucker2", "energy", 0.999999).ranks == (3, 2)
    factored = factorise(conv, Plan("tucker2", (3, 2)))
    assert [type(m).__name__ for m in factored] == ["Conv2d"] * 3
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(factored(x), conv(x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in factored.parameters()) < sum(p.numel() for p in conv.parameters())


def test_energy_and_share_ranks() -> None:
    import torch

    from occ.techniques.lowrank.factor import rank_for

    values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squared: 9, 4, 1 of 14
    assert rank_for(values, "energy", 0.5) == 1
    assert rank_for(values, "energy", 0.9) == 2
    assert rank_for(values, "energy", 1.0) == 3
    assert rank_for(values, "share", 0.5) == 2
    assert rank_for(values, "rank", 99) == 4


def test_stage_drops_params_and_skips_layers_that_would_grow() -> None:
    import torch

    from occ.models import build_model
    from occ.techniques.lowrank.factor import Factorised
    from occ.techniques.lowrank.run import candidates, choose

    model = build_model("lenet300")
    layers = candidates(model)
    assert list(layers) == ["fc1", "fc2", "fc3"]
    config = LowRankConfig(rank=16)
    from occ.techniques.lowrank.factor import factor_params, factorise, layer_params

    fc1 = layers["fc1"]
    plan = choose(fc1, config)
    assert plan.ranks == (16,) and factor_params(fc1, plan) < layer_params(fc1)
    factored = factorise(fc1, plan)
    assert isinstance(factored, Factorised)
    assert sum(p.numel() for p in factored.parameters()) == factor_params(fc1, plan)
    fc3 = layers["fc3"]  # 100 -> 10: rank 10 is full rank, it would grow
    assert factor_params(fc3, choose(fc3, LowRankConfig(rank=10))) > layer_params(fc3)
    assert torch.isfinite(factored(torch.randn(2, 784))).all()


def test_edit_rejects_bad_json() -> None:
    from occ.errors import ArtifactError
    from occ.models import build_model
    from occ.models.edits import apply_edits
    from occ.techniques import registry

    registry.load_edit_ops()
    bad = [{"op": "lowrank", "args": {"layers": {"fc1": {"method": "svd", "ranks": [9999]}}}},
           {"op": "lowrank", "args": {"layers": {"fc1": {"method": "cp", "ranks": [2]}}}},
           {"op": "lowrank", "args": {"layers": {"fc1": {"method": "svd", "ranks": ["2"]}}}},
           {"op": "lowrank", "args": {"layers": {"fc1": {"method": "tucker2",
                                                         "ranks": [2, 2]}}}}]
    for edit in bad:
        with pytest.raises(ArtifactError, match="lowrank"):
            apply_edits(build_model("lenet300"), [edit])


# --- end to end --------------------------------------------------------------------------


def test_compress_lowrank_quantize_code_round_trips(recipe_factory, test_split) -> None:
    import torch

    import occ
    from occ.techniques.lowrank.factor import Factorised
    from occ.techniques.quantize.layers import quant_layers

    recipe = recipe_factory([
        {"type": "quantize", "weight_bits": 8},
        {"type": "entropy_code"},
        {"type": "lowrank", "method": "auto", "rank": 0.5, "min_params_saving": 0.0,
         "epochs": 1},
    ])
    report = api.compress(recipe)
    assert [s.label for s in report.stages][:1] == ["lowrank(auto)"]
    details = report.stages[0].details
    assert details["factorised"] and details["params_after"] < details["params_before"]
    model = occ.load(report.artifact)
    factored = [n for n, m in model.named_modules() if isinstance(m, Factorised)]
    assert sorted(factored) == details["factorised"]
    quantized = quant_layers(model)
    assert any(n.startswith(f"{factored[0]}.") for n in quantized)  # factors were quantized
    # the compressed model's own outputs, rebuilt twice from the artifact: identical
    x = test_split[0][:64]
    again = occ.load(report.artifact)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    result = api.evaluate(report.artifact)
    assert abs(result["accuracy"] - report.final_metrics().accuracy) <= 0.1 + 1e-9
