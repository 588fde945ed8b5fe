"""``occ export``: the float ONNX graph (``occ.deploy.onnx``) or the integer QDQ graph
(``occ.deploy.int8``), chosen by format."""

from __future__ import annotations

import os
from typing import Any

from occ.deploy.int8 import export_int8
from occ.deploy.onnx import check_options, export_float
from occ.errors import RecipeError


def export_artifact(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                    fmt: str = "onnx", batch_size: int | None = None, opset: int | None = None,
                    exporter: str = "torchscript", check: bool = True,
                    trust_code: bool = False, int8: bool = False,
                    int8_options: dict[str, Any] | None = None,
                    root: str | None = None) -> dict[str, Any]:
    """Export the model in artifact ``path`` to ``out`` (default: ``path`` with ``.onnx``).

    ``fmt="onnx-qdq"`` (or ``int8=True``): the integer QDQ graph, checked on the test split
    (``occ.deploy.int8.export_int8``, keyword ``int8_options``; default ``out``:
    ``.int8.onnx``).

    Args:
        batch_size: a static batch size; None: a dynamic batch axis.
        opset: ONNX opset (default 17 for torchscript, 18 for dynamo).
        check: run the file in onnxruntime (when installed) before writing it.
        root: the data's folder, recorded in the file (and read by the int8 check) in
            place of the artifact's, when the data moved since (``--root``).

    Raises:
        RecipeError: an unsupported format, exporter, opset or batch size, or a bad ``out``.
        ArtifactError: the artifact is unreadable, does not rebuild, or does not export.
        StageError: the exported graph computes something else than occ's model.
    """
    if fmt == "onnx-qdq" or int8:
        check_options("onnx", exporter, opset, batch_size)
        if batch_size is not None or opset is not None or exporter != "torchscript":
            raise RecipeError("the int8 export has a dynamic batch, opset 17 and the "
                              "torchscript exporter", where="--format onnx-qdq")
        return export_int8(path, out, trust_code=trust_code, root=root,
                           **(int8_options or {}))
    return export_float(path, out, fmt=fmt, batch_size=batch_size, opset=opset,
                        exporter=exporter, check=check, trust_code=trust_code, root=root)
