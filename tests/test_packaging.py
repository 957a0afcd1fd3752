"""The package declares what it imports: a Colab user installs `serpent` from git (pyproject.toml, not
requirements.txt), so a module imported but not declared breaks there and nowhere else."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: _norm(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))  # noqa: E731
    required = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    return required, extras


def _third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "serpent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("serpent", "__future__"):
                    found.setdefault(top, []).append(path.relative_to(ROOT).as_posix())
    return found


def test_every_imported_package_is_declared_in_pyproject():
    required, extras = _declared()
    dists = packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "altair", "vl_convert", "sklearn", "umap"} <= set(imports)     # the scan sees real imports
    missing = {}
    for module, files in imports.items():
        names = {_norm(d) for d in dists.get(module, [])}
        assert names, f"{module} (imported in {files[0]}) is not installed here; add it to requirements.txt"
        if not names & (required | extras):
            missing[module] = (sorted(names), sorted(set(files)))
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or an extra): {missing}"


def test_every_required_dependency_is_pinned_or_listed_in_requirements():
    required, _ = _declared()
    listed = {_norm(re.match(r"[A-Za-z0-9_.\-]+", line).group(0))
              for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")}
    dists = packages_distributions()
    # a dependency may come in through another listed package (numpy through torch); it must at least be installed
    installed = {_norm(d) for ds in dists.values() for d in ds}
    assert required <= installed, f"declared but not installed by requirements.txt: {sorted(required - installed)}"
    assert {"torch", "transformer-lens", "umap-learn", "altair", "vl-convert-python"} <= listed
