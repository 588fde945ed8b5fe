"""The ``occ`` command line: thin Typer commands over ``occ.api``.

Each command normalises its options, calls one library function and renders the result;
``occ.cli.app`` holds the app and the shared error handling and output, the commands live
in ``plan`` (torch-free), ``run`` and ``artifacts``. torch is imported only by commands
that need tensors.
"""

# ruff: noqa: I001, F401  (the imports register the commands; their order is --help's)
from occ.cli.app import app
from occ.cli import plan
from occ.cli import run
from occ.cli import artifacts

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
