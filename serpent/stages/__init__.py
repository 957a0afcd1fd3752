"""The pipeline: corpus -> tokens -> checkpoints -> induction -> LLC -> susceptibilities -> serpent.

Each stage is a function ``(run, *, device, progress) -> summary`` in its own module here; it reads the run
directory, writes its outputs there, and records the settings it ran with (:class:`~serpent.stages.stage.Stage`), so
running the pipeline again skips what is already current and continues what was interrupted. The science modules
(:mod:`serpent.llc`, :mod:`serpent.susceptibility`, ...) take tensors and return results; the stages feed them a
run's checkpoints and keep what they return. ``run_pipeline`` is what ``python -m serpent run`` calls; notebooks call
the same stage functions. A stage called through ``STAGES`` (the commands, ``run_pipeline``) holds its lock on the
run directory while it runs (:meth:`~serpent.rundir.Run.writing`): a second command writing the same stage of the
same folder at once is refused with one line.

>>> list(STAGES)
['data', 'train', 'induction', 'llc', 'susceptibility', 'serpent']
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable

from ..errors import ConfigError
from ..rundir import Run
from .data import corpus_notes, data_stage, reading_note, training_tokens
from .induction import induction_stage, scores_over_checkpoints
from .llc import calibrate_run, llc_over_checkpoints, llc_stage
from .serpent import load_anatomy, serpent_stage
from .stage import Stage
from .susceptibility import load_susceptibilities, susceptibility_stage
from .train import train_stage

__all__ = ["STAGES", "run_pipeline", "Stage", "data_stage", "train_stage", "induction_stage", "llc_stage",
           "susceptibility_stage", "serpent_stage", "scores_over_checkpoints", "llc_over_checkpoints",
           "calibrate_run", "load_susceptibilities", "load_anatomy", "corpus_notes", "reading_note",
           "training_tokens"]

def _locked(name: str, stage: Callable) -> Callable:
    """``stage`` holding the run directory's lock for ``name`` while it runs: alone for a whole stage, shared for a
    ``--partial`` job (``gather=False``). Under ``torchrun`` the ranks of one job share the work, and only rank 0
    takes the lock (a second job's rank 0 is refused, and ``torchrun`` stops its other ranks)."""
    @functools.wraps(stage)
    def run_locked(run: Run, *args, **kwargs):
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return stage(run, *args, **kwargs)
        with run.writing(name, shared=kwargs.get("gather", True) is False):
            return stage(run, *args, **kwargs)
    return run_locked


#: Every stage, in pipeline order (each holding its lock on the run directory while it runs).
STAGES: dict[str, Callable] = {name: _locked(name, fn) for name, fn in {
    "data": data_stage,
    "train": train_stage,
    "induction": induction_stage,
    "llc": llc_stage,
    "susceptibility": susceptibility_stage,
    "serpent": serpent_stage,
}.items()}


def run_pipeline(run: Run, stages: list[str] | None = None, *, device=None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Run ``stages`` (default: all of them) in order; returns each stage's summary."""
    stages = stages or list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; allowed: {list(STAGES)}")
    out = {}
    for name in STAGES:
        if name not in stages:
            continue
        t0 = time.time()
        echo(f"[{name}] ...")
        out[name] = STAGES[name](run, device=device, progress=progress)
        echo(f"[{name}] done in {time.time() - t0:.1f} s")
        if name == "data":
            for line in corpus_notes(out[name]):
                echo(line)
            echo(reading_note(run.config, out[name]["train_tokens"]))
    return out
