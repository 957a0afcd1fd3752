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

__all__ = ["atomic_write_bytes", "atomic_write_json", "read_json", "write_parquet", "find_root", "in_colab"]


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
