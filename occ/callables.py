"""User callables (``pkg.module:callable``) named by a recipe: trust check and import.

Importing a user module runs its code, so a recipe's ``data.dataset`` or
``data.transform`` callable is imported only when the caller passed ``--trust-code``
(``trust_code=True`` in the API); the decision is ``occ.trust.require_code``, as for
models, and the refusal names what would have run.

The ``occ`` console script does not put the working directory on ``sys.path`` (``python
-m`` does), so a user's ``mypkg/`` beside the recipe would not import; :func:`import_callable`
looks in the working directory and the recipe's folder too, and says where it looked.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from occ.errors import OccError, RecipeError


def require_trust(ref: str, *, trust_code: bool, where: str) -> None:
    """Refuse to import ``ref`` unless ``trust_code``: the one decision, ``occ.trust``."""
    from occ.trust import require_code

    require_code(ref, trusted=trust_code, where=where)


def import_callable(ref: str, *, where: str, search: Iterable[str | Path] = (),
                    error: type[OccError] = RecipeError) -> Callable[..., Any]:
    """Import ``pkg.module:callable`` and return the callable.

    Args:
        ref: The reference.
        where: The field it came from, for error messages (``data.dataset``).
        search: Extra folders to import from when the module is not importable as is
            (the working directory and the recipe's folder), tried in order.
        error: The ``OccError`` subclass to raise.

    Raises:
        ``error``: the module does not import (with where occ looked), raised while
            importing, or has no such callable.
    """
    module_name, _, attr = ref.partition(":")
    folders = [str(Path(p).resolve()) for p in (Path.cwd(), *search)]
    try:
        module = _import(module_name, folders)
    except ModuleNotFoundError as exc:
        looked = ", ".join(dict.fromkeys(folders))
        raise error(f"cannot import {module_name!r} for {ref!r}: {exc} (looked on sys.path and "
                    f"in {looked}; install the package or set PYTHONPATH)", where=where) from exc
    except Exception as exc:  # the user's module ran and failed: bad input, not occ's crash
        raise error(f"importing {module_name!r} raised {exc!r}", where=where) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{module_name!r} has no callable {attr!r}", where=where)
    return fn


@contextlib.contextmanager
def user_folders(search: Iterable[str | Path] = ()) -> Iterator[None]:
    """The working directory and ``search`` on ``sys.path`` for the block: where a trusted
    unpickle (``--trust-checkpoint``) finds the user's classes, as :func:`import_callable`
    finds their builders (the console script does not put the working directory there)."""
    folders = [str(Path(p).resolve()) for p in (Path.cwd(), *search)]
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path[len(sys.path):] = added  # after what is installed: never shadow a package
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def _import(module_name: str, folders: list[str]) -> Any:
    """Import ``module_name``; if its top package is missing, retry with ``folders`` first."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0]:
            raise  # the module exists but imports something missing: say that
        added = [f for f in folders if f not in sys.path]
        sys.path[:0] = added
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError:
            for f in added:
                sys.path.remove(f)
            raise
