"""An ImageFolder's files, listed and read within bounds.

torchvision's ImageFolder walks each class folder with ``os.walk(followlinks=True)`` and
opens every listed file with PIL, trusting the tree. On a hostile tree that hangs or
fails as if occ had a bug: a FIFO blocks the first read forever, two ``a/l -> ..`` links
make the walk grow exponentially, and a corrupt or bomb image raises PIL's own errors
mid-epoch. Here:

* :func:`list_samples` lists like torchvision (same samples, same order), following
  directory symlinks but refusing one that leads back to a folder already listed, and
  stopping past ``OCC_MAX_FOLDER_ENTRIES`` entries; every image file is ``stat``-ed once,
  so a FIFO, device or socket (or a symlink to one) is refused by type before any read;
  a class folder without images is named;
* :func:`load_image` is the dataset's loader: it opens without blocking, checks the type
  again, refuses more than ``OCC_MAX_IMAGE_PIXELS`` before decoding, and turns any decode
  failure into an :class:`ImageFileError` naming the file.

No torch here.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from occ.errors import DataError
from occ.limits import (
    MAX_FOLDER_ENTRIES,
    MAX_IMAGE_PIXELS,
    check_input_file,
    file_kind,
    printable_path,
)

_NAMED_MAX = 10  # empty classes named in one message


class ImageFileError(DataError):
    """An image file (or the folder listing it) that occ refuses to read.

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from one
    string (``"Caught ImageFileError in DataLoader worker process 0. Original Traceback
    ..."``); that string is cut back to the original one-line message here, so the error
    still prints as one line.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        marker = f"{__name__}.{type(self).__qualname__}: "
        if where is None and message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message, where=where)


def list_samples(directory: str, class_to_idx: dict[str, int],
                 extensions: tuple[str, ...], *, allow_empty: bool) -> list[tuple[str, int]]:
    """``(path, class index)`` of every image under ``directory/<class>/``, as torchvision's
    ``make_dataset`` lists them, within bounds.

    Raises:
        ImageFileError: A directory symlink loop, an image path that is not a regular file,
            an unlistable folder, more entries than ``OCC_MAX_FOLDER_ENTRIES``, or (unless
            ``allow_empty``) a class folder holding no images.
    """
    budget = _Budget(directory)
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for name in sorted(class_to_idx):
        class_dir = os.path.join(directory, name)
        paths = _image_paths(class_dir, extensions, budget) if os.path.isdir(class_dir) else []
        for path in paths:
            check_input_file(path, error=ImageFileError, what="image file")
        samples.extend((path, class_to_idx[name]) for path in paths)
        if not paths:
            empty.append(name)
    if empty and not allow_empty:
        named = ", ".join(printable_path(n) for n in empty[:_NAMED_MAX])
        more = f" and {len(empty) - _NAMED_MAX} more" if len(empty) > _NAMED_MAX else ""
        noun = "class folder" if len(empty) == 1 else "class folders"
        verb = "holds" if len(empty) == 1 else "hold"
        raise ImageFileError(f"{noun} {named}{more} {verb} no images (looked for "
                             f"{', '.join(extensions)}); add images or remove the folder",
                             where=printable_path(directory))
    return samples


class _Budget:
    """Counts the entries one listing has seen; refuses past ``OCC_MAX_FOLDER_ENTRIES``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.left = MAX_FOLDER_ENTRIES.value()

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ImageFileError(f"holds more files and folders than the "
                                 f"{MAX_FOLDER_ENTRIES.hint()}",
                                 where=printable_path(self.directory))


def _image_paths(class_dir: str, extensions: tuple[str, ...], budget: _Budget) -> list[str]:
    """Image paths under ``class_dir`` in torchvision's order: folders by path, then files by
    name (``sorted(os.walk(...))``), following directory symlinks once each."""
    listed: list[tuple[str, list[str]]] = []
    seen = {_identity(class_dir)}
    stack = [class_dir]
    while stack:
        folder = stack.pop()
        names: list[str] = []
        for entry in sorted(_entries(folder, budget), key=lambda e: e.name):  # same link named
            if _is_dir(entry):
                key = _identity(entry.path)
                if key in seen:  # only a symlink can lead to a folder twice
                    raise ImageFileError(
                        f"leads to {printable_path(os.path.realpath(entry.path))}, a folder "
                        "already listed (a directory symlink loop or a second link to it); "
                        "remove the link",
                        where=printable_path(entry.path))
                seen.add(key)
                stack.append(entry.path)
            elif entry.name.lower().endswith(extensions):
                names.append(entry.name)
        listed.append((folder, sorted(names)))
    listed.sort()
    return [os.path.join(folder, name) for folder, names in listed for name in names]


def _entries(folder: str, budget: _Budget) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            for entry in it:
                budget.take()
                yield entry
    except OSError as err:
        raise ImageFileError(f"cannot list folder: {err.strerror or err}",
                             where=printable_path(folder)) from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as os.walk(followlinks=True)
    except OSError:
        return False


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def load_image(path: str) -> Image.Image:
    """Read ``path`` as an RGB PIL image, as torchvision's default loader does, within bounds.

    Raises:
        ImageFileError: The path is not a regular file (checked on the open descriptor, so
            a file swapped for a FIFO after listing cannot block), has more pixels than
            ``OCC_MAX_IMAGE_PIXELS``, or is not an image PIL can decode.
    """
    where = printable_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ImageFileError(f"cannot read image file: {err.strerror or err}",
                             where=where) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageFileError(f"is {file_kind(mode)}, not a regular image file; refused "
                                 "before reading", where=where)
        try:
            return _decode(fh, where)
        except ImageFileError:
            raise
        except Exception as err:  # noqa: BLE001  (PIL's decoders raise many types on bad bytes)
            raise ImageFileError(f"not a readable image ({_reason(err)})", where=where) from err


def _decode(fh: BinaryIO, where: str) -> Image.Image:
    with warnings.catch_warnings():  # over the limit below anyway: refused, not warned about
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(fh)
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS.value():
        raise ImageFileError(f"is {width} x {height} = {width * height:,} pixels, over the "
                             f"{MAX_IMAGE_PIXELS.hint()}; refused before decoding", where=where)
    return img.convert("RGB")


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "no image format PIL knows; corrupt or not an image"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
