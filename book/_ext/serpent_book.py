"""Sphinx extension of the serpent book: repository-derived links, and a guard for the vendored page assets.

Design: the repository URL is written once, in ``_config.yml`` (``repository.url``, ``repository.branch``);
Jupyter Book passes it to the theme as ``html_theme_options['repository_url']``. Everything that points at the
repository is derived from there, so moving the course means changing one line:

* ``{repo}`path```            a link to a file or folder of the repository (``{repo}`text <path>``` for a title);
* ``{colab}`notebooks/x.ipynb``` an "Open in Colab" link for a notebook of this repository (Colab opens
  notebooks straight from GitHub: ``https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/<path>``).

Both roles check that the path exists in the repository and emit a warning otherwise (``-W`` makes it an error),
so a link cannot point at a notebook that was renamed or not yet written.

Jupyter Book always loads sphinx-thebe, which puts an inline ``const THEBE_JS_URL = "https://unpkg.com/..."``
into every page, twice (a redeclaration error in the browser console). This book has no live-code (thebe)
button: the extension drops thebe's scripts and style sheet from every page.

At ``builder-inited`` the extension checks that ``book/_scripts/vendor_assets.py`` has run (the vega bundle and
MathJax are in ``book/_static``): a build without them would produce pages that silently fetch nothing.

At ``config-inited`` (before the table of contents is read) every Python environment or tool folder in the
repository (``.venv``, ``venv``, a conda prefix, ``node_modules``: :func:`serpent.io.environment_folders`, whatever
the folder is called) joins ``exclude_patterns``: Sphinx would otherwise read the Markdown files that installed
packages ship as pages of the book, and stop on the first one it cannot parse.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from docutils import nodes, utils
from sphinx.errors import ExtensionError
from sphinx.util.nodes import split_explicit_title

REQUIRED_STATIC = ("vega-bundle.js", "vega-debug.js", "mathjax/tex-mml-chtml.js")


def repository(config) -> tuple[str, str, str]:
    """(owner, name, branch) from ``html_theme_options`` as Jupyter Book fills it from ``_config.yml``."""
    opts = getattr(config, "html_theme_options", {}) or {}
    url = (opts.get("repository_url") or "").rstrip("/")
    branch = opts.get("repository_branch") or "main"
    parts = urlparse(url).path.strip("/").split("/")
    if urlparse(url).netloc != "github.com" or len(parts) != 2:
        raise ExtensionError(f"serpent_book: repository.url in _config.yml must look like "
                             f"https://github.com/<owner>/<name>; got {url!r}")
    return parts[0], parts[1].removesuffix(".git"), branch


def _link_role(kind: str):
    def role(name, rawtext, text, lineno, inliner, options=None, content=None):
        env = inliner.document.settings.env
        has_title, title, target = split_explicit_title(utils.unescape(text))
        target = target.strip().lstrip("/")
        owner, repo, branch = repository(env.config)
        messages = []
        if not (Path(env.srcdir) / target).exists():
            messages.append(inliner.reporter.warning(
                f"{{{kind}}} role: {target!r} does not exist in the repository; fix the path or write the file",
                line=lineno))
        if kind == "colab":
            if not target.endswith(".ipynb"):
                messages.append(inliner.reporter.warning(
                    f"{{colab}} role: {target!r} is not a notebook (.ipynb); Colab opens notebooks only",
                    line=lineno))
            url = f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{target}"
            label = title if has_title else "Open in Colab"
        else:
            sub = "tree" if (Path(env.srcdir) / target).is_dir() else "blob"
            url = f"https://github.com/{owner}/{repo}/{sub}/{branch}/{target}"
            label = title if has_title else target
        node = nodes.reference(rawtext, "", refuri=url, classes=[f"serpent-{kind}"])
        node += nodes.literal(label, label) if (kind == "repo" and not has_title) else nodes.Text(label)
        return [node], messages

    return role


def _check_static(app) -> None:
    if app.builder.format != "html":
        return
    missing = []
    for entry in app.config.html_static_path:
        base = Path(app.srcdir) / entry
        missing = [f for f in REQUIRED_STATIC if not (base / f).is_file()]
        if not missing:
            return
    raise ExtensionError(f"serpent_book: vendored page assets are missing ({', '.join(missing)}); run "
                         "`python book/_scripts/vendor_assets.py` before building (or build with "
                         "`bash book/_scripts/build.sh`, which does both)")


def _is_thebe(asset) -> bool:
    name = getattr(asset, "filename", None) or str(asset)
    body = (getattr(asset, "attributes", None) or {}).get("body") or ""
    return "thebe" in name or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    # in place: these lists are the builder's own, which later listeners (MathJax, the theme) still append to
    for key in ("script_files", "css_files"):
        if isinstance(context.get(key), list):
            context[key][:] = [a for a in context[key] if not _is_thebe(a)]


def _exclude_environments(app, config):
    from serpent.io import environment_folders

    extra = [f for f in environment_folders(app.srcdir) if f not in config.exclude_patterns]
    config.exclude_patterns = list(config.exclude_patterns) + extra


def setup(app):
    app.connect("config-inited", _exclude_environments, priority=100)  # before sphinx-external-toc (900)
    app.add_role("repo", _link_role("repo"))
    app.add_role("colab", _link_role("colab"))
    app.connect("builder-inited", _check_static)
    # early: html-page-context stops at the first listener that returns a template name
    app.connect("html-page-context", _drop_thebe, priority=100)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
