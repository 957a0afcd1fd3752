"""Embeddings: pre-processing, seeded UMAP across checkpoints, Procrustes alignment, the separation measure."""

from types import SimpleNamespace

import numpy as np
import pytest

from serpent.config import EmbeddingConfig
from serpent.embedding import (cross_token_null, embed_checkpoints, pattern_separation, preprocess, procrustes_align,
                               separation, separation_table)
from serpent.errors import ConfigError, SerpentError


def clustered(n=300, c=16, k=4, spread=6.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.normal(size=(k, c)) * spread
    return centers[labels] + rng.normal(size=(n, c)), labels.astype(str)


def test_preprocess_options():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) * [1, 10, 100, 1e3, 1e4]
    Z = preprocess(X, "standardize")
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-9)
    W = preprocess(X, "whiten")
    np.testing.assert_allclose(np.cov(W.T), np.eye(5), atol=1e-8)        # decorrelated, unit variance
    N = preprocess(X, "normalize")
    np.testing.assert_allclose(np.linalg.norm(N, axis=1), 1, atol=1e-12)
    np.testing.assert_array_equal(preprocess(X, "raw"), X)
    # a constant column (a head that never responds) does not produce NaN
    Xc = X.copy(); Xc[:, 2] = 3.0
    assert np.isfinite(preprocess(Xc, "standardize")).all() and np.isfinite(preprocess(Xc, "whiten")).all()
    with pytest.raises(ConfigError):
        preprocess(X, "pca")
    with pytest.raises(SerpentError, match="diverged"):
        preprocess(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_procrustes_recovers_similarity_transform():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 2))
    th = 1.1
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1, -1])   # with a reflection
    np.testing.assert_allclose(procrustes_align(0.3 * ref @ R + [4, -2], ref), ref, atol=1e-9)
    # unrelated maps: the aligned map keeps the reference's spread instead of collapsing to a point
    other = rng.normal(size=(50, 2)) * 7
    out = procrustes_align(other, ref)
    assert np.sqrt(((out - out.mean(0)) ** 2).sum()) == pytest.approx(np.sqrt(((ref - ref.mean(0)) ** 2).sum()))
    # fitted on matched rows only, applied to all rows
    both = np.vstack([0.3 * ref @ R + [4, -2], [[100.0, 100.0]]])
    out = procrustes_align(both, ref[::-1], rows=np.arange(50), ref_rows=np.arange(50)[::-1])
    np.testing.assert_allclose(out[:50], ref, atol=1e-9)
    assert out.shape == (51, 2)


def test_separation_clustered_vs_noise():
    X, lab = clustered()
    assert separation(X, lab) > 0.95
    assert separation(X[:, :2], lab) > 0.5
    rng = np.random.default_rng(2)
    noise = rng.normal(size=X.shape)
    assert abs(separation(noise, lab)) < 0.1                  # chance-corrected: no structure, about 0
    assert separation(X, lab, method="silhouette") > 0.5 > separation(noise, lab, method="silhouette")
    per = pattern_separation(X, lab)
    assert set(per) == set(lab) and min(per.values()) > 0.9
    # one separated class among noise: only that class scores high
    lab2 = np.where(lab == "0", "a", "b")
    pts = noise.copy(); pts[lab2 == "a"] += 10
    per2 = pattern_separation(pts, lab2)
    assert per2["a"] > 0.9
    assert np.isnan(separation(X, np.zeros(len(X))))           # a single label: undefined
    with pytest.raises(SerpentError):
        separation(X, lab[:-1])


def test_cross_token_separation_ignores_token_identity():
    """Copies of one token clustering together (what a random network gives) scores ~0 cross-token; different
    tokens of a pattern clustering together scores high both ways."""
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 200, 1500)
    lab = np.array(["word start", "spacing", "delimiter"])[tok % 3]
    by_token = rng.normal(size=(200, 8))[tok] * 3 + rng.normal(size=(1500, 8))
    assert separation(by_token, lab) > 0.3                           # plain purity rewards token identity
    assert abs(separation(by_token, lab, groups=tok)) < 0.06          # cross-token does not (±0.03 over seeds)
    by_pattern = rng.normal(size=(3, 8))[tok % 3] * 10 + rng.normal(size=(1500, 8))
    assert separation(by_pattern, lab, groups=tok) > 0.9
    per = pattern_separation(by_pattern, lab, groups=tok)
    assert set(per) == set(lab) and min(per.values()) > 0.9
    # the permutation null: token-identity structure sits inside it, pattern structure far above it
    mean, sd = cross_token_null(by_token, lab, tok, n_perm=30)
    assert abs(separation(by_token, lab, groups=tok) - mean) < 3 * sd and 0 < sd < 0.1
    mean, sd = cross_token_null(by_pattern, lab, tok, n_perm=30)
    assert separation(by_pattern, lab, groups=tok) > mean + 10 * sd
    assert np.isnan(cross_token_null(by_pattern, np.full(1500, "a"), tok)[1])    # one pattern: undefined
    # one pattern made of one token only: it has no cross-token neighbour of its own pattern, still defined
    lab1 = lab.copy(); lab1[tok == 0] = "numeric"
    assert np.isfinite(separation(by_pattern, lab1, groups=tok))
    # a single group: no cross-group neighbours at all
    assert np.isnan(separation(by_pattern, lab, groups=np.zeros(1500)))
    with pytest.raises(SerpentError, match="groups"):
        separation(by_pattern, lab, groups=tok[:-1])


def test_separation_handles_duplicate_points():
    pts = np.zeros((40, 2)); pts[20:] = 1.0
    lab = np.repeat(["a", "b"], 20)
    assert separation(pts, lab, k=5) == pytest.approx(1.0)


def _results(steps=(0, 10, 100), n=240, seed=0):
    """Susceptibility-like results whose pattern structure grows over training."""
    X, lab = clustered(n=n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    out = {}
    for k, s in enumerate(steps):
        a = k / (len(steps) - 1)
        chi = (a * X + (1 - a) * 4 * rng.normal(size=X.shape)).astype(np.float32)
        out[s] = SimpleNamespace(step=s, chi=chi, seq_index=np.arange(n) // 40, position=np.arange(n) % 40 + 1)
    return out, lab


@pytest.mark.slow
def test_embed_checkpoints_seeded_aligned_and_separating():
    res, lab = _results()
    cfg = EmbeddingConfig(n_neighbors=10, seed=3)
    a = embed_checkpoints(res, cfg, progress=False)
    b = embed_checkpoints(res, cfg, progress=False)
    assert list(a.columns[:6]) == ["step", "point", "seq", "pos", "x", "y"]
    assert len(a) == 3 * 240 and sorted(a.step.unique()) == [0, 10, 100]
    np.testing.assert_array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())     # reproducible
    c = embed_checkpoints(res, EmbeddingConfig(n_neighbors=10, seed=4), progress=False)
    assert not np.allclose(a[["x", "y"]].to_numpy(), c[["x", "y"]].to_numpy())           # the seed matters

    # separation in the map rises from the noisy first checkpoint to the clustered last one
    labels = a[["step", "point"]].copy()
    labels["pattern"] = np.tile(lab, 3)
    feats = {s: preprocess(r.chi) for s, r in res.items()}
    table = separation_table(a, labels, feats)
    assert table[0]["map"] < 0.3 < 0.8 < table[100]["map"]
    assert table[0]["features"] < table[100]["features"]
    assert "cross_token" not in table[0]                                # no token ids given
    labels["token_id"] = np.arange(len(labels)) % 240                  # every point its own token: = plain purity
    table2 = separation_table(a, labels, feats)
    assert table2[100]["cross_token"] == pytest.approx(table2[100]["features"])
    assert table2[100]["cross_token"] > table2[100]["cross_token_null_mean"] + 3 * table2[100]["cross_token_null_sd"]
    assert set(table[100]["by_pattern"]) == set(lab)
    per = table2[100]["by_pattern_cross_token"]                       # each pattern alone, in the 16-D space
    early = table2[0]["by_pattern_cross_token"]
    assert set(per) == set(early) == set(lab) and min(per.values()) > 0.5 > max(early.values())

    # alignment: tokens move less between the last two checkpoints than with independent fits
    none = embed_checkpoints(res, cfg, alignment="none", progress=False)

    def moved(df):
        p, q = df[df.step == 10][["x", "y"]].to_numpy(), df[df.step == 100][["x", "y"]].to_numpy()
        scale = np.ptp(q, axis=0).mean()
        return np.linalg.norm(p - q, axis=1).mean() / scale

    assert moved(a) < moved(none)


def test_embed_checkpoints_rejects_bad_input():
    with pytest.raises(SerpentError, match="no susceptibility results"):
        embed_checkpoints({})
    with pytest.raises(ConfigError):
        embed_checkpoints({0: np.zeros((10, 2))}, alignment="psychic")
    with pytest.raises(SerpentError):
        embed_checkpoints({0: "not an array"})


def _toy_serpent(rng, n=600, steps=(0, 100)):
    import pandas as pd
    frames = []
    centers = rng.normal(size=(6, 16)) * 4
    cls = rng.integers(0, 6, size=n)
    for s in steps:
        chi = centers[cls] + rng.normal(size=(n, 16))
        f = pd.DataFrame({"step": s, "point": np.arange(n), "seq": np.arange(n) // 50, "pos": np.arange(n) % 50 + 1,
                          "x": chi[:, 0] + 0.1 * chi[:, 1], "y": chi[:, 2] - 0.2 * chi[:, 3],
                          "token_id": rng.integers(0, 300, size=n) if s == steps[0] else None})
        for j in range(16):
            f[f"{j // 8}:{j % 8}"] = chi[:, j]
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    out["token_id"] = np.tile(frames[0]["token_id"].to_numpy(), len(steps))
    return out


def test_compare_serpents_known_answers():
    from serpent.embedding import compare_serpents
    rng = np.random.default_rng(0)
    a = _toy_serpent(rng)
    same = compare_serpents(a, a)
    assert list(same["step"]) == [0, 100] and (same["tokens"] == 600).all()
    assert np.allclose(same["procrustes_r"], 1) and np.allclose(same["knn_overlap"], 1)

    # another seed that grew the same body plan: heads in another order, map rotated, mirrored, scaled and moved
    b = a.copy()
    heads = [f"{l}:{h}" for l in range(2) for h in range(8)]
    b[heads] = a[heads[::-1]].to_numpy()
    b["x"], b["y"] = -3 * a["y"] + 5, 3 * a["x"] - 1
    moved = compare_serpents(a, b)
    assert np.allclose(moved["procrustes_r"], 1) and np.allclose(moved["knn_overlap"], 1)

    # an unrelated run: χ and map independent of run A's (same tokens)
    c = a.copy()
    c[heads + ["x", "y"]] = rng.normal(size=(len(c), 18))
    unrelated = compare_serpents(a, c)
    assert (unrelated["procrustes_r"] < 0.15).all()
    assert (abs(unrelated["knn_overlap"] - unrelated["knn_chance"]) < 0.02).all()

    # in between: the same structure plus noise
    d = a.copy()
    d[heads] = a[heads].to_numpy() + 2 * rng.normal(size=(len(a), 16))
    d["x"], d["y"] = a["x"] + rng.normal(size=len(a)), a["y"] + rng.normal(size=len(a))
    mid = compare_serpents(a, d)
    assert (mid["knn_chance"] + 0.05 < mid["knn_overlap"]).all() and (mid["knn_overlap"] < 0.9).all()
    assert (0.5 < mid["procrustes_r"]).all() and (mid["procrustes_r"] < 0.999).all()


def test_compare_serpents_refuses_unmatched_runs():
    from serpent.embedding import compare_serpents
    rng = np.random.default_rng(1)
    a = _toy_serpent(rng)
    with pytest.raises(SerpentError, match="share no checkpoint"):
        compare_serpents(a, a.assign(step=a["step"] + 1))
    with pytest.raises(SerpentError, match="different tokens"):
        compare_serpents(a, a.assign(token_id=a["token_id"] + 1))
    with pytest.raises(SerpentError, match="same probe windows"):
        compare_serpents(a, a.assign(seq=a["seq"] + 1000))


def test_cli_compare_two_runs(tmp_path, capsys):
    import json
    from serpent.cli import main
    from serpent.config import get_preset
    from serpent.rundir import Run
    a = _toy_serpent(np.random.default_rng(2))
    b = a.copy()
    b["x"], b["y"] = 2 * a["y"], -2 * a["x"]                                 # the same serpent, turned and scaled
    for name, frame in (("a", a), ("b", b)):
        run = Run.create(tmp_path / name, get_preset("tiny"))
        frame.to_parquet(run.stage_dir("serpent") / "embedding.parquet", index=False)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json")]) == 0
    assert "procrustes_r" in capsys.readouterr().out
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 100] and all(abs(r["procrustes_r"] - 1) < 1e-9 for r in rows)
    Run.create(tmp_path / "fresh", get_preset("tiny"))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "fresh")]) == 2
    assert "has no serpent yet" in capsys.readouterr().err


def test_each_patterns_null_is_defined_for_context_dependent_patterns():
    """Induction is never a token's first occurrence, so a token-level null could not give it a value; the
    per-pattern null shuffles points instead: centred near 0, and a pattern that clusters lies far above it."""
    from serpent.embedding import _cross_token
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 150, 1200)
    lab = np.where(rng.random(1200) < 0.2, "induction", "other")
    first = np.unique(tok, return_index=True)[1]
    lab[first] = "other"                                          # as in text: a first occurrence never induces
    X = rng.normal(size=(1200, 4))
    X[lab == "induction"] += 4.0                                  # induction points lie together, across tokens
    _, _, _, by_label, null = _cross_token(X, lab, tok, k=10, n_perm=20, max_points=None, seed=0)
    mean, sd = null["induction"]
    assert np.isfinite(mean) and abs(mean) < 0.05 and 0 < sd < 0.05
    assert by_label["induction"] > mean + 10 * sd
