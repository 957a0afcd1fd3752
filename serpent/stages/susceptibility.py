"""The ``susceptibility`` stage: χ per token and head at a run's checkpoints (:mod:`serpent.susceptibility`
estimates it), and :func:`load_susceptibilities`, which reads them back.

Probe windows are fixed windows of held-out text (seeded), SGLD minibatches come from the training split, and each
checkpoint's result is written as soon as it is computed, stamped with the settings and the checkpoint it came from
(:class:`serpent.stages.stage.Stage`), so an interrupted stage resumes. A checkpoint whose chains diverge is retried
with smaller steps; one that diverges at every step size is left out with a note saying what to do (the sweep over
the checkpoints, shared with the ``llc`` stage: :class:`serpent.stages.sweep.Sweep`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

from ..config import SamplerConfig, config_hash
from ..errors import ConfigError
from ..outputs import SUSCEPTIBILITY, SUSCEPTIBILITY_DIVERGED, load_susceptibilities
from ..susceptibility import SusceptibilityResult
from .distributed import current_world, susceptibilities_across_ranks
from .llc import check_fits, epsilon_check
from .stage import Stage
from .sweep import Sweep

__all__ = ["susceptibility_stage", "load_susceptibilities", "step_path"]

STAGE = "susceptibility"


def _settings(cfg) -> dict:
    """What a checkpoint's result depends on; which checkpoints are analysed is not part of it (written as 0, the
    value it had before ``susceptibility.sampler.checkpoints`` existed, so older results stay valid)."""
    sus = cfg.susceptibility.to_dict()
    sus["sampler"]["checkpoints"] = 0
    return {"model": cfg.model.to_dict(), "data": cfg.data.to_dict(), "susceptibility": sus, "v": 1}


def _stage_key(cfg) -> str:
    """The settings key stored in every result (``settings["key"]``)."""
    return config_hash(_settings(cfg))


def step_path(run, step: int) -> Path:
    """Where the result of checkpoint ``step`` lives: ``RUN/susceptibility/step_{step:07d}.safetensors``."""
    run.stage_dir(STAGE)
    return SUSCEPTIBILITY.file(run, step=step)


def _sweep(stage: Stage) -> Sweep:
    """The susceptibility stage's checkpoint sweep: one safetensors file per checkpoint (its stamp read from the
    header: ``settings["key"]`` and ``settings["checkpoint"]``), a divergence record beside it."""
    return Sweep(stage, result=SUSCEPTIBILITY, record=SUSCEPTIBILITY_DIVERGED, head=SusceptibilityResult.read_settings,
                 settings="key", what="susceptibilities")


def susceptibility_stage(run, *, steps: Sequence[int] | None = None, device=None, progress: bool = True,
                         gather: bool = True) -> dict:
    """Susceptibilities at ``run.config.susceptibility.sampler.checkpoints`` checkpoints (or the given ``steps``).

    Probe windows: ``probe_sequences`` fixed windows of ``probe_length`` tokens (default ``n_ctx``) from the held-out
    split (seed ``probe_seed``), with their document names; SGLD minibatches from the training split; results in
    ``RUN/susceptibility/step_{step:07d}.safetensors``. A step whose file was written with the same settings from
    the same checkpoint is skipped, so an interrupted stage continues where it stopped.

    ``gather=False`` (``--partial``): compute and keep these checkpoints' results only, and record no stage: one job
    of a sweep run as independent jobs; a last run without it gathers them. Under ``torchrun`` the ranks share the
    work (:mod:`serpent.stages.distributed`).
    """
    from ..tokens import batch_at, document_of, fixed_windows

    cfg = run.config
    sc, mc = cfg.susceptibility, cfg.model
    world = current_world(device)
    eps_note = epsilon_check(run, "susceptibility", echo=None if world.is_main else (lambda line: None))
    stage = Stage(run, STAGE, _settings(cfg))
    key = stage.settings
    chosen = stage.steps(sc.sampler.checkpoints, steps)
    stage_key = stage.key(steps=chosen)
    if gather and (done := stage.current(stage_key, [step_path(run, s) for s in chosen])) is not None:
        return {**done, **({"epsilon_note": eps_note} if eps_note else {})}
    length = sc.probe_length or mc.n_ctx
    if length > mc.n_ctx:
        raise ConfigError(f"susceptibility.probe_length: got {length}; must be at most model.n_ctx = {mc.n_ctx}")
    tok = run.tokenizer()
    test, train = run.tokens("test"), run.tokens("train")
    check_fits("susceptibility.probe_sequences", sc.probe_sequences, test, length - 1, "held-out")
    check_fits("susceptibility.task_sequences", sc.task_sequences, train, length - 1, "training")
    check_fits("susceptibility.sampler.batch_size", sc.sampler.batch_size, train, mc.n_ctx - 1, "training")
    probe, offsets = fixed_windows(test, sc.probe_sequences, length, sc.probe_seed, tok.bos_id)
    starts, names = run.documents("test")
    docs = [names[i] if 0 <= i < len(names) else "?" for i in document_of(starts, offsets)]
    task = None
    if sc.task_sequences:
        task, _ = fixed_windows(train, sc.task_sequences, length, sc.probe_seed + 1, tok.bos_id)
    s_cfg = sc.sampler
    batches = lambda i: batch_at(train, i, s_cfg.batch_size, mc.n_ctx, s_cfg.seed, tok.bos_id)

    dev = world.device(device)
    run.stage_dir(STAGE)

    model_at = functools.lru_cache(1)(lambda step: run.load_model(step, device="cpu"))   # once for its retries

    def compute(step, eps, ranks, first):
        checkpoint = stage.stamp(step)["checkpoint"]
        model = model_at(step)
        c = SamplerConfig(**{**s_cfg.to_dict(), "epsilon": eps})
        return susceptibilities_across_ranks(
            model, probe, batches, c, world=ranks, task_tokens=task, components=sc.components, doc_names=docs,
            step=step, baseline=sc.baseline, device=dev, progress=progress and first and world.is_main,
            settings={"key": key, "checkpoint": checkpoint, "probe_seed": sc.probe_seed,
                      "probe_offsets": offsets.tolist(), "epsilon": c.epsilon})

    def diverged_note(failures):
        tried = "; ".join(f"{eps:.2g}: {error.split(';')[0]}" for eps, error in failures)
        return (f"SGLD diverged at every step size tried ({tried}); choose susceptibility."
                f"sampler.epsilon with serpent.calibrate_run(serpent.Run.open('{run.path}')) (notebook 4), "
                "or a larger gamma")

    swept = _sweep(stage).run(chosen, compute, lambda path, res, stamp: res.save(path), diverged_note,
                              epsilon=s_cfg.epsilon, world=world, gather=gather, progress=progress,
                              desc="susceptibilities")
    if not swept.gathered:
        return swept.report
    done, kept = swept.good, swept.heads
    drift = {str(s): _largest_drift(kept[s]) for s in done}
    retried = [s for s in swept.computed if kept[s].get("epsilon", s_cfg.epsilon) != s_cfg.epsilon]
    n_comp = mc.n_layers * mc.n_heads + (mc.n_layers if sc.components == "heads+mlp" else 0)
    seconds = time.time() - stage.t0
    summary = {"steps": done, "computed": swept.computed, "components": n_comp,
               "tokens_per_step": int(sc.probe_sequences * (length - 1)), "seconds": round(seconds, 1),
               "retried": retried, "diverged": {str(s): note for s, note in swept.diverged.items()},
               "largest_drift": drift, "ranks": world.size}
    if eps_note:
        summary["epsilon_note"] = eps_note
    stage.done(stage_key, seconds, summary)
    return summary


def _largest_drift(settings: dict) -> float | None:
    """The largest |drift| of the draws' loss over a result's restrictions (None for results saved before it)."""
    drift = settings.get("drift")
    return round(max(abs(v) for v in drift.values()), 3) if drift else None
