"""Shared parts of the ``occ`` command line: the Typer app, error handling, output.

Library errors (``OccError``) become one red line on stderr and their exit code (2 bad
input, 1 run failed, a file that could not be written included; 141 when stdout's reader
went away) here, in one place; ``--debug`` adds the traceback.
``--json`` prints exactly one JSON document on stdout. Human output goes to stderr when
stdout is not a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; older releases depend on click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc


if TYPE_CHECKING:
    from occ.launch import Failure

T = TypeVar("T")


class _OccGroup(TyperGroup):
    """Turns usage errors into one line and exit code 2 (click prints several lines)."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        stdout = sys.stdout  # click swaps in a wrapper when it sees EPIPE
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click_exc.UsageError as err:
            ctx = err.ctx
            cmd = ctx.command_path if ctx is not None else "occ"
            message = f"{cmd}: {err.format_message()} (see --help)"
            argv = sys.argv[1:] if args is None else list(args)
            argv = argv[:argv.index("--")] if "--" in argv else argv  # options end there
            if "--json" in argv:  # the promise holds for usage errors too: a document
                _emit_json({"error": {"message": message, "code": 2, "type": "UsageError",
                                      "where": None}})
            else:
                sys.stderr.write(message + "\n")
            sys.exit(2)
        except typer.Abort:
            sys.stderr.write("occ: aborted\n")
            sys.exit(130)
        except SystemExit as stop:  # click (typer's copy) wrapped stdout in this call: EPIPE
            if (stop.code == 1 and sys.stdout is not stdout
                    and type(sys.stdout).__name__.endswith("PacifyFlushWrapper")):
                sys.exit(141)  # click's answer to a reader that went away (| head): 128 +
            raise  # SIGPIPE, as a C tool ends, not 1 (the run failed)
        except BrokenPipeError:  # the same, at a write click did not see
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(141)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OccGroup, add_completion=False, no_args_is_help=True,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="occ (Order of Compression): chain pruning, quantization, early exit, "
         "distillation and entropy coding in the order that works best.",
)
_state = {"debug": False}
_QUIET_LOGGERS = ("PIL", "matplotlib", "fsspec", "urllib3", "onnxscript", "torch._dynamo")



def _techniques_help() -> str:
    from occ.techniques.registry import techniques_help

    return techniques_help()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TrustCkptOpt = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Allow checkpoints that need full unpickling (runs code!).")]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Allow pkg.module:callable references (model, dataset, transform) "
                         "to be imported: that runs their code.")]


def _version(value: bool) -> None:
    """``occ --version``: print occ's version and stop."""
    if value:
        from occ.version import __version__

        sys.stdout.write(f"occ {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
          version: Annotated[bool, typer.Option(
              "--version", callback=_version, is_eager=True,
              help="Print occ's version and exit.")] = False,
          ) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in _QUIET_LOGGERS:  # -v is for occ's own lines, not image decoders' chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(stderr=not tty, width=None if tty else 140)  # logs: no truncated columns


def _traceback() -> None:
    """With ``--debug``: the traceback of the exception being handled, on stderr (the
    error line, exit code and ``--json`` document follow as without it)."""
    if _state["debug"]:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _run(fn: Callable[[], T], as_json: bool = False) -> T:
    """Call ``fn``; map occ errors to one line + exit code (``--debug`` adds the traceback).

    With ``--json`` the error is a JSON document on stdout instead,
    ``{"error": {"message", "code", "type", "where"}}``, with the same exit code; an
    unexpected exception (a bug in occ, exit 1) too. A ``WriteError`` (a full disk, a
    read-only folder) is the machine's: exit 1, naming the file, not called a bug.
    """
    from occ.errors import OccError
    from occ.io import WriteError

    try:
        return fn()
    except OccError as err:
        _traceback()
        _fail({"message": str(err), "code": err.exit_code, "type": type(err).__name__,
               "where": err.where}, as_json)
    except KeyboardInterrupt:
        _fail({"message": "interrupted", "code": 130, "type": "KeyboardInterrupt",
               "where": None}, as_json, always_stderr=True)
    except WriteError as err:  # the machine's, not occ's: a full disk, a read-only folder
        _traceback()
        _fail({"message": f"{err.filename}: cannot write: {err.strerror} (errno {err.errno});"
                          " nothing more was written", "code": 1, "type": "WriteError",
               "where": None}, as_json)
    except (Exception, RecursionError) as err:  # noqa: BLE001  (a bug: still one line)
        _traceback()
        first = (str(err).strip().splitlines() or [""])[0][:300]
        message = (f"unexpected {type(err).__name__}: {first} "
                   "(a bug in occ; rerun with --debug for the traceback)")
        # --json promises a document on stdout, a bug's included
        _fail({"message": message, "code": 1, "type": type(err).__name__, "where": None},
              as_json)


def _fail(error: Failure, as_json: bool, *, always_stderr: bool = False) -> NoReturn:
    """Report ``error`` (one line on stderr, or with ``--json`` one document on stdout)
    and exit with its code. In a process ``--nproc`` started, the launching process
    reports it instead, once for all of them (``occ.launch``)."""
    from occ.launch import hand_off

    if not hand_off(error):
        if as_json:
            _emit_json({"error": error})
        if always_stderr or not as_json:
            sys.stderr.write(f"error: {error['message']}\n")
    raise typer.Exit(error["code"])


def _seed_list(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as integers (exit 2 with one line otherwise)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        from occ.errors import RecipeError

        raise RecipeError(f"must be comma-separated integers, got {text!r}",
                          where="--seeds") from None


def _channel_values(text: str | None, flag: str) -> list[float] | None:
    """``--mean 0.3,0.3,0.3`` / ``--std ...`` as floats, checked as a recipe's ``data.mean``
    / ``data.std`` are (``occ.data.preprocess.normalisation_problem``); RecipeError naming
    the flag otherwise."""
    from occ.data.preprocess import normalisation_problem
    from occ.errors import RecipeError

    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise RecipeError(f"must be comma-separated numbers (1 or 3, per channel), got "
                          f"{text!r}", where=flag) from None
    problem = normalisation_problem(flag.removeprefix("--"), values)
    if problem is not None:
        raise RecipeError(problem, where=flag)
    return values


def _json_option(text: str | None, flag: str) -> dict[str, Any] | None:
    """Parse a JSON-object option (``--kwargs``); RecipeError naming the flag.

    Bounded like a recipe: its size (``OCC_MAX_RECIPE_BYTES``), values and depth are
    checked on the text before it is parsed (5,000 ``[`` were a RecursionError).
    """
    from occ import safe_json
    from occ.errors import RecipeError
    from occ.limits import MAX_RECIPE_BYTES

    if text is None:
        return None
    value = safe_json.loads(text, max_bytes=MAX_RECIPE_BYTES, error=RecipeError,
                            where=flag, what="value")
    if not isinstance(value, dict):
        raise RecipeError(f"must be a JSON object, got {text!r}", where=flag)
    return value


def _progress():
    """Bars on a terminal; one line per epoch on stderr otherwise (CI, tee, nohup)."""
    if sys.stderr.isatty():
        return _RichProgress()
    from occ.progress import LineProgress

    return LineProgress(sys.stderr)


def _emit_json(doc: Any) -> None:
    from occ.report.data import json_safe  # torch-free; strict JSON has no inf / NaN

    sys.stdout.write(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()  # here, where a reader gone (| head) is seen and ends occ with 141


class _RichProgress:
    """Progress bars on stderr (only when stderr is a terminal; silent in pipelines)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        if not self.console.is_terminal:
            yield from items
            return
        from rich.progress import track

        yield from track(items, total=total, description=description, console=self.console,
                         transient=True)
