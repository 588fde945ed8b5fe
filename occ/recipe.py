"""Recipes: load, validate and dump the YAML that says what to compress and how.

Schema v1 (DESIGN.md): ``version``, ``name``, ``seed``, ``model``, ``data``, ``order``,
``stages`` (each with ``type`` plus that stage's own config keys), ``output``, and the
optional ``device``. YAML is read with ``yaml.safe_load`` only. Every error names the file
and the path of the offending key (``recipe.yaml: stages[2].sparsity: ...``).

No torch here: ``occ validate`` runs on this module alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml

from occ.config import check, from_dict, to_dict
from occ.errors import ModelError, RecipeError
from occ.registry import StageConfig, get_stage, list_stages

RECIPE_VERSION = 1
# Stage types that make sense at most once per recipe.
SINGLETON_STAGES = ("distill", "quantize", "early_exit", "entropy_code")


@dataclass(frozen=True)
class ModelSpec:
    """Which network to compress: a zoo name, ``torchvision.<fn>`` or ``pkg.module:callable``."""

    arch: str
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from occ.models.names import check_arch_name

        try:
            check_arch_name(self.arch)
        except ModelError as err:
            raise RecipeError(err.message, where="arch") from None


@dataclass(frozen=True)
class DataSpec:
    """Which data to train, calibrate and evaluate on (see ``occ.data``)."""

    dataset: str = "mnist5k"
    batch_size: int = 128
    root: str | None = None
    val_size: int = 500
    pad_to: int | None = None
    image_size: int | None = None
    limit_train: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        from occ.data.names import DATASETS

        check(self.dataset in DATASETS, "dataset",
              f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.val_size >= 0, "val_size", f"must be >= 0, got {self.val_size}")
        from occ.limits import MAX_IMAGE_SIDE, MAX_WORKERS

        check(0 <= self.num_workers <= MAX_WORKERS, "num_workers",
              f"must be in [0, {MAX_WORKERS}], got {self.num_workers}")
        for key in ("pad_to", "image_size"):
            side = getattr(self, key)
            check(side is None or 1 <= side <= MAX_IMAGE_SIDE, key,
                  f"must be in [1, {MAX_IMAGE_SIDE}] pixels, got {side}")
        check(self.limit_train is None or self.limit_train >= 1, "limit_train",
              f"must be >= 1, got {self.limit_train}")
        from occ.data.names import EMBEDDED

        if self.dataset not in EMBEDDED:
            check(self.root is not None, "root",
                  f"is required for {self.dataset} (never downloaded)")
            check(os.path.isdir(str(self.root)), "root", f"directory not found: {self.root}")


@dataclass(frozen=True)
class Stage:
    """One entry of ``stages``: its type and its validated config."""

    type: str
    config: StageConfig

    @property
    def category(self) -> str:
        """The order category of this stage (see ``occ.order.CATEGORIES``)."""
        return self.config.category

    @property
    def label(self) -> str:
        """A short human name: ``prune(channel)``, ``quantize`` ..."""
        method = getattr(self.config, "method", None)
        return f"{self.type}({method})" if method else self.type

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., **config}`` as plain data."""
        return {"type": self.type, **to_dict(self.config)}


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``stages`` are in the order written (see ``occ.plan``)."""

    version: int
    name: str
    model: ModelSpec
    stages: tuple[Stage, ...]
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    order: Literal["auto", "as-written"] = "auto"
    output: str | None = None
    device: str = "auto"
    min_accuracy: float | None = None
    task: Literal["classification", "regression"] = "classification"
    loss: Literal["cross_entropy", "mse", "l1"] = "cross_entropy"
    max_mae: float | None = None
    source: str = field(default="<recipe>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, defaults filled in; ``parse_recipe`` reads it back equal."""
        return {
            "version": self.version, "name": self.name, "seed": self.seed,
            "model": to_dict(self.model), "data": to_dict(self.data), "order": self.order,
            "device": self.device, "task": self.task, "loss": self.loss,
            "min_accuracy": self.min_accuracy, "max_mae": self.max_mae,
            "stages": [s.to_dict() for s in self.stages], "output": self.output,
        }


_TOP_KEYS = ("version", "name", "seed", "model", "data", "task", "loss", "order", "device",
             "min_accuracy", "max_mae", "stages", "output")


def _parse_stage(raw: Any, where: str) -> Stage:
    if not isinstance(raw, dict):
        raise RecipeError(f"must be a mapping with a 'type' key, got {raw!r}", where=where)
    if "type" not in raw:
        raise RecipeError(f"is required; allowed: {', '.join(list_stages())}",
                          where=f"{where}.type")
    kind = raw["type"]
    if not isinstance(kind, str):
        raise RecipeError(f"must be a string, got {kind!r}", where=f"{where}.type")
    try:
        info = get_stage(kind)
    except RecipeError as err:
        raise err.located(f"{where}.type") from None
    body = {k: v for k, v in raw.items() if k != "type"}
    config = from_dict(info.config, body, where=where)
    from occ.domains import check_device

    try:
        check_device(config.device)
    except RecipeError as err:
        raise err.located(where) from None
    return Stage(type=kind, config=config)


def parse_recipe(data: Any, *, source: str = "<recipe>") -> Recipe:
    """Validate plain recipe data (already parsed YAML) into a ``Recipe``.

    Raises:
        RecipeError: located at ``source: path.to.key``, naming the allowed values.
    """
    if not isinstance(data, dict):
        raise RecipeError(f"must be a mapping of {', '.join(_TOP_KEYS)}, got {type(data).__name__}",
                          where=source)
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise RecipeError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(_TOP_KEYS)}",
                          where=source)
    for key in ("version", "name", "model", "stages"):
        if key not in data:
            raise RecipeError("is required", where=f"{source}: {key}")
    if data["version"] != RECIPE_VERSION or isinstance(data["version"], bool):
        raise RecipeError(f"must be {RECIPE_VERSION}, got {data['version']!r}",
                          where=f"{source}: version")
    stages_raw = data["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"must be a non-empty list of stages, got {stages_raw!r}",
                          where=f"{source}: stages")
    stages = tuple(_parse_stage(s, f"{source}: stages[{i}]") for i, s in enumerate(stages_raw))
    _check_duplicates(stages, source)
    body = {k: v for k, v in data.items() if k not in ("stages", "version")}
    head = from_dict(_RecipeHead, body, where=f"{source}:")
    task, loss = _resolve_task(head, source)
    stages = tuple(_for_task(s, task, f"{source}: stages[{i}]") for i, s in enumerate(stages))
    return Recipe(version=RECIPE_VERSION, name=head.name, model=head.model, stages=stages,
                  seed=head.seed, data=head.data, order=head.order, output=head.output,
                  device=head.device, min_accuracy=head.min_accuracy, task=task, loss=loss,
                  max_mae=head.max_mae, source=source)


def _resolve_task(head: _RecipeHead, source: str) -> tuple[str, str]:
    """(task, loss) with ``auto`` filled in from the dataset; mismatches are errors.

    The task is the dataset's (``mnist5k-rotation`` is regression, every other dataset
    classification); a recipe that says ``task:`` is checked against it, and the
    quality floor (``min_accuracy`` / ``max_mae``) and ``loss`` must suit it.
    """
    from occ.data.names import REGRESSION, task_of

    actual = task_of(head.data.dataset)
    if head.task not in ("auto", actual):
        hint = (f"; regression datasets: {', '.join(REGRESSION)}" if head.task == "regression"
                else "")
        raise RecipeError(f"is {head.task} but data.dataset {head.data.dataset} is a "
                          f"{actual} dataset{hint}", where=f"{source}: task")
    if actual == "regression":
        check(head.min_accuracy is None, f"{source}: min_accuracy",
              "is a classification floor (percent); regression recipes use max_mae "
              "(target units)")
    else:
        check(head.max_mae is None, f"{source}: max_mae",
              f"applies to regression tasks; {head.data.dataset} is classification "
              "(use min_accuracy)")
    return actual, resolve_loss(head.loss, actual, where=f"{source}: loss")


def resolve_loss(loss: str, task: str, *, where: str = "loss") -> str:
    """The training loss for ``task``: ``auto`` filled in, a loss of the other task refused.

    Classification trains on ``cross_entropy``; regression on ``mse`` (``auto``) or ``l1``.
    """
    allowed = ("mse", "l1") if task == "regression" else ("cross_entropy",)
    if loss == "auto":
        return allowed[0]
    check(loss in allowed, where, f"{loss} does not apply to {task}; allowed: "
          f"{', '.join(('auto', *allowed))}")
    return loss


def _for_task(stage: Stage, task: str, where: str) -> Stage:
    try:
        return replace(stage, config=stage.config.for_task(task))
    except RecipeError as err:
        raise err.located(where) from None


@dataclass(frozen=True)
class _RecipeHead:
    """The scalar part of a recipe, validated by ``from_dict`` like any config."""

    name: str
    model: ModelSpec
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    order: Literal["auto", "as-written"] = "auto"
    output: str | None = None
    device: str = "auto"
    task: Literal["auto", "classification", "regression"] = "auto"
    loss: Literal["auto", "cross_entropy", "mse", "l1"] = "auto"
    min_accuracy: float | None = None
    max_mae: float | None = None

    def __post_init__(self) -> None:
        check(bool(self.name.strip()), "name", "must not be empty")
        check(self.min_accuracy is None or 0 <= self.min_accuracy <= 100, "min_accuracy",
              f"must be a percentage in [0, 100], got {self.min_accuracy}")
        check(self.max_mae is None or self.max_mae > 0, "max_mae",
              f"must be > 0 (target units), got {self.max_mae}")
        from occ.domains import check_device, check_name, check_seed

        check_seed(self.seed)
        check_device(self.device)
        check_name(self.name)


def _check_duplicates(stages: tuple[Stage, ...], source: str) -> None:
    seen: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage.type in SINGLETON_STAGES and stage.type in seen:
            raise RecipeError(
                f"a second {stage.type} stage (first is stages[{seen[stage.type]}]); "
                f"only prune may appear more than once",
                where=f"{source}: stages[{i}].type",
            )
        seen.setdefault(stage.type, i)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file.

    Raises:
        RecipeError: unreadable file, invalid YAML, or any schema error (located).
    """
    from occ.safe_yaml import read_recipe_text, safe_load

    name = str(path)
    recipe = parse_recipe(safe_load(read_recipe_text(path), where=name), source=name)
    if recipe.model.checkpoint is not None and not os.path.isfile(recipe.model.checkpoint):
        if os.path.lexists(recipe.model.checkpoint):  # a FIFO, device, directory, bad link
            from occ.limits import check_input_file

            check_input_file(recipe.model.checkpoint, error=RecipeError, what="checkpoint")
        raise RecipeError(f"file not found: {recipe.model.checkpoint}",
                          where=f"{name}: model.checkpoint")
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text (defaults filled in); ``load_recipe`` reads it back equal."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None)


def with_stages(recipe: Recipe, stages: tuple[Stage, ...]) -> Recipe:
    """A copy of ``recipe`` with ``stages`` replaced (used for the resolved recipe)."""
    return replace(recipe, stages=stages)


__all__ = [
    "DataSpec", "ModelSpec", "Recipe", "Stage", "dump_recipe", "load_recipe",
    "parse_recipe", "with_stages",
]
