"""The committed notebooks: built by notebooks/build_notebooks.py from their MyST-markdown sources in notebooks/src/,
without outputs, every Colab badge, install line and artifact address derived from the one repository URL in
_config.yml; exercises and solutions are code cells of the sources (sphinx-exercise's gated directives)."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
BUILDER = ROOT / "notebooks" / "build_notebooks.py"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", BUILDER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _builder()
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
URL, BRANCH = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"]["branch"]
SOURCES = {name: (ROOT / "notebooks" / "src" / f"{name}.md").read_text(encoding="utf-8") for name in GEN.NOTEBOOKS}


def _source_cells(name):
    import jupytext
    return jupytext.reads(SOURCES[name], fmt="md:myst").cells


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert GEN.NOTEBOOKS == sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))
    assert len(GEN.NOTEBOOKS) >= 9


@pytest.mark.parametrize("name", GEN.NOTEBOOKS)
def test_committed_notebook_is_the_builders_output_without_outputs(name):
    import nbformat
    committed = nbformat.read(str(ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)
    generated = nbformat.reads(nbformat.writes(GEN.build(name)), as_version=4)
    assert committed["cells"] == generated["cells"], (
        f"notebooks/{name}.ipynb differs from notebooks/src/{name}.md: "
        f"run `python notebooks/build_notebooks.py {name}`")
    for cell in committed["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


@pytest.mark.parametrize("name", GEN.NOTEBOOKS)
def test_source_round_trips_through_jupytext(name):
    """The source is what jupytext writes for it (md:myst, the chapters' format): nothing is lost between the text
    and the notebook, and an editor that pairs them with jupytext changes nothing."""
    import jupytext
    text = SOURCES[name]
    nb = jupytext.reads(text, fmt="md:myst")
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    version = re.compile(r"^\s*jupytext_version:.*\n", re.M)       # the installed jupytext writes its own
    assert version.sub("", jupytext.writes(nb, fmt="md:myst")) == version.sub("", text)
    assert "```{code-cell} ipython3" in text


def test_builder_is_short_and_holds_no_notebook_text():
    """The notebooks live in notebooks/src/, not in string literals of a generator."""
    text = BUILDER.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    tree = ast.parse(text)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)}
    literals = [n.value[:40] for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and id(n) not in docstrings and (n.value.count("\n") > 3 or len(n.value) > 160)]
    assert not literals, f"cell-sized string literals in the builder: {literals}"
    for name in GEN.NOTEBOOKS:
        assert not re.search(r"^[A-Z_]+ = (\"\"\"|''')", SOURCES[name], re.M), f"{name}: a cell pasted from a string"


@pytest.mark.parametrize("name", GEN.NOTEBOOKS)
def test_placeholders_are_used_in_the_sources_and_all_substituted(name):
    text = SOURCES[name]
    for literal in (URL, "raw.githubusercontent.com", "colab.research.google.com/github"):
        assert literal not in text, (
            "the sources take the repository from _config.yml through placeholders ({{REPO_URL}}, {{COLAB_URL}}...)")
    assert "{{COLAB_URL}}" in text and "{{REPO_URL}}" in text
    paths = [ROOT / "notebooks" / f"{name}.ipynb", ROOT / "notebooks" / "solutions" / f"{name}.ipynb"]
    for path in filter(Path.exists, paths):
        assert not GEN.PLACEHOLDER.search(path.read_text(encoding="utf-8")), f"{path.name}: a placeholder is left"


def test_the_setup_and_fast_mode_cells_are_the_same_in_every_notebook():
    """The hidden setup cell (installs the package in Colab only) is written in each source: the same everywhere. The
    cell after `parameters` shrinks them under SERPENT_FAST=1, with the same first lines everywhere."""
    setups, fast_heads = set(), set()
    for name in GEN.NOTEBOOKS:
        cells = _source_cells(name)
        tags = [c.metadata.get("tags", []) for c in cells]
        assert [c.cell_type for c, t in zip(cells, tags) if "remove-cell" in t] == ["markdown"], name   # the badge
        setup = [c.source for c, t in zip(cells, tags) if "remove-input" in t]
        assert len(setup) == 1, f"{name}: one setup cell tagged remove-input"
        setups.add(setup[0])
        params = [i for i, t in enumerate(tags) if "parameters" in t]
        assert len(params) == 1, f"{name}: one parameters cell"
        fast = cells[params[0] + 1].source
        assert "if FAST:\n" in fast, f"{name}: the cell after `parameters` is the SERPENT_FAST cell"
        fast_heads.add(fast.split("if FAST:\n")[0])
    assert len(setups) == 1, "the setup cells differ between notebooks/src/*.md"
    assert len(fast_heads) == 1, "the SERPENT_FAST cells start differently"
    assert 'os.environ.get("SERPENT_FAST", "0") == "1"' in fast_heads.pop()


@pytest.mark.parametrize("name", GEN.NOTEBOOKS)
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
    emoji = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")
    sources = (sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
               + sorted((ROOT / "notebooks" / "src").glob("*.md")))
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


@pytest.mark.parametrize("name", GEN.NOTEBOOKS)
def test_exercises_become_heading_stub_and_hidden_solution(name):
    """In the .ipynb (Colab shows markdown as it is) no directive fence is left: each `{exercise-start}` is the
    heading and its ratings, then the prompt, the stub, and the solution cell collapsed in Jupyter, a form in Colab."""
    nb = GEN.build(name)
    assert not re.search(r"\{(exercise|solution)-(start|end)\}", json.dumps([c.source for c in nb.cells]))
    starts = len(re.findall(r"^```\{exercise-start\}", SOURCES[name], re.M))
    headings = [i for i, c in enumerate(nb.cells)
                if c.cell_type == "markdown" and c.source.startswith("### Exercise: ")]
    assert len(headings) == starts
    for i in headings:
        prompt, stub, solution = nb.cells[i:i + 3]
        assert re.search(r"^> \*\*Difficulty\*\* [●○]{5} \(\d/5\) · \*\*Importance\*\* [●○]{5} \(\d/5\) · about "
                         r"\*\*\d+ minutes\*\*$", prompt.source, re.M)
        assert stub.cell_type == "code" and "NotImplementedError" in stub.source
        assert solution.metadata["tags"][:2] == ["hide-input", "solution"]
        assert solution.metadata["jupyter"] == {"source_hidden": True} and solution.metadata["cellView"] == "form"
        assert solution.source.startswith("# @title Solution (double-click to show the code)\n")
    assert len(headings) == sum("solution" in c.metadata.get("tags", []) for c in nb.cells)


def test_the_builder_refuses_unformatted_code_and_unclosed_exercises(tmp_path, monkeypatch):
    monkeypatch.setattr(GEN, "SRC", tmp_path)
    head = SOURCES["00_setup"].split("\n---\n", 1)[0] + "\n---\n\n"
    (tmp_path / "99_bad.md").write_text(head + "```{code-cell} ipython3\nx=1\n```\n")
    with pytest.raises(SystemExit, match="not black-formatted at 79 columns"):
        GEN.build("99_bad")
    (tmp_path / "99_bad.md").write_text(head + "```{exercise-start} a\n:label: ex-a\n:difficulty: 1\n:importance: 1\n"
                                               ":minutes: 1\n```\n\nDo it.\n")
    with pytest.raises(SystemExit, match="not closed"):
        GEN.build("99_bad")
    (tmp_path / "99_bad.md").write_text(head + "[x]({{NO_SUCH}})\n")
    with pytest.raises(SystemExit, match="unknown placeholder"):
        GEN.build("99_bad")


def test_another_repository_url_changes_only_the_links(monkeypatch):
    """Changing repository.url in _config.yml (and nothing else) rebuilds every notebook: the code style is checked
    on the sources, placeholders and all, so a longer or shorter URL cannot make black want another layout."""
    real = GEN.placeholders

    def moved(name, solutions=False):
        values = real(name, solutions)
        return {k: v.replace("serpent-course/serpent", "a-much-longer-organisation-name/the-rainbow-serpent-course")
                for k, v in values.items()}
    monkeypatch.setattr(GEN, "placeholders", moved)
    for name in GEN.NOTEBOOKS:
        text = json.dumps([c.source for c in GEN.build(name).cells])
        assert "a-much-longer-organisation-name/the-rainbow-serpent-course" in text


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_solutions_version_replaces_every_stub_by_its_solution(name):
    """notebooks/solutions/ (for instructors, and for learners who want to check a whole notebook) is generated too:
    no stub left, every solution shown, and its relative links still lead to files of the repository."""
    import nbformat
    path = ROOT / "notebooks" / "solutions" / f"{name}.ipynb"
    committed = nbformat.read(str(path), as_version=4)
    generated = nbformat.reads(nbformat.writes(GEN.build(name, solutions=True)), as_version=4)
    assert committed["cells"] == generated["cells"], f"run `python notebooks/build_notebooks.py {name}`"
    exercise = GEN.build(name)
    stubs = sum("NotImplementedError" in c.source for c in exercise.cells if c.cell_type == "code")
    shown = [c for c in committed.cells if c.source.startswith("# Solution\n")]
    assert stubs >= 1 and len(shown) == stubs
    assert not any("NotImplementedError" in c.source for c in committed.cells if c.cell_type == "code")
    assert all("hide-input" not in c.metadata.get("tags", []) for c in shown)
    badge = f"blob/{BRANCH}/notebooks/solutions/{name}.ipynb"
    assert any(badge in c.source for c in committed.cells), "the badge opens the solutions version"
    for cell in committed.cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", cell.source):
                assert (path.parent / target).resolve().exists(), f"{name}: broken link {target}"
    assert sorted(p.stem for p in path.parent.glob("*.ipynb")) == sorted(WITH_EXERCISES)
