"""Size a model on the ``meta`` device before building it for real.

A reference from a file (``num_classes: 300000``, ``kwargs: {width: 100}``, a torchvision
giant) must not allocate gigabytes before occ can refuse it. :func:`build_sized` builds the
model once on ``meta`` (shapes only, no memory, no draws from the CPU generator), counts its
parameters and buffers against ``OCC_MAX_PARAMS``, and only then builds it on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from occ.errors import ModelError, OccError
from occ.limits import check_params


def count_values(model: nn.Module) -> int:
    """Parameters plus buffers of ``model`` (works on the meta device; lazy ones count 0)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() for t in tensors if not is_lazy(t))


def build_sized(arch: str, kind: str, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on the CPU, after a meta-device build showed it is within the limit.

    Args:
        arch: the reference, for messages.
        kind: ``zoo`` / ``torchvision`` / ``callable`` (``occ.models.names.arch_kind``).
        make: builds the model under the current default device.

    Raises:
        ModelError: the meta build fails (bad kwargs: negative or overflowing sizes), is
            over ``OCC_MAX_PARAMS``, or (occ's own builders) cannot be sized on meta. A
            trusted callable that does not support meta is built directly.
    """
    if _on_meta():  # already a shadow build (occ.artifact.model_io sizes artifacts this way)
        return make()
    try:
        shadow = _meta_build(make)
    except OccError:
        raise
    except (NotImplementedError, RuntimeError) as err:
        if kind == "callable":  # the user's own (trusted) code may not support meta
            return make()
        raise ModelError(f"{arch!r} cannot be built with these kwargs: {_line(err)}",
                         where="model.kwargs") from None
    except (OverflowError, MemoryError, ArithmeticError, IndexError) as err:
        raise ModelError(f"{arch!r} cannot be built with these kwargs: {_line(err)}",
                         where="model.kwargs") from None
    if isinstance(shadow, nn.Module):
        check_params(count_values(shadow), where="model", name=arch)
    del shadow
    return make()


# Factories that allocate by size; ``torch.tensor`` (data given) and ``torch.arange`` stay
# real, so builders that compute widths with tensors (torchvision's RegNets) still run.
_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand,
                        torch.randn, torch.randint, torch.empty_strided, torch.eye})


class _MetaFactories(TorchFunctionMode):
    """Send size-driven tensor factories without an explicit device to ``meta``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _meta_build(make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` with every parameter on meta: the meta device, else meta factories."""
    try:
        with torch.device("meta"):
            return make()
    except NotImplementedError:  # data-dependent Python on a meta tensor (.tolist() ...)
        with _MetaFactories():
            return make()


def _on_meta() -> bool:
    try:
        return torch.empty(0).device.type == "meta"
    except Exception:  # noqa: BLE001
        return False


def _line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


__all__ = ["build_sized", "count_values"]
