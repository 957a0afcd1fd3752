"""A stage's bookkeeping on a run directory, shared by every stage of :mod:`serpent.stages`.

What it keeps track of: which checkpoints the stage analyses (:meth:`Stage.steps`, each checked from its header
before any is analysed, so a truncated or foreign file is refused before the stage spends its compute), the key of its settings
(:meth:`Stage.key`; a stage whose key is recorded in ``stages.json`` is skipped), per-checkpoint results kept with the
settings and the checkpoint they were computed from (:meth:`Stage.stamp`, :meth:`Stage.is_current`: a result is
reused only when both match, so an interrupted stage resumes and a checkpoint rewritten by another training run in
the same folder is analysed again), and the stage's record once it is done (:meth:`Stage.done`). Each stage stores
its results in its own format (JSON, safetensors) with the stamp inside.

>>> import tempfile
>>> from serpent.config import get_preset
>>> from serpent.rundir import Run
>>> run = Run.create(tempfile.mkdtemp() + "/r", get_preset("tiny"))
>>> stage = Stage(run, "llc", {"epsilon": 1e-3})
>>> try:
...     stage.steps(0)
... except CheckpointError as e:
...     print(str(e).split("; ")[1].split(" (")[0])
train first
>>> stage.current(stage.key(n=1)) is None
True
>>> stage.done(stage.key(n=1), 1.0, {"checkpoints": 1}); stage.current(stage.key(n=1))
{'checkpoints': 1}
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import config_hash
from ..errors import CheckpointError
from .sweep import select_steps

__all__ = ["Stage", "checkpoint_identity"]

_IDENTITIES: dict[tuple, str] = {}


def checkpoint_identity(path: str | Path) -> str:
    """A short hash of a checkpoint file's bytes: equal for a copy of the file, different for a retrained one.

    Hashed once per (path, size, modification time) in a process.
    """
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _IDENTITIES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _IDENTITIES[memo] = h.hexdigest()[:16]
    return _IDENTITIES[memo]


class Stage:
    """One stage of one run: ``name`` (its folder and its entry in ``stages.json``) and ``settings`` (everything a
    single checkpoint's result depends on; which checkpoints are analysed is not part of it)."""

    def __init__(self, run, name: str, settings: Mapping[str, Any] | None = None):
        self.run = run
        self.name = name
        self.settings = config_hash(dict(settings or {}))
        self.t0 = time.time()

    @property
    def dir(self) -> Path:
        """The stage's folder, ``RUN/<name>/`` (created on first use)."""
        return self.run.stage_dir(self.name)

    def steps(self, count: int, steps: Sequence[int] | None = None) -> list[int]:
        """The checkpoints to analyse: ``steps`` (checked against the run's) or ``count`` spread evenly (0: all).

        Every one of them is checked from its header (:meth:`~serpent.rundir.Run.check_checkpoints`) before this
        returns: a damaged or foreign checkpoint is refused before the stage samples any.
        """
        available = self.run.checkpoint_steps()
        if steps is None:
            chosen = select_steps(available, count)
        else:
            chosen = sorted({int(s) for s in steps})
            if missing := [s for s in chosen if s not in available]:
                raise CheckpointError(f"no checkpoint at step(s) {missing}; available: {available}")
        if not chosen:
            raise CheckpointError(f"{self.run.path} has no checkpoints to analyse; train first "
                                  f"(`python -m serpent run --out {self.run.path}`)")
        self.run.check_checkpoints(chosen)
        return chosen

    def key(self, **extra) -> str:
        """The whole stage's key: the settings and whatever else decides its outputs; with ``steps=[...]``, also
        those checkpoints' identities (a checkpoint written again makes the stage run again)."""
        if "steps" in extra:
            extra["checkpoints"] = [checkpoint_identity(self.run.checkpoint_path(s)) for s in extra["steps"]]
        return config_hash({"settings": self.settings, **extra})

    def current(self, key: str, outputs: Sequence[str | Path] = ()) -> dict | None:
        """The recorded summary when the stage already ran with ``key`` and every path in ``outputs`` exists."""
        return self.run.current_summary(self.name, key, outputs)

    def stamp(self, step: int) -> dict:
        """What to store beside the result of checkpoint ``step``: the settings and the checkpoint's identity."""
        return {"settings": self.settings, "checkpoint": checkpoint_identity(self.run.checkpoint_path(step))}

    def is_current(self, step: int, stamp: Mapping[str, Any] | None) -> bool:
        """True when a result stored with ``stamp`` was computed with these settings from this checkpoint.

        A stamp without a checkpoint identity (a result written before identities were recorded, such as the
        committed artifacts' susceptibilities) is trusted on its settings alone.
        """
        if not isinstance(stamp, Mapping) or stamp.get("settings") != self.settings:
            return False
        return "checkpoint" not in stamp or stamp["checkpoint"] == checkpoint_identity(self.run.checkpoint_path(step))

    def done(self, key: str, seconds: float | None = None, summary: dict | None = None) -> None:
        """Record the stage as done with ``key`` (``seconds`` default: since this object was made)."""
        self.run.mark_stage(self.name, key, time.time() - self.t0 if seconds is None else seconds, summary)
