"""serpent.course: the run a notebook works on (no pipeline is run here: complete runs are faked)."""

from __future__ import annotations

import json

import pytest

from serpent.config import get_preset
from serpent.course import course_run, find_root, is_fast, micro_config, run_is_complete
from serpent.errors import SerpentError
from serpent.stages import STAGES
from serpent.rundir import Run


def _fake_complete(path, cfg):
    run = Run.create(path, cfg)
    (run.path / "stages.json").write_text(json.dumps({s: {"key": "x", "seconds": 0, "summary": {}}
                                                      for s in STAGES}))
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / f"step_{cfg.train.steps:07d}.safetensors").write_bytes(b"")
    return run


def test_prefers_a_complete_tiny_run_even_in_fast_mode(tmp_path):
    _fake_complete(tmp_path / "runs" / "tiny", get_preset("tiny"))
    run = course_run("tiny", fast=True, root=tmp_path, compute=False)
    assert run.path == tmp_path / "runs" / "tiny" and run.config.preset == "tiny"


def test_fast_mode_uses_the_micro_run(tmp_path):
    _fake_complete(tmp_path / "runs" / "tiny-fast", micro_config())
    assert course_run(fast=True, root=tmp_path, compute=False).config.train.steps == 150
    with pytest.raises(SerpentError, match="python -m serpent run --preset tiny"):
        course_run(fast=False, root=tmp_path, compute=False)


def test_incomplete_runs_are_not_complete(tmp_path):
    run = _fake_complete(tmp_path / "r", get_preset("tiny"))
    assert run_is_complete(run.path)
    stages = json.loads((run.path / "stages.json").read_text())
    stages.pop("serpent")
    (run.path / "stages.json").write_text(json.dumps(stages))
    assert not run_is_complete(run.path)
    assert not run_is_complete(tmp_path / "nothing")


def test_root_fast_flag_and_micro_recipe(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert find_root() == tmp_path
    assert is_fast({"SERPENT_FAST": "true"}) and not is_fast({"SERPENT_FAST": "0"})
    m, t = micro_config(), get_preset("tiny")
    assert m.model.n_ctx <= t.model.n_ctx and m.train.steps < t.train.steps / 5
    assert m.susceptibility.sampler.checkpoints >= 2  # the serpent needs more than one checkpoint
    with pytest.raises(SerpentError):
        course_run("nope", root=tmp_path)


def test_live_settings_shrink_only_a_larger_model_on_a_cpu(monkeypatch):
    import torch
    import serpent.device
    from serpent.config import get_preset
    from serpent.course import live_settings
    full, tiny = get_preset("full").model, get_preset("tiny").model
    said = []
    fast = {"components": ["0:1"], "draws": 4, "window": 1024}            # fast mode's numbers stay smaller
    out = live_settings(full, fast, {"components": ["0:0", "1:0"], "draws": 16, "window": 128}, device="cpu",
                        echo=said.append)
    assert out == {"components": ["0:0", "1:0"], "draws": 4, "window": 128}
    assert len(said) == 1 and "'window': 128" in said[0] and "'window': 1024" in said[0]
    assert live_settings(tiny, fast, {"draws": 1}, device="cpu", echo=said.append) == fast and len(said) == 1
    # on a GPU the notebook's own settings stand, whatever the model
    monkeypatch.setattr(serpent.device, "default_device", lambda device=None: torch.device("cuda"))
    assert live_settings(full, fast, {"draws": 1}, echo=said.append) == fast and len(said) == 1
