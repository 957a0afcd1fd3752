"""Charts of induction-head development: per-head scores and the ICL score against training step.

Input is the tidy table of :func:`serpent.stages.scores_over_checkpoints` (columns ``step, head, score,
value``). The step axis is logarithmic (``symlog``, so step 0 is drawn too). Every head gets a line; the ``top``
heads of each score at the last step are coloured and labelled, the others are drawn in light grey, so the
chart reads at a glance with 16 heads. Dashed rules mark the classification thresholds when given.
Long tables are thinned to at most ~4,000 rows by keeping a log-spaced subset of steps (Altair's 5,000-row limit;
works with Altair 5.5 and 6). :func:`save_chart` writes ``.png`` (vl-convert, offline) and a self-contained
``.html`` atomically.

>>> import pandas as pd
>>> df = pd.DataFrame([(s, h, sc, v) for s in (0, 10, 100) for h in ("0:0", "1:0") for sc, v in
...                    (("prev_token", 0.02 * (s + 1)), ("prefix", 0.01))], columns=["step", "head", "score", "value"])
>>> type(induction_scores_chart(df)).__name__
'HConcatChart'
"""

from __future__ import annotations

from typing import Optional

import altair as alt
import numpy as np
import pandas as pd

from .export import save_chart

__all__ = ["head_score_chart", "induction_scores_chart", "icl_chart", "attention_chart", "training_loss_chart",
           "save_chart"]

_TITLES = {"prev_token": "Previous-token score", "prefix": "Prefix-matching (induction) score"}
_MAX_ROWS = 4000
_PALETTE = ["#e6194b", "#4363d8", "#3cb44b", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def _thin(df: pd.DataFrame, max_rows: int = _MAX_ROWS) -> pd.DataFrame:
    """Keep a log-spaced subset of steps (always the first and the last) so that ``len(df) <= max_rows``."""
    steps = np.array(sorted(df["step"].unique()))
    if len(df) <= max_rows or len(steps) <= 2:
        return df
    per_step = len(df) / len(steps)
    k = max(2, int(max_rows // per_step))
    idx = np.unique(np.round(np.geomspace(1, len(steps), k)).astype(int) - 1)
    keep = set(steps[idx]) | {steps[0], steps[-1]}
    return df[df["step"].isin(keep)]


def _step_x(max_step: float, title: str = "training step (log scale)", log: bool = True) -> alt.X:
    if not log:
        return alt.X("step:Q", title="training step", axis=alt.Axis(format=",d", grid=True))
    ticks = [0] + [10 ** k for k in range(0, int(np.log10(max(max_step, 1))) + 1)]
    return alt.X("step:Q", scale=alt.Scale(type="symlog"), title=title,
                 axis=alt.Axis(values=ticks, format=",d", grid=True))


def _spread_labels(values: pd.Series, min_gap: float) -> pd.Series:
    """Label heights: the values, pushed apart so that no two are closer than ``min_gap`` (keeps order)."""
    order = values.sort_values(ascending=False)
    out, prev = {}, None
    for k, v in order.items():
        y = v if prev is None else min(v, prev - min_gap)
        out[k] = y
        prev = y
    return pd.Series(out).reindex(values.index)


def head_score_chart(scores: pd.DataFrame, score: str = "prev_token", top: int = 2,
                     threshold: Optional[float] = None, width: int = 230, height: int = 220,
                     log_steps: bool = True) -> alt.LayerChart:
    """One line per head of ``score`` against step; the ``top`` heads at the last step coloured and labelled.
    ``log_steps=False`` draws the step axis linearly (for evenly spaced records, like the induction toy's)."""
    df = scores[(scores["score"] == score) & (scores["head"] != "model")][["step", "head", "value"]]
    if df.empty:
        raise ValueError(f"the table has no rows for score {score!r}")
    df = _thin(df.copy())
    last = df[df["step"] == df["step"].max()].sort_values("value", ascending=False)
    top_heads = list(last["head"].head(top))
    df["group"] = np.where(df["head"].isin(top_heads), df["head"], "other heads")
    domain = top_heads + ["other heads"]
    colors = _PALETTE[:len(top_heads)] + ["#c8c8c8"]
    max_step = float(df["step"].max())
    lab = last[last["head"].isin(top_heads)].copy()
    span = max(float(df["value"].max()), threshold or 0.0) - min(float(df["value"].min()), 0.0)
    lab["label_y"] = _spread_labels(lab["value"], 14 / height * span if span > 0 else 0.0)  # 14 px: a label's height
    base = alt.Chart(df).encode(
        x=_step_x(max_step, log=log_steps),
        y=alt.Y("value:Q", title=_TITLES.get(score, score)),
        detail="head:N",
        color=alt.Color("group:N", scale=alt.Scale(domain=domain, range=colors), title="head",
                        sort=domain, legend=alt.Legend(orient="bottom", direction="horizontal")),
        tooltip=["head:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
    )
    grey = base.transform_filter(alt.datum.group == "other heads").mark_line(strokeWidth=1, opacity=0.7)
    hi = base.transform_filter(alt.datum.group != "other heads").mark_line(strokeWidth=2.5, point=True)
    labels = alt.Chart(lab).mark_text(align="left", dx=6, fontWeight="bold").encode(
        x=_step_x(max_step, log=log_steps), y="label_y:Q", text="head:N",
        color=alt.Color("head:N", scale=alt.Scale(domain=domain, range=colors), title="head", sort=domain,
                        legend=alt.Legend(orient="bottom", direction="horizontal")))
    layers = [grey, hi, labels]
    if threshold is not None:
        rule = alt.Chart(pd.DataFrame({"value": [threshold]})).mark_rule(strokeDash=[4, 4], color="black").encode(
            y="value:Q")
        layers.append(rule)
    return alt.layer(*layers).properties(width=width, height=height, title=_TITLES.get(score, score))


def induction_scores_chart(scores: pd.DataFrame, top: int = 2, thresholds: Optional[dict] = None,
                           width: int = 230, height: int = 220, log_steps: bool = True) -> alt.HConcatChart:
    """Previous-token and prefix-matching scores side by side (see :func:`head_score_chart`).

    ``thresholds`` may be the ``thresholds`` dict of :func:`serpent.induction.classify_heads` (dashed rules).
    """
    t = thresholds or {}
    charts = [head_score_chart(scores, s, top=top, threshold=t.get(s), width=width, height=height, log_steps=log_steps)
              for s in ("prev_token", "prefix")]
    return alt.hconcat(*charts).resolve_scale(color="independent")


def icl_chart(scores: pd.DataFrame, width: int = 360, height: int = 240) -> alt.LayerChart:
    """ICL score (held-out loss late minus early in the context) and the induction-loss difference (second minus
    first copy of random tokens) against step; both in nats, negative = the model uses its context."""
    names = {"icl_score": "ICL score: held-out text, late - early loss",
             "induction_loss_diff": "random tokens: 2nd - 1st copy loss"}
    df = scores[(scores["head"] == "model") & (scores["score"].isin(list(names)))][["step", "score", "value"]]
    if df.empty:
        raise ValueError("the table has no icl_score or induction_loss_diff rows")
    df = df.assign(curve=df["score"].map(names))
    line = alt.Chart(df).mark_line(point=True).encode(
        x=_step_x(float(df["step"].max())), y=alt.Y("value:Q", title="loss difference (nats)"),
        color=alt.Color("curve:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400, direction="vertical")),
        tooltip=["curve:N", "step:Q", alt.Tooltip("value:Q", format=".3f")])
    zero = alt.Chart(pd.DataFrame({"value": [0.0]})).mark_rule(color="black", opacity=0.4).encode(y="value:Q")
    return alt.layer(line, zero).properties(width=width, height=height, title="In-context learning")


def attention_chart(pattern, title: str = "", size: int = 220) -> alt.Chart:
    """One head's attention pattern, a ``(T, T)`` array (rows: queries, columns: keys; causal, so zero above the
    diagonal), as a heat map. On repeated random tokens a previous-token head is a stripe just below the diagonal,
    an induction head a stripe ``L - 1`` further left (it attends to the token after the earlier copy).

    >>> import numpy as np
    >>> attention_chart(np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]).to_dict()["mark"]["type"]
    'rect'
    """
    a = np.asarray(pattern, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"an attention pattern is (T, T), queries by keys; got shape {a.shape}")
    q, k = np.tril_indices(a.shape[0])
    df = pd.DataFrame({"query": q, "key": k, "attention": a[q, k].round(4)})
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("key:O", axis=None), y=alt.Y("query:O", axis=None),
        color=alt.Color("attention:Q", scale=alt.Scale(scheme="greys", domain=[0, 1]), title="attention"),
        tooltip=["query", "key", alt.Tooltip("attention:Q", format=".3f")],
    ).properties(width=size, height=size, title=title)


def training_loss_chart(history: pd.DataFrame, levels: Optional[dict] = None, width: int = 420, height: int = 240,
                        title: str = "toy model: a plateau, then the circuit") -> alt.LayerChart:
    """The ``train_loss`` rows of a grown circuit's history against step (linear axis), with dashed reference
    ``levels`` (name → nats, e.g. :func:`serpent.induction_toy.loss_levels`)."""
    loss = history[history["score"] == "train_loss"][["step", "value"]]
    layers = [alt.Chart(loss).mark_line(point=True).encode(
        x=alt.X("step:Q", title="training step"), y=alt.Y("value:Q", title="training loss (nats per token)"),
        tooltip=["step", alt.Tooltip("value:Q", format=".3f")])]
    if levels:
        refs = pd.DataFrame({"value": list(levels.values()), "level": list(levels)})
        layers += [alt.Chart(refs).mark_rule(strokeDash=[4, 3], color="grey").encode(y="value:Q",
                                                                                      tooltip=["level", "value"]),
                   alt.Chart(refs).mark_text(align="right", dy=-6, color="grey").encode(
                       y="value:Q", text="level:N", x=alt.value(width - 5))]
    return alt.layer(*layers).properties(width=width, height=height, title=title)
