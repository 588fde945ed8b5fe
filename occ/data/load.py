"""``load_data``: one entry point from a data spec to a :class:`~occ.data.bundle.DataBundle`."""

from __future__ import annotations

from occ.data.bundle import DataBundle, DataSpecLike
from occ.data.names import EMBEDDED, IMAGEFOLDER, canonical_name, is_callable_ref


def load_data(spec: DataSpecLike, *, seed: int = 0, trust_code: bool = False,
              search: tuple[str, ...] = ()) -> DataBundle:
    """Load the train / val / test splits ``spec`` describes. Nothing is downloaded.

    Args:
        spec: An ``occ.recipe.DataSpec`` or any object with its attributes (``dataset``,
            ``root``, ``val_size``, ``pad_to``, ``image_size``, ``limit_train``).
        trust_code: Allow a ``pkg.module:callable`` dataset or transform to be imported
            (that runs its code); without it such a spec is refused.
        search: Folders to import user callables from (the recipe's folder).
        seed: The run's seed. The splits deliberately ignore it: they are fixed, so a
            baseline trained under one seed never calibrates on its own training samples
            under another, and test accuracy is comparable across runs. Shuffling is seeded
            per loader (:meth:`DataBundle.loader`).

    Returns:
        The dataset's splits, class count and input shape.

    Raises:
        DataError: If the name is unknown, a root is missing or malformed, or a size is out
            of range; ``where`` names the ``data.*`` field.
    """
    del seed  # accepted for a stable signature; see above
    name = canonical_name(spec.dataset)
    if is_callable_ref(name):
        from occ.data.custom import load_callable_dataset

        return load_callable_dataset(spec, trust_code=trust_code, search=search)
    # Imported per branch: torchvision alone takes seconds to import and the embedded
    # datasets do not need it.
    if name in EMBEDDED:
        from occ.data import embedded

        if name == "mnist5k-rotation":
            return embedded.load_mnist5k_rotation(spec)
        return embedded.load_mnist5k(spec) if name == "mnist5k" else embedded.load_digits(spec)
    from occ.data import torchvision_sets

    user_transform = _user_transform(getattr(spec, "transform", None), trust_code, search)
    if name == IMAGEFOLDER:
        return torchvision_sets.load_imagefolder(spec, user_transform=user_transform)
    return torchvision_sets.load_torchvision(name, spec, user_transform=user_transform)


def _user_transform(ref: str | None, trust_code: bool, search: tuple[str, ...]):
    """Call ``data.transform`` (``pkg.module:callable``, trusted) for its train transform."""
    if ref is None:
        return None
    from occ.callables import import_callable, require_trust
    from occ.errors import DataError

    require_trust(ref, trust_code=trust_code, where="data.transform")
    fn = import_callable(ref, where="data.transform", search=search)
    try:
        transform = fn()
    except Exception as exc:  # the user's code failed: bad input, named
        raise DataError(f"{ref!r} raised {exc!r}", where="data.transform") from exc
    if not callable(transform):
        raise DataError(f"{ref!r} returned {type(transform).__name__}, not a transform",
                        where="data.transform")
    return transform
