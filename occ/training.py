"""The one training loop: ``fit`` and ``predict``, used by every stage that trains.

Stages customise it through hooks rather than copying it:

- ``loss_fn(outputs, targets, inputs) -> loss`` replaces cross-entropy (distillation,
  early-exit heads, regression);
- ``after_step(model)`` runs after every optimiser step (pruning re-applies masks,
  QAT clamps scales);
- ``params`` limits what is trained (heads only, say).

A non-finite loss stops the run with ``StageError`` (exit code 1). Under ``torchrun`` the
model is wrapped in ``DistributedDataParallel`` and each rank trains on its shard
(``occ.distributed``).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from occ import distributed
from occ.errors import StageError
from occ.progress import NullProgress, Progress

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["cosine", "step", "constant"]
log = logging.getLogger("occ")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def rng_preserved(device: torch.device | str | None = None, *,
                  every_cuda: bool = False) -> Iterator[None]:
    """Within: draw from any generator; on exit Python's, NumPy's and torch's CPU generator
    (and ``device``'s, on CUDA; with ``every_cuda`` every CUDA device's, where CUDA is in
    use already: it is not started for this) are back where they were.

    For checks that read data or run the model (an augmented split draws random numbers)
    but must not change what a seeded run computes after them, and for the library calls
    that seed every generator for their own run (``occ.api``).
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    dev = torch.device(device) if device is not None else None
    cuda = ([dev.index if dev.index is not None else torch.cuda.current_device()]
            if dev is not None and dev.type == "cuda" else [])
    if every_cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = list(range(torch.cuda.device_count()))
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _optimizer(params: Iterable[nn.Parameter], name: str, lr: float,
               weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay,
                               nesterov=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _scheduler(opt: torch.optim.Optimizer, name: str, total_steps: int):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total_steps // 3), gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


Loss = Literal["auto", "cross_entropy", "mse", "l1"]
_REGRESSION_LOSSES = {"auto": F.mse_loss, "mse": F.mse_loss, "l1": F.l1_loss}


def task_loss(name: Loss = "auto") -> LossFn:
    """The training loss a recipe's ``loss`` names, as a ``fit`` hook.

    Class targets always train on cross-entropy; float targets (regression) on MSE
    (``auto``, ``mse``) or L1 (``l1``). A model with early exits returns one output per
    exit in train mode; the loss is then the mean over exits, so later stages keep every
    head trained.
    """
    if name not in (*_REGRESSION_LOSSES, "cross_entropy"):
        raise ValueError(f"unknown loss {name!r}; allowed: auto, cross_entropy, mse, l1")
    regression = _REGRESSION_LOSSES.get(name, F.mse_loss)  # cross_entropy: class targets

    def loss(outputs: torch.Tensor | list[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(outputs, (list, tuple)):
            return torch.stack([loss(o, targets, inputs) for o in outputs]).mean()
        if targets.is_floating_point():
            return regression(outputs.reshape(targets.shape), targets)
        return F.cross_entropy(outputs, targets)

    return loss


def custom_task_loss(user: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """A user's ``loss(outputs, targets)`` as a ``fit`` hook (mean over exits, like
    :func:`task_loss`)."""

    def loss(outputs: torch.Tensor | list[torch.Tensor], targets: torch.Tensor,
             inputs: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(outputs, (list, tuple)):
            return torch.stack([loss(o, targets, inputs) for o in outputs]).mean()
        return user(outputs, targets)

    return loss


default_loss: LossFn = task_loss("auto")
"""Cross-entropy for class targets, MSE for float targets (see ``task_loss``)."""


def fit(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    epochs: int,
    lr: float,
    device: torch.device,
    optimizer: Optimizer = "sgd",
    schedule: Schedule = "cosine",
    weight_decay: float = 5e-4,
    loss_fn: LossFn | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    max_grad_norm: float | None = None,
    progress: Progress | None = None,
    description: str = "train",
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Train ``model`` in place for ``epochs`` and return the mean loss of each epoch.

    ``max_grad_norm``: clip the gradients' global L2 norm to this before every step
    (networks without BatchNorm, e.g. after BN folding, can otherwise blow up).

    ``augment(x) -> x``: applied to every training batch on the device before the forward
    (``random_shift``, say); the loss hooks see the augmented inputs.

    A model with no trainable parameter left (every layer quantized and frozen) is not
    trained: a warning saying why is logged and the history is empty.

    Raises:
        StageError: the loss became NaN or infinite (the model is left as it was at
            the start of the failing step).
    """
    loss_fn = loss_fn or default_loss
    progress = progress or NullProgress()
    model.to(device).train()
    trained = [p for p in (params if params is not None else model.parameters())
               if p.requires_grad]
    if not trained:  # e.g. pruning after quantization: frozen integer layers do not train
        log.warning("%s: nothing left to train: %s", description, _frozen_reason(model, epochs))
        model.eval()
        return []
    opt = _optimizer(trained, optimizer, lr, weight_decay)
    net, loader, sampler = _parallel(model, loader, device, loss_fn, augment)  # net(x, y): loss
    sched = _scheduler(opt, schedule, epochs * len(loader))
    history: list[float] = []
    started = time.perf_counter()
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        batches = progress.track(loader, total=len(loader),
                                 description=f"{description} {epoch + 1}/{epochs}")
        for step, (x, y) in enumerate(batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            loss = net(x, y)
            if not math.isfinite(loss.item()):
                raise StageError(f"{description}: loss became {loss.item()} at epoch "
                                 f"{epoch + 1}, step {step + 1} (lower lr?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trained, max_grad_norm)
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(x)
            count += len(x)
        history.append(distributed.all_mean(total / max(count, 1), device))
        _report_epoch(progress, model, description, epoch, epochs, history[-1], started)
    model.eval()
    return history


def _frozen_reason(model: nn.Module, epochs: int) -> str:
    """Why ``model`` has no trainable parameter, and what skipping costs, in a user's words."""
    many = epochs != 1
    skipped = (f"the {epochs} epoch{'s' if many else ''} of training asked for "
               f"{'are' if many else 'is'} skipped")
    if any(getattr(m, "weight_int", None) is not None for m in model.modules()):
        # occ.techniques.quantize freezes each layer to integers at the end of its stage
        return (f"a quantize stage earlier in the order froze every layer to integers, and "
                f"frozen integer weights are not trained again, so {skipped} and the model "
                "goes on as it is (not fine-tuned after this change); to fine-tune it, run "
                "this stage before quantize, as order: auto does")
    return f"every parameter of the model has requires_grad=False, so {skipped}"


def random_shift(pixels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``augment`` hook: translate each image by its own random whole-pixel shift in
    ``[-pixels, pixels]`` on both axes, edges replicated (the digits' background).

    Draws from torch's global generator, so ``seed_everything`` makes it repeat.
    """
    if pixels < 0:
        raise ValueError(f"shift must be >= 0 pixels, got {pixels}")

    def shift(x: torch.Tensor) -> torch.Tensor:
        if pixels == 0 or x.dim() != 4:
            return x
        n, c, h, w = x.shape
        padded = F.pad(x, (pixels, pixels, pixels, pixels), mode="replicate")
        dy = torch.randint(0, 2 * pixels + 1, (n,)).to(x.device)
        dx = torch.randint(0, 2 * pixels + 1, (n,)).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    return shift


def _report_epoch(progress: Progress, model: nn.Module, description: str, epoch: int,
                  epochs: int, loss: float, started: float) -> None:
    """Hand a finished epoch to a progress that wants one line per epoch (rank 0 only)."""
    hook = getattr(progress, "epoch_end", None)
    if hook is None or not distributed.is_main():
        return
    hook(description=description, epoch=epoch + 1, epochs=epochs, loss=loss,
         seconds=time.perf_counter() - started, model=model)
    model.train()  # measuring val accuracy put it in eval mode


def _parallel(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
              loss_fn: LossFn | None = None,
              augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """``(net, loader, sampler)``: ``net(x, y)`` is the loss of a batch (:class:`_Step`);
    under torchrun DDP-wrapped, with a loader over this rank's shard of the data.

    Each of the N ranks takes ``batch_size / N`` samples a step (DDP averages their
    gradients), so a step sees the recipe's batch size and an epoch has as many steps as
    in one process, whatever N: the optimisation the recipe's epochs and learning rate
    were chosen for (BatchNorm layers normalise over each rank's share). A batch that N
    does not divide is rounded up to the next multiple of N, with a warning.

    DDP is told to look for unused parameters (an extra pass over the autograd graph every
    step, and a warning from torch when there are none) only when one training step
    leaves some trainable parameter out of the loss (:func:`unused_parameters`): an exit
    head whose loss weight is 0, a layer the forward skips."""
    step = _Step(model, loss_fn or default_loss)
    if distributed.world_size() == 1:
        return step, loader, None
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=torch.initial_seed() % 2**31)
    per_rank = _rank_batch(loader.batch_size or 1, distributed.world_size())
    sharded = DataLoader(loader.dataset, batch_size=per_rank, sampler=sampler,
                         num_workers=loader.num_workers)
    unused = unused_parameters(model, sharded, device, loss_fn or default_loss, augment)
    if unused:
        log.debug("parameters no loss reaches (DDP will look for them every step): %s",
                  ", ".join(unused[:8]) + (", ..." if len(unused) > 8 else ""))
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(step, device_ids=ids,  # the same on every rank
                                  find_unused_parameters=distributed.any_rank(bool(unused),
                                                                              device))
    return net, sharded, sampler


class _Step(nn.Module):
    """``model`` and its loss as one module: ``step(x, y)`` is the loss of a batch.

    DDP looks for unused parameters from what the module returns: returning the loss
    makes that what backward reaches, so an exit head whose loss weight is 0 (an output
    the loss never reads) counts as unused there too, as :func:`unused_parameters` says.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model(x), y, x)


def unused_parameters(model: nn.Module, loader: torch.utils.data.DataLoader,
                      device: torch.device, loss_fn: LossFn,
                      augment: Callable[[torch.Tensor], torch.Tensor] | None = None
                      ) -> list[str]:
    """Names of ``model``'s trainable parameters that one training step's loss does not
    reach (its first batch of ``loader``, forward in train mode).

    Runs on a copy of the model with the random generators restored, so the model (its
    BatchNorm statistics), the data order and every later draw are as if it had not run.
    A model whose forward takes different parameters on different batches can still have
    some unused later: this looks at one step.
    """
    import copy

    probe = copy.deepcopy(model).to(device).train()
    with rng_preserved(device):
        batch = next(iter(loader), None)
        if batch is None:
            return []
        x, y = batch[0].to(device), batch[1].to(device)
        if augment is not None:
            x = augment(x)
        reached = _leaves(loss_fn(probe(x), y, x))
    return [name for name, p in probe.named_parameters()
            if p.requires_grad and id(p) not in reached]


def _leaves(loss: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``loss`` reaches."""
    leaves: set[int] = set()
    seen: set[object] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it fills
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(parent for parent, _ in node.next_functions)
    return leaves


@functools.cache  # one warning per (batch, ranks), not one per stage
def _rank_batch(batch: int, ranks: int) -> int:
    """Samples each of ``ranks`` processes takes a step for a recipe batch of ``batch``."""
    per_rank = -(-batch // ranks)
    if per_rank * ranks != batch and distributed.is_main():
        log.warning("batch size %d does not split evenly over %d processes: each takes %d, "
                    "a step sees %d samples and an epoch has fewer steps than in one process "
                    "(choose a batch size divisible by --nproc to train as in one process)",
                    batch, ranks, per_rank, per_rank * ranks)
    return per_rank


@torch.no_grad()
def predict(model: nn.Module, loader: torch.utils.data.DataLoader,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs and targets over ``loader``, in order, on the CPU."""
    model.to(device).eval()
    outs, targets = [], []
    for x, y in loader:
        outs.append(model(x.to(device)).float().cpu())
        targets.append(y)
    return torch.cat(outs), torch.cat(targets)
