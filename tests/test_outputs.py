"""Every stage output declared once (serpent/outputs.py, issue 35 item 1): paths, readers, export rules, and no
reader that spells a run directory's paths by hand."""
import ast
import json
from pathlib import Path

import pytest

from serpent import outputs
from serpent.artifacts import EXPORT_RULES
from serpent.errors import SerpentError

ROOT = Path(__file__).resolve().parents[1]


def test_declarations_are_unique_and_their_rules_known():
    paths = [o.path for o in outputs.OUTPUTS.values()]
    assert len(paths) == len(set(paths)) and all(n == o.name for n, o in outputs.OUTPUTS.items())
    for o in outputs.OUTPUTS.values():
        assert o.export is None or o.export in EXPORT_RULES, o.name
        assert o.export != "small" or o.keep_bytes, o.name
        assert o.export != "columns" or (o.columns and o.into in outputs.OUTPUTS), o.name
        assert o.stage in {"run", "data", "train", "induction", "llc", "susceptibility", "serpent"}, o.name
        assert o.current, o.name
    from serpent.stages import STAGES
    assert {o.stage for o in outputs.OUTPUTS.values()} - {"run"} == set(STAGES)


def test_paths_patterns_files_and_readers(tmp_path):
    assert outputs.CHECKPOINT.file(tmp_path, step=42) == tmp_path / "checkpoints" / "step_0000042.safetensors"
    assert outputs.SUSCEPTIBILITY.pattern() == "susceptibility/step_*.safetensors"
    (tmp_path / "serpent").mkdir()
    (tmp_path / "serpent" / "separation.json").write_text(json.dumps({"steps": {"10": {"a": 1}, "2": {"a": 0}}}))
    assert outputs.load_separation(tmp_path) == {2: {"a": 0}, 10: {"a": 1}}        # int steps, in order
    assert list(outputs.load_separation(tmp_path)) == [2, 10]
    (tmp_path / "serpent" / "step_0000002.png").write_bytes(b"png")
    (tmp_path / "serpent" / "serpent.png").write_bytes(b"png")
    assert [p.name for p in outputs.SERPENT_CHARTS.files(tmp_path)] == ["serpent.png", "step_0000002.png"]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')        # a line cut short
    assert outputs.METRICS.read(tmp_path) == [{"step": 1}]
    # a missing output: the stage that writes it is named, or the caller's default comes back
    with pytest.raises(SerpentError, match=r"induction/heads.json \(the induction stage writes it\).*--stages "
                                           r"induction"):
        outputs.load_heads(tmp_path)
    assert outputs.load_anatomy(tmp_path, missing={}) == {}
    with pytest.raises(SerpentError, match="no run output called 'nope'"):
        outputs.output("nope")


def test_a_run_reads_through_the_declarations(tmp_path):
    from serpent.config import get_preset
    from serpent.rundir import Run
    run = Run.create(tmp_path / "r", get_preset("tiny"))
    for s in (3, 1):
        outputs.CHECKPOINT.file(run, step=s).parent.mkdir(parents=True, exist_ok=True)
        outputs.CHECKPOINT.file(run, step=s).write_bytes(b"")
    assert run.checkpoint_steps() == [1, 3] and run.checkpoint_path(3) == outputs.CHECKPOINT.file(run, step=3)
    assert outputs.CONFIG.read(run)["preset"] == "tiny"


_READERS = ["serpent/figures.py", "serpent/explorer.py", "serpent/milestones.py", "serpent/widgets.py",
            "serpent/cli.py", "serpent/artifacts.py", "serpent/course.py", "serpent/rundir.py", "serpent/train.py",
            "bench/gpu_session.py", "bench/serpent_stage.py", *map(str, sorted(ROOT.glob("serpent/stages/*.py")))]


@pytest.mark.parametrize("path", _READERS)
def test_readers_and_stages_spell_no_output_path(path):
    """Outside serpent/outputs.py, the code (docstrings and messages aside) names no declared output's file."""
    names = {Path(o.path).name for o in outputs.OUTPUTS.values() if "{" not in o.path and "*" not in o.path}
    names -= {"tokenizer"}                                  # also a cache key and a module; its folder is checked below
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        # a path is built with `/ "name"` or passed as a bare "name" or "dir/name"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if str(node.right.value) in names or str(node.right.value).endswith(".safetensors"):
                bad.append((node.lineno, node.right.value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names | {
                o.path for o in outputs.OUTPUTS.values() if o.path != "tokenizer"}:
            bad.append((node.lineno, node.value))
    assert not bad, f"{path} spells output paths by hand: {bad}"
    assert "/ \"tokenizer\"" not in (ROOT / path).read_text(encoding="utf-8")
