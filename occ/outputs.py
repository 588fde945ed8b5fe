"""Output paths checked before a long run starts, so a bad ``--out`` fails in a second.

A run that trains for an hour and then cannot write ``model.occ`` (because ``--out`` lies
under a regular file, ``model.occ`` is a directory, or the directory is read-only) is a
lost hour. :func:`check_output_dir` and :func:`check_output_file` find that out first:
they create the missing directories and a probe file for real (``os.access`` says yes to
root on ``/proc``, a read-only mount or a full quota), then remove again everything they
created, so a run that fails before writing leaves nothing behind.

No torch here.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from occ.errors import RecipeError
from occ.io import refuse_special
from occ.limits import file_kind

# What ``occ compress`` writes in its output directory (files) and the folder of states.
RUN_FILES = ("model.occ", "report.json", "report.md", "report.html", "recipe.resolved.yaml")
RUN_DIRS = ("stages",)
# What ``occ ablate`` writes there (per seed too: ``DIR/seed<N>/``), and its states' folder.
ABLATE_FILES = ("ablation.json", "ablation.md", "ablation.png")
ABLATE_STATES = "states"
ABLATE_DIRS = (ABLATE_STATES,)
STATE_MANIFEST = "manifest.json"
"""The file occ writes in each folder of states (``occ.engine.state_manifest``)."""


def _nearest_existing(path: Path, where: str) -> Path:
    """The closest existing ancestor of ``path`` (itself included); every part is a dir."""
    probe = path
    while True:
        try:
            if probe.exists() or probe.is_symlink():
                break
        except (OSError, ValueError) as err:
            raise RecipeError(f"unusable path {str(path)!r}: {err}", where=where) from None
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def _check_text(path: str | os.PathLike[str], where: str) -> Path:
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise RecipeError(f"must be a non-empty path without NUL bytes, got {text!r}",
                          where=where)
    return Path(text)


def check_output_dir(path: str | os.PathLike[str], *, where: str = "--out",
                     files: Iterable[str] = RUN_FILES, dirs: Iterable[str] = RUN_DIRS,
                     requested: Path | None = None) -> Path:
    """Check that ``path`` can be (or is) a writable directory for a run's outputs.

    ``requested``: the path the user gave, when ``path`` is its folder (an output file's);
    an error names it, so the user sees their own path.

    Raises:
        RecipeError: a part of the path is a file, the nearest existing directory is not
            writable, or one of ``files`` inside it is a directory (``dirs``: a file).
    """
    out = _check_text(path, where)
    base = _nearest_existing(out, where)
    _refuse_file_on_the_way(requested or out, base, where)
    if not os.access(base, os.W_OK | os.X_OK):
        raise RecipeError(f"{base} is not writable", where=where)
    _probe_write(out, where)
    if base == out:
        for name in files:
            if (out / name).is_dir():
                raise RecipeError(f"{out / name} is a directory; occ writes a file there",
                                  where=where)
            refuse_special(out / name, where)
        for name in dirs:
            _check_state_folder(out / name, where)
    return out


def _check_state_folder(folder: Path, where: str) -> None:
    """``folder`` is missing, or a directory whose manifest (``STATE_MANIFEST``) occ can
    replace: a FIFO there made every state's save fail, after the baseline."""
    if not os.path.lexists(folder):
        return
    try:
        mode = folder.stat().st_mode
    except OSError as err:  # a dangling link, a loop: the folder cannot be made there
        raise RecipeError(f"{folder} is unusable ({err.strerror or err}); occ keeps a folder "
                          "there", where=where) from None
    if not stat.S_ISDIR(mode):
        raise RecipeError(f"{folder} is {file_kind(mode)}; occ keeps a folder there",
                          where=where)
    manifest = folder / STATE_MANIFEST
    if manifest.is_dir():
        raise RecipeError(f"{manifest} is a directory; occ writes a file there", where=where)
    refuse_special(manifest, where)


def _refuse_file_on_the_way(requested: Path, base: Path, where: str) -> None:
    """``base``, the nearest existing part of ``requested``, must be a directory:
    ``/etc/passwd/x: /etc/passwd is a file, not a directory, so x cannot be created
    there``."""
    try:
        mode = base.stat().st_mode
    except OSError:  # a dangling link: the probe write says what is wrong with it
        return
    if stat.S_ISDIR(mode):
        return
    kind = file_kind(mode)
    if base == requested:
        raise RecipeError(f"{base} is {kind}, not a directory", where=where)
    rest = requested.relative_to(base)
    raise RecipeError(f"{requested}: {base} is {kind}, not a directory, so {rest} cannot be "
                      "created there", where=where)


def torchrun_rank() -> tuple[int, int] | None:
    """(``RANK``, ``WORLD_SIZE``) as torchrun sets them, from the environment alone (no
    torch): both integers, ``0 <= RANK < WORLD_SIZE``; None otherwise. An inconsistent pair
    is no rank here; ``occ.distributed.setup`` refuses it before joining."""
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, size) if 0 <= rank < size else None


def other_rank() -> bool:
    """Whether this process is a torchrun rank other than 0 (``torchrun_rank``, in a world
    of more than one). A stray ``RANK`` without a world (SLURM, MPI) is not a rank."""
    ranked = torchrun_rank()
    return ranked is not None and ranked[1] > 1 and ranked[0] != 0


def _probe_write(out: Path, where: str) -> None:
    """Create ``out`` (if missing) and a file in it, then remove what was created.

    Under torchrun only rank 0 writes, so only rank 0 probes: ranks probing the same new
    folder at once would remove it under each other."""
    if other_rank():
        return
    try:
        with made_folders(out):
            fd, probe = tempfile.mkstemp(prefix=".occ-probe-", dir=out)
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise RecipeError(f"cannot write in {out}: {err.strerror or err}", where=where) from None


@contextmanager
def made_folders(folder: Path) -> Iterator[Path]:
    """Within: ``folder`` exists (created with its missing parents); on exit the folders
    created here are removed again, deepest first, while they are empty.

    So a run that fails before its first output leaves no empty folder behind, and one
    that wrote something keeps its folder. The one owner of that clean-up: the output
    probe and ``occ.engine.resume.OutputLock`` both use it.

    Raises:
        OSError: ``folder`` cannot be created (what was created of it is removed).
    """
    created = [p for p in (folder, *folder.parents) if not (p.exists() or p.is_symlink())]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    finally:
        for made in created:  # deepest first; stops at the first one in use
            try:
                made.rmdir()
            except OSError:
                break


EXPORTS = ("model.onnx", "model.int8.onnx")
"""What ``occ export`` writes beside ``model.occ`` by default."""


def stale_exports(out_dir: Path, same: bool) -> list[str]:
    """Warnings for exports of an earlier artifact left in a run's folder (``EXPORTS``):
    a new ``model.occ`` does not replace them, and they no longer describe it. None when
    the folder's ``model.occ`` already holds exactly the new bytes (``same``: ``holds``)
    and the export was made after it (a rerun that made the same artifact: its exports
    still describe it)."""
    try:
        since = (out_dir / "model.occ").stat().st_mtime if same else None
    except OSError:
        since = None
    stale = []
    for name in EXPORTS:
        try:
            made = (out_dir / name).stat().st_mtime
        except OSError:
            continue  # no such export
        if since is None or made < since:
            stale.append(f"{out_dir / name} is an export of an earlier model.occ in this "
                         "folder, not of the one just written: run occ export again (or "
                         "remove it)")
    return stale


def holds(path: Path, data: bytes) -> bool:
    """Whether regular file ``path`` already holds exactly ``data`` (read only when its size
    is ``data``'s): a rerun that made the same artifact leaves the file, and its time, as
    they were, so exports made after it still count as its own."""
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def check_output_file(path: str | os.PathLike[str], *, where: str = "--out") -> Path:
    """Check that file ``path`` can be written (its folder can be made; it is not a dir)."""
    out = _check_text(path, where)
    if out.is_dir():
        raise RecipeError(f"is a directory; give a file name ({out})", where=where)
    refuse_special(out, where)
    check_output_dir(out.parent if str(out.parent) else Path("."), where=where, files=(),
                     dirs=(), requested=out)
    if out.exists() and not os.access(out, os.W_OK):
        raise RecipeError(f"{out} is not writable", where=where)
    return out


__all__ = ["ABLATE_DIRS", "ABLATE_FILES", "ABLATE_STATES", "EXPORTS", "RUN_DIRS", "RUN_FILES",
           "STATE_MANIFEST", "check_output_dir", "check_output_file", "holds", "made_folders",
           "other_rank", "stale_exports", "torchrun_rank"]
