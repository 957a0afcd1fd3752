"""The checkpoint sweep of the sampling stages (``llc``, ``susceptibility``): one engine for both.

A sampling stage computes one result per checkpoint. :class:`Sweep` does the bookkeeping around that computation,
the same way for every such stage:

* **what is kept and current** (:meth:`Sweep.kept`): a checkpoint's result is reused when the stamp stored with it
  (the stage's settings and the checkpoint's identity, :meth:`~serpent.stages.stage.Stage.stamp`) matches. The stamp
  is read from the head of the result only where the format allows (a safetensors header; a JSON file is read
  whole), so finding what is left to compute loads no arrays;
* **the retries**: a checkpoint whose chains diverge is computed again with smaller step sizes
  (:data:`RETRY_EPSILON_FACTORS` of the configured ``epsilon``, largest first);
* **the divergence record**: a checkpoint that diverged at every step size is kept as one JSON record,
  ``{"settings": ..., "checkpoint": ..., "diverged": note}`` (the stamp and what to do), in the file the stage's
  outputs declare for it (:mod:`serpent.outputs`: the LLC's is its per-checkpoint JSON itself, the susceptibility's
  ``step_*.diverged.json`` beside its result); a resumed sweep does not sample it again. The older susceptibility
  marker (``{"key": ..., "checkpoint": ..., "note": ...}``) still reads as one;
* **the ranks** (:mod:`serpent.stages.distributed`): the checkpoints left to compute are shared among the processes
  of ``torchrun`` (or every rank works on each), each writes what it computed, and after a barrier rank 0 reads
  everything back and hands it to the stage's summary.

The stage brings what is its own: the per-checkpoint computation (``compute(step, epsilon, world, first)``, raising
:class:`~serpent.errors.DivergenceError` when the chains diverge), how a result is written, the note of a checkpoint
that diverged everywhere, and the tables and summary made of the gathered results.

:func:`select_steps` chooses which checkpoints a stage analyses.

>>> select_steps([0, 10, 20, 30, 40, 50], 3)
[0, 20, 50]
>>> [round(e, 6) for e in retry_epsilons(1e-3)]
[0.001, 0.000333, 0.0001, 3.3e-05]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DivergenceError, SerpentError
from ..io import atomic_write_json, read_json
from ..outputs import Output
from .distributed import SOLO, World

__all__ = ["Sweep", "Swept", "select_steps", "retry_epsilons", "RETRY_EPSILON_FACTORS"]

#: Step sizes a diverged checkpoint is retried with, as fractions of the configured epsilon (largest first).
RETRY_EPSILON_FACTORS = (1 / 3, 1 / 10, 1 / 30)


def select_steps(steps: Sequence[int], k: int) -> list[int]:
    """``k`` checkpoint steps spread evenly over ``steps`` (always the first and the last); ``k = 0``: all.

    >>> select_steps(range(0, 100, 10), 0) == list(range(0, 100, 10))
    True
    >>> select_steps([5, 7, 9], 2), select_steps([5, 7, 9], 10), select_steps([5, 7, 9], 1)
    ([5, 9], [5, 7, 9], [9])
    """
    steps = sorted(int(s) for s in steps)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"checkpoints: got {k!r}; must be 0 (all) or a positive number of checkpoints")
    if k == 0 or k >= len(steps):
        return steps
    if k == 1:
        return [steps[-1]]
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, k)).astype(int))
    return [steps[i] for i in idx]


def retry_epsilons(epsilon: float) -> list[float]:
    """The step sizes a checkpoint is sampled with, in order, until one does not diverge."""
    return [epsilon] + [epsilon * f for f in RETRY_EPSILON_FACTORS]


def _stamp(head: Mapping[str, Any], settings: str) -> dict:
    """A kept file's stamp in :class:`~serpent.stages.stage.Stage`'s terms, its settings read from ``settings``."""
    return {"settings": head.get(settings), **({"checkpoint": head["checkpoint"]} if "checkpoint" in head else {})}


@dataclass
class Swept:
    """What a sweep left: on rank 0 after gathering (``gathered``), every analysed step's kept ``heads`` (the
    checkpoints in ``good``) and the ``diverged`` notes, the steps not kept when it started (``todo``) and those of
    them it computed (``computed``); otherwise ``report``, what this rank did (the stage's return value for a
    ``--partial`` job or a rank > 0)."""

    steps: list[int]
    todo: list[int]
    computed: list[int]
    gathered: bool
    heads: dict[int, dict] = field(default_factory=dict)
    diverged: dict[int, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    @property
    def good(self) -> list[int]:
        """The analysed steps with a result (in order)."""
        return [s for s in self.steps if s in self.heads]


class Sweep:
    """The checkpoint sweep of one sampling stage.

    ``stage``: its :class:`~serpent.stages.stage.Stage` (settings, stamps); ``result``: the per-checkpoint output
    (:mod:`serpent.outputs`, a ``step`` field); ``record``: where a divergence record goes (the same output as
    ``result`` when the result's format can hold it); ``head``: reads a kept result's head (a dict holding its stamp
    and what the stage's summary needs; raises :class:`SerpentError` when the file is damaged); ``settings``: the
    name under which a result keeps the settings of its stamp; ``what``: how messages name the stage's results.
    """

    def __init__(self, stage, *, result: Output, record: Output, head: Callable[[Path], dict],
                 settings: str = "settings", what: str = ""):
        self.stage = stage
        self.result, self.record, self.head = result, record, head
        self.settings_field = settings
        self.what = what or stage.name

    def _files(self, step: int) -> tuple[Path, Path]:
        run = self.stage.run
        return self.result.file(run, step=step), self.record.file(run, step=step)

    def kept(self, step: int) -> dict | str | None:
        """What is kept for ``step`` and current: its result's head, the note of a checkpoint that diverged at every
        step size, or None (to compute; also when the file is unreadable)."""
        result, record = self._files(step)
        for f in dict.fromkeys((result, record)):
            if not f.is_file():
                continue
            try:
                head = self.head(f) if f == result else read_json(f)
            except SerpentError:                                   # damaged: computed again
                continue
            if f == record and ("diverged" in head or "note" in head):        # a divergence record (or older marker)
                if self.stage.is_current(step, _stamp(head, "settings" if "settings" in head else "key")):
                    return str(head.get("diverged", head.get("note")))
            elif self.stage.is_current(step, _stamp(head, self.settings_field)):
                return head
        return None

    def write_diverged(self, step: int, note: str) -> None:
        """Keep the record of a checkpoint that diverged at every step size."""
        atomic_write_json(self._files(step)[1], {**self.stage.stamp(step), "diverged": note})

    def run(self, steps: Sequence[int], compute: Callable[[int, float, World, bool], Any],
            write: Callable[[Path, Any, dict], None], diverged_note: Callable[[list[tuple[float, str]]], str], *,
            epsilon: float, world: World = SOLO, gather: bool = True, progress: bool = True,
            desc: str = "") -> Swept:
        """Compute what is not kept of ``steps``, keep it, and (rank 0, ``gather``) read everything back.

        ``compute(step, epsilon, world, first)``: one checkpoint's result at one step size (``world``: the ranks that
        share this checkpoint, or :data:`~serpent.stages.distributed.SOLO`; ``first``: the configured step size),
        raising :class:`DivergenceError` when it diverges; retried with :func:`retry_epsilons`. ``write(path,
        result, stamp)``: keep a result in the ``result`` output's file. ``diverged_note(failures)``: the note kept
        when every step size diverged, from ``[(epsilon, error message), ...]``.
        """
        from tqdm.auto import tqdm

        steps = list(steps)
        heads = {s: self.kept(s) for s in steps}
        todo = world.agreed([s for s in steps if heads[s] is None])      # one list for every rank: rank 0's
        mine, within = world.share(todo)
        for step in tqdm(mine, desc=desc or self.what, disable=not progress or not world.is_main or len(mine) < 2):
            result, failures = None, []
            for i, eps in enumerate(retry_epsilons(epsilon)):
                try:
                    result = compute(step, eps, world if within else SOLO, i == 0)
                    break
                except DivergenceError as e:
                    failures.append((eps, str(e)))
            if within and not world.is_main:                   # rank 0 writes what the ranks computed together
                continue
            path, record = self._files(step)
            if result is None:
                note = diverged_note(failures)
                self.write_diverged(step, note)
                if progress:
                    tqdm.write(f"{self.what} at step {step}: {note}; going on without it")
                continue
            if record != path:
                record.unlink(missing_ok=True)
            write(path, result, self.stage.stamp(step))
        world.barrier()
        if not gather or not world.is_main:
            return Swept(steps, todo, mine, False, report={"computed": [] if within and not world.is_main else mine,
                                                     "rank": world.rank, "ranks": world.size, "gathered": False})
        heads.update({s: self.kept(s) for s in todo})              # what the ranks computed, read back
        if missing := [s for s in steps if heads[s] is None]:
            raise SerpentError(f"{self.what}: no result kept for step(s) {missing}; run the same command again")
        diverged = {s: h for s, h in heads.items() if isinstance(h, str)}
        if len(diverged) == len(steps):
            raise DivergenceError(f"{self.what}: SGLD diverged at every analysed checkpoint "
                                  f"({', '.join(map(str, steps))}); {diverged[steps[-1]]}")
        good = {s: h for s, h in heads.items() if not isinstance(h, str)}
        return Swept(steps, todo, [s for s in todo if s in good], True, heads=good, diverged=diverged)
