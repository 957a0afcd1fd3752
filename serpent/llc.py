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

:func:`calibrate` sweeps ``epsilon × n_beta`` and reports where the chains are stable, their traces flat and the
estimate no longer moving with ``epsilon`` (the plateau: past it SGLD's finite step biases the estimate even when the
trace is flat); :func:`epsilon_note` says in one line when a sampler's ``epsilon`` sits past it. The LLC over a run's
checkpoints, with its per-checkpoint cache and retries, is the ``llc`` stage (:mod:`serpent.stages.llc`; its sweep
over the checkpoints, and which ones it analyses, :mod:`serpent.stages.sweep`).

>>> import torch
>>> from serpent.config import SamplerConfig
>>> cfg = SamplerConfig(epsilon=0.002, gamma=0.0, n_beta=10.0, chains=2, draws=300, burnin=100, batch_size=1)
>>> quad = lambda p, batch: 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)      # d = 8, so the LLC is 4
>>> res = estimate_llc(quad, {"w": torch.zeros(8)}, lambda i: None, cfg, progress=False)
>>> 2.0 < res.mean < 6.0
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .config import ModelConfig, SamplerConfig
from .errors import ConfigError, DivergenceError
from .sgld import (Restriction, SGLDResult, draw_drift, make_restriction, module_loss_fn, pulled_back_restriction,
                   run_sgld, transformer_loss_fn)

__all__ = ["LLCResult", "estimate_llc", "llc_from_sgld", "combine_chains", "calibrate",
           "epsilon_plateau", "calibration_advice", "epsilon_note", "localisation_bias", "crossing_llc_target",
           "trace_drift"]

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


def _is_bridge(model) -> bool:
    """A TransformerLens 4 ``TransformerBridge`` (parameters under Hugging Face names, a TransformerLens view)."""
    return isinstance(model, torch.nn.Module) and callable(getattr(type(model), "tl_parameters", None))


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def _resolve_loss(model_or_loss_fn, params, loss):
    """(loss_fn, params) from a ModelConfig, our hooked model, another nn.Module (+ loss) or a loss function."""
    if isinstance(model_or_loss_fn, ModelConfig):
        if params is None:
            raise ConfigError("params: required with a ModelConfig; pass e.g. run.load_params(step)")
        return transformer_loss_fn(model_or_loss_fn), params
    if isinstance(model_or_loss_fn, torch.nn.Module):
        module = model_or_loss_fn
        if params is None:
            params = {k: v.detach() for k, v in module.named_parameters()}
        bridge = _is_bridge(module)
        if loss is None:
            from .model import fast_model_config
            # the same guard as the susceptibility and induction code: the fast path only where it is exact
            if (cfg := fast_model_config(module)) is not None:
                return transformer_loss_fn(cfg), params
            if bridge:                    # a language model: the next-token loss of a (B, T) batch of token ids
                loss = _next_token_loss
            else:
                raise ConfigError("loss: required for a generic nn.Module; pass loss(output, batch) -> per-sample "
                                  "losses, or use a model of the serpent architecture (serpent.model.build_model)")
        return module_loss_fn(module, loss, vmapped=not bridge), params
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


def combine_chains(parts: Sequence[LLCResult]) -> LLCResult:
    """One estimate from the results of disjoint sets of chains at the same checkpoint (run with seeds ``seed + c0``,
    ``chains`` chains each, in order): what one run of all the chains gives, up to float rounding.

    >>> a = LLCResult(mean=1.0, std=0.0, per_chain=np.array([1.0]), init_loss=2.0, traces=np.zeros((1, 3)), steps=3)
    >>> b = LLCResult(mean=3.0, std=0.0, per_chain=np.array([3.0]), init_loss=2.0, traces=np.ones((1, 3)), steps=3)
    >>> r = combine_chains([a, b]); r.mean, round(r.std, 3), r.traces.shape
    (2.0, 1.414, (2, 3))
    """
    parts = list(parts)
    if not parts:
        raise ConfigError("combine_chains: no results to combine")
    if len({p.init_loss for p in parts}) > 1 or len({p.steps for p in parts}) > 1:
        raise ConfigError("combine_chains: the parts come from different checkpoints, minibatches or chain lengths "
                          f"(init losses {[p.init_loss for p in parts]}, steps {[p.steps for p in parts]})")
    per_chain = np.concatenate([p.per_chain for p in parts])
    traces = None if any(p.traces is None for p in parts) else np.concatenate([p.traces for p in parts])
    dist = (None if any(p.final_distance is None for p in parts)
            else np.concatenate([p.final_distance for p in parts]))
    first = parts[0]
    return LLCResult(mean=float(per_chain.mean()), std=float(per_chain.std(ddof=1)) if len(per_chain) > 1 else 0.0,
                     per_chain=per_chain, init_loss=first.init_loss, traces=traces, n_beta=first.n_beta,
                     convention=first.convention, seconds=max(p.seconds for p in parts), steps=first.steps,
                     final_distance=dist)


def estimate_llc(model_or_loss_fn, params: dict[str, torch.Tensor] | None, batches, cfg: SamplerConfig, *,
                 loss: Callable | None = None, restriction: str | Restriction | None = None,
                 init_loss_batches: int = INIT_LOSS_BATCHES, record_traces: bool = False, convention: str = "draws",
                 device=None, progress: bool = True, chains_per_call: int | None = None,
                 **sgld_kwargs) -> LLCResult:
    """Estimate the LLC at ``params`` with ``cfg.chains`` SGLD chains.

    ``model_or_loss_fn`` is a :class:`ModelConfig` (our transformer, fast path; ``params`` by TransformerLens name),
    a model of the serpent architecture (``build_model``: fast path), a TransformerLens 4 ``TransformerBridge``
    (generic path; ``loss`` defaults to the next-token loss of token batches), any ``nn.Module`` with
    ``loss(output, batch)`` (generic path), or a function ``loss_fn(stacked_params, batch) -> (R, B, ...)``.
    ``batches(i)`` is the i-th minibatch (a list is cycled). ``restriction`` (e.g. ``"1:6"``, read in TransformerLens'
    layout for a bridge too) estimates a weight-restricted LLC. Returns an :class:`LLCResult`.
    ``chains_per_call``: chains batched as the replicas of one :func:`~serpent.sgld.run_sgld` call (None: all of
    them on a GPU; one at a time on the CPU, where at the cpu preset's size a batch of 4 chains costs 1.36x more
    than 4 single chains; for small models, whose per-call overhead dominates, it is slower: BENCHMARKS.md). Each
    chain keeps its seed, so the grouping changes only the float rounding.
    """
    loss_fn, params = _resolve_loss(model_or_loss_fn, params, loss)
    if isinstance(restriction, str) and _is_bridge(model_or_loss_fn):
        restriction = pulled_back_restriction(model_or_loss_fn, restriction)
    elif isinstance(restriction, str):
        restriction = make_restriction(restriction, params)
    from .device import default_device
    device = default_device(device)
    per_call = chains_per_call or (cfg.chains if device.type != "cpu" or "on_draw" in sgld_kwargs else 1)
    if per_call < 1:
        raise ConfigError(f"chains_per_call: got {chains_per_call}; use a positive number (None: the device's best)")
    parts = []
    for c0 in range(0, cfg.chains, per_call):    # chain c keeps its seed (seed + c) whatever the grouping
        part = dataclasses.replace(cfg, chains=min(per_call, cfg.chains - c0), seed=cfg.seed + c0)
        res = run_sgld(loss_fn, params, batches, part, [restriction] if restriction is not None else None,
                       init_loss_batches=init_loss_batches, record_traces=record_traces, device=device,
                       progress=progress, **sgld_kwargs)
        parts.append(llc_from_sgld(res, convention))
    if len(parts) == 1:
        return parts[0]
    return dataclasses.replace(combine_chains(parts), seconds=sum(p.seconds for p in parts))


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
# calibration


def trace_drift(r: LLCResult, cfg: SamplerConfig) -> float:
    """How far the draws' loss still moves: (mean of the second half - mean of the first) / (rise above L(w*)).

    Near 0 when the chains sit on a plateau; the calibration's and the retry's test of a healthy trace
    (:func:`serpent.sgld.draw_drift` on the LLC's traces).
    """
    return draw_drift(r.traces, r.init_loss, cfg)


#: Two estimates agree when they differ by at most this many standard errors (the plateau's test).
PLATEAU_SIGMAS = 3.0
#: The stages say the step size is too large when the localisation alone biases the estimate by more than this.
BIAS_LIMIT = 0.10


def localisation_bias(epsilon: float, gamma: float) -> float:
    """The least relative bias SGLD's finite step gives the estimate, from the localisation alone: ``1/(1 - eps gamma
    / 4) - 1`` (``inf`` when ``eps gamma >= 4``: every chain diverges).

    The update ``w <- w - (eps/2) a (w - w*) + sqrt(eps) xi`` samples a Gaussian of precision ``a`` with variance
    ``1/(a (1 - eps a/4))`` instead of ``1/a``: every direction's share of the LLC is inflated by ``1/(1 - eps a/4)``,
    where ``a = n_beta h + gamma >= gamma`` for a direction of curvature ``h >= 0``. So no calibration is needed to
    see that ``eps`` is past the plateau once ``eps gamma`` is large; the curvature of the loss only adds to it.

    >>> round(localisation_bias(1e-3, 100.0), 3), round(localisation_bias(3e-3, 300.0), 3)
    (0.026, 0.29)
    """
    x = float(epsilon) * float(gamma) / 4
    return math.inf if x >= 1 else 1 / (1 - x) - 1


def epsilon_plateau(cal: pd.DataFrame, sigmas: float = PLATEAU_SIGMAS) -> pd.DataFrame:
    """Mark, for each ``n_beta`` of a calibration table (and each checkpoint, ``gamma`` and batch size it holds), the
    plateau of the estimate against ``epsilon``.

    Among the ``flat`` rows (no divergence, a non-negative estimate, a flat trace), from the smallest ``epsilon`` up:
    a row is on the plateau while its estimate agrees with every smaller one's on it within ``sigmas`` standard
    errors (``llc_se``, never below the median of the group's); from the first that does not, the estimate still
    moves with ``epsilon`` and that row and every larger flat one are ``biased``. Adds ``stable`` (flat and on the
    plateau), ``biased``, ``status`` (``stable``, ``biased``, ``not flat`` or ``diverged``) and ``recommended`` (the
    largest ``epsilon`` on the plateau). A plateau of one row (the next ``epsilon`` already disagrees) is not
    confirmed: :func:`calibration_advice` says to sweep smaller steps.

    >>> cal = pd.DataFrame({"epsilon": [1e-3, 3e-3, 1e-2, 3e-2], "n_beta": 100.0, "llc_mean": [5.1, 5.3, 6.6, 20.0],
    ...                     "llc_se": 0.1, "diverged": False, "flat": True})
    >>> epsilon_plateau(cal)[["epsilon", "status", "recommended"]].values.tolist()
    [[0.001, 'stable', False], [0.003, 'stable', True], [0.01, 'biased', False], [0.03, 'biased', False]]
    """
    cal = cal.copy()
    if "flat" not in cal:                                 # a table written before the plateau test: stable = flat
        cal["flat"] = cal["stable"]
    if "llc_se" not in cal:
        cal["llc_se"] = cal["llc_std"] / np.sqrt(cal["chains"] if "chains" in cal else 1)
    cal["flat"] = cal["flat"].astype(bool) & ~cal["diverged"].astype(bool)
    cal["stable"], cal["biased"], cal["recommended"] = False, False, False
    keys = [k for k in ("step", "n_beta", "gamma", "batch_size") if k in cal]
    for _, group in cal.groupby(keys, sort=False):
        flat = group[group["flat"]].sort_values("epsilon")
        if flat.empty:
            continue
        mean = flat["llc_mean"].astype(float)
        se = flat["llc_se"].astype(float).fillna(0.0)
        se = se.clip(lower=float(se.median()))
        on: list = []
        for i in flat.index:
            if on and not all(abs(mean[i] - mean[j]) <= sigmas * math.hypot(se[i], se[j]) for j in on):
                break
            on.append(i)
        cal.loc[on, "stable"] = True
        cal.loc[[i for i in flat.index if i not in on], "biased"] = True
        cal.loc[on[-1], "recommended"] = True
    cal["status"] = np.select([cal["diverged"].astype(bool), cal["biased"], cal["stable"]],
                              ["diverged", "biased", "stable"], "not flat")
    return cal


def calibration_advice(cal: pd.DataFrame) -> list[str]:
    """One line per ``n_beta`` of a calibration table (:func:`calibrate`): the plateau, the step sizes past it, and
    the ``epsilon`` to use."""
    if "status" not in cal:
        cal = epsilon_plateau(cal)
    lines = []
    for nb, g in cal.sort_values("epsilon").groupby("n_beta", sort=True):
        on, past = g[g["status"] == "stable"], g[g["status"] == "biased"]
        head = f"n_beta {nb:g}: "
        if on.empty:
            lines.append(head + "no epsilon gave a flat trace without diverging; sweep smaller epsilon with more "
                                "burn-in")
            continue
        best = on.iloc[-1]
        text = (f"the estimate is flat in epsilon from {on['epsilon'].iloc[0]:g} to {best['epsilon']:g} "
                f"(LLC {best['llc_mean']:.3g} +- {best['llc_se']:.2g})") if len(on) > 1 else (
                f"only epsilon {best['epsilon']:g} is on the plateau (LLC {best['llc_mean']:.3g} +- "
                f"{best['llc_se']:.2g}), no smaller step confirms it: add smaller epsilon to the sweep")
        if not past.empty:
            text += ("; biased, the estimate still moves with epsilon: " +
                     ", ".join(f"{e:g} ({m:.3g})" for e, m in zip(past["epsilon"], past["llc_mean"])))
        lines.append(head + text + f"; use epsilon {best['epsilon']:g}")
    return lines


def epsilon_note(cfg: SamplerConfig, cal: pd.DataFrame | None = None, name: str = "llc.sampler") -> str | None:
    """One line when the step size ``cfg.epsilon`` sits past the plateau of the estimate against ``epsilon``, else
    None. ``cal``: calibration tables (:func:`calibrate`, any ``n_beta``); their rows at this ``n_beta`` and
    ``gamma`` (and batch size) decide when ``cfg.epsilon`` is at or above a step size they found ``biased``. Where
    they do not say so, the cheap check: the localisation alone biases the estimate by more than :data:`BIAS_LIMIT`
    (:func:`localisation_bias`, a bound that needs no sampling). ``name`` is the config section (``llc.sampler``,
    ``susceptibility.sampler``).

    >>> epsilon_note(SamplerConfig(epsilon=1e-3, gamma=100.0)) is None
    True
    >>> epsilon_note(SamplerConfig(epsilon=3e-3, gamma=300.0)).split(":")[0]
    'llc.sampler.epsilon = 0.003 with gamma = 300 sits past the plateau of the estimate against epsilon'
    """
    eps = float(cfg.epsilon)
    rows = None
    if cal is not None and len(cal):
        if "status" not in cal:
            cal = epsilon_plateau(cal)
        same = np.isclose(cal["n_beta"].astype(float), cfg.n_beta, rtol=1e-6)
        if "gamma" in cal:
            same &= np.isclose(cal["gamma"].astype(float), cfg.gamma, rtol=1e-6)
        if "batch_size" in cal:
            same &= cal["batch_size"].astype(int) == cfg.batch_size
        rows = cal[same].sort_values("epsilon") if same.any() else None
        if rows is not None and "step" in rows:                 # the latest checkpoint calibrated at these settings
            rows = rows[rows["step"] == rows["step"].max()]
    on = rows[rows["status"] == "stable"] if rows is not None else None
    past = rows[(rows["status"] == "biased") & (rows["epsilon"] <= eps * (1 + 1e-9))] if rows is not None else None
    if rows is not None and not on.empty and not past.empty and eps > on["epsilon"].max() * (1 + 1e-9):
        edge, at = on.iloc[-1], past.iloc[-1]
        where = f" at step {int(rows['step'].iloc[0])}" if "step" in rows else ""
        return (f"{name}.epsilon = {eps:g} sits past the plateau of the estimate against epsilon: the calibration"
                f"{where} (n_beta {cfg.n_beta:g}, gamma {cfg.gamma:g}) found it still moving above epsilon "
                f"{edge['epsilon']:g} ({edge['llc_mean']:.3g} there, {at['llc_mean']:.3g} at {at['epsilon']:g}), so "
                f"these estimates are biased upwards; set --set {name}.epsilon={edge['epsilon']:g}")
    bias = localisation_bias(eps, cfg.gamma)
    if bias <= BIAS_LIMIT:
        return None
    limit = 4 * (1 - 1 / (1 + BIAS_LIMIT)) / cfg.gamma
    how = ("every chain diverges" if math.isinf(bias) else
           f"SGLD's finite step alone inflates the estimate by at least {100 * bias:.0f} % (1/(1 - epsilon*gamma/4))")
    return (f"{name}.epsilon = {eps:g} with gamma = {cfg.gamma:g} sits past the plateau of the estimate against "
            f"epsilon: {how}; set --set {name}.epsilon={limit:.2g} or smaller, or measure the plateau with "
            f"serpent.calibrate_run")


def calibrate(model_or_loss_fn, params: dict[str, torch.Tensor] | None, batches, cfg: SamplerConfig,
              epsilons: Sequence[float], n_betas: Sequence[float], *, loss: Callable | None = None,
              init_loss_batches: int = INIT_LOSS_BATCHES, flat_tolerance: float = 0.1,
              sigmas: float = PLATEAU_SIGMAS, device=None, progress: bool = True) -> pd.DataFrame:
    """Sweep ``epsilon × n_beta`` (other settings from ``cfg``) and say where sampling is healthy and unbiased.

    One row per pair: ``epsilon, n_beta, gamma, batch_size, chains, llc_mean, llc_std, llc_se, diverged, drift, flat,
    stable, biased, status, recommended, error``. ``drift`` compares the mean loss over the second half of the draws
    with the first half, relative to the loss rise above ``L(w*)``: near 0 when the chains have reached a plateau.
    ``flat`` = no divergence, a non-negative estimate and ``|drift| < flat_tolerance``. A flat trace is not enough:
    SGLD's finite step biases the estimate (upwards, growing with ``epsilon``) without making the trace move, so
    ``stable`` also asks that the estimate agree with those at the smaller flat ``epsilon`` within ``sigmas``
    standard errors (:func:`epsilon_plateau`); flat rows past that plateau are ``biased``. ``recommended`` marks the
    largest stable ``epsilon`` of each ``n_beta``; :func:`calibration_advice` says it in words, and
    :func:`serpent.charts.llc.calibration_chart` draws the table. Needs at least 2 chains (the error bars).
    """
    from tqdm.auto import tqdm

    if cfg.chains < 2:
        raise ConfigError(f"calibrate: chains = {cfg.chains}; the plateau test compares estimates within their error "
                          "bars, which needs at least 2 chains")
    loss_fn, params = _resolve_loss(model_or_loss_fn, params, loss)
    rows = []
    grid = [(float(e), float(nb)) for nb in n_betas for e in epsilons]
    if not grid:
        raise ConfigError("calibrate: epsilons and n_betas must be non-empty")
    for eps, nb in tqdm(grid, desc="calibration", disable=not progress):
        c = SamplerConfig(**{**cfg.to_dict(), "epsilon": eps, "n_beta": nb})
        row = {"epsilon": eps, "n_beta": nb, "gamma": float(c.gamma), "batch_size": int(c.batch_size),
               "chains": int(c.chains), "llc_mean": math.nan, "llc_std": math.nan, "llc_se": math.nan,
               "diverged": False, "drift": math.nan, "flat": False, "error": ""}
        try:
            r = estimate_llc(loss_fn, params, batches, c, init_loss_batches=init_loss_batches, record_traces=True,
                             device=device, progress=False)
        except DivergenceError as e:
            row.update(diverged=True, error=str(e))
            rows.append(row)
            continue
        drift = trace_drift(r, c)
        row.update(llc_mean=r.mean, llc_std=r.std, llc_se=r.std / math.sqrt(len(r.per_chain)), drift=drift,
                   flat=bool(r.mean >= 0 and abs(drift) < flat_tolerance and np.isfinite(r.mean)))
        rows.append(row)
    cal = epsilon_plateau(pd.DataFrame(rows), sigmas)
    order = ["epsilon", "n_beta", "gamma", "batch_size", "chains", "llc_mean", "llc_std", "llc_se", "diverged",
             "drift", "flat", "stable", "biased", "status", "recommended", "error"]
    return cal[order]
