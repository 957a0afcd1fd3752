"""serpent.circuits against the hand-built induction circuit, whose answer is known."""

import math

import pytest
import torch

from serpent.circuits import ablate_heads, composition_scores, corrupted_probe, patch_heads
from serpent.errors import ConfigError
from serpent.induction import planted_induction_model, repeated_random_tokens

V = 32


@pytest.fixture(scope="module")
def planted():
    return planted_induction_model(d_vocab=V, n_ctx=40, n_heads=4, prev_head=1, induction_head=2)


@pytest.fixture(scope="module")
def probe():
    return repeated_random_tokens(6, 12, V, seed=3)


def test_ablation_names_the_two_heads_of_the_circuit(planted, probe):
    df = ablate_heads(planted, probe).set_index("head")
    none = df.loc["none"]
    assert none["in_context_gain"] > 2                    # the planted circuit copies: the second copy is easy
    for head in ("0:1", "1:2"):                            # previous-token and induction heads: needed
        assert df.loc[head, "delta_second"] > 2 and df.loc[head, "in_context_gain"] < none["in_context_gain"] / 2
    for head in ("0:0", "0:2", "0:3", "1:0", "1:1", "1:3"):  # decoys write nothing (W_O = 0): no effect at all
        assert df.loc[head, "delta_second"] == pytest.approx(0, abs=1e-5)
    zero = ablate_heads(planted, probe, heads=["1:2"], kind="zero").set_index("head")
    assert zero.loc["1:2", "delta_second"] > 2
    both = ablate_heads(planted, probe, heads=["0:0", "1:0"], together=True)
    assert both["head"].tolist() == ["none", "0:0+1:0"] and both["delta_second"].abs().max() < 1e-5


def test_patching_recovers_through_the_induction_head_only(planted, probe):
    df = patch_heads(planted, probe).set_index("head")
    assert df.attrs["corrupted"] > df.attrs["clean"] + 2
    assert df.loc["1:2", "recovered"] > 0.9               # it carries the copied token itself
    assert df.loc["0:1", "recovered"] < 0.2               # it only points at a position whose token is corrupted
    assert df.drop(["1:2", "0:1"])["recovered"].abs().max() < 1e-4


def test_corrupted_probe_keeps_the_targets_and_removes_every_copy(probe):
    c = corrupted_probe(probe, V, seed=5)
    L = (probe.shape[1] - 1) // 2
    assert torch.equal(c[:, L + 1:], probe[:, L + 1:]) and torch.equal(c[:, 0], probe[:, 0])
    for i in range(len(c)):
        assert not set(c[i, 1:L + 1].tolist()) & set(probe[i, L + 1:].tolist())


def test_k_composition_of_the_planted_pair_is_exact(planted):
    comp = composition_scores(planted).set_index(["kind", "source", "target"])["score"]
    # W_OV of 0:1 maps the token block onto the previous-token block, which W_K of 1:2 reads: two aligned
    # rank-V identities, so ||A B|| / (||A|| ||B||) = sqrt(V) / V
    assert comp.loc[("K", "0:1", "1:2")] == pytest.approx(1 / math.sqrt(V), rel=1e-5)
    assert comp.loc[("Q", "0:1", "1:2")] == pytest.approx(0, abs=1e-7)
    assert comp.loc[("V", "0:1", "1:2")] == pytest.approx(0, abs=1e-7)
    k = comp.loc["K"]
    assert k.idxmax() == ("0:1", "1:2")
    assert (k.loc[["0:0", "0:2", "0:3"]] == 0).all()       # sources that write nothing


def test_random_weights_score_near_the_baseline():
    from serpent.config import ModelConfig
    from serpent.model import build_model
    m = build_model(ModelConfig(n_layers=2, n_heads=4, d_model=64, d_head=16, n_ctx=32, d_vocab=100))
    comp = composition_scores(m)
    ratio = comp["score"] / comp["baseline"]
    assert 0.7 < ratio.median() < 1.3


def test_bad_heads_and_probes_are_refused(planted, probe):
    with pytest.raises(ConfigError, match="layer:head"):
        ablate_heads(planted, probe, heads=["one"])
    with pytest.raises(ConfigError, match="does not exist"):
        ablate_heads(planted, probe, heads=["2:0"])
    with pytest.raises(ConfigError, match="does not fit"):
        patch_heads(planted, repeated_random_tokens(2, 30, V))
    with pytest.raises(ConfigError, match="kind"):
        ablate_heads(planted, probe, kind="resample")
