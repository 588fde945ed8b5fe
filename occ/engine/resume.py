"""Never lose work: a lock on the output directory and per-stage saved states.

After each stage, the model and what is needed to rebuild it are saved under
``DIR/stages/NN-<type>.occst`` in the artifact container (no pickle), with a fingerprint
of everything that determines that state: the resolved recipe up to and including the
stage, the input checkpoint's sha256, the seed, and the occ and torch versions.
``occ compress --resume`` restores every leading stage whose fingerprint matches and
refuses states made by anything else. Each stage reseeds the RNGs from (seed, index), so
a resumed run produces the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.artifact.container import Artifact, encode_artifact, read_artifact
from occ.errors import ArtifactError, OccError, RecipeError
from occ.limits import check_input_file, file_kind, printable_path
from occ.outputs import made_folders
from occ.recipe import Recipe
from occ.report.data import StageRecord
from occ.version import __version__

log = logging.getLogger("occ")
LOCK_NAME = ".occ.lock"
_PID_BYTES = 64  # a pid is at most ~20 digits: more is not a lock occ wrote
_WRITING_SECONDS = 10.0  # an empty lock this young is being written, not stale
_HELD: set[str] = set()  # the locks this process holds (OutputLock paths)


# Recipe fields that cannot change what a stage computes: its label, where it is written,
# the quality gates checked after it, and the written order (``stages`` is the run order).
_NOT_RESULT = ("name", "output", "min_accuracy", "max_mae", "guard", "order", "stages")


def fingerprints(recipe: Recipe, checkpoint_sha: str) -> list[str]:
    """One fingerprint per stage: what must match for its saved state to be reused.

    Every recipe field except those in ``_NOT_RESULT`` is covered (model, data, seed,
    device, task, loss, version, and any field added later), plus the stages up to and
    including this one, the input checkpoint's sha256 and the occ and torch versions.
    """
    settings = {k: v for k, v in recipe.to_dict().items() if k not in _NOT_RESULT}
    base = {"checkpoint": checkpoint_sha, "occ": __version__, "torch": torch.__version__,
            "recipe": settings}
    stages = [s.to_dict() for s in recipe.stages]
    return [hashlib.sha256(json.dumps({**base, "stages": stages[:i + 1]}, sort_keys=True)
                           .encode()).hexdigest() for i in range(len(stages))]


def state_path(out_dir: Path, index: int, kind: str) -> Path:
    """Where stage ``index``'s state lives."""
    return out_dir / "stages" / f"{index:02d}-{kind}.occst"


def save_state(path: Path, *, fingerprint: str, model: torch.nn.Module, header: dict[str, Any],
               record: dict[str, Any]) -> None:
    """Write a stage state atomically (artifact container, raw tensors)."""
    from occ.engine.state_manifest import record_state
    from occ.io import atomic_write_bytes

    data = encode_artifact({**header, "state": {"fingerprint": fingerprint, "record": record}},
                           model_io.state_tensors(model))
    # The manifest first: a kill between the two leaves an entry for a missing file (redone),
    # never a state file the manifest does not vouch for.
    record_state(path, fingerprint, hashlib.sha256(data).hexdigest())
    atomic_write_bytes(path, data)


@dataclass
class SavedState:
    """A stage state read back: its header, tensors and report record (a mapping; its
    fields are checked where it becomes a report row, :meth:`stage_record`), and the file
    it was read from, which errors about it name."""

    artifact: Artifact
    record: dict[str, Any]
    path: Path

    def stage_record(self, i: int, stage: Any) -> StageRecord:
        """Stage ``i``'s report row from this state, checked by type like a report.json
        row (``StageRecord.from_dict``): a file the manifest vouches for may still have
        been edited (the manifest is rewritten as easily), and its record is data.

        Raises:
            UnverifiedStateError: a field missing or of the wrong type, named with the file.
        """
        row = {**self.record, "index": i, "type": stage.type, "label": stage.label,
               "config": stage.to_dict()}  # what the run knows itself: not read from the file
        try:
            record = StageRecord.from_dict(row, where="state.record")
            if not isinstance(record.metrics.accuracy, (int, float)):  # the gates compare it
                raise OccError("must be a number, got null",
                               where="state.record.metrics.accuracy")
        except OccError as err:
            raise UnverifiedStateError(err.message, where=f"{self.path}: {err.where}") from None
        except KeyError as err:
            raise UnverifiedStateError(f"state.record: missing field {err}",
                                       where=str(self.path)) from None
        return record


from occ.engine.state_manifest import (  # noqa: E402  (torch-free home)
    StaleStateError,
    UnverifiedStateError,
)


def load_state(path: Path, fingerprint: str, *, where: str) -> SavedState | None:
    """The saved state at ``path`` if present; StaleStateError if it belongs to another run."""
    if not path.exists() and not path.is_symlink():
        return None
    from occ.engine.state_manifest import verify_state

    verify_state(path, fingerprint, where=where)
    try:
        artifact = read_artifact(path)
    except ArtifactError:
        return None  # a state cut off mid-write is simply redone
    state = artifact_header.state(artifact.header)
    if state.get("fingerprint") != fingerprint:
        raise StaleStateError(
            f"{path} was made by a different recipe, checkpoint, seed or version; "
            "remove it or use another --out", where=where)
    record = state.get("record", {})
    if not isinstance(record, dict):  # the manifest vouches for the file's bytes, not sense
        raise UnverifiedStateError(f"state.record: must be a mapping, got "
                                   f"{type(record).__name__}", where=str(path))
    return SavedState(artifact=artifact, record=record, path=path)


def restorable(path: Path, fingerprint: str, i: int, label: str,
               warnings: list[str] | None = None) -> SavedState | None:
    """``--resume``: the saved state of stage ``i`` to restore, or None to run the stage
    (``warnings``: where the warning below is also kept, the report's).

    A stage edited since its state was saved, after stages that were restored (the same
    recipe up to there), runs again with the stages after it, and says so; a first stage
    that differs means another run's folder, which stays an error (``ChangedStageError``).
    """
    from occ.engine.state_manifest import ChangedStageError

    try:
        return load_state(path, fingerprint, where="--resume")
    except ChangedStageError:
        if i == 0:
            raise
        said = (f"stages[{i}] {label} changed since {path} was saved: it and the stages "
                f"after it run again (the {i} before it are restored)")
        log.warning("%s", said)
        if warnings is not None:
            warnings.append(said)
        return None


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux's ``/proc/PID/stat``
    field 22); None where that cannot be read (another OS, or no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat_line = fh.read(4096)
        return int(stat_line[stat_line.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _identity() -> str:
    """What a lock records of its holder: the pid, and its start time where known."""
    started = _start_time(os.getpid())
    return f"{os.getpid()}" + (f" {started}" if started is not None else "")


class OutputLock:
    """An exclusive lock on an output directory (``DIR/.occ.lock`` holding the pid).

    The directory (and missing parents) is created on entry; on exit, the folders this
    lock created are removed again if nothing else was written in them, so a run that
    fails before its first output leaves no empty folder behind.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._folders = ExitStack()

    def __enter__(self) -> OutputLock:
        self._folders.enter_context(made_folders(self.path.parent))
        try:
            return self._lock()
        except BaseException:
            self._folders.close()
            raise

    def _lock(self) -> OutputLock:
        self._check_lock_file()  # a FIFO left there would hang the read, /dev/zero never end
        for _ in range(2):
            if self._create():
                _HELD.add(str(self.path))
                return self
            if self._holder_alive():
                pid = self._holder()[0]
                raise RecipeError(f"output directory {self.path.parent} is in use by "
                                  f"another occ run ({f'pid {pid}, ' if pid > 0 else ''}lock "
                                  f"{self.path}; if no occ run is using it, remove the lock)"
                                  ) from None
            self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise RecipeError(f"cannot lock output directory {self.path.parent}")

    def _create(self) -> bool:
        """Create the lock holding this process's pid; False when one exists. The pid is
        written to a private file that is then hard-linked into place, so the lock never
        exists empty (a run starting meanwhile would read no pid and take it over as
        stale). Where the file system has no hard links, the lock is created, then
        written (``_holder_alive`` counts a young empty lock as held)."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # this pid's own, from a run killed at this line
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(_identity())
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here
                pass
        finally:
            tmp.unlink(missing_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(_identity())
        return True

    def _check_lock_file(self) -> None:
        """Refuse a lock path that is not a regular file (a directory, FIFO, device, or a
        kernel pseudo-file under /proc or /sys, also through a symlink): occ reads its pid
        and would remove it as stale. A missing file or a dangling link passes."""
        try:
            check_input_file(self.path, error=RecipeError, what="lock file")
        except RecipeError as err:
            if not os.path.exists(self.path):  # gone meanwhile, or a dangling link: replaced
                return
            raise RecipeError(f"{err.message} (occ keeps the output folder's lock there: "
                              "remove it)", where=err.where) from None

    def _holder_alive(self) -> bool:
        """Whether the process the lock names still runs: its pid exists and, where the
        lock recorded it (Linux), started when it did, so a pid reused since (a container's
        low pids after a SIGKILL) does not hold the folder for good."""
        pid, started = self._holder()
        if pid <= 0:
            return self._being_written()
        if started is not None and _start_time(pid) not in (started, None):
            return False  # that pid is another process now
        if pid == os.getpid():  # held when this process took it (without /proc, the only
            return started is not None or str(self.path) in _HELD  # way to tell)
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
            return False
        except PermissionError:
            return True
        return True

    def _being_written(self) -> bool:
        """An empty lock younger than ``_WRITING_SECONDS``: another run has just created
        it and is writing its pid (without hard links, ``_create``)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_size == 0 and time.time() - st.st_mtime < _WRITING_SECONDS

    def _holder(self) -> tuple[int, int | None]:
        """(the pid the lock file holds (0: none readable), its start time where recorded).
        At most ``_PID_BYTES`` are read, from a regular file only (``O_NONBLOCK``: a FIFO
        swapped in after the check does not block the open; it is refused by its
        ``fstat``)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError:
            return 0, None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RecipeError(f"is {file_kind(st.st_mode)}, not a regular lock file "
                                  "(occ keeps the output folder's lock there: remove it)",
                                  where=printable_path(self.path))
            raw = os.read(fd, _PID_BYTES)
        except OSError:
            return 0, None
        finally:
            os.close(fd)
        try:
            pid, _, started = raw.decode("ascii").strip().partition(" ")
            return int(pid or "0"), int(started) if started else None
        except (UnicodeDecodeError, ValueError):  # not a pid occ wrote: a stale lock
            return 0, None

    def __exit__(self, *exc: object) -> None:
        _HELD.discard(str(self.path))
        self.path.unlink(missing_ok=True)
        self._folders.close()  # the folders this lock made, while still empty
