"""Models out of ``.occ`` artifacts: rebuild the architecture, replay edits, load tensors.

``load`` builds the header's ``arch`` (zoo and torchvision names only, unless
``trust_code``: a ``pkg.module:callable`` reference would import and run that module,
looked for also in the folders the header records, ``code_search``),
replays the edits (an allow-list of occ's own ops, registered by the techniques' edit
modules, which is why rebuilding lives in the engine, above ``occ.techniques``) and
loads the tensors strictly. The writing side is ``occ.artifact.model_io``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from occ.artifact import header as artifact_header
from occ.artifact.container import Artifact, read_artifact
from occ.errors import ArtifactError, ModelError
from occ.models import build_model
from occ.models.edits import apply_edits
from occ.techniques.registry import load_edit_ops
from occ.trust import TrustError

Template = tuple[str | None, nn.Module]
"""``(arch reference, model)``: rebuild that reference by copying the model (model-in API);
``(None, model)``: rebuild whatever the artifact names by copying the model
(``occ.load(path, model=...)``)."""


def _build(artifact: Artifact, spec: dict[str, Any], *, trust_code: bool,
           meta_only: bool = False, template: Template | None = None,
           source: str | None = None) -> nn.Module:
    kwargs = artifact_header.model_kwargs(artifact.header)
    try:
        if template is not None and template[0] in (None, spec["arch"]):
            model = copy.deepcopy(template[1])  # the user's own object: no import, no call
        else:
            model = build_model(spec["arch"], kwargs, allow_callables=trust_code,
                                source=source, search=code_search(artifact.header, trust_code))
    except ModelError as err:
        raise ArtifactError(f"cannot rebuild model: {err.message}") from None
    edits = artifact_header.edits(artifact.header)
    load_edit_ops()
    return apply_edits(model, edits, meta_only=meta_only)


def code_search(header: dict[str, Any], trust_code: bool) -> tuple[str, ...]:
    """The folders the artifact recorded its user code came from: where, with
    ``trust_code`` only, a ``pkg.module:callable`` model or dataset is also looked for
    (``occ.callables``). Without it, none: the header is not even read for them."""
    return artifact_header.code_folders(header) if trust_code else ()


def _check_fit(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    if set(own) != set(tensors):
        missing = sorted(set(own) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(own))[:3]
        raise ArtifactError(f"tensors do not fit the model (missing {missing}, unexpected {extra})")
    for k, v in own.items():
        if v.shape != tensors[k].shape or v.dtype != tensors[k].dtype:
            raise ArtifactError(f"tensor {k}: {tuple(tensors[k].shape)} {tensors[k].dtype} "
                                f"does not fit {tuple(v.shape)} {v.dtype}")


def _check_size(shadow: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a model far larger than the tensors stored for it (a hostile header)."""
    wanted = sum(t.numel() for t in shadow.state_dict().values())
    stored = sum(t.numel() for t in tensors.values())
    if wanted > 4 * stored + (1 << 20):
        raise ArtifactError(f"header describes a model of {wanted:,} values but the file "
                            f"stores {stored:,}")


def rebuild(artifact: Artifact, *, trust_code: bool = False,
            template: Template | None = None,
            source: str | None = None) -> nn.Module:
    """The model an artifact describes, with its tensors loaded, in eval mode.

    The architecture is first built on the ``meta`` device (no memory) and checked
    against the stored tensors, so a header asking for a gigantic model is refused
    before anything is allocated.
    """
    spec = artifact_header.model_spec(artifact.header)
    try:
        with torch.device("meta"):
            shadow = _build(artifact, spec, trust_code=trust_code, meta_only=True,
                            template=template, source=source)
    except (ArtifactError, TrustError):
        raise
    except NotImplementedError:  # an op without meta support: the real build checks
        shadow = None
    except Exception as err:  # noqa: BLE001  (hostile kwargs: sizes that overflow, ...)
        raise ArtifactError(f"cannot rebuild model: {str(err)[:200]}") from None
    if shadow is not None:
        _check_size(shadow, artifact.tensors)
    model = _build(artifact, spec, trust_code=trust_code, template=template, source=source)
    _check_fit(model, artifact.tensors)
    model.load_state_dict(artifact.tensors, strict=True)
    return model.eval()


def load(path: str | os.PathLike[str], *, trust_code: bool = False,
         template: Template | None = None) -> nn.Module:
    """Load the model stored in a ``.occ`` artifact (``occ.load``).

    Args:
        path: the artifact.
        trust_code: allow a ``pkg.module:callable`` architecture reference to be imported
            (that runs the module's code); zoo and torchvision models never need it.
        template: rebuild on a copy of this model instead of from the recorded reference
            (see ``Template``): no import, no call.

    Raises:
        ArtifactError: the file is truncated, corrupted, foreign, or does not rebuild.
    """
    artifact = read_artifact(path)
    try:
        return rebuild(artifact, trust_code=trust_code, template=template, source=str(path))
    except ArtifactError as err:
        given = (" (the model= given is not the architecture this artifact was compressed "
                 "from)" if template is not None and template[0] is None else "")
        raise ArtifactError(err.message + given,  # the file, and the field if any
                            where=err.located(f"{path}:").where) from None
