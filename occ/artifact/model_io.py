"""Models into ``.occ`` artifacts: the header's layout, the state tensors, the bytes.

An artifact's header says how to rebuild the model without the recipe::

    {"occ": {"version": ...}, "model": {"arch", "kwargs", "input_shape", "num_classes"},
     "edits": [...], "recipe": {...}, "plan": {...}, "metrics": {...}, "data": {...}}

and its streams are the model's ``state_dict``. Reading a model back is
``occ.engine.load`` (it needs every technique's edit ops).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from occ.artifact.container import (
    CodecPolicy,
    encode_artifact,
    write_artifact,
)
from occ.version import __version__


def codec_policy(encoding: dict[str, Any]) -> CodecPolicy:
    """The codec choice for an artifact from a run's ``encoding`` settings."""
    from occ.artifact.codecs import policy_from_encoding

    return policy_from_encoding(encoding) or encoding.get("codec", "raw")


def model_header(*, arch: dict[str, Any], edits: list[dict[str, Any]],
                 input_shape: tuple[int, ...], num_classes: int,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header fields that rebuild a model, plus any ``extra`` (recipe, metrics ...)."""
    return {
        "occ": {"version": __version__, "torch": torch.__version__.split("+")[0]},
        "model": {**arch, "input_shape": list(input_shape), "num_classes": num_classes},
        "edits": edits, **(extra or {}),
    }


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an artifact stores: the model's state dict, on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def artifact_bytes(model: nn.Module, header: dict[str, Any], encoding: dict[str, Any]) -> bytes:
    """The bytes of the artifact ``model`` would be written as (size accounting)."""
    return encode_artifact(header, state_tensors(model), codec_policy(encoding))


def save(path: str | os.PathLike[str], model: nn.Module, header: dict[str, Any],
         encoding: dict[str, Any]) -> int:
    """Write ``model`` as an artifact atomically; returns the bytes written."""
    return write_artifact(path, header, state_tensors(model), codec_policy(encoding))


