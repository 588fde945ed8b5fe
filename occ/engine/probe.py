"""One forward pass on one real batch, right after the model and the data are loaded.

A model built for 32×32 RGB images and data resized to 28×28 (or read as RGB for a
one-channel model) otherwise fails deep inside the first stage or the baseline
measurement, as a ``RuntimeError`` about matrix shapes that reads like a bug in occ. The
probe turns it into bad input (exit 2) naming the shape the data gives and the fields that
set it, before any output is written or any training starts.
"""

from __future__ import annotations

import torch
from torch import nn

from occ.data.bundle import DataBundle
from occ.errors import DataError
from occ.training import rng_preserved

RECIPE_HINT = ("set data.image_size (size) or data.channels (imagefolder: 1 or 3) to what the "
               "model was trained on, or use a model whose input channels match the data")
"""What to change, in a recipe's terms (``occ train`` passes its own flags)."""

PROBE_BATCH = 2
"""Samples in the probe batch: two, so a model that squeezes the batch still sees one."""


def input_shape_text(shape: tuple[int, ...]) -> str:
    """``3×28×28 (C×H×W)`` for an input shape ``(C, H, W)``."""
    return "×".join(str(v) for v in shape) + (" (C×H×W)" if len(shape) == 3 else "")


@torch.no_grad()
def probe_forward(model: nn.Module, data: DataBundle, device: torch.device | str, *,
                  where: str, split: str = "test", hint: str = RECIPE_HINT) -> None:
    """Run ``model`` once on the first ``PROBE_BATCH`` samples of ``split``, leaving the
    random generators as they were (``occ.training.rng_preserved``).

    Args:
        model: the model to check; left in eval mode.
        data: the data it will be trained and measured on.
        device: where to run the batch.
        where: the location prefix of the error (the recipe, or ``--data``).
        split: which split to take the batch from.
        hint: what the user can change, appended to the message.

    Raises:
        DataError: the forward fails on the data's inputs; the message names their shape
            and the fields (``data.image_size``, ``data.channels``) that set it.
    """
    dataset = data.split(split)
    if len(dataset) == 0:
        return
    model.eval()
    # An augmented split draws random numbers: the probe must not shift what a seeded
    # run trains on after it (the generators are restored on the way out, error or not).
    with rng_preserved(device):
        x = next(iter(data.loader(split, PROBE_BATCH)))[0]
        try:
            model(x.to(device))
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            first = (str(err).strip().splitlines() or [""])[0][:240]
            shape = tuple(x.shape[1:])
            raise DataError(
                f"the model cannot take the data's inputs of {input_shape_text(shape)}: "
                f"{type(err).__name__}: {first}; {hint}", where=where) from err
