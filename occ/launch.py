"""``occ compress|train --nproc N``: rerun the command in N processes, report a failure once.

The command checks its arguments and inputs first, in this one process (``api.check_*``),
then :func:`run_ranks` runs torch's launcher (what ``torchrun --standalone`` runs) here,
in process, rather than as a ``torchrun`` child: a rank that fails would otherwise leave
its error once per rank, then torchrun's own log lines and traceback, and exit 1 whatever
the cause.

Instead each rank hands its error to the launching process (:func:`hand_off`: one small
JSON file per rank in a private folder named by ``OCC_RANK_ERRORS``) and prints nothing;
the launching process reports the first one, once, with that rank's exit code (2 for bad
input). A rank that died without a word (a signal, a crash) is named with its exit code or
signal. Torch is imported only by :func:`run_ranks`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

from occ.errors import RecipeError
from occ.io import atomic_write_text
from occ.outputs import torchrun_rank

RANK_ERRORS_ENV = "OCC_RANK_ERRORS"
"""The folder where ranks started by :func:`run_ranks` leave their errors."""

MAX_MESSAGE = 2000
"""Characters of a rank's error message that are reported."""


class Failure(TypedDict):
    """A failed run, as the CLI reports it (``--json``: ``{"error": Failure}``)."""

    message: str
    code: int
    type: str
    where: str | None


def hand_off(failure: Failure) -> bool:
    """In a rank started by :func:`run_ranks`: leave ``failure`` for the launching process
    to report, and return True (the caller prints nothing). Elsewhere: False.

    ``OCC_RANK_ERRORS`` alone is not enough: left in a shell, or copied from a rank's
    environment, it would send every error into a file no one reads. It counts only in a
    process torchrun started (``TORCHELASTIC_RUN_ID``, ``RANK`` in [0, ``WORLD_SIZE``)) and
    when it names a folder :func:`_rank_errors` made: this user's, mode 0700, its prefix."""
    folder = _private_folder(os.environ.get(RANK_ERRORS_ENV))
    rank = _launched_rank()
    if folder is None or rank is None:
        return False
    try:
        atomic_write_text(folder / f"rank{rank}.json",
                          json.dumps({**failure, "time": time.time()}))
    except (OSError, ValueError, RecipeError):
        return False  # the launching process is gone: print it here
    return True


FOLDER_PREFIX = "occ-ranks-"
"""The name :func:`_rank_errors` gives its folder starts with this."""


def _launched_rank() -> int | None:
    """This process's RANK when torchrun started it with a consistent one, else None."""
    ranked = torchrun_rank() if os.environ.get("TORCHELASTIC_RUN_ID") else None
    return None if ranked is None else ranked[0]


def _private_folder(name: str | None) -> Path | None:
    """``name`` as a Path when it is a folder like the one :func:`_rank_errors` makes (not a
    link, owned by this user, mode 0700, named with its prefix), else None."""
    if not name:
        return None
    try:
        info = os.lstat(name)
    except (OSError, ValueError):
        return None
    if (not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o700
            or info.st_uid != os.getuid() or not Path(name).name.startswith(FOLDER_PREFIX)):
        return None
    return Path(name)


def check_nproc(nproc: int) -> None:
    """Raise RecipeError at ``--nproc`` unless it is in [1, GPUs] (CPU cores without one)."""
    import torch

    limit = torch.cuda.device_count() or (os.cpu_count() or 1)
    kind = "GPUs" if torch.cuda.is_available() else "CPU cores"
    if nproc < 1 or nproc > limit:
        raise RecipeError(f"must be in [1, {limit}] ({limit} {kind} here), got {nproc}",
                          where="--nproc")


def run_ranks(nproc: int, argv: list[str]) -> Failure | None:
    """Run ``occ`` ``argv`` in ``nproc`` processes (torch's standalone launcher, in this
    process) and wait for them.

    Returns:
        None when every rank succeeded, else the failure to report: the first rank error
        handed off (:func:`hand_off`), or a line naming the rank that failed silently.

    Raises:
        RecipeError: ``nproc`` is out of range (:func:`check_nproc`).
        KeyboardInterrupt: the launch was interrupted (Ctrl-C); the ranks are stopped.
    """
    check_nproc(nproc)
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "--module", "occ", *argv])
    with _rank_errors() as folder, _quiet_launcher():
        try:
            torchrun.run(args)
        except ChildFailedError as err:
            return _first_error(folder) or _silent_failure(err, nproc)
        except SignalException as err:
            if err.sigval.name == "SIGINT":
                raise KeyboardInterrupt from None
            return {"message": f"stopped by {err.sigval.name}", "code": 128 + int(err.sigval),
                    "type": "SignalException", "where": None}
    return None


@contextmanager
def _rank_errors():
    """A private folder for the ranks' errors, named in the environment they inherit."""
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
    before = os.environ.get(RANK_ERRORS_ENV)
    os.environ[RANK_ERRORS_ENV] = folder
    try:
        yield Path(folder)
    finally:
        if before is None:
            os.environ.pop(RANK_ERRORS_ENV, None)
        else:
            os.environ[RANK_ERRORS_ENV] = before
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _quiet_launcher():
    """The launcher's own error records (one per failed rank, then a summary) stay unsaid:
    :func:`run_ranks` reports the failure itself, once."""
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_error(folder: Path) -> Failure | None:
    """The earliest error a rank handed off, or None."""
    found: list[tuple[float, Failure]] = []
    for path in folder.glob("rank*.json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and (failure := _failure(doc)) is not None:
            when = doc.get("time")
            found.append((float(when) if isinstance(when, (int, float)) else 0.0, failure))
    return min(found, key=lambda item: item[0])[1] if found else None


def _failure(doc: dict[str, Any]) -> Failure | None:
    message, code = doc.get("message"), doc.get("code")
    if not isinstance(message, str) or not isinstance(code, int) or not 1 <= code <= 255:
        return None
    kind, where = doc.get("type"), doc.get("where")
    return {"message": message.strip().splitlines()[0][:MAX_MESSAGE] if message.strip()
            else "failed", "code": code,
            "type": kind if isinstance(kind, str) else "OccError",
            "where": where if isinstance(where, str) else None}


def _silent_failure(err: Any, nproc: int) -> Failure:
    """A rank failed without handing an error off (killed, crashed, or printed its own)."""
    rank, failure = err.get_first_failure()
    code = failure.exitcode
    how = (f"was killed by {failure.signal_name()}" if code < 0
           else f"exited with code {code} (its output is above)")
    return {"message": f"process {rank} of {nproc} {how}",
            "code": code if 1 <= code <= 2 else 1, "type": "ChildFailedError", "where": None}


__all__ = ["RANK_ERRORS_ENV", "Failure", "check_nproc", "hand_off", "run_ranks"]
