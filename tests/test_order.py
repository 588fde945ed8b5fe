"""The built-in order: deterministic, independent of listing order, explained."""

from __future__ import annotations

import itertools

import pytest

from occ import api
from occ.engine.plan import make_plan
from occ.errors import RecipeError
from occ.recipe import parse_recipe
from occ.techniques import order as order_mod


def test_dpqe() -> None:
    assert api.order(["P", "Q", "KD", "EE"])["order"] == ["KD", "P", "Q", "EE"]


@pytest.mark.parametrize("perm", list(itertools.permutations(["KD", "P", "Q", "EE", "EC"])))
def test_order_is_the_same_whatever_the_listing(perm: tuple[str, ...]) -> None:
    assert api.order(list(perm))["order"] == ["KD", "P", "Q", "EE", "EC"]


def test_aliases_and_prune_methods_rank_finer() -> None:
    result = api.order(["magnitude", "E", "channel", "D", "H", "Q"])
    assert result["order"] == ["D", "channel", "magnitude", "Q", "E", "H"]
    assert api.order(["quantize", "early_exit", "distill"])["order"] == [
        "distill", "quantize", "early_exit"]


def test_ties_keep_the_given_order() -> None:
    assert api.order(["surp", "magnitude"])["order"] == ["surp", "magnitude"]
    assert api.order(["magnitude", "surp"])["order"] == ["magnitude", "surp"]


def test_unknown_technique() -> None:
    with pytest.raises(RecipeError, match="unknown technique 'X'; allowed: KD") as caught:
        api.order(["P", "X"])
    assert caught.value.where == "order(techniques)"  # from Python: the argument, no CLI flag


DPQE = ("architecture", "channel", "weight", "bits", "dynamic", "coding")


def test_every_pair_of_dpqe_categories_has_one_edge_with_reason() -> None:
    cats = [c for c in order_mod.categories() if c in DPQE]
    assert cats == list(DPQE)
    for i, a in enumerate(cats):
        for b in cats[i + 1:]:
            e = order_mod.edge(a, b)
            assert e is not None and e.reason and e.source
            assert order_mod.edge(b, a) is None


def test_every_edge_has_a_reason_and_points_down_the_rank() -> None:
    rank = {c: i for i, c in enumerate(order_mod.categories())}
    for e in order_mod.registry.edges():
        assert e.reason and e.source and rank[e.before] < rank[e.after]


def test_lowrank_sits_after_architecture_and_before_bits_dynamic_coding() -> None:
    assert order_mod.edge("architecture", "factor") is not None
    for later in ("bits", "dynamic", "coding"):
        assert order_mod.edge("factor", later) is not None
        assert order_mod.edge(later, "factor") is None
    # before unstructured pruning (dense factors would undo a mask); no edge with channel
    # pruning: their relative order is the recipe's, deterministically
    assert order_mod.edge("factor", "weight") is not None
    assert order_mod.edge("channel", "factor") is None
    assert order_mod.edge("factor", "channel") is None
    assert api.order(["LR", "P"])["order"] == ["LR", "P"]
    assert api.order(["P", "LR"])["order"] == ["LR", "P"]
    assert api.order(["LR", "channel"])["order"] == ["LR", "channel"]
    assert api.order(["channel", "LR"])["order"] == ["channel", "LR"]
    assert api.order(["EC", "Q", "LR", "EE", "KD"])["order"] == ["KD", "LR", "Q", "EE", "EC"]


def test_cycle_in_edge_data_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from occ.techniques import registry

    edges = (*registry.edges(), order_mod.Edge("bits", "weight", "test", "test"))
    monkeypatch.setattr(registry, "edges", lambda: edges)
    with pytest.raises(RecipeError, match="cycle"):
        order_mod.sort_indices(["weight", "bits"])


RECIPE = {"version": 1, "name": "o", "model": {"arch": "lenet5"}, "stages": [
    {"type": "prune", "method": "magnitude", "sparsity": 0.5},
    {"type": "prune", "method": "magnitude", "sparsity": 0.7},
]}


def test_plan_records_no_moves_for_a_sorted_recipe() -> None:
    plan = make_plan(parse_recipe(RECIPE))
    assert not plan.reordered and plan.moves == ()
    assert [s.config.sparsity for s in plan.recipe.stages] == [0.5, 0.7]


def test_as_written_warns_on_violations() -> None:
    cats = ["bits", "weight"]
    found = order_mod.violations(cats)
    assert len(found) == 1 and found[0][:2] == (0, 1)
    assert order_mod.sort_indices(cats) == [1, 0]
