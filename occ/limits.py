"""Bounds on the work any input may cause, and the checks that apply them before work.

Every limit has a default and an environment variable that raises (or lowers) it; the
README lists them. Checks here run *before* a file is read or a tensor allocated:

* :func:`check_input_file`: a regular file, not a directory, FIFO, device or socket
  (symlinks are followed, so a link to ``/dev/zero`` is refused too), nor a kernel
  pseudo-file under ``/proc`` or ``/sys``, and not larger than the caller's limit;
* :func:`read_bounded`: read such a file, never more than the limit;
* :func:`check_params`: a model's size (counted on the ``meta`` device) against
  ``OCC_MAX_PARAMS``.

``OCC_MAX_FOLDER_ENTRIES`` and ``OCC_MAX_IMAGE_PIXELS`` bound an ImageFolder's listing and
its images (``occ.data.folder`` applies them); ``OCC_MAX_BATCH_VALUES`` bounds one batch
of inputs where a file decides the batch (:func:`batch_within`: ``occ eval``).

No torch here: ``occ validate`` uses this module.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from occ.errors import ModelError, OccError


@dataclass(frozen=True)
class Limit:
    """A bound with its default and the environment variable that overrides it."""

    env: str
    default: int
    what: str

    def value(self) -> int:
        """The bound in force: ``$env`` when set to a positive integer, else the default."""
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise OccError(f"must be a positive integer, got {raw!r}", where=self.env) from None
        if value < 1:
            raise OccError(f"must be a positive integer, got {raw!r}", where=self.env)
        return value

    def hint(self) -> str:
        """How to raise the limit, for error messages."""
        return f"limit {self.value():,} {self.what}; raise it with {self.env}=N"


MAX_RECIPE_BYTES = Limit("OCC_MAX_RECIPE_BYTES", 1 << 20, "bytes")
MAX_YAML_NODES = Limit("OCC_MAX_YAML_NODES", 100_000, "YAML nodes (aliases expanded)")
MAX_YAML_DEPTH = Limit("OCC_MAX_YAML_DEPTH", 64, "levels of YAML nesting")
MAX_PARAMS = Limit("OCC_MAX_PARAMS", 150_000_000, "parameters and buffers")
MAX_CHECKPOINT_BYTES = Limit("OCC_MAX_CHECKPOINT_BYTES", 8 << 30, "bytes")
MAX_ARTIFACT_BYTES = Limit("OCC_MAX_ARTIFACT_BYTES", 4 << 30, "bytes")
# Decoded bytes per byte of an artifact: occ's decode to 1-25x their size (a LeNet-5 pruned
# to 99.9 % would be ~1,200x); a few empty 1 MiB streams per byte are a bomb.
MAX_DECODED_RATIO = Limit("OCC_MAX_DECODED_RATIO", 4096,
                          "decoded bytes per byte of an artifact")
MAX_FOLDER_ENTRIES = Limit("OCC_MAX_FOLDER_ENTRIES", 10_000_000,
                           "files and folders listed under one ImageFolder split")
MAX_IMAGE_PIXELS = Limit("OCC_MAX_IMAGE_PIXELS", 1 << 26, "pixels per image (8192 x 8192)")
# One batch's input: 2^27 float32 values are 512 MiB (512 RGB images of 224 x 224); an
# artifact records the batch size it was measured with, which must not decide memory.
MAX_BATCH_VALUES = Limit("OCC_MAX_BATCH_VALUES", 1 << 27,
                         "input values per batch (batch x channels x height x width)")
MAX_REPORT_BYTES = Limit("OCC_MAX_REPORT_BYTES", 64 << 20, "bytes")
# JSON values and keys in one document (artifact header, report.json, --kwargs); a LeNet
# artifact's header holds ~700, a 3,000-tensor model's ~50,000.
MAX_JSON_VALUES = Limit("OCC_MAX_JSON_VALUES", 1_000_000, "JSON values and keys")

# Domains of numbers that have no user-tunable limit.
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are 32 / 64 bit: the common range
MAX_INT = 2**63 - 1  # any integer field: must fit in a C int64
MAX_WORKERS = 64  # data.num_workers: more only floods the machine with processes
MAX_IMAGE_SIDE = 8192  # data.image_size / data.pad_to, in pixels
MAX_BATCH_SIZE = 65_536  # data.batch_size: a batch is also bounded by MAX_BATCH_VALUES in eval
MAX_JSON_DEPTH = 64  # artifact headers: occ writes at most ~6 levels
MAX_STREAMS = 65_536  # tensors in one artifact: the largest torchvision models have ~2,000


def json_depth(obj: object, cap: int) -> int:
    """Nesting depth of plain JSON data, without recursion; stops counting past ``cap``."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > cap:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, for error messages (``"a FIFO (named pipe)"``): the one
    wording for inputs (``check_input_file``) and outputs (``occ.io.refuse_special``)."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text for a one-line message: itself, or escaped (``ascii``) when a
    control character such as a newline would break the line."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


_PSEUDO_ROOTS = ("/proc", "/sys")  # "regular" files whose size and reads the kernel makes up


def _pseudo(path: str | os.PathLike[str], st: os.stat_result) -> bool:
    """Whether ``path`` lies on procfs or sysfs (``/proc/self/mem`` is a "regular" file of
    size 0 whose reads fail with EIO; ``/proc/self/status`` changes as it is read)."""
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + "/") for root in _PSEUDO_ROOTS):
        return True
    for root in _PSEUDO_ROOTS:  # the same file system mounted elsewhere
        try:  # only a mounted /proc or /sys: unmounted (chroots, sandboxes) it is a plain dir
            if os.path.ismount(root) and os.stat(root).st_dev == st.st_dev:
                return True
        except OSError:
            continue
    return False


def check_input_file(path: str | os.PathLike[str], *, limit: Limit | None = None,
                     error: type[OccError] = OccError, what: str = "file") -> int:
    """Check that ``path`` is a regular file within ``limit``; return its size.

    Raises:
        ``error`` (an OccError): a NUL byte in the path, a missing path, a directory, FIFO,
        device or socket (refused by type before any read), a file of procfs / sysfs,
        or a file over the limit.
    """
    where = printable_path(path)
    try:
        st = os.stat(path)
    except ValueError:  # "embedded null byte"
        raise error("path contains a NUL byte", where=ascii(where)) from None
    except FileNotFoundError:
        raise error(f"cannot read {what}: file not found", where=where) from None
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror or err}", where=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"is {file_kind(st.st_mode)}, not a regular {what}; refused before reading",
                    where=where)
    if _pseudo(path, st):
        raise error(f"is a kernel pseudo-file ({os.path.realpath(path)}), not a regular "
                    f"{what}; refused before reading", where=where)
    if limit is not None and st.st_size > limit.value():
        raise error(f"is {st.st_size:,} bytes, over the {limit.hint()}", where=where)
    return st.st_size


def read_bounded(path: str | os.PathLike[str], limit: Limit, *,
                 error: type[OccError] = OccError, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, refusing files over ``limit`` (even growing ones)."""
    size = check_input_file(path, limit=limit, error=error, what=what)
    cap = limit.value()
    try:
        with open(path, "rb") as fh:  # read(n) allocates n bytes up front: ask for the size
            data = fh.read(min(size, cap) + 1)
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror or err}", where=str(path)) from None
    if len(data) > cap:
        raise error(f"is larger than the {limit.hint()}", where=str(path))
    return data


def batch_within(batch: int, input_shape: tuple[int, ...] | list[int]) -> int:
    """``batch``, or the largest smaller batch whose inputs (batch x C x H x W values)
    stay within ``OCC_MAX_BATCH_VALUES``; at least 1 (one image is bounded by the image
    size's own domain, ``MAX_IMAGE_SIDE``)."""
    per = 1
    for side in input_shape:
        per *= max(int(side), 1)
    return max(1, min(batch, MAX_BATCH_VALUES.value() // per))


def check_params(count: int, *, where: str, name: str) -> None:
    """Refuse a model of ``count`` parameters + buffers over ``OCC_MAX_PARAMS``."""
    if count > MAX_PARAMS.value():
        raise ModelError(f"{name} would have {count:,} parameters and buffers, over the "
                       f"{MAX_PARAMS.hint()}; refused before allocating", where=where)


__all__ = ["MAX_ARTIFACT_BYTES", "MAX_BATCH_SIZE", "MAX_BATCH_VALUES", "MAX_CHECKPOINT_BYTES",
           "MAX_DECODED_RATIO", "MAX_FOLDER_ENTRIES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE",
           "MAX_INT", "MAX_JSON_DEPTH", "MAX_JSON_VALUES", "MAX_PARAMS", "MAX_RECIPE_BYTES",
           "MAX_REPORT_BYTES", "MAX_SEED", "MAX_STREAMS", "MAX_WORKERS", "MAX_YAML_DEPTH",
           "MAX_YAML_NODES", "Limit", "batch_within", "check_input_file", "check_params",
           "file_kind", "json_depth", "printable_path", "read_bounded"]
