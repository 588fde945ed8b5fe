"""Training exit heads through ``occ.training.fit``: the loss hook and which parameters train.

``heads``: the backbone is frozen (eval mode, no grad; BN statistics untouched) and only
the heads learn. ``joint``: everything learns from a weighted sum of the exits' losses,
the backbone's own output included. With ``distill`` a head learns from the backbone's
final output as well (Hinton KD, ``occ.techniques.distill.loss.kd_loss``) instead of the labels
alone.
On float targets (regression) the label terms use ``base``, the recipe's ``loss`` (MSE or
L1); the KD terms keep ``kd_loss``'s MSE.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from occ.techniques.distill.config import KD_ALPHA, KD_TEMPERATURE
from occ.techniques.distill.loss import kd_loss
from occ.techniques.early_exit.net import EarlyExitNet
from occ.training import LossFn, default_loss


def exit_loss(weights: Sequence[float], *, distill: bool = False,
              temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA,
              base: LossFn = default_loss) -> LossFn:
    """A ``fit`` loss hook over the list of exit logits (last = the backbone's output).

    Loss = sum_e weights[e] * loss_e, with loss_e ``base(output, targets, inputs)`` (the
    task's loss, ``RunContext.loss_fn``: cross-entropy on class targets, the recipe's MSE
    or L1 on float targets), or for a head with ``distill`` the KD loss against the
    (detached) final output.
    """
    weights = [float(w) for w in weights]

    def loss(outputs: list[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor) -> torch.Tensor:
        final = outputs[-1]
        total = final.new_zeros(())
        for e, (w, logits) in enumerate(zip(weights, outputs, strict=True)):
            if w == 0:
                continue
            if distill and e < len(outputs) - 1:
                term = kd_loss(logits, final.detach(), targets, temperature=temperature,
                               alpha=alpha, hard=base)
            else:  # the task's loss: cross-entropy, or the recipe's MSE / L1
                term = base(logits, targets, inputs)
            total = total + w * term
        return total

    return loss


def default_weights(n_heads: int, mode: str) -> list[float]:
    """heads: 1 per head, 0 for the frozen backbone; joint: 1 everywhere."""
    return [1.0] * n_heads + [0.0 if mode == "heads" else 1.0]


@contextmanager
def trainable(ee: EarlyExitNet, mode: str) -> Iterator[list[nn.Parameter]]:
    """Within: ``ee`` set up for ``mode``; yields the parameters to train.

    In ``heads`` mode the backbone is frozen; its ``requires_grad`` flags are restored
    on exit.
    """
    flags = [p.requires_grad for p in ee.backbone.parameters()]
    ee.freeze_backbone = mode == "heads"
    if mode == "heads":
        for p in ee.backbone.parameters():
            p.requires_grad_(False)
    try:
        yield list(ee.heads.parameters()) if mode == "heads" else list(ee.parameters())
    finally:
        ee.freeze_backbone = False
        for p, flag in zip(ee.backbone.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        ee.eval()


__all__ = ["default_weights", "exit_loss", "trainable"]
