"""The real domains of recipe and option values, checked before any work.

``occ.config`` already rejects non-finite floats and integers beyond int64 for every
field; this module holds the fields whose domain is narrower than their type: devices,
run names (one path component that stays inside the output root), seeds.

No torch here.
"""

from __future__ import annotations

import math
import re
import unicodedata

from occ.config import check
from occ.errors import RecipeError
from occ.limits import MAX_SEED

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]{0,3}))?")
_NAME_PUNCT = "._-+"
MAX_NAME = 128


def check_device(value: str, where: str = "device") -> None:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``; RecipeError otherwise."""
    check(isinstance(value, str) and _DEVICE.fullmatch(value) is not None, where,
          f"must be auto, cpu, mps, cuda or cuda:N, got {value!r}")


def check_name(value: str, where: str = "name") -> None:
    """A run name: one path component of letters, digits and ``._-+``, NFKC-normal.

    It names the default output folder (``runs/<name>``), so ``../x``, ``a/b``, a leading
    dot or dash, control characters and look-alike characters that normalise to others
    (fullwidth ``／``, the one-dot leader ``․``) are refused.
    """
    check(bool(value.strip()), where, "must not be empty")
    check(len(value) <= MAX_NAME, where, f"must be at most {MAX_NAME} characters")
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in _NAME_PUNCT))),
               None)
    check(bad is None, where, f"must be ASCII letters, digits and {_NAME_PUNCT} only (one folder "
          f"name inside the output root), got {bad!r} in {value!r}")
    check(unicodedata.normalize("NFKC", value) == value, where,
          f"has look-alike characters (NFKC form {unicodedata.normalize('NFKC', value)!r}), "
          f"got {value!r}")
    check(value[0] not in ".-", where, f"must not start with {value[0]!r}, got {value!r}")


def check_seed(value: int, where: str = "seed") -> None:
    """An integer in [0, 2**32 - 1] (what numpy and torch both accept)."""
    check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED,
          where, f"must be an integer in [0, {MAX_SEED}], got {value!r}")


def check_positive_float(value: float, where: str) -> None:
    """A finite number > 0 (learning rates, temperatures given on the command line)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if not ok:
        raise RecipeError(f"must be a finite number > 0, got {value!r}", where=where)


__all__ = ["check_device", "check_name", "check_positive_float", "check_seed"]
