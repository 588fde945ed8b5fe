"""Models into ``.occ`` artifacts: the state tensors and the bytes.

The header's fields are ``occ.artifact.header``'s; the streams are the model's
``state_dict``. Reading a model back is ``occ.engine.load`` (it needs every technique's
edit ops).
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


def codec_policy(encoding: dict[str, Any]) -> CodecPolicy:
    """The codec choice for an artifact from a run's ``encoding`` settings."""
    from occ.artifact.codecs import policy_from_encoding

    return policy_from_encoding(encoding) or encoding.get("codec", "raw")


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


