"""Vendor the scripts the built book loads, so that a page opened from disk needs no network.

Run before every build (``bash book/_scripts/build.sh`` does it). Writes, under ``book/_static/`` (git-ignored):

* ``vega-bundle.js``  vega + vega-lite + vega-embed as one script, made offline by ``vl-convert-python`` for the
  Vega-Lite version of the installed Altair, wrapped in ``(function(){ ... })();`` (unwrapped, the bundle's
  top-level names collide with a page global ``_``). It sets the globals ``vega``, ``vegaLite`` and ``vegaEmbed``.
* ``vega-debug.js``   ``var VEGA_DEBUG = {...}`` with the versions Altair's HTML template asks for. The template
  loads a library from the CDN only when ``VEGA_DEBUG[lib_version]`` differs from the version it wants, so with
  this file it uses the globals above instead.
* ``mathjax/``        MathJax 3 (the ``es5`` build of the npm package ``mathjax@3``); ``_config.yml`` points
  Sphinx's ``mathjax_path`` at ``mathjax/tex-mml-chtml.js``.

Where MathJax comes from: the npm registry's tarball, fetched once with ``npm pack mathjax@3.2.2`` into
``.cache/vendor/`` (git-ignored) and verified against its published sha512 integrity (pinned below). Later runs use the cached
tarball and need no network at all. Set ``SERPENT_MATHJAX_TGZ=/path/to/mathjax-3.2.2.tgz`` to use a tarball you
brought yourself (the same file npm would fetch). Needs ``npm`` only when the cache is empty.

Each output is rewritten only when its content changes, so repeated runs are cheap (about 2 s, most of it the
vega bundle) and leave timestamps alone.

    python book/_scripts/vendor_assets.py            # writes book/_static/...
    python book/_scripts/vendor_assets.py --check    # exit 1 if anything is missing or stale
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "book" / "_static"
CACHE = ROOT / ".cache" / "vendor"

MATHJAX_VERSION = "3.2.2"
# npm's published integrity of mathjax-3.2.2.tgz (`npm view mathjax@3.2.2 dist.integrity`): every tarball used,
# fetched, cached or brought by the user, is checked against it.
MATHJAX_INTEGRITY = ("sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==")

# What of the MathJax es5 tree the book needs: the combined TeX+MathML -> CommonHTML component, the pieces it
# loads lazily (TeX extensions, the menu, a11y, fonts, speech rule maps). The other combined components
# (tex-svg.js, ...) and the SVG output are left out.
_MATHJAX_SKIP_PREFIXES = ("output/svg", "tex-svg", "tex-chtml", "mml-svg", "tex-mml-svg", "mml-chtml", "node-main",
                          "adaptors/liteDOM", "latest.js")


class VendorError(RuntimeError):
    """Vendoring failed; the message says what to do."""


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def altair_versions() -> dict:
    """The vega / vega-lite / vega-embed versions the installed Altair's HTML template asks for."""
    import altair

    major = altair.SCHEMA_VERSION.lstrip("v").split(".")[0]
    display = importlib.import_module(f"altair.vegalite.v{major}.display")
    return {"vega_version": str(display.VEGA_VERSION), "vegalite_version": str(display.VEGALITE_VERSION),
            "vegaembed_version": str(display.VEGAEMBED_VERSION)}


def vega_files() -> dict[str, bytes]:
    """The contents of ``vega-bundle.js`` and ``vega-debug.js`` for the installed Altair (offline)."""
    try:
        import vl_convert
        from altair.utils._importers import vl_version_for_vl_convert
    except ImportError as e:  # pragma: no cover - requirements.txt installs both
        raise VendorError(f"{e}; install the book's requirements: pip install -r requirements.txt") from e
    versions = altair_versions()
    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    header = (f"/* vega {versions['vega_version']}, vega-lite {versions['vegalite_version']}, vega-embed "
              f"{versions['vegaembed_version']}: bundled offline by vl-convert-python {vl_convert.__version__} "
              f"(book/_scripts/vendor_assets.py). */\n")
    wrapped = header + "(function(){\n" + bundle + "\n})();\n"
    debug = ("/* Tells Altair's page template that vega, vega-lite and vega-embed are already loaded "
             "(vega-bundle.js). */\nvar VEGA_DEBUG = " + json.dumps(versions) + ";\n")
    return {"vega-bundle.js": wrapped.encode(), "vega-debug.js": debug.encode()}


def _integrity_ok(data: bytes, integrity: str) -> bool:
    algo, _, b64 = integrity.partition("-")
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == b64


def mathjax_tarball() -> bytes:
    """The bytes of ``mathjax-<version>.tgz``: from $SERPENT_MATHJAX_TGZ, the cache, or ``npm pack`` (then cached)."""
    own = os.environ.get("SERPENT_MATHJAX_TGZ")
    if own:
        p = Path(own)
        if not p.is_file():
            raise VendorError(f"SERPENT_MATHJAX_TGZ={own} is not a file; point it at mathjax-{MATHJAX_VERSION}.tgz "
                              "or unset it to fetch the package with npm")
        data = p.read_bytes()
        if not _integrity_ok(data, MATHJAX_INTEGRITY):
            raise VendorError(f"SERPENT_MATHJAX_TGZ={own} is not the published mathjax-{MATHJAX_VERSION}.tgz "
                              "(sha512 differs); use the file `npm pack mathjax@3.2.2` writes")
        return data
    tgz = CACHE / f"mathjax-{MATHJAX_VERSION}.tgz"
    if tgz.is_file() and _integrity_ok(tgz.read_bytes(), MATHJAX_INTEGRITY):
        return tgz.read_bytes()
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("MathJax is not cached in .cache/vendor/ and `npm` is not installed: install npm "
                          "(Debian: apt-get install -y npm) or set SERPENT_MATHJAX_TGZ to a copy of "
                          f"mathjax-{MATHJAX_VERSION}.tgz")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--json", "--pack-destination", tmp],
                              capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise VendorError(f"`npm pack mathjax@{MATHJAX_VERSION}` failed (is the npm registry reachable?):\n"
                              f"{proc.stderr[-2000:]}")
        info = json.loads(proc.stdout)[0]
        data = (Path(tmp) / info["filename"]).read_bytes()
    if not _integrity_ok(data, MATHJAX_INTEGRITY):
        raise VendorError(f"the downloaded mathjax-{MATHJAX_VERSION}.tgz does not match its published sha512; "
                          "delete .cache/vendor and retry")
    _write_if_changed(tgz, data)
    return data


def mathjax_files(tgz: bytes) -> dict[str, bytes]:
    """Relative path (under ``mathjax/``) -> bytes, for the parts of the es5 build the book loads."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            if m.name == "package/LICENSE":
                out["LICENSE"] = tar.extractfile(m).read()
                continue
            if not m.name.startswith("package/es5/"):
                continue
            rel = m.name[len("package/es5/"):]
            if rel.startswith(_MATHJAX_SKIP_PREFIXES) and rel != "tex-mml-chtml.js":
                continue
            out[rel] = tar.extractfile(m).read()
    if "tex-mml-chtml.js" not in out:
        raise VendorError("the MathJax tarball has no es5/tex-mml-chtml.js; delete .cache/vendor and retry")
    return out


def vendor(check: bool = False, quiet: bool = False) -> list[str]:
    """Write (or with ``check=True`` only compare) every vendored file; return the paths that changed/differ."""
    wanted: dict[Path, bytes] = {STATIC / k: v for k, v in vega_files().items()}
    for rel, data in mathjax_files(mathjax_tarball()).items():
        wanted[STATIC / "mathjax" / rel] = data
    changed = []
    for path, data in sorted(wanted.items()):
        if check:
            if not path.is_file() or path.read_bytes() != data:
                changed.append(str(path.relative_to(ROOT)))
        elif _write_if_changed(path, data):
            changed.append(str(path.relative_to(ROOT)))
    # remove files of an older MathJax layout that are no longer wanted
    mj = STATIC / "mathjax"
    if mj.is_dir():
        for p in sorted(mj.rglob("*")):
            if p.is_file() and p not in wanted:
                changed.append(str(p.relative_to(ROOT)))
                if not check:
                    p.unlink()
    if not quiet:
        size = sum(len(v) for v in wanted.values())
        verb = "differ" if check else "written"
        print(f"vendor_assets: {len(wanted)} files ({size / 1e6:.1f} MB) in {STATIC.relative_to(ROOT)}; "
              f"{len(changed)} {verb}", file=sys.stderr)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report missing or stale files (exit 1 if any)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        changed = vendor(check=args.check, quiet=args.quiet)
    except VendorError as e:
        print(f"vendor_assets: error: {e}", file=sys.stderr)
        return 2
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
