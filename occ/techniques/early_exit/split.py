"""Cutting a backbone into segments at named modules, with ``torch.fx``.

The backbone's forward is traced symbolically. Modules are opaque (one graph node each)
except the root and the *ancestors* of the requested exit points, which are traced
through; so an exit at ``layer2.1`` sees ``layer2``'s children while ``layer1``,
``layer3`` and any quantized or custom layer stay single calls. A module is a valid exit
point when its output is the only value computed before it that is still needed after it
(a cut through a residual block, whose shortcut still needs the block's input, is not).

Supported: any model whose forward ``torch.fx`` can trace down to the exit points — the
occ zoo (LeNets, CIFAR ResNets, VGG-small), ``nn.Sequential`` stacks, torchvision
classifiers whose top level is a chain (ResNets, VGG, MobileNet ...). The segments are
replayed by a tiny interpreter that looks modules up by path on every call, so the
backbone's modules can be replaced later (quantization) without re-splitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from occ.errors import RecipeError


@dataclass(frozen=True)
class Ref:
    """An argument that is the value of graph node ``index``."""

    index: int


@dataclass(frozen=True)
class Attr:
    """An argument that is the backbone's parameter or buffer at ``path``."""

    path: str


@dataclass(frozen=True)
class Step:
    """One graph node: ``op`` (call_module | call_function | call_method) on ``target``."""

    index: int
    op: str
    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    only: int | None = None  # the node index when the one argument is a node (fast path)


@dataclass(frozen=True)
class Segment:
    """The steps from one cut to the next; ``source`` is the node index it starts from."""

    source: int
    steps: tuple[Step, ...]

    @property
    def modules(self) -> list[str]:
        """Paths of the modules this segment calls (relative to the backbone)."""
        return [s.target for s in self.steps if s.op == "call_module"]


class _CutTracer(fx.Tracer):
    """Traces through the root and the ancestors of ``points``; every other module is a leaf.

    ``expand_sequential`` also traces through every ``nn.Sequential`` (to list candidates).
    """

    def __init__(self, points: Sequence[str], expand_sequential: bool = False) -> None:
        super().__init__()
        self._ancestors = {p.rsplit(".", i)[0] for p in points for i in range(1, p.count(".") + 1)}
        self._expand = expand_sequential

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._ancestors:
            return False
        return not (self._expand and isinstance(m, nn.Sequential))


def _trace(model: nn.Module, points: Sequence[str], expand: bool = False) -> list[fx.Node]:
    try:
        graph = _CutTracer(points, expand).trace(model)
    except Exception as err:  # fx raises many types for untraceable Python
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise RecipeError(f"{type(model).__name__}'s forward cannot be traced by torch.fx "
                          f"({first}); early exit needs a traceable forward",
                          where="exits") from None
    return list(graph.nodes)


def _valid_cuts(nodes: list[fx.Node]) -> list[int]:
    """Positions of call_module nodes after which only their own output stays live."""
    pos = {n: i for i, n in enumerate(nodes)}
    # earliest[i]: the smallest position of any non-constant input used at or after i.
    earliest = [len(nodes)] * (len(nodes) + 1)
    for i in range(len(nodes) - 1, -1, -1):
        used = [pos[a] for a in nodes[i].all_input_nodes if a.op != "get_attr"]
        earliest[i] = min([earliest[i + 1], *used])
    last_compute = max(i for i, n in enumerate(nodes) if n.op not in ("output", "placeholder"))
    return [i for i, n in enumerate(nodes)
            if n.op == "call_module" and i < last_compute and earliest[i + 1] >= i]


def exit_candidates(model: nn.Module) -> list[str]:
    """Every valid exit point of ``model``, in execution order.

    These are the modules of its top-level chain with ``nn.Sequential`` containers
    expanded, each followed by the containers it is the last child of (``layer1.2``,
    then ``layer1``, which ends at the same place).
    """
    nodes = _trace(model, [], expand=True)
    out: list[str] = []
    for i in _valid_cuts(nodes):
        name = str(nodes[i].target)
        out.append(name)
        parts = name.split(".")
        for k in range(len(parts) - 1, 0, -1):
            parent = model.get_submodule(".".join(parts[:k]))
            if not (isinstance(parent, nn.Sequential) and parts[k] == str(len(parent) - 1)):
                break
            out.append(".".join(parts[:k]))
    return out


def _arg(a: Any, nodes_pos: dict[fx.Node, int]) -> Any:
    if isinstance(a, fx.Node):
        return Attr(str(a.target)) if a.op == "get_attr" else Ref(nodes_pos[a])
    if isinstance(a, tuple):
        return tuple(_arg(v, nodes_pos) for v in a)
    if isinstance(a, list):
        return [_arg(v, nodes_pos) for v in a]
    if isinstance(a, dict):
        return {k: _arg(v, nodes_pos) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_arg(a.start, nodes_pos), _arg(a.stop, nodes_pos), _arg(a.step, nodes_pos))
    return a


def split(model: nn.Module, points: Sequence[str]) -> list[Segment]:
    """Cut ``model`` after each of ``points`` (in execution order): ``len(points) + 1`` segments.

    Raises:
        RecipeError: a point is not a module, repeats, is out of order or is not a valid
            cut; the message lists the valid exit points.
    """
    modules = dict(model.named_modules())
    for i, p in enumerate(points):
        if not p or p not in modules:
            raise _invalid(model, i, p, "no such module")
    nodes = _trace(model, points)
    pos = {n: i for i, n in enumerate(nodes)}
    where = {n.target: i for i, n in enumerate(nodes) if n.op == "call_module"}
    for p in points:  # a Sequential traced through (an exit inside it) ends at its last call
        if p not in where and isinstance(modules[p], nn.Sequential):
            inside = [i for t, i in where.items() if str(t).startswith(p + ".")]
            if inside:
                where[p] = max(inside)
    valid = set(_valid_cuts(nodes))
    cuts = []
    for i, p in enumerate(points):
        if p not in where or where[p] not in valid:
            raise _invalid(model, i, p, "a value computed before it is still needed after it")
        if cuts and where[p] <= cuts[-1]:
            raise _invalid(model, i, p, f"comes before or at {points[i - 1]!r}; list exits "
                                        "in execution order")
        cuts.append(where[p])
    placeholders = [i for i, n in enumerate(nodes) if n.op == "placeholder"]
    outputs = [n for n in nodes if n.op == "output"]
    if len(placeholders) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        raise RecipeError("early exit needs a model with one tensor input and one tensor "
                          "output", where="exits")
    bounds = [placeholders[0], *cuts, pos[outputs[0].args[0]]]
    segments = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        steps = tuple(_step(i, n, pos) for i, n in enumerate(nodes[a + 1:b + 1], start=a + 1)
                      if n.op not in ("get_attr", "placeholder", "output"))
        segments.append(Segment(source=a, steps=steps))
    return segments


def _step(i: int, node: fx.Node, pos: dict[fx.Node, int]) -> Step:
    args, kwargs = _arg(node.args, pos), _arg(node.kwargs, pos)
    only = args[0].index if len(args) == 1 and isinstance(args[0], Ref) and not kwargs else None
    return Step(i, node.op, node.target, args, kwargs, only)


def _invalid(model: nn.Module, i: int, point: str, why: str) -> RecipeError:
    valid = exit_candidates(model)
    return RecipeError(f"{point!r} is not a valid exit point ({why}); valid: {', '.join(valid)}",
                       where=f"exits[{i}]")


def _load(a: Any, env: dict[int, Any], root: nn.Module) -> Any:
    if isinstance(a, Ref):
        return env[a.index]
    if isinstance(a, Attr):
        return _attr(root, a.path)
    if isinstance(a, tuple):
        return tuple(_load(v, env, root) for v in a)
    if isinstance(a, list):
        return [_load(v, env, root) for v in a]
    if isinstance(a, dict):
        return {k: _load(v, env, root) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_load(a.start, env, root), _load(a.stop, env, root), _load(a.step, env, root))
    return a


def _attr(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def run_segment(root: nn.Module, segment: Segment, x: torch.Tensor) -> torch.Tensor:
    """Run ``segment`` of ``root`` on ``x`` (the value at the segment's source node)."""
    env: dict[int, Any] = {segment.source: x}
    out: Any = x
    for s in segment.steps:
        if s.only is not None and s.op == "call_module":  # most steps: module(previous)
            out = root.get_submodule(s.target)(env[s.only])
            env[s.index] = out
            continue
        args, kwargs = _load(s.args, env, root), _load(s.kwargs, env, root)
        if s.op == "call_module":
            out = root.get_submodule(s.target)(*args, **kwargs)
        elif s.op == "call_function":
            out = s.target(*args, **kwargs)
        else:  # call_method
            out = getattr(args[0], s.target)(*args[1:], **kwargs)
        env[s.index] = out
    return out


def owner_of(layer: str, segments: Sequence[Segment]) -> int:
    """The segment whose module call runs the backbone layer at path ``layer``."""
    for e, seg in enumerate(segments):
        for target in seg.modules:
            if layer == target or layer.startswith(target + "."):
                return e
    return len(segments) - 1


__all__ = ["Segment", "exit_candidates", "owner_of", "run_segment", "split"]
