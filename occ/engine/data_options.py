"""Data-spec fields a command sets from its options rather than from a recipe.

``occ train`` builds its whole ``DataSpec`` from options (``--data``, ``--channels``,
``--image-size`` ...); ``occ eval`` lays ``--channels`` / ``--image-size`` / ``--mean`` /
``--std`` over the spec a file records. Either way a bad value must be named by the
option the user typed (``--channels: must be 1 (grayscale) or 3 (RGB), got 2``), not by
the recipe field it became (``data.channels``), which the user never wrote. This module
is the one place that applies such options and renames their errors; each command keeps
its own map from field to option (``occ.engine.train_settings.TRAIN_OPTIONS``,
:data:`EVAL_OPTIONS`).

No torch here: ``occ train --nproc`` checks its options in the parent process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from occ.errors import OccError
from occ.limits import MAX_BATCH_SIZE
from occ.recipe import DataSpec

EVAL_OPTIONS: dict[str, str] = {"dataset": "--data", "root": "--root", "mean": "--mean",
                                "std": "--std", "channels": "--channels",
                                "image_size": "--image-size"}
"""``occ eval``'s option for each data field it sets (errors name the option)."""


def option_for(where: str | None, options: Mapping[str, str],
               given: Collection[str] | None = None) -> str | None:
    """The option that set the data field an error is located at, or None.

    Args:
        where: The error's location: ``data.<field>`` (a spec read with ``where="data"``,
            ``load_data``) or ``<field>`` (``DataSpec`` itself).
        options: Field name to option (``{"channels": "--channels"}``).
        given: The fields the options set (None: every field of ``options``); an error
            about any other field is the file's or the default's, and keeps its name.
    """
    field = (where or "").removeprefix("data.")
    if given is not None and field not in given:
        return None
    return options.get(field)


@contextmanager
def named_by_options(options: Mapping[str, str],
                     given: Collection[str] | None = None) -> Iterator[None]:
    """Within: an ``OccError`` about a data field an option set is raised again located at
    that option (:func:`option_for`); any other error passes unchanged."""
    try:
        yield
    except OccError as err:
        option = option_for(err.where, options, given)
        if option is None:
            raise
        raise type(err)(err.message, where=option) from None


OPTIONS, RECORDED, DEFAULT = "options", "recorded", "default"
"""Where the preprocessing ``occ eval`` used comes from: its options, the file's record,
or the dataset's default (``preprocess_source`` for the normalisation, ``input_source``
for the channels and size)."""

_NORMALISATION = ("mean", "std")
_INPUT = ("channels", "image_size")


@dataclass(frozen=True)
class EvalData:
    """The data ``occ eval`` measures on, and where its preprocessing comes from.

    Attributes:
        spec: The recorded spec with the options laid over it.
        given: The fields the options set (``dataset``, ``root``, ``mean`` ...); errors
            about them name the option (:func:`named_by_options` with
            :data:`EVAL_OPTIONS`).
        normalisation: :data:`OPTIONS`, :data:`RECORDED` or :data:`DEFAULT`.
        input: The same for the channels and image size.
        origins: Field name to where in the file its value was read (``model.occ: header
            recipe.data``) for the fields the file's record set; errors about them name
            it (:func:`named_by_file`).
    """

    spec: DataSpec
    given: frozenset[str]
    normalisation: str
    input: str
    origins: Mapping[str, str] = field(default_factory=dict)

    def sources(self) -> dict[str, Any]:
        """The result keys that say where the preprocessing comes from:
        ``preprocess_source``, ``input_source`` and ``preprocess_options`` (the options
        that set it, e.g. ``["--channels", "--image-size"]``)."""
        return {"preprocess_source": self.normalisation, "input_source": self.input,
                "preprocess_options": [EVAL_OPTIONS[k] for k in (*_NORMALISATION, *_INPUT)
                                       if k in self.given]}


def eval_data(recorded: Mapping[str, Any] | None, options: Mapping[str, Any], *,
              preprocess: Mapping[str, Any] | None = None, where: str | None = None,
              preprocess_where: str | None = None) -> EvalData:
    """The data to evaluate a file on: the spec it records with ``occ eval``'s options
    (``options``: ``dataset``, ``root``, ``mean``, ``std``, ``channels``,
    ``image_size``; None: as recorded) laid over it.

    Another ``dataset`` than the recorded one starts from a blank spec (nothing recorded
    applies to other data). ``preprocess`` (the resolved mean / std a file was measured
    with) fills a recorded spec that left them to the dataset's default, so a later change
    of default never changes what a file is evaluated with. ``image_size`` replaces a
    recorded ``resize`` / ``crop``. The options are merged before the spec is checked, so
    ``--root`` can stand in for a recorded folder that has moved.

    ``where`` / ``preprocess_where``: where in the file ``recorded`` / ``preprocess`` were
    read (``model.occ: header recipe.data``); an error about a value from there names it.
    A recorded ``batch_size`` over a recipe's cap (a file written before it) is read as
    the cap: eval bounds its batch anyway (``evaluate.eval_batch``).

    Raises:
        RecipeError: a bad option (named by the option: ``--channels: must be 1 ...``), a
            bad recorded value (named by the file and field), or ``channels`` that the
            recorded mean / std do not fit (then ``--mean`` / ``--std`` are needed too).
    """
    from occ.config import from_dict

    given = {k: list(v) if isinstance(v, (list, tuple)) else v
             for k, v in options.items() if v is not None}
    if isinstance(given.get("root"), str):  # absolute: an export records it, read anywhere
        given["root"] = absolute_root(given["root"])
    base = dict(recorded or {})
    origins = {str(k): where for k in base} if where else {}
    if given.get("dataset", base.get("dataset", DataSpec.dataset)) != base.get(
            "dataset", DataSpec.dataset):
        base, origins = {}, {}
    elif isinstance(preprocess, Mapping):
        for key in _NORMALISATION:
            if base.get(key) is None and isinstance(preprocess.get(key), list):
                base[key] = list(preprocess[key])
                origins.pop(key, None)
                if preprocess_where:
                    origins[key] = preprocess_where
    recorded_batch = base.get("batch_size")
    if isinstance(recorded_batch, int) and recorded_batch > MAX_BATCH_SIZE:
        base["batch_size"] = MAX_BATCH_SIZE  # a file from before the cap: eval shrinks it
    if "image_size" in given:  # the square side given replaces a recorded resize + crop
        for key in ("resize", "crop"):
            base.pop(key, None)
    origins = {k: v for k, v in origins.items() if k not in given}
    _check_recorded_normalisation(base, given)
    with (named_by_options(EVAL_OPTIONS, given), _named_by_file(origins, where),
          _moved_hint(given)):
        spec = from_dict(DataSpec, {**base, **given}, where="data")
    check_root_used(spec, "root" in given)
    # a record of the data sets its channels and size, even when it leaves them to the
    # dataset: the model was measured at those
    recorded_input = RECORDED if base else DEFAULT
    return EvalData(spec=spec, given=frozenset(given),
                    normalisation=_source(given, _NORMALISATION, RECORDED if any(
                        base.get(k) is not None for k in _NORMALISATION) else DEFAULT),
                    input=_source(given, _INPUT, recorded_input), origins=origins)


def absolute_root(root: str) -> str:
    """``--root`` made absolute (``~`` expanded); an empty one stays empty, for the spec's
    check to refuse (made absolute it would silently be the working directory)."""
    return os.path.abspath(os.path.expanduser(root)) if root else root


def check_root_used(spec: DataSpec, given: bool) -> None:
    """Refuse a ``--root`` (``given``) for data that reads no folder: embedded data, or a
    ``pkg.module:callable`` that loads its own; ignored, it would hide a wrong ``--data``.

    Raises:
        RecipeError: at ``--root``.
    """
    from occ.data.names import EMBEDDED, canonical_name, needs_root
    from occ.errors import RecipeError

    if given and not needs_root(spec.dataset):
        how = ("is embedded in occ" if canonical_name(spec.dataset) in EMBEDDED
               else "is loaded by its own code")
        raise RecipeError(f"{spec.dataset} {how} and reads no folder; leave --root out",
                          where="--root")


def named_by_file(chosen: EvalData) -> AbstractContextManager[None]:
    """Within: an ``OccError`` about a data field whose value ``chosen`` read from a file
    (``data.dataset: refused ...``) is raised again located at that file and field
    (``model.occ: header recipe.data.dataset: refused ...``); any other passes unchanged."""
    return _named_by_file(chosen.origins)


@contextmanager
def _named_by_file(origins: Mapping[str, str], record: str | None = None) -> Iterator[None]:
    """:func:`named_by_file` for field origins ``origins``; an error about the recorded
    mapping as a whole (``data: unknown key ...``) names ``record``, where it was read."""
    try:
        yield
    except OccError as err:
        inner = (err.where or "").removeprefix("data")
        name = re.split(r"[.\[]", inner.removeprefix("."), maxsplit=1)[0]
        if err.where == "data" and record and origins:
            prefix: str | None = record
        elif err.where and err.where.startswith(("data.", "data[")):
            prefix = origins.get(name)
        else:
            prefix = None
        if prefix is None:
            raise
        raise type(err)(err.message, where=f"{prefix}{inner}") from None


@contextmanager
def _moved_hint(given: Mapping[str, Any]) -> Iterator[None]:
    """Within: a recorded folder that is gone (no ``--root`` given) says how to point at
    where the data is now."""
    try:
        yield
    except OccError as err:
        if err.where != "data.root" or "root" in given or "not found" not in err.message:
            raise
        raise type(err)(f"{err.message} (recorded with the model); if the data moved, pass "
                        "--root with where it is now", where=err.where) from None


def _check_recorded_normalisation(base: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """``--channels`` over a recorded mean / std for other channels needs ``--mean`` /
    ``--std`` too (the record cannot say how the other channels were normalised)."""
    from occ.data.preprocess import IMAGE_CHANNELS, normalisation_problem
    from occ.errors import RecipeError

    channels = given.get("channels")
    if channels not in IMAGE_CHANNELS:  # None, or a bad value the spec check names
        return
    for key in _NORMALISATION:
        values = base.get(key)
        if key in given or not isinstance(values, list):
            continue
        if normalisation_problem(key, values, channels) is not None:
            raise RecipeError(f"the recorded {key} {values} is for {len(values)}-channel "
                              f"images, not {channels}-channel ones; pass --mean and --std "
                              "for those too", where="--channels")


def _source(given: Mapping[str, Any], options: tuple[str, ...], otherwise: str) -> str:
    """:data:`OPTIONS` if any of ``options`` was given, else ``otherwise``."""
    return OPTIONS if any(k in given for k in options) else otherwise


__all__ = ["DEFAULT", "EVAL_OPTIONS", "OPTIONS", "RECORDED", "EvalData", "absolute_root",
           "check_root_used", "eval_data", "named_by_file", "named_by_options", "option_for"]
