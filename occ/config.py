"""Typed config dataclasses from plain YAML/JSON data, with located errors.

Every recipe section and every stage config is a frozen dataclass. ``from_dict`` builds
one from a mapping, rejecting unknown keys and wrong types with the field's path and the
allowed values; ``to_dict`` gives back plain data, so load -> dump -> load is equal.
Range checks live in each dataclass's ``__post_init__`` and raise ``RecipeError`` with
``where`` set to the field name; ``from_dict`` prefixes the outer location.

No torch here: ``occ validate`` and ``occ order`` run on this module alone.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from occ.errors import RecipeError
from occ.limits import MAX_INT

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        choices = ", ".join(repr(a) for a in allowed)
        raise RecipeError(f"must be one of {choices}, got {value!r}", where=where)
    if origin in (Union, types.UnionType):
        if isinstance(value, float) and not math.isfinite(value) and float in get_args(tp):
            raise RecipeError(f"must be a finite number, got {value!r}", where=where)
        errors = []
        for arm in get_args(tp):
            try:
                return _convert(value, arm, where)
            except RecipeError as err:
                errors.append(err)
        for err in errors:  # [nan] is a list of floats: say which item is not finite
            if err.message.startswith("must be a finite number"):
                raise err
        raise RecipeError(f"must be {_type_name(tp)}, got {value!r}", where=where)
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(f"must be null, got {value!r}", where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"must be a {_type_name(tp)}, got {value!r}", where=where)
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise RecipeError(f"must be a mapping, got {value!r}", where=where)
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {
            _convert(k, key_tp, where): _convert(v, val_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:  # would overflow every C integer downstream
                raise RecipeError(f"must fit in 64 bits, got {value!r}", where=where)
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # inf / nan break training and the JSON header
                raise RecipeError(f"must be a finite number, got {value!r}", where=where)
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise RecipeError(f"must be {_type_name(tp)}, got {value!r}", where=where)


def field_names(cls: type) -> list[str]:
    """The names of a config dataclass's fields, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def reject_unknown(keys: Iterable[Any], allowed: Sequence[str], *, where: str | None) -> None:
    """Refuse the first of ``keys`` not in ``allowed``: one line naming it, the closest
    allowed key and all of them.

    Raises:
        RecipeError: at ``where``.
    """
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown key {unknown[0]!r}{hint}; allowed keys: "
                          f"{', '.join(allowed)}", where=where)


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build the config dataclass ``cls`` from a mapping, strictly.

    Args:
        cls: a dataclass type whose fields carry type annotations.
        data: the mapping read from YAML or JSON.
        where: the location of ``data`` (``"recipe.yaml: stages[2]"``) for error messages.

    Raises:
        RecipeError: unknown or missing keys, wrong types, or a failed range check, with
            the full location of the offending field.
    """
    prefix = (f"{where} " if where.endswith(":") else f"{where}.") if where else ""
    if not isinstance(data, Mapping):
        raise RecipeError(f"must be a mapping, got {data!r}", where=where or None)
    hints = get_type_hints(cls)
    names = field_names(cls)
    reject_unknown(data, names, where=where or None)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError("is required", where=prefix + f.name)
    try:
        return cls(**kwargs)
    except RecipeError as err:
        raise err.located(where) if where else err from None


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a config dataclass, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(condition: bool, field: str, message: str) -> None:
    """Raise ``RecipeError`` located at ``field`` unless ``condition`` holds.

    Use in ``__post_init__``: ``check(0 <= self.sparsity < 1, "sparsity",
    f"must be in [0, 1), got {self.sparsity}")``.
    """
    if not condition:
        raise RecipeError(message, where=field)


__all__ = ["check", "field_names", "from_dict", "to_dict"]
