"""Run directories: everything a run produced, in one folder, written atomically.

Layout::

    RUN/config.json              the RunConfig that produced the run
    RUN/stages.json              per stage: the config key it ran with, seconds, a short summary
    RUN/corpus.json              corpus fingerprint (files hash, bytes, Python and package versions)
    RUN/tokenizer/tokenizer.json the tokenizer
    RUN/data/{train,test}.npy    token streams (uint16), RUN/data/{train,test}_docs.json document offsets and names
    RUN/checkpoints/step_0001000.safetensors   model parameters (TransformerLens names)
    RUN/checkpoints/resume.safetensors         optimizer state of the last checkpoint (for resuming)
    RUN/metrics.jsonl            training metrics, one JSON object a line
    RUN/<stage>/                 each analysis stage's outputs (induction, llc, susceptibility, serpent)

Every file's path, format and reader is declared once, in :mod:`serpent.outputs`; :class:`Run` reads the top-level
files and the data and checkpoints through those declarations.

Every file is written to a temporary name and moved into place (``os.replace``), so an interrupted run never leaves
a half-written file behind. A stage records the hash of the settings it ran with; running it again with the same
settings is skipped. A stage run by a command holds a lock on ``RUN/.<stage>.lock`` while it writes
(:meth:`Run.writing`), so a second command that would write the same stage of the same folder at the same time is
refused with one line instead of mixing its files with the first one's; the lock goes with the process that held it,
even when it is killed.

>>> import tempfile
>>> from serpent.config import get_preset
>>> run = Run.create(tempfile.mkdtemp() + "/r", get_preset("tiny"))
>>> run.stage_is_current("train", "abc")
False
>>> run.mark_stage("train", "abc", 1.0, {"steps": 3}); run.stage_is_current("train", "abc")
True
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .config import RunConfig
from .errors import CheckpointError, ConfigError, SerpentError
from .io import atomic_write_json, read_json
from .outputs import CHECKPOINT, CONFIG, DOCUMENTS, METRICS, STAGES_RECORD, TOKENIZER, TOKENS

__all__ = ["Run"]


class Run:
    """A run directory. Create one with :meth:`create`, open an existing one with :meth:`open`."""

    def __init__(self, path: str | Path, config: RunConfig):
        self.path = Path(path)
        self.config = config
        self._cache: dict[str, Any] = {}

    # -- creation -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: RunConfig) -> "Run":
        """Create (or reopen) a run directory for ``config``.

        Reopening with a different model, data or training config is refused, so checkpoints of one recipe never
        mix with another's (raising the number of training steps is allowed: training resumes and continues).
        """
        path = Path(path)
        cfg_file = CONFIG.file(path)
        if cfg_file.exists():
            old = RunConfig.from_dict(read_json(cfg_file))
            for section in ("model", "data"):
                if getattr(old, section) != getattr(config, section):
                    raise ConfigError(
                        f"{path} already holds a run with a different {section} config; choose another --out "
                        f"directory or delete {path}")
            old_train = old.train.to_dict(); new_train = config.train.to_dict()
            old_train.pop("steps"); new_train.pop("steps")
            for k in ("log_checkpoints", "linear_checkpoints", "eval_every", "eval_batches", "compile", "precision"):
                old_train.pop(k); new_train.pop(k)
            if old_train != new_train:
                raise ConfigError(f"{path} already holds a run trained with different optimizer settings; choose "
                                  f"another --out directory or delete {path}")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_file, config.to_dict())
        return cls(path, config)

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """Open an existing run directory."""
        path = Path(path)
        if not CONFIG.exists(path):
            raise SerpentError(f"{path} is not a run directory (no config.json); create one with "
                               f"`python -m serpent run --preset tiny --out {path}`")
        return cls(path, RunConfig.from_dict(CONFIG.read(path)))

    # -- stages ---------------------------------------------------------------------------------------------------
    def stage_dir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _stages(self) -> dict:
        return STAGES_RECORD.read(self, missing={})

    def stage_is_current(self, name: str, key: str) -> bool:
        """True when stage ``name`` already ran to completion with settings key ``key``."""
        return self._stages().get(name, {}).get("key") == key

    def current_summary(self, name: str, key: str, outputs=()) -> dict | None:
        """The summary of stage ``name`` if it already ran with ``key`` and every path in ``outputs`` exists, else
        None (the stage must run)."""
        if self.stage_is_current(name, key) and all(Path(p).exists() for p in outputs):
            return dict(self.stage_summary(name).get("summary", {}))
        return None

    def mark_stage(self, name: str, key: str, seconds: float, summary: dict | None = None) -> None:
        """Record stage ``name`` as done with settings key ``key``. Processes that share the run directory (jobs of
        one sweep) take turns: the read-modify-write of ``stages.json`` holds a lock on ``RUN/.stages.lock``."""
        import fcntl
        with open(self.path / ".stages.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stages = self._stages()
            stages[name] = {"key": key, "seconds": round(float(seconds), 3), "summary": summary or {}}
            atomic_write_json(STAGES_RECORD.file(self), stages)

    def stage_summary(self, name: str) -> dict:
        return self._stages().get(name, {})

    @contextlib.contextmanager
    def writing(self, stage: str, shared: bool = False) -> Iterator[None]:
        """Hold the lock of stage ``stage`` of this run while the block runs; refuse, with one line, when another
        process holds it. ``shared=True`` lets processes that each write their own files (``--partial`` jobs of one
        sweep) hold it together; they still exclude a process that holds it alone (a whole stage run).

        The lock is an ``flock`` on ``RUN/.<stage>.lock``: the operating system releases it when its process ends,
        killed or not, so a stopped run never leaves the folder locked.
        """
        import fcntl
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / f".{stage}.lock", "a+")
        try:
            try:
                fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise SerpentError(
                    f"{self.path} is being written by {holder}, which runs its {stage} stage; two commands must not "
                    f"write one run at once: wait for it to finish (or stop it: the stage resumes where it stopped), "
                    f"or use another --out") from None
            if not shared:                               # say who holds it, for the one that is refused
                f.seek(0)
                f.truncate()
                prog = os.path.basename(sys.argv[0]) if sys.argv else "python"
                prog = "serpent" if prog in ("__main__.py", "serpent") else prog
                command = " ".join([prog, *sys.argv[1:3]])
                f.write(f"process {os.getpid()} on {socket.gethostname()} (started {time.strftime('%H:%M:%S')}: "
                        f"{command})")
                f.flush()
            try:
                yield
            finally:
                if not shared:
                    f.seek(0)
                    f.truncate()
        finally:
            f.close()                                    # closing the file releases the lock

    # -- data -----------------------------------------------------------------------------------------------------
    def forget_cached(self) -> None:
        """Forget the tokenizer and token streams read so far (after the data stage rewrote them)."""
        self._cache.clear()

    def tokenizer(self):
        """The run's tokenizer."""
        if "tokenizer" not in self._cache:
            from .tokenizer import Tokenizer
            d = TOKENIZER.file(self)
            if not d.exists():
                raise SerpentError(f"{self.path} has no tokenizer yet; run the data stage first "
                                   f"(`python -m serpent run --out {self.path}`)")
            self._cache["tokenizer"] = Tokenizer.load(d)
        return self._cache["tokenizer"]

    def tokens(self, split: str) -> np.ndarray:
        """The whole ``'train'`` or ``'test'`` token stream (uint16; documents separated by the BOS token)."""
        if split not in ("train", "test"):
            raise ConfigError(f"split: got {split!r}; allowed: 'train', 'test'")
        key = f"tokens_{split}"
        if key not in self._cache:
            f = TOKENS.file(self, split=split)
            if not f.exists():
                raise SerpentError(f"{f} is missing; run the data stage first (`python -m serpent run --out {self.path}`)")
            self._cache[key] = np.load(f, mmap_mode="r")
        return self._cache[key]

    def documents(self, split: str) -> tuple[np.ndarray, list[str]]:
        """``(starts, names)``: offset of each document in :meth:`tokens` and its name."""
        d = DOCUMENTS.read(self, split=split)
        return np.asarray(d["starts"], dtype=np.int64), list(d["names"])

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return CHECKPOINT.file(self, step=step)

    def checkpoint_steps(self) -> list[int]:
        """Sorted training steps that have a checkpoint."""
        steps = []
        for f in CHECKPOINT.files(self):
            try:
                steps.append(int(f.stem.split("_")[1]))
            except ValueError:
                continue
        return sorted(steps)

    def check_checkpoints(self, steps: Sequence[int]) -> None:
        """Check every checkpoint of ``steps`` from its header (:func:`~serpent.checkpoints.check_checkpoint`: format,
        this run's model config, names, shapes, dtypes, length) before a stage spends compute on any of them; a
        truncated, foreign or renamed file is refused with one line that names it and says what to do."""
        from .checkpoints import check_checkpoint
        bad = []
        for step in steps:
            try:
                check_checkpoint(self.checkpoint_path(step), self.config.model)
            except CheckpointError as e:
                bad.append((step, str(e)))
        if bad:
            step, why = bad[0]
            more = f" (and {len(bad) - 1} more: steps {[s for s, _ in bad[1:]]})" if len(bad) > 1 else ""
            why = why.split("; ")[0]
            raise CheckpointError(
                f"checkpoint {why}{more}; nothing was computed: move the file out of {self.path / 'checkpoints'} "
                f"(the stage then analyses the others), or leave step {step} out with --steps")

    def load_params(self, step: int | None = None, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Parameters at ``step`` (the last checkpoint if None), by TransformerLens name."""
        from .checkpoints import load_checkpoint
        steps = self.checkpoint_steps()
        if not steps:
            raise CheckpointError(f"{self.path} has no checkpoints; train first (`python -m serpent train {self.path}`)")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise CheckpointError(f"{self.path} has no checkpoint at step {step}; available: {steps}")
        params, _ = load_checkpoint(self.checkpoint_path(step), self.config.model, device=device)
        return params

    def load_model(self, step: int | None = None, device: str | torch.device = "cpu"):
        """The hooked model (:func:`serpent.model.build_model`) with the weights of ``step`` (the last checkpoint if
        None)."""
        from .model import build_model
        model = build_model(self.config.model, device=device)
        params = self.load_params(step, device=device)
        model.load_state_dict(params, strict=False)
        model.eval()
        return model

    def metrics(self) -> list[dict]:
        """The training metrics log (one dict per logged step)."""
        return METRICS.read(self, missing=[])

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, preset={self.config.preset!r}, checkpoints={len(self.checkpoint_steps())})"
