"""Class names: a model is measured only on data that numbers its classes as it was made.

The class names can differ, or their order can: ImageFolder numbers classes by sorted
folder name, so renaming one folder can shift every label while the count stays, and the
accuracy is wrong with no error anywhere else. That is refused with ``DataError`` (exit 2)
before any work. Names are compared where both sides know them: occ records them
(``DataBundle.classes``) in the checkpoints ``occ train`` writes, in the artifact's header
(``data.classes``) and in ONNX exports; files from before they were recorded, or data
without names, skip that check. (The number of classes is checked against the model's
outputs on the probe batch, ``occ.engine.probe``.)
"""

from __future__ import annotations

from typing import Any

from occ.errors import DataError


def check_class_names(recorded: list[str] | None, data: Any, *, where: str) -> None:
    """Refuse data whose class names (in index order) differ from the ``recorded`` ones.

    Raises:
        DataError: names missing, added or in another order; the message names them.
    """
    found = getattr(data, "classes", None)
    if recorded is None or found is None or list(recorded) == list(found):
        return
    raise DataError(f"the data's classes differ from the ones the model was made with: "
                    f"{describe_difference(recorded, found)}; labels would not mean the "
                    "same classes, so the accuracy would be wrong", where=where)


def checkpoint_classes(meta: dict[str, Any]) -> list[str] | None:
    """The class names an occ checkpoint records (None: not recorded or not a name list)."""
    found = meta.get("classes")
    ok = isinstance(found, list) and all(isinstance(c, str) for c in found)
    return list(found) if ok else None


def describe_difference(recorded: list[str], found: list[str]) -> str:
    """One line naming how ``found`` differs from ``recorded`` (both in index order)."""
    missing = [c for c in recorded if c not in found]
    extra = [c for c in found if c not in recorded]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"recorded but not in the data: {', '.join(missing)}")
        if extra:
            parts.append(f"in the data but not recorded: {', '.join(extra)}")
        return "; ".join(parts)
    moved = [f"{i}: {a} vs {b}" for i, (a, b) in enumerate(zip(recorded, found, strict=True))
             if a != b]
    return f"same names in another order (index: recorded vs data) {', '.join(moved)}"

