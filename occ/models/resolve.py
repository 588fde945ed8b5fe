"""Turn a model reference (zoo name, ``torchvision.<name>``, ``pkg.module:callable``) into a model.

Call it through :func:`occ.models.build_model`, which keeps ``occ.models`` importable without
torch. Every failure is a :class:`~occ.errors.ModelError` naming the reference or the kwarg.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from occ.errors import ModelError
from occ.models import zoo
from occ.models.names import TORCHVISION_PREFIX, arch_kind
from occ.models.sizing import build_sized
from occ.trust import require_code

_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '(\w+)'")


def resolve_model(
    arch: str,
    kwargs: dict[str, Any] | None = None,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    allow_callables: bool = False,
    source: str | None = None,
    search: Sequence[str] = (),
) -> nn.Module:
    """Build the model ``arch`` refers to; see :func:`occ.models.build_model`.

    The model is first built on the ``meta`` device and its size checked against
    ``OCC_MAX_PARAMS`` (``occ.models.sizing``), so nothing large is allocated for a hostile
    reference; a ``pkg.module:callable`` passes ``occ.trust.require_code`` first.
    """
    kind = arch_kind(arch)
    require_code(arch, trusted=allow_callables,
                 where=f"{source}: model.arch" if source else "model.arch")
    return build_sized(arch, kind, lambda: _resolve(arch, kind, kwargs, in_channels,
                                                    num_classes, search))


def _resolve(arch: str, kind: str, kwargs: dict[str, Any] | None, in_channels: int | None,
             num_classes: int | None, search: Sequence[str] = ()) -> nn.Module:
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ModelError(f"must be a mapping, got {type(kwargs).__name__}", where="model.kwargs")
    merged = dict(kwargs or {})
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ModelError(
                f"{merged[key]!r} conflicts with the data's {key}={value!r}",
                where=f"model.kwargs.{key}",
            )
        merged[key] = value
    if kind == "zoo":
        return _call(arch, zoo.get_model_builder(arch), merged)
    if kind == "torchvision":
        return _build_torchvision(arch, merged)
    implied = {
        key
        for key, value in (("in_channels", in_channels), ("num_classes", num_classes))
        if value is not None and key not in (kwargs or {})
    }
    return _build_callable(arch, merged, implied=implied, search=search)


def _check_kwargs(arch: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Reject kwargs the builder's signature does not accept, before calling it."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ModelError(
            f"{arch!r} does not accept {unknown[0]!r}; it accepts: {', '.join(sorted(accepted))}",
            where=f"model.kwargs.{unknown[0]}",
        )


def _call(arch: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a builder, turning bad-argument errors into a ModelError naming the kwarg."""
    _check_kwargs(arch, fn, kwargs)
    try:
        return fn(**kwargs)
    except TypeError as exc:
        # Builders that take **kwargs (torchvision's) only find a bad name in the constructor.
        match = _UNEXPECTED_KWARG.search(str(exc))
        where = f"model.kwargs.{match.group(1)}" if match else "model.kwargs"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        what = f"does not accept {match.group(1)!r}" if match else f"rejected its kwargs: {first}"
        raise ModelError(f"{arch!r} {what}", where=where) from exc
    except ValueError as exc:  # first line only: torch appends C++ frames to some
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{arch!r} rejected its kwargs: {line}", where="model.kwargs") from exc


def _build_torchvision(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build ``torchvision.<name>`` with random weights, adapting the stem to ``in_channels``."""
    from torchvision import models  # deferred: importing torchvision takes about a second

    name = arch[len(TORCHVISION_PREFIX) :]
    known = models.list_models(module=models)  # classification models only
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3) or known[:5]
        raise ModelError(
            f"unknown torchvision classifier {name!r}; did you mean {', '.join(close)}? "
            f"({len(known)} available, see torchvision.models.list_models())",
            where="model.arch",
        )
    if kwargs.pop("weights", None) is not None:
        raise ModelError(
            "pretrained weights are never downloaded; leave weights unset and pass a local "
            "checkpoint instead",
            where="model.kwargs.weights",
        )
    in_channels = kwargs.pop("in_channels", None)
    model = _call(arch, functools.partial(models.get_model, name, weights=None), kwargs)
    if in_channels is not None and in_channels != 3:
        _adapt_first_conv_(model, in_channels, arch)
    return model


def _adapt_first_conv_(model: nn.Module, in_channels: int, arch: str) -> None:
    """Replace the first ``nn.Conv2d`` (in module order) with one taking ``in_channels``.

    The new conv keeps every other setting (out channels, kernel, stride, padding, dilation,
    groups, bias, padding mode) and is freshly initialised; torchvision's models expect RGB,
    and this lets them take grey or multi-band images without editing their code.
    """
    convs = ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    name, module = next(convs, ("", None))
    if module is None:
        raise ModelError(f"{arch!r} has no Conv2d to adapt to in_channels={in_channels}")
    if module.groups != 1:
        raise ModelError(f"cannot adapt grouped first conv {name!r} of {arch!r}")
    new = nn.Conv2d(
        in_channels,
        module.out_channels,
        module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _build_callable(arch: str, kwargs: dict[str, Any], *, implied: set[str],
                    search: Sequence[str] = ()) -> nn.Module:
    """Import ``pkg.module:callable`` (from ``sys.path``, then ``search``, then the working
    directory: ``occ.callables``) and call it with ``kwargs``.

    ``in_channels`` and ``num_classes`` coming from the data (not from the recipe's kwargs)
    are passed only where the callable's signature accepts them.
    """
    from occ.callables import import_callable

    fn = import_callable(arch, where="model.arch", search=search, error=ModelError)
    for key in implied:
        if not _accepts(fn, key):
            kwargs.pop(key)
    model = _call(arch, fn, kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{arch!r} returned {type(model).__name__}, not a torch.nn.Module", where="model.arch"
        )
    return model


def _accepts(fn: Callable[..., Any], key: str) -> bool:
    """Return whether ``fn`` can take keyword ``key`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
