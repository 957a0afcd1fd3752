"""The committed `cpu` run (`artifacts/cpu`, the book's run): intact, loadable, and showing what the book says.

CI never trains the `cpu` preset (an hour and a half); it checks the committed results instead. A damaged file, a
foreign folder or a re-export from a run that did not grow the circuit fails here.
"""

from pathlib import Path

import pandas as pd
import pytest

from serpent.artifacts import load_artifacts, verify_artifacts
from serpent.course import default_preset
from serpent.milestones import milestones

ROOT = Path(__file__).resolve().parents[1]
ART = ROOT / "artifacts" / "cpu"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    return load_artifacts(ART, into=tmp_path_factory.mktemp("cpu") / "cpu-artifacts")


def test_committed_cpu_artifacts_match_their_manifest():
    manifest = verify_artifacts(ART)
    assert manifest["preset"] == "cpu" and manifest["commit"]
    assert manifest["hardware"]["train_device"].startswith("cpu")
    assert manifest["stage_seconds"]["train"] > 0 and manifest["stage_seconds"]["susceptibility"] > 0
    assert sum(f["bytes"] for f in manifest["files"].values()) <= 40e6
    assert default_preset(ROOT) in ("full", "cpu")          # the notebooks' default finds it


def test_cpu_run_grows_the_circuit_in_the_papers_order(cpu_run):
    t = milestones(cpu_run).set_index("milestone")["ours"]
    prev_on = int(t["previous-token heads appear (onset step)"].replace(",", ""))
    ind_on = int(t["induction heads appear (onset step)"].replace(",", ""))
    assert 0 < prev_on < ind_on <= cpu_run.config.train.steps
    assert t["previous-token heads before induction heads"] == "yes"
    scores = pd.read_parquet(cpu_run.path / "induction" / "scores.parquet")
    last = scores[scores["step"] == scores["step"].max()]
    model = last[last["head"] == "model"].set_index("score")["value"]
    layer1 = last[last["head"].str.startswith("1:") & (last["score"] == "prefix")]["value"]
    assert layer1.max() > 5 * model["chance_prefix"]               # an induction head in layer 1
    assert model["induction_loss_diff"] < -0.3                       # the second copy is clearly easier
    diff = scores[(scores["head"] == "model") & (scores["score"] == "induction_loss_diff")].set_index("step")["value"]
    assert diff.loc[diff.index < prev_on].mean() > diff.loc[diff.index >= ind_on].mean() + 0.2


def test_cpu_run_has_the_llc_and_the_serpent_across_the_onset(cpu_run):
    llc = pd.read_parquet(cpu_run.path / "llc" / "llc.parquet")
    assert len(llc) >= 16 and llc["mean"].notna().all()
    assert llc.sort_values("step")["mean"].iloc[-1] > llc.sort_values("step")["mean"].iloc[0]
    t = milestones(cpu_run).set_index("milestone")["ours"]
    ind_on = int(t["induction heads appear (onset step)"].replace(",", ""))
    emb = pd.read_parquet(cpu_run.path / "serpent" / "embedding.parquet")
    steps = sorted(emb["step"].unique())
    assert len(steps) >= 8 and min(steps) < ind_on <= max(steps)
    row = [r for r in t.index if r.startswith("induction tokens gather")][0]
    assert "before the onset" in t[row] and "null sd" in t[row]


def test_cpu_run_body_plan_is_committed_and_recomputes(cpu_run):
    """The committed body plan (serpent/anatomy.json) equals a recomputation from the committed χ, and tells the
    chapter's story: a long axis from initialisation, a second axis that thickens and sorts the induction tokens
    as the circuit forms, patterns read back at chance first and well above it at the end."""
    from serpent.patterns import label_results
    from serpent.stages import load_anatomy, load_susceptibilities
    from serpent.stages.serpent import anatomy_over_checkpoints

    anat = load_anatomy(cpu_run)
    res = load_susceptibilities(cpu_run)
    assert sorted(anat) == sorted(res)
    first, last = min(res), max(res)
    sub = {s: res[s] for s in (first, last)}
    again = anatomy_over_checkpoints(sub, label_results(sub, cpu_run.tokenizer()), progress=False)
    for s in (first, last):
        for key in ("pc1_share", "pc2_share", "thickness", "induction_auc_pc2", "induction_auc_null_mean"):
            assert again[s][key] == pytest.approx(anat[s][key], rel=1e-9, abs=1e-12), (s, key)
        assert again[s]["pattern"]["accuracy"] == anat[s]["pattern"]["accuracy"]
    assert all(a["pc1_share"] > 0.9 and a["pc1_mean_corr"] > 0.99 for a in anat.values())
    thinnest = min(a["thickness"] for a in anat.values())
    assert anat[last]["thickness"] > 2 * thinnest
    a = anat[last]
    assert a["induction_auc_pc2"] > a["induction_auc_null_mean"] + 5 * a["induction_auc_null_sd"]
    assert abs(anat[first]["induction_auc_pc2"] - anat[first]["induction_auc_null_mean"]) < \
        4 * anat[first]["induction_auc_null_sd"]
    assert anat[first]["pattern"]["accuracy"] < anat[first]["pattern"]["majority"] + 0.05
    assert a["pattern"]["accuracy"] > a["pattern"]["majority"] + 0.1
    rows = milestones(cpu_run).set_index("milestone")
    body = rows[rows.index.str.startswith("body plan")]
    assert len(body) == 4 and not (body["ours"] == "not computed").any()
    assert f"{a['induction_auc_pc2']:.2f}" in body.loc["body plan: dorsal–ventral stratification (PC2)", "ours"]
