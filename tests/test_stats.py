"""occ.stats: mean ± std over seeds, paired intervals, McNemar, ranking with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from occ import stats


def test_mean_std_sample_std():
    s = stats.mean_std([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0)
    assert s["std"] == pytest.approx(1.0)  # ddof 1
    assert s["n"] == 3
    assert stats.mean_std([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        stats.mean_std([])


def test_mcnemar_exact_values():
    base = np.array([True] * 10 + [False] * 10)
    # 8 lost, 2 gained: p = 2 * P[Bin(10, .5) <= 2] = 2 * 56 / 1024
    new = base.copy()
    new[:8] = False
    new[10:12] = True
    r = stats.mcnemar(base, new)
    assert (r["lost"], r["gained"]) == (8, 2)
    assert r["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)
    same = stats.mcnemar(base, base)
    assert same == {"lost": 0, "gained": 0, "p_value": 1.0}
    assert stats.mcnemar(base, ~base)["p_value"] == pytest.approx(1.0)  # 10 vs 10: symmetric


def test_change_interval_covers_a_known_drop_and_excludes_zero():
    rng = np.random.default_rng(1)
    base = rng.random(1000) < 0.98
    new = base.copy()
    flip = np.flatnonzero(base)[:30]  # 30 of 1,000 lost: -3.0 pt exactly
    new[flip] = False
    iv = stats.change_interval(base, new, n_boot=2000)
    assert iv.estimate == pytest.approx(-3.0)
    assert iv.low < -3.0 < iv.high
    assert iv.high < 0.0  # 30 lost, none gained: clearly a drop
    assert "1000 test images" in iv.method


def test_change_interval_of_a_wash_contains_zero():
    base = np.array([True, False] * 500)
    new = base.copy()
    new[:10] = ~new[:10]  # 5 lost, 5 gained
    iv = stats.change_interval(base, new, n_boot=2000)
    assert iv.estimate == pytest.approx(0.0)
    assert iv.contains(0.0)
    assert iv.high - iv.low > 0.2  # ten discordant images leave real uncertainty


def test_change_interval_pools_seeds_and_repeats():
    rng = np.random.default_rng(2)
    base = rng.random(500) < 0.95
    seeds = np.stack([base & (rng.random(500) > 0.02) for _ in range(3)])
    a = stats.change_interval(base, seeds, n_boot=1000, seed=3)
    b = stats.change_interval(base, seeds, n_boot=1000, seed=3)
    assert a == b
    assert a.estimate == pytest.approx((seeds.mean() - base.mean()) * 100)
    assert "3 seed(s)" in a.method
    with pytest.raises(ValueError):
        stats.change_interval(base[:10], seeds)


def test_seed_summary_reports_each_part():
    base = np.ones(200, bool)
    new = np.ones((3, 200), bool)
    new[0, :2] = False
    new[1, :4] = False
    s = stats.seed_summary(base, new, ratios=[100.0, 110.0, 120.0], n_boot=500)
    assert s["seeds"] == 3
    assert s["accuracy_change"]["values"] == pytest.approx([-1.0, -2.0, 0.0])
    assert s["accuracy_change"]["mean"] == pytest.approx(-1.0)
    assert s["ratio"]["mean"] == pytest.approx(110.0) and s["ratio"]["std"] == pytest.approx(10.0)
    assert [m["lost"] for m in s["mcnemar"]] == [2, 4, 0]
    assert s["interval"]["high"] <= 0.0


def test_rank_orders_by_mean_and_marks_ties():
    rng = np.random.default_rng(0)
    truth = rng.random((3, 1000)) < 0.97
    close = truth.copy()
    close[:, :3] = ~close[:, :3]  # three images differ: indistinguishable
    bad = truth & (rng.random((3, 1000)) > 0.06)  # about 6 pt worse
    ranked = stats.rank({"bad": bad, "close": close, "best": truth}, n_boot=1000)
    assert ranked[0]["name"] in ("best", "close")
    names = [r["name"] for r in ranked]
    assert names[-1] == "bad"
    by = {r["name"]: r for r in ranked}
    assert by["bad"]["tied"] is False and by["bad"]["vs_best"]["high"] < 0
    other = "close" if ranked[0]["name"] == "best" else "best"
    assert by[other]["tied"] is True
    assert math.isclose(by["best"]["accuracy"]["mean"], truth.mean(axis=1).mean() * 100)
    assert stats.rank({}) == []


def test_correct_from_outputs():
    out = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert stats.correct(out, [1, 1, 1]).tolist() == [True, False, True]
