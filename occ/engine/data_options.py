"""Data-spec fields a command sets from its options rather than from a recipe.

``occ train`` builds its whole ``DataSpec`` from options (``--data``, ``--channels``,
``--image-size`` ...). A bad value must be named by the option the user typed
(``--channels: must be 1 (grayscale) or 3 (RGB), got 2``), not by the recipe field it
became (``data.channels``), which the user never wrote. This module is the one place that
renames such errors; each command keeps its own map from field to option
(``occ.engine.train_settings.TRAIN_OPTIONS``).

No torch here: ``occ train --nproc`` checks its options in the parent process.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from occ.errors import OccError


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


__all__ = ["named_by_options", "option_for"]
