"""User callables (``pkg.module:callable``) named by a recipe: trust check, import, origin.

Importing a user module runs its code, so a recipe's ``model.arch``, ``data.dataset`` or
``data.transform`` callable is imported only when the caller passed ``--trust-code``
(``trust_code=True`` in the API); the decision is ``occ.trust.require_code``, and the
refusal names what would have run.

Where a user module is looked for is decided here, for models and data alike: on
``sys.path`` first (installed packages, ``PYTHONPATH``), then in the folders of the input
that named it (the recipe's folder, or the folders an artifact or checkpoint recorded:
:func:`imported_folders`), then in the working directory. The ``occ`` console script does
not put the working directory on ``sys.path`` (``python -m`` does), so a user's ``mypkg/``
beside the recipe would not import otherwise. Recorded folders are data: they are only
places to look, and nothing is imported from them without ``--trust-code``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from occ.errors import OccError, RecipeError

MAX_FOLDERS = 16
"""Recorded folders read from an artifact or checkpoint at most (occ writes one or two)."""
MAX_FOLDER_CHARS = 4096


def require_trust(ref: str, *, trust_code: bool, where: str) -> None:
    """Refuse to import ``ref`` unless ``trust_code``: the one decision, ``occ.trust``."""
    from occ.trust import require_code

    require_code(ref, trusted=trust_code, where=where)


def source_folder(source: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The folder of ``source`` (a recipe file), where its callables are looked for; empty
    when ``source`` is not a file (a recipe handed in from Python)."""
    if source is None:
        return ()
    path = Path(source)
    return (str(path.resolve().parent),) if path.is_file() else ()


def search_folders(search: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """``search`` then the working directory, absolute, without repeats: the folders a user
    module is looked for in when it is not on ``sys.path``."""
    return list(dict.fromkeys(str(Path(p).resolve()) for p in (*search, Path.cwd())))


def import_callable(ref: str, *, where: str, search: Iterable[str | os.PathLike[str]] = (),
                    error: type[OccError] = RecipeError) -> Callable[..., Any]:
    """Import ``pkg.module:callable`` and return the callable (without calling it).

    Args:
        ref: The reference.
        where: The field it came from, for error messages (``data.dataset``).
        search: Folders to import from when the module is not on ``sys.path`` (the
            recipe's folder, an artifact's recorded folders), tried in order before the
            working directory.
        error: The ``OccError`` subclass to raise.

    Raises:
        ``error``: the module does not import (with where occ looked), raised while
            importing, or has no such callable.
    """
    from occ.limits import printable_path

    module_name, _, attr = ref.partition(":")
    folders = search_folders(search)
    try:
        module = _import(module_name, folders)
    except ModuleNotFoundError as exc:
        looked = ", ".join(printable_path(f) for f in folders)  # a header's: one line
        raise error(f"cannot import {module_name!r} for {ref!r}: {exc} (looked on sys.path and "
                    f"in {looked}; install the package or set PYTHONPATH)",
                    where=where) from exc
    except Exception as exc:  # the user's module ran and failed: bad input, not occ's crash
        raise error(f"importing {module_name!r} raised {exc!r}", where=where) from exc
    except SystemExit as exc:  # it would end occ silently, with its code (0: "success")
        code = "" if exc.code is None else repr(exc.code)
        raise error(f"importing {module_name!r} called sys.exit({code})", where=where) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{module_name!r} has no callable {attr!r}", where=where)
    return fn


def import_references(data: Any, *, source: str,
                      search: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Import (not call) every ``pkg.module:callable`` that plain recipe data names, so that
    one that does not import is reported before any data is loaded. Only for a caller the
    user trusted (``--trust-code``): importing runs the module.

    Raises:
        RecipeError: at ``source: <field>``, a reference that does not import.
    """
    from occ.trust import code_references

    folders = tuple(search)
    for where, ref in code_references(data):
        import_callable(ref, where=f"{source}: {where}", search=folders)


def imported_folders(refs: Iterable[str]) -> list[str]:
    """The folders the modules of ``refs`` (those already imported) were imported from: the
    ``sys.path`` entry holding their top package, absolute, in order, without repeats.

    Recorded in an artifact's header and a checkpoint's metadata so that, with
    ``--trust-code``, the model and data rebuild from any working directory. Folders of the
    Python installation (``site-packages``) and occ's own (a checkout) are left out:
    installed packages are found by name anywhere, and their folder says nothing portable.
    """
    from occ.trust import is_code_reference

    found: list[str] = []
    for ref in refs:
        if not is_code_reference(ref) or ref.partition(":")[0].split(".")[0] == "occ":
            continue  # occ's own classes (a zoo model handed in): found by name anywhere
        folder = _module_root(ref.partition(":")[0].split(".")[0])
        if folder is not None and folder not in found and not _installed(folder):
            found.append(folder)
    return found


def recorded_folders(value: Any, *, where: str, error: type[OccError]) -> tuple[str, ...]:
    """``value`` (an artifact's or checkpoint's ``code_folders``) checked: a short list of
    absolute folder paths. Absent (None) reads as none.

    Raises:
        ``error``: anything else (a hostile or damaged file).
    """
    if value is None:
        return ()
    if not (isinstance(value, list) and len(value) <= MAX_FOLDERS and all(
            isinstance(f, str) and 0 < len(f) <= MAX_FOLDER_CHARS and not _has_control(f)
            and os.path.isabs(f) for f in value)):
        raise error(f"must be a list of at most {MAX_FOLDERS} absolute folder paths "
                    "without control characters", where=where)
    return tuple(value)


def _has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (NUL, a newline, a terminal escape):
    in a path it is there to break a message's line, not to name a folder."""
    return any(unicodedata.category(c) == "Cc" for c in text)


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
    """Import ``module_name``; if its top package is missing, retry with ``folders`` on
    ``sys.path``, after what is there: a user folder never shadows an installed package.

    After a successful import the folders stay: the user's code may import a module beside
    it only when called (a builder's ``from layers import Block``), and DataLoader workers
    started with ``spawn`` (macOS's default) re-import a user dataset by name in a process
    that copies ``sys.path``. A failed import takes them off again."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0]:
            raise  # the module exists but imports something missing: say that
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path[len(sys.path):] = added
    try:
        return importlib.import_module(module_name)
    except BaseException:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)
        raise


def _module_root(top: str) -> str | None:
    """The folder holding the imported top-level module ``top`` (None: not imported, or
    not from a folder: built in, frozen, ``__main__``)."""
    module = sys.modules.get(top)
    if module is None or top == "__main__":
        return None
    file = getattr(module, "__file__", None)
    if file:  # pkg/__init__.py -> the folder above pkg; mod.py -> its folder
        path = Path(file).resolve()
        return str(path.parent.parent if hasattr(module, "__path__") else path.parent)
    paths = list(getattr(module, "__path__", None) or [])  # a namespace package
    return str(Path(paths[0]).resolve().parent) if paths else None


def _installed(folder: str) -> bool:
    """Whether ``folder`` is one of the Python installation's library folders
    (``site-packages``, the standard library), or inside one."""
    import site
    import sysconfig

    libs = [sysconfig.get_paths().get(k) for k in ("purelib", "platlib", "stdlib",
                                                   "platstdlib")]
    libs += [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    roots = {str(Path(p).resolve()) for p in libs if p}
    return any(folder == r or folder.startswith(r + os.sep) for r in roots)
