"""The induction toy: its data, and a known answer for training + detectors together (the circuit forms)."""

import copy
import math

import pytest
import torch

from serpent.errors import ConfigError
from serpent.induction import classify_heads, induction_scores
from serpent.induction_toy import (TOY_MODEL, copyable_tokens, grow_induction_circuit, repeated_segments,
                                   sgld_minibatches)


def _period(row: torch.Tensor) -> int:
    body = row[1:]
    return next(p for p in range(1, len(body)) if bool((body[p:] == body[:-p]).all()))


def test_repeated_segments_repeat_one_segment_with_a_period_that_varies():
    x = repeated_segments(200, 64, 512, seed=3)
    assert x.shape == (200, 64) and x.dtype == torch.long
    assert bool((x[:, 0] == 0).all()) and bool((x[:, 1:] != 0).all())
    periods = [_period(r) for r in x]
    assert min(periods) >= 4 and max(periods) <= 31
    assert len(set(periods)) > 15                      # no single period a model could memorise
    for r, p in zip(x, periods):
        assert len(set(r[1:p + 1].tolist())) == p      # distinct tokens inside a segment: the earlier match is unique
    assert torch.equal(x, repeated_segments(200, 64, 512, seed=3))
    assert not torch.equal(x, repeated_segments(200, 64, 512, seed=4))


def test_repeated_segments_fixed_period_and_errors():
    x = repeated_segments(5, 40, 100, min_period=7, max_period=7, bos_id=3, seed=0)
    assert all(_period(r) == 7 for r in x) and bool((x[:, 0] == 3).all()) and bool((x[:, 1:] != 3).all())
    with pytest.raises(ConfigError, match="min_period"):
        repeated_segments(2, 40, 100, min_period=10, max_period=5)
    with pytest.raises(ConfigError, match="vocab_size"):
        repeated_segments(2, 64, 10)
    with pytest.raises(ConfigError, match="steps"):
        grow_induction_circuit(steps=0)


@pytest.fixture(scope="module")
def grown():
    return grow_induction_circuit(steps=1200, eval_every=100, keep_every=100, progress=False)


def test_the_induction_circuit_grows_on_repeated_segments(grown):
    """Known answer: a previous-token head in layer 0 and an induction head in layer 1 appear, none at step 0, the
    loss leaves the uniform-guess plateau ln(V - 1), and the circuit works at probe lengths it was not scored on."""
    model, history = grown.model, grown.history
    start = classify_heads(history, step=0)
    assert start["induction"] == [] and start["previous_token"] == []
    end = classify_heads(history)
    assert any(h.startswith("1:") for h in end["induction"]), end["heads"]
    loss = history[history["score"] == "train_loss"].set_index("step")["value"]
    assert abs(loss.iloc[0] - math.log(TOY_MODEL.d_vocab - 1)) < 0.3       # the first 100 steps: guessing
    assert loss.iloc[-1] < 0.5 * loss.iloc[0]
    for half_len in (13, 20):
        other = induction_scores(model, n_seqs=16, half_len=half_len, seed=7)
        c = classify_heads(other)
        assert any(h.startswith("0:") for h in c["previous_token"]), c["heads"]
        assert any(h.startswith("1:") for h in c["induction"]), c["heads"]
        copy = other[other["head"] == "model"].set_index("score")["value"]
        assert copy["loss_second_half"] < 0.5 * copy["loss_first_half"]


def test_snapshots_are_copies_taken_at_their_steps(grown):
    assert sorted(grown.snapshots) == list(range(0, 1201, 100))
    last = grown.snapshots[1200]
    for name, p in grown.model.named_parameters():
        assert torch.equal(last[name], p.detach()) and last[name].data_ptr() != p.data_ptr()
    assert not torch.equal(grown.snapshots[0]["blocks.1.attn.W_Q"], last["blocks.1.attn.W_Q"])


def test_the_llc_jumps_when_the_circuit_forms(grown):
    """What notebook 4 shows: the LLC levels off on the loss plateau and more than doubles across the transition
    (measured with seeds 0-2: about 18 at steps 700-800, 41-44 at step 1200)."""
    from serpent.config import SamplerConfig
    from serpent.llc import estimate_llc
    batches = sgld_minibatches(20)
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=40, batch_size=16)
    llc = {s: estimate_llc(TOY_MODEL, grown.snapshots[s], batches, cfg, progress=False).mean
           for s in (0, 400, 700, 1200)}
    assert llc[0] < llc[400] < llc[1200]
    assert abs(llc[700] - llc[400]) < 0.3 * llc[400]            # the plateau
    assert llc[1200] > 1.8 * llc[700]                            # the transition


def test_copyable_tokens_follow_the_induction_pattern_rule():
    from serpent.patterns import classify_tokens
    rng = torch.Generator().manual_seed(0)
    rows = torch.randint(1, 6, (30, 25), generator=rng)           # few ids: many repeated bigrams, runs of one id
    rows[:, 0] = 0
    ours = copyable_tokens(rows.numpy())
    for row, mine in zip(rows.tolist(), ours):
        theirs = classify_tokens([f"Ġw{i}" for i in row])           # the pattern classifier on stand-in strings
        assert [p == "induction" for p in theirs] == mine.tolist()
    x = repeated_segments(50, 64, 512, seed=1)
    first = [next(t for t in range(1, 64) if c[t]) for c in copyable_tokens(x.numpy())]
    periods = [_period(r) for r in x]
    assert first == [p + 2 for p in periods]                       # after the first period and its first repeat


def test_copyable_tokens_separate_in_susceptibility_space_once_the_circuit_forms(grown):
    """The serpent's claim with a ground truth: at initialisation copyable and new tokens are mixed in the
    16-dimensional susceptibility space, after the transition they separate (notebook 6: 0.02 -> 0.92)."""
    from serpent.config import SamplerConfig
    from serpent.embedding import preprocess, separation
    from serpent.susceptibility import susceptibilities
    probe = repeated_segments(8, TOY_MODEL.n_ctx, TOY_MODEL.d_vocab, seed=7_000_000)
    kind = copyable_tokens(probe.numpy())
    batches = sgld_minibatches(20)
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=20, batch_size=16)
    model = copy.deepcopy(grown.model)
    sep = {}
    for step in (0, 1200):
        model.load_state_dict(grown.snapshots[step], strict=False)
        r = susceptibilities(model, probe, lambda i: batches[i % 20], cfg, step=step, progress=False)
        assert r.chi.shape == (8 * (TOY_MODEL.n_ctx - 1), 16)
        sep[step] = separation(preprocess(r.chi), kind[r.seq_index, r.position])
    assert sep[0] < 0.3 and sep[1200] > 0.8, sep


def test_the_cache_returns_the_same_circuit_without_training_and_recovers_from_damage(tmp_path, monkeypatch):
    import serpent.induction_toy as toy
    from serpent.model import per_token_loss, model_params
    kw = dict(steps=6, eval_every=3, keep_every=3, seed=2, progress=False, device="cpu")
    first = grow_induction_circuit(TOY_MODEL, cache=tmp_path, **kw)
    (entry,) = tmp_path.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["history.parquet", "meta.json", "params.safetensors"]

    calls = []
    real = toy.repeated_segments
    monkeypatch.setattr(toy, "repeated_segments", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = grow_induction_circuit(TOY_MODEL, cache=tmp_path, **kw)
    assert len(calls) == 1                       # the argument check only: no training batches were drawn
    assert again.history.equals(first.history) and again.history.attrs["half_len"] == first.history.attrs["half_len"]
    assert sorted(again.snapshots) == sorted(first.snapshots) == [0, 3, 6]
    for step in first.snapshots:
        for k, v in first.snapshots[step].items():
            assert torch.equal(again.snapshots[step][k], v)
    x = repeated_segments(2, TOY_MODEL.n_ctx, TOY_MODEL.d_vocab, seed=9)
    # the cached weights are the trained ones bit for bit, so the same forward gives the same losses bit for bit
    assert torch.equal(per_token_loss(model_params(again.model), x, TOY_MODEL),
                       per_token_loss(model_params(first.model), x, TOY_MODEL))

    other = grow_induction_circuit(TOY_MODEL, cache=tmp_path, **{**kw, "seed": 3})     # other arguments: new entry
    assert len(list(tmp_path.iterdir())) == 2 and not other.history.equals(first.history)

    (entry / "params.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setattr(toy, "repeated_segments", real)
    with pytest.warns(UserWarning, match="damaged toy cache"):
        rebuilt = grow_induction_circuit(TOY_MODEL, cache=tmp_path, **kw)
    assert rebuilt.history.equals(first.history)   # recomputed (training is deterministic on a CPU)
    assert (entry / "params.safetensors").stat().st_size > 1000
