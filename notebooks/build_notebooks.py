"""Build the course notebooks from their text sources: ``python notebooks/build_notebooks.py [names]``.

The source of every notebook is ``notebooks/src/NN_name.md``, a MyST-markdown text notebook in jupytext's
``md:myst`` format (the chapters' format, and QuantEcon's): markdown, and ```` ```{code-cell} ipython3 ```` cells
with ``:tags:``. Edit those files, never the ``.ipynb``; this script writes, without outputs,

* ``notebooks/NN_name.ipynb``: what learners open in Colab or Jupyter and what the book renders (``_toc.yml`` lists
  the ``.ipynb``; ``_config.yml`` excludes ``notebooks/src``), and
* ``notebooks/solutions/NN_name.ipynb`` for each notebook with exercises: every stub dropped, every solution shown,
  " (solutions)" in the title, relative links one level up, the Colab badge opening this version.

``tests/test_notebooks.py`` checks that the committed ``.ipynb`` are this script's output.

**House style** (kept in each source, checked by the tests): a title cell with what you will learn, prerequisites
and times; the Colab badge (a markdown cell tagged ``remove-cell``: the book has its own launch button); the setup
cell tagged ``remove-input``, the same in every notebook, that installs the package only in Colab; a ``parameters``
cell and the ``SERPENT_FAST`` cell that shrinks it; exercises; a summary and further reading.

**Placeholders**: the repository is set once, in ``_config.yml``. Sources write ``{{REPO_URL}}``, ``{{RAW_URL}}``
(its raw.githubusercontent.com address), ``{{BRANCH}}``, ``{{NOTEBOOK}}`` (``NN_name``) and ``{{COLAB_URL}}`` (the
Colab address of the notebook being written), and this script substitutes them.

**Exercises**: one mechanism with the chapters, sphinx-exercise. The chapters use ``{exercise}``/``{solution}``
(prose); a coded notebook exercise uses the same extension's gated form, so that its stub and its solution are real
code cells of the source::

    ```{exercise-start} the previous-token score
    :label: ex-nb02-prev-token
    :difficulty: 1
    :importance: 3
    :minutes: 5
    ```

    The prompt (markdown).

    ```{code-cell} ipython3
    def prev_token_score(...):           # the stub: raises NotImplementedError, then calls its check
        raise NotImplementedError("your code here")
    ```

    ```{exercise-end}
    ```

    ```{solution-start} ex-nb02-prev-token
    ```

    ```{code-cell} ipython3
    ...                                  # the solution: runs the same check
    ```

    ```{solution-end}
    ```

Colab shows markdown as it is, where these fences would look broken, so the ``.ipynb`` gets no fence: the
``exercise-start`` fence becomes the heading ``### Exercise: <title>`` and the ratings line (● ○; emoji draw as empty
boxes where no emoji font is installed); the other three fences are dropped (and an emptied markdown cell with
them); the code cell between ``solution-start`` and ``solution-end`` becomes the solution cell, tagged ``hide-input``
and ``solution`` (collapsed in Jupyter, ``jupyter.source_hidden``; a form in Colab, ``cellView: form`` under the
``# @title Solution`` line). ``tests/test_checks.py`` runs every cell tagged ``solution`` against its check. The
extra options (difficulty, importance, minutes) are for this script: Sphinx never reads the sources.

**Code style**: the sources' code cells are black-formatted at ``CODE_WIDTH`` as written, placeholders and all (so
that a new repository URL in _config.yml never changes what black wants). This script does not reformat a source:
a cell black would change stops the build with black's version of it to paste in (IPython syntax that black cannot
parse is left alone). Only a cell's tags are kept as metadata; the cells of a notebook get stable ids ``NN-ii``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
SOLUTIONS = ROOT / "notebooks" / "solutions"   # the instructor's versions: solutions in place of the stubs
NOTEBOOKS = sorted(p.stem for p in SRC.glob("*.md"))

#: Code cells are black-formatted at this width: what fits the book's text column at a laptop's width
#: (tests/test_book.py measures it) and a Colab cell. Keep comments and strings within it (black does not split
#: them; tests/test_notebooks.py says which lines are too long).
CODE_WIDTH = 79
SOLUTION_TITLE = "# @title Solution (double-click to show the code)"
SOLUTION_TAGS = ("hide-input", "solution")
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
FENCE = re.compile(r"^```\{(exercise-start|exercise-end|solution-start|solution-end)\}[ \t]*(.*)\n"
                   r"((?:[ \t]*:[\w-]+:.*\n)*)```[ \t]*(?:\n|$)", re.M)


def placeholders(name: str, solutions: bool = False) -> dict[str, str]:
    """The values of the placeholders, from the repository set once in _config.yml."""
    import yaml
    repo = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]
    url, branch = repo["url"].rstrip("/"), str(repo["branch"])
    folder = "notebooks/solutions" if solutions else "notebooks"
    return {"REPO_URL": url, "BRANCH": branch, "NOTEBOOK": name,
            "RAW_URL": url.replace("https://github.com/", "https://raw.githubusercontent.com/"),
            "COLAB_URL": f"https://colab.research.google.com/github/{url.split('github.com/')[1]}/blob/{branch}"
                         f"/{folder}/{name}.ipynb"}


def _fail(where: str, message: str):
    raise SystemExit(f"notebooks/src/{where}: {message}")


def _substitute(text: str, values: dict[str, str], where: str) -> str:
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        _fail(where, f"unknown placeholder(s) {unknown}; known: {sorted(values)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _check_black(source: str, where: str) -> None:
    try:
        import black
    except ImportError:
        raise SystemExit("the notebooks' code is checked with black: pip install -r requirements.txt") from None
    try:
        formatted = black.format_str(source, mode=black.Mode(line_length=CODE_WIDTH)).rstrip("\n")
    except black.InvalidInput:      # IPython syntax (!pip, %magic) is left as written
        return
    if formatted != source:
        _fail(where, f"this code cell is not black-formatted at {CODE_WIDTH} columns; black writes it as\n\n"
                     f"{formatted}\n")


def _ratings(title: str, options: dict[str, str], where: str) -> str:
    try:
        d, i, minutes = (int(options[k]) for k in ("difficulty", "importance", "minutes"))
    except (KeyError, ValueError):
        _fail(where, f"exercise {title!r} needs integer :difficulty:, :importance: (1-5) and :minutes:")
    if not (title and options.get("label") and 1 <= d <= 5 and 1 <= i <= 5):
        _fail(where, f"exercise {title!r} needs a title, a :label: and ratings from 1 to 5")
    dots = lambda n: "●" * n + "○" * (5 - n)
    return (f"### Exercise: {title}\n\n> **Difficulty** {dots(d)} ({d}/5) · **Importance** {dots(i)} ({i}/5) · "
            f"about **{minutes} minutes**\n")


def cells(name: str, solutions: bool = False) -> list[tuple[dict, str | None]]:
    """The notebook's cells as learners get them, each with its role: None, "stub" or "solution"."""
    import jupytext
    import nbformat
    values = placeholders(name, solutions)
    out, state, label = [], None, None
    for n, cell in enumerate(jupytext.read(SRC / f"{name}.md", fmt="md:myst").cells, 1):
        where = f"{name}.md, cell {n}"
        if cell.cell_type == "code":
            _check_black(cell.source, where)
        source = _substitute(cell.source, values, where)
        metadata = {"tags": list(cell.metadata["tags"])} if cell.metadata.get("tags") else {}
        if cell.cell_type == "markdown":
            def directive(m: re.Match) -> str:
                nonlocal state, label
                kind, arg = m.group(1), m.group(2).strip()
                options = dict(re.findall(r"^[ \t]*:([\w-]+):[ \t]*(.*?)[ \t]*$", m.group(3), re.M))
                opened = {"exercise-end": "exercise", "solution-end": "solution"}.get(kind)
                if state != opened:
                    _fail(where, f"{{{kind}}} with {'an open ' + state if state else 'no open'} block")
                if kind == "exercise-start":
                    state, label = "exercise", options.get("label")
                    return _ratings(arg, options, where)
                if kind == "solution-start":
                    if arg != label:
                        _fail(where, f"{{solution-start}} {arg} follows the exercise {label}")
                    state = "solution"
                    return ""
                state = None
                return ""
            source = FENCE.sub(directive, source).strip("\n")
            if re.search(r"\{(exercise|solution)-(start|end)\}", source):
                _fail(where, "a malformed exercise or solution fence (see the convention in build_notebooks.py)")
            if source:
                out.append((nbformat.v4.new_markdown_cell(source, metadata=metadata), None))
            continue
        role = {"exercise": "stub", "solution": "solution"}.get(state)
        if role == "stub" and "NotImplementedError" not in source:
            _fail(where, "an exercise's code cell is its stub: it raises NotImplementedError")
        out.append((nbformat.v4.new_code_cell(source, metadata=metadata), role))
    if state:
        _fail(name + ".md", f"the {state} {label} is not closed")
    return out


def has_exercises(name: str, nb=None) -> bool:
    """True when the notebook (``nb``, already built, or ``name``'s source) has a solution cell."""
    if nb is not None:
        return any("solution" in c.metadata.get("tags", []) for c in nb.cells)
    return any(role == "solution" for _, role in cells(name))


def build(name: str, solutions: bool = False):
    """The notebook (or its solutions version) as an nbformat notebook, without outputs."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    for cell, role in cells(name, solutions):
        tags = cell.metadata.get("tags", [])
        if role == "stub" and solutions:
            continue
        if role == "solution" and solutions:
            cell.metadata["tags"] = ["solution"] + [t for t in tags if t not in SOLUTION_TAGS]
            cell.source = "# Solution\n" + cell.source
        elif role == "solution":
            cell.metadata["tags"] = list(SOLUTION_TAGS) + [t for t in tags if t not in SOLUTION_TAGS]
            cell.metadata["jupyter"] = {"source_hidden": True}
            cell.metadata["cellView"] = "form"
            cell.source = f"{SOLUTION_TITLE}\n{cell.source}"
        elif solutions and cell.cell_type == "markdown" and cell.source.startswith("# "):
            title, _, rest = cell.source.partition("\n")
            cell.source = f"{title} (solutions)\n{rest}"
        if solutions and cell.cell_type == "markdown":      # one folder deeper: relative links go one level up
            cell.source = re.sub(r"\]\((?!https?:|#)", "](../", cell.source)
        nb.cells.append(cell)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(names=None) -> None:
    import nbformat
    for name in [Path(n).stem for n in names or NOTEBOOKS]:
        if name not in NOTEBOOKS:
            raise SystemExit(f"no notebooks/src/{name}.md; the notebooks: {', '.join(NOTEBOOKS)}")
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = build(name)
        nbformat.write(nb, str(path))
        print("wrote", path.relative_to(ROOT))
        path = SOLUTIONS / f"{name}.ipynb"
        if has_exercises(name, nb):
            SOLUTIONS.mkdir(exist_ok=True)
            nbformat.write(build(name, solutions=True), str(path))
            print("wrote", path.relative_to(ROOT))
        elif path.exists():
            path.unlink()
            print("removed", path.relative_to(ROOT), "(no exercises left)")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
