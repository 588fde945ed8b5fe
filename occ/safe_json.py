"""Bounded JSON: ``json.loads`` behind the checks that text from elsewhere needs.

Python's parser recurses once per nesting level (100,000 ``[`` end in ``RecursionError``)
and builds every value before anything can count them (60 MB of ``[],`` are 20 million
lists, 3.5 GB). ``loads`` therefore checks the text first, at C speed, and parses only
text within all three bounds:

* its size, in UTF-8 bytes (``max_bytes``);
* its values and keys, at most ``OCC_MAX_JSON_VALUES``: outside strings, every value but
  the first follows a ``[``, ``,`` or ``:`` and every key a ``{`` or ``,``, so one plus
  the count of those characters bounds them (an empty ``[]`` or ``{}`` counts one more);
* its nesting depth, at most ``MAX_JSON_DEPTH`` levels of brackets outside strings.

Artifact headers, ``report.json`` and JSON options on the command line (``--kwargs``) are
read with it. No torch here.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, repeat
from operator import sub
from typing import Any

from occ.errors import OccError
from occ.limits import MAX_JSON_DEPTH, MAX_JSON_VALUES, Limit, read_bounded

# A JSON string once its escaped backslashes and quotes are gone (``_unescaped``); what is
# left once strings are gone is structure.
_STRING = re.compile(rb'"[^"]*"')
# Outside strings: an opening bracket is one level up (2 - 1), a closing one down (0 - 1).
_STEP = bytes(2 if c in b"[{" else 0 if c in b"]}" else 1 for c in range(256))
_BRACKETS = re.compile(rb"[^\[\]{}]")


def _unescaped(data: bytes) -> bytes:
    """``data`` without ``\\\\`` and ``\\"`` pairs, so that quotes delimit strings.

    Left to right, as JSON reads them: a run of backslashes pairs up from its start.
    """
    return data.replace(b"\\\\", b"").replace(b'\\"', b"")


def check_text(data: bytes, *, max_bytes: int | Limit, error: type[OccError] = OccError,
               where: str | None = None, what: str = "JSON", embedded: bool = False) -> None:
    """Refuse JSON ``data`` over ``max_bytes``, ``OCC_MAX_JSON_VALUES`` or ``MAX_JSON_DEPTH``.

    ``max_bytes``: a fixed bound, or a ``Limit`` (then the message says how to raise it).

    ``embedded``: ``data`` is binary with JSON parts inside (a compact artifact header):
    count values everywhere, strings included (which can only over-count), and leave the
    depth to :func:`loads` of each part.

    Raises:
        ``error``: the text is over one of the bounds (named, with how to raise it).
    """
    cap = max_bytes.value() if isinstance(max_bytes, Limit) else max_bytes
    if len(data) > cap:
        hint = max_bytes.hint() if isinstance(max_bytes, Limit) else f"limit {cap:,} bytes"
        raise error(f"{what} is {len(data):,} bytes, over the {hint}", where=where)
    structure = data if embedded else _STRING.sub(b"", _unescaped(data))
    values = 1 + sum(structure.count(c) for c in (b"[", b"{", b",", b":"))
    if values > MAX_JSON_VALUES.value():
        raise error(f"{what} holds about {values:,} values and keys, over the "
                    f"{MAX_JSON_VALUES.hint()}; refused before parsing", where=where)
    if embedded:
        return
    steps = _BRACKETS.sub(b"", structure).translate(_STEP)
    depth = max(accumulate(map(sub, steps, repeat(1))), default=0)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels; refused before "
                    "parsing", where=where)


def loads(text: str | bytes, *, max_bytes: int | Limit, error: type[OccError] = OccError,
          where: str | None = None, what: str = "JSON") -> Any:
    """``json.loads(text)`` once :func:`check_text` passes; ``error`` for bad JSON.

    Raises:
        ``error``: over a bound, not UTF-8, or not valid JSON (one line, with the position).
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    check_text(data, max_bytes=max_bytes, error=error, where=where, what=what)
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        raise error(f"{what} is not valid JSON: {err.msg} (line {err.lineno}, column "
                    f"{err.colno})", where=where) from None
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text", where=where) from None
    except (ValueError, RecursionError) as err:  # lone surrogates; depth is checked above
        raise error(f"{what} is not valid JSON: {err}", where=where) from None


def load_file(path: str, limit: Limit, *, error: type[OccError] = OccError,
              what: str = "JSON file") -> Any:
    """The JSON document in regular file ``path`` of at most ``limit`` bytes, bounded.

    Raises:
        ``error``: a special file, a file over ``limit``, unreadable, or bad / oversized JSON.
    """
    data = read_bounded(path, limit, error=error, what=what)
    return loads(data, max_bytes=limit, error=error, where=path, what=what)


__all__ = ["check_text", "load_file", "loads"]
