"""The births of susceptibility clusters beside the head scores: when do clusters first stand out, and of what?

Input: :func:`serpent.clusters.cluster_table` (one row per checkpoint and cluster) and the head scores of
:func:`serpent.stages.scores_over_checkpoints` (``step, head, score, value``). The top panel draws the best
previous-token score of the layer-0 heads and the best prefix-matching (induction) score of the layer-1 heads; the
bottom panel every cluster of every checkpoint at its distance from the Gaussian null (z), coloured by its most
common pattern, sized by its number of tokens, filled when it stands out. Dashed vertical rules mark the onsets
when given; the dashed horizontal rule is the z threshold.

>>> import pandas as pd
>>> table = pd.DataFrame({"step": [0, 100], "cluster": [0, 0], "size": [50, 60], "z": [1.0, 4.0],
...                       "stands_out": [False, True], "top_pattern": ["induction", "induction"],
...                       "top_pattern_share": [0.3, 0.7]})
>>> scores = pd.DataFrame({"step": [0, 0, 100, 100], "head": ["0:1", "1:6"] * 2,
...                        "score": ["prev_token", "prefix"] * 2, "value": [0.0, 0.0, 0.3, 0.1]})
>>> type(cluster_births_chart(table, scores, onsets={"previous-token heads": 100})).__name__
'VConcatChart'
"""

from __future__ import annotations

from typing import Mapping, Optional

import altair as alt
import pandas as pd

from ..patterns import PALETTE, PATTERNS
from .induction import _step_x

__all__ = ["cluster_births_chart"]


def cluster_births_chart(table: pd.DataFrame, scores: pd.DataFrame, *, onsets: Optional[Mapping[str, int]] = None,
                         z_threshold: float = 3.0, width: int = 520, height: int = 170,
                         log_steps: bool = False) -> alt.VConcatChart:
    """Head scores (top) and the clusters of every checkpoint against the null (bottom), on one step axis (linear
    by default: the heads and the clusters form late in training; ``log_steps=True`` for a symlog axis)."""
    max_step = float(max(table["step"].max(), scores["step"].max()))
    x = _step_x(max_step, log=log_steps)
    layer = scores["head"].astype(str).str.split(":").str[0]
    best = pd.concat([
        scores[(scores["score"] == "prev_token") & (layer == "0")].groupby("step")["value"].max().rename(
            "previous-token (best layer-0 head)"),
        scores[(scores["score"] == "prefix") & (layer == "1")].groupby("step")["value"].max().rename(
            "prefix matching (best layer-1 head)")], axis=1).reset_index().melt("step", var_name="score")
    top = alt.Chart(best).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="head score"),
        color=alt.Color("score:N", title=None, scale=alt.Scale(range=["#444444", "#d1495b"]),
                        legend=alt.Legend(orient="top")),
        tooltip=["score:N", "step:Q", alt.Tooltip("value:Q", format=".3f")])
    df = table.copy()
    df["standing"] = df["stands_out"].map({True: "stands out", False: "does not"})
    bottom = alt.Chart(df).mark_point(filled=True).encode(
        x=x, y=alt.Y("z:Q", title="cluster's z against the null"),
        color=alt.Color("top_pattern:N", title="most common pattern",
                        scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                        legend=alt.Legend(orient="bottom", columns=4)),
        size=alt.Size("size:Q", title="tokens", scale=alt.Scale(range=[20, 260]), legend=None),
        opacity=alt.Opacity("standing:N", scale=alt.Scale(domain=["stands out", "does not"], range=[0.95, 0.3]),
                            title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["step:Q", "cluster:Q", "size:Q", "top_pattern:N", alt.Tooltip("top_pattern_share:Q", format=".0%"),
                 alt.Tooltip("z:Q", format=".1f"), "standing:N"])
    rule = alt.Chart(pd.DataFrame({"z": [z_threshold]})).mark_rule(strokeDash=[4, 4], color="black").encode(y="z:Q")
    top_layers, bottom_layers = [top], [bottom, rule]
    if onsets:
        on = pd.DataFrame([{"step": int(s), "onset": f"{k} ({int(s):,})", "row": 10 + 13 * i}
                           for i, (k, s) in enumerate(onsets.items()) if s is not None])
        if len(on):
            r = alt.Chart(on).mark_rule(strokeDash=[6, 3], color="#777777").encode(x="step:Q", tooltip=["onset:N",
                                                                                                        "step:Q"])
            t = alt.Chart(on).mark_text(align="right", dx=-4, fontSize=10, color="#555555").encode(
                x="step:Q", y=alt.Y("row:Q", scale=None), text="onset:N")
            top_layers += [r, t]
            bottom_layers += [r]
    return alt.vconcat(alt.layer(*top_layers).properties(width=width, height=height * 0.7,
                                                         title="heads and susceptibility clusters over training"),
                       alt.layer(*bottom_layers).properties(width=width, height=height)
                       ).resolve_scale(color="independent", x="shared")
