"""The committed notebooks: generated from notebooks/_make_notebooks.py, without outputs, every Colab badge, install
line and artifact address derived from the one repository URL in _config.yml."""

import importlib.util
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
