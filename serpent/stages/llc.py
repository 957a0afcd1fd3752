"""The ``llc`` stage: the local learning coefficient over a run's checkpoints (:mod:`serpent.llc` estimates it).

Every checkpoint is estimated with the same minibatches (so differences between checkpoints are not data noise), and
made to fit it: a diverging chain is retried with smaller steps, drifting draws get a longer burn-in, and what still
fails is kept with a note. Each checkpoint's result is kept in ``llc/steps/`` as soon as it is computed, stamped with
the settings and the checkpoint it came from (:class:`serpent.stages.stage.Stage`), so an interrupted stage resumes and
asking for other checkpoints estimates only the new ones (the sweep over the checkpoints, its retries and its divergence
record are :class:`serpent.stages.sweep.Sweep`'s, shared with the ``susceptibility`` stage). :func:`calibrate_run`
sweeps ``epsilon x n_beta`` at one checkpoint of the run and keeps the table; :func:`epsilon_check` says, in one line,
when a sampler's ``epsilon`` sits past the plateau that table measured (or, without one, when the localisation alone
says so), which the ``llc`` and ``susceptibility`` stages print before they sample.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import SamplerConfig
from ..errors import CheckpointError, ConfigError, DivergenceError, SerpentError
from ..io import atomic_write_json, read_json, write_parquet
from ..llc import INIT_LOSS_BATCHES, calibrate, calibration_advice, combine_chains, epsilon_note, epsilon_plateau, \
    estimate_llc, trace_drift
from ..outputs import LLC_CALIBRATION, LLC_STEP, LLC_TABLE, LLC_TRACES
from .distributed import SOLO, World, current_world
from .stage import Stage
from .sweep import Sweep

__all__ = ["llc_stage", "llc_over_checkpoints", "calibrate_run", "epsilon_check", "FLAT_TOLERANCE"]

STAGE = "llc"


#: The samplers a run's calibration can be centred on: their config section, the settings, and the table's file.
_SAMPLERS = {"llc": ("llc.sampler", lambda c: c.llc.sampler, "calibration"),
             "susceptibility": ("susceptibility.sampler", lambda c: c.susceptibility.sampler,
                                "calibration_susceptibility")}


def epsilon_check(run, sampler: str = "llc", echo: Callable[[str], None] | None = None) -> str | None:
    """One line when the ``epsilon`` of the run's ``sampler`` (``"llc"`` or ``"susceptibility"``) sits past the
    plateau of the LLC against ``epsilon`` (:func:`serpent.llc.epsilon_note`): measured by a calibration kept in
    ``RUN/llc/`` (:func:`calibrate_run`) at the same ``n_beta``, ``gamma`` and batch size, else the localisation's
    own bias. Nothing is sampled here. ``echo``: where to say it (default: standard error, as a warning)."""
    name, settings, _ = _SAMPLERS[sampler]
    cfg = settings(run.config)
    tables = []
    for f in LLC_CALIBRATION.files(run):
        try:
            table = pd.read_parquet(f)
            tables.append(table if "status" in table else epsilon_plateau(table))   # an older table: marked here
        except Exception:  # noqa: BLE001 - an unreadable table is no measurement; the cheap check still runs
            continue
    note = epsilon_note(cfg, pd.concat(tables, ignore_index=True) if tables else None, name)
    if note:
        (echo or (lambda line: print(f"warning: {line}", file=sys.stderr)))(note)
    return note


def check_fits(field: str, count: int, tokens, length: int, split: str) -> None:
    """Refuse ``count`` windows of ``length`` tokens (a minibatch, the probe) when the ``split`` stream holds fewer
    distinct ones: they would repeat, and a large count only spends memory and time (one line, before sampling)."""
    available = max(len(tokens) - length + 1, 0)
    if count > available:
        raise ConfigError(f"{field}: got {count}; the run's {split} split holds only {available:,} distinct windows of "
                          f"{length} tokens, so set it to at most {available:,} (or give the run more text)")


def _run_batches(run, cfg: SamplerConfig, field: str = "llc.sampler.batch_size") -> Callable[[int], torch.Tensor]:
    from ..tokens import batch_at
    tokens = run.tokens("train")
    bos = run.tokenizer().bos_id
    n_ctx = run.config.model.n_ctx
    check_fits(field, cfg.batch_size, tokens, n_ctx - 1, "training")
    return lambda i: batch_at(tokens, i, cfg.batch_size, n_ctx, cfg.seed, bos)


def _llc_at(run, step: int, cfg: SamplerConfig, batches, init_loss_batches: int, device, progress: bool,
            world: World = SOLO) -> tuple[dict, pd.DataFrame]:
    """The LLC at one checkpoint: its table row and its loss traces. With several ranks (``world``), each samples its
    share of the chains (chain c keeps its seed ``seed + c``) and every rank gets the combined result."""
    params = run.load_params(step, device=device)
    chains = world.part(range(cfg.chains))
    mine = SamplerConfig(**{**cfg.to_dict(), "chains": len(chains), "seed": cfg.seed + chains[0]}) if chains else None
    try:
        r = world.together(lambda: estimate_llc(run.config.model, params, batches, mine,
                                                init_loss_batches=init_loss_batches, record_traces=True,
                                                device=device, progress=progress and world.is_main)
                           if chains else None, combine_chains)
    except DivergenceError as e:
        raise DivergenceError(f"checkpoint step {step}: {e} (run `calibrate` to choose epsilon and n_beta; set "
                              "them with --set llc.sampler.epsilon=... --set llc.sampler.gamma=...)") from None
    row = {"step": int(step), "mean": r.mean, "std": r.std, "init_loss": r.init_loss, "epsilon": cfg.epsilon,
           "drift": trace_drift(r, cfg)}
    row.update({f"chain_{c}": float(v) for c, v in enumerate(r.per_chain)})
    row.update({"seconds": r.seconds, "ms_per_step": r.ms_per_step})
    C, S = r.traces.shape
    trace = pd.DataFrame({"step": int(step), "chain": np.repeat(np.arange(C), S),
                          "sgld_step": np.tile(np.arange(S), C), "loss": r.traces.reshape(-1).astype(np.float64)})
    return row, trace


def llc_over_checkpoints(run, steps: Sequence[int] | None = None, cfg: SamplerConfig | None = None, *,
                         init_loss_batches: int = INIT_LOSS_BATCHES, device=None, progress: bool = True
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LLC at each of ``steps`` (default: ``select_steps`` of the run's config). Returns ``(table, traces)``.

    ``table`` columns: ``step, mean, std, init_loss, chain_0 .. chain_{C-1}, seconds, ms_per_step``;
    ``traces`` columns: ``step, chain, sgld_step, loss`` (the minibatch loss at every SGLD step).
    """
    from tqdm.auto import tqdm

    cfg = cfg or run.config.llc.sampler
    steps = Stage(run, STAGE).steps(cfg.checkpoints, steps)
    batches = _run_batches(run, cfg)
    from ..device import default_device
    dev = default_device(device)
    rows, trace_rows = [], []
    for step in tqdm(steps, desc="LLC over checkpoints", disable=not progress):
        row, trace = _llc_at(run, step, cfg, batches, init_loss_batches, dev, progress)
        rows.append(row)
        trace_rows.append(trace)
    return pd.DataFrame(rows), pd.concat(trace_rows, ignore_index=True)


def _step_file(run, step: int):
    return LLC_STEP.file(run, step=step)


def _sweep(stage: Stage) -> Sweep:
    """The llc stage's checkpoint sweep: one JSON per checkpoint (its row and traces, or its divergence record)."""
    return Sweep(stage, result=LLC_STEP, record=LLC_STEP, head=read_json, what="llc")


def llc_stage(run, *, steps: Sequence[int] | None = None, charts: bool = True, device=None,
              progress: bool = True, gather: bool = True) -> dict:
    """Pipeline stage ``llc``: the LLC over the run's checkpoints, with charts.

    ``steps``: the checkpoints (default :func:`~serpent.stages.sweep.select_steps` of
    ``run.config.llc.sampler.checkpoints``). Writes
    into ``RUN/llc/``: ``llc.parquet`` (step, mean, std, init_loss, chain_*, epsilon, burnin, drift, note),
    ``traces.parquet`` (step, chain, sgld_step, loss), ``llc.{png,html}`` (LLC across training) and
    ``traces.{png,html}`` (loss traces; ``charts=False`` leaves both out), and one ``steps/step_*.json`` per
    checkpoint. Skipped when it already ran with the same settings and checkpoints. Returns a short summary.

    ``gather=False`` (``--partial``): compute and keep these checkpoints' results only, and write no table: one job of
    a sweep run as independent jobs; a last run without it gathers them, computing nothing again. Under ``torchrun``
    the ranks share the work (:mod:`serpent.stages.distributed`). The sweep itself (what is kept, retries, the
    divergence record, the ranks) is :class:`~serpent.stages.sweep.Sweep`'s.
    """
    world = current_world(device)
    cfg = run.config.llc.sampler
    eps_note = epsilon_check(run, "llc", echo=None if world.is_main else (lambda line: None))
    # which checkpoints are analysed does not change one checkpoint's estimate: the count is not a setting
    stage = Stage(run, STAGE, {"v": 3, "llc": {**cfg.to_dict(), "checkpoints": 0},
                               "model": run.config.model.to_dict()})
    steps = stage.steps(cfg.checkpoints, steps)
    key = stage.key(steps=steps, charts=charts)
    out = stage.dir
    if gather and (done := stage.current(key, [LLC_TABLE.file(run)])) is not None:
        return {**done, "skipped": True, **({"epsilon_note": eps_note} if eps_note else {})}

    batches = functools.cache(lambda: _run_batches(run, cfg))      # made when a checkpoint is to be computed
    dev = world.device(device)

    def compute(step, eps, ranks, first):
        return _llc_fitted(run, step, cfg, eps, batches(), dev, progress and first, ranks)

    def write(path, result, stamp):
        row, trace = result
        atomic_write_json(path, {**stamp, "row": row, "traces": trace.to_dict(orient="list")})

    def diverged_note(failures):
        first = failures[0][1].split(" (run")[0]
        tried = ", ".join(f"{eps:.2g}" for eps, _ in failures[1:])
        return (f"diverged at epsilon {cfg.epsilon:g} ({first}); retried with {tried}, which "
                f"diverged too. Sweep epsilon and n_beta with serpent.calibrate_run(serpent.Run.open('{run.path}')) "
                "(notebook 4), set llc.sampler.epsilon / llc.sampler.n_beta (smaller n_beta or larger gamma "
                "localise the chains more)")

    swept = _sweep(stage).run(steps, compute, write, diverged_note, epsilon=cfg.epsilon, world=world,
                              gather=gather, progress=progress, desc="LLC over checkpoints")
    if not swept.gathered:
        return swept.report
    good = swept.good
    table = pd.DataFrame([swept.heads[s]["row"] for s in good])
    chains = sorted((c for c in table.columns if c.startswith("chain_")), key=lambda c: int(c.split("_")[1]))
    table = table[["step", "mean", "std", "init_loss", *chains, "epsilon", "burnin", "drift", "note", "seconds",
                   "ms_per_step"]]
    traces = pd.concat([pd.DataFrame(swept.heads[s]["traces"]) for s in good], ignore_index=True)
    write_parquet(table, LLC_TABLE.file(run))
    write_parquet(traces, LLC_TRACES.file(run))
    if charts:
        from ..charts.llc import llc_curve_chart, loss_trace_chart, save_chart
        save_chart(llc_curve_chart(table), out / "llc")
        save_chart(loss_trace_chart(traces, table), out / "traces")
    last = table.iloc[-1]
    summary = {"checkpoints": len(table), "final_step": int(last["step"]), "final_llc": round(float(last["mean"]), 3),
               "final_llc_std": round(float(last["std"]), 3), "min_llc": round(float(table["mean"].min()), 3),
               "max_llc": round(float(table["mean"].max()), 3),
               "ms_per_sgld_step": round(float(table["ms_per_step"].mean()), 2),
               "computed": len(swept.todo), "reused": len(steps) - len(swept.todo), "ranks": world.size,
               "retried": table.loc[table["epsilon"] != cfg.epsilon, "step"].astype(int).tolist(),
               "lengthened": table.loc[table["burnin"] != cfg.burnin, "step"].astype(int).tolist(),
               "not_at_equilibrium": table.loc[table["note"].str.contains(_NOT_AT_EQUILIBRIUM), "step"]
                                      .astype(int).tolist(),
               "diverged": {str(s): note for s, note in swept.diverged.items()}}
    if eps_note:
        summary["epsilon_note"] = eps_note
    stage.done(key, summary=summary)
    summary["seconds"] = round(time.time() - stage.t0, 2)
    return summary


#: A trace whose draws still move by this share of the loss rise (:func:`trace_drift`) is not at equilibrium.
FLAT_TOLERANCE = 0.1
_NOT_AT_EQUILIBRIUM = "not at equilibrium"   # how a row's note flags a trace that still drifts (read by the summary)


def _llc_fitted(run, step: int, cfg: SamplerConfig, epsilon: float, batches, device, progress: bool,
                world: World = SOLO):
    """:func:`_llc_at` at step size ``epsilon`` (the sweep retries a diverging checkpoint with smaller ones,
    :data:`~serpent.stages.sweep.RETRY_EPSILON_FACTORS`), made to fit the checkpoint (the sampling guide's recipe at
    the configured ``n_beta`` and ``gamma``): if the draws still drift (the loss has not reached its plateau), chains
    three times as long at the same step size, the extra steps as burn-in. A trace that still drifts is kept, with a
    note saying so. Returns ``(row, traces)``; raises :class:`DivergenceError` when the chains diverge."""
    c = SamplerConfig(**{**cfg.to_dict(), "epsilon": epsilon})
    row, trace = _llc_at(run, step, c, batches, INIT_LOSS_BATCHES, device, progress, world=world)
    notes = [f"retried: epsilon {cfg.epsilon:g} diverged, {c.epsilon:.2g} did not"] if epsilon != cfg.epsilon else []
    if abs(row["drift"]) >= FLAT_TOLERANCE:
        moved = row["drift"]
        longer = SamplerConfig(**{**c.to_dict(), "burnin": c.burnin + 2 * (c.burnin + c.draws)})
        try:
            row, trace = _llc_at(run, step, longer, batches, INIT_LOSS_BATCHES, device, False, world=world)
            c = longer
            if abs(row["drift"]) < FLAT_TOLERANCE:
                notes.append(f"lengthened: the draws still moved (drift {moved:+.2f}); a burn-in of {c.burnin} "
                             "steps reached the plateau")
            else:
                notes.append(f"{_NOT_AT_EQUILIBRIUM}: drift {row['drift']:+.2f} after a burn-in of {c.burnin} steps; "
                             "raise llc.sampler.burnin or see serpent.calibrate_run")
        except DivergenceError:
            notes.append(f"{_NOT_AT_EQUILIBRIUM}: drift {moved:+.2f}, and a longer chain diverged; see "
                         "serpent.calibrate_run")
    row["burnin"] = c.burnin
    row["note"] = "; ".join(notes)
    return row, trace


def calibrate_run(run, step: int | None = None, epsilons: Sequence[float] | None = None,
                  n_betas: Sequence[float] | None = None, *, sampler: str = "llc", device=None,
                  progress: bool = True) -> pd.DataFrame:
    """:func:`serpent.llc.calibrate` at one checkpoint of a run (default: the last), around the settings of
    ``sampler``: ``"llc"`` (``run.config.llc.sampler``) or ``"susceptibility"``
    (``run.config.susceptibility.sampler``: the
    LLC at the posterior the susceptibilities sample, whose bias they share).

    Default grid: ``epsilon`` x {1/10, 1/3, 1, 3, 10} and ``n_beta`` x {1/3, 1, 3}. Writes
    ``llc/calibration.parquet`` (``llc/calibration_susceptibility.parquet``) and its chart ``.{png,html}``; says
    the advice (:func:`serpent.llc.calibration_advice`) when ``progress``; returns the table. The ``llc`` and
    ``susceptibility`` stages then say when their ``epsilon`` sits past the plateau it found (:func:`epsilon_check`).
    """
    from ..device import default_device
    if sampler not in _SAMPLERS:
        raise SerpentError(f"calibrate_run: sampler {sampler!r}; allowed: {sorted(_SAMPLERS)}")
    _, settings, filename = _SAMPLERS[sampler]
    cfg = settings(run.config)
    steps = run.checkpoint_steps()
    if not steps:
        raise CheckpointError(f"{run.path} has no checkpoints to calibrate on; train first "
                              f"(`python -m serpent run --out {run.path}`)")
    step = steps[-1] if step is None else step
    epsilons = list(epsilons) if epsilons else [cfg.epsilon * f for f in (0.1, 1 / 3, 1.0, 3.0, 10.0)]
    n_betas = list(n_betas) if n_betas else [cfg.n_beta * f for f in (1 / 3, 1.0, 3.0)]
    dev = default_device(device)
    params = run.load_params(step, device=dev)
    cal = calibrate(run.config.model, params, _run_batches(run, cfg, f"{_SAMPLERS[sampler][0]}.batch_size"), cfg,
                    epsilons, n_betas, device=dev,
                    progress=progress)
    cal.insert(0, "step", int(step))
    out = run.stage_dir("llc")
    write_parquet(cal, LLC_CALIBRATION.file(run, suffix=filename[len("calibration"):]))
    from ..charts.llc import calibration_chart, save_chart
    save_chart(calibration_chart(cal), out / filename)
    if progress:
        for line in calibration_advice(cal):
            print(line)
    return cal
