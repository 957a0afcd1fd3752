"""Benchmark: the serpent's UMAP across checkpoints, ours beside umap-learn's own ways, in one process.

Three ways to draw one 2-D map per checkpoint of the same susceptibility vectors (synthetic here: 16-dimensional
clusters that separate as "training" goes on, with tokens that keep their identity across checkpoints):

* ``ours``: :func:`serpent.embedding.embed_checkpoints` (``alignment="warm"``, the default): UMAP per checkpoint,
  initialised from the previous checkpoint's map, then Procrustes-aligned onto it;
* ``independent``: ``umap.UMAP(...).fit_transform`` per checkpoint with the same settings and no alignment (what a
  user writes first; the maps' orientation jumps from one checkpoint to the next);
* ``AlignedUMAP``: ``umap.AlignedUMAP`` over all checkpoints at once, with the token relations between neighbours
  (the anchor for aligned maps).

Prints the seconds of each (median over ``--repeats``; numba compiles UMAP on first use, so untimed warm-up fits at
the full size run first) and how far tokens move between consecutive checkpoints relative to the map's size
(lower = easier to follow one token through training), and how well each map keeps every point's 15 nearest
neighbours of the 16-dimensional space (trustworthiness-like overlap; higher = more faithful).

    python bench/umap_alignment.py                            # 2,000 points x 4 checkpoints (the tiny preset)
    python bench/umap_alignment.py --points 8000 --checkpoints 6
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def synthetic(points: int, checkpoints: int, seed: int = 0) -> list[np.ndarray]:
    """Clusters of 16-d vectors whose separation grows with the checkpoint; every row is one token throughout."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 16)) * 3
    label = rng.integers(0, 8, size=points)
    noise = rng.normal(size=(points, 16))
    out = []
    for c in range(checkpoints):
        growth = (c + 1) / checkpoints
        drift = rng.normal(size=(points, 16)) * 0.3
        out.append((growth * centres[label] + noise + drift).astype(np.float32))
    return out


def movement(maps: list[np.ndarray]) -> float:
    """Mean distance a token moves between consecutive maps, in units of the later map's size."""
    moves = []
    for a, b in zip(maps[:-1], maps[1:]):
        scale = np.ptp(b, axis=0).mean()
        moves.append(np.linalg.norm(a - b, axis=1).mean() / scale)
    return float(np.mean(moves))


def neighbour_overlap(X: np.ndarray, Y: np.ndarray, k: int = 15, sample: int = 1000, seed: int = 0) -> float:
    """Mean share of a point's k nearest neighbours in ``X`` that are also among its k nearest in ``Y`` (over
    ``sample`` points)."""
    from serpent.embedding import _knn_indices
    idx = np.random.default_rng(seed).choice(len(X), size=min(sample, len(X)), replace=False)
    nx, ny = _knn_indices(X, k)[idx], _knn_indices(Y, k)[idx]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import umap
    from serpent.config import EmbeddingConfig
    from serpent.embedding import _umap_kwargs, embed_checkpoints, preprocess

    cfg = EmbeddingConfig()
    raw = synthetic(args.points, args.checkpoints)
    data = [preprocess(x, cfg.preprocess).astype(np.float32) for x in raw]
    kw = _umap_kwargs(cfg, args.points)
    relations = [{i: i for i in range(args.points)} for _ in range(args.checkpoints - 1)]

    def ours():
        df = embed_checkpoints({s: x for s, x in enumerate(raw)}, cfg, progress=False)
        return [g[["x", "y"]].to_numpy() for _, g in df.groupby("step")]

    def independent():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            return [umap.UMAP(**kw).fit_transform(x) for x in data]

    def aligned():
        akw = {k: v for k, v in kw.items() if k != "n_components"}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            fit = umap.AlignedUMAP(**akw).fit(data, relations=relations)
        return [np.asarray(e) for e in fit.embeddings_]

    with warnings.catch_warnings():   # numba compilation, not timed: one fit at full size (above 4,096 points
        warnings.filterwarnings("ignore", category=UserWarning)   # UMAP switches to pynndescent, compiled apart)
        umap.UMAP(**kw).fit_transform(data[0])
        start = np.random.default_rng(0).normal(size=(args.points, 2)).astype(np.float32)
        umap.UMAP(**{**kw, "init": start}).fit_transform(data[0])
    print(f"{args.points:,} points x {args.checkpoints} checkpoints, 16 dimensions; UMAP settings {kw}")
    print(f"{'method':<12} {'median s':>9} {'runs':>18} {'movement':>9} {'kNN kept':>9}")
    results = {}
    for name, fn in (("ours", ours), ("independent", independent), ("AlignedUMAP", aligned)):
        times, maps = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            maps = fn()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        keep = float(np.mean([neighbour_overlap(x, y) for x, y in zip(data, maps)]))
        results[name] = med
        print(f"{name:<12} {med:9.1f} {' '.join(f'{t:.1f}' for t in times):>18} {movement(maps):9.3f} {keep:9.3f}")
    print(f"ours / independent: {results['ours'] / results['independent']:.2f}x time; "
          f"ours / AlignedUMAP: {results['ours'] / results['AlignedUMAP']:.2f}x time")


if __name__ == "__main__":
    main()
