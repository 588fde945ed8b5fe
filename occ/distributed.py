"""Data-parallel training under ``torchrun``: process group, samplers, rank-0-only output.

``torchrun --nproc_per_node N -m occ compress recipe.yaml`` (or ``occ compress --nproc N``)
starts N processes; each runs the same plan. Training stages wrap the model in
``DistributedDataParallel`` and shard the train split with ``DistributedSampler`` (inside
``occ.training.fit``); everything else (calibration, statistics, coding, evaluation) runs on
every rank on identical inputs, and after each stage rank 0's model state is broadcast so
the ranks can never drift apart. Only rank 0 writes files and prints. NCCL on CUDA, gloo on
the CPU.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from occ.errors import RecipeError


def world_size() -> int:
    """Number of processes (1 when not launched by torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes outputs."""
    return rank() == 0


def launched_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 when unset).

    Raises:
        RecipeError: ``WORLD_SIZE`` is not a positive integer.
    """
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise RecipeError(f"must be a positive integer (torchrun sets it), got {value!r}",
                          where="WORLD_SIZE")
    return size


def setup() -> torch.device | None:
    """Join the process group torchrun describes in the environment; return this rank's device.

    Returns None when not launched by torchrun (``WORLD_SIZE`` unset or 1).
    """
    if launched_size() == 1:
        return None
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RecipeError(f"is {os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not set: start occ "
                              "with torchrun, or `occ compress --nproc N`", where="WORLD_SIZE")
        size = launched_size()
        _env_int("RANK", 0, size - 1, f"for WORLD_SIZE {size}")
        _env_int("MASTER_PORT", 1, 65535, "a TCP port number")
        local = _local_rank()  # before joining, as the others: a bad one cannot take part
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    else:
        local = _local_rank()
    if local is not None:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _local_rank() -> int | None:
    """This rank's GPU (``LOCAL_RANK``, checked against the GPUs here); None without CUDA."""
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return _env_int("LOCAL_RANK", 0, count - 1, f"{count} GPU(s) here", default="0")


def _env_int(name: str, low: int, high: int, why: str, *, default: str | None = None) -> int:
    """The integer in environment variable ``name``, checked to lie in [low, high] before
    torch reads it (a rank that can never join waits out torch's 30-minute timeout).

    Raises:
        RecipeError: located at ``name``: not an integer, or out of range.
    """
    value = os.environ.get(name, default)
    try:
        number = int(value or "")
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise RecipeError(f"must be an integer in [{low}, {high}] ({why}), got {value!r}",
                          where=name)
    return number


def teardown() -> None:
    """Leave the process group if this process joined one.

    Collects garbage first: a ``DistributedDataParallel`` wrapper that ended up in a
    reference cycle would otherwise be freed at interpreter exit, after its process group,
    and its reducer's destructor aborts the process (``terminate called without an active
    exception``) after all the work is done."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_model(model: nn.Module) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if world_size() == 1:
        return
    state = model.state_dict()
    for t in state.values():
        dist.broadcast(t, src=0)
    # Tensors left out of the state dict (a frozen quantized layer's float weight and bias)
    # are derived from the broadcast integers: derive them again, as occ.load does.
    model.load_state_dict(state)


def all_mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over ranks."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (the same answer on every rank)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
