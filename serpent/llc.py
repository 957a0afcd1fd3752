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

:func:`calibrate` sweeps ``epsilon × n_beta`` and reports where chains are stable and the estimate flat. The LLC over
a run's checkpoints, with its per-checkpoint cache and retries, is the ``llc`` stage (:mod:`serpent.stages.llc`).

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
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .config import ModelConfig, SamplerConfig
from .errors import ConfigError, DivergenceError
from .sgld import (Restriction, SGLDResult, draw_drift, make_restriction, module_loss_fn, run_sgld,
                   transformer_loss_fn)

__all__ = ["LLCResult", "estimate_llc", "llc_from_sgld", "combine_chains", "select_steps", "calibrate",
           "crossing_llc_target", "trace_drift"]

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
# calibration


def trace_drift(r: LLCResult, cfg: SamplerConfig) -> float:
    """How far the draws' loss still moves: (mean of the second half - mean of the first) / (rise above L(w*)).

    Near 0 when the chains sit on a plateau; the calibration's and the retry's test of a healthy trace
    (:func:`serpent.sgld.draw_drift` on the LLC's traces).
    """
    return draw_drift(r.traces, r.init_loss, cfg)


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
