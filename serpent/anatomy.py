"""The serpent's body plan, measured: why the adult is handsome and the baby is not.

The papers describe the mature serpent by its anatomy: an **anterior–posterior axis** (the long axis, "global
expression versus suppression across heads"), a **dorsal–ventral stratification** (a short axis that "thickens as
an induction circuit emerges") and a **spacing fin** (spacing tokens ordered by the spaces before them). This module
turns each into numbers, per checkpoint, from the ``(N tokens, C heads)`` susceptibilities χ and the tokens'
patterns (:mod:`serpent.patterns`); nothing here draws or reads a run directory.

All measures work on the pre-processed χ (:func:`serpent.embedding.preprocess`, :data:`ANATOMY_PREPROCESS` =
``standardize``: every head z-scored over tokens, so that no head dominates by its scale; fixed, whatever view the
serpent's picture uses, since whitening or unit rows would erase the very variance shares measured here):

* **Body axes** (:func:`body_axes`): PCA. PC1 is oriented so that it correlates positively with each token's mean
  (pre-processed) χ, PC2 so that the induction tokens lie on its negative side ("below the body").
* **Anterior–posterior axis**: PC1's share of the variance, its correlation with the token's mean χ, and the
  *uniformity* of its loadings (the share of heads whose loading has the majority's sign: 1 means every head
  expresses or suppresses a token together, a global mode).
* **Dorsal–ventral stratification**: PC2's share, the body's *thickness* ``sd(PC2) / sd(PC1)``, the heads that
  load most on PC2, and how well PC2 separates the induction tokens from the rest (the area under the ROC curve,
  read against a null in which the same number of tokens is picked at random). *Thickening* is the thickness
  divided by the smallest thickness of the checkpoints up to it (:func:`anatomy_table`): the body first thins (the
  random network's second direction fades in the first steps of training), then thickens as the circuit forms.
  It is the papers' "PC2 thickening statistic" in a form we can compute (their exact definition is not public).
* **Pattern read-out**: how well a token's pattern can be recovered from its 16 numbers, by a cross-validated
  linear classifier (linear discriminant analysis with shrinkage: as accurate here as logistic regression, 0.50
  against 0.51 at the book run's last checkpoint, and twenty times faster), against the majority class and against
  the same classifier on shuffled labels;
  also across tokens (folds grouped by token id, so that a token's copies never sit on both sides of a fold: the
  classifier cannot succeed by recognising the token itself).
* **Spacing fin**: among spacing tokens, the rank correlation between the number of spaces before the token and
  its cross-validated linear read-out from χ, against shuffled counts. The papers' fin is said not to show in the
  first three PCs, so the read-out uses all 16 numbers.

Uncertainty: a bootstrap over tokens for the PCA and separation numbers (``bootstrap``), nulls by permutation
(``null``), and, where two SGLD seeds were sampled, :func:`seed_agreement` (per-token agreement and a split R-hat).

>>> rng = np.random.default_rng(0)
>>> n = 600; body = rng.normal(size=n); lab = np.where(np.arange(n) < 100, "induction", "word start")
>>> second = np.where(lab == "induction", -2.0, 0.4) + 0.3 * rng.normal(size=n)
>>> mix = np.outer(body, np.ones(16)) + np.outer(second, np.r_[np.ones(8), -np.ones(8)]) / 4
>>> chi = mix + 0.05 * rng.normal(size=(n, 16))
>>> a = checkpoint_anatomy(chi, lab, seed=0, bootstrap=0, null=20, classifier=False)
>>> a["pc1_share"] > 0.8, a["induction_auc_pc2"] > 0.95, a["pc2_top_heads"][0] in [f"0:{h}" for h in range(8)] + [f"1:{h}" for h in range(8)]
(True, True, True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from .embedding import preprocess
from .errors import SerpentError

__all__ = ["ANATOMY_PREPROCESS", "BodyAxes", "body_axes", "body_axes_frame", "auc", "checkpoint_anatomy", "anatomy_table", "seed_agreement",
           "training_seed_agreement", "pattern_readout", "spacing_fin", "PAPERS_BODY_PLAN"]

#: What the papers say of the body plan (public reviews and summaries; see ../shared/science.md §1.7), beside which
#: ``python -m serpent milestones`` prints this run's numbers.
PAPERS_BODY_PLAN = {
    "anterior_posterior": "the long axis is PC1, global expression vs suppression across heads; per layer PC1 holds "
                          "95.3 % (layer 0) and 99.1 % (layer 1) of the variance",
    "dorsal_ventral": "the short axis is PC2, which thickens as the induction circuit emerges (the paper's one "
                      "numeric result); heads 0:1, 0:4, 0:5 previous-token, 1:6, 1:7 induction",
    "spacing_fin": "spacing tokens, especially those after long runs of spaces, ordered by the spaces before them; "
                   "not visible in the first three PCs (UMAP finds it)",
    "seeds": "the body plan recurs in 4 training seeds",
}


#: The pre-processing every anatomy number uses (see the module docstring).
ANATOMY_PREPROCESS = "standardize"


@dataclass
class BodyAxes:
    """PCA of one checkpoint's pre-processed χ, oriented as described in the module docstring."""

    scores: np.ndarray       # (N, k) token coordinates on PC1..PCk
    shares: np.ndarray       # (k,) share of the variance of each PC
    loadings: np.ndarray     # (C, k) head loadings (unit columns)
    mean_corr: float         # correlation of PC1 with each token's mean pre-processed χ (>= 0 by orientation)


def body_axes(chi: np.ndarray, patterns: Optional[Sequence[str]] = None, *, method: str = "standardize",
              k: int = 3) -> BodyAxes:
    """The body axes of one checkpoint: PCA of ``preprocess(chi, method)``, PC1 oriented along the tokens' mean χ
    and PC2 so that induction tokens (if ``patterns`` is given) have negative mean scores.

    >>> X = np.c_[np.arange(10.0), np.arange(10.0) * 2 + 1]
    >>> ax = body_axes(X, method="center"); round(float(ax.shares[0]), 6), round(ax.mean_corr, 6)
    (1.0, 1.0)
    """
    X = preprocess(chi, method)
    Xc = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    k = min(k, vt.shape[0])
    total = float((s ** 2).sum())
    shares = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    load = vt[:k].T.copy()
    scores = Xc @ load
    mean = X.mean(axis=1)
    r = _corr(scores[:, 0], mean)
    if r < 0:
        load[:, 0] *= -1
        scores[:, 0] *= -1
        r = -r
    if k > 1 and patterns is not None:
        ind = np.asarray(patterns) == "induction"
        if ind.any() and (~ind).any() and scores[ind, 1].mean() > scores[~ind, 1].mean():
            load[:, 1] *= -1
            scores[:, 1] *= -1
    return BodyAxes(scores=scores, shares=shares, loadings=load, mean_corr=float(r))


def body_axes_frame(frame: "pd.DataFrame", method: str = "standardize") -> "pd.DataFrame":
    """The serpent frame (one row per token and checkpoint, with its χ columns ``"L:H"``, as
    ``serpent/embedding.parquet`` holds it) with two more columns, ``pc1`` and ``pc2``: every checkpoint's tokens in
    its own body axes (:func:`body_axes`), what the body-axes charts draw.

    >>> import pandas as pd; rng = np.random.default_rng(0)
    >>> f = pd.DataFrame(rng.normal(size=(40, 2)), columns=["0:0", "0:1"]).assign(step=[0] * 20 + [5] * 20,
    ...     pattern=["induction", "word part"] * 20)
    >>> body_axes_frame(f)[["pc1", "pc2"]].shape
    (40, 2)
    """
    import re

    comps = [c for c in frame.columns if re.fullmatch(r"\d+:\d+|mlp:\d+", str(c))]
    if not comps:
        raise SerpentError("body_axes_frame needs the χ columns ('0:0', ...) of the serpent frame; read "
                           "serpent/embedding.parquet, not the exported map.parquet")
    out = frame.copy()
    out["pc1"] = np.nan
    out["pc2"] = np.nan
    for _, rows in frame.groupby("step", sort=True):
        ax = body_axes(rows[comps].to_numpy(np.float64), rows["pattern"].astype(str).to_numpy(), method=method, k=2)
        out.loc[rows.index, "pc1"] = ax.scores[:, 0]
        out.loc[rows.index, "pc2"] = ax.scores[:, 1] if ax.scores.shape[1] > 1 else 0.0
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / d) if d > 0 else 0.0


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random negative scores higher than a random positive
    (ties count half), i.e. how well *low* scores pick out ``positive``. 0.5 = no separation.

    >>> auc(np.array([0.0, 1.0, 2.0, 3.0]), np.array([True, True, False, False]))
    1.0
    """
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(-np.asarray(scores, dtype=np.float64))   # high rank = low score
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _null_auc(scores: np.ndarray, n_pos: int, rng, times: int) -> np.ndarray:
    """AUC of ``n_pos`` tokens picked at random, oriented as the real one (the larger of AUC and 1 - AUC, since
    PC2's sign is chosen by the real induction tokens)."""
    out = np.empty(times)
    for i in range(times):
        pick = np.zeros(len(scores), dtype=bool)
        pick[rng.choice(len(scores), n_pos, replace=False)] = True
        a = auc(scores, pick)
        out[i] = max(a, 1 - a)
    return out


def pattern_readout(chi: np.ndarray, patterns: Sequence[str], *, token_ids: Optional[np.ndarray] = None,
                    method: str = "standardize", seed: int = 0, folds: int = 5, shuffles: int = 5) -> dict:
    """How well the pattern can be read back from the pre-processed χ: a cross-validated linear classifier (linear
    discriminant analysis with Ledoit-Wolf shrinkage; accuracy and recall per pattern), beside the majority class
    and the same classifier on shuffled labels; with ``token_ids``, also with folds grouped by token
    (``cross_token_accuracy``).

    Patterns with fewer members than ``folds`` are left out (they cannot be cross-validated).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict

    y = np.asarray(patterns).astype(str)
    names, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, names[counts >= folds])
    X = preprocess(chi, method)[keep]
    y = y[keep]
    if len(np.unique(y)) < 2:
        return {"accuracy": float("nan"), "majority": float("nan"), "note": "fewer than two patterns"}
    clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    rng = np.random.default_rng(seed)

    def predict(labels, groups=None):
        cv = GroupKFold(n_splits=folds) if groups is not None else StratifiedKFold(folds, shuffle=True,
                                                                                    random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cross_val_predict(clf, X, labels, cv=cv, groups=groups)

    pred = predict(y)
    acc = float((pred == y).mean())
    majority = float(np.unique(y, return_counts=True)[1].max() / len(y))
    null = [float((predict(p := rng.permutation(y)) == p).mean()) for _ in range(shuffles)]
    out = {
        "accuracy": acc, "majority": majority,
        "null_mean": float(np.mean(null)), "null_sd": float(np.std(null, ddof=1)) if shuffles > 1 else 0.0,
        "recall": {str(c): float((pred[y == c] == c).mean()) for c in np.unique(y)},
        "n": int(len(y)),
    }
    if token_ids is not None:
        groups = np.asarray(token_ids)[keep]
        if len(np.unique(groups)) >= folds:
            pred_g = predict(y, groups)
            out["cross_token_accuracy"] = float((pred_g == y).mean())
            out["cross_token_recall"] = {str(c): float((pred_g[y == c] == c).mean()) for c in np.unique(y)}
    return out


def spacing_fin(chi: np.ndarray, patterns: Sequence[str], n_prev_spaces: Sequence[int], *,
                token_ids: Optional[Sequence[int]] = None, method: str = "standardize", seed: int = 0,
                folds: int = 5, shuffles: int = 30, min_tokens: int = 20) -> dict:
    """Do spacing tokens order by the spaces before them? Rank correlation (Spearman) between
    ``n_prev_spaces`` and its cross-validated ridge read-out from χ (α = 1 on the standardised numbers), among spacing tokens, against the same with the
    counts shuffled. ``present`` is True when the correlation exceeds the null's mean by three standard deviations.

    With ``token_ids`` the folds are grouped by token (the read-out is tested on tokens it never saw): a token's
    count is often a property of the token itself (``'ĠĠĠĠ'`` always carries four spaces), and even a random network
    gives each token its own χ, so without grouping a read-out could succeed by recognising tokens, at
    initialisation as well as after training.

    >>> rng = np.random.default_rng(1); n = 200; k = rng.integers(0, 12, n)
    >>> X = rng.normal(size=(n, 16)); X[:, 3] += 0.5 * k
    >>> f = spacing_fin(X, ["spacing"] * n, k, shuffles=20); f["present"], f["rho"] > 0.8
    (True, True)
    """
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict

    sp = np.asarray(patterns).astype(str) == "spacing"
    k = np.asarray(n_prev_spaces, dtype=np.float64)[sp]
    out = {"n": int(sp.sum()), "distinct_counts": int(len(np.unique(k)))}
    if out["n"] < min_tokens or out["distinct_counts"] < 3:
        out.update(rho=float("nan"), null_mean=float("nan"), null_sd=float("nan"), present=False,
                   note=f"too few spacing tokens ({out['n']}) or counts ({out['distinct_counts']}) to measure")
        return out
    X = preprocess(chi, method)[sp]
    target = np.log1p(k)
    groups = None if token_ids is None else np.asarray(token_ids)[sp]
    if groups is not None:
        out["distinct_tokens"] = int(len(np.unique(groups)))
        if out["distinct_tokens"] < 3:
            out.update(rho=float("nan"), null_mean=float("nan"), null_sd=float("nan"), present=False,
                       note=f"only {out['distinct_tokens']} distinct tokens: nothing to test across tokens")
            return out
        cv = GroupKFold(n_splits=min(folds, out["distinct_tokens"]))
    else:
        cv = KFold(folds, shuffle=True, random_state=seed)
    model = Ridge(alpha=1.0)

    def rho(t):
        pred = cross_val_predict(model, X, t, cv=cv, groups=groups)
        r = spearmanr(pred, t).statistic
        return float(r) if np.isfinite(r) else 0.0

    rng = np.random.default_rng(seed)
    real = rho(target)
    null = np.array([rho(rng.permutation(target)) for _ in range(shuffles)])
    out.update(rho=real, null_mean=float(null.mean()), null_sd=float(null.std(ddof=1)),
               present=bool(real > null.mean() + 3 * null.std(ddof=1)),
               by_count={int(c): int((k == c).sum()) for c in np.unique(k)})
    return out


def checkpoint_anatomy(chi: np.ndarray, patterns: Sequence[str], *, components: Optional[Sequence[str]] = None,
                       token_ids: Optional[np.ndarray] = None, n_prev_spaces: Optional[Sequence[int]] = None,
                       method: str = "standardize", seed: int = 0, bootstrap: int = 200, null: int = 200,
                       classifier: bool = True) -> dict:
    """Every body-plan number of one checkpoint (see the module docstring), as a JSON-ready dict.

    ``bootstrap`` resamples of the tokens give 95 % intervals (``*_ci``); ``null`` random picks give the induction
    separation's null; ``classifier=False`` skips the (slower) pattern read-out.
    """
    chi = np.asarray(chi, dtype=np.float64)
    pats = np.asarray(patterns).astype(str)
    if chi.ndim != 2 or len(pats) != chi.shape[0]:
        raise SerpentError(f"checkpoint_anatomy needs chi (N, C) and N patterns, got {chi.shape} and {len(pats)}")
    if chi.shape[0] < 10:
        raise SerpentError(f"checkpoint_anatomy needs at least 10 tokens, got {chi.shape[0]}: probe more text")
    comps = list(components) if components is not None else [f"{c // 8}:{c % 8}" for c in range(chi.shape[1])]
    ax = body_axes(chi, pats, method=method)
    ind = pats == "induction"
    rng = np.random.default_rng(seed)
    pc1 = ax.loadings[:, 0]
    major = np.sign(pc1.sum()) or 1.0
    out: dict = {
        "tokens": int(chi.shape[0]), "preprocess": method,
        "pc1_share": float(ax.shares[0]), "pc1_mean_corr": ax.mean_corr,
        "pc1_uniformity": float((np.sign(pc1) == major).mean()),
        "pc1_loadings": {c: float(v) for c, v in zip(comps, pc1)},
    }
    if len(ax.shares) > 1:
        order = np.argsort(-np.abs(ax.loadings[:, 1]))
        out.update({
            "pc2_share": float(ax.shares[1]),
            "pc3_share": float(ax.shares[2]) if len(ax.shares) > 2 else float("nan"),
            "thickness": float(np.sqrt(ax.shares[1] / ax.shares[0])) if ax.shares[0] > 0 else float("nan"),
            "pc2_loadings": {c: float(v) for c, v in zip(comps, ax.loadings[:, 1])},
            "pc2_top_heads": [comps[i] for i in order[:3]],
            "induction_tokens": int(ind.sum()),
        })
        if ind.any() and (~ind).any():
            out["induction_auc_pc2"] = auc(ax.scores[:, 1], ind)
            if null:
                nl = _null_auc(ax.scores[:, 1], int(ind.sum()), rng, null)
                out["induction_auc_null_mean"], out["induction_auc_null_sd"] = float(nl.mean()), float(nl.std())
    if bootstrap:
        boot = {"pc1_share": [], "pc2_share": [], "thickness": [], "induction_auc_pc2": []}
        for _ in range(bootstrap):
            i = rng.integers(0, chi.shape[0], chi.shape[0])
            b = body_axes(chi[i], pats[i], method=method)
            boot["pc1_share"].append(b.shares[0])
            if len(b.shares) > 1:
                boot["pc2_share"].append(b.shares[1])
                boot["thickness"].append(np.sqrt(b.shares[1] / b.shares[0]))
                if ind[i].any() and (~ind[i]).any():
                    boot["induction_auc_pc2"].append(auc(b.scores[:, 1], ind[i]))
        for name, vals in boot.items():
            if vals:
                out[name + "_ci"] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
    if classifier:
        out["pattern"] = pattern_readout(chi, pats, token_ids=token_ids, method=method, seed=seed)
    if n_prev_spaces is not None:
        out["fin"] = spacing_fin(chi, pats, n_prev_spaces, token_ids=token_ids, method=method, seed=seed)
    return out


def anatomy_table(per_step: Mapping[int, dict]) -> "pd.DataFrame":
    """One row per checkpoint of the headline numbers of :func:`checkpoint_anatomy` results, with the
    *thickening* (the thickness over the smallest thickness of the checkpoints up to it).

    >>> t = anatomy_table({0: {"thickness": .2}, 10: {"thickness": .1}, 20: {"thickness": .3}})
    >>> t["thickening"].round(6).tolist()
    [1.0, 1.0, 3.0]
    """
    import pandas as pd

    rows = []
    for step in sorted(per_step, key=int):
        a = per_step[step]
        p = a.get("pattern", {}) or {}
        f = a.get("fin", {}) or {}
        rows.append({
            "step": int(step), "pc1_share": a.get("pc1_share"), "pc1_mean_corr": a.get("pc1_mean_corr"),
            "pc1_uniformity": a.get("pc1_uniformity"), "pc2_share": a.get("pc2_share"),
            "thickness": a.get("thickness"), "pc2_top_head": (a.get("pc2_top_heads") or [None])[0],
            "induction_auc_pc2": a.get("induction_auc_pc2"), "induction_auc_null": a.get("induction_auc_null_mean"),
            "pattern_accuracy": p.get("accuracy"), "pattern_majority": p.get("majority"),
            "pattern_null": p.get("null_mean"), "pattern_cross_token": p.get("cross_token_accuracy"),
            "fin_rho": f.get("rho"), "fin_null": f.get("null_mean"),
        })
    df = pd.DataFrame(rows)
    if len(df):
        th = df["thickness"].astype(float)
        df["thickening"] = th / th.cummin().where(th.cummin() > 0)
    return df


def seed_agreement(chi_a: np.ndarray, chi_b: np.ndarray, se_a: Optional[np.ndarray] = None,
                   se_b: Optional[np.ndarray] = None, *, chains: int = 4) -> dict:
    """How alike two SGLD seeds' χ of the same tokens are: the correlation of each head's χ over tokens (median
    and minimum over heads), the correlation of each token's 16 numbers (median over tokens) and, given the
    standard errors, a split R-hat per (token, head): every seed's estimate is the mean of ``chains`` chains whose
    spread its standard error reports, so the within-chain variance is ``chains · se²`` and the between-seed
    variance that of the two means; R-hat near 1 means the seeds differ by no more than their chains do.

    >>> rng = np.random.default_rng(0); t = rng.normal(size=(300, 16)); se = np.full((300, 16), 0.1)
    >>> s = seed_agreement(t + 0.1 * rng.normal(size=t.shape), t + 0.1 * rng.normal(size=t.shape), se, se)
    >>> s["head_corr_median"] > 0.95, 0.9 < s["rhat_median"] < 1.2
    (True, True)
    """
    a = np.asarray(chi_a, dtype=np.float64)
    b = np.asarray(chi_b, dtype=np.float64)
    if a.shape != b.shape:
        raise SerpentError(f"seed_agreement: the two results have shapes {a.shape} and {b.shape}; they must probe "
                           "the same tokens with the same components")
    heads = np.array([_corr(a[:, j], b[:, j]) for j in range(a.shape[1])])
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((ac ** 2).sum(1) * (bc ** 2).sum(1))
    tok = np.where(den > 0, (ac * bc).sum(1) / np.where(den > 0, den, 1), np.nan)
    out = {"head_corr_median": float(np.median(heads)), "head_corr_min": float(heads.min()),
           "token_corr_median": float(np.nanmedian(tok))}
    if se_a is not None and se_b is not None:
        w = chains * (np.asarray(se_a, dtype=np.float64) ** 2 + np.asarray(se_b, dtype=np.float64) ** 2) / 2
        var_means = (a - b) ** 2 / 2                        # unbiased variance of two seed means
        ok = w > 0
        rhat = np.sqrt(((chains - 1) / chains * w[ok] + var_means[ok]) / w[ok])
        out.update(rhat_median=float(np.median(rhat)), rhat_p95=float(np.percentile(rhat, 95)),
                   rhat_share_above_1_1=float((rhat > 1.1).mean()))
    return out


def training_seed_agreement(chi_a: np.ndarray, chi_b: np.ndarray, patterns: Sequence[str], *,
                            method: str = ANATOMY_PREPROCESS, k: int = 15) -> dict:
    """How alike two *training* seeds' χ of the same probe tokens are, in measures that do not assume the heads
    correspond (two initialisations need not put the previous-token head at the same index):

    * ``pc1_corr``, ``pc2_corr``: correlation over tokens of their positions along the long and the short body axes
      (:func:`body_axes`, PC2 oriented with the induction tokens below);
    * ``knn_overlap``: the mean share of a token's ``k`` nearest tokens in one seed's pre-processed χ that are also
      among its ``k`` nearest in the other's (``knn_chance`` = k/(n−1) for unrelated runs);
    * ``head_match_median``, ``head_match_min``: each head of one seed paired with one head of the other so that the
      summed correlation over tokens is largest (Hungarian assignment), and those correlations' median and minimum.

    >>> rng = np.random.default_rng(1); t = rng.normal(size=(400, 1)) * np.ones((1, 6)) + rng.normal(size=(400, 6))
    >>> lab = np.where(rng.random(400) < 0.2, "induction", "word part")
    >>> s = training_seed_agreement(t, t[:, ::-1] + 0.1 * rng.normal(size=t.shape), lab)
    >>> s["pc1_corr"] > 0.95, s["head_match_median"] > 0.95, s["knn_overlap"] > 10 * s["knn_chance"]
    (True, True, True)
    """
    from scipy.optimize import linear_sum_assignment

    from .embedding import _knn_overlap

    a = np.asarray(chi_a, dtype=np.float64)
    b = np.asarray(chi_b, dtype=np.float64)
    if a.shape != b.shape:
        raise SerpentError(f"training_seed_agreement: the two results have shapes {a.shape} and {b.shape}; compare "
                           "runs that probe the same tokens with the same number of heads")
    patterns = np.asarray(patterns).astype(str)
    axa, axb = body_axes(a, patterns, method=method, k=2), body_axes(b, patterns, method=method, k=2)
    za, zb = preprocess(a, method), preprocess(b, method)
    corr = np.array([[_corr(za[:, i], zb[:, j]) for j in range(b.shape[1])] for i in range(a.shape[1])])
    rows, cols = linear_sum_assignment(-np.nan_to_num(corr))
    matched = corr[rows, cols]
    n = len(a)
    kk = min(k, n - 1)
    return {"pc1_corr": _corr(axa.scores[:, 0], axb.scores[:, 0]),
            "pc2_corr": _corr(axa.scores[:, 1], axb.scores[:, 1]) if axa.scores.shape[1] > 1 else float("nan"),
            "knn_overlap": _knn_overlap(a, b, kk, method), "knn_chance": kk / (n - 1),
            "head_match_median": float(np.median(matched)), "head_match_min": float(matched.min()),
            "head_match": {f"{i}": int(j) for i, j in zip(rows, cols)}}
