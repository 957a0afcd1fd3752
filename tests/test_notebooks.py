"""The committed notebooks: generated from notebooks/_make_notebooks.py, without outputs, every Colab badge, install
line and artifact address derived from the one repository URL in _config.yml."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("_make_notebooks", ROOT / "notebooks" / "_make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
URL, BRANCH = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"]["branch"]


@pytest.mark.parametrize("name", list(GEN.NOTEBOOKS))
def test_committed_notebook_is_the_generators_output_without_outputs(name):
    import nbformat
    committed = nbformat.read(str(ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)
    generated = nbformat.reads(nbformat.writes(GEN.build(name)), as_version=4)
    assert committed["cells"] == generated["cells"], (
        f"notebooks/{name}.ipynb differs from its generator: run `python notebooks/_make_notebooks.py {name}`")
    for cell in committed["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


@pytest.mark.parametrize("name", list(GEN.NOTEBOOKS))
def test_every_link_in_a_notebook_derives_from_the_configured_repository(name):
    text = (ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8")
    owner_repo = URL.split("github.com/")[1]
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{name}.ipynb"
    assert badge in text, "the Colab badge opens this notebook from the configured repository and branch"
    assert f"git+{URL}" in text, "the Colab install line installs the package from the configured repository"
    for found in re.findall(r"https://(?:github\.com|raw\.githubusercontent\.com|colab\.research\.google\.com/github)"
                            r"/([\w.-]+/[\w.-]+)", text):
        assert found == owner_repo, f"{name} links to {found}, not the configured {owner_repo}"


def test_no_emoji_in_the_book_or_the_notebooks():
    """Emoji draw as empty boxes on machines without an emoji font (many Linux desktops, headless browsers)."""
    import re
    emoji = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")
    sources = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    found = {p.name: sorted(set(emoji.findall(p.read_text(encoding="utf-8")))) for p in sources}
    assert not {k: v for k, v in found.items() if v}


def test_code_cells_fit_the_book_column():
    """Code lines fit the text column of the book at a laptop's width and a Colab cell (black writes them at
    CODE_WIDTH; comments and strings are ours to keep short). A URL cannot be wrapped and is let through."""
    long = [(p.name, line) for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))
            for cell in json.loads(p.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines()
            if len(line) > GEN.CODE_WIDTH and "https://" not in line]
    assert not long, f"{len(long)} lines longer than {GEN.CODE_WIDTH}: {long[:5]}"


def _fenced_lines(text: str):
    """(line number, line) of every line inside a fenced code block: executable cells and plain code blocks, not
    other MyST directives (``{admonition}`` and the like hold prose), which may nest."""
    stack: list[tuple[str, bool]] = []          # (backticks, holds code) of the open fences
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^(`{3,})(.*)$", line.strip())
        if fence and stack and fence.group(1) == stack[-1][0] and not fence.group(2).strip():
            stack.pop()
        elif fence and not (stack and stack[-1][1]):
            info = fence.group(2).strip()
            stack.append((fence.group(1), not info.startswith("{") or info.startswith("{code-cell")))
        elif stack and stack[-1][1]:
            yield n, line


def test_code_in_the_chapters_and_notebook_text_fits_the_book_column():
    long = [f"{page.name}:{n}" for page in sorted((ROOT / "book").glob("*.md"))
            for n, line in _fenced_lines(page.read_text(encoding="utf-8"))
            if len(line) > GEN.CODE_WIDTH and "https://" not in line]
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "markdown":
                long += [f"{nb.name}: {line[:40]}" for _, line in _fenced_lines("".join(cell["source"]))
                         if len(line) > GEN.CODE_WIDTH]
    assert not long, f"code lines longer than {GEN.CODE_WIDTH}: {long}"


WITH_EXERCISES = [name for name in GEN.NOTEBOOKS if GEN.has_exercises(name)]


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_solutions_version_replaces_every_stub_by_its_solution(name):
    """notebooks/solutions/ (for instructors, and for learners who want to check a whole notebook) is generated too:
    no stub left, every solution shown, and its relative links still lead to files of the repository."""
    import nbformat
    path = ROOT / "notebooks" / "solutions" / f"{name}.ipynb"
    committed = nbformat.read(str(path), as_version=4)
    generated = nbformat.reads(nbformat.writes(GEN.build(name, solutions=True)), as_version=4)
    assert committed["cells"] == generated["cells"], f"run `python notebooks/_make_notebooks.py {name}`"
    exercise = GEN.build(name)
    stubs = sum("NotImplementedError" in c.source for c in exercise.cells if c.cell_type == "code")
    shown = [c for c in committed.cells if c.source.startswith("# Solution\n")]
    assert stubs >= 1 and len(shown) == stubs
    assert not any("NotImplementedError" in c.source for c in committed.cells if c.cell_type == "code")
    assert all("hide-input" not in c.metadata.get("tags", []) for c in shown)
    for cell in committed.cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", cell.source):
                assert (path.parent / target).resolve().exists(), f"{name}: broken link {target}"
    assert sorted(p.stem for p in path.parent.glob("*.ipynb")) == sorted(WITH_EXERCISES)
