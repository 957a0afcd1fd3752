"""Per-token, per-component susceptibilities: the weight-restricted estimator, batched and streamed.

What is estimated (science.md §1.5). For a component C (an attention head ``"L:H"``, or an MLP ``"mlp:L"``) the
observable is the weight-restricted loss φ_C: SGLD runs over the component's weights only (everything else frozen at
the checkpoint w*), and φ_C(w) = L(w) − L_0, the *sampling-task loss* L (the mean per-token loss on fixed sequences of
the training distribution, the same sequences at every draw) minus its value at the checkpoint. For a token y in
context x of a fixed probe sequence (held-out text), ℓ_xy(w) = −log p(y|x, w) and

    χ^C_xy = −( E_C[φ_C · (ℓ_xy − L)] − E_C[φ_C] · E_full[ℓ_xy − L] )

where E_C averages over the draws and chains of the run restricted to C and E_full over an unrestricted ("full") run.
This is −Cov_β[φ_C, ℓ_xy − L] up to a positive factor: the response of ⟨φ_C⟩ to upweighting the token xy in the data
(in units of loss², no nβ factor), exactly the estimator of devinterp 2.0.1 ``compute_susceptibilities``.

Sign convention (used everywhere in this package):
    **χ < 0: the component expresses the token.** Upweighting xy lowers ⟨φ_C⟩: the posterior moves towards weights
    of C that fit xy, the fluctuations of C's weights that raise the loss also raise ℓ_xy.
    **χ > 0: the component suppresses the token.** Upweighting xy raises ⟨φ_C⟩.

Design:

* One batched computation. The full run and one run per component, each with ``chains`` chains, are the replicas of a
  single :func:`serpent.sgld.run_sgld` call (replica r = restriction·chains + chain; chain c of every restriction uses
  the same noise seed and the same minibatches, as in devinterp). At every draw one no-grad forward over all replicas
  evaluates the task sequences and the probe sequences (chunked to bound memory).
* No traces. :class:`SusceptibilityStats` keeps running sums per replica: n, Σa, Σa², Σb_xy, Σa·b_xy with
  a = L − L(w*) and b_xy = ℓ_xy − ℓ_xy(w*) (shifted by the checkpoint's values, in float64, so that the covariance does
  not drown in cancellation). Memory O(replicas × tokens); χ follows in closed form for any baseline L_0.
* The baseline L_0 defaults to devinterp's: the mean SGLD-minibatch loss at w* (``init_loss``); ``baseline="task"``
  uses the task loss at w* instead (then φ_C(w*) = 0 exactly).
* Standard errors: χ is recomputed per chain (restricted chain c against full chain c); the standard error is the
  standard deviation of those per-chain estimates divided by √chains (NaN with a single chain).
* Any ``HookedTransformer``: our architecture family uses the fast stacked forward of :mod:`serpent.model`; any other
  (e.g. Pythia: rotary, parallel attention + MLP) uses the engine's generic ``torch.func`` path.
* The response matrix (components × token-pattern means of χ) and its principal components take the token labels
  from any classifier (an array of category names per token), so the pattern classifier plugs in.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> stats = SusceptibilityStats(n_restrictions=2, chains=2, n_tokens=3)
>>> for _ in range(50):
...     a = torch.tensor(rng.normal(size=4)); stats.update(a, a[:, None] * torch.tensor([2.0, 1.0, 0.0]))
>>> chi, se = stats.chi(baseline=0.0)
>>> chi.shape, bool(chi[0, 0] < 0 < chi[2, 0])
((3, 1), True)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.numpy import load_file as _st_load, save as _st_save

from .errors import ConfigError, DivergenceError, SerpentError

__all__ = [
    "SusceptibilityResult", "SusceptibilityStats", "susceptibility_from_traces", "sample_susceptibilities",
    "susceptibilities", "component_specs", "load_susceptibilities", "response_matrix", "response_pca",
    "susceptibility_stage", "SIGN_CONVENTION",
]

SIGN_CONVENTION = "chi < 0: the component expresses the token; chi > 0: it suppresses it"

_FORMAT = "serpent.susceptibility/1"
STAGE = "susceptibility"


@dataclass
class SusceptibilityResult:
    """Per-token susceptibilities of one checkpoint: an ``(N tokens, C components)`` table plus the probe context.

    Row i is the target token ``y = probe_tokens[seq_index[i], position[i]]`` predicted from its context
    ``x = probe_tokens[seq_index[i], :position[i]]``. ``chi`` is χ^C_xy, ``chi_se`` its standard error from the
    spread across SGLD chains. Saved as safetensors (arrays) with JSON metadata in the header.
    """

    step: int                    # training step of the checkpoint (-1 if not from a run)
    components: list[str]        # ["0:0", ..., "1:7"] (then "mlp:0", ... when MLPs are components)
    chi: np.ndarray              # (N, C) float32
    chi_se: np.ndarray           # (N, C) float32
    probe_tokens: np.ndarray     # (S, L) int64
    seq_index: np.ndarray        # (N,) int64
    position: np.ndarray         # (N,) int64, 1..L-1
    doc_names: list[str]         # (S,)
    settings: dict = field(default_factory=dict)

    @property
    def token_ids(self) -> np.ndarray:
        """``(N,)`` int64 ids of the target tokens y."""
        return self.probe_tokens[self.seq_index, self.position]

    def __len__(self) -> int:
        return int(self.chi.shape[0])

    def save(self, path) -> Path:
        """Write to ``path`` (safetensors; arrays plus JSON metadata), atomically."""
        path = Path(path)
        arrays = {
            "chi": np.ascontiguousarray(self.chi, dtype=np.float32),
            "chi_se": np.ascontiguousarray(self.chi_se, dtype=np.float32),
            "probe_tokens": np.ascontiguousarray(self.probe_tokens, dtype=np.int64),
            "seq_index": np.ascontiguousarray(self.seq_index, dtype=np.int64),
            "position": np.ascontiguousarray(self.position, dtype=np.int64),
        }
        meta = {"format": _FORMAT, "step": str(int(self.step)), "components": json.dumps(list(self.components)),
                "doc_names": json.dumps(list(self.doc_names)), "settings": json.dumps(self.settings, default=str)}
        data = _st_save(arrays, metadata=meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "SusceptibilityResult":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise SerpentError(f"{path}: no such susceptibility file; run `python -m serpent susceptibilities RUN_DIR`")
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise SerpentError(f"{path}: not a serpent susceptibility file (format {meta.get('format')!r}); "
                               "recompute it with `python -m serpent susceptibilities RUN_DIR`")
        a = _st_load(str(path))
        return cls(step=int(meta["step"]), components=json.loads(meta["components"]), chi=a["chi"],
                   chi_se=a["chi_se"], probe_tokens=a["probe_tokens"], seq_index=a["seq_index"],
                   position=a["position"], doc_names=json.loads(meta["doc_names"]),
                   settings=json.loads(meta["settings"]))


def load_susceptibilities(run) -> dict[int, SusceptibilityResult]:
    """All saved results of a run directory, by training step (``susceptibility/step_{step:07d}.safetensors``)."""
    d = Path(run.path) / STAGE
    out = {}
    for p in sorted(d.glob("step_*.safetensors")) if d.is_dir() else []:
        r = SusceptibilityResult.load(p)
        out[r.step] = r
    return out


# ----------------------------------------------------------------------------------------------------------------
# The estimator: running sufficient statistics
# ----------------------------------------------------------------------------------------------------------------

class SusceptibilityStats:
    """Running sums over draws, per replica, from which χ follows in closed form.

    Replica ``r = k * chains + c`` is chain c of restriction k; restriction ``full`` (default 0) is the unrestricted
    run. ``task_ref`` (scalar) and ``probe_ref`` ``(N,)`` are the task and per-token losses at the checkpoint; the sums
    are of the shifted values a = L − task_ref and b = ℓ − probe_ref (float64), which leaves χ unchanged and keeps the
    covariances accurate. Memory: 2 · R · N float64.
    """

    def __init__(self, n_restrictions: int, chains: int, n_tokens: int, *, task_ref: float | torch.Tensor = 0.0,
                 probe_ref: torch.Tensor | None = None, full: int = 0, device=None):
        self.n_restrictions, self.chains, self.n_tokens, self.full = n_restrictions, chains, n_tokens, full
        if not 0 <= full < n_restrictions:
            raise ConfigError(f"full: got {full}; must index one of the {n_restrictions} restrictions")
        R = n_restrictions * chains
        dev = torch.device(device) if device is not None else (
            probe_ref.device if probe_ref is not None else torch.device("cpu"))
        f64 = torch.float64
        self.task_ref = torch.as_tensor(task_ref, dtype=f64, device=dev).reshape(())
        self.probe_ref = (torch.zeros(n_tokens, dtype=f64, device=dev) if probe_ref is None
                          else probe_ref.detach().to(dev, f64).reshape(n_tokens))
        self.n = 0
        self.sum_a = torch.zeros(R, dtype=f64, device=dev)
        self.sum_aa = torch.zeros(R, dtype=f64, device=dev)
        self.sum_b = torch.zeros(R, n_tokens, dtype=f64, device=dev)
        self.sum_ab = torch.zeros(R, n_tokens, dtype=f64, device=dev)

    @torch.no_grad()
    def update(self, task_loss: torch.Tensor, probe_loss: torch.Tensor) -> None:
        """Add one draw: ``task_loss`` ``(R,)`` and ``probe_loss`` ``(R, N)`` of every replica."""
        R = self.sum_a.shape[0]
        if task_loss.shape != (R,) or probe_loss.shape != (R, self.n_tokens):
            raise ConfigError(f"update: expected task_loss ({R},) and probe_loss ({R}, {self.n_tokens}); got "
                              f"{tuple(task_loss.shape)} and {tuple(probe_loss.shape)}")
        a = task_loss.to(self.sum_a.device, torch.float64) - self.task_ref
        b = probe_loss.to(self.sum_a.device, torch.float64) - self.probe_ref
        self.n += 1
        self.sum_a += a
        self.sum_aa += a * a
        self.sum_b += b
        self.sum_ab.addcmul_(a[:, None], b)

    def _moments(self):
        K, C, n = self.n_restrictions, self.chains, self.n
        return (self.sum_a.view(K, C) / n, self.sum_aa.view(K, C) / n, self.sum_b.view(K, C, -1) / n,
                self.sum_ab.view(K, C, -1) / n)

    def phi_mean(self, baseline: float) -> np.ndarray:
        """``(n_restrictions, chains)`` mean of φ = L − baseline over the draws (should be small and positive)."""
        if self.n == 0:
            raise SerpentError("no draws recorded yet")
        Ea = self.sum_a.view(self.n_restrictions, self.chains) / self.n
        return (Ea + self.task_ref - baseline).cpu().numpy()

    def chi(self, baseline: float, components: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """χ ``(N, C)`` pooled over chains and its standard error from the spread of per-chain estimates.

        ``baseline`` is L_0 in φ = L − L_0; ``components`` are restriction indices (default: all but ``full``).
        """
        if self.n == 0:
            raise SerpentError("no draws recorded yet; run the sampler before asking for χ")
        if components is None:
            components = [k for k in range(self.n_restrictions) if k != self.full]
        d = float(self.task_ref) - float(baseline)          # φ = a + d
        Ea, Eaa, Eb, Eab = self._moments()                  # (K, C) (K, C) (K, C, N) (K, C, N)
        f = self.full

        def estimate(Ea, Eaa, Eb, Eab, Ef_diff):
            # −( E_C[(a+d)(b−a)] − E_C[a+d]·E_full[b−a] ), the constant ℓ(w*) − L(w*) cancels
            return -(Eab - Eaa[..., None] + d * (Eb - Ea[..., None]) - (Ea[..., None] + d) * Ef_diff)

        idx = torch.as_tensor(list(components), dtype=torch.long, device=Ea.device)
        full_diff_c = Eb[f] - Ea[f][:, None]                                   # (C, N) per chain
        pooled = estimate(Ea[idx].mean(1), Eaa[idx].mean(1), Eb[idx].mean(1), Eab[idx].mean(1),
                          full_diff_c.mean(0)[None])                           # (K', N)
        per_chain = estimate(Ea[idx], Eaa[idx], Eb[idx], Eab[idx], full_diff_c[None])   # (K', C, N)
        if self.chains > 1:
            se = per_chain.std(dim=1, unbiased=True) / math.sqrt(self.chains)
        else:
            se = torch.full_like(pooled, float("nan"))
        return (pooled.T.contiguous().cpu().numpy().astype(np.float32),
                se.T.contiguous().cpu().numpy().astype(np.float32))


def susceptibility_from_traces(task: np.ndarray, probe: np.ndarray, full_task: np.ndarray, full_probe: np.ndarray,
                               baseline: float) -> np.ndarray:
    """The formula on stored traces, for one component (a readable reference for the streaming estimator).

    ``task`` ``(chains, draws)`` and ``probe`` ``(chains, draws, N)`` are the restricted run's task loss and
    per-token losses; ``full_task``, ``full_probe`` the same for the full run. Returns χ ``(N,)``.

    >>> rng = np.random.default_rng(0); t = rng.normal(size=(2, 100)); p = t[..., None] * [2.0, 0.0]
    >>> chi = susceptibility_from_traces(t, p, t, p, baseline=0.0); bool(chi[0] < 0 < chi[1])
    True
    """
    phi = task - baseline
    delta = probe - task[..., None]
    full_delta = (full_probe - full_task[..., None]).mean(axis=(0, 1))
    return -((phi[..., None] * delta).mean(axis=(0, 1)) - phi.mean() * full_delta)


# ----------------------------------------------------------------------------------------------------------------
# The response matrix: components × token patterns
# ----------------------------------------------------------------------------------------------------------------

def response_matrix(result: SusceptibilityResult, labels, categories: Sequence[str] | None = None):
    """Mean χ per component and token category: a ``pandas.DataFrame`` (components × categories).

    ``labels`` is ``(N,)``: a category name per token of ``result`` (from any token-pattern classifier); tokens
    labelled ``None`` or ``""`` are left out. ``categories`` fixes the column order (default: order of appearance).
    The attribute ``df.attrs["counts"]`` holds the number of tokens per category.

    >>> r = SusceptibilityResult(0, ["0:0", "0:1"], np.array([[1., 2.], [3., 4.], [5., 6.]], "f4"),
    ...     np.zeros((3, 2), "f4"), np.zeros((1, 4), "i8"), np.zeros(3, "i8"), np.arange(1, 4), ["d"], {})
    >>> response_matrix(r, np.array(["a", "b", "a"]))
            a    b
    0:0  3.0  3.0
    0:1  4.0  4.0
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=object)
    if labels.shape != (len(result),):
        raise ConfigError(f"labels: expected one category per token, shape ({len(result)},); got {labels.shape}")
    keep = np.array([lab is not None and lab != "" for lab in labels])
    if categories is None:
        seen: dict = {}
        for lab in labels[keep]:
            seen.setdefault(lab, None)
        categories = list(seen)
    cols, counts = {}, {}
    for cat in categories:
        m = keep & (labels == cat)
        counts[cat] = int(m.sum())
        cols[cat] = result.chi[m].astype(np.float64).mean(axis=0) if m.any() else np.full(len(result.components), np.nan)
    df = pd.DataFrame(cols, index=list(result.components))
    df.attrs["counts"] = counts
    return df


@dataclass
class ResponsePCA:
    """Principal components of a response matrix (components are the samples, categories the features)."""

    scores: "object"                 # DataFrame (components × k): each component's coordinates
    loadings: "object"               # DataFrame (k × categories): the principal directions
    explained_variance_ratio: np.ndarray   # (k,)


def response_pca(matrix, n_components: int | None = None, center: bool = True) -> ResponsePCA:
    """PCA of a response matrix (from :func:`response_matrix`) by SVD; categories with NaN means are dropped.

    With ``center=False`` the first component keeps the uniform mode (all components responding alike).

    >>> import pandas as pd
    >>> m = pd.DataFrame([[1., 0.], [2., 0.], [3., 0.1]], index=["0:0", "0:1", "1:0"], columns=["a", "b"])
    >>> p = response_pca(m); p.scores.shape, bool(p.explained_variance_ratio[0] > 0.99)
    ((3, 2), True)
    """
    import pandas as pd

    m = matrix.dropna(axis=1, how="any")
    if m.shape[1] == 0 or m.shape[0] < 2:
        raise ConfigError("response_pca: need at least two components and one category with tokens")
    x = m.to_numpy(dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    # fix the sign of each direction so that its largest loading is positive (deterministic output)
    sign = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    sign[sign == 0] = 1
    u, vt = u * sign, vt * sign[:, None]
    k = len(s) if n_components is None else min(n_components, len(s))
    var = s ** 2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    names = [f"PC{i + 1}" for i in range(k)]
    return ResponsePCA(scores=pd.DataFrame(u[:, :k] * s[:k], index=m.index, columns=names),
                       loadings=pd.DataFrame(vt[:k], index=names, columns=m.columns),
                       explained_variance_ratio=ratio[:k])


# ----------------------------------------------------------------------------------------------------------------
# The batched driver
# ----------------------------------------------------------------------------------------------------------------

Observe = Callable[[dict], "tuple[torch.Tensor, torch.Tensor]"]


def sample_susceptibilities(loss_fn, init_params: dict[str, torch.Tensor], batches, cfg, components: Sequence,
                            observe: Observe, *, baseline: str = "init_loss", init_loss_batches: int = 4,
                            device=None, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """χ for any model: one :func:`serpent.sgld.run_sgld` call over ``[full] + components``, observed at every draw.

    ``loss_fn``, ``init_params``, ``batches``, ``cfg`` (a :class:`~serpent.config.SamplerConfig`) are those of
    :func:`~serpent.sgld.run_sgld`. ``components`` are restriction specs (``"L:H"``, ``"mlp:L"``, a parameter name)
    or :class:`~serpent.sgld.Restriction` objects. ``observe(stacked_params)`` returns the task loss ``(R,)`` and
    the per-token probe losses ``(R, N)`` for parameters with any leading replica count R (called without grad).
    ``baseline`` is L_0 in φ = L − L_0: ``"init_loss"`` (devinterp: mean minibatch loss at w*) or ``"task"`` (the
    task loss at w*). Returns ``chi (N, C)``, ``chi_se (N, C)`` and a dict of diagnostics.
    """
    from .device import autocast, autocast_dtype, default_device
    from .sgld import Restriction, make_restriction, run_sgld

    if baseline not in ("init_loss", "task"):
        raise ConfigError(f"baseline: got {baseline!r}; allowed: 'init_loss' (devinterp's) or 'task'")
    if not components:
        raise ConfigError("components: empty; name at least one head ('0:0'), MLP ('mlp:0') or parameter")
    device = default_device(device)
    dtype = autocast_dtype(device, cfg.precision)
    restrictions = [make_restriction("full", init_params)]
    for c in components:
        r = c if isinstance(c, Restriction) else make_restriction(c, init_params)
        if r.name == "full":
            raise ConfigError("components: 'full' is the baseline run, always included; list heads/MLPs only")
        restrictions.append(r)
    names = [r.name for r in restrictions[1:]]
    if len(set(names)) != len(names):
        raise ConfigError(f"components: duplicates in {names}")

    # values at the checkpoint: the shift of the running sums, and the "task" baseline
    w0 = {k: v.detach().to(device=device, dtype=torch.float32).unsqueeze(0) for k, v in init_params.items()}
    with torch.no_grad(), autocast(device, dtype):
        task0, probe0 = observe(w0)
    task0, probe0 = task0.reshape(()).double(), probe0.reshape(-1).double()
    if not (torch.isfinite(task0) and torch.isfinite(probe0).all()):
        raise DivergenceError("the task or probe loss at the checkpoint is not finite; check the checkpoint and "
                              "the probe tokens (ids must be < d_vocab)")
    del w0
    stats = SusceptibilityStats(len(restrictions), cfg.chains, probe0.numel(), task_ref=task0, probe_ref=probe0,
                                device=device)

    def on_draw(state) -> None:
        with torch.no_grad(), autocast(device, dtype):
            task, probe = observe(state.params)
        stats.update(task.reshape(-1), probe.reshape(stats.sum_a.shape[0], -1))

    t0 = time.perf_counter()
    res = run_sgld(loss_fn, init_params, batches, cfg, restrictions, on_draw=on_draw,
                   init_loss_batches=init_loss_batches, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    bad = ~(torch.isfinite(stats.sum_a) & torch.isfinite(stats.sum_ab).all(1))
    if bad.any():
        r = int(torch.nonzero(bad)[0])
        raise DivergenceError(
            f"the observables of chain {r % cfg.chains} of restriction {restrictions[r // cfg.chains].name!r} became "
            f"non-finite; use a smaller epsilon (now {cfg.epsilon:g}) or a larger gamma (now {cfg.gamma:g})")
    base = res.init_loss if baseline == "init_loss" else float(task0)
    chi, se = stats.chi(base)
    phi = stats.phi_mean(base)                                    # (K, chains)
    info = {
        "components": names, "baseline": baseline, "baseline_value": base, "init_loss": res.init_loss,
        "task_loss_at_checkpoint": float(task0), "draws_observed": stats.n, "replicas": len(restrictions) * cfg.chains,
        "phi_mean": {n: float(phi[k + 1].mean()) for k, n in enumerate(names)},
        "phi_mean_full": float(phi[0].mean()),
        "mean_batch_loss": {r.name: float(v) for r, v in zip(restrictions, res.by_restriction(res.mean_loss).mean(1))},
        "final_distance": {r.name: float(v) for r, v in
                           zip(restrictions, res.by_restriction(res.final_distance).mean(1))},
        "sampling_seconds": round(seconds, 3),
    }
    return chi, se, info
