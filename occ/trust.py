"""The trust model, decided here and nowhere else.

1. Trusted without a flag: occ's own code (zoo models, ``torchvision.<name>``, occ's edit
   ops and codecs) and plain data (YAML scalars, JSON headers, ``weights_only`` tensors).
2. ``--trust-code`` (API ``trust_code=True``): importing and calling a
   ``pkg.module:callable`` named in a recipe, checkpoint, artifact or stage state.
3. ``--trust-checkpoint``: full unpickling of a checkpoint (pickle can run any code).

Every path that builds a model goes through :func:`require_code` (``occ.models.resolve``
calls it for each ``pkg.module:callable`` reference); the commands also call
:func:`check_recipe` before any work, so an untrusted recipe is refused in its first
second, not after data loading. The refusal is a :class:`TrustError` (exit 2) naming what
would have run and the flag that allows it.

No torch here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from occ.errors import OccError

CODE_FLAG = "--trust-code"
CHECKPOINT_FLAG = "--trust-checkpoint"


class TrustError(OccError):
    """Loading the input would run code the user did not allow (exit 2)."""


def is_code_reference(ref: Any) -> bool:
    """Whether ``ref`` is a ``pkg.module:callable`` reference (importing it runs code)."""
    if not isinstance(ref, str):
        return False
    module, sep, attr = ref.partition(":")
    return bool(sep) and bool(module) and all(p.isidentifier() for p in module.split(".")) \
        and attr.isidentifier()


def require_code(ref: str, *, trusted: bool, where: str = "model.arch") -> None:
    """Allow importing ``ref`` only if the user trusted code for this command.

    Args:
        ref: a model reference; zoo and torchvision names always pass.
        trusted: ``--trust-code`` was given (API ``trust_code=True``).
        where: the file and field that named ``ref``, for the message.

    Raises:
        TrustError: ``ref`` is a ``pkg.module:callable`` and ``trusted`` is false.
    """
    if trusted or not is_code_reference(ref):
        return
    module = ref.partition(":")[0]
    raise TrustError(f"refused: would import {module!r} and call {ref!r} (runs code from "
                     f"outside occ); pass {CODE_FLAG} (in Python: trust_code=True) if you "
                     "trust it", where=where)


_CODE_KEYS = ("arch", "dataset", "transform")


def code_references(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(field path, reference)`` of every ``pkg.module:callable`` in plain data: a model
    or student ``arch``, a data ``dataset`` or ``transform``."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if key in _CODE_KEYS and is_code_reference(value):
                yield here, value
            else:
                yield from code_references(value, here)
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from code_references(value, f"{path}[{i}]")


def check_recipe(recipe_data: dict[str, Any], *, source: str, trusted: bool) -> None:
    """Refuse a recipe that names code (model, student ...) unless ``trusted``."""
    for where, ref in code_references(recipe_data):
        require_code(ref, trusted=trusted, where=f"{source}: {where}")


def unpickle_refusal(what: str) -> str:
    """The message for a checkpoint that needs full unpickling (``what``: its globals)."""
    return (f"refused: would run code while unpickling ({what}); pass {CHECKPOINT_FLAG} "
            "(in Python: trust_checkpoint=True) only if you made the file")


__all__ = ["CHECKPOINT_FLAG", "CODE_FLAG", "TrustError", "check_recipe", "code_references",
           "is_code_reference", "require_code", "unpickle_refusal"]
