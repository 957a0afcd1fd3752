"""The built book: it builds offline with warnings as errors, every page exists, nothing is loaded from the network,
a raising notebook fails the build, and (browser test) a chart page draws its chart and its math in Chromium.

The book is built once per module, in fast mode (SERPENT_FAST=1), into a temporary folder with the same command
CI and the Pages workflow use (``bash book/_scripts/build.sh``).
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD_SH = ROOT / "book" / "_scripts" / "build.sh"
# Pages with an Altair chart and math: the browser test opens them. The serpent chapter draws its token-pattern
# chart with the package (serpent.patterns); add notebooks/06_*.html here when the serpent notebook lands.
CHART_PAGES = ["book/06_serpent.html"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.slow  # one book build (about a minute on 2 cores) shared by the module


def _env() -> dict:
    env = dict(os.environ)
    env.update(SERPENT_FAST="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONHASHSEED="0")
    return env


# A page that stops the build if Sphinx reads it: the YAML front matter of huggingface_hub's dataset card template,
# which broke the book of everyone with a virtual environment inside the project folder.
BROKEN_PAGE = "---\n{{ card_data }}\n---\n\n# {{ pretty_name }}\n"


def _plant_environments() -> list[Path]:
    """Environment folders inside the repository, as newcomers make them, each holding a page that breaks the book:
    ``.venv`` (only if the checkout has none), a virtual environment and a conda prefix under unusual names."""
    planted = []
    tag = f"{os.getpid()}"
    for name, marker in ((".venv", "pyvenv.cfg"), (f"my env {tag}", "pyvenv.cfg"), (f"prefix-{tag}", "conda-meta")):
        d = ROOT / name
        if d.exists():
            continue
        site = d / "lib" / "python3.11" / "site-packages" / "huggingface_hub" / "templates"
        site.mkdir(parents=True)
        (d / marker).mkdir() if marker == "conda-meta" else (d / marker).write_text("home = /usr/bin\n")
        (site / "datasetcard_template.md").write_text(BROKEN_PAGE)
        (d / "share" / "doc").mkdir(parents=True)
        (d / "share" / "doc" / "README.md").write_text(BROKEN_PAGE)
        planted.append(d)
    return planted


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The book, built with environment folders planted in the repository (they must be invisible to it)."""
    out = tmp_path_factory.mktemp("book")
    planted = _plant_environments()
    try:
        proc = subprocess.run(["bash", str(BUILD_SH), "--path-output", str(out)], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=1500)
    finally:
        for d in planted:
            shutil.rmtree(d, ignore_errors=True)
    assert len(planted) >= 2, "the environment folders were not planted"
    return proc, out / "_build" / "html"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


class _Refs(html.parser.HTMLParser):
    """Collects every URL a browser would fetch on its own: script src, link href (style sheets, preloads, icons,
    fonts), img/iframe/source/embed/object src, and url()/@import inside inline <style>."""

    FETCHING_LINK_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon",
                          "manifest", "prefetch", "dns-prefetch", "preconnect"}

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.urls.append(a["src"])
            else:
                self._in_script = True
                self.inline_scripts.append("")
        elif tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            if rels & self.FETCHING_LINK_RELS and a.get("href"):
                self.urls.append(a["href"])
        elif tag in ("img", "iframe", "source", "embed", "audio", "video") and a.get("src"):
            self.urls.append(a["src"])
        elif tag == "object" and a.get("data"):
            self.urls.append(a["data"])
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", data) + re.findall(r"@import\s+['\"]([^'\"]+)", data)
        if self._in_script:
            self.inline_scripts[-1] += data


def _remote(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.I))


def test_build_succeeds_with_warnings_as_errors(built):
    proc, html = built
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0, log[-6000:]
    assert "build succeeded" in log
    sphinx_warnings = [l for l in log.splitlines() if re.search(r"(^|: )(WARNING|ERROR|CRITICAL): ", l)]
    assert not sphinx_warnings, sphinx_warnings[:10]
    assert (html / "index.html").is_file()


def test_environment_folders_are_invisible_to_the_book(built):
    """The planted environments (see :func:`_plant_environments`) broke no build and became no page."""
    proc, html = built
    assert proc.returncode == 0, proc.stderr[-3000:]
    leaked = [p for p in html.rglob("*.html") if "site-packages" in p.as_posix() or "templates" in p.parts]
    assert not leaked, leaked[:5]
    assert not (html / ".venv").exists()


def test_every_toc_page_is_built(built):
    _, html = built
    files = _toc_files()
    chapters = [f"book/0{i}_" for i in range(8)]
    for prefix in chapters:
        assert any(f.startswith(prefix) for f in files), f"no chapter {prefix}* in _toc.yml"
    for name in ("book/workshop", "book/glossary", "book/computed", "book/setup", "book/bibliography"):
        assert name in files
    for f in files:
        page = html / (str(Path(f).with_suffix("")) + ".html")
        assert page.is_file(), f"{f} listed in _toc.yml but {page} was not built"
        assert page.stat().st_size > 5000


def test_no_remote_scripts_styles_or_fonts(built):
    _, html = built
    pages = sorted(html.rglob("*.html"))
    assert len(pages) >= 12
    offenders = []
    vega_pages = 0
    for page in pages:
        p = _Refs()
        p.feed(page.read_text(encoding="utf-8"))
        offenders += [f"{page.relative_to(html)}: {u}" for u in p.urls if _remote(u)]
        assert not any("require.js" in u or "require.min.js" in u for u in p.urls), page
        if any("vegaEmbed" in s for s in p.inline_scripts):
            vega_pages += 1
            local = [u for u in p.urls if not _remote(u)]
            assert any("vega-bundle.js" in u for u in local), f"{page}: Altair chart without the vendored bundle"
            assert any("vega-debug.js" in u for u in local), f"{page}: Altair chart without vega-debug.js"
    assert not offenders, offenders[:20]
    assert vega_pages >= 1, "no page with an Altair chart: the offline vega check tests nothing"
    for css in (html / "_static").rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        remote = [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]([^'\"]+)",
                                                                                           text) if _remote(u)]
        assert not remote, f"{css.relative_to(html)} loads {remote[:3]}"


def test_vendored_assets_are_in_static(built):
    _, html = built
    static = html / "_static"
    bundle = (static / "vega-bundle.js").read_text(encoding="utf-8")
    assert len(bundle) > 500_000 and "(function(){" in bundle[:1000] and bundle.rstrip().endswith("})();")
    sys.path.insert(0, str(ROOT / "book" / "_scripts"))
    try:
        import vendor_assets
        versions = vendor_assets.altair_versions()
    finally:
        sys.path.pop(0)
    debug = (static / "vega-debug.js").read_text(encoding="utf-8")
    for key, value in versions.items():
        assert f'"{key}": "{value}"' in debug
    assert (static / "mathjax" / "tex-mml-chtml.js").stat().st_size > 500_000
    assert (static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()
    page = (html / CHART_PAGES[0]).read_text(encoding="utf-8")
    assert re.search(r'<script[^>]*src="[^"]*_static/mathjax/tex-mml-chtml\.js', page), "MathJax not vendored"


def test_repository_links_derive_from_config(built):
    _, html = built
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    branch = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["branch"]
    text = "".join(p.read_text(encoding="utf-8") for p in (html / "book").glob("*.html"))
    assert f'href="{url}/blob/{branch}/serpent/config.py"' in text  # the {repo} role
    assert f'href="{url}"' in text  # the theme's repository button


def test_raising_notebook_fails_the_build(tmp_path):
    """The real _config.yml on a two-page book whose first page's code cell raises: the build must fail and name
    the error, and still write the other page (one broken notebook does not hide the rest of the book)."""
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/fine\n")
    (tmp_path / "book" / "fine.md").write_text("# Fine\n\nThis page has no code and must still be built.\n")
    for name in ("_ext", "_static", "references.bib"):
        (tmp_path / "book" / name).symlink_to(ROOT / "book" / name)
    (tmp_path / "book" / "index.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n# Broken\n\n"
        "```{code-cell} ipython3\nraise RuntimeError('this notebook is broken on purpose')\n```\n")
    proc = subprocess.run(["jupyter-book", "build", str(tmp_path), "-W", "-n", "--keep-going"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "this notebook is broken on purpose" in log
    fine = tmp_path / "_build" / "html" / "book" / "fine.html"
    assert fine.is_file() and "must still be built" in fine.read_text(encoding="utf-8"), log[-3000:]


# ------------------------------------------------------------------------------------------------ browser check

def _png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) with the standard library.

    Returns (width, height, bytes per pixel, rows of raw pixel bytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6), f"unsupported PNG (depth {depth}, colour type {ctype})"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def _chromium(args: list[str], tmp: Path, height: int = 2400) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
            # every host name fails to resolve: a page that tries the network logs an error we catch below
            "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
            f"--window-size=1280,{height}", "--virtual-time-budget=10000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


@pytest.mark.browser
@pytest.mark.parametrize("page", CHART_PAGES)
def test_chart_page_draws_in_chromium(built, page, tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test needs it)")
    _, html = built
    url = (html / page).as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-3000:]
    # vega-embed replaced the chart's placeholder with a drawn view; MathJax typeset the math
    assert re.search(r'class="[^"]*\bvega-embed\b', dom.stdout), "the Altair chart was not embedded"
    assert re.search(r"<(canvas|svg)[^>]*class=\"marks\"", dom.stdout), "vega drew no marks"
    assert "<mjx-container" in dom.stdout, "MathJax did not typeset the math"
    console = [l for l in dom.stderr.splitlines() if ":CONSOLE" in l]
    errors = [l for l in console if re.search(r"Uncaught|Error|Failed to load|ERR_|Refused", l)]
    assert not errors, errors
    assert not [l for l in dom.stderr.splitlines() if "ERR_NAME_NOT_RESOLVED" in l], "the page tried the network"

    # a window tall enough for the chapter's opening (its answer and body-axes figures) and the token chart after it
    shot = tmp_path / "page.png"
    res = _chromium([f"--screenshot={shot}", url], tmp_path, height=7200)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-3000:]
    width, height, bpp, rows = _png_pixels(shot)
    assert (width, height) == (1280, 7200)
    # not blank: many distinct colours over the page, and a good share of non-white pixels in the content column
    pixels = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 4 * bpp)}
    assert len(pixels) > 30, f"only {len(pixels)} colours: the page looks blank"
    column = [row[i:i + 3] for row in rows[::4] for i in range(300 * bpp, 1000 * bpp, 4 * bpp)]
    ink = sum(1 for px in column if px != b"\xff\xff\xff")
    assert ink > 0.02 * len(column), f"only {ink} of {len(column)} sampled pixels drawn in the content column"
    # the chart itself is in the pixels: the token boxes are filled with the pattern palette's exact colours
    from serpent.patterns import PALETTE

    sampled = [row[i:i + 3] for row in rows[::2] for i in range(0, len(row), 2 * bpp)]
    palette = {name: bytes.fromhex(colour.lstrip("#")) for name, colour in PALETTE.items()}
    seen = {name: sum(1 for px in sampled if px == rgb) for name, rgb in palette.items()}
    assert sum(1 for n in seen.values() if n >= 50) >= 4, f"chart colours not on screen: {seen}"


# Pages whose figures are glued from the book's run (serpent.figures): each must draw every one of them.
FIGURE_PAGES = sorted(p.stem for p in (ROOT / "book").glob("0*.md") if "{glue:figure}" in p.read_text())
LAPTOP = 1280   # px: the window width the pages are measured at
# Measures a page after its charts and math are drawn and writes the result into the page (headless Chromium's
# --dump-dom runs no script of ours otherwise): drawn charts, and every code block, display equation, chart, table
# or image wider than the text column (more than a few pixels of sub-pixel rounding).
_MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const main = document.querySelector("main article") || document.querySelector("main") || document.body;
  const limit = main.getBoundingClientRect().right + 4;
  const wide = [];
  for (const el of main.querySelectorAll("pre, mjx-container[display='true'], .vega-embed, table, img")) {
    const box = el.getBoundingClientRect();
    const scrolls = el.tagName !== "TABLE" && el.scrollWidth > el.clientWidth + 6;  // a table may scroll inside
    if (box.width > 0 && (scrolls || box.right > limit))
      wide.push(el.tagName.toLowerCase() + " " + Math.round(el.scrollWidth) + " px: "
                + (el.textContent || "").trim().slice(0, 40));
  }
  const out = document.createElement("div");
  out.id = "serpent-measure";
  out.textContent = JSON.stringify({
    charts: document.querySelectorAll(".vega-embed svg.marks, .vega-embed canvas.marks").length,
    column: Math.round(main.getBoundingClientRect().width), wide: wide});
  document.body.appendChild(out);
}, 4000));
</script>"""
# One Chromium run measures every page: each in an iframe of a laptop's width; the frame page collects the results.
_FRAMES = """<!doctype html><html><body><div id="result"></div><script>
const pages = %s;
const done = {};
for (const page of pages) {
  const frame = document.createElement("iframe");
  frame.style.width = "%dpx"; frame.style.height = "900px";
  frame.src = page;
  document.body.appendChild(frame);
}
let waited = 0;
const poll = setInterval(() => {
  waited += 500;
  for (const [i, frame] of [...document.querySelectorAll("iframe")].entries()) {
    const el = frame.contentDocument && frame.contentDocument.getElementById("serpent-measure");
    done[pages[i]] = el ? JSON.parse(el.textContent) : null;
  }
  if (Object.values(done).every(v => v !== null) || waited > 100000) {
    clearInterval(poll);
    document.getElementById("result").textContent = JSON.stringify(done);
  }
}, 500);
</script></body></html>"""


def _measure_pages(html_root: Path, pages: list[str], tmp: Path, script: str = _MEASURE) -> dict[str, dict | None]:
    """Measure the built pages ``pages`` (paths relative to the HTML root, no suffix) at a laptop's width in one
    headless Chromium run: {page: {"charts": n, "column": px, "wide": [...]}}, None where the page did not load
    (``script``: what to measure; it writes its JSON into a ``serpent-measure`` element)."""
    copies = []
    for page in pages:
        src = html_root / f"{page}.html"
        copy = src.with_name(src.stem + ".measure.html")
        copy.write_text(src.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
        copies.append(copy)
    frames = html_root / "measure-frames.html"
    rel = [c.relative_to(html_root).as_posix() for c in copies]
    frames.write_text(_FRAMES % (json.dumps(rel), LAPTOP), encoding="utf-8")
    try:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--allow-file-access-from-files",
             f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--window-size={LAPTOP + 40},900", "--virtual-time-budget=120000", "--dump-dom", frames.as_uri()],
            capture_output=True, text=True, timeout=300)
    finally:
        for c in copies + [frames]:
            c.unlink()
    m = re.search(r'<div id="result">(.*?)</div>', proc.stdout, re.S)
    assert m and m.group(1), f"the measuring page did not finish\n{proc.stderr[-2000:]}"
    found = json.loads(html.unescape(m.group(1)))
    return {page: found[r] for page, r in zip(pages, rel)}


@pytest.mark.browser
def test_every_page_fits_a_laptop_screen_and_draws_its_figures(built, tmp_path):
    """At 1280 px (a laptop) no code block, display equation, chart or table of any page is wider than the text
    column, so a reader never scrolls sideways; and every figure a chapter glues from the book's run is drawn."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test needs it)")
    _, root = built
    pages = sorted(str(p.relative_to(root).with_suffix("")) for d in ("book", "notebooks") for p in (root / d).glob("*.html"))
    assert len(FIGURE_PAGES) >= 5 and len(pages) >= 20
    measured = _measure_pages(root, pages, tmp_path)
    problems = [f"{page}: did not load" for page, m in measured.items() if m is None]
    for page, m in measured.items():
        if m and m["wide"]:
            problems.append(f"{page} (column {m['column']} px): {m['wide']}")
    for page in FIGURE_PAGES:
        m = measured.get(f"book/{page}")
        glued = (ROOT / "book" / f"{page}.md").read_text().count("{glue:figure}")
        if m and m["charts"] < glued:
            problems.append(f"book/{page}: {m['charts']} charts drawn for {glued} glued figures")
    assert not problems, "\n".join(problems)


def test_every_page_offers_its_source_a_notebook_and_a_pdf(built):
    """The download menu of every page: its source file (and, for a notebook or an executed chapter, the .ipynb)
    from the built site itself, and "Print to PDF"; the notebook a learner downloads is the course's notebook."""
    _, root = built
    pages = sorted(p for d in ("book", "notebooks") for p in (root / d).glob("*.html") if "measure" not in p.name)
    assert len(pages) >= 20
    links = re.compile(r'<a href="([^"]+)"[^>]*\s+class="[^"]*\bbtn-download-(source|notebook)-button\b')
    for page in pages:
        text = page.read_text(encoding="utf-8")
        found = dict((kind, href) for href, kind in links.findall(text))
        assert "source" in found, f"{page.name}: no source download"
        assert re.search(r'<button onclick="window\.print\(\)"\s+class="[^"]*\bbtn-download-pdf-button\b', text), \
            f"{page.name}: no Print-to-PDF button"
        for kind, href in found.items():
            target = (page.parent / href).resolve()
            assert target.is_file() and target.stat().st_size > 0, f"{page.name}: {kind} download {href} missing"
        if page.parent.name == "notebooks":
            nb = page.parent / found["source"]
            assert nb.suffix == ".ipynb", f"{page.name}: the download is {nb.name}, not the notebook"
            ours = json.loads((ROOT / "notebooks" / nb.name).read_text(encoding="utf-8"))
            theirs = json.loads(nb.read_text(encoding="utf-8"))
            assert [c["source"] for c in theirs["cells"]] == [c["source"] for c in ours["cells"]], nb.name
        elif "code-cell" in (ROOT / "book" / f"{page.stem}.md").read_text(encoding="utf-8"):
            assert "notebook" in found, f"{page.name} executes code but offers no .ipynb"


# ------------------------------------------------------------------------------------- every chart, read as a reader
# Injected into <head> of a copy of each page: wraps vega-embed when the vendored bundle defines it, so that every
# chart is drawn as SVG (its labels can be measured) and its view (the scene graph: what was drawn, from which data)
# is kept for the check below.
_KEEP_VIEWS = """<script>
(function () {
  let real;
  window.__serpentViews = [];
  Object.defineProperty(window, "vegaEmbed", {configurable: true, get: () => real, set: (embed) => {
    real = function (el, spec, opt) {
      return embed(el, spec, Object.assign({}, opt || {}, {renderer: "svg"})).then((r) => {
        window.__serpentViews.push({view: r.view, spec: r.spec, el: r.view.container() || el});
        return r;
      });
    };
    Object.assign(real, embed);
  }});
})();
</script>"""
# Reads every chart and caption of the page once drawn; writes the findings into the page (see _measure_pages).
_READ_CHARTS = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const visible = (it) => (it.opacity === undefined || it.opacity > 0) &&
      ((it.fill && it.fill !== "transparent" && it.fill !== "none") ||
       (it.stroke && it.stroke !== "transparent" && it.stroke !== "none") || it.text !== undefined);
  function drawn(node) {            // visible items of data marks under a scene node
    let n = 0;
    for (const item of node.items || []) {
      if (node.marktype === "group") { for (const m of item.items || []) n += drawn(m); }
      else if (node.role === "mark" && visible(item)) n += 1;
    }
    return n;
  }
  function colourLegendWanted(spec) {   // a colour encoded by a field, with its legend not switched off
    let wanted = false;
    JSON.stringify(spec, (k, v) => {
      if ((k === "color" || k === "fill" || k === "stroke") && v && typeof v === "object" && !Array.isArray(v)) {
        const enc = v.condition && v.condition.field ? v.condition : v;
        if (enc.field && v.legend !== null && enc.legend !== null) wanted = true;
      }
      return v;
    });
    return wanted;
  }
  function overlaps(el) {
    const found = [];
    const groups = [...el.querySelectorAll("g.role-axis, g.role-legend, g.mark-text")];
    for (const g of groups) {
      const texts = [...g.querySelectorAll("text")].filter((t) => t.textContent.trim() && t.getAttribute("opacity") !== "0");
      const boxes = texts.map((t) => t.getBoundingClientRect());
      for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 1) found.push(texts[i].textContent + " / " + texts[j].textContent);
      }
    }
    return found;
  }
  const charts = (window.__serpentViews || []).map((v, i) => {
    const root = v.view.scenegraph().root;
    const spec = v.spec;
    const parts = spec.vconcat || spec.hconcat || spec.concat || null;
    const panels = [];
    if (parts) {
      const top = root.items[0];
      for (const mark of top.items || []) {
        const m = /^concat_(\\d+)_group$/.exec(mark.name || "");
        if (!m) continue;
        const sub = JSON.stringify(parts[+m[1]] || {});
        panels.push({panel: +m[1], drawn: drawn(mark), onClick: sub.includes('"empty":false')});
      }
    }
    return {chart: i, title: JSON.stringify(spec.title || (parts && parts[0] && parts[0].title) || "").slice(0, 60),
            drawn: drawn(root), emptyPanels: panels.filter((p) => p.drawn === 0 && !p.onClick).map((p) => p.panel),
            legendWanted: colourLegendWanted(spec),
            legendLabels: v.el.querySelectorAll("g.role-legend g.role-legend-label text, g.role-legend g.role-legend-gradient").length,
            overlaps: overlaps(v.el)};
  });
  const lum = (c) => { const v = c.match(/[\\d.]+/g).slice(0, 3).map((x) => { x = x / 255;
      return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
      return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  function background(el) {
    for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
      if (c && !/rgba\\(.*, 0\\)$/.test(c) && c !== "transparent") return c; }
    return "rgb(255, 255, 255)";
  }
  const captions = [...document.querySelectorAll("figcaption, .caption-text")].filter((c) => c.textContent.trim()).map((c) => {
    const [a, b] = [lum(getComputedStyle(c).color), lum(background(c))];
    return {text: c.textContent.trim().slice(0, 40), contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)};
  });
  const out = document.createElement("div");
  out.id = "serpent-measure";
  out.textContent = JSON.stringify({charts: charts, embeds: document.querySelectorAll(".vega-embed").length,
                                    captions: captions});
  document.body.appendChild(out);
}, 6000));
</script>"""


def _read_charts(html_root: Path, pages: list[str], tmp: Path) -> dict[str, dict | None]:
    """Every chart and caption of ``pages`` as Chromium draws them (one run, see :func:`_measure_pages`)."""
    saved = {}
    for page in pages:   # the view keeper must run before the page's own scripts: it goes into <head>
        src = html_root / f"{page}.html"
        saved[src] = src.read_text(encoding="utf-8")
        src.write_text(saved[src].replace("<head>", "<head>" + _KEEP_VIEWS, 1), encoding="utf-8")
    try:
        return _measure_pages(html_root, pages, tmp, script=_READ_CHARTS)
    finally:
        for src, text in saved.items():
            src.write_text(text, encoding="utf-8")


@pytest.mark.browser
def test_every_chart_draws_its_data_with_a_legend_and_readable_labels(built, tmp_path):
    """On every page, in Chromium at 1280 px: every Vega chart was embedded and draws visible marks in each of its
    panels (a panel that waits for a click excepted), shows a legend wherever it encodes a colour by a field, and
    no two of its axis labels, legend labels or text labels overlap; every figure caption has a contrast of at
    least 4.5:1 against its background (WCAG AA)."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test needs it)")
    _, root = built
    pages = sorted(str(p.relative_to(root).with_suffix("")) for d in ("book", "notebooks") for p in (root / d).glob("*.html"))
    found = _read_charts(root, pages, tmp_path)
    problems, charts = [], 0
    for page, m in found.items():
        if m is None:
            problems.append(f"{page}: did not load")
            continue
        if len(m["charts"]) < m["embeds"]:
            problems.append(f"{page}: {m['embeds']} chart placeholders, {len(m['charts'])} charts embedded")
        for c in m["charts"]:
            charts += 1
            name = f"{page} chart {c['chart']} {c['title']}"
            if c["drawn"] == 0:
                problems.append(f"{name}: axes but no visible mark (empty data, or colours outside the scale)")
            if c["emptyPanels"]:
                problems.append(f"{name}: panels {c['emptyPanels']} draw nothing")
            if c["legendWanted"] and not c["legendLabels"]:
                problems.append(f"{name}: encodes a colour but shows no legend")
            if c["overlaps"]:
                problems.append(f"{name}: overlapping labels {c['overlaps'][:4]}")
        for cap in m["captions"]:
            if cap["contrast"] < 4.5:
                problems.append(f"{page}: caption '{cap['text']}' has contrast {cap['contrast']:.1f}:1")
    assert charts >= 20, f"only {charts} charts read: the check tests little"
    assert not problems, "\n".join(problems)


class _Tables(html.parser.HTMLParser):
    """The tables of a page as lists of rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


def test_tables_of_steps_are_in_training_order(built):
    """Every table on every page with a column of training steps lists them in numerical order (not as text:
    0, 10158, 144, ...)."""
    _, root = built
    checked, unordered = 0, []
    for page in sorted(p for d in ("book", "notebooks") for p in (root / d).glob("*.html")):
        parser = _Tables()
        parser.feed(page.read_text(encoding="utf-8"))
        for table in parser.tables:
            if not table or "step" not in [c.lower() for c in table[0]]:
                continue
            col = [c.lower() for c in table[0]].index("step")
            steps = [int(r[col].replace(",", "")) for r in table[1:] if len(r) > col and r[col].replace(",", "").isdigit()]
            if len(steps) >= 3:
                checked += 1
                if steps != sorted(steps):
                    unordered.append(f"{page.relative_to(root)}: {steps[:8]}")
    # printed tables (pandas' to_string in an output) are read too: a "step" header line then rows of numbers
    for page in sorted(p for d in ("book", "notebooks") for p in (root / d).glob("*.html")):
        for block in re.findall(r"<pre>(.*?)</pre>", page.read_text(encoding="utf-8"), re.S):
            lines = html.unescape(re.sub(r"<[^>]+>", "", block)).splitlines()
            for i, line in enumerate(lines):
                if line.split()[:1] == ["step"]:
                    steps = [int(l.split()[0]) for l in lines[i + 1:] if l.split() and l.split()[0].isdigit()]
                    if len(steps) >= 3:
                        checked += 1
                        if steps != sorted(steps):
                            unordered.append(f"{page.relative_to(root)} (printed): {steps[:8]}")
    assert checked >= 2, f"only {checked} tables of steps found: the check tests little"
    assert not unordered, unordered


def test_computed_page_states_the_mode_of_this_build(built):
    """The page on how the book was computed says which mode this build ran in (the test builds in fast mode)."""
    _, root = built
    text = re.sub(r"<[^>]+>", "", (root / "book" / "computed.html").read_text(encoding="utf-8"))
    m = re.search(r"This copy of the book was built in\s+(fast|full) mode", text)
    assert m, "the computed page does not state its build's mode"
    assert m.group(1) == ("fast" if _env()["SERPENT_FAST"] == "1" else "full")


def test_handout_prints_one_page_per_block(built):
    """The workshop handout has one block per teaching block of the plan, each with objectives and prompts, and the
    course's style sheet starts each on a new printed page."""
    _, root = built
    plan = yaml.safe_load((ROOT / "book" / "workshop_plan.yml").read_text(encoding="utf-8"))
    taught = [b for b in plan["blocks"] if b["objectives"]]
    text = (root / "book" / "handout.html").read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="handout-block">(.*?)</div>', text, re.S)
    assert len(blocks) == len(taught) >= 6
    for block, planned in zip(blocks, taught):
        assert html.escape(planned["title"]) in block and block.count("<li>") >= 2
    css = (root / "_static" / "serpent.css").read_text(encoding="utf-8")
    assert re.search(r"@media print\s*{\s*\.handout-block\s*{\s*break-before:\s*page", css)
