"""``occ.engine.probe``: one batch through the model judges both its input shape and its
number of outputs, with a hint in the words of the command that runs it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from occ.data.bundle import DataBundle
from occ.engine.probe import (
    EVAL_TERMS,
    ONNX_TERMS,
    RECIPE_TERMS,
    TRAIN_TERMS,
    build_for_data,
    check_fit,
    check_model_fit,
    first_conv_channels,
)
from occ.errors import DataError


def _bundle(channels: int = 1, side: int = 8, classes: int = 3, n: int = 6,
            name: str = "digits") -> DataBundle:
    """``n`` seeded samples of ``channels`` x ``side`` x ``side`` in every split."""
    gen = torch.Generator().manual_seed(0)
    split = TensorDataset(torch.randn(n, channels, side, side, generator=gen),
                          torch.arange(n) % classes)
    return DataBundle(name=name, train=split, val=split, test=split, num_classes=classes,
                      input_shape=(channels, side, side))


def _net(channels: int = 1, side: int = 8, outputs: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 2, 3, padding=1), nn.Flatten(),
                         nn.Linear(2 * side * side, outputs))


class _Counting(nn.Module):
    """Counts its forwards (the probe must run exactly one)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_one_forward_checks_the_shape_and_the_outputs_and_restores_the_mode() -> None:
    model = _Counting(_net()).train()
    check_model_fit(model, _bundle(), "cpu", where="--data", terms=EVAL_TERMS)
    assert model.calls == 1 and model.training  # one batch, the caller's mode kept
    wide = _Counting(_net(outputs=5))
    with pytest.raises(DataError, match=r"^m: the model has 5 outputs but the data \(digits\) "
                                        r"has 3 classes; .*num_classes 3 \(--kwargs "):
        check_model_fit(wide, _bundle(), "cpu", where="--data", terms=EVAL_TERMS,
                        model_where="m")
    assert wide.calls == 1  # the same forward served the shape check and the class count


def test_regression_and_non_score_outputs_are_not_counted() -> None:
    regression = _bundle()
    regression.task = "regression"
    check_model_fit(_net(outputs=5), regression, "cpu", where="--data", terms=EVAL_TERMS)
    check_fit(lambda x: torch.zeros(len(x), 5, 2), _bundle(), where="w", terms=EVAL_TERMS)
    with pytest.raises(DataError, match=r"the graph gives \(5, 2\) scores per input"):
        check_fit(lambda x: torch.zeros(len(x), 5, 2), _bundle(), where="w",
                  terms=ONNX_TERMS, scores_only=True)


@pytest.mark.parametrize(("terms", "words", "not_words"), [
    (RECIPE_TERMS, ("data.image_size or data.pad_to", "data.channels"), ("--",)),
    (TRAIN_TERMS, ("--image-size or --pad-to", "--channels"), ("data.",)),
    (EVAL_TERMS, ("--image-size S", "--channels N", "--data / --root", "--kwargs"),
     ("data.",)),
    (ONNX_TERMS, ("--image-size S", "--channels N", "--data / --root"), ("data.", "--kwargs")),
])
def test_a_shape_error_names_what_the_command_lets_its_user_set(
        terms: Any, words: tuple[str, ...], not_words: tuple[str, ...]) -> None:
    with pytest.raises(DataError) as caught:
        check_model_fit(_net(side=8), _bundle(side=6), "cpu", where="w", terms=terms)
    message = caught.value.message
    assert message.startswith(f"{terms.subject} cannot take the data's inputs of 1×6×6 "
                              "(C×H×W): RuntimeError: "), message
    hint = message.split("; ", 1)[1]  # after torch's own line
    assert all(w in hint for w in words), hint
    assert not any(w in hint for w in not_words), hint


@pytest.mark.parametrize(("terms", "data", "hint"), [
    (RECIPE_TERMS, "imagefolder", "the model takes 1-channel images: set data.channels: 1 "),
    (TRAIN_TERMS, "imagefolder", "the model takes 1-channel images: set --channels 1 "),
    (EVAL_TERMS, "imagefolder", "the model takes 1-channel images: set --channels 1 "),
    (EVAL_TERMS, "mnist5k", "the model takes 1-channel images: use 1-channel data"),
    # data.channels reads only an imagefolder: other data has its own channels
    (RECIPE_TERMS, "torchvision.CIFAR10", "the model takes 1-channel images: use 1-channel "
                                          "data, the kind the model was trained on"),
])
def test_a_channel_mismatch_says_so_and_how_to_fix_it(terms: Any, data: str,
                                                      hint: str) -> None:
    assert first_conv_channels(_net(channels=1)) == 1
    with pytest.raises(DataError, match="^w: the model cannot take the data's inputs of "
                                        "3×8×8") as caught:
        check_model_fit(_net(channels=1), _bundle(channels=3, name=data), "cpu", where="w",
                        terms=terms)
    assert hint in caught.value.message, caught.value.message


def test_an_empty_split_is_not_probed() -> None:
    empty = _bundle()
    empty.test = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    check_fit(lambda x: pytest.fail("ran on no data"), empty, where="w", terms=EVAL_TERMS)


def test_a_bug_in_the_forward_is_not_bad_input() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise KeyError("a bug, not a shape")

    with pytest.raises(KeyError):
        check_fit(broken, _bundle(), where="w", terms=EVAL_TERMS)


def test_load_into_names_the_input_channels_only_when_they_are_the_difference() -> None:
    from occ.artifact.checkpoint import Checkpoint, load_into
    from occ.errors import CheckpointError

    gray = Checkpoint(state_dict=_net(channels=1).state_dict())
    with pytest.raises(CheckpointError, match=r"\(2, 1, 3, 3\), model wants \(2, 3, 3, 3\); "
                                              r"the checkpoint's first layer takes 1-channel "
                                              r"images, the model was built for 3: fix 1$"):
        load_into(_net(channels=3), gray, where="c.pt", arch="a",
                  channels_hint=lambda n: f"fix {n}")
    with pytest.raises(CheckpointError) as caught:  # a wider first conv: not about channels
        load_into(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(),
                                nn.Linear(4 * 64, 3)), gray, where="c.pt", arch="a",
                  channels_hint=lambda n: "never")
    assert "channel" not in caught.value.message


@pytest.mark.parametrize(("terms", "fix"), [
    (TRAIN_TERMS, "(--pad-to or --image-size)"),
    (RECIPE_TERMS, "(data.pad_to or data.image_size)"),
])
def test_a_size_the_data_gave_a_builder_is_blamed_on_what_sets_the_data_size(
        terms: Any, fix: str) -> None:
    """lenet5 on 8×8 digits: ``input_hw`` came from the data, not from ``model.kwargs``,
    so the error names the setting that sizes the data (``where``) and its fix."""
    from occ.errors import ModelError

    with pytest.raises(ModelError) as caught:
        build_for_data("lenet5", {"width": 0.25}, _bundle(side=8), where="--data",
                       terms=terms)
    assert str(caught.value) == ("--data: lenet5 needs inputs of at least 16×16, got 8×8: "
                                 f"pad or resize the images to a size it takes {fix}")
    # a value the user wrote keeps its own name
    with pytest.raises(ModelError, match=r"^model\.kwargs\.input_hw: lenet5 needs inputs of "
                                         r"at least 16×16, got 8×8$"):
        build_for_data("lenet5", {"input_hw": 8}, _bundle(side=28), where="--data",
                       terms=terms)
    model, kwargs = build_for_data("lenet5", {"width": 0.25}, _bundle(side=16),
                                   where="--data", terms=terms)
    assert kwargs == {"width": 0.25, "in_channels": 1, "num_classes": 3, "input_hw": 16}
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 3)
