"""Make the version-3 preset dictionary for artifact headers (``FLAG_DICT3``).

Usage: python scripts/make_header_dict.py [--out occ/artifact/header_dict_v3.py] [--skip NAME]

Run once; the dictionary is FROZEN from then on (artifacts written with it read only with
these exact bytes; the tests pin its SHA-256). Kept so that anyone can see what is in it
and make the next version the same way. Deflate codes text it has seen as back-references,
and text nearer the end of the dictionary costs fewer bits, so the parts go from the
rarest to the most common:

1. per recipe in ``recipes/`` (sorted by file name), the canonical JSON of its plan as a
   header stores it (no reasons) and of ``{"recipe": ...}`` (``Recipe.to_dict`` without
   ``output``; the checkpoint path relative to the repository, the tail of any absolute
   path a user's header will hold);
2. the version-3 name tables (``occ.artifact.header_v3``) of the quantized state dicts
   of the zoo models these recipes use;
3. a LeNet-5 header as the runner writes one, without recipe and plan: data and its
   preprocessing, a reshape edit (LeNet-5's own layer sizes), a quantize edit (default
   spec), an early-exit edit, every metric key (placeholder values), the model reference
   with the kwargs the data implies, the versions.

``--skip NAME`` leaves a recipe out (to measure how much a header gains from its own
recipe being in the dictionary).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "occ" / "artifact" / "header_dict_v3.py"
MODELS = ("lenet5", "lenet300", "resnet20")  # the zoo models of recipes/


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("ascii")


def recipes_part(skip: tuple[str, ...] = ()) -> bytes:
    """Each recipe's plan and recipe, as a run header stores them."""
    from occ.engine.plan import make_plan
    from occ.recipe import load_recipe

    out = []
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if path.name in skip:
            continue
        recipe = load_recipe(path, check_files=False)
        plan = {k: v for k, v in make_plan(recipe).to_dict().items() if k != "reasons"}
        doc = {k: v for k, v in recipe.to_dict().items() if k != "output"}
        checkpoint = doc["model"].get("checkpoint")
        if checkpoint and checkpoint.startswith(str(ROOT) + "/"):
            doc["model"]["checkpoint"] = checkpoint[len(str(ROOT)) + 1:]
        out.append(_dumps(plan) + _dumps({"recipe": doc}))
    return b"".join(out)


def _quantized_names(arch: str) -> list[str]:
    from occ.models import build_model
    from occ.techniques.quantize.layers import QuantSpec, freeze_, swap_layers_

    model = build_model(arch, {"in_channels": 3, "num_classes": 10}
                        if arch == "resnet20" else {}).eval()
    layers = [n for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    swap_layers_(model, {n: QuantSpec(4, 8) for n in layers})
    freeze_(model)
    return list(model.state_dict())


def names_part() -> bytes:
    """The module and leaf tables header_v3 writes for each model's quantized tensors."""
    from occ.artifact import header_v3
    from occ.coding.bitio import ByteWriter

    out = []
    for arch in MODELS:
        names = [header_v3._split(n) for n in _quantized_names(arch)]
        w = ByteWriter()
        header_v3._table([m for m, _ in names], w)
        header_v3._table([leaf for _, leaf in names], w)
        out.append(w.getvalue())
    return b"".join(out)


def skeleton_part() -> bytes:
    """A LeNet-5 run header without recipe and plan, from the code that writes them."""
    from occ.artifact.header import model_header
    from occ.models import build_model, data_kwargs
    from occ.models.edits import module_spec
    from occ.techniques.quantize.layers import QuantSpec

    layers = ("classifier.1", "classifier.3", "features.0", "features.3")
    model = dict(build_model("lenet5").named_modules())  # its own sizes: no run's in particular
    reshape = {"op": "reshape", "args": {"modules": {n: module_spec(model[n]) for n in layers}}}
    spec = QuantSpec(4, 8).to_dict()  # the defaults
    quantize = {"op": "quantize", "args": {"layers": dict.fromkeys(layers, spec)}}
    exits = {"op": "early_exit", "args": {"criterion": "confidence", "heads": [],
                                          "points": [], "thresholds": []}}
    metrics = {"accuracy": 98.5, "agreement": 99.0, "bitops": 1.0, "exits": None, "macs": 1,
               "mae": None, "nonzero_params": 1, "params": 1, "rmse": None,
               "sparse_bitops": 1.0, "sparse_macs": 1}
    data = {"dataset": "mnist5k", "task": "classification", "root": None, "preprocess": {
        "augment": [], "channel_order": "rgb", "crop": None, "mean": [0.1307], "pad_to": None,
        "resize": None, "std": [0.3081], "transform": None}}
    arch = {"arch": "lenet5", "kwargs": data_kwargs("lenet5", {}, (1, 28, 28), 10)}
    header = model_header(arch=arch, edits=[reshape, quantize, exits], input_shape=(1, 28, 28),
                          num_classes=10, extra={"data": data, "metrics": metrics})
    return _dumps(header)


def make(skip: tuple[str, ...] = ()) -> bytes:
    """The dictionary: recipes, name tables, header skeleton (at most deflate's 32 KiB)."""
    data = recipes_part(skip) + names_part() + skeleton_part()
    if len(data) > 32768:
        raise ValueError(f"dictionary of {len(data)} bytes: deflate sees only the last 32768")
    return data


def module_text(data: bytes) -> str:
    """The Python module holding ``data`` as HEADER_DICT_V3."""
    lines, chunk = [], ""
    for ch in data.decode("ascii"):  # lines of at most 92 characters as Python literals
        if len(repr(chunk + ch)) > 92:
            lines.append(repr(chunk))
            chunk = ""
        chunk += ch
    lines.append(repr(chunk))
    body = "\n".join(f"    {line}" for line in lines)
    digest = hashlib.sha256(data).hexdigest()
    return (f'"""The version-3 preset dictionary of artifact headers (container flag '
            f'``FLAG_DICT3``).\n\nMade by ``scripts/make_header_dict.py`` (what is in it, and '
            f'why in that order): every\nrecipe\'s plan and recipe, the version-3 name tables '
            f'of the zoo models\' quantized tensors,\na LeNet-5 header as the runner writes one. '
            f'FROZEN: artifacts written with ``FLAG_DICT3``\nread only with these exact bytes '
            f'({len(data):,} of them, SHA-256 {digest[:16]}..., pinned by\nthe tests). A '
            f'better dictionary needs a new flag bit, not an edit.\n"""\n\n'
            f"HEADER_DICT_V3 = (\n{body}\n).encode(\"ascii\")\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip", action="append", default=[])
    args = parser.parse_args()
    data = make(tuple(args.skip))
    args.out.write_text(module_text(data))
    print(f"{len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()} -> {args.out}")


if __name__ == "__main__":
    main()
