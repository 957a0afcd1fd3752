"""Induction-head detectors: a hand-built circuit they must single out, a random model they must call chance, a
small model trained on a synthetic copying task whose scores must rise, and the ``induction`` stage on a run dir."""
import contextlib
import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from serpent.config import ModelConfig, RunConfig
from serpent.errors import ConfigError, CorpusError, SerpentError
from serpent.induction import (InductionConfig, chance_scores, classify_heads, icl_positions, icl_windows,
                               induction_scores, planted_induction_model, repeated_random_tokens)
from serpent.stages.induction import induction_stage, scores_over_checkpoints
from serpent.induction_toy import repeated_segments
from serpent.model import build_model, model_params, per_token_loss
from tolerances import assert_f32_close, forward_terms


def _wide(df):
    return df[df["head"] != "model"].pivot(index="head", columns="score", values="value")


def _model_rows(df):
    return df[df["head"] == "model"].set_index("score")["value"]


# ----------------------------------------------------------------------------------------------------------------
# probes
# ----------------------------------------------------------------------------------------------------------------

def test_probe_is_seeded_repeated_distinct_and_avoids_special_tokens():
    a = repeated_random_tokens(8, 20, 100, bos_id=3, exclude=[5, 7], seed=11)
    b = repeated_random_tokens(8, 20, 100, bos_id=3, exclude=[5, 7], seed=11)
    c = repeated_random_tokens(8, 20, 100, bos_id=3, exclude=[5, 7], seed=12)
    assert a.shape == (8, 41) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == 3).all()
    assert torch.equal(a[:, 1:21], a[:, 21:])
    body = a[:, 1:]
    assert not torch.isin(body, torch.tensor([3, 5, 7])).any()
    assert ((body >= 0) & (body < 100)).all()
    for row in a[:, 1:21]:
        assert len(set(row.tolist())) == 20  # distinct: the earlier occurrence is unambiguous
    # the draw covers the vocabulary (not a fixed subset)
    assert len(set(repeated_random_tokens(64, 20, 100, seed=0)[:, 1:].flatten().tolist())) > 90


def test_probe_and_window_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="half_len"):
        repeated_random_tokens(2, 1, 50)
    with pytest.raises(ConfigError, match="vocab"):
        repeated_random_tokens(2, 4, 2, bos_id=0, exclude=[1])
    with pytest.raises(CorpusError, match="fewer than one window"):
        icl_windows(np.arange(10), 2, 32)
    m = build_model(ModelConfig(n_heads=2, d_model=16, d_head=4, n_ctx=4, d_vocab=64))
    with pytest.raises(ConfigError, match="too short"):
        induction_scores(m, n_seqs=2)
    m = build_model(ModelConfig(n_heads=2, d_model=16, d_head=4, n_ctx=16, d_vocab=64))
    with pytest.raises(ConfigError, match="does not fit"):
        induction_scores(m, probe=repeated_random_tokens(2, 10, 64))
    with pytest.raises(ConfigError, match="n_seqs"):
        InductionConfig(n_seqs=0)
    with pytest.raises(ConfigError, match="prev_threshold"):
        InductionConfig(prev_threshold=-1.0)


def test_icl_windows_and_positions():
    stream = np.arange(1, 5001) % 997 + 1
    w = icl_windows(stream, 6, 64, bos_id=0, seed=4)
    assert w.shape == (6, 64) and (w[:, 0] == 0).all()
    assert torch.equal(w, icl_windows(stream, 6, 64, bos_id=0, seed=4))
    for row in w:  # each window is a contiguous slice of the stream
        start = int(np.flatnonzero(stream == int(row[1]))[0])
        assert np.array_equal(stream[start:start + 63], row[1:].numpy())
    early, late = icl_positions(1024)
    assert (early.start, early.stop - 1, late.start, late.stop - 1) == (40, 60, 490, 510)
    for T in (16, 64, 128, 256, 1024):
        e, l = icl_positions(T)
        assert 1 <= e.start < e.stop <= l.start < l.stop <= T


def test_chance_levels_are_uniform_attention_scores():
    L = 7
    c = chance_scores(L)
    T = 2 * L + 1
    pattern = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    prev = np.mean([pattern[q, q - 1].item() for q in range(2, T)])
    prefix = np.mean([pattern[L + i, i + 1].item() for i in range(1, L + 1)])
    assert c["prev_token"] == pytest.approx(prev) and c["prefix"] == pytest.approx(prefix)


# ----------------------------------------------------------------------------------------------------------------
# the detectors read the right entries of the attention pattern
# ----------------------------------------------------------------------------------------------------------------

def test_hook_scores_equal_a_direct_reading_of_cached_patterns():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, n_heads=3, d_model=24, d_head=8, n_ctx=40, d_vocab=50, seed=3)
    model = build_model(cfg)
    with torch.no_grad():  # sharpen the random attention so that the entries differ clearly
        for l in range(2):
            model.blocks[l].attn.W_Q.mul_(20.0)
    L = 9
    probe = repeated_random_tokens(5, L, 50, seed=1)
    df = induction_scores(model, probe=probe, batch_size=2)
    _, cache = model.run_with_cache(probe, names_filter=lambda n: n.endswith("hook_pattern"))
    w = _wide(df)
    for l in range(2):
        pat = cache[f"blocks.{l}.attn.hook_pattern"]  # (batch, head, q, k)
        for h in range(3):
            prev = np.mean([pat[b, h, q, q - 1].item() for b in range(5) for q in range(2, 2 * L + 1)])
            pref = np.mean([pat[b, h, L + i, i + 1].item() for b in range(5) for i in range(1, L + 1)])
            # attention probabilities (through the forward, in another order) averaged over 5 x 17 or 5 x 9 entries
            n = forward_terms(cfg) + 5 * 2 * L
            assert_f32_close(w.loc[f"{l}:{h}", "prev_token"], prev, terms=n, what="previous-token score vs pattern")
            assert_f32_close(w.loc[f"{l}:{h}", "prefix"], pref, terms=n, what="prefix score vs pattern")
    # ... and agree with the references the course's exercise checks use
    from serpent.checks import reference_prefix_score, reference_prev_token_score
    for l in range(2):
        pat = cache[f"blocks.{l}.attn.hook_pattern"]
        ref_prev, ref_pref = reference_prev_token_score(pat, L), reference_prefix_score(pat, L)
        for h in range(3):
            assert_f32_close(w.loc[f"{l}:{h}", "prev_token"], ref_prev[h].item(), terms=n, what="prev-token vs check")
            assert_f32_close(w.loc[f"{l}:{h}", "prefix"], ref_pref[h].item(), terms=n, what="prefix vs check")
    loss = model(probe, return_type="loss", loss_per_token=True)
    m = _model_rows(df)
    # the ICL score (computed with the fused forward, on truncated windows) equals the model's own losses
    windows = icl_windows(np.arange(1, 2000) % 49 + 1, 6, 40, seed=2)
    icl = _model_rows(induction_scores(model, probe=probe, text_tokens=windows))
    full = model(windows, return_type="loss", loss_per_token=True)
    early, late = icl_positions(40)
    # the fused forward against TransformerLens: per-token losses averaged over the windows' positions
    n_early, n_late = 6 * (early.stop - early.start), 6 * (late.stop - late.start)
    assert_f32_close(icl["icl_loss_early"], full[:, early.start - 1:early.stop - 1].mean().item(),
                     terms=forward_terms(cfg, tokens=n_early), what="ICL early loss vs TransformerLens")
    assert_f32_close(icl["icl_loss_late"], full[:, late.start - 1:late.stop - 1].mean().item(),
                     terms=forward_terms(cfg, tokens=n_late), what="ICL late loss vs TransformerLens")
    assert_f32_close(m["loss_first_half"], loss[:, 1:L].mean().item(), terms=forward_terms(cfg, tokens=5 * (L - 1)),
                     what="first-half loss vs TransformerLens")
    assert_f32_close(m["loss_second_half"], loss[:, L + 1:].mean().item(), terms=forward_terms(cfg, tokens=5 * L),
                     what="second-half loss vs TransformerLens")
    # one float subtraction of the two numbers above, rounded once
    assert_f32_close(m["induction_loss_diff"], m["loss_second_half"] - m["loss_first_half"], terms=2,
                     scale=m["loss_first_half"], what="induction loss difference")


# ----------------------------------------------------------------------------------------------------------------
# proof on a planted circuit
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prev_head,ind_head", [(1, 2), (3, 0)])
def test_planted_circuit_is_singled_out(prev_head, ind_head):
    V, N, L = 64, 64, 30
    model = planted_induction_model(d_vocab=V, n_ctx=N, n_heads=4, prev_head=prev_head, induction_head=ind_head)
    stream = repeated_random_tokens(40, 25, V, seed=5)[:, 1:].flatten().numpy()  # text full of repeats
    windows = icl_windows(stream, 16, N, bos_id=0, seed=0)
    df = induction_scores(model, n_seqs=16, half_len=L, seed=7, text_tokens=windows)
    c = classify_heads(df)
    assert c["previous_token"] == [f"0:{prev_head}"]
    assert c["induction"] == [f"1:{ind_head}"]
    assert sum(v["class"] == "other" for v in c["heads"].values()) == 6
    w = _wide(df)
    assert w.loc[f"0:{prev_head}", "prev_token"] > 0.95
    assert w.loc[f"1:{ind_head}", "prefix"] > 0.95
    others = w.drop(index=[f"0:{prev_head}", f"1:{ind_head}"])
    assert others["prefix"].max() < c["thresholds"]["prefix"]
    assert others["prev_token"].max() < c["thresholds"]["prev_token"]
    m = _model_rows(df)
    assert m["loss_first_half"] > 2.0                       # the first copy is unpredictable ...
    assert m["loss_second_half"] < 0.05 * m["loss_first_half"]  # ... the second is copied
    assert m["icl_score"] < -1.0                            # it also uses context on repetitive text


def test_planted_circuit_breaks_when_the_previous_token_head_is_removed():
    model = planted_induction_model(d_vocab=48, n_ctx=48, n_heads=2, prev_head=0, induction_head=1)
    with torch.no_grad():
        model.blocks[0].attn.W_O[0].zero_()  # K-composition input gone
    df = induction_scores(model, n_seqs=8, half_len=20)
    c = classify_heads(df)
    assert c["induction"] == [] and c["previous_token"] == ["0:0"]  # layer 0 still attends, nothing to compose
    m = _model_rows(df)
    # without the previous-token head the layer-1 head only copies context tokens at large: no exact copying
    assert m["loss_second_half"] > 0.5 * m["loss_first_half"]


def test_random_model_scores_near_chance():
    cfg = ModelConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=128, d_vocab=2048, seed=1)
    model = build_model(cfg)
    df = induction_scores(model, n_seqs=16, half_len=128, seed=0)   # shrinks to 63 for n_ctx 128
    chance = chance_scores(63)
    w = _wide(df)
    assert len(w) == 16
    assert ((w["prev_token"] / chance["prev_token"]).between(0.6, 1.6)).all(), w["prev_token"]
    assert ((w["prefix"] / chance["prefix"]).between(0.6, 1.6)).all(), w["prefix"]
    c = classify_heads(df)
    assert c["induction"] == [] and c["previous_token"] == []
    m = _model_rows(df)
    assert abs(m["induction_loss_diff"]) < 0.05
    assert m["chance_prefix"] == pytest.approx(chance["prefix"])


def test_classify_heads_thresholds_steps_and_errors():
    rows = []
    for step, (p, x) in {0: (0.02, 0.01), 100: (0.5, 0.3)}.items():
        rows += [(step, "0:0", "prev_token", p), (step, "0:0", "prefix", 0.0),
                 (step, "1:0", "prev_token", 0.0), (step, "1:0", "prefix", x),
                 (step, "model", "chance_prefix", 0.02), (step, "model", "chance_prev_token", 0.05)]
    df = pd.DataFrame(rows, columns=["step", "head", "score", "value"])
    c = classify_heads(df)
    assert c["step"] == 100 and c["previous_token"] == ["0:0"] and c["induction"] == ["1:0"]
    assert c["thresholds"]["prefix"] == pytest.approx(0.1)      # 5 x chance beats the stated 0.04
    assert c["thresholds"]["prev_token"] == pytest.approx(0.25)
    assert classify_heads(df, step=0)["induction"] == []
    assert classify_heads(df, prefix_threshold=0.4)["induction"] == []
    json.dumps(c)
    with pytest.raises(ConfigError, match="steps"):
        classify_heads(df, step=5)
    with pytest.raises(SerpentError, match="prefix"):
        classify_heads(df[df["score"] != "prefix"])


def test_charts_render_and_thin_long_tables():
    from serpent.charts.induction import icl_chart, induction_scores_chart
    steps = list(range(0, 4000, 10))  # 400 steps x 16 heads x 2 scores = 12,800 rows
    heads = [f"{l}:{h}" for l in range(2) for h in range(8)]
    rows = [(s, hd, sc, 0.01 * (i + 1) * np.log1p(s)) for s in steps for i, hd in enumerate(heads)
            for sc in ("prev_token", "prefix")]
    rows += [(s, "model", "icl_score", -0.001 * s) for s in steps]
    df = pd.DataFrame(rows, columns=["step", "head", "score", "value"])
    spec = induction_scores_chart(df, top=2, thresholds={"prefix": 0.04}).to_dict()
    text = json.dumps(spec)
    assert "symlog" in text and '"1:7"' in text and '"1:6"' in text
    assert icl_chart(df).to_dict()["layer"][0]["mark"]["type"] == "line"


# ----------------------------------------------------------------------------------------------------------------
# a small model trained on a synthetic task, saved as a run, and the stage
# ----------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _one_thread():
    # on a shared 2-core machine one thread is ~10x faster than two for this tiny model
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_synthetic_training_grows_the_circuit_and_the_stage_records_it(tmp_path):
    from serpent.checkpoints import save_checkpoint
    from serpent.rundir import Run

    V, T = 32, 64
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32, d_head=8, n_ctx=T, d_vocab=V, seed=0)
    run = Run.create(tmp_path / "run", RunConfig(model=cfg))
    (run.path / "data").mkdir()
    # held-out documents longer than the context, so that most ICL windows lie inside one document
    periodic = functools.partial(repeated_segments, vocab_size=V, min_period=4, max_period=12)  # [BOS, r, r, r, ...]
    np.save(run.path / "data" / "test.npy", periodic(40, 400, seed=10**6).numpy().reshape(-1).astype(np.uint16))
    save_steps = {0, 25, 50, 100, 150, 200, 250, 300, 400}
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    with _one_thread():
        for step in range(max(save_steps) + 1):
            if step in save_steps:
                save_checkpoint(run.checkpoint_path(step), model_params(model), step, cfg)
            if step == max(save_steps):
                break
            tokens = periodic(32, T, seed=step)
            loss = per_token_loss(model_params(model), tokens, cfg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        summary = induction_stage(run, progress=False)

    out = run.path / "induction"
    for name in ("scores.parquet", "heads.json", "scores.png", "scores.html", "icl.png", "icl.html"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vega" in (out / "scores.html").read_text()
    df = pd.read_parquet(out / "scores.parquet")
    assert list(df.columns) == ["step", "head", "score", "value"]
    assert sorted(df["step"].unique()) == sorted(save_steps)
    heads = json.loads((out / "heads.json").read_text())
    assert heads["half_len"] == 31 and heads["step"] == 400

    by = {s: g for s, g in df.groupby("step")}
    first, last = _wide(by[0]), _wide(by[400])
    assert last["prefix"].max() > 0.25 and last["prefix"].max() > 5 * first["prefix"].max()
    assert last["prev_token"].max() > 1.8 * first["prev_token"].max()
    best_prefix = pd.Series({s: _wide(g)["prefix"].max() for s, g in by.items()}).sort_index()
    assert best_prefix.corr(pd.Series(best_prefix.index, index=best_prefix.index), method="spearman") > 0.7
    m0, m1 = _model_rows(by[0]), _model_rows(by[400])
    assert abs(m0["induction_loss_diff"]) < 0.3 and m1["induction_loss_diff"] < -1.0
    assert abs(m0["icl_score"]) < 0.3 and m1["icl_score"] < -1.0
    assert heads["induction"] and all(h.startswith("1:") for h in heads["induction"])
    assert summary["induction_heads"] == heads["induction"] and summary["final_step"] == 400
    assert run.stage_is_current("induction", run.stage_summary("induction")["key"])
    # second call: nothing recomputed
    again = induction_stage(run, progress=False)
    assert again.get("skipped") is True and again["induction_heads"] == heads["induction"]
    # the same numbers come from scores_over_checkpoints for one step
    one = scores_over_checkpoints(run, steps=[400], progress=False)
    pd.testing.assert_frame_equal(one.reset_index(drop=True), by[400].reset_index(drop=True), check_exact=False)


def test_any_transformer_bridge_works_three_layers_mlps_rotary():
    from bridges import tiny_pythia
    model = tiny_pythia(n_layers=3, n_heads=2, d_model=32, d_mlp=64, n_ctx=48, d_vocab=80, rotary_pct=1.0)
    cfg = model.cfg
    windows = icl_windows(np.arange(3000) % 79 + 1, 4, 48, bos_id=0, seed=0)
    df = induction_scores(model, n_seqs=3, half_len=12, bos_id=0, exclude=[1, 2], text_tokens=windows)
    assert sorted(df[df["head"] != "model"]["head"].unique()) == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"]
    full = model(windows, return_type="loss", loss_per_token=True)  # the fallback path (no fused forward here)
    early, late = icl_positions(48)
    icl = _model_rows(df)
    # the bridge's forward both times, maybe batched otherwise: a difference of two mean losses (scale: the losses)
    want = full[:, late.start - 1:late.stop - 1].mean().item() - full[:, early.start - 1:early.stop - 1].mean().item()
    assert_f32_close(icl["icl_score"], want, scale=full.max().item(),
                     terms=forward_terms(cfg, tokens=4 * (early.stop - early.start)) + 1, what="ICL score vs losses")
    assert np.isfinite(df["value"]).all()
