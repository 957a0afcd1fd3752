"""The body plan's numbers (serpent.anatomy) on constructed χ whose answer is known: a planted second axis, a
planted spacing fin, pattern labels that are and are not recoverable, two SGLD seeds that agree and that do not."""

import numpy as np
import pytest

from serpent.anatomy import (anatomy_table, auc, body_axes, checkpoint_anatomy, pattern_readout, seed_agreement,
                             spacing_fin)
from serpent.errors import SerpentError

HEADS = [f"{l}:{h}" for l in range(2) for h in range(8)]


def _body(n=800, second=0.0, seed=0, fraction=0.15):
    """χ with one global mode (every head alike: the long axis) and, optionally, a second axis on which the
    induction tokens sit apart, carried by heads 0:4 (+) and 1:6 (-) only."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < fraction, "induction", rng.choice(["word start", "word part", "other"], n))
    body = rng.normal(size=n) * 3
    chi = np.outer(body, np.ones(16)) + 0.3 * rng.normal(size=(n, 16))
    side = np.where(labels == "induction", -1.0, fraction / (1 - fraction)) * second
    chi[:, HEADS.index("0:4")] += side
    chi[:, HEADS.index("1:6")] -= side
    return chi, labels


def test_the_long_axis_is_the_global_mode():
    chi, labels = _body()
    ax = body_axes(chi, labels)
    assert ax.shares[0] > 0.9 and ax.mean_corr > 0.99
    a = checkpoint_anatomy(chi, labels, components=HEADS, bootstrap=20, null=20, classifier=False)
    assert a["pc1_uniformity"] == 1.0                          # every head loads with one sign
    assert a["pc1_share_ci"][0] <= a["pc1_share"] <= a["pc1_share_ci"][1]
    flipped = body_axes(-chi, labels)                          # orientation follows the mean χ, not the SVD's sign
    assert flipped.mean_corr > 0.99


def test_a_planted_second_axis_is_found_with_its_heads_and_against_its_null():
    chi, labels = _body(second=2.0)
    a = checkpoint_anatomy(chi, labels, components=HEADS, bootstrap=50, null=100, classifier=False)
    assert set(a["pc2_top_heads"][:2]) == {"0:4", "1:6"}
    assert a["induction_auc_pc2"] > 0.95
    assert a["induction_auc_pc2"] > a["induction_auc_null_mean"] + 10 * a["induction_auc_null_sd"]
    flat = checkpoint_anatomy(*_body(second=0.0), components=HEADS, bootstrap=50, null=100, classifier=False)
    assert abs(flat["induction_auc_pc2"] - flat["induction_auc_null_mean"]) < 4 * flat["induction_auc_null_sd"]
    assert a["thickness"] > 2 * flat["thickness"]
    assert a["thickness_ci"][0] > flat["thickness_ci"][1]      # the bootstrap intervals do not overlap
    t = anatomy_table({0: a, 50: flat, 100: a})              # thins, then thickens again
    assert t["thickening"].tolist()[:2] == [1.0, 1.0] and t["thickening"].iloc[2] > 2


def test_induction_below_the_body_whatever_the_svd_sign():
    chi, labels = _body(second=2.0)
    for sign in (1, -1):
        ax = body_axes(sign * chi, labels)
        ind = labels == "induction"
        assert ax.scores[ind, 1].mean() < ax.scores[~ind, 1].mean()


def test_patterns_are_read_back_when_they_are_in_chi_and_not_when_they_are_not():
    rng = np.random.default_rng(1)
    n = 900
    labels = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    tokens = rng.integers(0, 300, n)
    centres = {"a": rng.normal(size=16), "b": rng.normal(size=16), "c": rng.normal(size=16)}
    chi = np.array([centres[l] for l in labels]) * 2 + rng.normal(size=(n, 16))
    good = pattern_readout(chi, labels, token_ids=tokens, shuffles=5)
    assert good["accuracy"] > 0.9 and good["cross_token_accuracy"] > 0.9
    assert good["accuracy"] > good["null_mean"] + 10 * good["null_sd"]
    bad = pattern_readout(rng.normal(size=(n, 16)), labels, token_ids=tokens, shuffles=5)
    assert bad["accuracy"] < bad["majority"] + 0.05
    assert abs(bad["majority"] - 0.5) < 0.05


def test_a_classifier_that_only_recognises_tokens_fails_across_tokens():
    """Each token id carries its own random χ and its own label: plain folds read the label back from the token's
    copies, folds grouped by token cannot."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 15, 1200)              # 15 tokens in 16 dimensions: any labelling is linearly separable
    own = rng.normal(size=(15, 16)) * 3
    label_of = np.array(["x", "y"] * 8)[:15]
    chi = own[ids] + 0.1 * rng.normal(size=(1200, 16))
    r = pattern_readout(chi, label_of[ids], token_ids=ids, shuffles=3)
    assert r["accuracy"] > 0.95 and r["cross_token_accuracy"] < 0.75


def test_a_planted_spacing_fin_is_found_and_none_where_none_is():
    rng = np.random.default_rng(3)
    n = 400
    pats = np.where(rng.random(n) < 0.5, "spacing", "word start")
    spaces = rng.integers(0, 16, n)
    chi = rng.normal(size=(n, 16))
    fin = chi.copy()
    fin[:, 5] += np.where(pats == "spacing", np.log1p(spaces), 0.0)
    found = spacing_fin(fin, pats, spaces, shuffles=30)
    assert found["present"] and found["rho"] > 0.6 and found["n"] == (pats == "spacing").sum()
    none = spacing_fin(chi, pats, spaces, shuffles=30)
    assert not none["present"] and abs(none["rho"]) < 0.3
    few = spacing_fin(chi[:30], pats[:30], spaces[:30])
    assert not few["present"] and "too few" in few["note"]


def test_the_fin_is_read_across_tokens_so_that_recognising_tokens_is_not_a_fin():
    """Whitespace tokens whose count is a property of the token and whose χ is the token's own random vector (what
    a random network gives): a read-out with plain folds finds a "fin", one with folds grouped by token does not;
    a real counting direction shared by all tokens is found either way."""
    rng = np.random.default_rng(5)
    n, V = 600, 40
    ids = rng.integers(0, V, n)
    count = np.arange(V)[ids] % 16                               # the token's own spaces
    own = rng.normal(size=(V, 16)) * 2
    identity = own[ids] + 0.1 * rng.normal(size=(n, 16))
    pats = np.full(n, "spacing")
    assert spacing_fin(identity, pats, count, shuffles=20)["present"]
    assert not spacing_fin(identity, pats, count, token_ids=ids, shuffles=20)["present"]
    counting = identity.copy()
    counting[:, 2] += 3 * np.log1p(count)
    across = spacing_fin(counting, pats, count, token_ids=ids, shuffles=20)
    assert across["present"] and across["distinct_tokens"] == V


def test_seed_agreement_tells_agreeing_seeds_from_disagreeing_ones():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(500, 16))
    se = np.full(truth.shape, 0.1)
    same = seed_agreement(truth + 0.1 * rng.normal(size=truth.shape), truth + 0.1 * rng.normal(size=truth.shape),
                          se, se)
    assert same["head_corr_min"] > 0.95 and same["rhat_share_above_1_1"] < 0.2
    apart = seed_agreement(truth, rng.normal(size=truth.shape), se, se)
    assert apart["head_corr_median"] < 0.2 and apart["rhat_median"] > 2
    with pytest.raises(SerpentError, match="same tokens"):
        seed_agreement(truth, truth[:10])


def test_auc_and_bad_input():
    assert auc(np.arange(4.0), np.array([False, False, True, True])) == 0.0
    assert np.isnan(auc(np.arange(4.0), np.zeros(4, bool)))
    with pytest.raises(SerpentError, match="at least 10 tokens"):
        checkpoint_anatomy(np.zeros((5, 16)), ["a"] * 5)
    with pytest.raises(SerpentError, match="non-finite"):
        checkpoint_anatomy(np.full((20, 16), np.nan), ["a"] * 20)


def test_training_seed_agreement_ignores_head_order_and_sees_unrelated_runs():
    """Two initialisations need not number their heads alike: a permutation of the heads is the same serpent, and
    an unrelated χ agrees at chance (issue 31, item 4)."""
    from serpent.anatomy import training_seed_agreement
    rng = np.random.default_rng(3)
    n = 500
    lab = np.where(rng.random(n) < 0.2, "induction", "word part")
    body = rng.normal(size=(n, 1))
    second = np.where(lab == "induction", -1.5, 0.3)[:, None]
    chi = body * np.ones((1, 16)) + 0.5 * second * np.r_[np.ones(8), -np.ones(8)] + 0.3 * rng.normal(size=(n, 16))
    perm = rng.permutation(16)
    same = training_seed_agreement(chi, chi[:, perm], lab)
    assert same["pc1_corr"] > 0.999 and same["pc2_corr"] > 0.999 and same["knn_overlap"] > 0.999
    assert same["head_match_median"] > 0.999 and [same["head_match"][str(i)] for i in perm] == list(range(16))
    other = training_seed_agreement(chi, rng.normal(size=chi.shape), lab)
    assert abs(other["pc1_corr"]) < 0.2 and other["knn_overlap"] < 3 * other["knn_chance"]
    assert other["head_match_median"] < 0.3
