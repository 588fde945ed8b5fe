"""Input and baseline checkpoints: safe loading with ``weights_only=True``.

occ writes checkpoints as ``{"occ_checkpoint": 1, "arch": ..., "kwargs": ...,
"state_dict": ..., "metrics": ..., "data": ..., "classes": ..., "code_folders": ...}``
(tensors and plain data only; ``classes`` only where the data names them,
``code_folders`` only where the model or data is a user's ``pkg.module:callable``: the
folders it was imported from, ``occ.callables``). It reads those, bare
state dicts, and the common ``{"state_dict": ...}`` / ``{"model_state_dict": ...}`` /
``{"model": ...}`` / ``{"net": ...}`` (pytorch-cifar's ``{'net', 'acc', 'epoch'}``)
wrappers, with the key prefixes that wrapping the model adds stripped
(``module.``: ``DataParallel`` / DDP; ``_orig_mod.``: ``torch.compile``). A file that
needs arbitrary unpickling is refused unless the caller trusts it; any other layout is
refused naming the keys it has.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from occ.artifact.pickle_scan import check_archive, code_imports, describe, pickle_imports
from occ.callables import recorded_folders, user_folders
from occ.errors import CheckpointError
from occ.io import atomic_write_bytes
from occ.limits import MAX_CHECKPOINT_BYTES, check_input_file
from occ.trust import TrustError, unpickle_refusal

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes of a model saved wrapped: ``DataParallel`` / DDP, ``torch.compile``."""
LAYOUTS = ("occ reads a mapping of parameter names to tensors (model.state_dict()), as is "
           "or under 'state_dict', 'model_state_dict', 'model' or 'net', or a whole nn.Module "
           "(with --trust-checkpoint)")
BN_COUNTER = ".num_batches_tracked"
"""BatchNorm's step counter: filled with the model's own (0) where a checkpoint lacks it."""
SHOWN_KEYS = 8
"""Top-level keys a refusal lists at most."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the state dict and whatever occ recorded beside it."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def code_folders(self, *, where: str) -> tuple[str, ...]:
        """The folders an occ checkpoint records its user code was imported from (none for
        other checkpoints). Only a place to look: read it under ``--trust-code`` only.

        Raises:
            CheckpointError: the field is not a short list of absolute paths.
        """
        if self.meta.get("occ_checkpoint") != 1:
            return ()
        return recorded_folders(self.meta.get("code_folders"), where=f"{where}: code_folders",
                                error=CheckpointError)


def load_checkpoint(path: str | os.PathLike[str], *, trust: bool = False) -> Checkpoint:
    """Load a checkpoint without running code from it.

    Args:
        path: a ``.pt`` / ``.pth`` file.
        trust: allow full unpickling (``--trust-checkpoint``): only for files you made.

    Raises:
        CheckpointError: missing, unreadable, unsafe (needs unpickling) or not a state dict.
    """
    where = str(path)
    size = check_input_file(path, limit=MAX_CHECKPOINT_BYTES, error=CheckpointError,
                            what="checkpoint")
    if size == 0:  # torch would say only "EOFError" with no text
        raise CheckpointError("is empty (0 bytes), not a PyTorch checkpoint", where=where)
    _refuse_artifact(path)
    check_archive(path, size)
    try:
        if trust:  # the user's own classes, beside them as their builders are
            with user_folders([Path(path).parent]):
                obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": the verdict
                warnings.filterwarnings("ignore", message=r"Detected pickle protocol",
                                        category=UserWarning)  # below says what matters
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:  # a read that fails (EIO): the file, not occ
        raise CheckpointError(f"cannot read checkpoint: {err.strerror or err}",
                              where=where) from None
    except pickle.UnpicklingError as err:
        code = _code_names(path)
        if code:  # decided from the pickle's opcodes, not torch's wording (it changes)
            raise TrustError(unpickle_refusal(describe(code)), where=where) from None
        detail = _unpickler_detail(str(err))
        raise CheckpointError(f"not a readable PyTorch checkpoint ({detail})",
                              where=where) from None
    except Exception as err:  # noqa: BLE001  (torch raises KeyError, EOFError ... on garbage)
        raise CheckpointError(f"not a readable PyTorch checkpoint: {str(err)[:200]}",
                              where=where) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    return _unwrap(obj, where)


def _refuse_artifact(path: str | os.PathLike[str]) -> None:
    """An occ artifact handed over as a checkpoint: say what it is and what takes it."""
    from occ.artifact.layout import has_magic

    if has_magic(path, error=CheckpointError, what="checkpoint"):
        raise CheckpointError("is an occ artifact (already compressed), not a PyTorch "
                              "checkpoint: `occ eval` / `occ inspect` / `occ export` take it, "
                              "`occ.load()` gives its model; compress from the checkpoint it "
                              "was made from", where=str(path))


def _code_names(path: str | os.PathLike[str]) -> list[str]:
    """Globals the pickle imports that make weights-only loading refuse it."""
    names = pickle_imports(path)
    code = code_imports(path)
    return code or [n for n in names if not n.startswith(("torch._utils.", "collections."))
                    and not n.endswith("Storage")]


def _unpickler_detail(message: str) -> str:
    """The one informative line of torch's weights-only unpickling error."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else "unsafe pickle"))[:160]
    return (lines[-1] if lines else "unsafe pickle")[:160]


def _unwrap(obj: Any, where: str) -> Checkpoint:
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if obj.get("occ_checkpoint") == 1:
            meta = {k: v for k, v in obj.items() if k != "state_dict"}
            obj = obj.get("state_dict")
        else:
            held = [key for key in _WRAPPER_KEYS if _is_state_dict(obj.get(key))]
            if len(held) > 1 and not _same_tensors([obj[key] for key in held]):
                raise CheckpointError(
                    f"holds different state dicts under {' and '.join(map(repr, held))}: "
                    f"which is the model is not occ's guess; torch.save(torch.load({where!r})"
                    f"[KEY], 'model.pt') writes the one you mean as a file occ reads",
                    where=where)
            for key in _WRAPPER_KEYS:
                if isinstance(obj.get(key), Mapping):
                    # Keep the plain numbers saved beside it (accuracy, epoch ...).
                    meta = {k: v for k, v in obj.items() if k != key and _is_scalar(v)}
                    obj = obj[key]
                    break
    if not _is_state_dict(obj):
        raise CheckpointError(f"not a state dict: {_describe(obj)}; {LAYOUTS}"
                              f"{_hint(obj, where)}", where=where)
    return Checkpoint(state_dict=strip_prefix(dict(obj)), meta=meta)


def _same_tensors(states: list[Mapping[str, torch.Tensor]]) -> bool:
    """Whether the state dicts hold the same names (less wrapper prefixes) and values
    (NaN equal to NaN): the same model saved twice, wrapped and not, is one model."""
    first, *rest = (strip_prefix(dict(s)) for s in states)
    return all(set(s) == set(first) and all(
        s[k].shape == first[k].shape and s[k].dtype == first[k].dtype
        and bool(torch.equal(s[k], first[k]) or (s[k].is_floating_point() and torch.allclose(
            s[k], first[k], rtol=0.0, atol=0.0, equal_nan=True)))
        for k in first) for s in rest)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _describe(obj: Any) -> str:
    """What the file holds instead, in a few words: its type, its first top-level keys and
    what each holds (``'net' (25 tensors), 'epoch' (int)``)."""
    if not isinstance(obj, Mapping):
        return f"the file holds a {type(obj).__name__}"
    if not obj:
        return "the file holds an empty mapping"
    shown = [f"{str(k)[:40]!r} ({_kind(v)})" for k, v in list(obj.items())[:SHOWN_KEYS]]
    more = f" and {len(obj) - SHOWN_KEYS} more" if len(obj) > SHOWN_KEYS else ""
    return f"its top-level keys are {', '.join(shown)}{more}"


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "tensor"
    if _is_state_dict(value):
        return f"{len(value)} tensor{'s' if len(value) > 1 else ''}"
    if isinstance(value, Mapping):
        return f"mapping of {len(value)}"
    return type(value).__name__


def _hint(obj: Any, where: str) -> str:
    """How to re-save a file whose state dict sits under a key occ does not know."""
    if not isinstance(obj, Mapping):
        return ""
    nested = [k for k, v in obj.items() if isinstance(k, str) and _is_state_dict(v)]
    if len(nested) != 1:
        return ""
    key = nested[0][:40]
    return (f"; {key!r} holds one: torch.save(torch.load({where!r})[{key!r}], 'model.pt') "
            "writes it as a file occ reads")


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def strip_prefix(state: dict[str, torch.Tensor],
                 prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict[str, torch.Tensor]:
    """Drop the prefix every key carries when the model was saved wrapped: ``module.``
    (``DataParallel`` / ``DistributedDataParallel``), ``_orig_mod.`` (``torch.compile``),
    repeatedly (a compiled DDP model has both), and only when every key has it."""
    while state:
        prefix = next((p for p in prefixes if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, checkpoint: Checkpoint, *, where: str, arch: str,
              channels_hint: Callable[[int], str] | None = None) -> None:
    """Load ``checkpoint`` into ``model`` strictly; CheckpointError says what does not fit.

    Where the first ``Conv2d``'s weights differ only in their input channels (a grayscale
    checkpoint, a model built for RGB data, or the reverse), the message says so and ends
    with ``channels_hint(n)``: how the command's user gets a model for the checkpoint's
    ``n`` channels (``occ.engine.probe.InputTerms.checkpoint_hint``).
    """
    own = model.state_dict()
    counters = {k: own[k] for k in own if k.endswith(BN_COUNTER) and k not in
                checkpoint.state_dict and
                f"{k.removesuffix(BN_COUNTER)}.running_mean" in checkpoint.state_dict}
    if counters:  # older or converted checkpoints lack BatchNorm's counter (torch fills it)
        checkpoint = Checkpoint({**checkpoint.state_dict, **counters}, checkpoint.meta)
    missing = [k for k in own if k not in checkpoint.state_dict]
    extra = [k for k in checkpoint.state_dict if k not in own]
    wrong = [k for k in own if k in checkpoint.state_dict
             and own[k].shape != checkpoint.state_dict[k].shape]
    if missing or extra or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(checkpoint.state_dict[k].shape)}, "
                         f"model wants {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        message = f"does not fit model {arch}: {'; '.join(parts)}"
        prefix = _extra_prefix(own, checkpoint.state_dict)
        if prefix is not None:
            message += (f"; every key of the checkpoint starts with {prefix!r} (a wrapper's "
                        f"attribute, e.g. a LightningModule's self.model) and fits without "
                        f"it: torch.save({{k.removeprefix({prefix!r}): v for k, v in "
                        f"sd.items()}}, 'model.pt') writes a file occ reads")
        channels = _input_channels(model, checkpoint.state_dict)
        if channels is not None:
            ckpt_channels, model_channels = channels
            message += (f"; the checkpoint's first layer takes {ckpt_channels}-channel "
                        f"images, the model was built for {model_channels}")
            if channels_hint is not None:
                message += f": {channels_hint(ckpt_channels)}"
        raise CheckpointError(message, where=where)
    model.load_state_dict(checkpoint.state_dict)


def _extra_prefix(own: Mapping[str, torch.Tensor],
                  state: Mapping[str, torch.Tensor]) -> str | None:
    """``"model."`` where every checkpoint key starts with that one first component and
    the rest are the model's keys exactly (None otherwise)."""
    first = {k.split(".", 1)[0] for k in state}
    if len(first) != 1 or not all("." in k for k in state):
        return None
    prefix = f"{first.pop()}."
    stripped = {k.removeprefix(prefix) for k in state}
    unfilled = set(own) - stripped  # BatchNorm counters may be missing as well
    fits = stripped <= set(own) and all(k.endswith(BN_COUNTER) for k in unfilled)
    return prefix if fits else None


def _input_channels(model: nn.Module, state: Mapping[str, torch.Tensor]
                    ) -> tuple[int, int] | None:
    """``(checkpoint's, model's)`` input channels where the model's first ``Conv2d`` weight
    differs from the checkpoint's in its input channels only (None otherwise)."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)),
                      ("", None))
    if conv is None:
        return None
    saved = state.get(f"{name}.weight" if name else "weight")
    want = conv.weight.shape  # (out, in / groups, kh, kw)
    if saved is None or saved.dim() != 4 or saved.shape[1] == want[1] \
            or (saved.shape[0], *saved.shape[2:]) != (want[0], *want[2:]):
        return None
    return int(saved.shape[1]) * conv.groups, int(want[1]) * conv.groups


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, arch: str,
                    kwargs: dict[str, Any], metrics: dict[str, Any],
                    data: dict[str, Any] | None = None,
                    classes: list[str] | None = None,
                    code_folders: list[str] | None = None) -> None:
    """Write an occ checkpoint atomically (loadable with ``weights_only=True``).

    ``classes``: the data's class names in index order (ImageFolder), recorded so that
    ``occ eval`` / ``occ compress`` refuse data that numbers the classes differently.
    ``code_folders``: where the user's model / data code was imported from, so that
    ``occ eval --trust-code`` finds it from any working directory.
    """
    import io

    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    extra: dict[str, Any] = {"classes": list(classes)} if classes is not None else {}
    if code_folders:
        extra["code_folders"] = list(code_folders)
    torch.save({"occ_checkpoint": 1, "arch": arch, "kwargs": dict(kwargs),
                "state_dict": state, "metrics": dict(metrics), "data": dict(data or {}),
                **extra}, buf)
    atomic_write_bytes(path, buf.getvalue())
