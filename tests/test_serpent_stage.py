"""The serpent stage on a run directory: labels, aligned UMAP, separation, PNGs and the explorer page."""

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from serpent.config import get_preset
from serpent.errors import SerpentError
from serpent.patterns import PATTERNS, classify_ids


@pytest.mark.slow
def test_serpent_stage_on_a_synthetic_run(tmp_path):
    from serpent.stages import serpent_stage
    from serpent.rundir import Run
    from serpent.susceptibility import SusceptibilityResult
    from serpent.tokenizer import train_bpe

    cfg = get_preset("tiny", embedding={"max_points_page": 150, "n_neighbors": 10})
    run = Run.create(tmp_path / "run", cfg)
    with pytest.raises(SerpentError, match="no susceptibilities"):
        serpent_stage(run, progress=False)

    import serpent.embedding as emb_mod
    text = inspect.getsource(emb_mod) + inspect.getsource(json)
    tok = train_bpe([text], 400)
    tok.save(run.path / "tokenizer")
    ids = tok.encode(text)
    S, L = 6, 48
    probe = np.array([[tok.bos_id] + ids[i * 300:i * 300 + L - 1] for i in range(S)], dtype=np.int64)
    seq = np.repeat(np.arange(S), L - 1)
    pos = np.tile(np.arange(1, L), S)
    pats = np.array([classify_ids(probe[s], tok)[p] for s, p in zip(seq, pos)])
    rng = np.random.default_rng(0)
    centers = {p: rng.normal(size=16) * 5 for p in PATTERNS}
    comps = [f"{l}:{h}" for l in range(2) for h in range(8)]
    for k, step in enumerate([0, 57, 400]):                 # pattern structure grows with training
        a = k / 2
        chi = a * np.array([centers[p] for p in pats]) + rng.normal(size=(len(seq), 16))
        SusceptibilityResult(step=step, components=comps, chi=chi.astype(np.float32),
                             chi_se=np.full(chi.shape, 0.1, np.float32), probe_tokens=probe, seq_index=seq,
                             position=pos, doc_names=[f"doc{s}" for s in range(S)], settings={}).save(
            run.path / "susceptibility" / f"step_{step:07d}.safetensors")

    summary = serpent_stage(run, progress=False)
    out = run.path / "serpent"
    assert summary["steps"] == [0, 57, 400]
    assert summary["separation_first"] < 0.2 < 0.8 < summary["separation_last"]      # cross-token, in 16-D
    assert summary["separation_map_first"] < summary["separation_map_last"]
    assert sum(summary["pattern_counts"].values()) == len(seq)
    frame = pd.read_parquet(out / "embedding.parquet")
    assert len(frame) == 3 * len(seq)
    assert {"x", "y", "pattern", "token", "context", "n_prev_spaces", "0:0", "1:7"} <= set(frame.columns)
    assert (frame[frame.step == 0]["pattern"].astype(str).to_numpy() == pats).all()
    sep = json.loads((out / "separation.json").read_text())
    assert set(sep["steps"]) == {"0", "57", "400"}
    assert sep["headline"] == "cross_token" and sep["headline"] in sep["measure"]
    assert {"map", "features", "cross_token", "cross_token_map", "cross_token_null_mean", "cross_token_null_sd",
            "silhouette", "by_pattern", "by_pattern_cross_token"} <= set(sep["steps"]["0"])
    last = sep["steps"]["400"]
    assert last["cross_token"] > last["cross_token_null_mean"] + 5 * last["cross_token_null_sd"]
    assert sep["steps"]["0"]["by_pattern_cross_token"]["word start"] < 0.3 < last["by_pattern_cross_token"]["word start"]
    # the body plan per checkpoint: the planted pattern structure is read back from χ as training goes on
    from serpent.stages import load_anatomy
    anat = load_anatomy(run)
    assert sorted(anat) == [0, 57, 400]
    assert json.loads((out / "anatomy.json").read_text())["preprocess"] == "standardize"
    assert {"pc1_share", "pc2_share", "thickness", "pc2_top_heads", "pattern", "fin", "fin_whitespace"} <= set(anat[0])
    assert anat[0]["pattern"]["accuracy"] < anat[0]["pattern"]["majority"] + 0.1
    assert anat[400]["pattern"]["accuracy"] > anat[400]["pattern"]["null_mean"] + 0.3
    assert summary["pattern_readout_last"] == anat[400]["pattern"]["accuracy"]
    for step in (0, 57, 400):
        assert (out / f"step_{step:07d}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "serpent.png").stat().st_size > 1000
    clusters = json.loads((out / "clusters.json").read_text())                  # issue 34: the clusters' cards
    assert clusters["steps"] == [0, 57, 400] and len(clusters["labels"]["400"]) == len(seq)
    assert not any(c["stands_out"] for c in clusters["cards"]["0"])               # noise at step 0
    assert summary["clusters_last"][0] >= 4                                       # the patterns' groups at 400
    page = (run.path / "explorer.html").read_text(encoding="utf-8")
    assert 'id="clist"' in page and '"cards":[[' in page
    assert "vegaEmbed" in page and "150 tokens" in page

    # current: the second call skips the work and returns the same summary
    mtime = (out / "embedding.parquet").stat().st_mtime_ns
    assert serpent_stage(run, progress=False) == summary
    assert (out / "embedding.parquet").stat().st_mtime_ns == mtime

    # the explorer from the run directory (what `python -m serpent explore RUN_DIR` calls)
    from serpent.explorer import write_explorer
    p = write_explorer(run, tmp_path / "other.html")
    assert p.exists() and "separation" in p.read_text(encoding="utf-8")
