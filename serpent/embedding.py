"""Embeddings: UMAP of the per-token susceptibility vectors at every checkpoint, aligned across checkpoints.

Each probed token (x, y) has a vector η_xy ∈ ℝ^C of susceptibilities, one per component (16 heads). At every
checkpoint the vectors are pre-processed (:func:`preprocess`), projected to 2-D with UMAP, and the 2-D maps of
successive checkpoints are aligned so that the same token moves smoothly from one checkpoint to the next.

Design choices (the papers do not publish their pre-processing or UMAP settings):

* **Pre-processing** (``EmbeddingConfig.preprocess``), per checkpoint, because χ's scale changes by orders of
  magnitude over training: ``raw``; ``center`` (every component centred over tokens: the papers' "standardized
  susceptibility"); ``standardize`` (z-score every component across tokens, so that every head weighs the same and
  the map is not dominated by the one or two heads with the largest χ); ``normalize`` (unit rows: direction only,
  the magnitude axis is lost); ``whiten`` (the default: PCA whitening, decorrelated unit-variance axes). One
  direction, each token's mean χ, holds 95-99 % of the standardised χ's variance at every checkpoint, initialisation
  included (:mod:`serpent.anatomy`), so UMAP of standardised χ draws a thin curve whatever the model has learnt;
  whitening gives the other fifteen directions, where development happens, their say. Chosen by a number, not by
  eye: on the book's run it gives the highest cross-token purity of the patterns in the picture at the last
  checkpoint of the five pre-processings, UMAP, PCA and t-SNE (0.15 against 0.09 for standardised χ;
  ``bench/anatomy_robustness.py``, the computed page).
* **UMAP** 15 neighbours, min_dist 0.1, euclidean, fixed ``random_state`` (single-threaded, reproducible bit for bit
  on one machine).
* **Alignment** ``"warm"`` (the default when ``EmbeddingConfig.aligned``): checkpoints are fitted in training order,
  each UMAP initialised from the previous checkpoint's aligned map (tokens matched by (sequence, position)), then
  Procrustes-aligned (rotation/reflection, shift, and a scale that keeps the spread) to it. It costs what
  independent fits cost and moves tokens 4–5× less between checkpoints; umap-learn's ``AlignedUMAP`` moves them a
  little less again at 2.6–6× the time (``bench/umap_alignment.py``, BENCHMARKS.md) and is available as
  ``alignment="aligned_umap"`` for small inputs. ``"procrustes"`` fits every checkpoint
  independently (spectral init) and only rotates/scales it onto the previous one; ``"none"`` does nothing.
* **Separation** (:func:`separation`): chance-corrected k-nearest-neighbour purity of the pattern labels,
  (P − E)/(1 − E), where P is the mean fraction of a token's k neighbours that share its pattern and E the same
  fraction expected if patterns were assigned at random (Σ_c n_c(n_c−1)/(N(N−1))). 0 = no structure, 1 = patterns
  perfectly separated. Computed in the 2-D map ("how handsome is the serpent") and in the standardised C-dim space
  (independent of UMAP's randomness); :func:`pattern_separation` gives one number per pattern (e.g. induction).
* **The headline is cross-token** (``groups=token ids``): a token's neighbours that are *the same token* (the same
  id elsewhere in the probe text) are skipped, and chance is counted over pairs of different tokens. Most patterns
  are almost functions of the token id (every ``Ġ`` is spacing), and even a randomly initialised network gives
  copies of one token similar χ vectors, so plain purity is high at step 0 for a reason that has nothing to do with
  learning. Cross-token purity asks the question the serpent is about: do *different* tokens of one pattern respond
  alike? It is ≈ 0 at initialisation. :func:`cross_token_null` gives its spread when patterns mean nothing (a
  token-level permutation), so a value can be read against noise. On the tiny run (BENCHMARKS.md) it rises from
  −0.01 to 0.02 while plain purity peaks in the first steps and falls back; 0.02 is about one null standard
  deviation: the tiny run has little pattern structure beyond token identity.

The ``serpent`` stage (:mod:`serpent.stages.serpent`) chains it all on a run directory: labels
(:mod:`serpent.patterns`) → embedding → separation → one PNG per checkpoint (:mod:`serpent.charts.serpent`) → the
explorer page (:mod:`serpent.explorer`).

>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 4)) * [1, 10, 100, 1000]
>>> np.round(preprocess(X, "standardize").std(0), 6).tolist()
[1.0, 1.0, 1.0, 1.0]
>>> labels = np.repeat(["a", "b"], 100)
>>> pts = np.where(labels[:, None] == "a", 0.0, 10.0) + rng.normal(size=(200, 2))
>>> round(separation(pts, labels), 2), abs(separation(rng.normal(size=(200, 2)), labels)) < 0.2
(1.0, True)
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .config import EmbeddingConfig
from .errors import ConfigError, SerpentError

__all__ = ["PREPROCESS", "ALIGNMENTS", "HEADLINE", "MEASURES", "preprocess", "umap_2d", "procrustes_align",
           "embed_checkpoints", "separation", "cross_token_null", "pattern_separation", "separation_table",
           "procrustes_r", "compare_serpents", "serpent_frame"]

PREPROCESS = ("raw", "center", "standardize", "normalize", "whiten")
ALIGNMENTS = ("warm", "procrustes", "aligned_umap", "none")
HEADLINE = "cross_token"
MEASURES = {
    "map": "chance-corrected kNN purity of patterns (k=15) in the 2-D map",
    "features": "chance-corrected kNN purity of patterns (k=15) in the standardised susceptibility space (every head "
                "z-scored over tokens, whatever the picture's pre-processing)",
    "cross_token": "as features, but neighbours that are the same token are skipped and chance is counted over "
                   "pairs of different tokens (the headline: do different tokens of one pattern lie together?)",
    "cross_token_map": "as cross_token, in the 2-D map",
    "cross_token_null_mean": "cross_token when every token takes the pattern of a random other token (50 times)",
    "cross_token_null_sd": "its standard deviation: cross_token is more than noise when it exceeds the null mean "
                           "by a few of these",
    "silhouette": "scikit-learn silhouette of the patterns in the 2-D map",
    "by_pattern": "chance-corrected kNN purity of each pattern alone in the 2-D map",
    "by_pattern_cross_token": "cross-token purity of each pattern alone in the standardised susceptibility space "
                              "(e.g. do induction tokens lie with other induction tokens?)",
    "by_pattern_cross_token_null": "per pattern, [mean, sd] of by_pattern_cross_token when the patterns are "
                                   "shuffled over the points (50 times; each pattern keeps its count)",
}


# ----------------------------------------------------------------------------------------------------------------
# Pre-processing and UMAP
# ----------------------------------------------------------------------------------------------------------------

def preprocess(chi: np.ndarray, method: str = "standardize") -> np.ndarray:
    """Pre-process susceptibility vectors ``(N, C)`` → ``(N, C')`` float64 before UMAP (see module docstring).

    Constant columns stay zero under ``standardize``; ``whiten`` drops directions of (numerically) zero variance.

    >>> preprocess(np.array([[3.0, 4.0], [0.0, 2.0]]), "normalize").tolist()
    [[0.6, 0.8], [0.0, 1.0]]
    """
    X = np.asarray(chi, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise SerpentError(f"preprocess needs an (N, C) array with N >= 2 tokens, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise SerpentError(f"{int((~np.isfinite(X)).sum())} non-finite susceptibilities; the SGLD run diverged: "
                           "recompute the susceptibility stage with a smaller epsilon or a larger gamma")
    if method == "raw":
        return X.copy()
    if method == "center":   # the papers' "standardized susceptibility": every component centred over tokens
        return X - X.mean(axis=0)
    if method == "standardize":
        sd = X.std(axis=0)
        return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if method == "normalize":
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norm > 0, norm, 1.0)
    if method == "whiten":
        Xc = X - X.mean(axis=0)
        u, s, vt = np.linalg.svd(Xc, full_matrices=False)
        keep = s > s.max() * 1e-9 if s.size and s.max() > 0 else np.zeros_like(s, dtype=bool)
        if not keep.any():
            return np.zeros((X.shape[0], 1))
        return u[:, keep] * np.sqrt(X.shape[0] - 1)
    raise ConfigError(f"embedding.preprocess: got {method!r}; allowed: {list(PREPROCESS)}")


def _umap_kwargs(cfg: EmbeddingConfig, n: int) -> dict:
    return dict(n_components=2, n_neighbors=min(cfg.n_neighbors, max(2, n - 1)), min_dist=cfg.min_dist,
                metric=cfg.metric, random_state=cfg.seed)


def umap_2d(X: np.ndarray, cfg: EmbeddingConfig = EmbeddingConfig(), init: Optional[np.ndarray] = None) -> np.ndarray:
    """UMAP of ``(N, D)`` → ``(N, 2)`` float32 with the settings of ``cfg`` (seeded); ``init`` an optional start."""
    import umap  # numba JIT: ~15 s on first import, 10-35 s on the first fit of a process
    X = np.asarray(X, dtype=np.float32)
    if len(X) < 4:
        raise SerpentError(f"UMAP needs at least 4 tokens, got {len(X)}; probe more sequences")
    kw = _umap_kwargs(cfg, len(X))
    if init is not None:
        kw["init"] = np.asarray(init, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message=".*initial embedding.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return umap.UMAP(**kw).fit_transform(X).astype(np.float32)


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shift_src, M, shift_dst) with ``(Y - shift_src) @ M + shift_dst`` mapping ``src`` onto ``dst``.

    M = R·s: R the orthogonal Procrustes rotation/reflection, s the ratio of the two point clouds' RMS spreads
    (not the least-squares scale, which shrinks towards 0 when the two maps are unrelated, e.g. a structureless
    early checkpoint followed by a structured one).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    ms, md = src.mean(0), dst.mean(0)
    A, B = src - ms, dst - md
    u, _, vt = np.linalg.svd(A.T @ B)
    na, nb = np.sqrt((A ** 2).sum()), np.sqrt((B ** 2).sum())
    scale = nb / na if na > 0 else 1.0
    return ms, (u @ vt) * scale, md


def procrustes_align(Y: np.ndarray, ref: np.ndarray, rows: Optional[np.ndarray] = None,
                     ref_rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Rotate/reflect, rescale and shift the map ``Y (N, 2)`` onto ``ref``; returns the whole transformed ``Y``.

    The transform is fitted on the matched rows ``Y[rows]`` ↔ ``ref[ref_rows]`` (default: all rows, in order) and
    applied to every row of ``Y``; the scale makes both clouds equally spread (see :func:`_similarity`).

    >>> ref = np.array([[0., 0.], [1., 0.], [0., 2.]])
    >>> rot = np.array([[0., -1.], [1., 0.]])
    >>> np.allclose(procrustes_align(3 * ref @ rot + 5, ref), ref)
    True
    """
    Y = np.asarray(Y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    src = Y if rows is None else Y[rows]
    dst = ref if ref_rows is None else ref[ref_rows]
    ms, M, md = _similarity(src, dst)
    return (Y - ms) @ M + md


def _as_chi(r: Any) -> np.ndarray:
    chi = r if isinstance(r, np.ndarray) else getattr(r, "chi", None)
    if chi is None:
        raise SerpentError(f"expected a SusceptibilityResult or an (N, C) array, got {type(r).__name__}")
    return np.asarray(chi)


def _keys_of(r: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(r, "seq_index") and hasattr(r, "position"):
        return np.asarray(r.seq_index, dtype=np.int64), np.asarray(r.position, dtype=np.int64)
    return np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64)


def _match(prev_keys: dict, seq: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the new step and of the previous step that are the same token (same sequence and position)."""
    cur, old = [], []
    for i, k in enumerate(zip(seq.tolist(), pos.tolist())):
        j = prev_keys.get(k)
        if j is not None:
            cur.append(i)
            old.append(j)
    return np.asarray(cur, dtype=np.int64), np.asarray(old, dtype=np.int64)


def embed_checkpoints(results_by_step: Mapping[int, Any], cfg: EmbeddingConfig = EmbeddingConfig(), *,
                      alignment: Optional[str] = None, progress: bool = True):
    """2-D maps of every checkpoint's susceptibility vectors, aligned across checkpoints: a tidy DataFrame.

    ``results_by_step`` maps a training step to a ``SusceptibilityResult`` (or anything with ``chi`` (N, C),
    ``seq_index`` and ``position``) or to a plain ``(N, C)`` array (rows then matched by index). Returns columns
    ``step, point, seq, pos, x, y`` (``point`` = row of that step's result). ``alignment`` defaults to ``"warm"``
    when ``cfg.aligned`` else ``"none"`` (see the module docstring).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not results_by_step:
        raise SerpentError("no susceptibility results to embed; run the susceptibility stage first")
    alignment = alignment or ("warm" if cfg.aligned else "none")
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"alignment: got {alignment!r}; allowed: {list(ALIGNMENTS)}")
    steps = sorted(int(s) for s in results_by_step)
    data = []
    for s in steps:
        r = results_by_step[s]
        chi = _as_chi(r)
        seq, pos = _keys_of(r, len(chi))
        data.append((s, preprocess(chi, cfg.preprocess), seq, pos))

    maps: list[np.ndarray] = []
    if alignment == "aligned_umap":
        maps = _aligned_umap(data, cfg)
    else:
        prev = None  # (map, keys dict)
        for s, X, seq, pos in tqdm(data, desc="UMAP per checkpoint", unit="ckpt", disable=not progress):
            init = None
            if prev is not None and alignment != "none":
                cur_i, old_i = _match(prev[1], seq, pos)
                if alignment == "warm" and len(cur_i) == len(seq):
                    init = np.empty((len(seq), 2), dtype=np.float32)
                    init[cur_i] = prev[0][old_i]
            Y = umap_2d(X, cfg, init=init)
            if prev is not None and alignment != "none":
                cur_i, old_i = _match(prev[1], seq, pos)
                if len(cur_i) >= 3:
                    Y = procrustes_align(Y, prev[0], cur_i, old_i)
            maps.append(Y.astype(np.float32))
            prev = (maps[-1], {k: i for i, k in enumerate(zip(seq.tolist(), pos.tolist()))})
    frames = []
    for (s, X, seq, pos), Y in zip(data, maps):
        frames.append(pd.DataFrame({"step": np.full(len(seq), s, dtype=np.int64),
                                    "point": np.arange(len(seq), dtype=np.int64), "seq": seq, "pos": pos,
                                    "x": Y[:, 0].astype(np.float32), "y": Y[:, 1].astype(np.float32)}))
    return pd.concat(frames, ignore_index=True)


def _aligned_umap(data, cfg: EmbeddingConfig) -> list[np.ndarray]:
    from umap import AlignedUMAP
    relations = []
    for (_, _, s0, p0), (_, _, s1, p1) in zip(data[:-1], data[1:]):
        keys0 = {k: i for i, k in enumerate(zip(s0.tolist(), p0.tolist()))}
        cur, old = _match(keys0, s1, p1)
        relations.append({int(o): int(c) for c, o in zip(cur, old)})
    kw = _umap_kwargs(cfg, min(len(d[1]) for d in data))
    kw.pop("n_components")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        fit = AlignedUMAP(**kw).fit([d[1].astype(np.float32) for d in data], relations=relations)
    return [np.asarray(e, dtype=np.float32) for e in fit.embeddings_]


# ----------------------------------------------------------------------------------------------------------------
# Separation of patterns
# ----------------------------------------------------------------------------------------------------------------

def _subsample(n: int, max_points: Optional[int], seed: int) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _neighbour_agreement(points: np.ndarray, labels: np.ndarray, k: int,
                         groups: Optional[np.ndarray] = None) -> np.ndarray:
    """Per point: the fraction of its k nearest neighbours with the same label (neighbours of the same group, when
    ``groups`` is given, are skipped; NaN for a point with no neighbour outside its group)."""
    k = min(k, len(points) - 1)
    if k < 1:
        raise SerpentError("separation needs at least 2 points")
    if groups is None:
        nbr = _knn_indices(points, k)
        return (labels[nbr] == labels[:, None]).mean(1)
    idx, first_k = _cross_group_neighbours(points, groups, k)
    return _agreement_from(idx, first_k, labels)


def _knn_indices(points: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` indices of every point's k nearest other points."""
    from sklearn.neighbors import NearestNeighbors
    n = len(points)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    # drop each point itself (normally column 0, but exact duplicates may come first); if a point is not among
    # its own k+1 neighbours (many duplicates), drop the farthest neighbour instead
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True
    return idx[~is_self].reshape(n, k)


def _knn_overlap(a: np.ndarray, b: np.ndarray, k: int, preprocess_method: str = "standardize") -> float:
    """Mean fraction of a row's ``k`` nearest rows in ``a`` that are also among its ``k`` nearest in ``b`` (both
    pre-processed with ``preprocess_method``); rows are the same tokens, columns need not correspond."""
    ia, ib = (_knn_indices(preprocess(m, preprocess_method), k) for m in (a, b))
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(ia, ib)]))


def _cross_group_neighbours(points: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour indices ``(n, m)`` and a mask of the first k of them outside the point's own group."""
    from sklearn.neighbors import NearestNeighbors
    n = len(points)
    # enough neighbours that k of them lie outside the point's own group (its group is at most `largest` points)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    m = min(n, k + int(counts.max()))
    _, idx = NearestNeighbors(n_neighbors=m).fit(points).kneighbors(points)
    other = inverse[idx] != inverse[:, None]                      # (n, m): neighbour from another group
    return idx, other & (np.cumsum(other, axis=1) <= k)


def _agreement_from(idx: np.ndarray, first_k: np.ndarray, labels: np.ndarray) -> np.ndarray:
    same = (labels[idx] == labels[:, None]) & first_k
    found = first_k.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(found > 0, same.sum(1) / found, np.nan)


def _corrected(agree: np.ndarray, chance: np.ndarray) -> float:
    """(P − E)/(1 − E) over the points that have neighbours (NaN when none has)."""
    ok = np.isfinite(agree)
    if not ok.any():
        return float("nan")
    E = float(np.nanmean(chance[ok]))
    return (float(agree[ok].mean()) - E) / (1.0 - E)


def _chance(lab: np.ndarray, groups: Optional[np.ndarray]) -> np.ndarray:
    """Per point: the probability that a random other point (from another group, when given) shares its label."""
    n = len(lab)
    _, li = np.unique(lab, return_inverse=True)
    n_lab = np.bincount(li)
    if groups is None:
        return (n_lab[li] - 1) / (n - 1)
    _, gi = np.unique(groups, return_inverse=True)
    n_grp = np.bincount(gi)
    pair = np.zeros((n_lab.size, n_grp.size))
    np.add.at(pair, (li, gi), 1)                                   # points per (label, group)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n_lab[li] - pair[li, gi]) / (n - n_grp[gi])


def separation(points: np.ndarray, labels: Sequence, *, k: int = 15, method: str = "knn",
               groups: Optional[Sequence] = None, max_points: Optional[int] = 10_000, seed: int = 0) -> float:
    """How well ``labels`` separate in ``points (N, D)``: chance-corrected kNN purity (default) or silhouette.

    ``knn``: (P − E)/(1 − E) (module docstring); 1 = perfectly separated, 0 = no better than chance. With
    ``groups`` (e.g. token ids) a point's neighbours from its own group are skipped and chance is counted over
    pairs from different groups: the *cross-token* separation, which asks whether different tokens of the same
    pattern lie together, not whether copies of one token do. ``silhouette``: scikit-learn's mean silhouette in
    [−1, 1]. At most ``max_points`` points (a seeded random subset) are used. NaN when there is only one label.

    >>> rng = np.random.default_rng(0)
    >>> tok = rng.integers(0, 200, 1500); lab = np.where(tok < 100, "a", "b")
    >>> by_token = rng.normal(size=(200, 5))[tok] * 3 + rng.normal(size=(1500, 5))  # each token its own spot
    >>> separation(by_token, lab) > 0.3, abs(separation(by_token, lab, groups=tok)) < 0.06
    (True, True)
    """
    pts = np.asarray(points, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    if pts.ndim != 2 or len(pts) != len(lab):
        raise SerpentError(f"points {pts.shape} and labels ({len(lab)},) do not match; pass (N, D) and (N,)")
    grp = None if groups is None else np.asarray(groups)
    if grp is not None and len(grp) != len(lab):
        raise SerpentError(f"groups ({len(grp)},) and labels ({len(lab)},) do not match; pass one group per point")
    idx = _subsample(len(pts), max_points, seed)
    pts, lab = pts[idx], lab[idx]
    grp = None if grp is None else grp[idx]
    uniq = np.unique(lab)
    if len(uniq) < 2:
        return float("nan")
    if method == "silhouette":
        from sklearn.metrics import silhouette_score
        return float(silhouette_score(pts, lab))
    if method != "knn":
        raise ConfigError(f"separation method: got {method!r}; allowed: 'knn', 'silhouette'")
    return _corrected(_neighbour_agreement(pts, lab, k, grp), _chance(lab, grp))


def cross_token_null(points: np.ndarray, labels: Sequence, groups: Sequence, *, k: int = 15, n_perm: int = 50,
                     max_points: Optional[int] = 10_000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the cross-token separation when patterns carry no information: every distinct
    token takes the pattern of another token at random (a token-level permutation), ``n_perm`` times.

    The observed value minus the mean, over the standard deviation, says whether a cross-token separation is more
    than noise (a token's pattern here is that of its first occurrence, so context-dependent labels such as
    induction are spread over whole tokens under the null).

    >>> rng = np.random.default_rng(0)
    >>> tok = rng.integers(0, 200, 1500); lab = np.where(tok < 100, "a", "b")
    >>> X = rng.normal(size=(200, 5))[tok] * 3 + rng.normal(size=(1500, 5))
    >>> mean, sd = cross_token_null(X, lab, tok)
    >>> abs(separation(X, lab, groups=tok) - mean) < 3 * sd
    True
    """
    return _cross_token(points, labels, groups, k=k, n_perm=n_perm, max_points=max_points, seed=seed)[1:3]


def _cross_token(points, labels, groups, *, k: int, n_perm: int, max_points: Optional[int],
                 seed: int) -> tuple[float, float, float, dict[str, float], dict[str, list[float]]]:
    """The cross-token separation, its null's mean and standard deviation, the cross-token separation of each
    pattern alone (as :func:`pattern_separation` with ``groups``) and each pattern's null ``[mean, sd]``, all from
    one neighbour search."""
    pts = np.asarray(points, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    grp = np.asarray(groups)
    if len(pts) != len(lab) or len(grp) != len(lab):
        raise SerpentError(f"points ({len(pts)}), labels ({len(lab)}) and groups ({len(grp)}) must match")
    idx = _subsample(len(pts), max_points, seed)
    pts, lab, grp = pts[idx], lab[idx], grp[idx]
    uniq, first, inverse = np.unique(grp, return_index=True, return_inverse=True)
    if len(uniq) < 2 or len(np.unique(lab)) < 2:
        return (float("nan"), float("nan"), float("nan"), {str(c): float("nan") for c in np.unique(lab)},
                {str(c): [float("nan"), float("nan")] for c in np.unique(lab)})
    nbr, first_k = _cross_group_neighbours(pts, grp, min(k, len(pts) - 1))
    agree, chance = _agreement_from(nbr, first_k, lab), _chance(lab, grp)
    observed, by_label = _corrected(agree, chance), _per_label(agree, chance, lab)
    token_label = lab[first]
    rng = np.random.default_rng(seed)
    values, per_label = [], {c: [] for c in by_label}
    rng_points = np.random.default_rng([seed, 1])        # its own stream: the token-level null stays as it was
    for _ in range(n_perm):
        lab2 = token_label[rng.permutation(len(uniq))][inverse]
        if len(np.unique(lab2)) > 1:
            values.append(_corrected(_agreement_from(nbr, first_k, lab2), _chance(lab2, grp)))
        # each pattern's own null shuffles the labels over points: a context-dependent pattern such as induction
        # (never a token's first occurrence) keeps its count, and loses any relation to where its points lie
        lab3 = lab[rng_points.permutation(len(lab))]
        for c, v in _per_label(_agreement_from(nbr, first_k, lab3), _chance(lab3, grp), lab3).items():
            if c in per_label and np.isfinite(v):
                per_label[c].append(v)
    values = [v for v in values if np.isfinite(v)]
    null_by_label = {c: ([float(np.mean(v)), float(np.std(v, ddof=1))] if len(v) > 1 else [float("nan")] * 2)
                     for c, v in per_label.items()}
    if len(values) < 2:
        return observed, float("nan"), float("nan"), by_label, null_by_label
    return observed, float(np.mean(values)), float(np.std(values, ddof=1)), by_label, null_by_label


def pattern_separation(points: np.ndarray, labels: Sequence, *, k: int = 15, groups: Optional[Sequence] = None,
                       max_points: Optional[int] = 10_000, seed: int = 0) -> dict[str, float]:
    """Chance-corrected kNN purity of each label alone: (P_c − e_c)/(1 − e_c), e_c = (n_c − 1)/(N − 1)
    (``groups``: neighbours from the point's own group skipped, as in :func:`separation`).

    >>> rng = np.random.default_rng(1)
    >>> lab = np.array(["x"] * 50 + ["y"] * 150)
    >>> pts = rng.normal(size=(200, 2)); pts[:50] += 20
    >>> {k: round(v, 2) for k, v in pattern_separation(pts, lab).items()}
    {'x': 1.0, 'y': 1.0}
    """
    pts = np.asarray(points, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    idx = _subsample(len(pts), max_points, seed)
    pts, lab = pts[idx], lab[idx]
    grp = None if groups is None else np.asarray(groups)[idx]
    return _per_label(_neighbour_agreement(pts, lab, k, grp), _chance(lab, grp), lab)


def _per_label(agree: np.ndarray, chance: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    """(P_c − e_c)/(1 − e_c) for every label c, over its points that have neighbours."""
    out = {}
    for c in np.unique(lab):
        m = (lab == c) & np.isfinite(agree)
        if not m.any():
            out[str(c)] = float("nan")
            continue
        e = float(np.nanmean(chance[m]))
        out[str(c)] = float((agree[m].mean() - e) / (1 - e)) if e < 1 else float("nan")
    return out


def separation_table(embedding, labels_by_point, features_by_step: Optional[Mapping[int, np.ndarray]] = None, *,
                     k: int = 15, seed: int = 0, progress: bool = False) -> dict:
    """Separation per step: ``{step: {"map", "cross_token_map", "features", "cross_token", "silhouette",
    "by_pattern", "by_pattern_cross_token"}}`` (see :data:`MEASURES`).

    ``embedding`` is the frame of :func:`embed_checkpoints`; ``labels_by_point`` maps ``(step, point)`` rows to a
    pattern: a frame with columns ``step, point, pattern`` (and ``token_id``, which adds the cross-token values).
    ``map``/``by_pattern`` are measured in the 2-D map; ``features_by_step`` (the pre-processed vectors) adds
    ``features`` and ``cross_token`` (:data:`HEADLINE`), measured in the full susceptibility space.
    """
    cols = ["step", "point", "pattern"] + (["token_id"] if "token_id" in labels_by_point else [])
    merged = embedding.merge(labels_by_point[cols], on=["step", "point"], how="left")
    if merged["pattern"].isna().any():
        raise SerpentError("some embedded points have no pattern label; label the same results you embedded")
    from tqdm.auto import tqdm
    out = {}
    groups = merged.groupby("step", sort=True)
    for s, g in tqdm(groups, total=groups.ngroups, desc="separation", unit="ckpt", disable=not progress):
        pts = g[["x", "y"]].to_numpy()
        lab = g["pattern"].astype(str).to_numpy()
        tok = g["token_id"].to_numpy() if "token_id" in g else None
        row = {"map": separation(pts, lab, k=k, seed=seed),
               "silhouette": separation(pts, lab, method="silhouette", max_points=4000, seed=seed),
               "by_pattern": pattern_separation(pts, lab, k=k, seed=seed)}
        if tok is not None:
            row["cross_token_map"] = separation(pts, lab, k=k, groups=tok, seed=seed)
        if features_by_step is not None and int(s) in features_by_step:
            feats = np.asarray(features_by_step[int(s)])[g["point"].to_numpy()]
            row["features"] = separation(feats, lab, k=k, seed=seed)
            if tok is not None:
                (row["cross_token"], row["cross_token_null_mean"], row["cross_token_null_sd"],
                 row["by_pattern_cross_token"], row["by_pattern_cross_token_null"]) = _cross_token(feats, lab, tok, k=k, n_perm=50, max_points=10_000,
                                                               seed=seed)
        out[int(s)] = row
    return out


def procrustes_r(Y: np.ndarray, ref: np.ndarray) -> float:
    """Procrustes correlation of two matched point clouds: tr Σ / (‖Y − Ȳ‖ ‖ref − r̄‖), Σ the singular values of
    (Y − Ȳ)ᵀ(ref − r̄). 1 when ``Y`` is ``ref`` rotated/reflected, scaled and shifted; near 0 for unrelated clouds.

    >>> ref = np.random.default_rng(0).normal(size=(100, 2))
    >>> other = np.random.default_rng(1).normal(size=(100, 2))
    >>> round(procrustes_r(-2 * ref[:, ::-1] + 7, ref), 6), procrustes_r(other, ref) < 0.3
    (1.0, True)
    """
    A = np.asarray(Y, dtype=np.float64)
    B = np.asarray(ref, dtype=np.float64)
    A, B = A - A.mean(0), B - B.mean(0)
    na, nb = np.sqrt((A ** 2).sum()), np.sqrt((B ** 2).sum())
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.linalg.svd(A.T @ B, compute_uv=False).sum() / (na * nb))


def compare_serpents(frame_a, frame_b, *, k: int = 15, preprocess_method: str = "standardize",
                     max_points: Optional[int] = 10_000, seed: int = 0):
    """How alike two serpents are (two training seeds, say) at their matched checkpoints: one row per common step.

    ``frame_a``/``frame_b``: serpent frames (``serpent/embedding.parquet``) of two runs that probed the same tokens
    (same corpus and probe settings, or the second made with ``susceptibility.probe_from`` the first and its
    tokenizer); tokens are matched by (sequence, position), and must be the same ids.
    Columns: ``step``, ``tokens`` (matched), ``procrustes_r`` (:func:`procrustes_r` of the 2-D maps: the serpents'
    shapes after aligning one onto the other), ``knn_overlap`` (mean fraction of a token's k nearest neighbours in
    run A's pre-processed susceptibility space that are also among its k nearest in run B's: independent of UMAP,
    and of the order of the heads, which two seeds need not share) and ``knn_chance`` (its value for unrelated
    runs, k/(n−1)).
    """
    import pandas as pd

    heads_a = [c for c in frame_a.columns if ":" in str(c)]
    heads_b = [c for c in frame_b.columns if ":" in str(c)]
    common = sorted(set(frame_a["step"]) & set(frame_b["step"]))
    if not common:
        raise SerpentError(f"the two serpents share no checkpoint (steps {sorted(set(frame_a['step']))} and "
                           f"{sorted(set(frame_b['step']))}); compare runs trained with the same checkpoint schedule")
    rows = []
    for s in common:
        a = frame_a[frame_a["step"] == s]
        b = frame_b[frame_b["step"] == s]
        m = a.merge(b, on=["seq", "pos"], suffixes=("_a", "_b"))
        if len(m) < k + 2:
            raise SerpentError(f"step {s}: only {len(m)} tokens are probed in both runs; the runs must use the same "
                               "probe windows (same corpus, probe_sequences, probe_length and probe_seed, or "
                               "susceptibility.probe_from the other run)")
        if (m["token_id_a"].to_numpy() != m["token_id_b"].to_numpy()).any():
            raise SerpentError(f"step {s}: the two runs probed different tokens at the same positions; compare runs "
                               "made from the same corpus and tokenizer with the same probe settings, or make the "
                               "second with data.tokenizer=file:FIRST/tokenizer and susceptibility.probe_from=FIRST")
        if max_points is not None and len(m) > max_points:
            m = m.iloc[np.sort(np.random.default_rng(seed).choice(len(m), max_points, replace=False))]
        n = len(m)
        kk = min(k, n - 1)
        chi_a, chi_b = (m[[h + suffix if h + suffix in m else h for h in heads]].to_numpy(dtype=np.float64)
                        for heads, suffix in ((heads_a, "_a"), (heads_b, "_b")))
        overlap = _knn_overlap(chi_a, chi_b, kk, preprocess_method)
        rows.append({"step": int(s), "tokens": n,
                     "procrustes_r": procrustes_r(m[["x_a", "y_a"]].to_numpy(), m[["x_b", "y_b"]].to_numpy()),
                     "knn_overlap": float(overlap), "knn_chance": kk / (n - 1)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------

def serpent_frame(embedding, labels):
    """The serpent frame: the maps of :func:`embed_checkpoints` (``step, point, x, y``) joined with the token
    labels and χ columns of :func:`serpent.patterns.label_results`, one row per token and checkpoint (what
    ``serpent/embedding.parquet`` holds and every chart, the explorer and the widgets read)."""
    frame = embedding[["step", "point", "x", "y"]].merge(labels, on=["step", "point"], how="left")
    first = ["step", "point", "seq", "pos", "x", "y"]
    return frame[first + [c for c in frame.columns if c not in first]]
