"""The technique registry: every ``TechniqueSpec``, and every table derived from them.

Adding a technique is adding its package under ``occ/techniques/`` and one name to
``TECHNIQUES`` below. Torch-free: ``occ validate`` and ``occ order`` read it.
"""

from __future__ import annotations

import dataclasses
import difflib
import graphlib
from collections.abc import Sequence
from functools import cache
from typing import Any

from occ.errors import RecipeError
from occ.techniques import distill, early_exit, entropy_code, lowrank, prune, quantize
from occ.techniques.spec import Edge, StageResult, TechniqueSpec

TECHNIQUES: tuple[TechniqueSpec, ...] = (
    distill.SPEC, prune.SPEC, quantize.SPEC, early_exit.SPEC, entropy_code.SPEC, lowrank.SPEC,
)


@dataclasses.dataclass(frozen=True)
class StageInfo:
    """A registered stage as the engine runs it: spec, config class, run, summary."""

    name: str
    config: type
    run: Any
    summary: str
    spec: TechniqueSpec | None = None  # None only for stages tests register by hand


_STAGES: dict[str, StageInfo] = {}


def _lazy_run(spec: TechniqueSpec):
    def run(ctx: Any, config: Any) -> StageResult:
        return spec.load_run()(ctx, config)

    run.__doc__ = spec.summary
    return run


def _fill() -> None:
    if all(spec.type in _STAGES for spec in TECHNIQUES):
        return
    if len({spec.type for spec in TECHNIQUES}) != len(TECHNIQUES):
        raise ValueError("a technique is registered twice")
    for spec in TECHNIQUES:
        _STAGES[spec.type] = StageInfo(name=spec.type, config=spec.config,
                                       run=_lazy_run(spec), summary=spec.summary, spec=spec)



def get_stage(name: str) -> StageInfo:
    """The registered stage ``name``; ``RecipeError`` listing the known ones otherwise."""
    _fill()
    if name not in _STAGES:
        close = difflib.get_close_matches(str(name), list(_STAGES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown stage type {name!r}{hint}; allowed: "
                          f"{', '.join(list_stages())}")
    return _STAGES[name]


@cache
def edges() -> tuple[Edge, ...]:
    """Every precedence edge any technique declares, each once."""
    seen: dict[tuple[str, str], Edge] = {}
    for spec in TECHNIQUES:
        for e in spec.edges:
            if (e.before, e.after) in seen:
                raise ValueError(f"edge {e.before} -> {e.after} declared twice")
            seen[(e.before, e.after)] = e
    return tuple(seen.values())


@cache
def categories() -> dict[str, str]:
    """Every category with its description, in rank order (a topological sort of the
    edges; ties keep registration order)."""
    described: dict[str, str] = {}
    for spec in TECHNIQUES:
        described.update(spec.categories)
    names = list(described)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for c in names:
        sorter.add(c, *[e.before for e in edges() if e.after == c])
    sorter.prepare()
    ranked: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=names.index)
        for c in ready:
            ranked.append(c)
            sorter.done(c)
    return {c: described[c] for c in ranked}


def list_stages() -> list[str]:
    """Names of every registered stage, in the built-in order's rank."""
    _fill()
    rank = {c: i for i, c in enumerate(categories())}
    return sorted(_STAGES, key=lambda n: rank.get(_STAGES[n].config().category, len(rank)))


def aliases() -> dict[str, tuple[str, str]]:
    """``occ order`` tokens: alias -> (technique type, category)."""
    out: dict[str, tuple[str, str]] = {}
    for spec in TECHNIQUES:
        for alias, category in spec.aliases.items():
            if alias in out:
                raise ValueError(f"alias {alias!r} declared twice")
            out[alias] = (spec.type, category)
    return out


def labels() -> dict[str, str]:
    """Short labels by technique type (ablate's orders: ``KD -> P -> Q``)."""
    return {spec.type: spec.label for spec in TECHNIQUES}


def singletons() -> tuple[str, ...]:
    """Technique types allowed at most once per recipe."""
    return tuple(spec.type for spec in TECHNIQUES if spec.singleton)


def second_singleton(types: Sequence[str]) -> tuple[int, int] | None:
    """``(i, first)``: ``types[i]`` repeats ``types[first]``, a type a recipe may hold once
    (``singletons``); None when none does. The one rule behind ``occ validate`` and
    ``occ order``."""
    once, seen = singletons(), {}  # type -> its first index
    for i, kind in enumerate(types):
        if kind in once and kind in seen:
            return i, seen[kind]
        seen.setdefault(kind, i)
    return None


def repeatable() -> str:
    """``only prune and lowrank may appear more than once``: the rule, from the specs."""
    names = [spec.type for spec in TECHNIQUES if not spec.singleton]
    return (f"only {' and '.join(names) if len(names) < 3 else ', '.join(names)} may appear "
            "more than once")


def load_edit_ops() -> None:
    """Import every module that registers an edit op, so an artifact can be rebuilt."""
    for spec in TECHNIQUES:
        spec.load_edit_ops()


def techniques_help() -> str:
    """The ``--techniques`` help text: each technique's aliases."""
    short = ["/".join(a for a in spec.aliases if a.isupper()) or spec.type for spec in TECHNIQUES]
    methods = [a for spec in TECHNIQUES for a in spec.aliases
               if not a.isupper() and a != spec.type]
    return (f"Comma-separated: {', '.join(short)}, stage names, or methods "
            f"({', '.join(methods)}).")


def _type_text(tp: Any) -> str:
    from occ.config import _type_name

    return _type_name(tp).replace("|", "\\|")


def stage_reference() -> str:
    """Markdown reference of every stage's keys (type, default), from the config classes.

    ``docs/STAGES.md`` is this text; a test keeps the two equal.
    """
    from typing import get_type_hints

    from occ.config import to_dict

    out = ["# Stage reference", "",
           "Generated from the config dataclasses "
           "(`python -m occ.techniques.registry > docs/STAGES.md`).",
           "Every stage also takes `device` (`auto` = the run's device).", ""]
    for name in list_stages():
        info = get_stage(name)
        doc = (info.config.__doc__ or "").strip().splitlines()
        out += [f"## `type: {name}`", "", info.summary or "", ""]
        body = [line.rstrip() for line in doc[1:] if line.strip()]
        if body:
            indent = min(len(line) - len(line.lstrip()) for line in body)
            out += ["```text", *(line[indent:] for line in body), "```", ""]
        out += ["| key | type | default |", "| --- | --- | --- |"]
        hints = get_type_hints(info.config)
        for f in dataclasses.fields(info.config):
            if not f.init or f.name == "device":
                continue
            if f.default is not dataclasses.MISSING:
                default = to_dict(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = to_dict(f.default_factory())
            else:
                default = "required"
            out.append(f"| `{f.name}` | {_type_text(hints[f.name])} | `{default}` |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # run as a script this module is __main__, not the registry
    from occ.techniques import registry

    print(registry.stage_reference(), end="")
