"""The stage registry: the one global in occ, filled when ``occ.stages`` is imported.

A stage is a frozen config dataclass plus a function ``run(ctx, config) -> StageResult``
that changes ``ctx.model`` in place. One name everywhere: the YAML ``type``, the module
``occ/stages/<name>.py`` and the registry key are the same string.

Stage modules must not import torch at module level (``occ validate`` imports them to
check configs); they import their torch-heavy helpers inside ``run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from occ.errors import RecipeError

if TYPE_CHECKING:
    from occ.context import RunContext


@dataclass(frozen=True)
class StageConfig:
    """Fields every stage config has. Subclasses are frozen dataclasses too."""

    device: str = "auto"

    @property
    def category(self) -> str:
        """The order category (see ``occ.order.CATEGORIES``) this config belongs to."""
        return type(self).default_category

    default_category = ""

    def for_task(self, task: str) -> StageConfig:
        """This config resolved for the recipe's ``task`` (``classification`` or
        ``regression``): ``auto`` values filled in, keys that do not apply rejected with
        ``RecipeError`` located at the field. The recipe parser calls it; the default
        accepts every task unchanged.
        """
        return self

    def requires(self) -> dict[str, str]:
        """Stage types that must run before this one, each with the config key that needs
        it (``occ.plan`` checks the order before any work). Default: none."""
        return {}


@dataclass
class StageResult:
    """What a stage returns besides the changed model: facts for the report.

    ``details`` is JSON-serialisable (per-layer sparsity, chosen bits, exit shares ...).
    ``notes`` are short human sentences. Figures common to every stage (accuracy, params,
    MACs, BitOps, bytes) are measured by ``occ.api`` after the stage, not here.
    """

    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


RunFn = Callable[["RunContext", Any], StageResult]


@dataclass(frozen=True)
class StageInfo:
    """A registered stage: its name, config class, run function and one-line summary."""

    name: str
    config: type
    run: RunFn
    summary: str


_STAGES: dict[str, StageInfo] = {}


def register_stage(name: str, config: type) -> Callable[[RunFn], RunFn]:
    """Register ``run`` as the stage ``name`` with config dataclass ``config``."""

    def decorate(run: RunFn) -> RunFn:
        if name in _STAGES:
            raise ValueError(f"stage {name!r} registered twice")
        summary = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else ""
        _STAGES[name] = StageInfo(name=name, config=config, run=run, summary=summary)
        return run

    return decorate


def _load() -> None:
    import occ.stages  # noqa: F401  (fills the registry)


def get_stage(name: str) -> StageInfo:
    """The registered stage ``name``; RecipeError listing the known ones otherwise."""
    _load()
    if name not in _STAGES:
        import difflib

        close = difflib.get_close_matches(str(name), list(_STAGES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown stage type {name!r}{hint}; allowed: "
                          f"{', '.join(list_stages())}")
    return _STAGES[name]


def list_stages() -> list[str]:
    """Names of every registered stage, in the built-in order's rank."""
    from occ.order import CATEGORIES

    _load()
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(_STAGES, key=lambda n: rank.get(_STAGES[n].config().category, len(rank)))


def _type_text(tp: Any) -> str:
    from occ.config import _type_name

    return _type_name(tp).replace("|", "\\|")


def stage_reference() -> str:
    """Markdown reference of every stage's keys (type, default), from the config classes.

    ``docs/STAGES.md`` is this text; a test keeps the two equal.
    """
    import dataclasses
    from typing import get_type_hints

    from occ.config import to_dict

    out = ["# Stage reference", "",
           "Generated from the config dataclasses (`python -m occ.registry > docs/STAGES.md`).",
           "Every stage also takes `device` (`auto` = the run's device).", ""]
    for name in list_stages():
        info = _STAGES[name]
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


if __name__ == "__main__":  # run as a script this module is __main__, not occ.registry
    from occ import registry

    print(registry.stage_reference(), end="")
