"""Tests for occ.models: the zoo (generated from list_models()), torchvision and callables."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from occ.errors import ModelError
from occ.models import ZOO_NAMES, build_model, check_arch_name, list_models
from occ.models.zoo import register_model
from occ.trust import TrustError

# Zoo models whose flatten size depends on the input side get it here; the rest pool globally.
_INPUT_KWARGS: dict[str, dict[str, int]] = {
    "lenet300": {"input_hw": 32},
    "lenet5": {"input_hw": 32},
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny(name: str, **extra: object) -> nn.Module:
    """A test-sized zoo model for 3×32×32 inputs and 7 classes."""
    kwargs = {"width": 0.25, **_INPUT_KWARGS.get(name, {}), **extra}
    return build_model(name, kwargs, in_channels=3, num_classes=7)


# ---------------------------------------------------------------------------------------------
# Contract tests, one per registered zoo model.


def test_list_models_is_the_zoo() -> None:
    assert list_models() == list(ZOO_NAMES)


def test_register_model_rejects_a_duplicate_name() -> None:
    def lenet5() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(lenet5)
    assert list_models() == list(ZOO_NAMES)


@pytest.mark.parametrize("name", list_models())
def test_zoo_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = _tiny(name)
    x = torch.randn(2, 3, 32, 32)  # (B, C, H, W)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_zoo_is_deterministic_under_seed(name: str) -> None:
    torch.manual_seed(3)
    a = _tiny(name).state_dict()
    torch.manual_seed(3)
    b = _tiny(name).state_dict()
    torch.manual_seed(4)
    c = _tiny(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", list_models())
def test_zoo_width_scales_params(name: str) -> None:
    assert _n_params(_tiny(name, width=0.25)) < _n_params(_tiny(name, width=0.5))


@pytest.mark.parametrize("name", list_models())
def test_zoo_rejects_unknown_kwarg(name: str) -> None:
    with pytest.raises(ModelError, match="'depth'") as info:
        build_model(name, {"depth": 3})
    assert info.value.where == "model.kwargs.depth"


@pytest.mark.parametrize("width", [0, -1.0, "wide", True])
def test_zoo_rejects_bad_width(width: object) -> None:
    with pytest.raises(ModelError) as info:
        build_model("resnet20", {"width": width})
    assert info.value.where == "model.kwargs.width"


# ---------------------------------------------------------------------------------------------
# Particular zoo models.


def test_lenet5_is_the_deep_compression_model() -> None:
    model = build_model("lenet5")
    assert _n_params(model) == 431_080
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert convs == ["features.0", "features.3"]
    assert linears == ["classifier.1", "classifier.3"]
    assert model.classifier[1].in_features == 800
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_lenet5_with_three_input_channels() -> None:
    model = build_model("lenet5", in_channels=3)
    assert _n_params(model) == 431_080 + 2 * 20 * 25  # two more input planes in conv1
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_lenet5_too_small_input_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="16×16") as info:
        build_model("lenet5", {"input_hw": 8})
    assert info.value.where == "model.kwargs.input_hw"


def test_lenet300_counts_and_digits_input() -> None:
    assert _n_params(build_model("lenet300")) == 266_610
    model = build_model("lenet300", {"input_hw": 8})  # scikit-learn's 8×8 digits
    assert model.fc1.in_features == 64
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_resnet20_full_width_on_cifar_input() -> None:
    model = build_model("resnet20", num_classes=10)
    assert _n_params(model) == 272_474
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    assert isinstance(model.layer2[0].shortcut[0], nn.Conv2d)  # option B: 1×1 conv + BN
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("name", "blocks"), [("resnet32", 5), ("resnet56", 9)])
def test_deeper_resnets_have_more_blocks(name: str, blocks: int) -> None:
    assert len(build_model(name, {"width": 0.25}).layer3) == blocks


@pytest.mark.parametrize("side", [28, 32])
def test_vgg_small_on_mnist_and_cifar_sizes(side: int) -> None:
    model = build_model("vgg_small", {"width": 0.25}, in_channels=1, num_classes=10)
    assert model(torch.randn(2, 1, side, side)).shape == (2, 10)


def test_data_channels_conflicting_with_kwargs() -> None:
    with pytest.raises(ModelError, match="conflicts") as info:
        build_model("resnet20", {"num_classes": 100}, num_classes=10)
    assert info.value.where == "model.kwargs.num_classes"


def test_kwargs_are_not_modified() -> None:
    kwargs = {"width": 0.25}
    build_model("resnet20", kwargs, in_channels=1, num_classes=5)
    assert kwargs == {"width": 0.25}


# ---------------------------------------------------------------------------------------------
# torchvision.


def test_torchvision_resnet18_with_ten_classes() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision.resnet18", {"num_classes": 10, "weights": None})
    assert model.fc.out_features == 10
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_torchvision_first_conv_adapts_to_grey_input() -> None:
    model = build_model("torchvision.resnet18", in_channels=1, num_classes=10)
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 64, (7, 7))
    assert (conv.stride, conv.padding, conv.bias) == ((2, 2), (3, 3), None)
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_torchvision_nested_first_conv_adapts() -> None:
    model = build_model("torchvision.mobilenet_v3_small", in_channels=1, num_classes=4)
    assert model.features[0][0].in_channels == 1
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_torchvision_refuses_pretrained_weights() -> None:
    with pytest.raises(ModelError, match="never downloaded") as info:
        build_model("torchvision.resnet18", {"weights": "IMAGENET1K_V1"})
    assert info.value.where == "model.kwargs.weights"


def test_torchvision_unknown_name_suggests() -> None:
    with pytest.raises(ModelError, match="resnet18") as info:
        build_model("torchvision.resnet81")
    assert info.value.where == "model.arch"


def test_torchvision_rejects_unknown_kwarg() -> None:
    with pytest.raises(ModelError, match="'depth'") as info:
        build_model("torchvision.resnet18", {"depth": 3})
    assert info.value.where == "model.kwargs.depth"


# ---------------------------------------------------------------------------------------------
# User callables, from a module written to tmp_path and put on sys.path by pytest.


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module into tmp_path, importable for this test only; returns its name."""
    written: list[str] = []

    def write(source: str) -> str:
        name = f"occ_test_user_{len(written)}_{tmp_path.name}".replace("-", "_")
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    monkeypatch.syspath_prepend(tmp_path)
    yield write
    for name in written:
        sys.modules.pop(name, None)


_BUILDERS = """
    from torch import nn

    def build(in_channels=1, num_classes=10, hidden=8):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

    def plain():
        return nn.Linear(4, 2)

    def not_a_model():
        return "model"

    NOT_CALLABLE = 3
"""


def test_user_callable_gets_data_shape_and_kwargs(user_module: Callable[[str], str]) -> None:
    mod = user_module(_BUILDERS)
    model = build_model(f"{mod}:build", {"hidden": 5}, in_channels=1, num_classes=3,
                        allow_callables=True)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert model[3].in_features == 5


def test_user_callable_without_data_params(user_module: Callable[[str], str]) -> None:
    mod = user_module(_BUILDERS)
    model = build_model(f"{mod}:plain", in_channels=1, num_classes=2, allow_callables=True)
    assert isinstance(model, nn.Linear)


@pytest.mark.parametrize(
    ("attr", "kwargs", "match", "where"),
    [
        ("not_a_model", None, "not a torch.nn.Module", "model.arch"),
        ("NOT_CALLABLE", None, "no callable 'NOT_CALLABLE'", "model.arch"),
        ("missing", None, "no callable 'missing'", "model.arch"),
        ("build", {"depth": 3}, "'depth'", "model.kwargs.depth"),
    ],
)
def test_user_callable_errors(
    user_module: Callable[[str], str], attr: str, kwargs: dict | None, match: str, where: str
) -> None:
    mod = user_module(_BUILDERS)
    with pytest.raises(ModelError, match=match) as info:
        build_model(f"{mod}:{attr}", kwargs, allow_callables=True)
    assert info.value.where == where


def test_user_module_that_cannot_be_imported() -> None:
    with pytest.raises(ModelError, match="cannot import 'occ_no_such_module.nets'"):
        build_model("occ_no_such_module.nets:build", allow_callables=True)


def test_untrusted_callable_is_refused_before_import(user_module: Callable[[str], str]) -> None:
    mod = user_module(_BUILDERS)
    with pytest.raises(TrustError, match="refused: would import .* pass --trust-code"):
        build_model(f"{mod}:build")  # refusing is the default
    with pytest.raises(TrustError, match="--trust-code"):
        build_model(f"{mod}:build", allow_callables=False)
    assert mod not in sys.modules  # nothing of the user's ran
    assert isinstance(build_model("lenet5", allow_callables=False), nn.Module)


# ---------------------------------------------------------------------------------------------
# Names, checked without torch.


@pytest.mark.parametrize(
    "arch", [*ZOO_NAMES, "torchvision.resnet18", "torchvision.mobilenet_v3_small", "pkg.mod:fn",
             "m:Net"]
)
def test_check_arch_name_accepts(arch: str) -> None:
    check_arch_name(arch)


def test_check_arch_name_knows_torchvisions_list_without_torch() -> None:
    with pytest.raises(ModelError, match=r"unknown torchvision classifier 'torchvision\.resnet19' "
                                         r"\(did you mean 'torchvision\.resnet18'\?\)"):
        check_arch_name("torchvision.resnet19")


@pytest.mark.parametrize(
    "arch",
    ["resnet18", "LeNet5", "", "torchvision.", "torchvision.res-net", "pkg.mod", "pkg.:fn",
     "pkg.mod:", "pkg.mod:a.b", "a:b:c", None],
)  # fmt: skip
def test_check_arch_name_rejects(arch: str) -> None:
    with pytest.raises(ModelError, match="unknown model") as info:
        check_arch_name(arch)
    assert info.value.where == "model.arch"
    assert "lenet5" in info.value.message and "pkg.module:callable" in info.value.message


def test_unknown_zoo_name_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet18'"):
        build_model("resnet18")


def test_names_module_does_not_import_torch() -> None:
    code = "import occ.models.names, occ.models, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
