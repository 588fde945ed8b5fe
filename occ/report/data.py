"""Reports: what a compression run gained and lost, as JSON, Markdown and HTML.

``Report`` holds the baseline's metrics, one ``StageRecord`` per stage (accuracy,
agreement, params, nonzero, MACs, BitOps, bytes, seconds), the order used and why.
``occ.report.write.report_files`` renders ``report.json`` (strict JSON: non-finite numbers
become null), ``report.md`` and ``report.html`` (one standalone page, plots inline as PNG),
which a run writes atomically with its artifact;
``Report.from_dict`` reads ``report.json`` back so ``render`` (``occ report DIR``) redraws
the other two. ``Report.__rich__`` renders the terminal table. The plots and the page's CSS live in
``occ.report.plots``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from occ.errors import OccError
from occ.report.format import headline, is_regression, num, si

if TYPE_CHECKING:
    from occ.metrics import Metrics


_NUMBER = (int, float)


def _typed(value: Any, kinds: tuple[type, ...], where: str, what: str) -> Any:
    """``value`` if it is one of ``kinds`` (a bool is no number), else OccError at ``where``."""
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    raise OccError(f"must be {what}, got {type(value).__name__}", where=where)


def _metrics(d: dict[str, Any], where: str) -> Metrics:
    from occ.metrics import Metrics  # lazily: occ.metrics imports torch

    _typed(d, (dict,), where, "a mapping")
    known = {f.name for f in fields(Metrics)}
    kept = {k: v for k, v in d.items() if k in known}
    for key, value in kept.items():  # numbers, or null (report.json writes inf as null)
        if key == "exits":
            _typed(value, (dict, type(None)), f"{where}.{key}", "a mapping or null")
        elif key == "layers":
            for i, layer in enumerate(_typed(value, (list,), f"{where}.{key}", "a list")):
                _typed(layer, (dict,), f"{where}.{key}[{i}]", "a mapping")
        else:
            _typed(value, (*_NUMBER, type(None)), f"{where}.{key}", "a number or null")
    try:
        return Metrics(**kept)
    except TypeError as err:
        raise OccError(f"not occ metrics ({err})", where=where) from None


@dataclass
class StageRecord:
    """One stage's outcome."""

    index: int
    type: str
    label: str
    config: dict[str, Any]
    metrics: Metrics
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"index": self.index, "type": self.type, "label": self.label,
                "config": self.config, "metrics": self.metrics.to_dict(),
                "seconds": self.seconds, "details": self.details, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "stage") -> StageRecord:
        """The inverse of ``to_dict``.

        Raises:
            OccError: a field of the wrong type (named), or KeyError: one is missing.
        """
        _typed(d, (dict,), where, "a mapping")
        notes = _typed(d.get("notes") or [], (list,), f"{where}.notes", "a list")
        for i, note in enumerate(notes):
            _typed(note, (str,), f"{where}.notes[{i}]", "a string")
        return cls(index=_typed(d["index"], (int,), f"{where}.index", "an integer"),
                   type=_typed(d["type"], (str,), f"{where}.type", "a string"),
                   label=_typed(d["label"], (str,), f"{where}.label", "a string"),
                   config=_typed(d["config"], (dict,), f"{where}.config", "a mapping"),
                   metrics=_metrics(d["metrics"], f"{where}.metrics"),
                   seconds=_typed(d.get("seconds") or 0.0, _NUMBER, f"{where}.seconds",
                                  "a number"),
                   details=_typed(d.get("details") or {}, (dict,), f"{where}.details",
                                  "a mapping"),
                   notes=list(notes))


@dataclass
class Report:
    """A compression run: baseline, stages, final artifact."""

    name: str
    source: str
    plan: dict[str, Any]
    baseline: Metrics
    device: str = "cpu"
    out_dir: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    artifact: str | None = None
    artifact_bytes: int | None = None
    seconds: float = 0.0

    def record_artifact(self, path: str, size: int) -> None:
        """The written artifact: its path and size, which is also the last stage's (its
        header records the final metrics, which the stage's measurement, made before
        them, could not count)."""
        self.artifact, self.artifact_bytes = path, size
        if self.stages:
            self.stages[-1].metrics.file_sized(size)

    def final_metrics(self) -> Metrics:
        """The metrics after the last stage (the baseline's when there is none)."""
        return self.stages[-1].metrics if self.stages else self.baseline

    def summary(self) -> dict[str, Any]:
        """Headline figures: final accuracy and its change, reduction factors."""
        from occ.metrics import reduction

        base, final = self.baseline, self.final_metrics()
        size = self.artifact_bytes or final.bytes or 0
        change = (None if final.accuracy is None or base.accuracy is None
                  else final.accuracy - base.accuracy)
        return {
            "accuracy": final.accuracy, "baseline_accuracy": base.accuracy,
            "accuracy_change": change, "agreement": final.agreement,
            "bitops_reduction": reduction(base.bitops, final.bitops),
            "sparse_bitops_reduction": reduction(base.bitops, final.sparse_bitops),
            "size_reduction": reduction(base.bytes or 0, size) if size else None,
            "params_reduction": reduction(base.params, final.params),
            "macs_reduction": reduction(base.macs, final.macs),
            "bytes": size, "baseline_bytes": base.bytes,
            **({"mae": final.mae, "baseline_mae": base.mae, "rmse": final.rmse}
               if final.mae is not None else {}),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per step (baseline first) with the headline columns."""
        steps = [("baseline", self.baseline, 0.0)] + [
            (s.label, s.metrics, s.seconds) for s in self.stages]
        out = []
        for i, (label, m, secs) in enumerate(steps):
            size = self.artifact_bytes if i == len(steps) - 1 and self.artifact_bytes else m.bytes
            out.append({"step": label, "accuracy": m.accuracy, "agreement": m.agreement,
                        "params": m.params, "nonzero": m.nonzero_params, "macs": m.macs,
                        "bitops": m.bitops, "sparse_bitops": m.sparse_bitops, "bytes": size,
                        "seconds": secs,
                        **({"mae": m.mae, "rmse": m.rmse} if m.mae is not None else {})})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``report.json``; ``to_json`` makes it strict JSON)."""
        return {"name": self.name, "recipe": self.source, "device": self.device,
                "plan": self.plan, "summary": self.summary(), "rows": self.rows(),
                "baseline": self.baseline.to_dict(),
                "stages": [s.to_dict() for s in self.stages],
                "artifact": self.artifact, "artifact_bytes": self.artifact_bytes,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, out_dir: str = "",
                  where: str = "report.json") -> Report:
        """Rebuild a report from ``to_dict``'s output (``summary`` and ``rows`` are derived).

        Raises:
            OccError: ``doc`` is not an occ report.
        """
        try:
            plan = _typed(doc["plan"], (dict,), "plan", "a mapping")
            _typed(plan["order"], (list,), "plan.order", "a list")
            for key in ("reasons", "moves", "warnings"):
                for i, item in enumerate(_typed(plan.get(key) or [], (list,), f"plan.{key}",
                                                "a list")):
                    _typed(item, (dict,) if key == "reasons" else (str,), f"plan.{key}[{i}]",
                           "a mapping" if key == "reasons" else "a string")
            stages = [StageRecord.from_dict(s, f"stages[{i}]")
                      for i, s in enumerate(_typed(doc["stages"], (list,), "stages", "a list"))]
            return cls(name=str(doc["name"]), source=str(doc["recipe"]), plan=plan,
                       baseline=_metrics(doc["baseline"], "baseline"),
                       device=str(doc.get("device", "cpu")), out_dir=out_dir, stages=stages,
                       artifact=_typed(doc.get("artifact"), (str, type(None)), "artifact",
                                       "a string or null"),
                       artifact_bytes=_typed(doc.get("artifact_bytes"), (int, type(None)),
                                             "artifact_bytes", "an integer or null"),
                       seconds=_typed(doc.get("seconds") or 0.0, _NUMBER, "seconds",
                                      "a number"))
        except OccError as err:
            raise OccError(err.message, where=f"{where}: {err.where}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise OccError(f"not an occ report (missing or malformed {err})",
                           where=where) from None

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"occ: {self.name}", title_justify="left")
        rows = self.rows()
        regression = is_regression(rows)
        for col in ("step", "acc %", "agree %", *(("MAE", "RMSE") if regression else ()),
                    "params", "nonzero", "MACs", "BitOps", "bytes", "s"):
            table.add_column(col, justify="left" if col == "step" else "right",
                             no_wrap=True, min_width=len(col))
        for r in rows:
            errs = (num(r.get("mae"), ".4f"), num(r.get("rmse"), ".4f")) if regression else ()
            table.add_row(r["step"], num(r["accuracy"]), num(r["agreement"]), *errs,
                          si(r["params"]), si(r["nonzero"]), si(r["macs"]),
                          si(r["bitops"]), si(r["bytes"]), f"{r['seconds']:.1f}")
        lines = [Text(f"order: {' -> '.join(self.plan['order'])}")]
        lines += [Text(f"moved: {m}", style="yellow") for m in self.plan.get("moves", [])]
        lines += [Text(f"warning: {w}", style="yellow") for w in self.plan.get("warnings", [])]
        lines.append(Text(headline(self), style="bold"))  # one line to a row: not wrapped
        lines.append(Text(f"artifact: {self.artifact}"))  # mid-figure where paths are long
        return Group(table, *lines)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON has no inf / NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(report: Report) -> str:
    """``report.json``: strict JSON (``allow_nan=False``; inf and NaN are written as null)."""
    return json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------- HTML (XHTML-compatible)


def load_report(out_dir: str | Path) -> Report:
    """Read ``out_dir/report.json`` (or that file itself) back into a ``Report``.

    Raises:
        OccError: the file is missing, not JSON, or not an occ report.
    """
    from occ import safe_json
    from occ.limits import MAX_REPORT_BYTES

    path = Path(out_dir)
    if path.is_dir() or path.suffix != ".json":
        path = path / "report.json"
    if not path.exists() and not path.is_symlink():
        raise OccError("file not found (not an occ compress output?)", where=str(path))
    # A regular file (not a FIFO or device), of bounded size, values and depth.
    doc = safe_json.load_file(str(path), MAX_REPORT_BYTES, what="report")
    if not isinstance(doc, dict):
        raise OccError("not an occ report (not a JSON object)", where=str(path))
    return Report.from_dict(doc, out_dir=str(path.parent), where=str(path))


