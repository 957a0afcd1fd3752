"""The local learning coefficient (LLC): estimator, LLC over training checkpoints, and ε × nβ calibration.

Estimator (Lau et al., arXiv 2308.12108), per chain c::

    llc_c = n_beta * ( mean over draws of L_B(w_draw) - L(w*) )

where ``L_B`` is the minibatch loss at the draw (evaluated before the update of that step, as devinterp does) and
``L(w*)`` is the loss at the checkpoint averaged over the first ``init_loss_batches`` sampling minibatches (devinterp
v1's multi-batch fix for a noisy single-batch baseline). We report the mean over chains, the standard deviation
across chains (``ddof=1``; devinterp reports ``ddof=0``), the per-chain values, the initial loss and, on request,
the loss traces.

Conventions, and how they differ from devinterp 2.0.1's ``compute_llc``:

* ``convention="draws"`` (default) averages the draws only, so burn-in is discarded;
* ``convention="devinterp"`` averages every SGLD step *including burn-in* (what ``compute_llc`` does). With
  ``burnin=0`` and ``steps_between_draws=1`` the two coincide.
* devinterp averages its init loss over ``num_init_loss_batches=32`` batches by default; pass the same number as
  ``init_loss_batches`` to match it exactly.

All chains (and the restriction, if any) run as one batched computation on :mod:`serpent.sgld`.

:func:`llc_stage` estimates the LLC at ``run.config.llc.checkpoints`` checkpoints (see :func:`select_steps`) with
the same minibatches at every checkpoint (so differences between checkpoints are not data noise) and writes
``llc/llc.parquet``, ``llc/traces.parquet`` and the charts. :func:`calibrate` sweeps ``epsilon × n_beta`` and reports
where chains are stable and the estimate flat.

>>> import torch
>>> from serpent.config import SamplerConfig
>>> cfg = SamplerConfig(epsilon=0.002, gamma=0.0, n_beta=10.0, chains=2, draws=300, burnin=100, batch_size=1)
>>> quad = lambda p, batch: 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)      # d = 8, so the LLC is 4
>>> res = estimate_llc(quad, {"w": torch.zeros(8)}, lambda i: None, cfg, progress=False)
>>> 2.0 < res.mean < 6.0
True
>>> select_steps([0, 10, 20, 30, 40, 50], 3)
[0, 20, 50]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .config import ModelConfig, SamplerConfig, config_hash
from .errors import ConfigError, DivergenceError
from .io import write_parquet
from .sgld import (Restriction, SGLDResult, draw_drift, make_restriction, module_loss_fn, run_sgld,
                   transformer_loss_fn)

__all__ = ["LLCResult", "estimate_llc", "llc_from_sgld", "select_steps", "llc_over_checkpoints", "llc_stage",
           "calibrate", "calibrate_run", "crossing_llc_target", "trace_drift"]

INIT_LOSS_BATCHES = 8  # minibatches averaged for the loss at the checkpoint (devinterp's init_loss)


@dataclass
class LLCResult:
    """LLC estimate: ``mean ± std`` over chains, per-chain values and the initial loss.

    ``traces`` is ``(chains, steps)`` minibatch losses (burn-in included) when requested, else None.
    """

    mean: float
    std: float
    per_chain: np.ndarray
    init_loss: float
    traces: Optional[np.ndarray] = None
    n_beta: float = float("nan")
    convention: str = "draws"
    seconds: float = 0.0
    steps: int = 0
    final_distance: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def ms_per_step(self) -> float:
        """Wall-clock milliseconds per SGLD step (all chains together)."""
        return 1000.0 * self.seconds / max(self.steps, 1)


def _resolve_loss(model_or_loss_fn, params, loss):
    """(loss_fn, params) from a ModelConfig, a HookedTransformer, another nn.Module (+ loss) or a loss function."""
    if isinstance(model_or_loss_fn, ModelConfig):
        if params is None:
            raise ConfigError("params: required with a ModelConfig; pass e.g. run.load_params(step)")
        return transformer_loss_fn(model_or_loss_fn), params
    if isinstance(model_or_loss_fn, torch.nn.Module):
        module = model_or_loss_fn
        if params is None:
            params = {k: v.detach() for k, v in module.named_parameters()}
        if loss is None:
            from .model import fast_model_config
            try:
                from transformer_lens import HookedTransformer
            except ImportError:  # pragma: no cover
                HookedTransformer = ()
            # the same guard as the susceptibility and induction code: the fast path only where it is exact
            if isinstance(module, HookedTransformer) and (cfg := fast_model_config(module)) is not None:
                return transformer_loss_fn(cfg), params
            raise ConfigError("loss: required for a generic nn.Module; pass loss(output, batch) -> per-sample "
                              "losses, or use a HookedTransformer of the serpent architecture")
        return module_loss_fn(module, loss), params
    if callable(model_or_loss_fn):
        if params is None:
            raise ConfigError("params: required with a loss function; pass the starting point w* by name")
        return model_or_loss_fn, params
    raise ConfigError(f"model_or_loss_fn: got {type(model_or_loss_fn).__name__}; pass a ModelConfig, an nn.Module "
                      "or a function loss_fn(stacked_params, batch) -> per-sample losses (R, B, ...)")


def llc_from_sgld(res: SGLDResult, convention: str = "draws", restriction_index: int = 0) -> LLCResult:
    """The LLC estimate from an :class:`~serpent.sgld.SGLDResult` (one restriction of it)."""
    if convention not in ("draws", "devinterp"):
        raise ConfigError(f"convention: got {convention!r}; allowed: 'draws' (mean over draws, burn-in discarded) "
                          "or 'devinterp' (mean over all steps including burn-in, as devinterp 2.0.1)")
    mean_loss = res.mean_loss if convention == "draws" else res.mean_loss_all
    per_chain = (res.cfg.n_beta * (res.by_restriction(mean_loss.double())[restriction_index] - res.init_loss)).numpy()
    traces = res.by_restriction(res.traces)[restriction_index].numpy() if res.traces is not None else None
    dist = res.by_restriction(res.final_distance)[restriction_index].numpy() if res.final_distance is not None else None
    return LLCResult(mean=float(per_chain.mean()), std=float(per_chain.std(ddof=1)) if len(per_chain) > 1 else 0.0,
                     per_chain=per_chain, init_loss=res.init_loss, traces=traces, n_beta=res.cfg.n_beta,
                     convention=convention, seconds=res.seconds, steps=res.steps, final_distance=dist)


def estimate_llc(model_or_loss_fn, params: dict[str, torch.Tensor] | None, batches, cfg: SamplerConfig, *,
                 loss: Callable | None = None, restriction: str | Restriction | None = None,
                 init_loss_batches: int = INIT_LOSS_BATCHES, record_traces: bool = False, convention: str = "draws",
                 device=None, progress: bool = True, **sgld_kwargs) -> LLCResult:
    """Estimate the LLC at ``params`` with ``cfg.chains`` batched SGLD chains.

    ``model_or_loss_fn`` is a :class:`ModelConfig` (our transformer, fast path; ``params`` by TransformerLens name),
    a ``HookedTransformer`` (fast path) or any ``nn.Module`` with ``loss(output, batch)`` (generic path), or a
    function ``loss_fn(stacked_params, batch) -> (R, B, ...)``. ``batches(i)`` is the i-th minibatch (a list is
    cycled). ``restriction`` (e.g. ``"1:6"``) estimates a weight-restricted LLC. Returns an :class:`LLCResult`.
    """
    loss_fn, params = _resolve_loss(model_or_loss_fn, params, loss)
    if isinstance(restriction, str):
        restriction = make_restriction(restriction, params)
    res = run_sgld(loss_fn, params, batches, cfg, [restriction] if restriction is not None else None,
                   init_loss_batches=init_loss_batches, record_traces=record_traces, device=device,
                   progress=progress, **sgld_kwargs)
    return llc_from_sgld(res, convention)


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


def crossing_llc_target(a: int, b: int, n_beta: float, gamma: float = 1.0) -> float:
    """What the estimator converges to on ``K(w) = w1^(2a) w2^(2b)`` at finite ``n_beta``: ``n_beta E[K]``.

    The expectation is under the localised tempered posterior ``exp(-n_beta K - gamma/2 |w|^2)`` that SGLD samples,
    computed by nested quadrature (scipy). Only as ``n_beta -> oo`` does it reach the learning coefficient
    ``lambda = 1/(2 max(a, b))``; when ``a == b`` the multiplicity is ``m = 2`` and the target approaches it slowly,
    about ``lambda - (m - 1)/log(n_beta)`` (the derivative of the free energy's ``(m - 1) log log`` term). An
    estimate should be compared with this number, not with ``lambda``.

    >>> round(crossing_llc_target(1, 0, 100.0), 4)       # K = w1^2: Gaussian, n_beta / (2 n_beta + gamma)
    0.4975
    >>> round(crossing_llc_target(1, 1, 100.0), 2), round(crossing_llc_target(1, 1, 1e8), 2)   # lambda = 1/2, m = 2
    (0.35, 0.45)
    """
    from scipy.integrate import quad

    if a < 1 or b < 0 or int(a) != a or int(b) != b:
        raise ConfigError(f"crossing_llc_target: a = {a!r}, b = {b!r}; need whole numbers a >= 1, b >= 0")
    if not (n_beta > 0 and gamma > 0):
        raise ConfigError(f"crossing_llc_target: n_beta = {n_beta}, gamma = {gamma}; both must be > 0 (without "
                          "localisation the crossing's posterior is not normalisable)")
    t, wide = float(n_beta), 12.0 / math.sqrt(gamma)

    def inner(c: float, power: int) -> float:             # integral over w2 >= 0, w1 fixed (c = w1^(2a))
        scale = 1.0 / math.sqrt(gamma)
        if c > 0 and b > 0:
            scale = min(scale, (t * c) ** (-1.0 / (2 * b)))
        f = lambda w: (w ** (2 * b)) ** power * math.exp(-t * c * w ** (2 * b) - 0.5 * gamma * w * w)
        return quad(f, 0.0, 12.0 * scale, limit=200, epsabs=0.0, epsrel=1e-10)[0]

    edge = t ** (-1.0 / (2 * a))                          # where n_beta w1^(2a) ~ 1: the w1-marginal bends there
    breaks = [edge * 4.0 ** k for k in range(-4, 40) if edge * 4.0 ** k < wide]

    def outer(power: int) -> float:
        f = lambda x: (x ** (2 * a)) ** power * math.exp(-0.5 * gamma * x * x) * inner(x ** (2 * a), power)
        return quad(f, 0.0, wide, points=breaks, limit=400, epsrel=1e-9)[0]

    return t * outer(1) / outer(0)


# ----------------------------------------------------------------------------------------------------------------
# over a run's checkpoints


def _run_batches(run, cfg: SamplerConfig) -> Callable[[int], torch.Tensor]:
    from .tokens import batch_at
    tokens = run.tokens("train")
    bos = run.tokenizer().bos_id
    n_ctx = run.config.model.n_ctx
    return lambda i: batch_at(tokens, i, cfg.batch_size, n_ctx, cfg.seed, bos)


def _llc_at(run, step: int, cfg: SamplerConfig, batches, init_loss_batches: int, device, progress: bool
            ) -> tuple[dict, pd.DataFrame]:
    """The LLC at one checkpoint: its table row and its loss traces."""
    params = run.load_params(step, device=device)
    try:
        r = estimate_llc(run.config.model, params, batches, cfg, init_loss_batches=init_loss_batches,
                         record_traces=True, device=device, progress=progress)
    except DivergenceError as e:
        raise DivergenceError(f"checkpoint step {step}: {e} (run `calibrate` to choose epsilon and n_beta; set "
                              "them with --set llc.epsilon=... --set llc.gamma=...)") from None
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

    cfg = cfg or run.config.llc
    if steps is None:
        steps = select_steps(run.checkpoint_steps(), cfg.checkpoints)
    if not steps:
        raise ConfigError(f"{run.path} has no checkpoints to analyse; train first "
                          f"(`python -m serpent run --out {run.path}`)")
    batches = _run_batches(run, cfg)
    from .device import default_device
    dev = default_device(device)
    rows, trace_rows = [], []
    for step in tqdm(steps, desc="LLC over checkpoints", disable=not progress):
        row, trace = _llc_at(run, step, cfg, batches, init_loss_batches, dev, progress)
        rows.append(row)
        trace_rows.append(trace)
    return pd.DataFrame(rows), pd.concat(trace_rows, ignore_index=True)


def _step_file(out, step: int):
    return out / "steps" / f"step_{step:07d}.json"


def llc_stage(run, *, steps: Sequence[int] | None = None, charts: bool = True, device=None,
              progress: bool = True) -> dict:
    """Pipeline stage ``llc``: the LLC over the run's checkpoints, with charts.

    ``steps``: the checkpoints (default :func:`select_steps` of ``run.config.llc.checkpoints``). Writes into
    ``run.stage_dir("llc")``: ``llc.parquet`` (step, mean, std, init_loss, chain_*), ``traces.parquet`` (step, chain,
    sgld_step, loss), ``llc.{png,html}`` (LLC across training) and ``traces.{png,html}`` (loss traces; ``charts=False``
    leaves both out). Each checkpoint's result is also kept in ``llc/steps/`` as soon as it is computed, so an
    interrupted stage continues where it stopped and a checkpoint already estimated with the same settings is not
    estimated again. Skipped when it already ran with the same settings and checkpoints. Returns a short summary.
    """
    from tqdm.auto import tqdm

    from .device import default_device
    from .errors import CheckpointError, SerpentError
    from .io import atomic_write_json, read_json

    cfg = run.config.llc
    available = run.checkpoint_steps()
    if steps is None:
        steps = select_steps(available, cfg.checkpoints)
    else:
        steps = sorted({int(s) for s in steps})
        if missing := [s for s in steps if s not in available]:
            raise CheckpointError(f"no checkpoint at step(s) {missing}; available: {available}")
    if not steps:
        raise ConfigError(f"{run.path} has no checkpoints to analyse; train first "
                          f"(`python -m serpent run --out {run.path}`)")
    settings = config_hash({"v": 2, "llc": cfg.to_dict(), "model": run.config.model.to_dict()})
    key = config_hash({"settings": settings, "steps": steps, "charts": charts})
    out = run.stage_dir("llc")
    if (done := run.current_summary("llc", key, [out / "llc.parquet"])) is not None:
        return {**done, "skipped": True}
    t0 = time.time()
    def identity(step):  # a rewritten checkpoint (a new training run in the same folder) is estimated again
        st = run.checkpoint_path(step).stat()
        return [st.st_size, st.st_mtime_ns]

    results, todo = {}, []
    for step in steps:
        f = _step_file(out, step)
        try:
            kept = read_json(f) if f.is_file() else None
        except SerpentError:                                # unreadable: estimate that checkpoint again
            kept = None
        if isinstance(kept, dict) and kept.get("settings") == settings and kept.get("checkpoint") == identity(step):
            results[step] = kept["diverged"] if "diverged" in kept else (kept["row"], pd.DataFrame(kept["traces"]))
        else:
            todo.append(step)
    batches = _run_batches(run, cfg) if todo else None
    dev = default_device(device)
    for step in tqdm(todo, desc="LLC over checkpoints", disable=not progress):
        row, trace, note = _llc_with_retry(run, step, cfg, batches, dev, progress)
        record = {"settings": settings, "checkpoint": identity(step)}
        if note is None:
            record.update(row=row, traces=trace.to_dict(orient="list"))
        else:
            record.update(diverged=note)
            if progress:
                tqdm.write(f"LLC at step {step}: {note}; going on without it")
        atomic_write_json(_step_file(out, step), record)
        results[step] = (row, trace) if note is None else note
    diverged = {s: results[s] for s in steps if isinstance(results[s], str)}
    good = [s for s in steps if s not in diverged]
    if not good:
        raise DivergenceError(f"SGLD diverged at every analysed checkpoint ({', '.join(map(str, steps))}); "
                              f"{diverged[steps[-1]]}")
    table = pd.DataFrame([results[s][0] for s in good])
    chains = sorted((c for c in table.columns if c.startswith("chain_")), key=lambda c: int(c.split("_")[1]))
    for column, default in (("note", ""), ("epsilon", cfg.epsilon), ("burnin", cfg.burnin), ("drift", math.nan)):
        table[column] = table[column].fillna(default) if column in table else default   # rows kept from before
    table = table[["step", "mean", "std", "init_loss", *chains, "epsilon", "burnin", "drift", "note", "seconds",
                   "ms_per_step"]]
    traces = pd.concat([results[s][1] for s in good], ignore_index=True)
    write_parquet(table, out / "llc.parquet")
    write_parquet(traces, out / "traces.parquet")
    if charts:
        from .charts.llc import llc_curve_chart, loss_trace_chart, save_chart
        save_chart(llc_curve_chart(table), out / "llc")
        save_chart(loss_trace_chart(traces, table), out / "traces")
    seconds = time.time() - t0
    last = table.iloc[-1]
    summary = {"checkpoints": len(table), "final_step": int(last["step"]), "final_llc": round(float(last["mean"]), 3),
               "final_llc_std": round(float(last["std"]), 3), "min_llc": round(float(table["mean"].min()), 3),
               "max_llc": round(float(table["mean"].max()), 3),
               "ms_per_sgld_step": round(float(table["ms_per_step"].mean()), 2),
               "computed": len(todo), "reused": len(steps) - len(todo),
               "retried": table.loc[table["epsilon"] != cfg.epsilon, "step"].astype(int).tolist(),
               "lengthened": table.loc[table["burnin"] != cfg.burnin, "step"].astype(int).tolist(),
               "not_at_equilibrium": table.loc[table["note"].str.contains(_NOT_AT_EQUILIBRIUM), "step"]
                                      .astype(int).tolist(),
               "diverged": {str(s): note for s, note in diverged.items()}}
    run.mark_stage("llc", key, seconds, summary)
    summary["seconds"] = round(seconds, 2)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# calibration


def trace_drift(r: LLCResult, cfg: SamplerConfig) -> float:
    """How far the draws' loss still moves: (mean of the second half - mean of the first) / (rise above L(w*)).

    Near 0 when the chains sit on a plateau; the calibration's and the retry's test of a healthy trace
    (:func:`serpent.sgld.draw_drift` on the LLC's traces).
    """
    return draw_drift(r.traces, r.init_loss, cfg)


#: Step sizes the llc stage retries a diverged checkpoint with, as fractions of the configured epsilon (largest first).
RETRY_EPSILON_FACTORS = (1 / 3, 1 / 10, 1 / 30)
#: A trace whose draws still move by this share of the loss rise (:func:`trace_drift`) is not at equilibrium.
FLAT_TOLERANCE = 0.1
_NOT_AT_EQUILIBRIUM = "not at equilibrium"   # how a row's note flags a trace that still drifts (read by the summary)


def _llc_with_retry(run, step: int, cfg: SamplerConfig, batches, device, progress: bool):
    """:func:`_llc_at`, made to fit the checkpoint (the sampling guide's recipe at the configured ``n_beta`` and
    ``gamma``): if the chains diverge, the largest retry step size that does not; if the draws still drift (the
    loss has not reached its plateau), chains three times as long at the same step size, the extra steps as burn-in.
    A trace that still drifts is kept, with a note saying so. Returns ``(row, traces, None)``, or
    ``(None, None, note)`` when every step size diverged."""
    tried, failure = [], ""
    for i, eps in enumerate([cfg.epsilon] + [cfg.epsilon * f for f in RETRY_EPSILON_FACTORS]):
        c = SamplerConfig(**{**cfg.to_dict(), "epsilon": eps})
        try:
            row, trace = _llc_at(run, step, c, batches, INIT_LOSS_BATCHES, device, progress and i == 0)
            break
        except DivergenceError as e:
            failure = failure or str(e).split(" (run")[0]
            tried.append(f"{eps:.2g}")
    else:
        note = (f"diverged at epsilon {cfg.epsilon:g} ({failure}); retried with {', '.join(tried[1:])}, which "
                f"diverged too. Sweep epsilon and n_beta with serpent.llc.calibrate_run(serpent.Run.open('{run.path}')) "
                "(notebook 4), set llc.epsilon / llc.n_beta (smaller n_beta or larger gamma localise the chains more)")
        return None, None, note
    notes = [f"retried: epsilon {cfg.epsilon:g} diverged, {c.epsilon:.2g} did not"] if tried else []
    if abs(row["drift"]) >= FLAT_TOLERANCE:
        moved = row["drift"]
        longer = SamplerConfig(**{**c.to_dict(), "burnin": c.burnin + 2 * (c.burnin + c.draws)})
        try:
            row, trace = _llc_at(run, step, longer, batches, INIT_LOSS_BATCHES, device, False)
            c = longer
            if abs(row["drift"]) < FLAT_TOLERANCE:
                notes.append(f"lengthened: the draws still moved (drift {moved:+.2f}); a burn-in of {c.burnin} "
                             "steps reached the plateau")
            else:
                notes.append(f"{_NOT_AT_EQUILIBRIUM}: drift {row['drift']:+.2f} after a burn-in of {c.burnin} steps; "
                             "raise llc.burnin or see serpent.llc.calibrate_run")
        except DivergenceError:
            notes.append(f"{_NOT_AT_EQUILIBRIUM}: drift {moved:+.2f}, and a longer chain diverged; see "
                         "serpent.llc.calibrate_run")
    row["burnin"] = c.burnin
    row["note"] = "; ".join(notes)
    return row, trace, None


def calibrate(model_or_loss_fn, params: dict[str, torch.Tensor] | None, batches, cfg: SamplerConfig,
              epsilons: Sequence[float], n_betas: Sequence[float], *, loss: Callable | None = None,
              init_loss_batches: int = INIT_LOSS_BATCHES, flat_tolerance: float = 0.1, device=None,
              progress: bool = True) -> pd.DataFrame:
    """Sweep ``epsilon × n_beta`` (other settings from ``cfg``) and say where sampling is healthy.

    One row per pair: ``epsilon, n_beta, llc_mean, llc_std, diverged, drift, stable, error``. ``drift`` compares the
    mean loss over the second half of the draws with the first half, relative to the loss rise above ``L(w*)``:
    near 0 when the chains have reached a plateau. ``stable`` = no divergence, a non-negative estimate and
    ``|drift| < flat_tolerance``. Choose the largest stable ``epsilon`` at which the estimate no longer moves
    with ``epsilon`` (see :func:`serpent.charts.llc.calibration_chart`).
    """
    from tqdm.auto import tqdm

    loss_fn, params = _resolve_loss(model_or_loss_fn, params, loss)
    rows = []
    grid = [(float(e), float(nb)) for nb in n_betas for e in epsilons]
    if not grid:
        raise ConfigError("calibrate: epsilons and n_betas must be non-empty")
    for eps, nb in tqdm(grid, desc="calibration", disable=not progress):
        c = SamplerConfig(**{**cfg.to_dict(), "epsilon": eps, "n_beta": nb})
        row = {"epsilon": eps, "n_beta": nb, "llc_mean": math.nan, "llc_std": math.nan, "diverged": False,
               "drift": math.nan, "stable": False, "error": ""}
        try:
            r = estimate_llc(loss_fn, params, batches, c, init_loss_batches=init_loss_batches, record_traces=True,
                             device=device, progress=False)
        except DivergenceError as e:
            row.update(diverged=True, error=str(e))
            rows.append(row)
            continue
        drift = trace_drift(r, c)
        row.update(llc_mean=r.mean, llc_std=r.std, drift=drift,
                   stable=bool(r.mean >= 0 and abs(drift) < flat_tolerance and np.isfinite(r.mean)))
        rows.append(row)
    return pd.DataFrame(rows)


def calibrate_run(run, step: int | None = None, epsilons: Sequence[float] | None = None,
                  n_betas: Sequence[float] | None = None, *, device=None, progress: bool = True) -> pd.DataFrame:
    """:func:`calibrate` at one checkpoint of a run (default: the last) around ``run.config.llc``.

    Default grid: ``epsilon`` x {1/10, 1/3, 1, 3, 10} and ``n_beta`` x {1/3, 1, 3}. Writes
    ``llc/calibration.parquet`` and ``llc/calibration.{png,html}``; returns the table.
    """
    from .device import default_device
    cfg = run.config.llc
    steps = run.checkpoint_steps()
    if not steps:
        raise ConfigError(f"{run.path} has no checkpoints to calibrate on; train first")
    step = steps[-1] if step is None else step
    epsilons = list(epsilons) if epsilons else [cfg.epsilon * f for f in (0.1, 1 / 3, 1.0, 3.0, 10.0)]
    n_betas = list(n_betas) if n_betas else [cfg.n_beta * f for f in (1 / 3, 1.0, 3.0)]
    dev = default_device(device)
    params = run.load_params(step, device=dev)
    cal = calibrate(run.config.model, params, _run_batches(run, cfg), cfg, epsilons, n_betas, device=dev,
                    progress=progress)
    cal.insert(0, "step", int(step))
    out = run.stage_dir("llc")
    write_parquet(cal, out / "calibration.parquet")
    from .charts.llc import calibration_chart, save_chart
    save_chart(calibration_chart(cal), out / "calibration")
    return cal
