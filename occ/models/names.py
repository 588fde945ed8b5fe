"""Model reference names, checked without importing torch.

``occ validate`` checks a recipe's ``model.arch`` before anything heavy is imported, so this
module must stay free of torch and torchvision (a test asserts it). A model reference is one
of three kinds:

* a zoo name such as ``"lenet5"`` (see :data:`ZOO_NAMES`);
* ``"torchvision.<name>"``, any classifier in ``torchvision.models``;
* ``"pkg.module:callable"``, a user function or class that returns an ``nn.Module``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from occ.errors import ModelError
from occ.trust import is_code_reference

ZOO_NAMES: tuple[str, ...] = ("lenet300", "lenet5", "resnet20", "resnet32", "resnet56", "vgg_small")
"""The built-in zoo, in the order ``occ.models.zoo.list_models()`` returns it."""

TORCHVISION_PREFIX = "torchvision."

ArchKind = Literal["zoo", "torchvision", "callable"]


def arch_kind(arch: str) -> ArchKind:
    """Classify a model reference by its syntax alone.

    Args:
        arch: The ``model.arch`` string from a recipe or the command line.

    Returns:
        ``"zoo"``, ``"torchvision"`` or ``"callable"``.

    Raises:
        ModelError: If ``arch`` is none of the three kinds (``where="model.arch"``).
    """
    if isinstance(arch, str):
        if arch in ZOO_NAMES:
            return "zoo"
        if arch.startswith(TORCHVISION_PREFIX) and arch[len(TORCHVISION_PREFIX) :].isidentifier():
            return "torchvision"
        if is_code_reference(arch):
            return "callable"
    allowed = ", ".join(ZOO_NAMES)
    raise ModelError(
        f"unknown model {arch!r}{_suggest(str(arch))}; allowed: {allowed}, torchvision.<name>, "
        "pkg.module:callable",
        where="model.arch",
    )


def _suggest(name: str) -> str:
    """`` (did you mean 'x'?)`` for the closest zoo or torchvision name, or nothing."""
    import difflib

    from occ.models.torchvision_names import TORCHVISION_CLASSIFIERS

    choices = [*ZOO_NAMES, *(TORCHVISION_PREFIX + n for n in TORCHVISION_CLASSIFIERS)]
    bare = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    close = (difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
             or [TORCHVISION_PREFIX + m for m in difflib.get_close_matches(
                 bare, TORCHVISION_CLASSIFIERS, n=1, cutoff=0.75)])
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_arch_name(arch: str) -> None:
    """Check that ``arch`` is a well-formed model reference, without importing torch.

    Zoo and torchvision names are checked against the shipped lists
    (:mod:`occ.models.torchvision_names`), with the closest name suggested; a
    ``pkg.module:callable`` is checked for syntax only (importing it would run its code).

    Args:
        arch: The ``model.arch`` string from a recipe or the command line.

    Raises:
        ModelError: If ``arch`` is not a zoo name, ``torchvision.<identifier>`` or
            ``pkg.module:callable`` (``where="model.arch"``).
    """
    from occ.models.torchvision_names import TORCHVISION_CLASSIFIERS

    if arch_kind(arch) == "torchvision" and arch[len(TORCHVISION_PREFIX):] not in \
            TORCHVISION_CLASSIFIERS:
        raise ModelError(f"unknown torchvision classifier {arch!r}{_suggest(arch)}; see "
                         "torchvision.models.list_models()", where="model.arch")


@dataclass
class ArchRef:
    """How to rebuild the model's architecture before replaying edits."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the artifact header."""
        return {"arch": self.arch, "kwargs": dict(self.kwargs)}
