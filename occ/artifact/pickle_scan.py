"""Look inside a checkpoint without running it: its archive table and its pickle's imports.

``torch.load(weights_only=True)`` refuses a pickle that imports anything outside torch's
allow-list, but its message changes between torch versions; occ reports such a file as
"refused: would run code" by reading the pickle's opcodes itself (``pickletools`` only
parses, it never imports or calls). :func:`check_archive` refuses a zip checkpoint whose
table claims more bytes than the file holds, before torch allocates for it.

No torch here.
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from typing import Any

from occ.errors import CheckpointError

_MAX_PICKLE = 64 << 20  # bytes of pickle scanned at most
_MAX_ENTRIES = 100_000
_MAX_PICKLES = 5  # the legacy format's pickles before its raw storage bytes
_SLACK = 1 << 20
# What torch's own checkpoints import; anything else means code would run.
_DATA_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                 "builtins.bytearray", "builtins.slice", "builtins.complex", "_codecs.encode")


def check_archive(path: str | os.PathLike[str], size: int) -> None:
    """Refuse a zip checkpoint whose entries claim more than the file's ``size`` bytes."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"not a readable PyTorch checkpoint (bad zip: {err})",
                              where=str(path)) from None
    if len(infos) > _MAX_ENTRIES:
        raise CheckpointError(f"archive has {len(infos):,} entries (at most {_MAX_ENTRIES:,})",
                              where=str(path))
    claimed = sum(i.file_size for i in infos)
    if claimed > size + _SLACK or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise CheckpointError(f"archive claims {claimed:,} bytes of content in a "
                              f"{size:,}-byte file (or compressed entries); not a checkpoint "
                              "torch wrote", where=str(path))


def _pickle_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return b""
                with zf.open(name) as fh:
                    return fh.read(_MAX_PICKLE)
        with open(path, "rb") as fh:
            return fh.read(_MAX_PICKLE)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return b""


def pickle_imports(path: str | os.PathLike[str]) -> list[str]:
    """``module.name`` of every global the checkpoint's pickles would import.

    A zip checkpoint holds one pickle (``data.pkl``); the legacy format (``torch.save(...,
    _use_new_zipfile_serialization=False)``) is five back to back (magic number, protocol,
    system info, the object, its storage keys) before the raw storage bytes, so the object
    is the fourth: every pickle up to ``_MAX_PICKLES`` is read, until one does not parse.
    """
    found: list[str] = []
    stream = io.BytesIO(_pickle_bytes(path))
    end = len(stream.getbuffer())
    for _ in range(_MAX_PICKLES):
        if stream.tell() >= end:
            break
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):  # stops after STOP, at the next
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001  (garbage: keep what was found before it)
            break
    return found


def code_imports(path: str | os.PathLike[str]) -> list[str]:
    """The imports of the checkpoint's pickle that are not plain tensor data."""
    return [g for g in pickle_imports(path) if not g.startswith(_DATA_GLOBALS)]


def describe(names: list[Any]) -> str:
    """``'os.system'`` or ``'os.system' and 2 more`` for a message."""
    first = repr(names[0])
    return first if len(names) == 1 else f"{first} and {len(names) - 1} more"


__all__ = ["check_archive", "code_imports", "describe", "pickle_imports"]
