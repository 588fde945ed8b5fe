"""One batch through the model right after it and the data are loaded: whether they fit.

Two mismatches otherwise fail late, or not at all:

- shapes: a model built for 32×32 RGB images and data resized to 28×28 (or read as RGB
  for a one-channel model) fails deep inside the first stage or the baseline measurement,
  as a ``RuntimeError`` about matrix shapes that reads like a bug in occ;
- outputs: a model whose number of outputs is not the data's number of classes gives a
  wrong accuracy with no error anywhere else (a 3-class model on a 4-class folder scores
  25 % on the fourth class's images, then crashes in training on target 3).

:func:`check_fit` is the one place that runs that batch and judges what comes out, for
any forward: an ``nn.Module`` (:func:`check_model_fit`: compress, ablate, train, eval) or
an onnxruntime session (``occ.deploy.onnx_eval``). Either mismatch is bad input
(``DataError``, exit 2) raised before any output is written or any training starts, with
a hint in the words of the command it is raised from (:class:`InputTerms`): recipe fields
on ``compress`` / ``ablate``, options on ``train`` / ``eval``. Where the model is built for
the data (:func:`build_for_data`: compress, ablate, train), a zoo builder that refuses the
data's size (LeNet-5 on the 8×8 digits) is the same kind of mismatch, told the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from occ.data.bundle import DataBundle
from occ.data.names import IMAGEFOLDER
from occ.errors import DataError
from occ.training import rng_preserved

PROBE_BATCH = 2
"""Samples in the probe batch: two, so a model that squeezes the batch still sees one."""


@dataclass(frozen=True)
class InputTerms:
    """What one command lets its user change when the model and the data do not fit.

    Attributes:
        shape: The hint for inputs of the wrong shape: what sets the data's image size and
            channels in this command, or how to point it at other data.
        data: How to point the command at other data (``--data / --root``).
        subject: What the messages call the model (``the graph`` for an ONNX file).
        channels: The setting that reads an imagefolder with ``{n}`` channels
            (``data.channels: {n}``); None where the command has none.
        in_channels: How to build the model for ``{n}``-channel images where the command
            builds it from the user's arguments rather than from the data; None where the
            data sets it (then a checkpoint for other channels needs other data).
        num_classes: How to build the model with ``{n}`` outputs; None where it cannot be
            rebuilt (an ONNX file).
        size: What pads or resizes the data's images to the size a model needs.
    """

    shape: str
    data: str
    subject: str = "the model"
    channels: str | None = None
    in_channels: str | None = None
    num_classes: str | None = None
    size: str | None = None

    def channels_hint(self, want: int, data: DataBundle) -> str:
        """How to give a model that takes ``want``-channel images such images from ``data``."""
        if self.channels is not None and data.name == IMAGEFOLDER and want in (1, 3):
            setting = self.channels.format(n=want)
            return f"set {setting} to read the images as the model was trained on them"
        return f"use {want}-channel data, the kind the model was trained on ({self.data})"

    def checkpoint_hint(self, want: int, data: DataBundle | None) -> str:
        """How to load a checkpoint whose first layer takes ``want``-channel images into a
        model built for other channels (``occ.artifact.checkpoint.load_into``)."""
        if self.in_channels is not None or data is None:
            built = self.in_channels or self.data
            return f"build the model for {want}-channel images ({built.format(n=want)})"
        return self.channels_hint(want, data)


RECIPE_TERMS = InputTerms(
    shape="set data.image_size or data.pad_to to the image size the model was trained on "
          "and data.channels (imagefolder: 1 or 3) to its input channels, or use a model "
          "made for this data",
    data="the recipe's data", channels="data.channels: {n}",
    num_classes="model.kwargs.num_classes, if its builder takes it",
    size="data.pad_to or data.image_size")
"""``occ compress`` / ``occ ablate``: the recipe's fields (the model is built for the data)."""

TRAIN_TERMS = InputTerms(
    shape="set --image-size or --pad-to to the image size the model expects and --channels "
          "(imagefolder: 1 or 3) to its input channels, or use a model made for this data",
    data="--data / --root", channels="--channels {n}",
    num_classes="a builder that takes num_classes is given the data's",
    size="--pad-to or --image-size")
"""``occ train``: its options (a zoo model is built for the data's shape and classes)."""

EVAL_TERMS = InputTerms(
    shape="read the images at the size and channels it was trained on (--image-size S, "
          "--channels N: imagefolder 1 or 3), evaluate it on the data it was made for "
          "(--data / --root), or for a plain state dict pass the --arch and --kwargs it was "
          "built with",
    data="--data / --root", channels="--channels {n}",
    in_channels="--kwargs '{{\"in_channels\": {n}}}'",
    num_classes="--kwargs '{{\"num_classes\": {n}}}' for a zoo model or callable that takes it",
    size="--image-size")
"""``occ eval`` of a checkpoint or artifact: the model comes from the file (or --arch /
--kwargs), the data from the file's record (or --data / --root), read with the file's
preprocessing or --channels / --image-size / --mean / --std."""

API_TERMS = InputTerms(
    shape="pass data shaped as the model takes it (its image size and channels: resize or "
          "pad in your dataset's transform), or a model made for this data",
    data="train_data / val_data / test_data",
    num_classes="a model with as many outputs as the data has classes")
"""``occ.compress(model, recipe, train_data=...)``: the model and the data are the caller's."""

ONNX_TERMS = InputTerms(shape="read the images at the size and channels it takes "
                              "(--image-size S, --channels N: imagefolder 1 or 3), or pass the "
                              "--data / --root it was made for",
                        data="--data / --root", subject="the graph", channels="--channels {n}",
                        size="--image-size")
"""``occ eval`` of an ONNX file: the data and how it is read can change, not the graph."""


def input_shape_text(shape: tuple[int, ...]) -> str:
    """``3×28×28 (C×H×W)`` for an input shape ``(C, H, W)``."""
    return "×".join(str(v) for v in shape) + (" (C×H×W)" if len(shape) == 3 else "")


DATA_KWARGS: dict[str, str] = {"input_hw": "pad or resize the images to a size it takes"}
"""Builder arguments the data fills in (``occ.models.data_kwargs``) that a builder may
refuse (lenet5 on 8×8 digits), and what fixes that, before the command's setting."""


def build_for_data(arch: str, kwargs: dict[str, Any], data: DataBundle, *, where: str,
                   terms: InputTerms, allow_callables: bool = False,
                   source: str | None = None,
                   search: tuple[str, ...] = ()) -> tuple[nn.Module, dict[str, Any]]:
    """``arch`` built for ``data``, and the keyword arguments it was built with: ``kwargs``
    completed with what the data implies (``occ.models.data_kwargs``: channels, classes,
    input size).

    A builder that refuses a value the data filled in (``lenet5 needs inputs of at least
    16×16, got 8×8`` as ``model.kwargs.input_hw``) was given no such argument by the user:
    the error is about the data, so it is located at ``where`` (the setting that chose the
    data's size) and says what fixes it in the command's words (``terms.size``).

    ``search``: folders to look for a ``pkg.module:callable`` in (``occ.callables``).

    Raises:
        ModelError: the reference does not build, with those kwargs or for this data.
    """
    from occ.errors import ModelError
    from occ.models import build_model, data_kwargs

    full = data_kwargs(arch, kwargs, data.input_shape, data.num_classes)
    try:
        return build_model(arch, full, allow_callables=allow_callables, source=source,
                           search=search), full
    except ModelError as err:
        key = (err.where or "").removeprefix("model.kwargs.")
        if key not in DATA_KWARGS or key in kwargs or terms.size is None:
            raise
        raise ModelError(f"{err.message}: {DATA_KWARGS[key]} ({terms.size})",
                         where=where) from None


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first ``Conv2d`` (None: it has none)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def check_model_fit(model: nn.Module, data: DataBundle, device: torch.device | str, *,
                    where: str, terms: InputTerms, model_where: str | None = None,
                    split: str = "test") -> None:
    """:func:`check_fit` for an ``nn.Module`` already on ``device``.

    The forward runs in eval mode without gradients; the model's mode is restored after
    (which also restarts an early-exit model's exit log, so the probe leaves no trace).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            check_fit(lambda x: model(x.to(device)), data, where=where, terms=terms,
                      model_where=model_where, split=split,
                      model_channels=first_conv_channels(model))
    finally:
        model.train(was_training)


TORCH_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, IndexError)
"""What a module's forward raises on inputs of the wrong shape (anything else is a bug)."""


def check_fit(forward: Callable[[torch.Tensor], Any], data: DataBundle, *, where: str,
              terms: InputTerms, model_where: str | None = None, split: str = "test",
              model_channels: int | None = None,
              errors: tuple[type[Exception], ...] = TORCH_ERRORS,
              scores_only: bool = False) -> None:
    """Run ``forward`` once on the first :data:`PROBE_BATCH` samples of ``split`` and check
    that the model takes the data's inputs and, for classification, gives one score per
    class.

    Args:
        forward: One batch ``(B, C, H, W)`` to the model's output: a tensor or array of
            shape ``(B, K)``, or a tuple / list whose first item is one.
        data: The data the model will be measured (and trained) on.
        where: The location of a shape error (the recipe's ``data``, ``--data``, a file).
        terms: How the command lets its user fix a mismatch (the hint of each error).
        model_where: The location of an output-count error (default: ``where``).
        split: Which split to take the batch from.
        model_channels: The channels the model's first layer takes, when known: a shape
            error where they differ from the data's says so, with its own hint.
        errors: The exceptions of ``forward`` that mean "does not fit" (onnxruntime's are
            not ``RuntimeError``).
        scores_only: Refuse a classifier output that is not ``(B, K)`` too (a module may
            return other shapes that the metrics read; an ONNX file is scored on
            ``(B, K)`` only).

    Raises:
        DataError: The forward fails on the data's inputs (the message names their shape
            and what sets it), or a classifier's number of outputs is not the data's
            number of classes.
    """
    if len(data.split(split)) == 0:
        return
    # An augmented split draws random numbers: the probe must not shift what a seeded run
    # trains on after it (the generators are restored on the way out, error or not).
    with rng_preserved(None):
        x = next(iter(data.loader(split, PROBE_BATCH)))[0]  # (B, C, H, W)
        try:
            out = forward(x)
        except errors as err:
            raise DataError(_shape_message(err, tuple(x.shape[1:]), data, terms,
                                           model_channels), where=where) from err
    _check_outputs(out, data, where=model_where or where, terms=terms, scores_only=scores_only)


def _shape_message(err: Exception, shape: tuple[int, ...], data: DataBundle,
                   terms: InputTerms, model_channels: int | None) -> str:
    """Why the model cannot take inputs of ``shape``, with the hint that fits."""
    first = (str(err).strip().splitlines() or [""])[0][:240]
    text = (f"{terms.subject} cannot take the data's inputs of {input_shape_text(shape)}: "
            f"{type(err).__name__}: {first}")
    if model_channels is not None and len(shape) == 3 and model_channels != shape[0]:
        return (f"{text}; {terms.subject} takes {model_channels}-channel images: "
                f"{terms.channels_hint(model_channels, data)}")
    return f"{text}; {terms.shape}"


def _check_outputs(out: Any, data: DataBundle, *, where: str, terms: InputTerms,
                   scores_only: bool) -> None:
    """Refuse a classifier whose number of outputs is not the data's number of classes."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    shape = tuple(getattr(out, "shape", ()))
    if data.task != "classification" or (len(shape) != 2 and not scores_only):
        return
    width: Any = shape[1] if len(shape) == 2 else shape[1:]
    n = data.num_classes
    if width == n:
        return
    if terms.num_classes is None:
        raise DataError(f"{terms.subject} gives {width} scores per input but the data "
                        f"({_describe(data)}) has {n} classes; pass the {terms.data} the "
                        "model was made for", where=where)
    raise DataError(
        f"the model has {width} outputs but the data ({_describe(data)}) has {n} classes; "
        f"use the data it was trained on, or, if it is meant to have {n} outputs, build it "
        f"with num_classes {n} ({terms.num_classes.format(n=n)})", where=where)


def _describe(data: DataBundle) -> str:
    """``name: class, class, ...`` (up to six names) or the data's name."""
    name = str(getattr(data, "name", "data"))
    classes = getattr(data, "classes", None)
    if classes:
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        return f"{name}: {shown}"
    return name
