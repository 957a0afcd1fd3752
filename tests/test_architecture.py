"""The house's shape: the package's modules import one another without circles (issue 19 item 2)."""
import ast
import re
from pathlib import Path

PKG = Path(__file__).parents[1] / "serpent"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the serpent modules it imports, at the top or inside functions (a lazy import is still a circle)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.with_suffix("").relative_to(PKG.parent).parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                target = base + ("." + node.module if node.module else "")
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            else:
                continue
            for t in names:
                # the package itself and a module's own parent package are not edges
                if t in mods and t != m and t != "serpent" and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_planted_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = _import_graph()
    assert "serpent.io" in graph["serpent.rundir"] and "serpent.model" in graph["serpent.sgld"]   # edges are read
    assert graph["serpent.io"] <= {"serpent.errors"}, "serpent.io is the ground floor: it imports only errors"
    assert _circles(graph) == []


#: Modules that compute: they take tensors or frames and return results, and know nothing of run directories.
SCIENCE = ["model", "hooked", "sgld", "llc", "susceptibility", "induction", "circuits", "induction_toy", "patterns",
           "embedding", "patterning", "corpus", "tokenizer", "tokens"]


def test_science_modules_know_nothing_of_run_directories_or_stages():
    """Issue 19 item 1: the stages (serpent/stages/) feed a run's checkpoints to the science modules and keep what
    they return; no science module reaches back into a run directory or a stage."""
    graph = _import_graph()
    for name in SCIENCE:
        bad = {t for t in graph[f"serpent.{name}"] if t == "serpent.rundir" or t.startswith("serpent.stages")}
        assert not bad, f"serpent.{name} imports {sorted(bad)}"
        text = (PKG / f"{name}.py").read_text(encoding="utf-8")
        assert not re.search(r"^def \w+_stage\(", text, re.M) and "mark_stage" not in text, name


def test_every_stage_uses_the_shared_bookkeeping():
    """One way to choose checkpoints, key a stage, keep per-checkpoint results and record the stage as done."""
    from serpent.stages import STAGES
    for name, fn in STAGES.items():
        source = (PKG / "stages" / f"{fn.__module__.rsplit('.', 1)[1]}.py").read_text(encoding="utf-8")
        assert "Stage(run" in source and "stage.done(" in source, name
        assert "mark_stage" not in source and "._cache" not in source, name


def test_the_public_api_is_grouped_and_every_name_resolves():
    import serpent
    names = [n for group in serpent.API.values() for n in group]
    assert len(names) == len(set(names)) and serpent.__all__ == names
    assert all(hasattr(serpent, n) for n in names)
    assert {"course_run", "run_pipeline", "susceptibilities", "estimate_llc", "load_susceptibilities"} <= set(names)


def test_import_serpent_loads_neither_the_charts_nor_the_model_stack():
    """Issue 35 item 4a: the namespace imports a name when it is first used."""
    import subprocess
    import sys
    code = ("import serpent, sys; heavy = [m for m in ('altair', 'transformer_lens', 'torch', 'pandas') "
            "if m in sys.modules]; print(heavy); serpent.get_preset; print('altair' in sys.modules); "
            "serpent.figures; print('altair' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PKG.parent, env={**__import__("os").environ, "PYTHONPATH": str(PKG.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[]", "False", "True"]


def test_names_kept_outside_the_api_still_resolve_and_submodules_are_modules():
    import types
    import serpent
    for module, names in serpent._ELSEWHERE.items():
        for n in names:
            assert n not in serpent.__all__ and getattr(serpent, n) is getattr(
                __import__(f"serpent.{module}", fromlist=[n]), n), n
    assert isinstance(serpent.figures, types.ModuleType) and isinstance(serpent.train, types.ModuleType)
    import pytest
    with pytest.raises(AttributeError, match="no attribute 'nonexistent_name'"):
        serpent.nonexistent_name
