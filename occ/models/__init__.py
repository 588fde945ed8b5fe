"""Models: the built-in zoo, torchvision classifiers and user callables, by one reference.

``build_model("lenet5")``, ``build_model("torchvision.resnet18", {"num_classes": 10})`` and
``build_model("mypkg.nets:build")`` all return an ``nn.Module``. This package imports torch
only when a model is built, so ``occ validate`` can check names (:mod:`occ.models.names`)
without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from occ.models.names import ZOO_NAMES, check_arch_name

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ZOO_NAMES", "build_model", "check_arch_name", "data_kwargs", "list_models"]


def data_kwargs(arch: str, kwargs: dict[str, Any], input_shape: tuple[int, ...],
                num_classes: int, *, prefer: dict[str, Any] | None = None) -> dict[str, Any]:
    """``kwargs`` completed with what the data implies, unless already given.

    A zoo builder gets ``in_channels``, ``num_classes`` and ``input_hw`` when its signature
    takes them (values in ``prefer`` win over the data's: a student keeps its teacher's); a
    torchvision model gets ``num_classes`` and, for non-RGB data, ``in_channels``. User
    callables are left as written (``build_model`` passes the data's shapes it accepts).
    """
    from occ.models.names import arch_kind

    out = dict(kwargs)
    kind = arch_kind(arch)
    if kind == "zoo":
        from occ.models.zoo import builder_params  # deferred: it imports torch

        accepted = builder_params(arch)
        data = {"in_channels": input_shape[0], "num_classes": num_classes,
                "input_hw": input_shape[1]}
        for key, value in data.items():
            if key in accepted:
                out.setdefault(key, (prefer or {}).get(key, value))
    elif kind == "torchvision":
        out.setdefault("num_classes", num_classes)
        if input_shape[0] != 3:
            out.setdefault("in_channels", input_shape[0])
    return out


def build_model(
    arch: str,
    kwargs: dict[str, Any] | None = None,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    allow_callables: bool = False,
    source: str | None = None,
    search: Sequence[str] = (),
) -> nn.Module:
    """Build a freshly initialised model from a reference.

    Weights come from torch's global generator, so the same call under the same
    ``torch.manual_seed`` gives the same weights. Pretrained weights are never downloaded.

    Args:
        arch: A zoo name (``"lenet5"``), ``"torchvision.<name>"`` (any torchvision
            classifier) or ``"pkg.module:callable"`` (a function or class returning an
            ``nn.Module``; the module must be importable).
        kwargs: Keyword arguments for the builder, e.g. ``{"width": 0.25}`` for a zoo model or
            ``{"num_classes": 100}``. Not modified.
        in_channels: Image channels of the data, passed to the builder. For torchvision
            models, which take no such argument, a value other than 3 replaces the first
            ``nn.Conv2d`` (in module order) with a freshly initialised one of the same
            configuration but ``in_channels`` inputs. For a user callable it is passed only
            if its signature accepts it.
        num_classes: Class count of the data, passed to the builder as ``num_classes``
            (for a user callable, only if its signature accepts it).
        allow_callables: Allow ``pkg.module:callable`` references (importing one runs its
            code): true only when the user passed ``--trust-code`` (``occ.trust``).
        source: The file that named ``arch`` (recipe, checkpoint), for error messages.
        search: Folders a ``pkg.module:callable`` is imported from when it is not on
            ``sys.path``, before the working directory: the recipe's folder, the folders an
            artifact or checkpoint recorded (``occ.callables``).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ModelError: If the reference is malformed or unknown, cannot be imported, does not
            return an ``nn.Module``, would exceed ``OCC_MAX_PARAMS`` (sized on the meta device
            before anything is allocated), asks
            for pretrained ``weights``, or a kwarg is not accepted (``where`` names it), or
            ``in_channels``/``num_classes`` conflict with the same key in ``kwargs``.
        TrustError: ``arch`` is a callable and ``allow_callables`` is false.
    """
    from occ.models.resolve import resolve_model  # deferred: it imports torch

    return resolve_model(
        arch,
        kwargs,
        in_channels=in_channels,
        num_classes=num_classes,
        allow_callables=allow_callables,
        source=source,
        search=search,
    )


def list_models() -> list[str]:
    """Return the zoo's model names (imports torch; :data:`ZOO_NAMES` does not)."""
    from occ.models.zoo import list_models as _list_models

    return _list_models()
