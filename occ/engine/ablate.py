"""``occ ablate``: run the recipe's techniques in every order and rank the orders.

The Order of Compression paper found its order by trying orders; this makes that
experiment a command on the user's own model. Each technique (all prune stages together
count as one, in recipe order) runs with the same config in every order; entropy coding
stays last. Orders are ranked by BitOps among those within ``tolerance`` of the best
quality on the validation split (the test split is only reported): accuracy points for
classification, MAE (target units) for regression (default 0.5 points, or 5 % of the
baseline's MAE). With no val split the test figures are used, and the output says so.
Orders share prefixes: the state after ``KD -> P`` is computed once and reused by every
order that starts that way, and saved on disk so an interrupted ablation continues where
it stopped. ``occ ablate --seeds`` repeats it per seed (``occ.engine.ablate_seeds``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from occ.engine import measure, runner
from occ.engine import resume as resume_mod
from occ.engine.ablate_rank import (
    builtin_order,
    builtin_place,
    default_tolerance,
    pairwise,
    rank,
)
from occ.engine.ablate_views import write_outputs
from occ.engine.baseline_check import gain_warnings, recorded_warnings
from occ.engine.context import RunContext
from occ.engine.plan import Plan, make_plan
from occ.engine.preflight import check_order_references
from occ.engine.run_header import file_size
from occ.errors import OccError, RecipeError, StageError
from occ.outputs import ABLATE_STATES
from occ.recipe import Recipe, Stage
from occ.techniques.registry import labels

log = logging.getLogger("occ")


@dataclass
class Unit:
    """One technique: its short label and its stages (several prune stages form one P)."""

    label: str
    stages: tuple[Stage, ...]


@dataclass
class OrderResult:
    """What one order gave."""

    order: list[str]
    status: str = "ok"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False
    warnings: list[str] = field(default_factory=list)  # what its stages warned, in run order
    correct: Any = field(default=None, repr=False)  # test correctness (numpy), not in JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``ablation.json`` (without the per-image correctness)."""
        return {k: v for k, v in self.__dict__.items() if k != "correct"}


def units_of(recipe: Recipe) -> tuple[list[Unit], list[Stage]]:
    """The recipe's permutable techniques and the stages pinned last (entropy coding)."""
    groups: dict[str, list[Stage]] = {}
    last: list[Stage] = []
    for stage in recipe.stages:
        if stage.category == "coding":
            last.append(stage)
        else:
            groups.setdefault(labels().get(stage.type, stage.type), []).append(stage)
    return [Unit(k, tuple(v)) for k, v in groups.items()], last


def choose_orders(units: list[Unit], max_orders: int | None, seed: int) -> list[tuple[str, ...]]:
    """Every permutation of the units' labels, or a seeded sample of ``max_orders``.

    The built-in order is always included, so its rank can be reported.
    """
    labels = [u.label for u in units]
    every = list(itertools.permutations(labels))
    builtin = builtin_order(units)
    if max_orders is None or max_orders >= len(every):
        return sorted(every)
    others = [o for o in every if o != builtin]
    sample = random.Random(seed).sample(others, max_orders - 1)
    return sorted([builtin, *sample])


class _Runner:
    """Runs orders with prefix sharing; counts stage executions (tests rely on it)."""

    def __init__(self, recipe: Recipe, ctx: RunContext, out_dir: Path, checkpoint_sha: str):
        self.recipe, self.ctx, self.out_dir = recipe, ctx, out_dir
        self.sha = checkpoint_sha
        self.builtin = make_plan(recipe)  # compress's plan of the recipe as given
        self.written = {id(stage): i for i, stage in enumerate(recipe.stages)}
        self.cache: dict[tuple[str, ...], dict[str, Any]] = {}
        self.executed = 0
        self.warned: dict[tuple[str, ...], list[str]] = {(): []}  # by prefix, as cache
        self.base_out: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None  # the test targets, in loader order
        self.base_state = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        c = self.ctx
        return {"model": copy.deepcopy(c.model), "arch": copy.deepcopy(c.arch),
                "edits": copy.deepcopy(c.edits), "encoding": dict(c.encoding)}

    def _load(self, snap: dict[str, Any]) -> None:
        c = self.ctx
        c.model = copy.deepcopy(snap["model"])
        c.arch, c.edits = copy.deepcopy(snap["arch"]), copy.deepcopy(snap["edits"])
        c.encoding = dict(snap["encoding"])

    def _plan(self, stages: list[Stage]) -> Plan:
        """The plan ``occ compress`` would record for these stages: the recipe's own for
        the built-in order, else the recipe with them written in that order, ``order:
        as-written`` (so an order's bytes are the file compress would write for it)."""
        if [s.label for s in stages] == self.builtin.labels:
            return self.builtin
        recipe = replace(self.recipe, stages=tuple(stages), order="as-written")
        where = tuple(self.written[id(s)] for s in stages)  # errors name the recipe's stages[i]
        try:
            return replace(make_plan(recipe), positions=where)
        except RecipeError:  # a stage's requirement unmet in this order: it fails when run
            return Plan(recipe=recipe, written=tuple(s.label for s in stages), reordered=False,
                        positions=where)

    def _fingerprint(self, stages: list[Stage]) -> str:
        recipe = replace(self.recipe, stages=tuple(stages))
        return resume_mod.fingerprints(recipe, self.sha)[-1]

    def state(self, prefix: tuple[str, ...], units: dict[str, Unit]) -> dict[str, Any]:
        """The ctx snapshot after running ``prefix`` (from cache, disk or by running it)."""
        if not prefix:
            return self.base_state
        if prefix in self.cache:
            return self.cache[prefix]
        parent = self.state(prefix[:-1], units)
        stages = [s for label in prefix for s in units[label].stages]
        digest = hashlib.sha256("-".join(prefix).encode()).hexdigest()[:12]
        path = self.out_dir / ABLATE_STATES / f"{'-'.join(prefix)}-{digest}.occst"
        fp = self._fingerprint(stages)
        saved = resume_mod.load_state(path, fp, where="ablate")
        if saved is not None:
            runner.restore(self.ctx, saved)
            said = _saved_warnings(saved.record)
        else:
            self._load(parent)
            plan = self._plan(stages)
            start = len(stages) - len(units[prefix[-1]].stages)
            with warnings_logged() as said:
                for i in range(start, len(stages)):
                    runner.run_stage(self.ctx, plan, i, self.base_out)
                    self.executed += 1
            runner.save_state(self.ctx, plan, path, fp, warnings=said)
        self.warned[prefix] = _merged(self.warned[prefix[:-1]], said)
        self.cache[prefix] = self._snapshot()
        return self.cache[prefix]


def ablate(recipe: Recipe, ctx: RunContext, *, out_dir: Path, max_orders: int | None,
           seed: int, tolerance: float | None, checkpoint_sha: str) -> dict[str, Any]:
    """Run the orders, rank them, and write ``ablation.{json,md}`` plus a plot.

    ``tolerance``: None = ``default_tolerance``. ``occ.api.ablate`` has checked the input
    (at least two techniques, ``max_orders`` >= 1, ``tolerance`` >= 0): one owner.
    """
    units, last = units_of(recipe)
    by_label = {u.label: u for u in units}
    orders = choose_orders(units, max_orders, seed)
    builtin = builtin_order(units)
    first = sorted(orders, key=lambda o: o != builtin)  # compress's order first: its error
    check_order_references(recipe, [_stages(o, by_label, last) for o in first], ctx.model,
                           ctx)
    run = _Runner(recipe, ctx, out_dir, checkpoint_sha)
    # once, before any order runs, as compress measures it
    checked = measure.measure_input(ctx, run.builtin)
    base_metrics, run.base_out, run.targets = checked.metrics, checked.outputs, checked.targets
    warnings = [w for w in (checked.warning, measure.gates_unread(ctx)) if w is not None]
    base_val = _val(ctx, baseline=True)
    warnings += recorded_warnings(ctx, base_metrics.accuracy, chance_said=checked.collapsed,
                                  val_accuracy=base_val.get("val_accuracy"))
    if tolerance is None:
        tolerance = default_tolerance(recipe, base_metrics.mae)
    results = []
    t0 = time.perf_counter()
    for order in ctx.progress.track(orders, total=len(orders), description="orders"):
        results.append(_run_order(run, order, by_label, last, builtin))
    ranked = rank(results, tolerance)
    done = [r for r in ranked if r.status == "ok" and r.metrics.get("accuracy") is not None]
    if done:  # once, for the order that gained most: a mis-measured baseline shows in all
        most = max(done, key=lambda r: r.metrics["accuracy"])
        warnings += gain_warnings(ctx, base_metrics.accuracy, most.metrics["accuracy"],
                                         " -> ".join(most.order))
    doc = {"recipe": recipe.source, "techniques": [u.label for u in units],
           "builtin": list(builtin), "task": recipe.task, "tolerance": tolerance,
           "seed": seed,
           "orders_run": len(orders), "stage_executions": run.executed,
           "selection_split": "val" if base_val else "test (no val split)",
           "warnings": warnings,
           "baseline": {**base_metrics.to_dict(layers=False), **base_val},
           "ranking": [r.to_dict() for r in ranked],
           **builtin_place(ranked, tolerance),
           "pairwise": pairwise(ranked, units, tolerance), "seconds": time.perf_counter() - t0}
    write_outputs(doc, out_dir)
    if not any(r.status == "ok" for r in ranked):
        first = ranked[0]
        raise StageError(f"every one of the {len(ranked)} orders failed or collapsed, so "
                         f"nothing is ranked (first, {' -> '.join(first.order)}: "
                         f"{first.error}); "
                         f"see {out_dir / 'ablation.md'}")
    doc["_results"] = ranked  # with test correctness, for occ ablate --seeds (not written)
    doc["_base_correct"] = _correct(run.base_out, run.targets)
    return doc


def _val(ctx: RunContext, *, baseline: bool = False) -> dict[str, float]:
    """``val_accuracy`` or ``val_mae`` of ``ctx.model`` (``baseline``: of the input model,
    measured once for the input check already) (empty without a val split)."""
    if len(ctx.data.split("val")) == 0:
        return {}
    q = measure.measured(ctx, "val", baseline=baseline, fresh=not baseline)
    return {"val_mae": q.mae} if q.mae is not None else {"val_accuracy": q.accuracy}


def _stages(order: tuple[str, ...], units: dict[str, Unit], last: list[Stage]) -> list[Stage]:
    """The stages ``order`` runs, in run order: its units' stages, then the pinned last."""
    return [s for label in order for s in units[label].stages] + list(last)


def _correct(outputs: torch.Tensor | None, targets: torch.Tensor | None) -> Any:
    """Per-image test correctness (classification), or None."""
    if outputs is None or targets is None or targets.is_floating_point():
        return None
    return (outputs.argmax(dim=1).cpu() == targets.cpu()).numpy()


def _run_order(run: _Runner, order: tuple[str, ...], units: dict[str, Unit],
               last: list[Stage], builtin: tuple[str, ...]) -> OrderResult:
    result = OrderResult(order=list(order), builtin=order == builtin)
    said: list[str] = []
    try:
        with warnings_logged() as said:  # this order's new ones: its last stages, a prefix
            run._load(run.state(order, units))
            stages = _stages(order, units, last)
            plan = run._plan(stages)
            m = outputs = None
            for i in range(len(stages) - len(last), len(stages)):
                record, outputs = runner.run_stage(run.ctx, plan, i, run.base_out)
                m = record.metrics
                run.executed += 1
        result.warnings = _merged(run.warned[order], said)
        if m is None:  # nothing pinned last: measure the restored prefix state
            m, outputs, _ = measure.measure_ctx(run.ctx, plan, run.base_out)
        m.file_sized(file_size(run.ctx, plan, m))  # with its final metrics, as written
        result.metrics = {k: m.to_dict(layers=False)[k] for k in
                          ("accuracy", "agreement", "mae", "rmse", "params", "nonzero_params",
                           "macs", "bitops", "sparse_bitops", "bytes")}
        result.metrics.update(_val(run.ctx))
        result.correct = _correct(outputs, run.targets)
        collapsed = measure.collapse_since_input(run.ctx)
        if collapsed is not None:  # ranked after every order that works, in no verdict
            result.status, result.error = "collapsed", collapsed
    except resume_mod.StaleStateError:
        raise  # the output directory holds another ablation: every order would fail alike
    except OccError as err:
        result.status, result.error = "failed", str(err)
        # what its stages warned before it failed is often why (a fine-tune skipped)
        done = max((p for p in run.warned if order[:len(p)] == p), key=len)
        result.warnings = _merged(run.warned[done], said)
        log.warning("order %s failed: %s", " -> ".join(order), err)
    return result


@contextlib.contextmanager
def warnings_logged() -> Iterator[list[str]]:
    """Collect what occ logs at WARNING level inside the block (the stages' own warnings:
    an early-exit head at chance, a prune that slims nothing ...), for the order's row;
    they still reach stderr as they are said."""
    said: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handler = _Keep(logging.WARNING)
    log.addHandler(handler)
    try:
        yield said
    finally:
        log.removeHandler(handler)


SAVED_WARNINGS, WARNING_CHARS = 64, 2000  # a state's warnings are data: kept within these


def _saved_warnings(record: dict[str, Any]) -> list[str]:
    """The warnings a saved prefix state recorded (an interrupted ablation resumed): at most
    ``SAVED_WARNINGS`` strings, each one line of at most ``WARNING_CHARS`` (they go into
    ``ablation.md``, where a line break would write its own lines)."""
    said = record.get("warnings", [])
    if not isinstance(said, list):
        return []
    return [" ".join(w.split())[:WARNING_CHARS] for w in said[:SAVED_WARNINGS]
            if isinstance(w, str)]


def _merged(before: list[str], said: list[str]) -> list[str]:
    """``before`` then ``said``, each warning once."""
    return list(dict.fromkeys([*before, *said]))
