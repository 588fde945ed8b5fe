"""``occ train``: a baseline checkpoint trained with ``occ.training.fit``."""

from __future__ import annotations

import time
from typing import Any

from occ import metrics as metrics_mod
from occ.artifact.checkpoint import save_checkpoint
from occ.config import to_dict
from occ.data import load_data
from occ.engine.runner import _arch_kwargs, _begin_stage
from occ.models import build_model
from occ.progress import Progress
from occ.recipe import DataSpec
from occ.training import fit, predict, resolve_device, seed_everything, task_loss


def train_baseline(arch: str, kwargs: dict[str, Any], spec: DataSpec, *, epochs: int, lr: float,
                   out: str, seed: int, device: str, progress: Progress,
                   loss: str = "auto", trust_code: bool = False) -> dict[str, Any]:
    """Train ``arch`` on ``spec``'s data (``loss``: ``occ.training.task_loss``) and save an
    occ checkpoint at ``out``."""
    seed_everything(seed)
    dev = resolve_device(device)
    data = load_data(spec, seed=seed, trust_code=trust_code)
    kwargs = _arch_kwargs(kwargs, data, arch)
    model = build_model(arch, kwargs, allow_callables=trust_code)
    t0 = time.perf_counter()
    _begin_stage(progress, "train", data, dev)
    losses = fit(model, data.loader("train", spec.batch_size, shuffle=True, seed=seed),
                 epochs=epochs, lr=lr, device=dev, loss_fn=task_loss(loss), progress=progress,
                 description="train")
    outputs, targets = predict(model, data.loader("test", spec.batch_size), dev)
    m = metrics_mod.measure(model, outputs, targets, input_shape=data.input_shape, device=dev)
    result = {"arch": arch, "kwargs": kwargs, "data": spec.dataset, "epochs": epochs,
              "loss": loss,
              "accuracy": m.accuracy, "final_loss": losses[-1], "params": m.params,
              **({"mae": m.mae, "rmse": m.rmse} if m.mae is not None else {}),
              "macs": m.macs, "seconds": time.perf_counter() - t0, "checkpoint": out}
    recorded = to_dict(spec)
    for key in ("mean", "std"):  # the resolved values: eval reuses what training saw
        if recorded.get(key) is None and data.preprocess:
            recorded[key] = list(data.preprocess[key])
    save_checkpoint(out, model, arch=arch, kwargs=kwargs, metrics=result, data=recorded)
    return result
