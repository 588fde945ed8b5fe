"""Reports: well-formed standalone HTML whose plots decode, strict JSON, md, re-rendering."""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from occ.cli import app
from occ.errors import OccError
from occ.io import atomic_write_files
from occ.metrics import Metrics
from occ.report.data import Report, StageRecord, load_report, to_json
from occ.report.html import to_html
from occ.report.markdown import to_markdown
from occ.report.write import report_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}
LAYERS = [("features.0", "Conv2d", 520, 288_000), ("features.3", "Conv2d", 25_050, 1_600_000),
          ("classifier.1", "Linear", 400_500, 400_000), ("classifier.3", "Linear", 5_010, 5_000)]


def metrics(acc: float, sparsity: float = 0.0, bits: tuple[int, int] = (32, 32),
            size: int = 1_725_000, exits: dict | None = None, agreement: float | None = 100.0,
            ) -> Metrics:
    """LeNet-5-shaped metrics with every layer at ``sparsity`` and ``bits``."""
    wb, ab = bits
    layers = []
    for name, kind, params, macs in LAYERS:
        nz, smacs = round(params * (1 - sparsity)), round(macs * (1 - sparsity))
        layers.append({"name": name, "kind": kind, "params": params, "nonzero": nz,
                       "macs": macs, "sparse_macs": smacs, "w_bits": wb, "a_bits": ab,
                       "bitops": macs * wb * ab, "sparse_bitops": smacs * wb * ab})
    return Metrics(accuracy=acc, agreement=agreement, params=431_080,
                   nonzero_params=sum(la["nonzero"] for la in layers),
                   macs=sum(la["macs"] for la in layers),
                   sparse_macs=sum(la["sparse_macs"] for la in layers),
                   bitops=float(sum(la["bitops"] for la in layers)),
                   sparse_bitops=float(sum(la["sparse_bitops"] for la in layers)),
                   bytes=size, bits_per_param=8 * size / 431_080, exits=exits, layers=layers)


EXITS = {
    "criterion": "confidence", "points": ["features.3", "final"], "thresholds": [0.9],
    "samples": 1000, "shares": [0.7, 0.3],
    "per_exit": [
        {"point": "features.3", "threshold": 0.9, "count": 700, "share": 0.7, "accuracy": 99.1,
         "macs": 1_900_000, "sparse_macs": 190_000, "bitops": 60e6, "sparse_bitops": 6e6},
        {"point": "final", "threshold": None, "count": 300, "share": 0.3, "accuracy": 91.0,
         "macs": 2_293_000, "sparse_macs": 229_300, "bitops": 73e6, "sparse_bitops": 7.3e6}],
    "expected_macs": 2e6, "expected_bitops": 64e6, "expected_sparse_bitops": 6.4e6,
    "full_bitops": 73e6,
}
PLAN = {"order": ["prune(magnitude)", "quantize", "early_exit", "entropy_code"],
        "written": ["quantize", "prune(magnitude)", "early_exit", "entropy_code"],
        "reordered": True, "moves": ["prune(magnitude): stages[1] -> position 0"],
        "warnings": ["a <b>bold</b> & risky order"],
        "reasons": [{"before": "prune(magnitude)", "after": "quantize",
                     "reason": "magnitudes rank saliency at full precision",
                     "source": "Order of Compression"}]}


def make_report(*, exits: bool = True) -> Report:
    steps = [("prune", "prune(magnitude)", metrics(98.2, 0.9, size=400_000, agreement=98.9)),
             ("quantize", "quantize", metrics(98.0, 0.9, (4, 8), 120_000, agreement=98.5)),
             ("early_exit", "early_exit",
              metrics(97.8, 0.9, (4, 8), 121_000, EXITS if exits else None, 98.0)),
             ("entropy_code", "entropy_code",
              metrics(97.8, 0.9, (4, 8), 31_000, EXITS if exits else None, 98.0))]
    stages = [StageRecord(index=i, type=t, label=label, config={"type": t}, metrics=m,
                          seconds=1.5 * (i + 1),
                          details={"layers": {"features.0": 0.9}, "loss": [0.5, float("nan")]},
                          notes=[f"note for {label} <script>alert(1)</script>"])
              for i, (t, label, m) in enumerate(steps)]
    return Report(name="lenet5 & co", source="recipe.yaml", plan=PLAN,
                  baseline=metrics(98.5, size=1_725_000), stages=stages,
                  artifact="out/model.occ", artifact_bytes=31_500, seconds=12.0)


class _Balance(HTMLParser):
    """Checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.errors.append(f"<{tag} /> is not a void element")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_html(text: str) -> list[bytes]:
    """Assert ``text`` is balanced, XHTML-parseable and standalone; return its PNGs."""
    from PIL import Image

    parser = _Balance()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    root = ET.fromstring(text.split("\n", 1)[1])  # past <!DOCTYPE html>: strict XML
    assert root.tag == "html"
    assert not re.search(r"<(script|link|iframe)\b", text)  # no code, nothing external
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    pngs = []
    for img in root.iter("img"):
        src = img.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel
            assert im.width > 600 and im.height > 200
        assert img.get("alt")
        pngs.append(data)
    return pngs


def strict_json(text: str) -> dict:
    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def page() -> str:
    """The HTML of ``make_report()`` (plots take a moment: render once)."""
    return to_html(make_report())


def test_html_is_well_formed_with_every_plot(page: str) -> None:
    text = page
    pngs = check_html(text)
    assert len(pngs) == 4  # path, size, per-layer, early exit
    for alt in ("accuracy vs BitOps", "bytes and BitOps per stage", "per-layer sparsity",
                "early-exit distribution"):
        assert alt in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # notes are escaped
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; risky order" in text
    assert text.count("<details>") == 3 * 4  # config, details, metrics per stage


def test_html_headline_order_and_tables(page: str) -> None:
    text = page
    assert "97.80%" in text and "-0.70 pt vs baseline" in text
    assert "54.8×" in text  # size 1,725,000 / 31,500
    assert "32.0×" in text  # BitOps: 32x32 -> 4x8 bits
    for label in PLAN["order"]:
        assert f'<span class="pill">{label}</span>' in text
    assert "magnitudes rank saliency at full precision" in text
    assert "classifier.1" in text and "4/8" in text  # per-layer table
    assert "features.3" in text and "70.0" in text and "99.10" in text  # exits table


@pytest.mark.slow
def test_html_without_exits_has_no_exit_section() -> None:
    report = make_report(exits=False)
    text = to_html(report)
    assert len(check_html(text)) == 3
    assert "Early exit" not in text
    md = to_markdown(report)
    assert "## Early exit" not in md


def test_baseline_only_report_renders() -> None:
    report = Report(name="b", source="r.yaml", plan={"order": []},
                    baseline=metrics(90.0, agreement=None))
    assert len(check_html(to_html(report))) == 3
    assert "| baseline | 90.00 | - |" in to_markdown(report)


def test_markdown_has_steps_order_layers_exits() -> None:
    md = to_markdown(make_report())
    assert md.startswith("# occ report: lenet5 & co")
    assert "| entropy_code | 97.80 | 98.00 |" in md
    assert "prune(magnitude) → quantize → early_exit → entropy_code" in md
    assert "## Final model, per layer" in md and "| classifier.1 | Linear |" in md
    assert "## Early exit" in md and "| features.3 | 0.9 | 700 | 70.0 | 99.10 |" in md


def test_json_is_strict_and_round_trips() -> None:
    report = make_report()
    report.stages[-1].metrics.sparse_bitops = 0.0  # -> an infinite reduction factor
    text = to_json(report)
    doc = strict_json(text)
    assert doc["summary"]["sparse_bitops_reduction"] is None
    assert doc["stages"][0]["details"]["loss"] == [0.5, None]
    again = Report.from_dict(doc)
    assert to_json(again) == text
    assert again.stages[2].metrics.exits == EXITS
    assert again.final_metrics().layers == report.final_metrics().layers


@pytest.mark.slow
def test_write_reports_then_cli_rerenders(tmp_path: Path) -> None:
    atomic_write_files(report_files(make_report(), tmp_path))
    json_text = (tmp_path / "report.json").read_text()
    strict_json(json_text)
    html_text = (tmp_path / "report.html").read_text()
    md_text = (tmp_path / "report.md").read_text()
    for name in ("report.md", "report.html"):
        (tmp_path / name).unlink()
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = strict_json(result.stdout)
    assert doc["written"] == [str(tmp_path / "report.md"), str(tmp_path / "report.html")]
    assert doc["summary"]["accuracy"] == 97.8
    assert (tmp_path / "report.html").read_text() == html_text
    assert (tmp_path / "report.md").read_text() == md_text
    assert (tmp_path / "report.json").read_text() == json_text  # the input is left alone
    assert to_json(load_report(tmp_path / "report.json")) == json_text


@pytest.mark.parametrize("content, message", [
    (None, "report.json: file not found"),
    ("{not json", "report is not valid JSON: Expecting property name"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),  # was a RecursionError
    ("[1, 2]", "not an occ report"),
    ('{"name": "x"}', "not an occ report"),
])
def test_report_bad_input_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "report.html").exists()


def test_report_with_wrong_types_exits_2(tmp_path: Path) -> None:
    doc = json.loads(to_json(make_report()))
    doc["stages"][0]["metrics"]["accuracy"] = "high"
    (tmp_path / "report.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "stages[0].metrics.accuracy: must be a number or null, got str" in result.stderr
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][0].update(seconds="abc"), r"stages\[0\]\.seconds: must be a number"),
    (lambda d: d["plan"].update(reasons=[5]), r"plan\.reasons\[0\]: must be a mapping"),
    (lambda d: d["baseline"].update(layers=[1]), r"baseline\.layers\[0\]: must be a mapping"),
    (lambda d: d.update(stages={}), r"stages: must be a list"),
    (lambda d: d["plan"]["reasons"][0].pop("reason"), r"not an occ report \(cannot render"),
])
def test_report_fields_of_wrong_types_are_named(tmp_path: Path, edit, message: str) -> None:
    """Neither view is rewritten: both render before either is written."""
    doc = json.loads(to_json(make_report()))
    edit(doc)
    (tmp_path / "report.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "report.md").exists()


def test_report_special_and_oversized_files_are_refused_before_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "report.json")  # hung before
    big = tmp_path / "big"
    big.mkdir()
    (big / "report.json").write_text(to_json(make_report()))
    monkeypatch.setenv("OCC_MAX_REPORT_BYTES", "1000")
    for folder, message in ((fifo, "is a FIFO (named pipe), not a regular report"),
                            (big, "over the limit 1,000 bytes; raise it with "
                                  "OCC_MAX_REPORT_BYTES=N")):
        result = CliRunner().invoke(app, ["report", str(folder)])
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_report_never_replaces_a_fifo_and_rewrites_neither_view(tmp_path: Path) -> None:
    import os
    import stat

    (tmp_path / "report.json").write_text(to_json(make_report()))
    (tmp_path / "report.md").write_text("old")
    os.mkfifo(tmp_path / "report.html")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    said = f"{tmp_path / 'report.html'} is a FIFO (named pipe), not a file occ may replace"
    assert said in lines[0]
    assert stat.S_ISFIFO(os.stat(tmp_path / "report.html").st_mode)
    assert (tmp_path / "report.md").read_text() == "old"  # checked before either is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json",
                                                          "report.md"]


def test_bad_metrics_name_the_stage(tmp_path: Path) -> None:
    doc = json.loads(to_json(make_report()))
    del doc["stages"][1]["metrics"]["params"]
    with pytest.raises(OccError, match=r"x\.json: stages\[1\]\.metrics"):
        Report.from_dict(doc, where="x.json")


@pytest.mark.slow
def test_real_compress_report(recipe_factory) -> None:
    from occ import api

    recipe = recipe_factory([{"type": "prune", "sparsity": 0.5}])
    report = api.compress(recipe)
    out = Path(report.out_dir)
    json_text = (out / "report.json").read_text()
    doc = strict_json(json_text)
    assert doc["rows"][-1]["step"] == "prune(magnitude)"
    assert len(check_html((out / "report.html").read_text())) == 3
    (out / "report.html").unlink()
    result = api.report(out)
    assert result["written"][-1] == str(out / "report.html")
    assert len(check_html((out / "report.html").read_text())) == 3
    assert to_json(load_report(out)) == json_text
