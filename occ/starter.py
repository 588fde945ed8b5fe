"""``occ init`` (a commented starter recipe) and ``occ recipes`` (the shipped examples).

The example recipes ship inside the package (``occ/recipes/*.yaml``, package data), so
``pip install occ`` users have them; the repository's ``recipes/`` holds the same files
for the README's commands (a test checks the two copies are identical). No torch here.
"""

from __future__ import annotations

from importlib import resources

from occ.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from occ.errors import RecipeError

_STARTER = """\
# occ recipe written by `occ init`. Check it with `occ validate {file}`, run it with
# `occ compress {file}`. Relative paths resolve against this file's folder.
version: 1
name: {name}
seed: 0
model:
  arch: {model}  # zoo name, torchvision.<fn>, or pkg.module:callable (needs --trust-code)
  # checkpoint: baseline.pt  # your trained weights: a state dict (module. prefixes are fine)
  #                          # or `occ train` output; required by `occ compress`
{kwargs}data:
  dataset: {data}  # mnist5k | digits | imagefolder (root/train, root/test [, root/val])
{data_body}  batch_size: 64
  # val_size: 100  # held out of train/ for calibration; default min(500, train / 5)
  # calib_size: 256  # quantizers calibrate on this many val (or calib/) images
stages:  # any order: occ runs them in the built-in one (`occ order --explain`)
  - {{type: prune, method: magnitude, sparsity: 0.5, epochs: 1}}
  - {{type: quantize, weight_bits: 8, act_bits: 8, mode: qat, epochs: 1}}
  - {{type: entropy_code}}
output: runs/{name}
"""

_IMAGE_DATA = """\
  root: data  # a folder with train/<class>/*.png and test/<class>/*.png
  # The preprocessing your model was trained with. occ warns when the baseline measures
  # far below its recorded accuracy (usually a mean / std mismatch).
  image_size: 32  # square resize; or resize: 256 with crop: 224 (torchvision's ImageNet)
  mean: [{mean}]  # ImageNet's, imagefolder's default
  std: [{std}]
  # channel_order: rgb  # or bgr
  # augment: [hflip, crop]  # train-time only; also vflip, jitter
"""

_EMBEDDED_DATA = """\
  # mean: [0.1307]  # default: the dataset's own statistics
  # std: [0.3081]
"""


def starter_recipe(model: str = "lenet5", data: str = "mnist5k", *, name: str | None = None,
                   file: str = "recipe.yaml") -> str:
    """A commented starter recipe for ``model`` on ``data`` (YAML text that validates when
    the data is available: embedded sets always, an ImageFolder once ``data/`` exists)."""
    from occ.data.names import DATASETS
    from occ.errors import ModelError
    from occ.models.names import check_arch_name

    try:
        check_arch_name(model)
    except ModelError as err:
        raise RecipeError(err.message, where="--model") from None
    if data not in DATASETS:
        raise RecipeError(f"unknown dataset {data!r}; allowed: {', '.join(DATASETS)}",
                          where="--data")
    image = data in ("imagefolder", "torchvision.ImageFolder")
    body = (_IMAGE_DATA.format(mean=", ".join(map(str, IMAGENET_MEAN)),
                               std=", ".join(map(str, IMAGENET_STD)))
            if image else _EMBEDDED_DATA if data in ("mnist5k", "digits")
            else "  root: data  # the dataset's files (never downloaded)\n")
    if ":" in model:  # a user callable gets its arguments as written, none from the data
        kwargs = "  # kwargs: {num_classes: 10}  # your builder's arguments, passed as written\n"
    elif model.startswith("torchvision."):
        kwargs = "  # kwargs: {}  # builder arguments; num_classes comes from the data\n"
    else:
        kwargs = "  # kwargs: {width: 0.5}  # builder arguments; num_classes comes from the data\n"
    if data == "digits" and model == "lenet5":  # 8x8 images: it refused them at compress
        body = "  pad_to: 16  # digits are 8x8; lenet5 needs at least 16x16\n" + body
    stem = name or model.replace("torchvision.", "").replace(":", "-").replace(".", "-")
    return _STARTER.format(name=f"{stem}-compressed", model=model, data=data, file=file,
                           kwargs=kwargs, data_body=body)


def list_recipes() -> list[dict[str, str]]:
    """The shipped example recipes: ``[{"name", "summary"}]`` (summary: the first sentence
    of the opening comment, which may run over several lines)."""
    out = []
    for entry in sorted(resources.files("occ.recipes").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out.append({"name": entry.name[: -len(".yaml")],
                        "summary": _first_sentence(entry.read_text(encoding="utf-8"))})
    return out


def _first_sentence(text: str) -> str:
    """The first sentence of ``text``'s opening ``#`` comment lines, joined: up to the first
    full stop followed by a space, or all of it."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
    joined = " ".join(words)
    end = joined.find(". ")
    return joined if end < 0 else joined[:end + 1]


def recipe_text(name: str) -> str:
    """The text of the shipped recipe ``name`` (with or without ``.yaml``)."""
    import difflib

    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    names = [r["name"] for r in list_recipes()]
    if stem not in names:
        close = difflib.get_close_matches(stem, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"no shipped recipe {name!r}{hint}; available: {', '.join(names)}",
                          where="occ recipes")
    return resources.files("occ.recipes").joinpath(f"{stem}.yaml").read_text(encoding="utf-8")


def printed_recipe(name: str) -> str:
    """``occ recipes NAME``: the shipped recipe made to run from the folder it is printed
    into. In the source tree its paths lead from ``recipes/`` to ``../runs/``; printed, they
    are ``runs/`` beside the file, and a first comment says how to make the baseline it
    reads (``occ train`` with the recipe's model and data), or to pass ``--checkpoint``."""
    import yaml

    text = recipe_text(name).replace("../runs/", "runs/")
    doc = yaml.safe_load(text)  # occ's own file
    model, data = doc.get("model", {}), doc.get("data", {})
    flags = "".join(f" --{flag} {data[key]}" for key, flag in (
        ("pad_to", "pad-to"), ("image_size", "image-size"), ("channels", "channels"))
        if key in data)
    if "width" in model.get("kwargs", {}):
        flags += f" --width {model['kwargs']['width']}"
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    head = (f"# Printed by `occ recipes {stem}`: paths are relative to this file's folder.\n"
            "# Make the baseline it reads first (or pass --checkpoint to occ compress):\n"
            f"#   occ train {model.get('arch')} --data {data.get('dataset')}{flags} "
            f"--out {model.get('checkpoint')}\n"
            "# (the comments below may give this recipe's own epochs and lr)\n")
    return head + text
