"""Recipes: load, validate and dump the YAML that says what to compress and how.

Schema v1 (DESIGN.md): ``version``, ``name``, ``seed``, ``model``, ``data``, ``order``,
``stages`` (each with ``type`` plus that stage's own config keys), ``output``, and the
optional ``device``. YAML is read with PyYAML's safe loader only (``occ.safe_yaml``: bounded,
YAML 1.2 numbers). Every error names the file
and the path of the offending key (``recipe.yaml: stages[2].sparsity: ...``).

No torch here: ``occ validate`` runs on this module alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from occ.config import check, from_dict, reject_unknown, to_dict
from occ.errors import ModelError, RecipeError
from occ.techniques.registry import get_stage, list_stages, repeatable, second_singleton
from occ.techniques.spec import StageConfig

RECIPE_VERSION = 1


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
    """Which data to train, calibrate and evaluate on, and how its pixels are preprocessed
    (see ``occ.data`` and ``occ.data.preprocess``).

    ``dataset`` is a built-in name or a ``pkg.module:callable`` returning the splits (needs
    ``--trust-code``). ``val_size`` ``None`` (auto) holds out ``min(500, train // 5)``.
    ``mean`` / ``std`` ``None``: the dataset's own (ImageNet statistics for imagefolder).
    ``channels`` (imagefolder only): 3 (RGB, the default) or 1 (grayscale, for a
    one-channel model); ``mean`` / ``std`` then list one value per channel (or one for all).
    """

    dataset: str = "mnist5k"
    batch_size: int = 128
    root: str | None = None
    val_size: int | None = None
    pad_to: int | None = None
    image_size: int | None = None
    limit_train: int | None = None
    num_workers: int = 0
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: int | None = None
    crop: int | None = None
    channel_order: Literal["rgb", "bgr"] = "rgb"
    augment: list[str] = field(default_factory=list)
    transform: str | None = None
    calib_size: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        from occ.data.checks import check_spec

        check_spec(self)


@dataclass(frozen=True)
class GuardSpec:
    """Quality gates checked on the validation split after every stage (``occ.engine.gates``).

    Attributes:
        enabled: ``false`` turns every gate off (``occ compress --no-guard`` too).
        max_stage_drop: classification: the most val accuracy points one stage may lose
            (None: no limit); a stage that ends at or near chance fails in any case.
        max_mae_factor: regression: the most a stage may multiply the val MAE by (None:
            no limit); a stage no better than predicting a constant fails in any case.
    """

    enabled: bool = True
    max_stage_drop: float | None = 5.0
    max_mae_factor: float | None = 1.5

    def __post_init__(self) -> None:
        check(self.max_stage_drop is None or 0 <= self.max_stage_drop <= 100, "max_stage_drop",
              f"must be accuracy points in [0, 100], got {self.max_stage_drop}")
        check(self.max_mae_factor is None or self.max_mae_factor >= 1, "max_mae_factor",
              f"must be >= 1 (a factor on the MAE), got {self.max_mae_factor}")


@dataclass(frozen=True)
class Stage:
    """One entry of ``stages``: its type and its validated config."""

    type: str
    config: StageConfig

    @property
    def category(self) -> str:
        """The order category of this stage (see ``occ.techniques.registry.categories``)."""
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
    """A validated recipe. ``stages`` are in the order written (see ``occ.engine.plan``)."""

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
    guard: GuardSpec = field(default_factory=GuardSpec)
    source: str = field(default="<recipe>", compare=False)
    # whether the document named its dataset (a ``data:`` with ``dataset``) or left the
    # default: ``occ.compress(model, recipe)`` refuses the default without train_data=
    data_named: bool = field(default=True, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, defaults filled in; ``parse_recipe`` reads it back equal."""
        return {
            "version": self.version, "name": self.name, "seed": self.seed,
            "model": to_dict(self.model), "data": to_dict(self.data), "order": self.order,
            "device": self.device, "task": self.task, "loss": self.loss,
            "min_accuracy": self.min_accuracy, "max_mae": self.max_mae,
            "guard": to_dict(self.guard), "stages": [s.to_dict() for s in self.stages],
            "output": self.output,
        }


_TOP_KEYS = ("version", "name", "seed", "model", "data", "task", "loss", "order", "device",
             "min_accuracy", "max_mae", "guard", "stages", "output")


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
    reject_unknown(data, _TOP_KEYS, where=source)
    for key in ("version", "model", "stages"):
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
    name = head.name if head.name is not None else default_name(source)
    return Recipe(version=RECIPE_VERSION, name=name, model=head.model, stages=stages,
                  seed=head.seed, data=head.data, order=head.order, output=head.output,
                  device=head.device, min_accuracy=head.min_accuracy, task=task, loss=loss,
                  max_mae=head.max_mae, guard=head.guard, source=source,
                  data_named=isinstance(data.get("data"), dict) and "dataset" in data["data"])


def default_name(source: str) -> str:
    """A recipe's name when it gives none: its file's stem (``recipes/demo.yaml`` -> ``demo``),
    with any character a run name may not hold (``occ.domains.check_name``) made ``-``."""
    import re
    import unicodedata

    stem = Path(source).stem if source and not source.startswith("<") else ""
    stem = unicodedata.normalize("NFKC", stem)
    stem = re.sub(r"[^A-Za-z0-9._+-]", "-", stem).lstrip(".-")[:64]
    return stem or "recipe"


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

    model: ModelSpec
    name: str | None = None
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    order: Literal["auto", "as-written"] = "auto"
    output: str | None = None
    device: str = "auto"
    task: Literal["auto", "classification", "regression"] = "auto"
    loss: Literal["auto", "cross_entropy", "mse", "l1"] = "auto"
    min_accuracy: float | None = None
    max_mae: float | None = None
    guard: GuardSpec = field(default_factory=GuardSpec)

    def __post_init__(self) -> None:
        check(self.name is None or bool(self.name.strip()), "name", "must not be empty")
        check(self.min_accuracy is None or 0 <= self.min_accuracy <= 100, "min_accuracy",
              f"must be a percentage in [0, 100], got {self.min_accuracy}")
        check(self.max_mae is None or self.max_mae > 0, "max_mae",
              f"must be > 0 (target units), got {self.max_mae}")
        from occ.domains import check_device, check_name, check_seed

        check_seed(self.seed)
        check_device(self.device)
        if self.name is not None:
            check_name(self.name)


def _check_duplicates(stages: tuple[Stage, ...], source: str) -> None:
    found = second_singleton([stage.type for stage in stages])
    if found is not None:
        i, first = found
        raise RecipeError(f"a second {stages[i].type} stage (first is stages[{first}]); "
                          f"{repeatable()}", where=f"{source}: stages[{i}].type")


def load_recipe(path: str | os.PathLike[str], *, check_files: bool = True) -> Recipe:
    """Read and validate a recipe file.

    ``check_files=False`` skips the check that ``model.checkpoint`` exists, for callers
    that replace it (``occ compress --checkpoint``) and check the replacement instead.

    Raises:
        RecipeError: unreadable file, invalid YAML, or any schema error (located).
    """
    from occ.safe_yaml import read_recipe_text, safe_load

    name = str(path)
    data = safe_load(read_recipe_text(path), where=name)
    from occ.paths import resolve_recipe_paths

    # Relative paths mean "next to the recipe", whatever the working directory.
    written = data.get("model") if isinstance(data, dict) else None
    written = written.get("checkpoint") if isinstance(written, dict) else None
    data = resolve_recipe_paths(data, Path(path).parent)
    recipe = parse_recipe(data, source=name)
    ckpt = recipe.model.checkpoint
    if check_files and ckpt is not None and not os.path.isfile(ckpt):
        if os.path.lexists(ckpt):  # a FIFO, device, directory, bad link
            from occ.limits import check_input_file

            check_input_file(ckpt, error=RecipeError, what="checkpoint")
        where = "" if written == ckpt else f" (relative to the recipe's folder: {ckpt})"
        raise RecipeError(f"file not found: {written}{where}", where=f"{name}: model.checkpoint")
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text (defaults filled in); ``load_recipe`` reads it back equal."""
    from occ.safe_yaml import safe_dump

    return safe_dump(recipe.to_dict())


def with_stages(recipe: Recipe, stages: tuple[Stage, ...]) -> Recipe:
    """A copy of ``recipe`` with ``stages`` replaced (used for the resolved recipe)."""
    return replace(recipe, stages=stages)


__all__ = [
    "DataSpec", "ModelSpec", "Recipe", "Stage", "dump_recipe", "load_recipe",
    "parse_recipe", "with_stages",
]
