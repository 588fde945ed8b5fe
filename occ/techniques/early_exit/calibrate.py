"""Per-exit thresholds that minimise expected cost within an accuracy budget.

On the validation split every exit's logits are computed once. A configuration (one
threshold per exit, or ``None``: the exit is dropped and its head never runs) is then
simulated exactly as ``EarlyExitNet`` runs it: rows leave at the first exit whose score
passes, and leaving at exit e costs the backbone up to e plus every active head up to e.

The budget bounds the share of inputs the reference model (before early exit) gets right
and the early-exit model gets wrong: inputs an exit happens to fix buy nothing, so noise on
a small val split cannot trade real losses for lucky gains. Coordinate descent over each
exit's observed scores (plus ``None``), from no exits, keeps the cheapest configuration
within the budget until a full round changes nothing (deterministic, milliseconds).

Regression (``criterion: agreement``): a row leaves at an active exit when its outputs
are within epsilon of the previous *active* exit's, so an exit's behaviour depends on
which exits before it are kept. ``calibrate_agreement`` searches subsets of exits (all of
them up to 8 heads; ``_MAX_SUBSETS`` caps the count, smaller first). In each, the first
kept exit is a reference only (epsilon 0.0: no row leaves there, but its head runs); the
others get epsilons by coordinate descent over cuts between the observed max-abs
differences (plus 0.0), one epsilon and then neighbouring pairs at a time: the optimum
over the candidates for up to 3 kept exits (and 64 candidates), a local one beyond. The
budget bounds the mean over val rows of max(0, row error - the reference's), row error =
mean |output - target|. The cheapest configuration within budget wins, no exits included.
Either way a head not ``usable`` (near chance) lets no row leave.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from occ.techniques.early_exit.net import EarlyExitNet, exit_score

_MAX_CANDIDATES = 256
_MAX_ROUNDS = 20
_PAIR_CANDIDATES = 64  # of the first exit's candidates, in a joint move of two exits
_MAX_SUBSETS = 256  # kept-head subsets tried: all of them up to 8 heads, else smaller first


@dataclass
class ExitOutputs:
    """Per exit (the backbone's end last): scores (higher = more confident), correctness;
    and the reference model's correctness on the same rows."""

    scores: list[np.ndarray]
    correct: list[np.ndarray]
    reference: np.ndarray

    @property
    def n(self) -> int:
        return len(self.correct[-1])

    def accuracy(self, e: int) -> float:
        """Accuracy (%) of exit ``e`` if every row left there."""
        return 100 * int(self.correct[e].sum()) / self.n if self.n else 0.0


ValOutputs = tuple[list[torch.Tensor], torch.Tensor]
"""(each exit's outputs on the CPU in float32, the backbone's end last; the targets)."""


@torch.no_grad()
def every_exit(ee: EarlyExitNet, loader: torch.utils.data.DataLoader,
               device: torch.device) -> ValOutputs:
    """(each exit's outputs on the CPU in float32, the targets) over ``loader``, every row
    running every exit (the backbone's end last). Calibration and the stage's head check
    (``occ.techniques.early_exit.checks``) share one such pass over the val split."""
    ee.to(device).eval()
    outs: list[list[torch.Tensor]] = [[] for _ in range(ee.num_exits)]
    targets = []
    for x, y in loader:
        for e, out in enumerate(ee.forward_all(x.to(device))):
            outs[e].append(out.float().cpu())
        targets.append(y)
    return [torch.cat(o) for o in outs], torch.cat(targets)


def collect(ee: EarlyExitNet, outputs: ValOutputs, reference: torch.Tensor) -> ExitOutputs:
    """Every exit's scores and correctness from ``outputs`` (``every_exit``).

    ``reference``: (N,) bool, the rows the model before early exit got right.
    """
    outs, y = outputs
    sign = 1.0 if ee.criterion == "confidence" else -1.0  # entropy: lower is surer
    scores, correct = [], []
    for e, logits in enumerate(outs):
        correct.append((logits.argmax(1) == y).numpy())
        if e < len(ee.points):
            scores.append((sign * exit_score(logits, ee.criterion)).numpy())
    return ExitOutputs(scores=scores, correct=correct, reference=reference.cpu().numpy())


def simulate(data: ExitOutputs, thresholds: Sequence[float | None], backbone: Sequence[float],
             heads: Sequence[float]) -> tuple[float, float, float]:
    """(accuracy %, lost %: the rows the reference gets right and it gets wrong, expected
    cost) of a configuration.

    Args:
        thresholds: per head, on the (higher = surer) score; ``None`` = dropped.
        backbone: cumulative backbone cost up to each exit (the last = the whole backbone).
        heads: each head's own cost.
    """
    right = np.zeros(data.n, dtype=bool)
    remaining = np.ones(data.n, dtype=bool)
    cost, head_sum = 0.0, 0.0
    for e, t in enumerate(thresholds):
        if t is None:
            continue
        head_sum += heads[e]
        go = remaining & (data.scores[e] >= t)
        right |= go & data.correct[e]
        cost += int(go.sum()) * (backbone[e] + head_sum)
        remaining &= ~go
    right |= remaining & data.correct[-1]
    cost += int(remaining.sum()) * (backbone[-1] + head_sum)
    n = max(data.n, 1)
    lost = int((data.reference & ~right).sum())
    return 100.0 * int(right.sum()) / n, 100.0 * lost / n, cost / n


def _candidates(scores: np.ndarray) -> list[float | None]:
    values = np.unique(scores)
    if len(values) > _MAX_CANDIDATES:
        values = np.unique(np.quantile(scores, np.linspace(0, 1, _MAX_CANDIDATES),
                                       method="lower"))
    return [None, *(float(v) for v in values[::-1])]  # strictest first


def calibrate(data: ExitOutputs, backbone: Sequence[float], heads: Sequence[float],
              max_drop: float, usable: Sequence[bool] | None = None,
              ) -> tuple[list[float | None], float, float, float]:
    """Thresholds (``None`` = drop the exit) minimising expected cost within ``max_drop``,
    dropping every exit not ``usable`` (near chance: whoever left there gets its guess).

    Returns:
        (thresholds on the higher-is-surer score, accuracy %, lost %, expected cost) on
        ``data``. If even no exit at all loses more than ``max_drop`` (joint training hurt
        the backbone), every exit is dropped.
    """
    best: list[float | None] = [None] * len(data.scores)
    acc, lost, cost = simulate(data, best, backbone, heads)
    if lost > max_drop + 1e-9:
        return best, acc, lost, cost
    cands = [_candidates(s) if usable is None or usable[e] else [None]
             for e, s in enumerate(data.scores)]
    for _ in range(_MAX_ROUNDS):
        changed = False
        for e in range(len(best)):
            for c in cands[e]:
                trial = [*best[:e], c, *best[e + 1:]]
                a, lo, k = simulate(data, trial, backbone, heads)
                if lo <= max_drop + 1e-9 and k < cost - 1e-9:
                    best, acc, lost, cost, changed = trial, a, lo, k, True
        if not changed:
            break
    return best, acc, lost, cost


# ---------------------------------------------------------------------------------------------
# Regression: criterion agreement, epsilons within a mean-absolute-error budget


@dataclass
class RegressionOutputs:
    """Per exit (the backbone's end last): outputs (N, D); the reference model's outputs
    and the targets on the same rows. Arrays are flattened to (N, D) float32."""

    outputs: list[np.ndarray]
    reference: np.ndarray
    targets: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.targets)
        flat = [np.asarray(a, dtype=np.float32).reshape(n, -1)
                for a in (*self.outputs, self.reference, self.targets)]
        *self.outputs, self.reference, self.targets = flat
        target = self.targets.astype(np.float64)
        # (E, N) each row's error at each exit; (N,) the reference's; target units
        self.errors = np.stack([np.abs(o - target).mean(1) for o in self.outputs])
        self.reference_errors = np.abs(self.reference - target).mean(1)
        self.excess = np.maximum(self.errors - self.reference_errors, 0.0)  # (E, N)
        self._diffs: dict[tuple[int, int], np.ndarray] = {}
        self._cands: dict[tuple[int, int], np.ndarray] = {}
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def reference_mae(self) -> float:
        return float(self.reference_errors.mean()) if self.n else 0.0

    def candidates(self, before: int, e: int) -> np.ndarray:
        """Epsilon candidates for exit e after exit ``before`` (``_epsilon_candidates``)."""
        if (before, e) not in self._cands:
            self._cands[before, e] = _epsilon_candidates(self.diff(before, e))
        return self._cands[before, e]

    def order(self, before: int, e: int) -> np.ndarray:
        """(N,) the rows by ascending ``diff(before, e)`` (stable)."""
        if (before, e) not in self._orders:
            self._orders[before, e] = np.argsort(self.diff(before, e), kind="stable")
        return self._orders[before, e]

    def diff(self, before: int, e: int) -> np.ndarray:
        """(N,) float32 max |outputs of exit e - outputs of exit ``before``| per row, as
        ``occ.techniques.early_exit.net.leaves`` computes it."""
        if (before, e) not in self._diffs:
            d = np.abs(self.outputs[e] - self.outputs[before])
            self._diffs[before, e] = d.max(1) if d.shape[1] else np.zeros(self.n, np.float32)
        return self._diffs[before, e]


def collect_regression(outputs: ValOutputs, reference: torch.Tensor) -> RegressionOutputs:
    """Every exit's outputs and the targets from ``outputs`` (``every_exit``).

    ``reference``: (N, ...) the outputs of the model before early exit on the same rows.
    """
    outs, y = outputs
    return RegressionOutputs(outputs=[o.numpy() for o in outs],
                             reference=reference.float().cpu().numpy(),
                             targets=y.float().numpy())


def agreement_exits(data: RegressionOutputs, epsilons: Sequence[float | None]) -> np.ndarray:
    """(N,) the exit each row takes, as ``EarlyExitNet`` runs it (``len(epsilons)`` = the
    backbone's end). ``epsilons``: one per head, ``None`` = dropped; the first active head
    never lets a row leave (nothing to agree with)."""
    taken = np.full(data.n, len(epsilons), dtype=np.int64)
    remaining = np.ones(data.n, dtype=bool)
    before: int | None = None
    for e, eps in enumerate(epsilons):
        if eps is None:
            continue
        if before is not None:  # float32 comparison, as the real forward's
            go = remaining & (data.diff(before, e) < np.float32(eps))
            taken[go] = e
            remaining &= ~go
        before = e
    return taken


def _exit_costs(epsilons: Sequence[float | None], backbone: Sequence[float],
                heads: Sequence[float]) -> np.ndarray:
    """Cost of leaving at each exit: backbone up to it plus every active head up to it."""
    costs, head_sum = [], 0.0
    for e, eps in enumerate(epsilons):
        head_sum += heads[e] if eps is not None else 0.0
        costs.append(backbone[e] + head_sum)
    return np.array([*costs, backbone[-1] + head_sum])


def simulate_agreement(data: RegressionOutputs, epsilons: Sequence[float | None],
                       backbone: Sequence[float], heads: Sequence[float],
                       ) -> tuple[float, float, float]:
    """(MAE, increase, expected cost) of a configuration; see ``agreement_exits``.

    Increase: the mean over rows of max(0, the row's error - the reference's), target units.
    """
    taken = agreement_exits(data, epsilons)
    rows = np.arange(data.n)
    err = data.errors[taken, rows]
    n = max(data.n, 1)
    increase = float(data.excess[taken, rows].sum()) / n
    cost = float(_exit_costs(epsilons, backbone, heads)[taken].sum()) / n
    return float(err.sum()) / n, increase, cost


def _epsilon_candidates(diff: np.ndarray) -> np.ndarray:
    """Ascending float32 epsilons: 0 (never leave), cuts halfway between neighbouring
    observed differences (quantile-thinned; halfway, so that a re-batched forward's
    rounding cannot move a row across), and one above them all."""
    values = np.unique(diff).astype(np.float64)
    if not len(values):
        return np.zeros(1, dtype=np.float32)
    if len(values) > _MAX_CANDIDATES:
        values = np.unique(np.quantile(diff, np.linspace(0, 1, _MAX_CANDIDATES),
                                       method="lower")).astype(np.float64)
    cuts = np.r_[(values[:-1] + values[1:]) / 2, 2 * values[-1] + 1e-6].astype(np.float32)
    return np.unique(np.r_[np.float32(0.0), cuts[cuts > 0]])


def _best_epsilon(data: RegressionOutputs, eps: list[float | None], e: int, before: int,
                  backbone: Sequence[float], heads: Sequence[float],
                  budget: float) -> tuple[float, float] | None:
    """(epsilon, cost): exit e's cheapest candidate within budget, the others fixed.

    Rows that do not leave at e take the same exit whatever e's epsilon (the next exit
    compares with e's outputs either way), so every candidate is scored at once from
    sorted differences. None: no candidate fits.
    """
    base = [*eps[:e], 0.0, *eps[e + 1:]]
    taken = agreement_exits(data, base)
    costs = _exit_costs(base, backbone, heads)
    order = data.order(before, e)
    rows = order[taken[order] > e]  # rows reaching exit e, by ascending difference
    excess, n = data.excess, max(data.n, 1)
    d, fallback = data.diff(before, e)[rows], taken[rows]
    gain_cost = np.r_[0.0, np.cumsum(costs[e] - costs[fallback])]
    gain_inc = np.r_[0.0, np.cumsum(excess[e, rows] - excess[fallback, rows])]
    cands = data.candidates(before, e)
    m = np.searchsorted(d, cands, side="left")  # rows with d < candidate leave
    cost = (costs[taken].sum() + gain_cost[m]) / n
    inc = (excess[taken, np.arange(data.n)].sum() + gain_inc[m]) / n
    ok = np.flatnonzero(inc <= budget + 1e-12)
    if not len(ok):
        return None
    i = ok[np.argmin(cost[ok])]  # the first (strictest) of equally cheap ones
    return float(cands[i]), float(cost[i])


def _subsets(k: int) -> list[tuple[int, ...]]:
    """Kept-head subsets to try, at most ``_MAX_SUBSETS``: 2 heads, then 3, ... (one head
    alone never lets a row leave, so it never pays; no heads is the starting point)."""
    sizes = (itertools.combinations(range(k), size) for size in range(2, k + 1))
    return list(itertools.islice(itertools.chain.from_iterable(sizes), _MAX_SUBSETS))


def _cheaper(a: float, b: float) -> bool:
    """a < b beyond rounding (costs are sums of large BitOps counts)."""
    return a < b - 1e-9 * max(1.0, abs(b))


@dataclass
class AgreementFit:
    """The result of ``calibrate_agreement`` on its data (target units for errors)."""

    epsilons: list[float | None]  # per head; None = dropped, 0.0 = never leaves
    mae: float
    increase: float
    cost: float
    feasible: bool


def calibrate_agreement(data: RegressionOutputs, backbone: Sequence[float],
                        heads: Sequence[float], max_increase: float,
                        usable: Sequence[bool] | None = None) -> AgreementFit:
    """Epsilons minimising expected cost while the increase stays within ``max_increase``;
    a head not ``usable`` (no better than a constant) is kept only as a subset's first, the
    reference, whose outputs no row leaves with.

    Tries every subset of kept heads (the first ``_MAX_SUBSETS`` by size: all of them for
    up to 8 heads; with more, the larger subsets are not tried) and keeps the cheapest
    feasible configuration. If even the backbone alone breaks the budget (joint training
    hurt it), every exit is dropped (``feasible`` False).
    """
    k = len(heads)
    best: list[float | None] = [None] * k
    mae, increase, cost = simulate_agreement(data, best, backbone, heads)
    if increase > max_increase + 1e-12:
        return AgreementFit(best, mae, increase, cost, feasible=False)
    for subset in _subsets(k):
        if usable is not None and not all(usable[e] for e in subset[1:]):
            continue  # rows would leave at a head no better than a constant
        eps, current = _descend(data, subset, backbone, heads, max_increase)
        if _cheaper(current, cost):
            best, cost = eps, current
    mae, increase, cost = simulate_agreement(data, best, backbone, heads)
    return AgreementFit(best, mae, increase, cost, feasible=True)


def _descend(data: RegressionOutputs, subset: tuple[int, ...], backbone: Sequence[float],
             heads: Sequence[float], budget: float) -> tuple[list[float | None], float]:
    """(epsilons, cost): coordinate descent over the exits of ``subset`` from none
    leaving. Each round moves one epsilon at a time, then neighbouring pairs jointly (up
    to ``_PAIR_CANDIDATES`` of the first's candidates, each with the best of the second's):
    budget spent at one exit can block a cheaper split with the next, which single moves
    cannot undo."""
    eps: list[float | None] = [0.0 if e in subset else None for e in range(len(heads))]
    current = simulate_agreement(data, eps, backbone, heads)[2]
    order = list(itertools.pairwise(subset))  # (the exit before, the exit)
    for _ in range(_MAX_ROUNDS):
        changed = False
        for before, e in order:
            found = _best_epsilon(data, eps, e, before, backbone, heads, budget)
            if found is not None and found[0] != eps[e] and _cheaper(found[1], current):
                eps[e], current, changed = found[0], found[1], True
        for (before_a, a), (before_b, b) in itertools.pairwise(order):
            cands = data.candidates(before_a, a)
            step = -(-len(cands) // _PAIR_CANDIDATES)  # ceil: at most _PAIR_CANDIDATES tried
            for c in cands[::step]:
                trial = [*eps[:a], float(c), *eps[a + 1:]]
                found = _best_epsilon(data, trial, b, before_b, backbone, heads, budget)
                if found is not None and _cheaper(found[1], current):
                    trial[b] = found[0]
                    eps, current, changed = trial, found[1], True
        if not changed:
            break
    return eps, current


__all__ = ["AgreementFit", "ExitOutputs", "RegressionOutputs", "agreement_exits", "calibrate",
           "calibrate_agreement", "collect", "collect_regression", "every_exit", "simulate",
           "simulate_agreement"]
