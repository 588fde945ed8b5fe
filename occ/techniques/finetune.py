"""Fine-tuning after a structural change, shared by techniques (prune, lowrank).

One call of ``occ.training.fit`` for ``config.epochs`` on the train split; with
``distill: true`` the uncompressed model (``ctx.baseline``) teaches (Hinton KD at
``occ.techniques.distill.config``'s ``KD_TEMPERATURE`` / ``KD_ALPHA``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import nn

    from occ.engine.context import RunContext


class FinetuneConfig(Protocol):
    """The config fields fine-tuning reads."""

    epochs: int
    lr: float
    optimizer: str
    distill: bool
    device: str


def finetune_(ctx: RunContext, config: FinetuneConfig, *, description: str,
              after_step: Callable[[nn.Module], None] | None = None) -> list[float]:
    """Fine-tune ``ctx.model`` for ``config.epochs`` through ``occ.training.fit``; the
    per-epoch losses (empty for 0 epochs)."""
    from occ.training import fit

    if not config.epochs:
        return []
    loss_fn = ctx.loss_fn
    if config.distill:
        from occ.techniques.distill.loss import distill_loss_fn

        loss_fn = distill_loss_fn(ctx.baseline, hard=loss_fn)
    return fit(ctx.model, ctx.loader("train", shuffle=True), epochs=config.epochs,
               lr=config.lr, device=ctx.stage_device(config.device),
               optimizer=config.optimizer, loss_fn=loss_fn, after_step=after_step,
               progress=ctx.progress, description=description)
