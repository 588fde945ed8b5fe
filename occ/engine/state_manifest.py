"""The manifest of stage states a run wrote: resume reuses only files it lists.

``--resume`` rebuilds models from ``DIR/stages/*.occst``. A file found there is not proof
that this run wrote it: it may be left by another recipe, or edited since. Each time a run
saves a state it records the file's sha256 and fingerprint in ``manifest.json`` beside
it; :func:`verify_state` refuses any state file that is not a regular file recorded there
with the same digest and fingerprint, before a byte of it is parsed.

That detects states from other runs and accidental edits, not a deliberate plant: the
manifest holds no secret, so whoever can write the folder can rewrite it as well. What a
planted state can do is bounded elsewhere: code it names is imported only with
``--trust-code`` (``occ.trust``), and its report record is checked by type before it
becomes a row of the report (``occ.engine.resume.SavedState.stage_record``).

No torch here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from occ.errors import RecipeError
from occ.io import atomic_write_text, file_sha256
from occ.limits import MAX_ARTIFACT_BYTES, check_input_file
from occ.outputs import STATE_MANIFEST as MANIFEST

_MAX_MANIFEST = 1 << 20
log = logging.getLogger("occ")


class StaleStateError(RecipeError):
    """A saved state on disk was made by another recipe, checkpoint, seed or version."""


class UnverifiedStateError(StaleStateError):
    """A stage state on disk that this run did not write (or that changed since)."""


class ChangedStageError(UnverifiedStateError):
    """A stage state occ wrote (its digest is the manifest's) for another fingerprint: the
    recipe, checkpoint, seed or version differs up to that stage. ``--resume`` runs a
    changed stage again when the stages before it were restored (``occ.engine.runner``)."""


def _read(folder: Path) -> tuple[dict[str, Any], str | None]:
    """(the states the manifest lists, why it could not be read: None when it was, or
    when there is none)."""
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return {}, None
    try:
        if not path.is_file():
            return {}, "not a regular file"
        if path.stat().st_size > _MAX_MANIFEST:
            return {}, f"over {_MAX_MANIFEST:,} bytes"
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        return {}, f"unreadable ({type(err).__name__})"
    states = doc.get("states") if isinstance(doc, dict) else None
    return (states, None) if isinstance(states, dict) else ({}, "not a manifest occ wrote")


def record_state(path: Path, fingerprint: str, sha256: str) -> None:
    """Record the state about to be written at ``path`` (digest + fingerprint). A
    manifest that cannot be read is replaced, and the states it listed are named as lost
    to ``--resume`` (a warning)."""
    states, problem = _read(path.parent)
    if problem is not None:
        log.warning("%s is %s: it is replaced by one that lists only %s, so --resume will "
                    "not restore the states it listed", path.parent / MANIFEST, problem,
                    path.name)
    states[path.name] = {"sha256": sha256, "fingerprint": fingerprint}
    atomic_write_text(path.parent / MANIFEST,
                      json.dumps({"states": states}, indent=1, sort_keys=True))


def verify_state(path: Path, fingerprint: str, *, where: str) -> None:
    """Refuse ``path`` unless the manifest lists it with its current digest and ``fingerprint``.

    Raises:
        UnverifiedStateError: not a regular file, not listed, or its digest or fingerprint
            differs from what the run that wrote it recorded.
    """
    check_input_file(path, limit=MAX_ARTIFACT_BYTES, error=UnverifiedStateError,
                     what="stage state")
    states, problem = _read(path.parent)
    entry = states.get(path.name)
    hint = "remove it or use another --out"
    if not isinstance(entry, dict):
        why = (f"{path.parent / MANIFEST} is {problem}, so it is not trusted" if problem else
               f"{path} is not in {path.parent / MANIFEST}: occ did not write it, so it is "
               "not trusted")
        raise UnverifiedStateError(f"{why}; {hint}", where=where)
    if entry.get("sha256") != file_sha256(path):
        raise UnverifiedStateError(f"{path} changed after occ wrote it (sha256 differs from "
                                   f"{path.parent / MANIFEST}); {hint}", where=where)
    if entry.get("fingerprint") != fingerprint:
        raise ChangedStageError(f"{path} was made by a different recipe, checkpoint, seed "
                                f"or version; {hint}", where=where)


__all__ = ["MANIFEST", "ChangedStageError", "StaleStateError", "UnverifiedStateError",
           "record_state", "verify_state"]

