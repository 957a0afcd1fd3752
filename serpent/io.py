"""The ground floor: atomic file writes, JSON and parquet, where the repository's root is, whether this is Colab.

Every module that writes files goes through here, so an interrupted run never leaves a half-written file; nothing
here imports another serpent module except ``errors``.

>>> import tempfile; p = Path(tempfile.mkdtemp()) / "a" / "x.json"
>>> atomic_write_json(p, {"k": np.int64(3)}); read_json(p)
{'k': 3}
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import SerpentError

__all__ = ["atomic_write_bytes", "atomic_write_json", "read_json", "write_parquet", "find_root", "in_colab",
           "ENVIRONMENT_NAMES", "is_environment", "environment_folders"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with an error that names the file if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SerpentError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SerpentError(f"{path} is corrupt ({e}); delete it and run the stage again") from None


def write_parquet(frame, path: str | Path, **kwargs) -> None:
    """Atomically write a pandas frame as parquet (``kwargs`` go to ``DataFrame.to_parquet``, e.g. compression)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def find_root(start: Optional[str | os.PathLike] = None) -> Path:
    """The folder that holds (or will hold) ``runs/``: the first folder at or above ``start`` (default: the current
    directory) containing ``runs/`` or ``pyproject.toml``; ``/content`` in Colab; else ``start`` itself.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "pyproject.toml").write_text(""); (d / "a" / "b").mkdir(parents=True)
    >>> find_root(d / "a" / "b") == d
    True
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for p in (here, *here.parents):
        if (p / "runs").is_dir() or (p / "pyproject.toml").is_file():
            return p
    if in_colab():
        return Path("/content")
    return here


# Folders people keep a project's environment or tool caches in. Anything that walks the repository (the book
# build, the notebook builder, the tests) must never read them as the project's own files.
ENVIRONMENT_NAMES = (".venv", "venv", "env", ".env", ".conda", "conda-env", ".pixi", ".tox", ".nox",
                     "node_modules", "__pypackages__", ".mypy_cache", ".pytest_cache", ".ruff_cache")


def is_environment(folder: str | os.PathLike) -> bool:
    """True if ``folder`` is a Python environment or a tool's folder, whatever its name: a virtual environment
    (``pyvenv.cfg``), a conda prefix (``conda-meta/``), an installed tree (``lib/python3.X/site-packages`` or
    ``Lib/site-packages``), or one of :data:`ENVIRONMENT_NAMES`.

    >>> import tempfile; d = Path(tempfile.mkdtemp()) / "my env"; (d / "conda-meta").mkdir(parents=True)
    >>> is_environment(d), is_environment(d.parent)
    (True, False)
    """
    p = Path(folder)
    if not p.is_dir():
        return False
    if p.name in ENVIRONMENT_NAMES or (p / "pyvenv.cfg").is_file() or (p / "conda-meta").is_dir():
        return True
    return (p / "Lib" / "site-packages").is_dir() or any(
        (q / "site-packages").is_dir() for q in (p / "lib").glob("python3*") if q.is_dir())


def environment_folders(root: str | os.PathLike, depth: int = 2) -> list[str]:
    """The environment folders under ``root`` (see :func:`is_environment`), as paths relative to it, looking
    ``depth`` levels down; an environment's own subfolders are not listed again.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "book").mkdir(); (d / ".venv").mkdir()
    >>> _ = (d / "tools" / "py").mkdir(parents=True); _ = (d / "tools" / "py" / "pyvenv.cfg").write_text("")
    >>> environment_folders(d)
    ['.venv', 'tools/py']
    """
    root = Path(root)
    found: list[str] = []

    def walk(d: Path, level: int) -> None:
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir() and not c.is_symlink())
        except OSError:
            return
        for c in children:
            if is_environment(c):
                found.append(c.relative_to(root).as_posix())
            elif level < depth and c.name not in (".git", "runs", "_build"):
                walk(c, level + 1)

    walk(root, 1)
    return found
