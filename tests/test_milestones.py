"""Milestones read from a run's tables: onsets, order, LLC dip, induction-token separation (known answers)."""

import json

import numpy as np
import pandas as pd

from serpent.config import get_preset
from serpent.milestones import largest_dip, llc_pause, milestones, onset
from serpent.rundir import Run


def _synthetic_run(tmp_path, prev_at=400, ind_at=800):
    run = Run.create(tmp_path / "run", get_preset("tiny"))
    steps = [0, 100, 200, 400, 600, 800, 1000, 1200]
    with open(run.path / "metrics.jsonl", "w") as f:
        for s in steps[1:]:
            f.write(json.dumps({"step": s, "test_loss": 8.0 - s / 400}) + "\n")
    rows = []
    for s in steps:
        for l in range(2):
            for h in range(8):
                prev = 0.3 if (l == 0 and h == 1 and s >= prev_at) else 0.02
                pre = 0.2 if (l == 1 and h == 6 and s >= ind_at) else 0.01
                rows += [(s, f"{l}:{h}", "prev_token", prev), (s, f"{l}:{h}", "prefix", pre)]
        rows += [(s, "model", "chance_prev_token", 0.01), (s, "model", "chance_prefix", 0.005),
                 (s, "model", "icl_score", -0.1 if s >= ind_at else 0.0)]
    run.stage_dir("induction")
    pd.DataFrame(rows, columns=["step", "head", "score", "value"]).to_parquet(run.path / "induction" / "scores.parquet")
    llc = [10, 20, 30, 40, 35, 50, 60, 70]                      # a dip of 5 at step 600, rise 60
    run.stage_dir("llc")
    pd.DataFrame({"step": steps, "mean": llc, "std": 1.0}).to_parquet(run.path / "llc" / "llc.parquet")
    run.stage_dir("serpent")
    sep = {str(s): {"by_pattern_cross_token": {"induction": 0.3 if s >= ind_at else 0.0},
                    "by_pattern_cross_token_null": {"induction": [0.0, 0.1]}} for s in (0, 400, 800, 1200)}
    (run.path / "serpent" / "separation.json").write_text(json.dumps({"steps": sep}))
    return run


def test_onset_and_dip_known_answers():
    assert onset([0, 1, 2], [0.5, 0.5, 0.5], 0.1) == 0
    assert onset([0, 1, 2, 3], [0.5, 0.0, 0.5, 0.5], 0.1) == 2           # a later fall resets the onset
    assert onset([0, 1, 2], [0.5, 0.5, float("nan")], 0.1) is None
    assert onset([], [], 0.1) is None
    assert largest_dip([0, 1, 2], [1.0, 2.0, 3.0]) == (None, 0.0)
    step, frac = largest_dip([0, 10, 20, 30], [100.0, 150.0, 140.0, 200.0])
    assert step == 20 and frac == 0.1
    # a pause is followed by a rise: a fall at the end is not one, a flat stretch before a rise is
    assert llc_pause([0, 10, 20, 30, 40], [1.0, 5.0, 5.1, 9.0, 8.0]) == (10, 20, 0.1)
    assert llc_pause([0, 10, 20, 30], [1.0, 2.0, 3.0, 2.0])[:2] == (0, 10)
    assert llc_pause([0, 10], [1.0, 2.0])[0] is None


def test_milestones_of_a_run_that_grew_the_circuit(tmp_path):
    table = milestones(_synthetic_run(tmp_path)).set_index("milestone")["ours"]
    assert table["previous-token heads appear (onset step)"] == "400"
    assert table["induction heads appear (onset step)"] == "800"
    assert table["previous-token heads before induction heads"] == "yes"
    assert table["held-out loss, first → last logged step"] == "7.75 → 5.00"
    assert table["in-context learning score at the end"] == "-0.100"
    assert table["LLC, first → last checkpoint"] == "10.0 → 70.0"
    assert table["LLC pause or dip (least rise, then rising again)"].startswith("steps 400 → 600: -5 (-8% of the rise")
    row = [r for r in table.index if r.startswith("induction tokens gather")][0]
    assert table[row] == ("+0.000 (step 400, +0.0 null sd) before the onset, +0.300 (step 1,200, +3.0 null sd) at the "
                          "end; mean +0.000 before, +0.300 from then on")
    # 16 x 128 tokens a step: the predicted onset is 10^5.7 * sqrt(2048) = 22.7 M tokens, step 11,075
    row = [r for r in table.index if r.startswith("induction onset against")][0]
    assert table[row] == "step 800 (1.6 M tokens, 0.07× the prediction); predicted step 11,075 (22.7 M tokens)"


def test_milestones_order_and_missing_stages(tmp_path):
    table = milestones(_synthetic_run(tmp_path, prev_at=1000, ind_at=600)).set_index("milestone")["ours"]
    assert table["previous-token heads before induction heads"] == "no: induction first"
    bare = Run.create(tmp_path / "bare", get_preset("tiny"))
    t = milestones(bare.path)
    assert (t["ours"] == "not computed").sum() == 8 and len(t) == 8            # 4 milestones + 4 of the body plan


def test_cli_milestones(tmp_path, capsys):
    from serpent.cli import main
    assert main(["milestones", str(_synthetic_run(tmp_path).path)]) == 0
    out = capsys.readouterr().out
    assert "induction heads appear (onset step)" in out and "ours: 800" in out and "paper: 15,000" in out


def test_previous_token_onset_counts_layer_zero_heads(tmp_path):
    """A layer-1 head that copies the previous token early is named in the note, not taken as the circuit's onset."""
    run = _synthetic_run(tmp_path)
    f = run.path / "induction" / "scores.parquet"
    df = pd.read_parquet(f)
    early = (df["head"] == "1:3") & (df["score"] == "prev_token") & (df["step"] >= 100)
    df.loc[early, "value"] = 0.25
    df.to_parquet(f)
    t = milestones(run).set_index("milestone")
    assert t.loc["previous-token heads appear (onset step)", "ours"] == "400"
    assert t.loc["previous-token heads appear (onset step)", "note"].endswith("a head of a later layer from step 100")
