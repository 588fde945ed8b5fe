"""Contract tests generated from list_stages(): every stage, without anyone remembering it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from occ.config import from_dict, to_dict
from occ.errors import RecipeError
from occ.techniques.registry import categories, get_stage, list_stages, stage_reference

STAGES = list_stages()


def test_every_technique_is_registered() -> None:
    assert set(STAGES) >= {"distill", "prune", "quantize", "early_exit", "entropy_code"}


@pytest.mark.parametrize("name", STAGES)
def test_config_round_trips(name: str) -> None:
    cls = get_stage(name).config
    default = cls()
    data = to_dict(default)
    json.dumps(data)  # plain data
    assert from_dict(cls, data) == default


@pytest.mark.parametrize("name", STAGES)
def test_unknown_key_is_rejected(name: str) -> None:
    with pytest.raises(RecipeError, match="unknown key 'no_such_key'"):
        from_dict(get_stage(name).config, {"no_such_key": 1}, where="stages[0]")


@pytest.mark.parametrize("name", STAGES)
def test_stage_has_a_category_and_is_frozen(name: str) -> None:
    cls = get_stage(name).config
    assert cls().category in categories()
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_stage_modules_do_not_import_torch() -> None:
    code = "import sys, occ.techniques; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_stage_reference_doc_is_current() -> None:
    doc = Path(__file__).parents[1] / "docs" / "STAGES.md"
    assert doc.read_text() == stage_reference(), \
        "run: python -m occ.techniques.registry > docs/STAGES.md"


def test_the_architecture_map_names_every_module() -> None:
    """docs/ARCHITECTURE.md's layer table is "the map of the code as built": every module
    of occ/ (a technique's own modules aside: its package is the entry) is named there."""
    import re

    root = Path(__file__).parents[1]
    doc = (root / "docs" / "ARCHITECTURE.md").read_text()
    table = doc[doc.index("## The layers"):doc.index("## From `occ compress")]
    named = set(re.findall(r"`([A-Za-z_][\w.]*)", table))
    named |= {name.rpartition(".")[2] for name in named}
    missing = []
    for path in sorted((root / "occ").rglob("*.py")):
        parts = path.relative_to(root / "occ").with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") or (parts[0] == "techniques" and len(parts) > 2):
            continue
        if parts[-1] not in named:
            missing.append(".".join(parts))
    assert not missing, f"name these in docs/ARCHITECTURE.md's layer table: {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_runs_on_a_tiny_model(name: str, recipe_factory) -> None:
    """Each stage with its defaults (one epoch) leaves a model that runs, finite, and JSON."""
    import torch

    import occ
    from occ import api

    fields = {f.name for f in dataclasses.fields(get_stage(name).config)}
    stage = {"type": name, **({"epochs": 1} if "epochs" in fields else {})}
    report = api.compress(recipe_factory([stage]))
    model = occ.load(report.artifact)
    out = model(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10) and bool(torch.isfinite(out).all())
    json.loads(json.dumps(report.stages[0].to_dict()))


def test_edit_ops_register_in_a_fresh_process() -> None:
    """A stage records its edit op as soon as its run module is imported, and
    ``load_edit_ops`` (what every load path calls) registers every technique's ops, each in
    a process that imported nothing else first (test order cannot hide a missing import)."""
    code = ("import sys\n"
            "from occ.models import edits\n"
            "from occ.techniques.registry import TECHNIQUES, load_edit_ops\n"
            "if sys.argv[1] == 'run':\n"
            "    for spec in TECHNIQUES: spec.load_run()\n"
            "else:\n"
            "    load_edit_ops()\n"
            "print(','.join(sorted(edits._EDITS)))\n")
    every = {"reshape", "quantize", "fold_bn", "early_exit", "lowrank"}
    # run modules that record an op at their top level register it on import (the others
    # import their torch halves, and with them their ops, inside the run function)
    for how, expected in (("run", {"reshape", "lowrank"}), ("load", every)):
        out = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert set(out.stdout.strip().split(",")) >= expected, (how, out.stdout)
