"""Class bookkeeping: a model is measured only on data whose classes it was made for.

Two mismatches give a wrong accuracy with no error anywhere else:

- the model's number of outputs differs from the data's number of classes (a 3-class
  model on a 4-class folder scores 25 % on the fourth class's images and then crashes in
  training on target 3);
- the class names differ, or their order does: ImageFolder numbers classes by sorted
  folder name, so renaming one folder can shift every label while the count stays.

Both are refused with ``DataError`` (exit 2) before any work. Names are compared where
both sides know them: occ records them (``DataBundle.classes``) in the checkpoints
``occ train`` writes, in the artifact's header (``data.classes``) and in ONNX exports;
files from before they were recorded, or data without names, skip that check.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from occ.errors import DataError


def output_width(model: nn.Module, data: Any) -> int | None:
    """The model's number of outputs on one test sample of ``data`` (None: no test sample,
    not a (1, K) output, or the sample does not run through the model)."""
    test = data.split("test")
    if len(test) == 0:
        return None
    x = test[0][0].unsqueeze(0)  # (1, C, H, W)
    param = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(param.device) if param is not None else x)
    except Exception:  # noqa: BLE001  (an input that does not fit is reported where the
        return None    # data first runs through the model; this check is about classes)
    finally:
        model.train(was_training)  # also restarts an early-exit model's exit log
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    return int(out.shape[1])


def check_outputs(model: nn.Module, data: Any, *, where: str, fix: str) -> None:
    """Refuse a classifier whose number of outputs is not the data's number of classes.

    Args:
        model: The model about to be measured or compressed.
        data: Its ``DataBundle``.
        where: The file or field the error names.
        fix: How the user sets ``num_classes`` here (``--kwargs '{...}'``, ``model.kwargs``).

    Raises:
        DataError: the counts differ.
    """
    if data.task != "classification":
        return
    width = output_width(model, data)
    if width is None or width == data.num_classes:
        return
    raise DataError(
        f"the model has {width} outputs but the data ({_describe(data)}) has "
        f"{data.num_classes} classes; use the data it was trained on, or, if it "
        f"is meant to have {data.num_classes} outputs, build it with num_classes "
        f"{data.num_classes} ({fix})", where=where)


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


def _describe(data: Any) -> str:
    name = str(getattr(data, "name", "data"))
    classes = getattr(data, "classes", None)
    if classes:
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        return f"{name}: {shown}"
    return name
