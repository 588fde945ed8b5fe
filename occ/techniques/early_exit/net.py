"""``EarlyExitNet``: a backbone cut into segments, with a classifier head after each cut.

In eval mode a batch runs segment by segment; after each segment its head scores the
rows still running, the rows whose score passes that exit's threshold stop there, and
only the others go deeper. The output is (B, classes): each row's logits from the exit
it took, and ``last_exit`` (B,) says which (``len(points)`` = the backbone's own end).
In train mode the forward returns every exit's logits, last the backbone's, for
``occ.techniques.early_exit.training.exit_loss``.

Exit rule (``criterion``): ``confidence`` leaves when max softmax >= threshold;
``entropy`` leaves when the softmax entropy divided by ln(classes) <= threshold. A
confidence threshold above 1 never exits; 0 always does. ``agreement`` (regression)
leaves at exit e >= 1 when every output of exit e differs from exit e-1's by less than the
threshold (``epsilon``); the first exit has nothing to agree with and never exits.

Statistics: eval-mode forwards append the exit of every row to a log that restarts
whenever the mode is set (``model.eval()``, as ``occ.training.predict`` does at the start of
every pass) or on ``reset_exit_stats()``; ``exit_stats()`` counts it and
``exit_metrics(costs, ...)`` turns it into shares, per-exit accuracy and expected cost.

State dict keys: ``backbone.*`` (the wrapped model's own) and ``heads.<e>.*``. The
thresholds, exit points and head shapes are the JSON args of the ``early_exit`` edit op.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from occ.models.edits import register_edit
from occ.techniques.early_exit.split import Segment, owner_of, run_segment, split

Criterion = Literal["confidence", "entropy", "agreement"]
CRITERIA = ("confidence", "entropy", "agreement")
_COST_KEYS = ("macs", "sparse_macs", "bitops", "sparse_bitops")
_LOG_CAP = 1 << 22  # rows kept in the per-row exit log (counts stay exact beyond it)


def make_head(spec: dict[str, Any]) -> nn.Sequential:
    """A head from its JSON spec.

    ``{"in_shape": [C, H, W] | [F], "num_classes": K, "conv": bool, "pool": p}``:
    4-D features get [3×3 conv C→C + BN + ReLU if ``conv``] → adaptive average pool to p×p
    → flatten → linear(C·p², K); flat features get one linear(F, K).
    """
    _check_spec(spec)
    shape, classes = list(spec["in_shape"]), int(spec["num_classes"])
    if len(shape) != 3:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes))
    c, pool = int(shape[0]), int(spec.get("pool", 1))
    layers: list[nn.Module] = []
    if spec.get("conv", False):
        layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(c * pool * pool, classes)]
    return nn.Sequential(*layers)


def _check_spec(spec: Any) -> None:
    """Head specs come from artifacts too: plain, small, well-formed values only."""
    def pos_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20

    ok = (isinstance(spec, dict) and set(spec) <= {"in_shape", "num_classes", "conv", "pool"}
          and isinstance(spec.get("in_shape"), list) and len(spec["in_shape"]) in (1, 3)
          and all(pos_int(v) for v in spec["in_shape"]) and pos_int(spec.get("num_classes"))
          and pos_int(spec.get("pool", 1)) and isinstance(spec.get("conv", False), bool))
    if not ok:
        raise ValueError(f"bad exit head spec {spec!r}")


def exit_score(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """(B,) confidence (max softmax) or normalised entropy (in [0, 1]) of each row."""
    logp = F.log_softmax(logits.float(), dim=1)
    if criterion == "confidence":
        return logp.max(dim=1).values.exp()
    return -(logp.exp() * logp).sum(dim=1) / math.log(max(logits.shape[1], 2))


def leaves(logits: torch.Tensor, criterion: str, threshold: float,
           previous: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: rows that exit here under ``criterion`` at ``threshold``.

    ``agreement`` compares with ``previous`` (the prior exit's outputs of the same rows);
    without one no row leaves.
    """
    if criterion == "agreement":
        if previous is None:
            return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        diff = (logits.float() - previous.float()).abs().reshape(logits.shape[0], -1)
        return diff.amax(dim=1) < threshold
    score = exit_score(logits, criterion)
    return score >= threshold if criterion == "confidence" else score <= threshold


class EarlyExitNet(nn.Module):
    """A backbone with exit heads after ``points``; see the module docstring.

    Args:
        backbone: the model to wrap (kept whole as ``self.backbone``).
        points: module paths of ``backbone`` after which a head sits, in execution order.
        heads: one JSON head spec per point (``make_head``).
        thresholds: one per point.
        criterion: ``confidence`` or ``entropy``.
    """

    def __init__(self, backbone: nn.Module, points: Sequence[str],
                 heads: Sequence[dict[str, Any]], thresholds: Sequence[float],
                 criterion: Criterion = "confidence") -> None:
        super().__init__()
        if not len(points) == len(heads) == len(thresholds):
            raise ValueError("one head spec and one threshold per exit point")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.backbone = backbone
        self.heads = nn.ModuleList(make_head(s) for s in heads)
        self.points = list(points)
        self.head_specs = [dict(s) for s in heads]
        self.thresholds = [float(t) for t in thresholds]
        self.criterion = criterion
        self.segments: list[Segment] = split(backbone, self.points)
        self.freeze_backbone = False  # heads-only training: backbone in eval, no grad
        self.last_exit: torch.Tensor | None = None
        self._all = False
        self._log: list[torch.Tensor] = []  # the ``taken`` tensor of every eval forward
        self._logged = 0
        self._folded: list[int] | None = None  # counts moved out of a full log

    # -- structure ------------------------------------------------------------------------

    @property
    def num_exits(self) -> int:
        """Exits including the backbone's own end."""
        return len(self.points) + 1

    def edit_args(self) -> dict[str, Any]:
        """The JSON args of the ``early_exit`` edit op that rebuild this wrapper."""
        return {"points": list(self.points), "heads": [dict(s) for s in self.head_specs],
                "thresholds": list(self.thresholds), "criterion": self.criterion}

    def keep_exits(self, keep: Sequence[int]) -> None:
        """Drop every exit not in ``keep`` (indices into ``points``), heads included."""
        keep = sorted(keep)
        self.points = [self.points[i] for i in keep]
        self.head_specs = [self.head_specs[i] for i in keep]
        self.thresholds = [self.thresholds[i] for i in keep]
        self.heads = nn.ModuleList(self.heads[i] for i in keep)
        self.segments = split(self.backbone, self.points)
        self.reset_exit_stats()

    def train(self, mode: bool = True) -> EarlyExitNet:
        """Set the mode (the backbone stays in eval while frozen); restarts the exit log."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        if not self._all:
            self.reset_exit_stats()
        return self

    # -- forward --------------------------------------------------------------------------

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits (B, classes), the backbone's last; all rows run everything."""
        outs = []
        h = x
        for e, seg in enumerate(self.segments):
            if self.freeze_backbone:
                with torch.no_grad():
                    h = run_segment(self.backbone, seg, h)
            else:
                h = run_segment(self.backbone, seg, h)
            outs.append(self.heads[e](h) if e < len(self.heads) else h)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.training:
            return self.forward_all(x)
        if self._all:
            return self.forward_all(x)[-1]
        return self._exit_forward(x)

    def _exit_forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, last = x.shape[0], len(self.points)
        rows: torch.Tensor | None = None  # indices of the rows still running; None = all
        out: torch.Tensor | None = None
        taken: torch.Tensor | None = None
        h = x
        previous: torch.Tensor | None = None  # agreement: the prior exit's rows still running
        for e, head in enumerate(self.heads):
            h = run_segment(self.backbone, self.segments[e], h)  # (b, ...) rows still running
            logits = head(h)  # (b, classes)
            go = leaves(logits, self.criterion, self.thresholds[e], previous)
            n_go = int(go.sum())
            if n_go == 0:
                previous = logits
                continue
            if rows is None and n_go == batch:  # the whole batch leaves (batch 1: one check)
                self._record(torch.full((batch,), e, dtype=torch.long, device=x.device))
                return logits
            if out is None:
                out = logits.new_empty(batch, logits.shape[1])
                taken = torch.full((batch,), last, dtype=torch.long, device=x.device)
            idx = rows if rows is not None else torch.arange(batch, device=x.device)
            out[idx[go]] = logits[go]
            taken[idx[go]] = e
            if n_go == len(go):
                self._record(taken)
                return out
            stay = ~go
            h, rows, previous = h[stay], idx[stay], logits[stay]
        final = run_segment(self.backbone, self.segments[-1], h)
        if out is None:  # nobody left early: exactly the backbone's output
            self._record(torch.full((batch,), last, dtype=torch.long, device=x.device))
            return final
        out[rows] = final.to(out.dtype)
        self._record(taken)
        return out

    @contextmanager
    def evaluate_all_exits(self) -> Iterator[None]:
        """Within: eval-mode forwards run every segment and head (cost counting), log nothing."""
        previous, self._all = self._all, True
        try:
            yield
        finally:
            self._all = previous

    # -- statistics -----------------------------------------------------------------------

    def _record(self, taken: torch.Tensor) -> None:
        # Cheap on purpose (it runs in every batch-1 call): counting waits for exit_stats().
        self.last_exit = taken
        self._log.append(taken)
        self._logged += len(taken)
        if self._logged >= _LOG_CAP:  # a long-running server: keep counts, drop rows
            self._folded = self.exit_stats()
            self._log, self._logged = [], 0

    def reset_exit_stats(self) -> None:
        """Forget the exits taken so far."""
        self._log, self._logged, self._folded = [], 0, None

    def exit_stats(self) -> list[int]:
        """How many rows left at each exit (the last is the backbone's end) since the reset."""
        counts = list(self._folded or [0] * self.num_exits)
        if self._log:
            fresh = torch.bincount(torch.cat(self._log).cpu(), minlength=self.num_exits)
            counts = [a + b for a, b in zip(counts, fresh.tolist(), strict=True)]
        return counts

    def exit_log(self) -> torch.Tensor | None:
        """(N,) the exit of every row since the reset, in order; None past the log cap."""
        if self._folded is not None:
            return None
        return torch.cat(self._log).cpu() if self._log else torch.zeros(0, dtype=torch.long)

    def cost_parts(self, costs: Sequence[Any]) -> tuple[list[dict[str, float]],
                                                        list[dict[str, float]]]:
        """Per exit: the backbone segment's own cost and the head's own cost (zero for the
        backbone's end), from ``occ.metrics.layer_costs`` records taken with every exit
        evaluated. Keys: macs, sparse_macs, bitops, sparse_bitops."""
        seg = [dict.fromkeys(_COST_KEYS, 0.0) for _ in range(self.num_exits)]
        head = [dict.fromkeys(_COST_KEYS, 0.0) for _ in range(self.num_exits)]
        for c in costs:
            if c.name.startswith("heads."):
                bucket = head[int(c.name.split(".")[1])]
            else:
                bucket = seg[owner_of(c.name.removeprefix("backbone."), self.segments)]
            for k in _COST_KEYS:
                bucket[k] += float(getattr(c, k))
        return seg, head

    def exit_costs(self, costs: Sequence[Any]) -> list[dict[str, float]]:
        """Cumulative cost of leaving at each exit: backbone segments 0..e plus heads 0..e
        (the last exit: the whole backbone plus every head). See ``cost_parts``."""
        seg, head = self.cost_parts(costs)
        out, run = [], dict.fromkeys(_COST_KEYS, 0.0)
        for e in range(self.num_exits):
            run = {k: run[k] + seg[e][k] + head[e][k] for k in _COST_KEYS}
            out.append(dict(run))
        return out

    def exit_metrics(self, costs: Sequence[Any], outputs: torch.Tensor | None = None,
                     targets: torch.Tensor | None = None) -> dict[str, Any]:
        """Shares, accuracy and cumulative cost per exit, and the expected cost (JSON).

        Shares come from the eval-mode forwards since the last reset (``occ.metrics.measure``
        runs right after ``predict`` over the test split). With none, every input is
        counted at the backbone's end (the worst case).
        """
        from occ.metrics import accuracy, expected_cost, regression_errors, within

        counts = self.exit_stats()
        total = sum(counts)
        shares = [n / total for n in counts] if total else [0.0] * len(self.points) + [1.0]
        cum = self.exit_costs(costs)
        log = self.exit_log()
        per_acc: list[float | None] = [None] * self.num_exits
        per_mae: list[float | None] = [None] * self.num_exits
        if log is not None and outputs is not None and targets is not None \
                and len(log) == len(targets):
            regression = targets.is_floating_point()
            for e in range(self.num_exits):
                sel = log == e
                if not bool(sel.any()):
                    continue
                if regression:  # accuracy = share within tolerance, as in occ.metrics
                    per_acc[e] = within(outputs[sel], targets[sel])
                    per_mae[e] = regression_errors(outputs[sel], targets[sel])[0]
                else:
                    per_acc[e] = accuracy(outputs[sel], targets[sel])
        names = [*self.points, "final"]
        per_exit = [{"point": names[e], "threshold": self.thresholds[e] if e < len(self.points)
                     else None, "count": counts[e], "share": shares[e], "accuracy": per_acc[e],
                     **({"mae": per_mae[e]} if targets is not None
                        and targets.is_floating_point() else {}),
                     **cum[e]} for e in range(self.num_exits)]
        full = cum[-1]
        return {
            "criterion": self.criterion, "points": names, "thresholds": list(self.thresholds),
            "samples": total, "shares": shares, "per_exit": per_exit,
            "expected_macs": expected_cost(shares, [c["macs"] for c in cum]),
            "expected_bitops": expected_cost(shares, [c["bitops"] for c in cum]),
            "expected_sparse_bitops": expected_cost(shares, [c["sparse_bitops"] for c in cum]),
            "full_bitops": full["bitops"],
        }


@register_edit("early_exit")
def wrap_early_exit(model: nn.Module, points: list[str], heads: list[dict[str, Any]],
                    thresholds: list[float], criterion: Criterion = "confidence",
                    ) -> EarlyExitNet:
    """Edit op: wrap ``model`` in an ``EarlyExitNet`` (heads freshly built, weights loaded
    afterwards from the state dict)."""
    from occ.errors import OccError

    try:
        return EarlyExitNet(model, points, heads, thresholds, criterion)
    except OccError as err:
        raise ValueError(str(err)) from None


__all__ = ["EarlyExitNet", "exit_score", "leaves", "make_head", "wrap_early_exit"]
