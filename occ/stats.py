"""Statistics for headline figures: seeds, paired intervals, exact tests, ties.

A compressed model and its baseline are scored on the same test images, so their accuracy
change is a *paired* quantity: most images are right (or wrong) for both, and only the
discordant ones carry information. Two tools use that:

- :func:`change_interval`: a percentile bootstrap over the test images of the accuracy
  change in points, for one seed (``(n,)`` correctness vectors) or several (``(seeds, n)``:
  each resampled image keeps its result under every seed, so the interval covers the mean
  over seeds and the test sample, not the seed-to-seed spread — report that as std);
- :func:`mcnemar`: McNemar's exact test (two-sided binomial on the discordant pairs).

:func:`mean_std` summarises a figure over seeds; :func:`rank` orders candidates (orders of
a chain, recipes) by mean accuracy over seeds and says which are statistically tied with
the best (their paired interval on the difference contains 0). Pure numpy; nothing here
reads a model or a split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
N_BOOT = 10_000


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided interval, in accuracy points."""

    estimate: float
    low: float
    high: float
    level: float
    method: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:+.2f} pt [{self.low:+.2f}, {self.high:+.2f}]"


def mean_std(values: Sequence[float]) -> dict[str, float | int | list[float]]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of per-seed figures."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_std of no values")
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return {"mean": float(x.mean()), "std": std, "n": int(x.size), "values": x.tolist()}


def correct(outputs: Any, targets: Any) -> np.ndarray:
    """Per-image top-1 correctness (bool) of ``outputs (n, classes)`` against ``targets``."""
    out = np.asarray(outputs)
    return out.argmax(axis=1) == np.asarray(targets)


def _as_2d(base: Any, new: Any) -> tuple[np.ndarray, np.ndarray]:
    new = np.atleast_2d(np.asarray(new, dtype=float))
    base = np.atleast_2d(np.asarray(base, dtype=float))
    if base.shape[-1] != new.shape[-1]:
        raise ValueError(f"paired vectors differ in length: {base.shape[-1]} vs "
                         f"{new.shape[-1]} test images")
    if base.shape[0] not in (1, new.shape[0]):
        raise ValueError(f"base has {base.shape[0]} rows, new {new.shape[0]}: give one base "
                         "row or one per seed")
    return base, new


def change_interval(base_correct: Any, new_correct: Any, *, level: float = LEVEL,
                    n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Paired percentile-bootstrap interval of ``mean(new) - mean(base)`` in points.

    Args:
        base_correct: ``(n,)`` or ``(seeds, n)`` correctness of the reference (0/1).
        new_correct: ``(n,)`` or ``(seeds, n)`` correctness of the candidate, same images
            in the same order.
        level: Two-sided coverage.
        n_boot: Bootstrap resamples of the ``n`` images.
        seed: Seed of the resampling (the interval is reproducible).
    """
    base, new = _as_2d(base_correct, new_correct)
    diff = (new - base).mean(axis=0)  # per image, mean over seeds
    n = diff.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = diff[idx].mean(axis=1) * 100.0
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return Interval(estimate=float(diff.mean() * 100.0), low=float(low), high=float(high),
                    level=level, method=f"paired bootstrap over {n} test images, "
                                        f"{new.shape[0]} seed(s), {n_boot} resamples")


def mcnemar(base_correct: Any, new_correct: Any) -> dict[str, float | int]:
    """McNemar's exact test of one candidate against the reference on the same images.

    Returns ``lost`` (right before, wrong after), ``gained`` (wrong before, right after)
    and the two-sided exact p-value, ``min(1, 2 * P[Binomial(lost + gained, 1/2) <=
    min(lost, gained)])``.
    """
    base = np.asarray(base_correct, dtype=bool)
    new = np.asarray(new_correct, dtype=bool)
    if base.shape != new.shape or base.ndim != 1:
        raise ValueError(f"mcnemar needs two (n,) vectors, got {base.shape} and {new.shape}")
    lost = int((base & ~new).sum())
    gained = int((~base & new).sum())
    m, k = lost + gained, min(lost, gained)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0 ** m if m else 1.0
    return {"lost": lost, "gained": gained, "p_value": min(1.0, 2.0 * tail)}


def seed_summary(base_correct: Any, new_correct: Any, ratios: Sequence[float] | None = None,
                 *, level: float = LEVEL, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Everything a headline row reports over seeds, in one dict.

    ``base_correct``: ``(n,)`` (one baseline) or ``(seeds, n)``; ``new_correct``:
    ``(seeds, n)``; ``ratios``: one reduction factor per seed (bytes, BitOps), if any.
    Gives the per-seed accuracy change (mean ± std), the pooled paired bootstrap interval,
    McNemar per seed, and the ratio's mean ± std.
    """
    base, new = _as_2d(base_correct, new_correct)
    base_rows = np.broadcast_to(base, new.shape)
    changes = ((new.mean(axis=1) - base_rows.mean(axis=1)) * 100.0).tolist()
    out: dict[str, Any] = {
        "seeds": int(new.shape[0]),
        "accuracy_change": mean_std(changes),
        "interval": change_interval(base, new, level=level, n_boot=n_boot).to_dict(),
        "mcnemar": [mcnemar(b.astype(bool), c.astype(bool))
                    for b, c in zip(base_rows, new, strict=True)],
    }
    if ratios is not None:
        out["ratio"] = mean_std(ratios)
    return out


def rank(candidates: Mapping[str, Any], *, level: float = LEVEL,
         n_boot: int = N_BOOT) -> list[dict[str, Any]]:
    """Rank candidates by mean accuracy over seeds and mark those tied with the best.

    Args:
        candidates: name -> ``(seeds, n)`` (or ``(n,)``) correctness on the same images,
            same seeds in the same order for every name.

    Returns:
        One dict per name, best first: ``name``, ``accuracy`` (mean ± std over seeds),
        ``vs_best`` (paired interval of this minus the best, in points; ``None`` for the
        best) and ``tied`` (the interval contains 0: not distinguishable from the best).
    """
    rows = {name: np.atleast_2d(np.asarray(c, dtype=float)) for name, c in candidates.items()}
    if not rows:
        return []
    means = {name: float(c.mean()) for name, c in rows.items()}
    order = sorted(rows, key=lambda name: -means[name])
    best = order[0]
    ranked = []
    for name in order:
        acc = mean_std((rows[name].mean(axis=1) * 100.0).tolist())
        if name == best:
            ranked.append({"name": name, "accuracy": acc, "vs_best": None, "tied": True})
            continue
        iv = change_interval(rows[best], rows[name], level=level, n_boot=n_boot)
        ranked.append({"name": name, "accuracy": acc, "vs_best": iv.to_dict(),
                       "tied": iv.contains(0.0)})
    return ranked
