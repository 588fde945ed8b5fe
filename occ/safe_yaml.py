"""Bounded, strict YAML: ``yaml.SafeLoader`` plus the checks a file from elsewhere needs.

``safe_load`` adds to PyYAML's safe loader (no Python objects, ever):

* nesting deeper than ``OCC_MAX_YAML_DEPTH`` is refused while composing (PyYAML's
  composer recurses, so 100,000 ``[`` would otherwise end in ``RecursionError``);
* more than ``OCC_MAX_YAML_NODES`` nodes *counting every alias as the subtree it
  repeats* is refused before anything is constructed: a "billion laughs" alias bomb is a
  few hundred bytes that expand to gigabytes in whatever walks the result;
* recursive aliases (``&a [*a]``) and duplicate mapping keys (PyYAML lets the last one
  win silently) are refused, with their line;
* numbers are read as YAML 1.2 reads them: ``1e-3`` is a float (PyYAML's YAML 1.1
  resolver wants a dot and reads ``lr: 1e-3`` as the string ``'1e-3'``), ``epochs: 010``
  is 10 (1.1: octal 8) and ``1:30`` a string (1.1: the base-60 integer 90).

No torch here.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from occ.errors import RecipeError
from occ.limits import MAX_RECIPE_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_bounded


class _YamlLimit(yaml.YAMLError):
    """A bound was hit; ``problem`` and ``problem_mark`` like PyYAML's own errors."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


_MERGE = "tag:yaml.org,2002:merge"


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with depth, node-count, alias-cycle and duplicate-key checks."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._max_depth = MAX_YAML_DEPTH.value()

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # noqa: D102
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark
                raise _YamlLimit(f"nested deeper than the {MAX_YAML_DEPTH.hint()}", mark)
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """PyYAML's mapping, refusing a key that appears twice."""
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable key: PyYAML reports it itself
                    continue
                if duplicate:
                    raise _YamlLimit(f"duplicate key {key!r} (the first would be ignored)",
                                     key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Numbers as YAML 1.2 reads them, not PyYAML's YAML 1.1: 1e-3 is a float (1.1 wants a
# dot and left it a string); 010 is ten (1.1: octal 8); 1:30 is a string (1.1: the
# base-60 integer 90). 0x1F and 0o17 keep their bases; underscores are allowed as before.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
BoundedSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
BoundedSafeLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))
BoundedSafeLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: BoundedSafeLoader, node: ScalarNode) -> int:
    """A YAML 1.2 integer: decimal whatever its leading zeros, or 0x / 0o."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = 16 if digits.startswith("0x") else 8 if digits.startswith("0o") else 10
    return sign * int(digits[2:] if base != 10 else digits, base)


BoundedSafeLoader.add_constructor(_INT, _construct_int)


class SafeDumper12(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes a string ``BoundedSafeLoader`` would read as a number
    (``'1e-3'``, ``'010'``): what it writes reads back as written."""


SafeDumper12.yaml_implicit_resolvers = BoundedSafeLoader.yaml_implicit_resolvers


def safe_dump(doc: Any) -> str:
    """``doc`` as block YAML (keys in order) that ``safe_load`` reads back equal."""
    return yaml.dump(doc, Dumper=SafeDumper12, sort_keys=False, default_flow_style=None)


def expanded_size(root: Node, cap: int) -> int:
    """Nodes in ``root`` with every alias counted as the subtree it repeats.

    Each distinct node is visited once (sizes are memoised), so this is linear in the
    file even for an alias bomb; it stops as soon as ``cap`` is passed.

    Raises:
        _YamlLimit: a recursive alias (a node that contains itself).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion on deep documents
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = _children(node)
            sizes[key] = min(cap + 1, 1 + sum(sizes[id(k)] for k in kids))
            continue
        if key in sizes:
            continue
        if key in active:
            raise _YamlLimit("recursive alias (a node that contains itself)", node.start_mark)
        active.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in sizes)
        if any(id(k) in active for k in _children(node)):
            raise _YamlLimit("recursive alias (a node that contains itself)", node.start_mark)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def read_recipe_text(path: Any) -> str:
    """A recipe file's text: a regular file under ``OCC_MAX_RECIPE_BYTES``, strict UTF-8."""
    data = read_bounded(path, MAX_RECIPE_BYTES, error=RecipeError, what="recipe file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"not UTF-8 text (bad byte at offset {err.start})",
                          where=str(path)) from None


def safe_load(text: str, *, where: str) -> Any:
    """Parse YAML ``text`` within the bounds; RecipeError (located at ``where``) otherwise."""
    try:
        loader = BoundedSafeLoader(text)  # the reader rejects control characters here
    except yaml.YAMLError as err:
        raise RecipeError(f"not valid YAML: {err}".splitlines()[0][:200], where=where) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        cap = MAX_YAML_NODES.value()
        if expanded_size(node, cap) > cap:
            raise _YamlLimit(f"expands to more than the {MAX_YAML_NODES.hint()} "
                             "(an alias bomb?)", node.start_mark)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise RecipeError(f"not valid YAML{at}: {problem}", where=where) from None
    except (ValueError, RecursionError, OverflowError) as err:  # e.g. a 5,000-digit integer
        raise RecipeError(f"not valid YAML: {str(err)[:160]}", where=where) from None
    finally:
        loader.dispose()


__all__ = ["BoundedSafeLoader", "SafeDumper12", "expanded_size", "read_recipe_text", "safe_dump",
           "safe_load"]
