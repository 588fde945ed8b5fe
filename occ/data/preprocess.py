"""Preprocessing as data: what a recipe's ``data:`` declares about pixels, and the transforms.

A model is only as accurate as the preprocessing it is fed: a network trained with
ImageNet normalisation and measured with mean = std = 0.5 looks broken, and a quantizer
calibrated on it learns the wrong ranges. So the recipe declares the preprocessing
(``mean``, ``std``, ``image_size`` / ``resize`` + ``crop``, ``channel_order``,
``augment``), the artifact records the resolved values (header ``data.preprocess``),
``occ eval`` reuses them and ``occ export`` writes them into the ONNX metadata.

Defaults, by dataset: the embedded digits and the torchvision sets normalise with their
own published statistics; ``imagefolder`` with the ImageNet statistics
(:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), the convention of torchvision's models and
reference scripts, which is what a user's own pipeline most likely used.

The names and :class:`Preprocess` are torch-free (``occ validate`` checks them); the
transforms are built by :func:`build_transform`, which imports torchvision when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from occ.errors import DataError

IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
"""ImageFolder's default normalisation (torchvision's models and reference scripts)."""
IMAGENET_GRAY_MEAN: tuple[float, ...] = (0.449,)
IMAGENET_GRAY_STD: tuple[float, ...] = (0.226,)
"""ImageFolder's default with ``channels: 1``: the means of the RGB values above."""

AUGMENTATIONS: dict[str, str] = {
    "hflip": "random horizontal flip (p = 0.5)",
    "vflip": "random vertical flip (p = 0.5)",
    "crop": "random crop of the final size after 4-pixel zero padding (CIFAR style); with "
            "resize + crop: a random crop where evaluation takes the centre",
    "jitter": "colour jitter (brightness, contrast, saturation 0.2)",
}
"""Train-time augmentations ``data.augment`` may list; evaluation never augments."""

CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")

IMAGE_CHANNELS: tuple[int, ...] = (1, 3)
"""The channels an image can have before the data says which (grayscale, RGB)."""


def normalisation_problem(key: str, values: Sequence[float] | None,
                          channels: int | None = None) -> str | None:
    """What is wrong with ``mean`` or ``std`` (``key``) ``values``, or None: the one check
    every place that takes them calls (``data.mean`` / ``data.std`` at validate and at
    load, ``occ eval --mean`` / ``--std``).

    ``values`` lists one number per channel, or one for all; ``channels`` is the images'
    count where known (else 1 or 3 are allowed). Every value is finite, and a std > 0.
    """
    if values is None:
        return None
    shown = [float(v) for v in values]
    allowed = IMAGE_CHANNELS if channels is None else tuple(sorted({1, channels}))
    if len(shown) not in allowed:
        if allowed == (1,):
            return f"must list 1 value for 1-channel images, got {shown}"
        return (f"must list {' or '.join(map(str, allowed))} values (one per channel, or "
                f"one for all), got {shown}")
    if not all(math.isfinite(v) for v in shown):
        return f"must be finite numbers, got {shown}"
    if key == "std" and not all(v > 0 for v in shown):
        return f"must be > 0, got {shown}"
    return None


@dataclass(frozen=True)
class Preprocess:
    """The resolved preprocessing of one dataset, as recorded in an artifact.

    Attributes:
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel std divided by.
        resize: Square side images are resized to first (``image_size``), or, with
            ``crop``, the shorter side (torchvision's ``Resize(int)``); ``None``: as stored.
        crop: Square centre crop after ``resize`` (random at train time with ``crop`` in
            ``augment``); ``None``: no crop.
        pad_to: Square side the image is zero-padded to, centred; ``None``: no padding.
        channel_order: ``rgb`` or ``bgr`` (channels reversed before normalising, so
            ``mean`` / ``std`` are given in the model's channel order).
        augment: Train-time augmentations (names of :data:`AUGMENTATIONS`).
        transform: A ``pkg.module:callable`` train-time transform (needs ``--trust-code``).
        channels: 1: images are converted to grayscale first (imagefolder's
            ``data.channels: 1``); ``None``: the channels the dataset gives.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    crop: int | None = None
    pad_to: int | None = None
    channel_order: str = "rgb"
    augment: tuple[str, ...] = field(default_factory=tuple)
    transform: str | None = None
    channels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (lists for tuples) for the artifact header and ONNX metadata."""
        d = asdict(self)
        d["mean"], d["std"], d["augment"] = list(self.mean), list(self.std), list(self.augment)
        return d

    def describe(self) -> str:
        """A short human description: ``mean (0.485, ...) / std (0.229, ...)``."""
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return f"mean ({mean}), std ({std})"


def resolve(spec: Any, *, channels: int, mean: tuple[float, ...],
            std: tuple[float, ...], resize: int | None = None) -> Preprocess:
    """The preprocessing ``spec`` (a ``DataSpec``) asks for, defaults filled in.

    Args:
        spec: The data spec; its ``mean`` / ``std`` / ``resize`` / ``crop`` /
            ``channel_order`` / ``augment`` / ``transform`` are optional attributes.
        channels: Image channels after conversion (a one-value mean is repeated to it).
        mean: The dataset's default mean.
        std: The dataset's default std.
        resize: The dataset's default square size (``imagefolder``: 32), or ``None``.

    Raises:
        DataError: a mean / std that :func:`normalisation_problem` refuses, an unknown
            augmentation or channel order (``where`` names the ``data.*`` field).
    """

    def per_channel(values: Any, default: tuple[float, ...], key: str) -> tuple[float, ...]:
        values = tuple(float(v) for v in (default if values is None else values))
        problem = normalisation_problem(key, values, channels)
        if problem is not None:
            raise DataError(problem, where=f"data.{key}")
        return values * channels if len(values) == 1 else values

    m = per_channel(getattr(spec, "mean", None), mean, "mean")
    s = per_channel(getattr(spec, "std", None), std, "std")
    augment = tuple(getattr(spec, "augment", None) or ())
    for name in augment:
        if name not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {name!r}; allowed: {', '.join(AUGMENTATIONS)}",
                            where="data.augment")
    order = getattr(spec, "channel_order", "rgb") or "rgb"
    if order not in CHANNEL_ORDERS:
        raise DataError(f"must be one of {', '.join(CHANNEL_ORDERS)}, got {order!r}",
                        where="data.channel_order")
    size = getattr(spec, "image_size", None) or getattr(spec, "resize", None) or resize
    return Preprocess(mean=m, std=s, resize=size, crop=getattr(spec, "crop", None),
                      pad_to=getattr(spec, "pad_to", None), channel_order=order,
                      augment=augment, transform=getattr(spec, "transform", None),
                      channels=getattr(spec, "channels", None))


def output_shape(pre: Preprocess, stored: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image after ``pre``, given its stored ``(C, H, W)``."""
    channels, height, width = stored
    if pre.crop is not None:
        height = width = pre.crop
    elif pre.resize is not None:
        height = width = pre.resize
    left, top, right, bottom = center_padding(height, width, pre.pad_to)
    return channels, height + top + bottom, width + left + right


def build_transform(pre: Preprocess, stored: tuple[int, int, int], *, train: bool,
                    user_transform: Callable | None = None) -> Callable:
    """The torchvision transform (PIL image -> ``(C, H, W)`` tensor) that applies ``pre``.

    Evaluation: resize, centre crop, pad, to tensor, normalise, channel order. Training
    adds the augmentations and ``user_transform`` (applied to the PIL image first).
    """
    from torchvision import transforms as T

    steps: list[Callable] = []
    if train and user_transform is not None:
        steps.append(user_transform)
    if pre.channels == 1:  # a one-channel model: L images, not RGB ones
        steps.append(T.Grayscale(num_output_channels=1))
    _, height, width = stored
    if pre.resize is not None:
        # With a crop, Resize(int) keeps the aspect (shorter side), as torchvision's recipes.
        steps.append(T.Resize(pre.resize if pre.crop else (pre.resize, pre.resize)))
        height = width = pre.resize
    if pre.crop is not None:
        random_crop = train and "crop" in pre.augment and pre.resize is not None
        steps.append(T.RandomCrop(pre.crop) if random_crop else T.CenterCrop(pre.crop))
        height = width = pre.crop
    if pre.pad_to is not None:
        left, top, right, bottom = center_padding(height, width, pre.pad_to)
        steps.append(T.Pad((left, top, right, bottom), fill=0))
        height, width = height + top + bottom, width + left + right
    if train:
        steps += _augmentations(pre, height, width)
    steps.append(T.ToTensor())
    if pre.channel_order == "bgr":  # before Normalize: mean / std are in the model's order
        steps.append(_reverse_channels)
    steps.append(T.Normalize(pre.mean, pre.std))
    return T.Compose(steps)


def _augmentations(pre: Preprocess, height: int, width: int) -> list[Callable]:
    from torchvision import transforms as T

    out: list[Callable] = []
    if "crop" in pre.augment and not (pre.crop is not None and pre.resize is not None):
        out.append(T.RandomCrop((height, width), padding=4))
    if "hflip" in pre.augment:
        out.append(T.RandomHorizontalFlip())
    if "vflip" in pre.augment:
        out.append(T.RandomVerticalFlip())
    if "jitter" in pre.augment:
        out.append(T.ColorJitter(0.2, 0.2, 0.2))
    return out


def _reverse_channels(x: Any) -> Any:
    """``(C, H, W)`` RGB -> BGR (module-level so worker processes can unpickle it)."""
    return x.flip(0)


def center_padding(height: int, width: int, pad_to: int | None) -> tuple[int, int, int, int]:
    """Return ``(left, top, right, bottom)`` padding that centres an image in ``pad_to``.

    Args:
        height: Image height before padding.
        width: Image width before padding.
        pad_to: Target square side, or ``None`` for no padding.

    Raises:
        DataError: If ``pad_to`` is smaller than the image (``where="data.pad_to"``).
    """
    if pad_to is None:
        return (0, 0, 0, 0)
    if pad_to < max(height, width):
        raise DataError(
            f"{pad_to} is smaller than the {height}x{width} images; padding cannot crop",
            where="data.pad_to",
        )
    # An odd remainder goes to the right / bottom, as torchvision's CenterCrop does.
    left, top = (pad_to - width) // 2, (pad_to - height) // 2
    return (left, top, pad_to - width - left, pad_to - height - top)
