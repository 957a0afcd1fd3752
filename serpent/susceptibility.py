"""Per-token, per-component susceptibilities: the weight-restricted estimator, batched and streamed.

What is estimated (Baker et al., arXiv 2504.18274; chapter 5 of the book). For a component C (an attention head ``"L:H"``, or an MLP ``"mlp:L"``) the
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
* Any hooked transformer: our architecture family uses the fast stacked forward of :mod:`serpent.model`; any other
  (a TransformerLens 4 ``TransformerBridge``, e.g. Pythia: rotary, parallel attention + MLP) uses the engine's
  generic ``torch.func`` path, its components named in TransformerLens' layout (``"1:6"``, ``"mlp:0"``) and pulled
  back onto the bridge's own parameters (:func:`serpent.sgld.pulled_back_restriction`).
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
    "susceptibilities", "component_specs", "combine_components", "response_matrix", "response_pca",
    "SIGN_CONVENTION",
]

SIGN_CONVENTION = "chi < 0: the component expresses the token; chi > 0: it suppresses it"

_FORMAT = "serpent.susceptibility/1"


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

    def save(self, path, compact: bool = False) -> Path:
        """Write to ``path`` (safetensors; arrays plus JSON metadata), atomically.

        ``compact=True`` stores χ and its standard error in float16 and the indices in int32 (about half the bytes;
        used for committed artifacts); :meth:`load` always returns float32 and int64.
        """
        path = Path(path)
        f, i = (np.float16, np.int32) if compact else (np.float32, np.int64)
        arrays = {
            "chi": np.ascontiguousarray(self.chi, dtype=f),
            "chi_se": np.ascontiguousarray(self.chi_se, dtype=f),
            "probe_tokens": np.ascontiguousarray(self.probe_tokens, dtype=i),
            "seq_index": np.ascontiguousarray(self.seq_index, dtype=i),
            "position": np.ascontiguousarray(self.position, dtype=i),
        }
        meta = {"format": _FORMAT, "step": str(int(self.step)), "components": json.dumps(list(self.components)),
                "doc_names": json.dumps(list(self.doc_names)), "settings": json.dumps(self.settings, default=str)}
        from .io import atomic_write_bytes   # a temporary name of its own: two jobs writing one step never mix
        atomic_write_bytes(path, _st_save(arrays, metadata=meta))
        return path

    @staticmethod
    def read_settings(path) -> dict:
        """The ``settings`` of a file written by :meth:`save`, read from its header alone (no array is loaded);
        a damaged or foreign file raises :class:`SerpentError`, as :meth:`load` does."""
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise SerpentError(f"{path} is damaged ({str(e)[:120]}); delete it and run `python -m serpent "
                               "susceptibilities RUN_DIR` again to recompute that checkpoint") from None
        try:
            settings = json.loads(meta["settings"]) if meta.get("format") == _FORMAT else None
        except (KeyError, ValueError):
            settings = None
        if not isinstance(settings, dict):
            raise SerpentError(f"{path}: not a serpent susceptibility file (format {meta.get('format')!r}); "
                               "recompute it with `python -m serpent susceptibilities RUN_DIR`")
        return settings

    @classmethod
    def load(cls, path) -> "SusceptibilityResult":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise SerpentError(f"{path}: no such susceptibility file; run `python -m serpent susceptibilities RUN_DIR`")
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
            if meta.get("format") == _FORMAT:
                a = _st_load(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SerpentError(f"{path} is damaged ({str(e)[:120]}); delete it and run `python -m serpent "
                               "susceptibilities RUN_DIR` again to recompute that checkpoint") from None
        if meta.get("format") != _FORMAT:
            raise SerpentError(f"{path}: not a serpent susceptibility file (format {meta.get('format')!r}); "
                               "recompute it with `python -m serpent susceptibilities RUN_DIR`")
        f32, i64 = (lambda x: x.astype(np.float32, copy=False)), (lambda x: x.astype(np.int64, copy=False))
        return cls(step=int(meta["step"]), components=json.loads(meta["components"]), chi=f32(a["chi"]),
                   chi_se=f32(a["chi_se"]), probe_tokens=i64(a["probe_tokens"]), seq_index=i64(a["seq_index"]),
                   position=i64(a["position"]), doc_names=json.loads(meta["doc_names"]),
                   settings=json.loads(meta["settings"]))


def combine_components(parts: Sequence[SusceptibilityResult]) -> SusceptibilityResult:
    """One result from results for disjoint sets of components at the same checkpoint and probe (each sampled with
    its own unrestricted chains, from the same seeds): what one run over all the components gives, up to float
    rounding. Columns in the order of ``parts``; per-component settings (φ means, drift, ...) merged.

    >>> z = np.zeros((2, 1), np.float32); tok = np.zeros((1, 3), np.int64)
    >>> a = SusceptibilityResult(0, ["0:0"], z, z, tok, np.zeros(2, np.int64), np.arange(1, 3), ["d"],
    ...                          {"init_loss": 1.0, "drift": {"full": 0.1, "0:0": 0.2}, "replicas": 4})
    >>> b = SusceptibilityResult(0, ["0:1"], z + 1, z, tok, np.zeros(2, np.int64), np.arange(1, 3), ["d"],
    ...                          {"init_loss": 1.0, "drift": {"full": 0.1, "0:1": 0.3}, "replicas": 4})
    >>> r = combine_components([a, b]); r.components, r.chi[:, 1].tolist(), r.settings["drift"]
    (['0:0', '0:1'], [1.0, 1.0], {'full': 0.1, '0:0': 0.2, '0:1': 0.3})
    """
    parts = list(parts)
    if not parts:
        raise ConfigError("combine_components: no results to combine")
    first = parts[0]
    for p in parts[1:]:
        if (p.step != first.step or not np.array_equal(p.probe_tokens, first.probe_tokens)
                or p.settings.get("init_loss") != first.settings.get("init_loss")):
            raise ConfigError("combine_components: the parts come from different checkpoints, probes or minibatches")
    components = [c for p in parts for c in p.components]
    if len(set(components)) != len(components):
        raise ConfigError(f"combine_components: a component appears twice in {components}")
    settings = dict(first.settings)
    for p in parts[1:]:
        for k, v in p.settings.items():
            if isinstance(v, dict) and isinstance(settings.get(k), dict):
                settings[k] = {**settings[k], **v}
    settings["components"] = components
    if "replicas" in settings:      # what one run over every component would have batched
        settings["replicas"] = (len(components) + 1) * (settings.get("sampler") or {}).get("chains", 1)
    if "sampling_seconds" in settings:
        settings["sampling_seconds"] = max(p.settings.get("sampling_seconds", 0.0) for p in parts)
    return SusceptibilityResult(step=first.step, components=components,
                                chi=np.concatenate([p.chi for p in parts], axis=1),
                                chi_se=np.concatenate([p.chi_se for p in parts], axis=1),
                                probe_tokens=first.probe_tokens, seq_index=first.seq_index, position=first.position,
                                doc_names=first.doc_names, settings=settings)


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
    >>> m = response_matrix(r, np.array(["a", "b", "a"]))
    >>> list(m.columns), m.to_numpy().tolist(), m.attrs["counts"]
    (['a', 'b'], [[3.0, 3.0], [4.0, 4.0]], {'a': 2, 'b': 1})
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
    from .sgld import Restriction, draw_drift, make_restriction, run_sgld

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
                   init_loss_batches=init_loss_batches, record_traces=True, device=device, progress=progress)
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
        # how far each restriction's minibatch loss still moves over the draws (0: a plateau). With devinterp's
        # recipe (no burn-in, a few dozen draws) the chains are still climbing: the estimator is defined on that
        # trajectory, so this is recorded for the reader, not used to reject a result
        "drift": {r.name: draw_drift(t, res.init_loss, cfg)
                  for r, t in zip(restrictions, res.by_restriction(res.traces))},
        "sampling_seconds": round(seconds, 3),
    }
    return chi, se, info


# ----------------------------------------------------------------------------------------------------------------
# Transformers (ours, or a TransformerLens 4 TransformerBridge)
# ----------------------------------------------------------------------------------------------------------------

def component_specs(model, components="heads") -> list[str]:
    """Component names for a hooked transformer: ``"heads"`` (every ``"L:H"``), ``"heads+mlp"`` (then every
    ``"mlp:L"``), or an explicit list of specs (checked against the model)."""
    c = model.cfg
    heads = [f"{l}:{h}" for l in range(c.n_layers) for h in range(c.n_heads)]
    if components == "heads":
        return heads
    if components == "heads+mlp":
        if c.attn_only:
            raise ConfigError("components='heads+mlp' but the model is attention-only; use 'heads'")
        return heads + [f"mlp:{l}" for l in range(c.n_layers)]
    if isinstance(components, str) or not all(isinstance(x, str) for x in components):
        raise ConfigError(f"components: got {components!r}; allowed: 'heads', 'heads+mlp' or a list such as "
                          "['0:1', '1:6', 'mlp:0']")
    from .sgld import make_restriction
    params = _tl_views(model) or dict(model.named_parameters())
    for spec in components:
        make_restriction(spec, params, c.n_heads)         # raises ConfigError listing the valid choices
    return list(components)


def _tl_views(model) -> dict | None:
    """A TransformerLens 4 ``TransformerBridge``'s parameters in TransformerLens' layout (views of its Hugging Face
    parameters), or None for a model that stores them under TransformerLens' names itself."""
    if not callable(getattr(type(model), "tl_parameters", None)):
        return None
    return {k: v.detach() for k, v in model.tl_parameters().items()}


def _generic_loss_fn(model):
    from .sgld import module_loss_fn

    def ce(logits, tokens):               # (B, T, V), (B, T) -> (B, T-1)
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        return -lp.gather(-1, tokens[:, 1:, None]).squeeze(-1)

    return module_loss_fn(model, ce, vmapped=_tl_views(model) is None)


def _check_tokens(tokens, what: str, n_ctx: int, d_vocab: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 2 or t.dtype.is_floating_point:
        raise ConfigError(f"{what}: expected integer token ids of shape (sequences, length >= 2); got "
                          f"{tuple(t.shape)} {t.dtype}")
    if t.shape[1] > n_ctx:
        raise ConfigError(f"{what}: sequences of {t.shape[1]} tokens are longer than the model's context "
                          f"n_ctx={n_ctx}; use sequences of at most {n_ctx} tokens (susceptibility.probe_length)")
    if int(t.min()) < 0 or int(t.max()) >= d_vocab:
        raise ConfigError(f"{what}: token ids must lie in [0, {d_vocab}); got [{int(t.min())}, {int(t.max())}] "
                          "(tokenizer and model vocabulary differ?)")
    return t.long()


def susceptibilities(model, probe_tokens, batches, cfg, *, task_tokens=None, components="heads",
                     doc_names: Sequence[str] | None = None, step: int = -1, baseline: str = "init_loss",
                     init_loss_batches: int = 4, device=None, progress: bool = True,
                     max_forward_tokens: int | None = None, forward: str = "auto",
                     settings: dict | None = None) -> SusceptibilityResult:
    """Per-token susceptibilities of a hooked transformer at its current weights.

    ``probe_tokens`` ``(S, L)``: fixed probe sequences (held-out text), every target token of every sequence is a row
    of the result. ``batches(i)`` ``-> (B, T)`` token ids: the SGLD minibatches (training distribution).
    ``cfg``: a :class:`~serpent.config.SamplerConfig`. ``task_tokens`` ``(S', L')``: the fixed sequences defining the
    sampling-task loss L (default: the probe sequences themselves; then the mean of χ over probe tokens is 0).
    ``components``: ``"heads"``, ``"heads+mlp"`` or a list of specs (``"1:6"``, ``"mlp:0"``, a parameter name).
    Our model (:func:`serpent.model.build_model`) runs the fast stacked forward; a TransformerLens 4
    ``TransformerBridge`` (Pythia, GPT-2...) the generic ``torch.func`` path (``forward="generic"`` forces it).
    ``max_forward_tokens`` bounds replicas × sequences × length of one observation
    forward (default 2^20 on a GPU, 2^15 on the CPU).
    """
    from .device import default_device
    from .sgld import transformer_loss_fn

    device = default_device(device)
    c = model.cfg
    probe = _check_tokens(probe_tokens, "probe_tokens", c.n_ctx, c.d_vocab)
    task = probe if task_tokens is None else _check_tokens(task_tokens, "task_tokens", c.n_ctx, c.d_vocab)
    S, L = probe.shape
    if doc_names is not None and len(doc_names) != S:
        raise ConfigError(f"doc_names: got {len(doc_names)} names for {S} probe sequences")
    specs = component_specs(model, components)
    if forward not in ("auto", "fast", "generic"):
        raise ConfigError(f"forward: got {forward!r}; allowed: 'auto', 'fast', 'generic'")
    from .model import fast_model_config
    fast_cfg = fast_model_config(model) if forward != "generic" else None
    if forward == "fast" and fast_cfg is None:
        raise ConfigError("forward='fast' but this model is not of serpent's architecture family; use 'auto'")
    params = {k: v.detach() for k, v in model.named_parameters()}
    if fast_cfg is not None:
        loss_fn = transformer_loss_fn(fast_cfg)
    else:
        if next(model.parameters()).device != device:
            try:
                model = model.to(device, print_details=False)
            except TypeError:
                model = model.to(device)
        params = {k: v.detach() for k, v in model.named_parameters()}
        loss_fn = _generic_loss_fn(model)
    R = (len(specs) + 1) * cfg.chains
    budget = max_forward_tokens or (2 ** 20 if device.type == "cuda" else 2 ** 15)
    same = task_tokens is None
    groups = [probe.to(device)] if same else [probe.to(device), task.to(device)]

    def losses_of(p, tokens) -> torch.Tensor:          # (r, n, len-1) in chunks of sequences
        r = next(iter(p.values())).shape[0]
        chunk = max(1, budget // (r * tokens.shape[1]))
        return torch.cat([loss_fn(p, tokens[i:i + chunk]).float() for i in range(0, tokens.shape[0], chunk)], 1)

    def observe(p):
        probe_l = losses_of(p, groups[0])
        task_l = probe_l if same else losses_of(p, groups[1])
        r = probe_l.shape[0]
        return task_l.reshape(r, -1).mean(1), probe_l.reshape(r, -1)

    restrictions = specs
    if fast_cfg is None and _tl_views(model) is not None:     # a bridge: specs read in TL's layout, pulled back
        from .sgld import pulled_back_restriction
        restrictions = [pulled_back_restriction(model, s) for s in specs]
    chi, se, info = sample_susceptibilities(loss_fn, params, batches, cfg, restrictions, observe, baseline=baseline,
                                            init_loss_batches=init_loss_batches, device=device, progress=progress)
    seq_index = np.repeat(np.arange(S, dtype=np.int64), L - 1)
    position = np.tile(np.arange(1, L, dtype=np.int64), S)
    from .device import describe_device
    all_settings = {"sampler": cfg.to_dict(), "probe_sequences": S, "probe_length": L,
                    "task": "probe" if same else {"sequences": int(task.shape[0]), "length": int(task.shape[1])},
                    "forward": "fast" if fast_cfg is not None else "generic", "device": describe_device(device),
                    "sign_convention": SIGN_CONVENTION, "replicas": R, **info, **(settings or {})}
    return SusceptibilityResult(step=int(step), components=specs, chi=chi, chi_se=se,
                                probe_tokens=probe.cpu().numpy().astype(np.int64), seq_index=seq_index,
                                position=position, doc_names=list(doc_names) if doc_names is not None else
                                [f"probe_{i}" for i in range(S)], settings=all_settings)
