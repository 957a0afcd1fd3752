"""The ``train`` stage: train the model with checkpoints (:mod:`serpent.train`), resuming when interrupted."""

from __future__ import annotations

from ..rundir import Run
from ..train import train, train_key
from .stage import Stage

__all__ = ["train_stage"]


def train_stage(run: Run, *, device=None, progress: bool = True) -> dict:
    """Train the model (resuming when interrupted); skipped when the run already reached ``train.steps``."""
    stage = Stage(run, "train")
    key = train_key(run)
    if (done := stage.current(key)) is not None and run.config.train.steps in run.checkpoint_steps():
        return done
    summary = train(run, device=device, progress=progress)
    if summary["steps"] >= run.config.train.steps:
        stage.done(key, summary=summary)
    return summary
