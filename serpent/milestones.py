"""Milestones: the developmental events of a run, read from its tables and set beside the paper's model.

The questions the course asks of a run (does the loss fall, do previous-token heads appear before induction heads,
does the LLC rise with a pause, do induction tokens gather in the serpent as the induction heads form?) answered
from the files its stages wrote: ``metrics.jsonl``, ``induction/scores.parquet``, ``llc/llc.parquet`` and
``serpent/separation.json``. Nothing is recomputed.

* An **onset** is the first checkpoint from which a curve stays at or above a threshold (:func:`onset`), so one
  noisy checkpoint does not count. Previous-token onsets count layer-0 heads, the circuit's first half (a
  later-layer head that copies the previous token is named in the note). Heads use the thresholds of :func:`serpent.induction.classify_heads` (previous
  token 0.15, prefix 0.04, or five times the uniform-attention chance if higher).
* A **pause** of the LLC is the stretch between consecutive checkpoints where it rises least (or falls most) and
  after which it rises again above both (:func:`llc_pause`), so a wobble at the last checkpoints is not a pause;
  :func:`largest_dip` is its largest fall anywhere. The paper's LLC dips while the previous-token heads form (172.4 at step 6,500 → 170.9 at
  8,500, "type B" stage LM3).
* The **paper** column is the tetrahedron-3m model of Hoogland et al. on the Pile (Hoogland et al., arXiv 2402.02364, from
  the score arrays the authors published with their analysis): the same thresholds applied to their previous-token heads 0:1/0:4 give step 12,000
  (0.160), to their induction heads 1:6/1:7 step 15,000 (0.059).

>>> onset([0, 10, 20, 30, 40], [0.0, 0.2, 0.0, 0.3, 0.4], 0.15)
30
>>> onset([0, 10], [0.0, 0.1], 0.15) is None
True
>>> largest_dip([0, 1, 2, 3], [1.0, 5.0, 4.0, 9.0])
(2, 0.125)
>>> llc_pause([0, 10, 20, 30, 40], [1.0, 5.0, 5.1, 9.0, 8.0])   # the fall at 40 is not followed by a rise
(10, 20, 0.1)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .outputs import ANATOMY, load_anatomy, load_llc_table, load_scores, load_separation

__all__ = ["PAPER", "onset", "largest_dip", "llc_pause", "predicted_induction_onset", "circuit_onsets", "milestones"]

#: The paper's model (tetrahedron-3m, seed as published; Hoogland et al., arXiv 2402.02364, and its data).
PAPER = {
    "test_loss": (7.943, 3.217),
    "prev_token_onset": 12_000,
    "induction_onset": 15_000,
    "icl_score_final": -0.209,
    "llc": (123.6, 181.3),
    "llc_dip": "172.4 → 170.9 between steps 6,500 and 8,500 (LM3, previous-token heads forming)",
}


def predicted_induction_onset(batch_size: int, n_ctx: int) -> float:
    """Training tokens after which induction heads form, by the fit of Aoyama, Wilcox and Schneider (arXiv
    2511.16893): about ``10**5.7 * sqrt(batch_size * n_ctx)``, whatever the model's size.

    >>> round(predicted_induction_onset(16, 128) / 1e6, 1), round(predicted_induction_onset(100, 1024) / 1e6)
    (22.7, 160)
    """
    return 10 ** 5.7 * math.sqrt(batch_size * n_ctx)


def onset(steps: Sequence[int], values: Sequence[float], threshold: float) -> Optional[int]:
    """The first step from which ``values`` stay ``>= threshold`` up to the last step (None if the last is below)."""
    steps = list(steps)
    vals = np.asarray(values, dtype=float)
    if not len(vals) or not np.isfinite(vals[-1]) or vals[-1] < threshold:
        return None
    below = np.where(~(vals >= threshold))[0]
    first = 0 if not len(below) else int(below[-1]) + 1
    return int(steps[first])


def largest_dip(steps: Sequence[int], values: Sequence[float]) -> tuple[Optional[int], float]:
    """``(step, fraction)``: the step at which a curve falls most from the previous checkpoint, and that fall as a
    fraction of the curve's total rise (max − first); ``(None, 0.0)`` if it never falls."""
    vals = np.asarray(values, dtype=float)
    if len(vals) < 2:
        return None, 0.0
    drops = vals[:-1] - vals[1:]
    i = int(np.argmax(drops))
    if drops[i] <= 0:
        return None, 0.0
    rise = float(np.nanmax(vals) - vals[0])
    return int(list(steps)[i + 1]), float(drops[i] / rise) if rise > 0 else float("inf")


def llc_pause(steps: Sequence[int], values: Sequence[float]) -> tuple[Optional[int], Optional[int], float]:
    """``(from_step, to_step, change)``: the consecutive checkpoints between which the curve rises least (or falls
    most) among those after which it later rises above both; ``(None, None, nan)`` if there is no such stretch."""
    vals = np.asarray(values, dtype=float)
    steps = list(steps)
    best = None
    for i in range(len(vals) - 2):
        if np.nanmax(vals[i + 2:]) > max(vals[i], vals[i + 1]):
            change = float(vals[i + 1] - vals[i])
            if best is None or change < best[2]:
                best = (int(steps[i]), int(steps[i + 1]), round(change, 12))
    return best if best is not None else (None, None, float("nan"))


def circuit_onsets(scores) -> dict:
    """The circuit's onsets from an induction-score table (``induction/scores.parquet``): ``prev_token`` (the first
    step from which the best layer-0 previous-token score stays above :func:`serpent.induction.classify_heads`'
    threshold), ``prev_token_any_layer``, ``induction`` (the best prefix score), with ``thresholds`` and the
    per-step maxima ``best`` (all heads) and ``best_layer0``.

    The circuit's previous-token heads sit in layer 0 (the paper's 0:1, 0:4); later layers may copy the previous
    token too, without composing with an induction head: reported beside, not as the onset.
    """
    from .induction import classify_heads
    th = classify_heads(scores)["thresholds"]
    heads = scores[scores["head"] != "model"]
    best = heads.pivot_table(index="step", columns="score", values="value", aggfunc="max").sort_index()
    best0 = heads[heads["head"].str.startswith("0:")].pivot_table(index="step", columns="score", values="value",
                                                                  aggfunc="max").sort_index()
    return {"thresholds": th, "best": best, "best_layer0": best0,
            "prev_token": onset(best0.index, best0["prev_token"], th["prev_token"]),
            "prev_token_any_layer": onset(best.index, best["prev_token"], th["prev_token"]),
            "induction": onset(best.index, best["prefix"], th["prefix"])}


def milestones(run) -> "pd.DataFrame":
    """One row per question: ``milestone``, ``ours`` (from the run's tables), ``paper``, ``note``.

    ``run``: a :class:`~serpent.rundir.Run` or its path. Stages that have not run give "not computed".
    """
    import pandas as pd
    from .rundir import Run

    run = run if isinstance(run, Run) else Run.open(run)
    rows = []

    m = pd.DataFrame(run.metrics())
    if len(m) and "test_loss" in m:
        first, last = float(m["test_loss"].iloc[0]), float(m["test_loss"].iloc[-1])
        rows.append(("held-out loss, first → last logged step", f"{first:.2f} → {last:.2f}",
                     f"{PAPER['test_loss'][0]:.2f} → {PAPER['test_loss'][1]:.2f}",
                     "falls" if last < first else "does not fall"))
    else:
        rows.append(("held-out loss, first → last logged step", "not computed", "7.94 → 3.22", ""))

    prev_on = ind_on = None
    df = load_scores(run, missing=None)
    if df is not None:
        c = circuit_onsets(df)
        th, best, best0 = c["thresholds"], c["best"], c["best_layer0"]
        prev_on, prev_any, ind_on = c["prev_token"], c["prev_token_any_layer"], c["induction"]
        last = best.iloc[-1]
        note = f"best layer-0 previous-token score ≥ {th['prev_token']:.2f} from then on"
        if prev_any is not None and (prev_on is None or prev_any < prev_on):
            note += f"; a head of a later layer from step {prev_any:,}"
        rows.append(("previous-token heads appear (onset step)", f"{prev_on:,}" if prev_on is not None else
                     f"not yet (best {best0['prev_token'].iloc[-1]:.3f}, threshold {th['prev_token']:.2f})",
                     f"{PAPER['prev_token_onset']:,}", note))
        rows.append(("induction heads appear (onset step)", f"{ind_on:,}" if ind_on is not None else
                     f"not yet (best {last['prefix']:.3f}, threshold {th['prefix']:.2f})",
                     f"{PAPER['induction_onset']:,}",
                     f"best prefix-matching score ≥ {th['prefix']:.2f} from then on"))
        if prev_on is not None and ind_on is not None:
            order = "yes" if prev_on < ind_on else ("together" if prev_on == ind_on else "no: induction first")
        else:
            order = "undefined: " + ("no induction heads" if ind_on is None else "no previous-token heads")
        rows.append(("previous-token heads before induction heads", order, "yes", ""))
        tc = run.config.train
        per_step = tc.batch_size * run.config.model.n_ctx
        predicted = predicted_induction_onset(tc.batch_size, run.config.model.n_ctx)
        measured = (f"step {ind_on:,} ({ind_on * per_step / 1e6:.1f} M tokens, {ind_on * per_step / predicted:.2f}× "
                    f"the prediction)" if ind_on is not None else "no onset yet")
        rows.append(("induction onset against 10^5.7·√(batch·context) tokens (Aoyama et al.)",
                     f"{measured}; predicted step {predicted / per_step:,.0f} ({predicted / 1e6:.1f} M tokens)",
                     f"step {PAPER['induction_onset']:,} ({PAPER['induction_onset'] * 100 * 1024 / 1e6:.0f} M tokens at "
                     f"100 × 1,024; predicted {predicted_induction_onset(100, 1024) / 1e6:.0f} M)",
                     "a fit across models of several sizes: a prediction to set beside the measured onset, not a threshold"))
        model = df[(df["head"] == "model") & (df["score"] == "icl_score")].sort_values("step")
        if len(model):
            rows.append(("in-context learning score at the end", f"{float(model['value'].iloc[-1]):+.3f}",
                         f"{PAPER['icl_score_final']:+.3f}", "late minus early loss; more negative = more ICL"))
    else:
        rows.append(("induction heads appear (onset step)", "not computed", f"{PAPER['induction_onset']:,}", ""))

    llc = load_llc_table(run, missing=None)
    if llc is not None:
        llc = llc.sort_values("step")
        rows.append(("LLC, first → last checkpoint", f"{llc['mean'].iloc[0]:.1f} → {llc['mean'].iloc[-1]:.1f}",
                     f"{PAPER['llc'][0]} → {PAPER['llc'][1]}", "absolute values depend on model, data and sampler"))
        start, end, change = llc_pause(llc["step"], llc["mean"])
        std = float(llc["std"].median()) if "std" in llc else float("nan")
        rise = float(llc["mean"].max() - llc["mean"].iloc[0])
        ours = "none" if start is None else (f"steps {start:,} → {end:,}: {change:+.2g} ({change / rise:+.0%} of the "
                                             f"rise; chain sd ≈ {std:.2g})" if rise > 0 else f"steps {start:,} → {end:,}")
        rows.append(("LLC pause or dip (least rise, then rising again)", ours, PAPER["llc_dip"],
                     "the stretch between checkpoints where the LLC rises least and after which it rises again"))
    else:
        rows.append(("LLC, first → last checkpoint", "not computed", f"{PAPER['llc'][0]} → {PAPER['llc'][1]}", ""))

    sep = load_separation(run, missing=None)
    if sep is not None:
        ind_sep = {s: v.get("by_pattern_cross_token", {}).get("induction") for s, v in sep.items()}
        ind_sep = {s: x for s, x in sorted(ind_sep.items()) if x is not None and np.isfinite(x)}
        nulls = {s: v.get("by_pattern_cross_token_null", {}).get("induction") for s, v in sep.items()}

        def z(s):   # standard deviations above the no-pattern null at step s, when the serpent stage recorded it
            n = nulls.get(s)
            return (ind_sep[s] - n[0]) / n[1] if n and n[1] and np.isfinite(n[1]) and n[1] > 0 else None

        def fmt(s):
            return f"{ind_sep[s]:+.3f} (step {s:,}" + (f", {z(s):+.1f} null sd" if z(s) is not None else "") + ")"
        if ind_sep and ind_on is not None:
            before = [s for s in ind_sep if s < ind_on]
            after = [s for s in ind_sep if s >= ind_on]
            ours = (f"{fmt(before[-1])} before the onset, {fmt(after[-1])} at the end; mean "
                    f"{np.mean([ind_sep[s] for s in before]):+.3f} before, {np.mean([ind_sep[s] for s in after]):+.3f} "
                    f"from then on" if before and after else "no susceptibility checkpoints on both sides of the onset")
        elif ind_sep:
            s0, s1 = min(ind_sep), max(ind_sep)
            ours = f"{fmt(s0)} → {fmt(s1)}; no induction heads to compare"
        else:
            ours = "not computed (serpent stage older than by_pattern_cross_token)"
        rows.append(("induction tokens gather as induction heads form", ours, "yes (the serpent's induction stratum)",
                     "cross-token separation of the induction pattern; 0 = chance; null sd: standard deviations "
                     "above the same measure when every token takes a random other token's pattern"))
    else:
        rows.append(("induction tokens gather as induction heads form", "not computed", "yes", ""))
    rows += _body_plan_rows(load_anatomy(run, missing=None), ind_on)
    return pd.DataFrame(rows, columns=["milestone", "ours", "paper", "note"])


def _body_plan_rows(anat: Optional[dict], ind_on: Optional[int]) -> list[tuple]:
    """The body plan's rows (``serpent/anatomy.json`` by step, :mod:`serpent.anatomy`; None when the run has none)
    beside what the papers say of it."""
    from .anatomy import PAPERS_BODY_PLAN as P
    names = ("body plan: anterior–posterior axis (PC1)", "body plan: dorsal–ventral stratification (PC2)",
             "body plan: pattern read back from χ", "body plan: spacing fin")
    if anat is None:
        return [(n, "not computed", "", f"the serpent stage writes {ANATOMY.path}") for n in names]
    steps = sorted(anat)
    a0, a1 = anat[steps[0]], anat[steps[-1]]
    shares = [anat[s]["pc1_share"] for s in steps]
    rows = [(names[0], f"PC1 {a0['pc1_share']:.1%} → {a1['pc1_share']:.1%} of the variance (range {min(shares):.1%}–"
                       f"{max(shares):.1%}); correlation with the token's mean χ ≥ "
                       f"{min(anat[s]['pc1_mean_corr'] for s in steps):.2f}; heads loading alike "
                       f"{a1['pc1_uniformity']:.0%}", P["anterior_posterior"],
             "present from initialisation: a global mode of the heads, not something training grows")]
    th0, th1 = a0.get("thickness"), a1.get("thickness")
    grows = (f"the induction onset (step {ind_on:,})" if ind_on is not None else "no induction onset")
    before = [s for s in steps if ind_on is not None and s < ind_on]
    thin = min(steps, key=lambda s: anat[s]["thickness"])
    rows.append((names[1], f"thickness sd(PC2)/sd(PC1) {th0:.3f} → {th1:.3f} (thinnest {anat[thin]['thickness']:.3f} at "
                           f"step {thin:,}, thickening {th1 / anat[thin]['thickness']:.2f}×; "
                           + (f"{anat[before[-1]]['thickness']:.3f} just before {grows}" if before else grows)
                           + f"); PC2 led by head {a1['pc2_top_heads'][0]}; induction tokens along PC2 AUC "
                           f"{a0.get('induction_auc_pc2', float('nan')):.2f} → {a1.get('induction_auc_pc2', float('nan')):.2f}"
                           f" (random tokens {a1.get('induction_auc_null_mean', float('nan')):.2f} ± "
                           f"{a1.get('induction_auc_null_sd', float('nan')):.2f})",
                 P["dorsal_ventral"], "thickness: the short axis against the long one; AUC 0.5 = not separated"))
    p0, p1 = a0.get("pattern", {}), a1.get("pattern", {})
    rows.append((names[2], f"accuracy {p0.get('accuracy', float('nan')):.2f} → {p1.get('accuracy', float('nan')):.2f}"
                           f" (majority class {p1.get('majority', float('nan')):.2f}, shuffled labels "
                           f"{p1.get('null_mean', float('nan')):.2f}; across tokens "
                           f"{p1.get('cross_token_accuracy', float('nan')):.2f})",
                 "not reported (reviewers asked for it)",
                 "a 5-fold cross-validated linear classifier (LDA) from the 16 numbers to the pattern"))
    fw, fs = a1.get("fin_whitespace", {}), a1.get("fin", {})
    rows.append((names[3], (f"whitespace tokens ({fw.get('n', 0)}): rank correlation {fw.get('rho', float('nan')):+.2f}"
                            f" between run length and its read-out from χ (shuffled {fw.get('null_mean', float('nan')):+.2f}"
                            f" ± {fw.get('null_sd', float('nan')):.2f}): " + ("a fin" if fw.get("present") else "no fin")
                            + f"; spacing tokens alone: {fs.get('n', 0)}" + (f", {fs.get('note')}" if fs.get("note") else
                                                                               f", rho {fs.get('rho', float('nan')):+.2f}")),
                 P["spacing_fin"], "in code, indentation rides on the newline token: see the chapter"))
    return rows
