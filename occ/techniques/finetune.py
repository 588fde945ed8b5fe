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
    device = ctx.stage_device(config.device)
    train = ctx.loader("train", shuffle=True)
    losses = fit(ctx.model, train, epochs=config.epochs, lr=config.lr, device=device,
                 optimizer=config.optimizer, loss_fn=loss_fn, after_step=after_step,
                 progress=ctx.progress, description=description)
    lagging = lagging_norms(ctx.model, steps=len(train) * len(losses)) if losses else []
    if lagging:  # shuffled (seeded): a class-sorted folder's first batches are one class
        recalibrate_bn(ctx.model, ctx.loader("train", shuffle=True), device, description,
                       norms=lagging)
    return losses


LAG = 0.01
"""Share of a BatchNorm's running statistics that may still be the pre-stage ones after
fine-tuning (``(1 - momentum) ** steps``) before they are re-estimated."""
RECALIBRATION_BATCHES = 100


def lagging_norms(model: nn.Module, *, steps: int) -> list[nn.Module]:
    """The BatchNorms whose running statistics still hold more than ``LAG`` of what they
    were before ``steps`` training steps: a small momentum (torchvision's MobileNetV3 and
    EfficientNet build theirs with 0.01) or a short fine-tune. The weights moved; their
    statistics did not follow, and eval mode reads them (a channel-pruned MobileNetV3 read
    49.9 % that way, 93.7 % with them re-estimated). Momentum 0: frozen on purpose, left."""
    from torch import nn as tnn

    return [m for m in model.modules()
            if isinstance(m, tnn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.momentum and (1 - m.momentum) ** steps > LAG]


def recalibrate_bn(model: nn.Module, loader, device, description: str, *,
                   norms: list[nn.Module] | None = None) -> None:
    """Re-estimate the running mean and variance of ``norms`` (None: every BatchNorm that
    tracks them) on up to ``RECALIBRATION_BATCHES`` train batches, as training reads them
    (augmented): a cumulative average, no weight changes, the rest of the model in eval
    mode (an early-exit net runs every row to the end, so every norm sees them); said on
    stderr with ``-v``."""
    import contextlib
    import logging

    import torch
    from torch import nn as tnn

    if norms is None:
        norms = [m for m in model.modules()
                 if isinstance(m, tnn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    model.to(device).eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: every batch weighs the same
        m.train()
    every_row = getattr(model, "evaluate_all_exits", None)
    seen = 0
    with torch.no_grad(), (every_row() if every_row else contextlib.nullcontext()):
        for i, (x, _) in enumerate(loader):
            if i == RECALIBRATION_BATCHES:
                break
            model(x.to(device))
            seen += len(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    logging.getLogger("occ").info(
        "%s: re-estimated %d BatchNorm layers' statistics on %d train inputs (their momentum "
        "left them behind the fine-tuned weights)", description, len(norms), seen)
