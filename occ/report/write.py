"""Writing a report's files: ``report.json``, ``report.md``, ``report.html``, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from occ.errors import OccError
from occ.io import atomic_write_files
from occ.report.data import Report, json_safe, load_report, to_json
from occ.report.html import to_html
from occ.report.markdown import to_markdown


def report_files(report: Report, out_dir: str | Path) -> dict[Path, str]:
    """``report.json``, ``report.md`` and ``report.html`` rendered, by their paths in
    ``out_dir``, not yet written (a run writes them with its artifact, all rendered first)."""
    out = Path(out_dir)
    return {out / "report.json": to_json(report), **_views(report, out)}


def _views(report: Report, out: Path) -> dict[Path, str]:
    return {out / "report.md": to_markdown(report), out / "report.html": to_html(report)}


def _write_views(report: Report, out: Path) -> list[str]:
    views = _views(report, out)  # both rendered, and both targets checked, before writing
    return [str(path) for path in atomic_write_files(views)]


def render(out_dir: str | Path) -> dict[str, Any]:
    """Re-render ``report.md`` and ``report.html`` from ``out_dir/report.json``.

    Both are rendered before either is written: a report.json whose fields have the
    wrong types changes neither.
    """
    report = load_report(out_dir)
    try:
        files = _write_views(report, Path(report.out_dir))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError,
            OverflowError) as err:  # fields of wrong types or out of range
        where = str(Path(report.out_dir) / "report.json")
        raise OccError(f"not an occ report (cannot render it: {err!r})", where=where) from None
    except OSError as err:  # a read-only folder: bad input, not a bug
        raise OccError(f"cannot write: {err.strerror or err}",
                       where=err.filename or str(report.out_dir)) from None
    return {"report": str(Path(report.out_dir) / "report.json"), "written": files,
            "summary": json_safe(report.summary())}
