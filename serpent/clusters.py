"""Susceptibility clusters: tokens grouped by their per-head χ vectors, a card per cluster, and their births.

The serpent shows that structure grows; clusters say what its parts are. Following "Towards Spectroscopy:
Susceptibility Clusters in Language Models" (arXiv 2601.12703), the tokens of one checkpoint are clustered on their
pre-processed χ vectors through the graph of their k nearest neighbours, and every cluster gets a card a person can
read and name.

Design choices:

* **Pre-processing**: PCA whitening (:func:`serpent.embedding.preprocess` ``"whiten"``, the pre-processing of the
  authors' Pythia-1.4B catalogue). χ moves mostly together over the heads: after z-scoring each head, the first
  principal component (a token's mean χ, global expression against suppression) holds 95-99 % of the variance at
  every checkpoint of the book's run, so clusters of z-scored χ are slices of one line. Whitening gives the other
  directions, where the heads disagree, their say. The price: whitening shrinks the direction a strong group
  stands apart along, so one lone group set apart along one direction can be missed (a single planted group of 80
  tokens in 30 components is; three such groups are found); ``ClusterSettings(preprocess="standardize")`` finds
  that lone group, and nothing at any checkpoint of the book's run, where whitening finds the induction cluster.
* **The method**: Louvain modularity on the symmetrised, unweighted kNN graph (k = 15, the serpent's UMAP
  neighbourhood), from ``networkx`` (``louvain_communities``, seeded: the same seed gives the same clusters). The
  paper grows clusters by conductance on the neighbour graph; modularity on that same graph is the well-kept library
  method nearest to it (no number of clusters to choose, unlike spectral clustering; ``networkx`` is installed,
  Leiden's igraph is not), and every cluster's **conductance** (edges leaving it over its edge volume: 0 = an island)
  is what its card reports and what the null judges. About a second per 1,500 tokens. Clusters of fewer than
  ``min_size`` tokens are left unlabelled (−1).
* **The null**: as many Gaussian vectors, with the features' covariance (after whitening: standard normal), are
  clustered the same way ``n_null`` times. A cluster **stands out** when its conductance is below that of every
  null cluster and ``z`` = (null mean − φ) / null sd ≥ 3. Shuffling each head's column was tried and rejected: it
  destroys the common mode, so every slice of real χ looked like a cluster (z ≈ 10 at step 0 of the book's run);
  the Gaussian keeps the covariance and asks for more than it: separated groups.
* **The card** (:class:`ClusterCard`): size, pattern counts (:mod:`serpent.patterns`), distinct next tokens and the
  most common (the token that follows the context: the dot's own token), how many probe sequences it comes from,
  mean and spread of χ per head, the heads that express it most (χ lowest relative to all tokens; χ < 0 is
  expression, as in the explorer) or suppress it, the heads that set it apart from its own level, the contexts
  nearest its centre, its conductance against the null, and a name and a note a reader writes (:func:`read_notes`).
* **Over training** (:func:`clusters_over_training`): every checkpoint is clustered; the tokens are the same at
  every checkpoint, so the clusters of the last one are followed back (:func:`cluster_births`): at every step the
  conductance of the *same token set* in that step's graph, and the step's cluster that overlaps it most (Jaccard).
  A cluster's **birth** is the first step from which it stands out at every later step (as
  :func:`serpent.milestones.onset` reads curves).

>>> rng = np.random.default_rng(0)
>>> chi = rng.normal(size=(300, 16)); chi[:60, :8] += 6          # 60 tokens respond alike on eight heads
>>> cl = find_clusters(chi, seed=0, n_null=1)
>>> big = np.bincount(cl.labels[:60] + 1).argmax() - 1          # the cluster that holds the planted tokens
>>> int((cl.labels[:60] == big).sum()) >= 57, int((cl.labels[60:] == big).sum()) <= 3
(True, True)
>>> bool(cl.table.set_index("cluster").loc[big, "stands_out"]), int(cl.table["stands_out"].sum())
(True, 1)
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .embedding import _knn_indices, preprocess
from .errors import SerpentError
from .patterns import PATTERNS, pattern_counts

__all__ = ["CLUSTERS_FORMAT", "NOTES_FORMAT", "ClusterSettings", "Clustering", "ClusterCard", "ClusterCatalogue",
           "knn_adjacency", "conductance", "find_clusters", "cluster_cards", "cluster_births",
           "clusters_over_training", "cards_from_json", "cluster_table", "pattern_births", "read_notes", "notes_json"]

CLUSTERS_FORMAT = "serpent-clusters/1"
NOTES_FORMAT = "serpent-cluster-notes/1"


@dataclass(frozen=True)
class ClusterSettings:
    """How clusters are found (module docstring); part of the serpent stage's settings key."""
    k: int = 15
    resolution: float = 1.0
    min_size: int = 10
    n_null: int = 2
    z_threshold: float = 3.0
    preprocess: str = "whiten"
    seed: int = 0
    n_contexts: int = 6
    n_next: int = 8

    def __post_init__(self):
        if self.k < 2 or self.min_size < 2 or self.n_null < 1 or self.resolution <= 0:
            raise SerpentError(f"cluster settings: k >= 2, min_size >= 2, n_null >= 1 and resolution > 0 are "
                               f"needed, got {self}; pass e.g. ClusterSettings(k=15, min_size=10, n_null=2)")


# ----------------------------------------------------------------------------------------------------------------
# One checkpoint
# ----------------------------------------------------------------------------------------------------------------

def knn_adjacency(X: np.ndarray, k: int = 15):
    """The symmetrised, unweighted k-nearest-neighbour graph of the rows of ``X``: a scipy CSR matrix of 0/1.

    >>> A = knn_adjacency(np.array([[0.], [1.], [2.], [10.]]), k=1)
    >>> A.toarray().astype(int).tolist()
    [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    """
    from scipy import sparse
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < 3:
        raise SerpentError(f"clustering needs at least 3 tokens, got {n}; probe more sequences")
    nbr = _knn_indices(X, min(k, n - 1))
    rows = np.repeat(np.arange(n), nbr.shape[1])
    A = sparse.csr_matrix((np.ones(rows.size), (rows, nbr.ravel())), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    A.setdiag(0)
    A.eliminate_zeros()
    return A.tocsr()


def conductance(A, labels: np.ndarray) -> dict[int, float]:
    """Conductance of every label ≥ 0 in the graph ``A``: edges leaving the set over min(its volume, the rest's).

    >>> A = knn_adjacency(np.array([[0.], [1.], [2.], [10.]]), k=1)
    >>> conductance(A, np.array([0, 0, 1, 1]))
    {0: 0.3333333333333333, 1: 0.3333333333333333}
    """
    from scipy import sparse
    lab = np.asarray(labels)
    deg = np.asarray(A.sum(1)).ravel()
    total = deg.sum()
    out = {}
    ids = np.unique(lab[lab >= 0])
    if ids.size == 0:
        return out
    rows = np.nonzero(lab >= 0)[0]
    pos = np.searchsorted(ids, lab[rows])
    M = sparse.csr_matrix((np.ones(rows.size), (rows, pos)), shape=(len(lab), ids.size))
    inside = np.asarray((M.T @ A @ M).diagonal()).ravel()
    vol = np.asarray(M.T @ deg).ravel()
    for j, c in enumerate(ids):
        denom = min(vol[j], total - vol[j])
        out[int(c)] = float((vol[j] - inside[j]) / denom) if denom > 0 else float("nan")
    return out


def _louvain(A, resolution: float, seed: int, min_size: int) -> np.ndarray:
    """Louvain communities of ``A``, numbered by size (largest 0); those under ``min_size`` tokens get −1."""
    import networkx as nx
    G = nx.from_scipy_sparse_array(A)
    comms = nx.community.louvain_communities(G, resolution=resolution, seed=seed)
    comms = sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0]))
    lab = np.full(A.shape[0], -1, dtype=np.int64)
    j = 0
    for c in comms:
        if len(c) >= min_size:
            lab[c] = j
            j += 1
    return lab


def _gaussian_null(n: int, scales: np.ndarray, basis: Optional[np.ndarray], cfg: ClusterSettings) -> list[float]:
    out = []
    for r in range(cfg.n_null):
        Xn = np.random.default_rng([cfg.seed, 7, r]).normal(size=(n, len(scales))) * scales
        if basis is not None:
            Xn = Xn @ basis
        An = knn_adjacency(Xn, cfg.k)
        out.extend(v for v in conductance(An, _louvain(An, cfg.resolution, cfg.seed, cfg.min_size)).values()
                   if np.isfinite(v))
    return out


@functools.lru_cache(maxsize=16)
def _standard_null(n: int, dim: int, cfg: ClusterSettings) -> tuple:
    return tuple(_gaussian_null(n, np.ones(dim), None, cfg))


def _null_conductances(X: np.ndarray, cfg: ClusterSettings) -> np.ndarray:
    """Conductances of the clusters found in ``n_null`` draws of as many Gaussian vectors, with the covariance of
    the pre-processed features ``X``. Whitened features have the identity: that null depends only on the number of
    tokens and dimensions, and is computed once for every checkpoint of a run."""
    Xc = X - X.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    keep = s > (s.max() * 1e-9 if s.size and s.max() > 0 else np.inf)
    scales, basis = s[keep] / np.sqrt(max(1, len(X) - 1)), vt[keep]
    if not keep.any():
        return np.zeros(0)
    if np.allclose(scales, 1.0, atol=1e-6):          # whitened: the standard normal, cached
        return np.asarray(_standard_null(len(X), int(keep.sum()), cfg), dtype=np.float64)
    return np.asarray(_gaussian_null(len(X), scales, basis, cfg), dtype=np.float64)


@dataclass
class Clustering:
    """The clusters of one checkpoint: ``labels`` (N,) (−1: in no cluster), ``table`` (one row per cluster:
    ``cluster, size, conductance, z, stands_out``), the null's conductances, and the graph and features used."""
    step: int
    labels: np.ndarray
    table: Any
    null: np.ndarray
    adjacency: Any = field(repr=False)
    features: np.ndarray = field(repr=False)

    @property
    def null_stats(self) -> dict[str, float]:
        v = self.null
        if v.size == 0:
            return {"mean": float("nan"), "sd": float("nan"), "min": float("nan"), "clusters": 0}
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "min": float(v.min()), "clusters": int(v.size)}

    def judge(self, phi: float, z_threshold: float) -> tuple[float, bool]:
        """(z, stands out) of a conductance against this checkpoint's null."""
        st = self.null_stats
        if not np.isfinite(phi) or not np.isfinite(st["sd"]) or st["sd"] <= 0:
            return float("nan"), False
        z = (st["mean"] - phi) / st["sd"]
        return float(z), bool(z >= z_threshold and phi < st["min"])


def find_clusters(chi: np.ndarray, settings: Optional[ClusterSettings] = None, *, step: int = 0,
                  **overrides) -> Clustering:
    """Cluster the tokens of one checkpoint on their χ vectors ``(N, C)`` (module docstring): Louvain on the kNN
    graph of the pre-processed vectors, each cluster's conductance judged against Gaussian nulls.

    ``overrides`` replace fields of ``settings`` (``find_clusters(chi, resolution=2)``).
    """
    import pandas as pd
    from dataclasses import replace
    cfg = replace(settings or ClusterSettings(), **overrides)
    X = preprocess(chi, cfg.preprocess)
    A = knn_adjacency(X, cfg.k)
    labels = _louvain(A, cfg.resolution, cfg.seed, cfg.min_size)
    phi = conductance(A, labels)
    null = _null_conductances(X, cfg)
    out = Clustering(step=int(step), labels=labels, table=None, null=np.asarray(null, dtype=np.float64),
                     adjacency=A, features=X)
    rows = []
    for c, p in phi.items():
        z, ok = out.judge(p, cfg.z_threshold)
        rows.append({"cluster": c, "size": int((labels == c).sum()), "conductance": p, "z": z, "stands_out": ok})
    out.table = pd.DataFrame(rows, columns=["cluster", "size", "conductance", "z", "stands_out"])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Cards
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class ClusterCard:
    """What one cluster is, for a reader (module docstring). ``chi_z`` is the cluster's mean χ per head in
    standard deviations of that head over all tokens, ``level`` its mean over the heads (χ moves mostly together
    over the heads: the first principal component), ``distinctive`` the heads farthest from that level;
    ``contexts`` the tokens nearest its centre."""
    step: int
    cluster: int
    size: int
    share: float
    conductance: float
    z: float
    stands_out: bool
    patterns: dict
    top_pattern: str
    top_pattern_share: float
    enrichment: float
    n_next_tokens: int
    next_tokens: list
    n_sequences: int
    chi_mean: dict
    chi_sd: dict
    chi_z: dict
    level: float
    expresses: list
    suppresses: list
    distinctive: list
    contexts: list
    points: list = field(repr=False, default_factory=list)
    name: str = ""
    note: str = ""

    def to_dict(self, points: bool = False) -> dict:
        d = asdict(self)
        if not points:
            d.pop("points")
        return d

    def text(self, patterns: bool = True) -> str:
        """The card as a few lines of plain text (what ``python -m serpent clusters RUN`` prints); ``patterns=False``
        leaves out the pattern counts (to name a cluster before looking at them)."""
        title = f"cluster {self.cluster} at step {self.step:,}" + (f": {self.name}" if self.name else "")
        mark = "stands out" if self.stands_out else "does not stand out"
        lines = [title,
                 f"  {self.size} tokens ({self.share:.1%}) from {self.n_sequences} sequences; conductance "
                 f"{self.conductance:.3f}, {self.z:+.1f} sd from the Gaussian null ({mark})",
                 ("  patterns: " + ", ".join(f"{p} {n}" for p, n in self.patterns.items() if n) +
                  f"  (top: {self.top_pattern} {self.top_pattern_share:.0%}, {self.enrichment:.1f}x its share "
                  "of all tokens)") if patterns else "  patterns: (hidden)",
                 f"  {self.n_next_tokens} distinct next tokens; most common: " +
                 ", ".join(f"{t!r} {n}" for t, n in self.next_tokens),
                 f"  χ over all heads {self.level:+.1f} sd from the average token; expressed most by (χ lowest): " +
                 (", ".join(f"{h} {self.chi_z[h]:+.1f}" for h in self.expresses) or "none") +
                 "; suppressed most by (χ highest): " +
                 (", ".join(f"{h} {self.chi_z[h]:+.1f}" for h in self.suppresses) or "none"),
                 "  heads that set it apart from its own level: " +
                 (", ".join(f"{h} {self.chi_z[h] - self.level:+.1f}" for h in self.distinctive) or "none"),
                 "  typical contexts:"]
        lines += [f"    {c['context']}" for c in self.contexts]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _heads(frame) -> list[str]:
    return [c for c in frame.columns if ":" in str(c)]


def cluster_cards(clustering: Clustering, chi: np.ndarray, tokens, *, components: Optional[Sequence[str]] = None,
                  settings: Optional[ClusterSettings] = None) -> list[ClusterCard]:
    """One :class:`ClusterCard` per cluster of ``clustering``, largest first.

    ``chi`` (N, C) the raw susceptibilities, ``tokens`` a frame with one row per token in the same order and the
    columns ``token, context, pattern`` (``seq`` and ``point`` when present): a step of
    :func:`serpent.patterns.label_results`. ``components`` names the C heads (default ``"0"``, ``"1"``, ...).
    """
    cfg = settings or ClusterSettings()
    chi = np.asarray(chi, dtype=np.float64)
    n = len(chi)
    if len(tokens) != n or len(clustering.labels) != n:
        raise SerpentError(f"chi ({n}), tokens ({len(tokens)}) and labels ({len(clustering.labels)}) must describe "
                           "the same tokens in the same order; pass one checkpoint's rows")
    missing = {"token", "context", "pattern"} - set(tokens.columns)
    if missing:
        raise SerpentError(f"the tokens frame lacks {sorted(missing)}; pass serpent.patterns.label_results rows")
    comps = [str(c) for c in (components if components is not None else range(chi.shape[1]))]
    tok = tokens["token"].astype(str).to_numpy()
    ctx = tokens["context"].astype(str).to_numpy()
    pat = tokens["pattern"].astype(str).to_numpy()
    seq = tokens["seq"].to_numpy() if "seq" in tokens.columns else np.zeros(n, np.int64)
    pid = tokens["point"].to_numpy() if "point" in tokens.columns else np.arange(n)
    overall = pattern_counts(pat)
    mu, sd = chi.mean(0), chi.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    X = clustering.features
    cards = []
    table = clustering.table.set_index("cluster")
    for c in table.index:
        m = clustering.labels == c
        rows = np.nonzero(m)[0]
        counts = pattern_counts(pat[m])
        top = max(PATTERNS, key=lambda p: counts[p])
        share_top = counts[top] / len(rows)
        uniq, cnt = np.unique(tok[m], return_counts=True)
        order = np.lexsort((uniq, -cnt))[:cfg.n_next]
        cm = chi[m].mean(0)
        zc = (cm - mu) / sd
        centre = X[m].mean(0)
        near = rows[np.argsort(((X[m] - centre) ** 2).sum(1), kind="stable")[:cfg.n_contexts]]
        cards.append(ClusterCard(
            step=clustering.step, cluster=int(c), size=int(len(rows)), share=float(len(rows) / n),
            conductance=float(table.loc[c, "conductance"]), z=float(table.loc[c, "z"]),
            stands_out=bool(table.loc[c, "stands_out"]), patterns=counts, top_pattern=top,
            top_pattern_share=float(share_top), enrichment=float(share_top / (overall[top] / n)),
            n_next_tokens=int(len(uniq)), next_tokens=[[str(uniq[i]), int(cnt[i])] for i in order],
            n_sequences=int(len(np.unique(seq[m]))),
            chi_mean={h: float(v) for h, v in zip(comps, cm)},
            chi_sd={h: float(v) for h, v in zip(comps, chi[m].std(0))},
            chi_z={h: float(v) for h, v in zip(comps, zc)},
            level=float(zc.mean()),
            expresses=[comps[j] for j in np.argsort(zc, kind="stable")[:3] if zc[j] <= -0.5],
            suppresses=[comps[j] for j in np.argsort(-zc, kind="stable")[:3] if zc[j] >= 0.5],
            distinctive=[comps[j] for j in np.argsort(-np.abs(zc - zc.mean()), kind="stable")[:3]
                         if abs(zc[j] - zc.mean()) >= 0.25],
            contexts=[{"point": int(pid[i]), "token": str(tok[i]), "context": str(ctx[i]), "pattern": str(pat[i])}
                      for i in near],
            points=[int(pid[i]) for i in rows]))
    return cards


# ----------------------------------------------------------------------------------------------------------------
# Over training
# ----------------------------------------------------------------------------------------------------------------

def cluster_births(clusterings: Mapping[int, Clustering], keys: Mapping[int, Sequence[tuple]], *,
                   reference: Optional[int] = None, z_threshold: float = 3.0, min_jaccard: float = 0.25):
    """Follow the clusters of the ``reference`` step (default: the last) through every step: a frame with one row
    per (cluster, step) and the columns ``cluster, step, size, conductance, z, set_stands_out, best_match,
    jaccard, match_z, stands_out, birth``.

    ``keys[step]`` names the tokens of a step's rows (e.g. ``(seq, pos)``) so that the same token is found at every
    step. ``conductance``/``z``/``stands_out`` are those of the reference cluster's token set in the step's graph
    against the step's null (``set_stands_out``); ``best_match``/``jaccard``/``match_z`` the step's cluster that
    overlaps it most. The cluster ``stands_out`` at a step when its token set does, or when its best match (Jaccard
    at least ``min_jaccard``) does: an ancestor may be a looser group of the same tokens. ``birth`` is the first
    step from which it stands out at every later step (None if it does not stand out at the last one).
    """
    import pandas as pd
    steps = sorted(int(s) for s in clusterings)
    if not steps:
        raise SerpentError("no clusterings to follow; cluster at least one checkpoint")
    ref = steps[-1] if reference is None else int(reference)
    if ref not in clusterings:
        raise SerpentError(f"reference step {ref} was not clustered; choose one of {steps}")
    ref_keys = list(keys[ref])
    ref_lab = clusterings[ref].labels
    rows = []
    for s in steps:
        cl = clusterings[s]
        where = {k: i for i, k in enumerate(keys[s])}
        idx = np.array([where.get(k, -1) for k in ref_keys])
        for c in sorted(set(ref_lab[ref_lab >= 0].tolist())):
            members = idx[(ref_lab == c) & (idx >= 0)]
            lab = np.full(len(cl.labels), -1)
            lab[members] = 0
            phi = conductance(cl.adjacency, lab).get(0, float("nan"))
            z, ok = cl.judge(phi, z_threshold)
            best, jac = -1, 0.0
            here = cl.labels[members]
            for d in np.unique(here[here >= 0]):
                inter = int((here == d).sum())
                j = inter / (len(members) + int((cl.labels == d).sum()) - inter)
                if j > jac:
                    best, jac = int(d), float(j)
            t = cl.table.set_index("cluster")
            match_ok = bool(best >= 0 and jac >= min_jaccard and t.loc[best, "stands_out"])
            rows.append({"cluster": int(c), "step": s, "size": int(len(members)), "conductance": phi, "z": z,
                         "set_stands_out": ok, "best_match": best, "jaccard": jac,
                         "match_z": float(t.loc[best, "z"]) if best >= 0 else float("nan"),
                         "stands_out": bool(ok or match_ok)})
    df = pd.DataFrame(rows)
    births = {}
    for c, g in df.groupby("cluster"):
        g = g.sort_values("step")
        ok = g["stands_out"].to_numpy()
        birth = None
        for i in range(len(ok)):
            if ok[i:].all():
                birth = int(g["step"].iloc[i])
                break
        births[int(c)] = birth
    df["birth"] = pd.Series([births[int(c)] for c in df["cluster"]], index=df.index, dtype=object)
    return df


@dataclass
class ClusterCatalogue:
    """The clusters of every checkpoint of a run, their cards, and the births of the last checkpoint's clusters."""
    settings: ClusterSettings
    clusterings: dict
    cards: dict
    births: Any

    @property
    def steps(self) -> list[int]:
        return sorted(self.cards)

    def to_json(self) -> dict:
        """What the serpent stage writes to ``serpent/clusters.json`` (labels by point index per step)."""
        births = self.births.astype(object).where(self.births.notna(), None).to_dict("records") \
            if len(self.births) else []
        return {
            "format": CLUSTERS_FORMAT, "settings": asdict(self.settings), "steps": self.steps,
            "labels": {str(s): self.clusterings[s].labels.astype(int).tolist() for s in self.steps},
            "null": {str(s): self.clusterings[s].null_stats for s in self.steps},
            "cards": {str(s): [c.to_dict() for c in self.cards[s]] for s in self.steps},
            "births": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in births],
        }


def clusters_over_training(frame, settings: Optional[ClusterSettings] = None, *, progress: bool = False,
                           **overrides) -> ClusterCatalogue:
    """Cluster every checkpoint of a serpent frame (``serpent/embedding.parquet``, or the labels of
    :func:`serpent.patterns.label_results`: columns ``step, point, seq, pos, token, context, pattern`` and the χ
    columns ``"L:H"``), card every cluster, and follow the last checkpoint's clusters back (:func:`cluster_births`).
    """
    from dataclasses import replace
    from tqdm.auto import tqdm
    cfg = replace(settings or ClusterSettings(), **overrides)
    heads = _heads(frame)
    if not heads or "step" not in frame.columns:
        raise SerpentError("clusters need a serpent frame with a step column and χ columns named 'layer:head'; pass "
                           "serpent/embedding.parquet or serpent.patterns.label_results(...)")
    clusterings, cards, keys = {}, {}, {}
    groups = frame.groupby("step", sort=True)
    for s, g in tqdm(groups, total=groups.ngroups, desc="clusters", unit="ckpt", disable=not progress):
        g = g.sort_values("point") if "point" in g.columns else g
        chi = g[heads].to_numpy(dtype=np.float64)
        cl = find_clusters(chi, cfg, step=int(s))
        clusterings[int(s)] = cl
        cards[int(s)] = cluster_cards(cl, chi, g, components=heads, settings=cfg)
        keys[int(s)] = (list(zip(g["seq"].tolist(), g["pos"].tolist())) if {"seq", "pos"} <= set(g.columns)
                        else list(range(len(g))))
    births = cluster_births(clusterings, keys, z_threshold=cfg.z_threshold)
    return ClusterCatalogue(settings=cfg, clusterings=clusterings, cards=cards, births=births)


def cards_from_json(data: Mapping, step: Optional[int] = None,
                    notes: Optional[Mapping[tuple, Mapping[str, str]]] = None) -> list[ClusterCard]:
    """The cards of one step (default: the last) of a ``clusters.json`` dict, with the names and notes of
    ``notes`` (:func:`read_notes`) filled in."""
    if not isinstance(data, Mapping) or data.get("format") != CLUSTERS_FORMAT:
        raise SerpentError(f"not a clusters file of format {CLUSTERS_FORMAT!r}; run the serpent stage again "
                           "(`python -m serpent run --out RUN --stages serpent`)")
    steps = [int(s) for s in data["steps"]]
    s = steps[-1] if step is None else int(step)
    if s not in steps:
        raise SerpentError(f"no clusters at step {s}; the clustered steps are {steps}")
    notes = notes or {}
    cards = []
    for d in data["cards"][str(s)]:
        card = ClusterCard(**{k: v for k, v in d.items() if k in ClusterCard.__dataclass_fields__})
        if (s, card.cluster) in notes:
            card.name, card.note = notes[(s, card.cluster)]["name"], notes[(s, card.cluster)]["note"]
        cards.append(card)
    return cards


def cluster_table(data: Mapping):
    """One row per (step, cluster) of a ``clusters.json`` dict: ``step, cluster, size, conductance, z, stands_out,
    top_pattern, top_pattern_share, enrichment, birth`` (birth: only for the last step's clusters), the table the
    births chart and the book read."""
    import pandas as pd
    if not isinstance(data, Mapping) or data.get("format") != CLUSTERS_FORMAT:
        raise SerpentError(f"not a clusters file of format {CLUSTERS_FORMAT!r}; run the serpent stage again")
    births = {int(r["cluster"]): r["birth"] for r in data.get("births", [])}
    last = max(int(s) for s in data["steps"])
    rows = []
    for s in data["steps"]:
        for c in data["cards"][str(s)]:
            rows.append({"step": int(s), "cluster": int(c["cluster"]), "size": int(c["size"]),
                         "conductance": c["conductance"], "z": c["z"], "stands_out": bool(c["stands_out"]),
                         "top_pattern": c["top_pattern"], "top_pattern_share": c["top_pattern_share"],
                         "enrichment": c["enrichment"],
                         "birth": births.get(int(c["cluster"])) if int(s) == last else None})
    return pd.DataFrame(rows, columns=["step", "cluster", "size", "conductance", "z", "stands_out", "top_pattern",
                                       "top_pattern_share", "enrichment", "birth"])


def pattern_births(table) -> "pd.DataFrame":
    """When clusters of each kind are born: per most-common pattern, the first checkpoint at which a cluster of that
    kind stands out (``first``), the first from which one stands out at every later checkpoint (``from``, None if
    none does at the last) and how many stand out at the last checkpoint (``now``). ``table``:
    :func:`cluster_table`. Louvain's cuts change between checkpoints (a cluster's best match one checkpoint earlier
    often shares a quarter of its tokens), so a kind of cluster is followed where one token set is not.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"step": [0, 10, 10, 20], "top_pattern": ["spacing", "induction", "spacing", "induction"],
    ...                   "stands_out": [True, True, False, True]})
    >>> pattern_births(t).values.tolist()
    [['induction', 10, 10, 1], ['spacing', 0, None, 0]]
    """
    import pandas as pd
    steps = sorted(int(s) for s in table["step"].unique())
    rows = []
    standing = table[table["stands_out"].astype(bool)]
    for pat in [p for p in PATTERNS if p in set(standing["top_pattern"])]:
        at = set(int(s) for s in standing.loc[standing["top_pattern"] == pat, "step"])
        since = next((s for i, s in enumerate(steps) if all(t in at for t in steps[i:])), None)
        rows.append({"pattern": pat, "first": min(at), "from": since,
                     "now": int(((standing["top_pattern"] == pat) & (standing["step"] == steps[-1])).sum())})
    out = pd.DataFrame(rows, columns=["pattern", "first", "from", "now"])
    out["from"] = pd.Series([r["from"] for r in rows], index=out.index, dtype=object)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Names and notes a reader writes
# ----------------------------------------------------------------------------------------------------------------

def notes_json(notes: Mapping[tuple, Mapping[str, str]], run: str = "") -> dict:
    """The notes file (what the explorer's export button writes): ``{(step, cluster): {"name", "note"}}`` → JSON.

    >>> read_notes(notes_json({(400, 2): {"name": "indents", "note": "after a newline"}}))
    {(400, 2): {'name': 'indents', 'note': 'after a newline'}}
    """
    return {"format": NOTES_FORMAT, "run": run,
            "clusters": [{"step": int(s), "cluster": int(c), "name": str(v.get("name", "")),
                          "note": str(v.get("note", ""))} for (s, c), v in sorted(notes.items())]}


def read_notes(source: Any) -> dict[tuple[int, int], dict[str, str]]:
    """A notes file (a path, a JSON string or its dict) → ``{(step, cluster): {"name", "note"}}``."""
    from pathlib import Path
    data = source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        p = Path(source)
        if not p.is_file():
            raise SerpentError(f"no notes file at {p}; export one from the explorer page (its 'export notes' button)")
        data = p.read_text(encoding="utf-8")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise SerpentError(f"the notes file is not JSON ({e}); export it again from the explorer page") from None
    if not isinstance(data, dict) or data.get("format") != NOTES_FORMAT or not isinstance(data.get("clusters"), list):
        raise SerpentError(f"not a cluster-notes file (format {NOTES_FORMAT!r} with a 'clusters' list); export it "
                           "from the explorer page")
    out = {}
    for r in data["clusters"]:
        try:
            out[(int(r["step"]), int(r["cluster"]))] = {"name": str(r.get("name", "")), "note": str(r.get("note", ""))}
        except (KeyError, TypeError, ValueError):
            raise SerpentError(f"a notes entry lacks an integer step and cluster: {r!r}; export the file again") \
                from None
    return out
