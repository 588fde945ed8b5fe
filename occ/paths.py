"""Recipe-relative paths: a recipe's files resolve against the recipe's own folder.

``model.checkpoint``, ``data.root`` and ``output`` written as relative paths mean "next to
this recipe", whatever the working directory, so ``occ compress path/to/recipe.yaml``
works from anywhere. They become absolute before validation, so the artifact records an
absolute data root and ``occ eval`` finds the data from any folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# (section, key) of every path a recipe holds; None = top level.
RECIPE_PATHS: tuple[tuple[str | None, str], ...] = (
    ("model", "checkpoint"), ("data", "root"), (None, "output"),
)


def resolve_recipe_paths(data: Any, base: str | os.PathLike[str]) -> Any:
    """A copy of raw recipe ``data`` whose relative paths are joined to ``base``.

    ``~`` is expanded; absolute paths and non-strings are left alone (validation reports
    wrong types). Anything that is not a mapping is returned as is.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for section, key in RECIPE_PATHS:
        holder = out if section is None else out.get(section)
        if not isinstance(holder, dict) or not isinstance(holder.get(key), str):
            continue
        if section is not None:
            holder = out[section] = dict(holder)
        holder[key] = resolve_path(holder[key], base)
    return out


def resolve_path(path: str, base: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, joined to ``base`` when relative, normalised."""
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else Path(base).resolve() / p)
