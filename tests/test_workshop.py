"""The workshop's schedule and run times: measured by bench/notebook_times.py (never typed), and every block of the
3-hour plan long enough for the notebooks it runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLAN = yaml.safe_load((ROOT / "book" / "workshop_plan.yml").read_text(encoding="utf-8"))
TIMES = json.loads((ROOT / "bench" / "notebook_times.json").read_text(encoding="utf-8"))


def _bench():
    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "bench" / "notebook_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_has_a_measured_fast_time():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    fast = TIMES["fast"]
    assert fast["host"]["cpu_cores"] >= 1 and fast["host"]["measured"]
    assert sorted(fast["notebooks"]) == notebooks
    for name, entry in fast["notebooks"].items():
        assert entry["error"] is None and entry["seconds"] > 0, name


def test_the_three_hour_plan_fits_the_measured_times():
    """Three hours in all; every block's notebooks, in the plan's mode, leave at least half the block to students
    (the rule book/workshop.md applies when it builds); the serpent has a block of its own."""
    assert sum(b["minutes"] for b in PLAN["blocks"]) == 180
    known = TIMES[PLAN["mode"]]["notebooks"]
    for block in PLAN["blocks"]:
        run = sum(known[n]["seconds"] for n in block["notebooks"])
        assert run <= block["minutes"] * 60 / 2, (block["title"], run)
        if block["notebooks"]:
            assert len(block["objectives"]) >= 1 and len(block["prompts"]) >= 2, block["title"]
    serpent = [b for b in PLAN["blocks"] if "06_serpent" in b["notebooks"]]
    assert len(serpent) == 1 and serpent[0]["notebooks"] == ["06_serpent"] and serpent[0]["minutes"] >= 20


def test_the_script_records_what_it_measures(tmp_path, monkeypatch):
    """bench/notebook_times.py runs a notebook in a fresh kernel in the mode asked for and merges the time into its
    file, keeping what was there; a raising notebook is recorded as failed."""
    bench = _bench()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, time\nassert os.environ['SERPENT_FAST'] == '1'\ntime.sleep(0.2)")]
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("raise RuntimeError('broken on purpose')")]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_fine.ipynb")
    nbformat.write(bad, tmp_path / "notebooks" / "02_broken.ipynb")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    out = tmp_path / "times.json"
    out.write_text(json.dumps({"full": {"notebooks": {"01_fine": {"seconds": 9.0, "error": None}}}}))
    assert bench.main(["--mode", "fast", "--out", str(out)]) == 1
    record = json.loads(out.read_text())
    assert record["full"]["notebooks"]["01_fine"]["seconds"] == 9.0         # kept
    fine, broken = record["fast"]["notebooks"]["01_fine"], record["fast"]["notebooks"]["02_broken"]
    assert fine["error"] is None and fine["seconds"] >= 0.2
    assert "broken on purpose" in broken["error"]
