"""The data an exported ONNX file records in ``metadata_props``: written and read here only.

Both export formats (``onnx`` and ``onnx-qdq``) record what ``occ eval model.onnx`` needs
to measure the file the way ``occ eval model.occ`` measures the artifact:

- ``occ_data``: the artifact's data spec (``occ.recipe.DataSpec`` as JSON) with the
  resolved mean / std the model was measured with (``occ.engine.data_options.eval_data``);
  absent when the artifact was measured on data handed in from Python.
- ``occ_classes``: the class names in index order (JSON list), where the data has names
  (ImageFolder); absent: unknown, not checked.
- ``occ_code_folders``: where a ``pkg.module:callable`` dataset's code was imported from
  (the artifact's ``code_folders``; searched by ``occ eval --trust-code`` only).
- ``preprocess``: the resolved preprocessing (mean, std, sizes, channel order) for other
  runtimes to apply.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from occ.artifact import header as artifact_header
from occ.errors import CheckpointError, DataError

DATA_KEY = "occ_data"
CLASSES_KEY = "occ_classes"
PREPROCESS_KEY = "preprocess"
CODE_KEY = "occ_code_folders"


def artifact_data(header: dict[str, Any], root: str | None = None, *,
                  where: str | None = None) -> Any:
    """The artifact's recorded data (an ``occ.engine.data_options.EvalData``), with the
    preprocessing it was measured with: the same reading as ``occ eval``
    (``occ.engine.data_options.eval_data``); ``root`` (``--root``) in place of the recorded
    folder (the data moved since). ``where``: the artifact's path, which errors about its
    recorded values name.

    Raises:
        DataError: the artifact was measured on data handed in from Python (no spec).
    """
    from occ.engine.data_options import eval_data
    from occ.engine.runner import IN_MEMORY

    recorded = artifact_header.recorded_data(header)
    if recorded.get("dataset") == IN_MEMORY:
        raise DataError("this artifact was measured on data handed in from Python; occ "
                        "cannot load that data again", where=where)
    return eval_data(artifact_header.recipe_data(header), {"root": root},
                     preprocess=recorded.get("preprocess"),
                     where=f"{where}: header recipe.data" if where else None,
                     preprocess_where=f"{where}: header data.preprocess" if where else None)


def data_metadata(header: dict[str, Any], root: str | None = None, *,
                  where: str | None = None, spec: Any = None) -> dict[str, str]:
    """The ``metadata_props`` entries of the module docstring for artifact ``header``
    (``root``: where its data is now, ``--root``; ``where``: the artifact's path, for
    errors; ``spec``: its data spec when the caller resolved it already)."""
    from occ.engine.runner import IN_MEMORY

    recorded = artifact_header.recorded_data(header)
    meta: dict[str, str] = {}
    if recorded.get("dataset") != IN_MEMORY:
        if spec is None:
            spec = artifact_data(header, root, where=where).spec
        meta[DATA_KEY] = json.dumps(asdict(spec))
    classes = artifact_header.recorded_classes(header)
    if classes is not None:
        meta[CLASSES_KEY] = json.dumps(classes)
    if isinstance(recorded.get("preprocess"), dict):
        meta[PREPROCESS_KEY] = json.dumps(recorded["preprocess"], sort_keys=True)
    folders = artifact_header.code_folders(header)
    if folders:  # where a pkg.module:callable dataset came from (read with --trust-code)
        meta[CODE_KEY] = json.dumps(list(folders))
    return meta


def recorded_code(meta: dict[str, str], *, where: str) -> tuple[str, ...]:
    """The file's ``occ_code_folders``, checked (none when absent); read it only under
    ``--trust-code``."""
    from occ.callables import recorded_folders

    found = meta.get(CODE_KEY)
    if found is None:
        return ()
    return recorded_folders(_loads(found, CODE_KEY, where), where=f"{where}: {CODE_KEY}",
                            error=CheckpointError)


def _loads(text: str, key: str, where: str) -> Any:
    """Metadata ``key``'s JSON, its size, values and depth bounded before parsing."""
    from occ import safe_json
    from occ.limits import MAX_RECIPE_BYTES

    return safe_json.loads(text, max_bytes=MAX_RECIPE_BYTES, error=CheckpointError,
                           where=where, what=f"metadata {key}")


def recorded_spec(meta: dict[str, str], *, where: str) -> dict[str, Any] | None:
    """The file's ``occ_data`` as a mapping (None when the file records none)."""
    found = meta.get(DATA_KEY)
    if found is None:
        return None
    spec = _loads(found, DATA_KEY, where)  # CheckpointError when not bounded, valid JSON
    if not isinstance(spec, dict):
        raise CheckpointError(f"metadata {DATA_KEY} is not a JSON mapping", where=where)
    return spec


def recorded_classes(meta: dict[str, str], *, where: str) -> list[str] | None:
    """The file's ``occ_classes`` (None when the file records none)."""
    found = meta.get(CLASSES_KEY)
    if found is None:
        return None
    classes = _loads(found, CLASSES_KEY, where)
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"metadata {CLASSES_KEY} is not a JSON list of names",
                              where=where)
    return classes
