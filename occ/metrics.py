"""Every figure occ reports: params, MACs, BitOps, sizes, accuracy, agreement.

One module, used by ``compress`` after each stage, by ``eval`` and by ``ablate``.

- MACs are counted per ``Conv2d`` / ``Linear`` layer with forward hooks on a real
  forward pass, so they follow the real shapes after structural pruning.
- BitOps = sum over layers of MACs * weight bits * activation bits; a layer's bits come
  from its ``occ_bits = (w_bits, a_bits)`` attribute (quantized layers set it), float
  layers count 32 x 32. Sparse figures count only MACs with a nonzero weight and are
  reported beside the dense ones, never instead.
- Early exit: expected BitOps = sum_e p_e * C_e (``expected_cost``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from occ.quality import percent
from occ.tolerances import REGRESSION_WITHIN

FLOAT_BITS = 32


@dataclass
class LayerCost:
    """One compute layer's shape-derived cost and its bits."""

    name: str
    kind: str
    params: int
    nonzero: int
    macs: int
    sparse_macs: int
    w_bits: int
    a_bits: int

    @property
    def bitops(self) -> int:
        """Dense BitOps: MACs x weight bits x activation bits."""
        return self.macs * self.w_bits * self.a_bits

    @property
    def sparse_bitops(self) -> int:
        """BitOps counting only MACs with a nonzero weight."""
        return self.sparse_macs * self.w_bits * self.a_bits


def layer_weight(module: nn.Module) -> torch.Tensor | None:
    """The effective weight of a compute layer (quantized layers expose it the same way)."""
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) else None


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    w = layer_weight(module)
    if w is None:
        return 0
    if isinstance(module, nn.Conv2d):
        per_output = w.shape[1] * w.shape[2] * w.shape[3]  # (C_in/groups) * kh * kw
        return int(out[0].numel()) * per_output
    # Linear: out is (B, ..., out_features); every output element costs in_features MACs.
    return int(out[0].numel()) * w.shape[1]


@torch.no_grad()
def layer_costs(model: nn.Module, input_shape: Sequence[int],
                device: torch.device | str = "cpu") -> list[LayerCost]:
    """Per-layer costs from one forward pass of a single input of ``input_shape`` (C, H, W).

    A model with an ``evaluate_all_exits()`` context manager (early exit) is run inside
    it, so every exit head's layers are counted.
    """
    records: list[LayerCost] = []
    hooks = []

    def hook(name: str):
        def run(module: nn.Module, _inputs: Any, out: Any) -> None:
            out_t = out[0] if isinstance(out, (tuple, list)) else out
            w = layer_weight(module)
            macs = _macs(module, out_t)
            nz = int(torch.count_nonzero(w)) if w is not None else 0
            numel = w.numel() if w is not None else 0
            w_bits, a_bits = getattr(module, "occ_bits", (FLOAT_BITS, FLOAT_BITS))
            records.append(LayerCost(
                name=name, kind=type(module).__name__,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                nonzero=sum(int(torch.count_nonzero(p)) for p in module.parameters(recurse=False)),
                macs=macs, sparse_macs=round(macs * nz / numel) if numel else 0,
                w_bits=int(w_bits), a_bits=int(a_bits)))
        return run

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    # An early-exit model runs every segment and head here, so each exit's cost is seen.
    every_exit = getattr(model, "evaluate_all_exits", None)
    with every_exit() if callable(every_exit) else contextlib.nullcontext():
        model.eval()
        try:
            model(torch.zeros(1, *input_shape, device=device))
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
    return records


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return total, nonzero


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return percent(outputs.argmax(dim=1) == targets)


def agreement(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    """Percent of inputs whose top-1 class matches the reference model's."""
    return percent(outputs.argmax(dim=1) == reference.argmax(dim=1))


REGRESSION_TOLERANCE = REGRESSION_WITHIN
"""Regression ``accuracy`` / ``agreement``: share within this of the target (see
``occ.tolerances``)."""


def is_regression(targets: torch.Tensor) -> bool:
    """Float targets mean a regression task."""
    return targets.is_floating_point()


def regression_errors(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(MAE, RMSE) in target units, over every output element."""
    diff = outputs.reshape(targets.shape).float() - targets.float()
    return float(diff.abs().mean()), float(diff.pow(2).mean().sqrt())


def within(outputs: torch.Tensor, targets: torch.Tensor,
           tolerance: float = REGRESSION_TOLERANCE) -> float:
    """Percent of samples whose every output is within ``tolerance`` of the target."""
    diff = (outputs.reshape(targets.shape).float() - targets.float()).abs()
    return percent((diff.reshape(len(diff), -1) <= tolerance).all(dim=1))


def expected_cost(shares: Sequence[float], costs: Sequence[float]) -> float:
    """Early exit: sum_e p_e * C_e, with C_e the cost of everything run up to exit e."""
    if len(shares) != len(costs):
        raise ValueError("one share per exit cost")
    return float(sum(p * c for p, c in zip(shares, costs, strict=True)))


def reduction(baseline: float, compressed: float) -> float:
    """Reduction factor baseline / compressed (inf when compressed is 0)."""
    return float("inf") if compressed == 0 else baseline / compressed


@dataclass
class Metrics:
    """The figures reported for one model (after a stage, or in ``occ eval``)."""

    accuracy: float
    agreement: float | None
    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    bitops: float
    sparse_bitops: float
    bytes: int | None = None
    mae: float | None = None
    rmse: float | None = None
    bits_per_param: float | None = None
    exits: dict[str, Any] | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, *, layers: bool = True) -> dict[str, Any]:
        """Plain data (JSON-safe)."""
        d = asdict(self)
        if not layers:
            d.pop("layers")
        return d

    def file_sized(self, size: int) -> None:
        """Set ``bytes`` to the written file's ``size`` (its header records the final
        metrics, which the measurement, made before them, could not count), and
        ``bits_per_param`` with it."""
        if self.bytes and self.bits_per_param:
            self.bits_per_param *= size / self.bytes
        self.bytes = size


def measure(model: nn.Module, outputs: torch.Tensor, targets: torch.Tensor, *,
            input_shape: Sequence[int], device: torch.device | str = "cpu",
            reference: torch.Tensor | None = None, size: int | None = None) -> Metrics:
    """All figures for ``model`` given its test-split ``outputs``.

    Args:
        model: the model (eval mode is set for the cost pass).
        outputs, targets: the model's outputs on the test split and the labels.
        input_shape: (C, H, W) of one input.
        reference: the uncompressed model's outputs on the same inputs (agreement).
        size: the artifact's bytes, when known.

    Float targets (regression): ``mae`` / ``rmse`` are filled (target units);
    ``accuracy`` is the percent of predictions within :data:`REGRESSION_TOLERANCE` of the
    target and ``agreement`` the percent within it of the reference model's prediction.
    """
    costs = layer_costs(model, input_shape, device)
    total, nonzero = count_params(model)
    # Early exit: shares come from the model's own log of the ``predict`` pass that made
    # ``outputs`` (it restarts when the mode is set); outputs/targets give per-exit accuracy.
    exits = (model.exit_metrics(costs, outputs=outputs, targets=targets)
             if hasattr(model, "exit_metrics") else None)
    bitops = float(sum(c.bitops for c in costs))
    sparse_bitops = float(sum(c.sparse_bitops for c in costs))
    if exits is not None:  # early exit: the headline is the expectation over exits
        bitops, sparse_bitops = exits["expected_bitops"], exits["expected_sparse_bitops"]
    if is_regression(targets):
        mae, rmse = regression_errors(outputs, targets)
        acc = within(outputs, targets)
        agree = (within(outputs, reference.reshape(targets.shape))
                 if reference is not None else None)
    else:
        mae = rmse = None
        acc = accuracy(outputs, targets)
        agree = agreement(outputs, reference) if reference is not None else None
    return Metrics(
        accuracy=acc, agreement=agree, mae=mae, rmse=rmse,
        params=total, nonzero_params=nonzero,
        macs=sum(c.macs for c in costs), sparse_macs=sum(c.sparse_macs for c in costs),
        bitops=bitops, sparse_bitops=sparse_bitops, bytes=size,
        bits_per_param=(8.0 * size / total) if size and total else None, exits=exits,
        layers=[{**asdict(c), "bitops": c.bitops, "sparse_bitops": c.sparse_bitops}
                for c in costs],
    )
