"""``occ train``: a baseline checkpoint trained with ``occ.training.fit``.

Per-model defaults (``occ.engine.train_settings``) bring each zoo model to convergence
on the embedded digits: SGD (momentum 0.9, Nesterov), weight decay 5e-4, cosine to zero,
batch 64, light random shifts of the digits (``occ.training.random_shift``), and enough
epochs that the val curve has flattened. The checkpoint is the last epoch of that fixed
schedule: nothing is selected, and the test split is read once, for the reported figure.
The val accuracy of every epoch is recorded (``val_curve``) with the slope of the last
five epochs, so a report shows whether training had flattened.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from occ import distributed
from occ import metrics as metrics_mod
from occ.artifact.checkpoint import save_checkpoint
from occ.callables import imported_folders
from occ.config import to_dict
from occ.data import load_data
from occ.devices import resolve_device
from occ.engine.data_options import named_by_options
from occ.engine.probe import TRAIN_TERMS, build_for_data, check_model_fit
from occ.engine.runner import _begin_stage
from occ.engine.train_settings import TRAIN_OPTIONS
from occ.progress import Progress
from occ.recipe import DataSpec
from occ.training import fit, predict, random_shift, seed_everything, task_loss

CURVE_TAIL = 5  # epochs whose val-accuracy slope says whether training had flattened


class _CurveProgress:
    """Forwards to the caller's progress and records the val accuracy of every epoch."""

    def __init__(self, inner: Progress, val_accuracy) -> None:
        self.inner, self.val_accuracy = inner, val_accuracy
        self.curve: list[float] = []

    def track(self, items, *, total, description):
        return self.inner.track(items, total=total, description=description)

    def epoch_end(self, *, model, **kwargs) -> None:
        acc = self.val_accuracy(model)
        if acc is not None:
            self.curve.append(round(float(acc), 3))
        hook = getattr(self.inner, "epoch_end", None)
        if hook is not None:
            hook(model=model, **kwargs)


def curve_summary(curve: list[float], tail: int = CURVE_TAIL) -> dict[str, Any]:
    """Val accuracy of the last ``tail`` epochs, their least-squares slope (pt / epoch)."""
    last = curve[-tail:]
    slope = (float(np.polyfit(np.arange(len(last)), last, 1)[0]) if len(last) >= 2 else None)
    return {"val_last": last, "val_slope_pt_per_epoch": None if slope is None else
            round(slope, 4), "val_best": max(curve) if curve else None}


def train_baseline(arch: str, kwargs: dict[str, Any], spec: DataSpec, *, epochs: int, lr: float,
                   out: str, seed: int, device: str, progress: Progress,
                   loss: str = "auto", trust_code: bool = False,
                   weight_decay: float = 5e-4, shift: int = 0) -> dict[str, Any]:
    """Train ``arch`` on ``spec``'s data (``loss``: ``occ.training.task_loss``) and save an
    occ checkpoint at ``out``.

    ``shift``: random shifts of up to this many pixels on every training batch (0: none).
    """
    seed_everything(seed)
    dev = resolve_device(device)
    with named_by_options(TRAIN_OPTIONS):  # "data.pad_to: ..." is a recipe's name
        data = load_data(spec, seed=seed, trust_code=trust_code)
    sized_by = next((k for k in ("image_size", "pad_to") if getattr(spec, k) is not None),
                    "dataset")  # the option a model's size refusal is about
    model, kwargs = build_for_data(arch, kwargs, data, where=TRAIN_OPTIONS[sized_by],
                                   terms=TRAIN_TERMS, allow_callables=trust_code)
    check_model_fit(model.to(dev), data, dev, where="--data", terms=TRAIN_TERMS,
                    model_where="MODEL", split="train")
    t0 = time.perf_counter()
    _begin_stage(progress, "train", data, dev)
    recorder = _CurveProgress(progress, _val_accuracy(data, dev, spec.batch_size))
    losses = fit(model, data.loader("train", spec.batch_size, shuffle=True, seed=seed),
                 epochs=epochs, lr=lr, device=dev, loss_fn=task_loss(loss), progress=recorder,
                 description="train", weight_decay=weight_decay,
                 augment=random_shift(shift) if shift else None)
    outputs, targets = predict(model, data.loader("test", spec.batch_size), dev)
    m = metrics_mod.measure(model, outputs, targets, input_shape=data.input_shape, device=dev)
    result = {"arch": arch, "kwargs": kwargs, "data": spec.dataset, "epochs": epochs,
              "loss": loss, "lr": lr, "batch_size": spec.batch_size,
              "weight_decay": weight_decay, "shift": shift, "seed": seed,
              "accuracy": m.accuracy, "final_loss": losses[-1], "params": m.params,
              **({"mae": m.mae, "rmse": m.rmse} if m.mae is not None else {}),
              "macs": m.macs, "seconds": time.perf_counter() - t0, "checkpoint": out,
              "loss_curve": [round(v, 5) for v in losses], "val_curve": recorder.curve,
              **curve_summary(recorder.curve),
              "selection": {"checkpoint": "last epoch of the fixed schedule (none selected)",
                            "curve": "val", "accuracy": "test, read once"}}
    recorded = to_dict(spec)
    for key in ("mean", "std"):  # the resolved values: eval reuses what training saw
        if recorded.get(key) is None and data.preprocess:
            recorded[key] = list(data.preprocess[key])
    if distributed.is_main():  # under torchrun the ranks hold one model: rank 0 writes it
        save_checkpoint(out, model, arch=arch, kwargs=kwargs, metrics=result, data=recorded,
                        classes=data.classes, code_folders=imported_folders(
                            [arch, spec.dataset, spec.transform or ""]))
    return result


def _val_accuracy(data, device, batch_size: int):
    """Val accuracy of a classifier (None for regression or an empty val split)."""
    if data.task != "classification" or len(data.val) == 0:
        return lambda model: None

    def measure(model) -> float | None:
        outputs, targets = predict(model, data.loader("val", max(batch_size, 256)), device)
        return metrics_mod.accuracy(outputs, targets) if outputs.dim() == 2 else None

    return measure
