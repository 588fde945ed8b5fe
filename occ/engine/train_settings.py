"""The settings ``occ train`` runs with: converged defaults per zoo model and dataset, and
the checks of every option (no torch here).

``occ train --nproc N`` resolves and checks them before it starts any process;
``occ.engine.baseline`` trains with them.
"""

from __future__ import annotations

from typing import Any

from occ.errors import RecipeError

GENERIC: dict[str, Any] = {"epochs": 15, "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4}
"""What ``occ train`` uses for a model with no entry in :data:`TRAIN_DEFAULTS`."""

TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    # 98.5 % on mnist5k (issue 19: SGD, cosine, shifts, batch 64, 30 epochs); flat on val.
    "lenet5": {"epochs": 30, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4},
    # chosen on val by scripts/tune_train.py (tune_train_lenet300.json): 97.3 % test
    "lenet300": {"epochs": 60, "lr": 0.1, "batch_size": 64, "weight_decay": 2e-3},
    # mnist5k padded to 32: val 98.6-98.8 over the last 5 of 15 epochs, 98.4 % test
    "resnet20": {"epochs": 15, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4},
}
"""Per zoo model: epochs, lr, batch size and weight decay of a converged baseline."""

SHIFT_DATASETS: dict[str, int] = {"mnist5k": 2}
"""Datasets whose training batches get random shifts by default, and by how many pixels
(digits stay digits when moved two pixels; the 8x8 ``digits`` and the rotation task do
not shift by default)."""


def train_defaults(arch: str, dataset: str) -> dict[str, Any]:
    """The settings ``occ train`` uses for ``arch`` on ``dataset`` unless overridden."""
    return {**GENERIC, **TRAIN_DEFAULTS.get(arch, {}),
            "shift": SHIFT_DATASETS.get(dataset, 0)}


TRAIN_OPTIONS = {"dataset": "--data", "batch_size": "--batch-size", "root": "--root",
                 "pad_to": "--pad-to", "val_size": "--val-size", "image_size": "--image-size",
                 "channels": "--channels"}
"""``occ train``'s option for each data field it sets (errors name the option)."""


def check_train(arch: str, *, data: str = "mnist5k", epochs: int | None = None, out: str,
                lr: float | None = None, batch_size: int | None = None, seed: int = 0,
                device: str = "auto", weight_decay: float | None = None,
                shift: int | None = None, kwargs: dict[str, Any] | None = None,
                root: str | None = None, limit_train: int | None = None,
                pad_to: int | None = None, loss: str = "auto", val_size: int | None = None,
                image_size: int | None = None, channels: int | None = None,
                trust_code: bool = False) -> dict[str, Any]:
    """What ``occ.api.train`` checks before it loads anything (same arguments): every option,
    the model name, the data spec (its local folder included) and the output file.

    ``occ train --nproc N`` calls it once before starting N processes, so bad input is one
    line rather than one per process. Torch-free, but with ``trust_code`` it imports (does
    not call) a ``pkg.module:callable`` model or dataset, which may import torch.

    Returns:
        The resolved settings: ``spec`` (the ``DataSpec``), ``epochs``, ``lr``,
        ``weight_decay``, ``shift`` and ``loss``.

    Raises:
        RecipeError, DataError, ModelError: bad input.
    """
    from occ.config import from_dict
    from occ.data.names import task_of
    from occ.domains import check_device, check_positive_float, check_seed
    from occ.engine.data_options import absolute_root, check_root_used, named_by_options
    from occ.models.names import check_arch_name
    from occ.outputs import check_output_file
    from occ.recipe import DataSpec, resolve_loss
    from occ.trust import require_code

    defaults = train_defaults(arch, data)
    epochs = defaults["epochs"] if epochs is None else epochs
    lr = defaults["lr"] if lr is None else lr
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
    shift = defaults["shift"] if shift is None else shift
    if shift < 0:
        raise RecipeError(f"must be >= 0, got {shift}", where="--shift")
    if weight_decay < 0:
        raise RecipeError(f"must be >= 0, got {weight_decay}", where="--weight-decay")
    if epochs < 1:
        raise RecipeError(f"must be >= 1, got {epochs}", where="--epochs")
    check_positive_float(lr, "--lr")
    check_seed(seed, "--seed")
    check_device(device, "--device")
    if kwargs and "width" in kwargs:
        check_positive_float(kwargs["width"], "--width")
    check_arch_name(arch)
    require_code(arch, trusted=trust_code, where="MODEL")
    if trust_code:  # a builder or dataset that does not import: said before the data loads
        from occ.callables import import_callable
        from occ.trust import is_code_reference

        for ref, where in ((arch, "MODEL"), (data, "--data")):
            if is_code_reference(ref):
                import_callable(ref, where=where)
    check_output_file(out, where="--out")
    if root is not None:  # recorded in the checkpoint: absolute, so eval works from anywhere
        root = absolute_root(root)
    fields = {"dataset": data, "batch_size": batch_size, "root": root,
              "limit_train": limit_train, "pad_to": pad_to, "val_size": val_size,
              "image_size": image_size, "channels": channels}
    with named_by_options(TRAIN_OPTIONS):  # "data.channels: ..." is a recipe's name
        spec = from_dict(DataSpec, {k: v for k, v in fields.items() if v is not None},
                         where="data")
    check_root_used(spec, root is not None)
    return {"spec": spec, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
            "shift": shift, "loss": resolve_loss(loss, task_of(spec.dataset), where="--loss")}


__all__ = ["GENERIC", "SHIFT_DATASETS", "TRAIN_DEFAULTS", "TRAIN_OPTIONS", "check_train",
           "train_defaults"]
