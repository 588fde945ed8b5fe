"""Atomic file output: write to a temp file in the same directory, fsync, rename.

A reader never sees a half-written artifact, report or checkpoint, and a crash leaves
either the old file or the new one. Every file occ writes goes through here, so this is
also the one place that refuses to replace a FIFO, a socket or a device node: the rename
would swap it for a regular file (``--out /dev/full`` once did).

No torch here.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from occ.errors import RecipeError
from occ.limits import file_kind


def refuse_special(path: str | os.PathLike[str], where: str | None = None) -> None:
    """Refuse ``path`` as an output if it is a FIFO, socket or device node.

    A missing path, a regular file and a directory pass (a directory is the caller's
    business). A link is followed: a link to ``/dev/null`` is refused too.

    Raises:
        RecipeError: ``path`` is a special file, or cannot be examined (``where`` locates it).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or err
        raise RecipeError(f"unusable output {os.fspath(path)}: {reason}", where=where) from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    raise RecipeError(f"{os.fspath(path)} is {file_kind(mode)}, not a file occ may replace",
                      where=where)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       where: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (same-directory temp file + ``os.replace``).

    Raises:
        RecipeError: ``path`` is a directory, FIFO, socket or device; it is left untouched
            and no temp file is made.
        WriteError: the folder cannot be made or written (a full disk, a read-only folder),
            naming ``path`` (or the folder in the way), not occ's temp file.
    """
    target = _writable(path, where)
    try:
        _write_replacing(target, data)
    except OSError as err:
        named = err.filename
        temp = named is not None and Path(os.fspath(named)).name.startswith(f".{target.name}.")
        shown = os.fspath(target) if named is None or temp else os.fspath(named)
        raise WriteError(err.errno, err.strerror or str(err), shown) from err
    return target


class WriteError(OSError):
    """A file occ writes could not be written: the machine's trouble (a full disk, a
    read-only folder), not occ's; ``filename`` is the file meant."""


def _writable(path: str | os.PathLike[str], where: str | None) -> Path:
    """``path`` as a Path, refused when it is a directory or a special file."""
    target = Path(path)
    refuse_special(target, where)
    if target.is_dir():
        raise RecipeError(f"{os.fspath(target)} is a directory; give a file path", where=where)
    return target


def _write_replacing(target: Path, data: bytes) -> None:
    """``data`` into a same-folder temp file, synced, then renamed over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # owns fd from here: closed whatever fails
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are
            fh.write(data)  # ordinary files
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: reading it sets it, which other threads could see


def atomic_write_text(path: str | os.PathLike[str], text: str, *,
                      where: str | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), where=where)


def atomic_write_files(files: Mapping[Path, bytes | str], *,
                       where: str | None = None) -> list[Path]:
    """Write several files atomically, each like :func:`atomic_write_text` / ``_bytes``.

    Every target is checked before the first is written, so a FIFO at the last one
    leaves the others as they were (a report's views stay consistent).
    """
    for path in files:
        _writable(path, where)
    return [atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data,
                               where=where) for path, data in files.items()]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["WriteError", "atomic_write_bytes", "atomic_write_files", "atomic_write_text",
           "file_sha256", "refuse_special"]
