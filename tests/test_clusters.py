"""Susceptibility clusters (issue 34): planted clusters are recovered with the right cards, the null finds none,
births are read over training, notes round-trip, and `python -m serpent clusters RUN` prints the cards."""

import json

import numpy as np
import pandas as pd
import pytest

from serpent.clusters import (CLUSTERS_FORMAT, ClusterSettings, cards_from_json, cluster_cards, cluster_table,
                              clusters_over_training, find_clusters, notes_json, pattern_births, read_notes)
from serpent.errors import SerpentError
from serpent.patterns import PATTERNS

COMPS = [f"{l}:{h}" for l in range(2) for h in range(8)]

# four planted groups: which heads respond (sign: χ < 0 expresses), their pattern and their next token
PLANTED = [({"0:1": -6, "0:4": -6, "1:2": -6}, "word part", "_"),
           ({"1:6": -6, "1:7": -6, "0:0": 6}, "induction", "self"),
           ({"0:2": 6, "0:3": 6, "1:0": 6, "1:1": 6}, "spacing", "␣␣␣"),
           ({"0:5": -6, "1:3": 6, "1:4": -6, "1:5": 6}, "delimiter", "(")]


def planted(n_group=60, n_noise=300, seed=0, strength=1.0):
    """χ (N, 16) with four planted groups on top of Gaussian noise, and the tokens frame that goes with it."""
    rng = np.random.default_rng(seed)
    n = 4 * n_group + n_noise
    chi = rng.normal(size=(n, 16))
    group = np.full(n, -1)
    pattern = rng.choice(["word start", "other", "numeric", "formatting"], size=n).astype(object)
    token = np.array([f"␣w{i % 50}" for i in range(n)], dtype=object)
    for g, (heads, pat, tok) in enumerate(PLANTED):
        rows = np.arange(g * n_group, (g + 1) * n_group)
        group[rows] = g
        for h, v in heads.items():
            chi[rows, COMPS.index(h)] += strength * v
        pattern[rows[: int(0.8 * n_group)]] = pat            # 80 % of the group has its pattern
        token[rows[: n_group // 2]] = tok                     # half of it is one token
    frame = pd.DataFrame({"point": np.arange(n), "seq": np.arange(n) // 40, "pos": np.arange(n) % 40,
                          "token": token, "context": [f"…ctx{i} «{t}»…" for i, t in enumerate(token)],
                          "pattern": pattern})
    return chi, group, frame


def test_planted_clusters_are_recovered_with_their_cards():
    chi, group, frame = planted()
    cl = find_clusters(chi, seed=0)
    cards = {c.cluster: c for c in cluster_cards(cl, chi, frame, components=COMPS)}
    standing = cl.table[cl.table["stands_out"]]
    assert len(standing) == 4, cl.table                                  # the four planted groups, nothing else
    for g, (heads, pat, tok) in enumerate(PLANTED):
        members = group == g
        c = np.bincount(cl.labels[members][cl.labels[members] >= 0]).argmax()
        assert (cl.labels[members] == c).mean() >= 0.95                   # recovered ...
        assert (cl.labels[~members] == c).sum() <= 3                       # ... and not mixed with others
        card = cards[int(c)]
        assert card.stands_out and card.z > 5 and card.conductance < 0.2
        assert abs(card.size - 60) <= 3 and card.size == int((cl.labels == c).sum())
        assert card.top_pattern == pat and card.patterns[pat] >= 46 and card.enrichment > 3
        n_tok = int((frame["token"].to_numpy()[cl.labels == c] == tok).sum())
        assert card.next_tokens[0] == [tok, n_tok] and n_tok >= 28 and card.n_next_tokens >= 20
        low = {h for h, v in heads.items() if v < 0}
        high = {h for h, v in heads.items() if v > 0}
        assert set(card.expresses) <= low and len(card.expresses) == min(3, len(low))    # the planted heads
        assert set(card.suppresses) <= high and len(card.suppresses) == min(3, len(high))
        for h, v in heads.items():                                           # mean and spread of χ per head
            assert abs(card.chi_mean[h] - v) < 0.5 and 0.6 < card.chi_sd[h] < 1.4
        assert len(card.contexts) == 6
        assert all(group[x["point"]] == g for x in card.contexts)           # typical contexts come from the group
    assert "induction" in "\n".join(c.text() for c in cards.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_cluster_stands_out_in_the_null(seed):
    """Vectors without groups: Louvain still cuts them, but no cut stands out from the Gaussian null, whether the
    heads are independent or share a strong common mode (as real χ does)."""
    rng = np.random.default_rng(seed)
    iid = rng.normal(size=(500, 16))
    common = rng.normal(size=(500, 1)) * 5 + rng.normal(size=(500, 16)) * [0.5 + 0.1 * j for j in range(16)]
    for chi in (iid, common):
        cl = find_clusters(chi, seed=seed)
        assert len(cl.table) >= 3                                          # it did cut them
        assert not cl.table["stands_out"].any(), cl.table
        assert (cl.table["z"] < 3).all()


def test_planted_clusters_stand_out_only_when_strong():
    weak = find_clusters(planted(strength=0.15)[0], seed=0)
    strong = find_clusters(planted(strength=1.0)[0], seed=0)
    assert weak.table["stands_out"].sum() == 0 < 4 == strong.table["stands_out"].sum()


def test_clusters_are_deterministic_for_a_seed():
    chi = planted(n_group=30, n_noise=150)[0]
    a, b = find_clusters(chi, seed=3), find_clusters(chi, seed=3)
    assert (a.labels == b.labels).all() and a.table.equals(b.table)
    assert (find_clusters(chi, seed=3, min_size=1000).labels == -1).all()   # groups under min_size: no label
    with pytest.raises(SerpentError, match="n_null >= 1"):
        ClusterSettings(n_null=0)


def training_frame(seed=0):
    """A serpent frame over three steps: group 0 stands out from step 100, group 1 only at step 900."""
    chi, group, tokens = planted(n_group=50, n_noise=250, seed=seed)
    rng = np.random.default_rng(seed + 1)
    frames = []
    for step, on in ((0, set()), (100, {0}), (900, {0, 1})):
        x = rng.normal(size=chi.shape)
        for g in on:
            for h, v in PLANTED[g][0].items():
                x[group == g, COMPS.index(h)] += v
        df = tokens.copy()
        df.insert(0, "step", step)
        for j, c in enumerate(COMPS):
            df[c] = x[:, j]
        frames.append(df.sample(frac=1.0, random_state=step))                 # row order need not match
    return pd.concat(frames, ignore_index=True), group


def test_births_over_training():
    frame, group = training_frame()
    cat = clusters_over_training(frame, seed=0)
    assert cat.steps == [0, 100, 900]
    assert not cat.clusterings[0].table["stands_out"].any()
    last = cat.clusterings[900]
    birth = cat.births.groupby("cluster")["birth"].first()
    born = {}
    for g in (0, 1):
        c = np.bincount(last.labels[group == g][last.labels[group == g] >= 0]).argmax()
        born[g] = birth[c]
        rows = cat.births[cat.births["cluster"] == c].set_index("step")
        assert rows.loc[900, "jaccard"] == 1.0 and rows.loc[0, "jaccard"] < 0.5
    assert born == {0: 100, 1: 900}
    kinds = pattern_births(cluster_table(cat.to_json())).set_index("pattern")
    assert kinds.loc["word part", "from"] == 100 and kinds.loc["induction", "from"] == 900
    assert kinds.loc["word part", "now"] == 1 and "spacing" not in kinds.index
    assert all(b is None for c, b in birth.items() if c not in cat.clusterings[900].labels[group >= 0])
    # the JSON the stage writes: labels by point, cards, births; it survives json and gives the cards back
    js = json.loads(json.dumps(cat.to_json()))
    assert js["format"] == CLUSTERS_FORMAT and js["steps"] == [0, 100, 900]
    assert len(js["labels"]["900"]) == len(group)
    assert (np.asarray(js["labels"]["900"]) == last.labels).all()
    cards = cards_from_json(js, notes={(900, 0): {"name": "planted", "note": "heads 0:1, 0:4"}})
    assert [c.cluster for c in cards] == list(range(len(cards))) and cards[0].name == "planted"
    assert cards[0].size == cat.cards[900][0].size and "planted" in cards[0].text()
    with pytest.raises(SerpentError, match="clustered steps"):
        cards_from_json(js, step=5)


def test_notes_round_trip(tmp_path):
    notes = {(900, 1): {"name": "indents", "note": "runs of spaces"}, (0, 2): {"name": "x", "note": ""}}
    p = tmp_path / "notes.json"
    p.write_text(json.dumps(notes_json(notes, run="r")))
    assert read_notes(p) == notes and read_notes(str(p)) == notes
    with pytest.raises(SerpentError, match="export it from the explorer"):
        read_notes({"format": "other", "clusters": []})
    with pytest.raises(SerpentError, match="no notes file"):
        read_notes(tmp_path / "missing.json")


def test_cli_prints_the_cards(tmp_path, capsys):
    from serpent.cli import main
    from serpent.config import get_preset
    from serpent.rundir import Run
    run = Run.create(tmp_path / "r", get_preset("tiny"))
    assert main(["clusters", str(run.path)]) != 0
    assert "--stages serpent" in capsys.readouterr().err
    frame, _ = training_frame()
    (run.path / "serpent").mkdir()
    (run.path / "serpent" / "clusters.json").write_text(json.dumps(clusters_over_training(frame).to_json()))
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps(notes_json({(900, 0): {"name": "my cluster", "note": ""}})))
    assert main(["clusters", str(run.path), "--notes", str(notes)]) == 0
    out = capsys.readouterr().out
    assert "at step 900" in out and "cluster 0 at step 900: my cluster" in out and "births" in out
    assert "word part first at step 100, at every checkpoint from 100" in out
    assert main(["clusters", str(run.path), "--step", "0"]) == 0
    assert "at step 0" in capsys.readouterr().out


def test_pythia_components_work_the_same():
    """Any number of components: Pythia-14m's 6 × 4 heads and 6 MLPs (notebook 7's "heads+mlp")."""
    comps = [f"{l}:{h}" for l in range(6) for h in range(4)] + [f"mlp:{l}" for l in range(6)]
    rng = np.random.default_rng(4)
    chi = rng.normal(size=(500, len(comps)))
    groups = [(["mlp:3", "2:1"], ["5:0"]), (["0:0", "mlp:0"], ["4:3"]), (["3:2", "1:1"], ["mlp:5"])]
    for g, (low, high) in enumerate(groups):
        rows = slice(80 * g, 80 * (g + 1))
        for c in low:
            chi[rows, comps.index(c)] -= 6
        for c in high:
            chi[rows, comps.index(c)] += 6
    pattern = np.array(["induction", "spacing", "numeric", "other", "other", "other", "other"])[np.arange(500) // 80]
    frame = pd.DataFrame({"step": 7, "point": np.arange(500), "seq": 0, "pos": np.arange(500),
                          "token": "x", "context": "«x»", "pattern": pattern})
    frame = pd.concat([frame, pd.DataFrame(chi, columns=comps)], axis=1)
    cat = clusters_over_training(frame)
    standing = {c.top_pattern: c for c in cat.cards[7] if c.stands_out}
    assert set(standing) == {"induction", "spacing", "numeric"}
    for (low, high), pat in zip(groups, ("induction", "spacing", "numeric")):
        card = standing[pat]
        assert card.size >= 76 and len(card.chi_mean) == 30
        assert set(card.expresses) == set(low) and card.suppresses == high


def test_a_lone_group_is_found_without_whitening():
    rng = np.random.default_rng(4)
    chi = rng.normal(size=(400, 30))
    chi[:80, [3, 9]] -= 6
    chi[:80, 20] += 6
    cl = find_clusters(chi, preprocess="standardize")
    standing = cl.table[cl.table["stands_out"]]
    assert len(standing) == 1
    c = int(standing["cluster"].iloc[0])
    assert (cl.labels[:80] == c).mean() > 0.95 and (cl.labels[80:] == c).sum() <= 3
