"""The JSON part of an artifact's header: its fields are written and read here only.

::

    {"occ": {"version", "torch"},
     "model": {"arch", "kwargs", "input_shape", "num_classes"},   # what rebuilds the model
     "edits": [{"op", "args"}, ...],                               # replayed in order
     "recipe": {...}, "plan": {...}, "metrics": {...},             # how it was made
     "data": {"dataset", "task", "root", "preprocess", "classes"}, # what it was measured on
     "code_folders": ["/abs/folder", ...],                         # where user code was found
     "encoding": {...}, "state": {...}}                            # stage states (--resume)

The container (``occ.artifact.container``) adds ``streams``, the table of the tensors, and
stores the whole as JSON or as ``occ.artifact.header_v2``'s binary table. Readers here
check the types a hostile file could get wrong and raise ``ArtifactError``; optional
fields read as empty.

``code_folders`` is written only when the model or data came from a user's
``pkg.module:callable``: the folders their modules were imported from
(``occ.callables.imported_folders``), so that with ``--trust-code`` the artifact rebuilds
and evaluates from any working directory. It is only a place to look, read only under
``--trust-code``; artifacts without it read as before.
"""

from __future__ import annotations

from typing import Any

from occ.callables import recorded_folders
from occ.errors import ArtifactError
from occ.version import __version__


def model_header(*, arch: dict[str, Any], edits: list[dict[str, Any]],
                 input_shape: tuple[int, ...], num_classes: int,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header fields that rebuild a model, plus any ``extra`` (recipe, metrics ...)."""
    import torch

    return {
        "occ": {"version": __version__, "torch": torch.__version__.split("+")[0]},
        "model": {**arch, "input_shape": list(input_shape), "num_classes": num_classes},
        "edits": edits, **(extra or {}),
    }


def run_header(*, arch: dict[str, Any], edits: list[dict[str, Any]],
               input_shape: tuple[int, ...], num_classes: int, recipe: dict[str, Any],
               plan: dict[str, Any], data: dict[str, Any],
               metrics: dict[str, Any] | None = None,
               code_folders: list[str] | None = None) -> dict[str, Any]:
    """The header of a compression run's artifact: the model, how it was made (recipe
    without its run-specific ``output``, the plan without the edges' reasons, which
    ``occ order --explain`` and the run's report give) and the data it was measured on,
    with its metrics to 6 significant digits (the report holds them in full), and the
    folders the user's code came from (``code_folders``; left out when none)."""
    extra: dict[str, Any] = {"recipe": {k: v for k, v in recipe.items() if k != "output"},
                             "plan": {k: v for k, v in plan.items() if k != "reasons"},
                             "data": data}
    if metrics is not None:
        extra["metrics"] = _rounded(metrics)
    if code_folders:
        extra["code_folders"] = list(code_folders)
    return model_header(arch=arch, edits=edits, input_shape=input_shape,
                        num_classes=num_classes, extra=extra)


def model_spec(header: dict[str, Any]) -> dict[str, Any]:
    """``model``: the architecture reference (``arch`` a string) and its fields."""
    spec = header.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise ArtifactError("header has no model reference")
    return spec


def model_kwargs(header: dict[str, Any]) -> dict[str, Any]:
    """``model.kwargs`` (a mapping)."""
    kwargs = model_spec(header).get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ArtifactError("header model.kwargs is not a mapping")
    return kwargs


def edits(header: dict[str, Any]) -> list[Any]:
    """``edits``: the structural edits to replay, in order."""
    found = header.get("edits", [])
    if not isinstance(found, list):
        raise ArtifactError("header edits is not a list")
    return found


def arch_summary(header: dict[str, Any]) -> tuple[str | None, int]:
    """(the model's ``arch`` or None, the number of edits) without raising (``inspect``)."""
    spec = header.get("model")
    arch = spec.get("arch") if isinstance(spec, dict) else None
    found = header.get("edits")
    return (arch if isinstance(arch, str) else None,
            len(found) if isinstance(found, list) else 0)


def recipe(header: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe the artifact was made with, if recorded."""
    found = header.get("recipe")
    return found if isinstance(found, dict) else None


def recipe_data(header: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe's ``data`` section, if recorded."""
    found = (recipe(header) or {}).get("data")
    return found if isinstance(found, dict) else None


def recorded_data(header: dict[str, Any]) -> dict[str, Any]:
    """``data``: what the artifact was measured on (dataset, task, root, preprocess)."""
    found = header.get("data")
    return found if isinstance(found, dict) else {}


def recorded_classes(header: dict[str, Any]) -> list[str] | None:
    """``data.classes``: the class names in index order (ImageFolder's ``class_to_idx``);
    None when not recorded (an artifact from before they were, or data without names)."""
    found = recorded_data(header).get("classes")
    if found is None:
        return None
    if not (isinstance(found, list) and all(isinstance(c, str) for c in found)):
        raise ArtifactError("header data.classes is not a list of names")
    return found


def code_folders(header: dict[str, Any]) -> tuple[str, ...]:
    """``code_folders``: where the user's model and data code was imported from (none when
    not recorded). Callers read it only under ``--trust-code``."""
    return recorded_folders(header.get("code_folders"), where="header code_folders",
                            error=ArtifactError)


def encoding(header: dict[str, Any]) -> dict[str, Any]:
    """``encoding``: the run's codec settings (stage states; raw when absent)."""
    found = header.get("encoding")
    return dict(found) if isinstance(found, dict) else {"codec": "raw"}


def state(header: dict[str, Any]) -> dict[str, Any]:
    """``state``: a saved stage state's fingerprint and report record."""
    found = header.get("state", {})
    return found if isinstance(found, dict) else {}


def _rounded(value: Any) -> Any:
    """``value`` with every float at 6 significant digits (JSON floats print 17)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
