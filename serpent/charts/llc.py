"""Charts of the local learning coefficient: the LLC across training, SGLD loss traces, and ε × nβ calibration.

Inputs are the tidy tables of :mod:`serpent.llc` (``llc.parquet``: ``step, mean, std, init_loss, chain_*``;
``traces.parquet``: ``step, chain, sgld_step, loss``; :func:`serpent.llc.calibrate`'s table). The training-step
axis is ``symlog`` (step 0 is drawn). Trace tables longer than ~4,000 rows are thinned (Altair's 5,000-row limit)
by keeping every k-th SGLD step. Plain Altair API only, so the charts work with Altair 5.5 (Colab) and 6;
:func:`save_chart` writes ``.png`` (vl-convert, offline) and a self-contained ``.html`` atomically.

>>> import pandas as pd
>>> t = pd.DataFrame({"step": [0, 10, 100], "mean": [5.0, 9.0, 12.0], "std": [0.5, 0.4, 0.6],
...                   "init_loss": [6.0, 4.0, 3.5]})
>>> type(llc_curve_chart(t)).__name__
'LayerChart'
"""

from __future__ import annotations

from typing import Optional

import altair as alt
import numpy as np
import pandas as pd

from .export import save_chart

__all__ = ["llc_curve_chart", "llc_with_scores_chart", "loss_trace_chart", "calibration_chart", "save_chart"]

_MAX_ROWS = 4000


def _log_steps(max_step: float) -> alt.X:
    """A symlog step axis with ticks at 0 and the powers of ten (Vega's own ticks for a symlog scale are linear, so
    their labels pile up at the right end)."""
    ticks = [0] + [10 ** k for k in range(0, int(np.log10(max(float(max_step), 1))) + 1)]
    return alt.X("step:Q", scale=alt.Scale(type="symlog"), title="training step (log scale)",
                 axis=alt.Axis(values=ticks, format=",d", grid=True))


def llc_curve_chart(table: pd.DataFrame, width: int = 420, height: int = 260,
                    title: str = "Local learning coefficient across training") -> alt.LayerChart:
    """LLC (mean over chains, band = ± one standard deviation across chains) against training step."""
    need = {"step", "mean", "std"}
    if not need <= set(table.columns):
        raise ValueError(f"the table needs columns {sorted(need)}; got {list(table.columns)}")
    df = table[["step", "mean", "std"] + (["init_loss"] if "init_loss" in table else [])].copy()
    df["lo"] = df["mean"] - df["std"].fillna(0)
    df["hi"] = df["mean"] + df["std"].fillna(0)
    x = _log_steps(df["step"].max())
    base = alt.Chart(df)
    band = base.mark_area(opacity=0.25, color="#4363d8").encode(x=x, y=alt.Y("lo:Q", title="LLC"), y2="hi:Q")
    tips = [alt.Tooltip("step:Q"), alt.Tooltip("mean:Q", format=".2f", title="LLC"),
            alt.Tooltip("std:Q", format=".2f", title="std over chains")]
    if "init_loss" in df:
        tips.append(alt.Tooltip("init_loss:Q", format=".3f", title="loss at w*"))
    line = base.mark_line(point=True, color="#4363d8").encode(x=x, y="mean:Q", tooltip=tips)
    return alt.layer(band, line).properties(width=width, height=height, title=title)


def _thin_traces(df: pd.DataFrame, max_rows: int = _MAX_ROWS) -> pd.DataFrame:
    if len(df) <= max_rows:
        return df
    n_steps = df["sgld_step"].nunique()
    k = int(np.ceil(len(df) / max_rows))
    keep = set(range(0, n_steps, k)) | {n_steps - 1}
    return df[df["sgld_step"].isin(keep)]


def loss_trace_chart(traces: pd.DataFrame, table: Optional[pd.DataFrame] = None, max_checkpoints: int = 6,
                     width: int = 420, height: int = 260) -> alt.Chart:
    """SGLD minibatch loss minus the loss at ``w*`` against SGLD step, mean over chains, one line per checkpoint.

    ``traces`` has columns ``step, chain, sgld_step, loss`` (one checkpoint is fine: ``step`` constant); ``table``
    supplies ``init_loss`` per step (else the first loss of each trace is used). At most ``max_checkpoints``
    checkpoints, spread evenly, are drawn. A healthy trace rises and then stays flat; spikes or a steady climb
    mean ``epsilon`` is too large or ``gamma`` too small.
    """
    need = {"step", "chain", "sgld_step", "loss"}
    if not need <= set(traces.columns):
        raise ValueError(f"the traces table needs columns {sorted(need)}; got {list(traces.columns)}")
    steps = sorted(traces["step"].unique())
    if len(steps) > max_checkpoints:
        idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_checkpoints)).astype(int))
        steps = [steps[i] for i in idx]
    df = traces[traces["step"].isin(steps)]
    df = df.groupby(["step", "sgld_step"], as_index=False)["loss"].mean()
    if table is not None and "init_loss" in table:
        init = table.set_index("step")["init_loss"]
    else:
        init = df[df["sgld_step"] == df["sgld_step"].min()].set_index("step")["loss"]
    df["excess"] = df["loss"] - df["step"].map(init)
    df = _thin_traces(df)
    return alt.Chart(df).mark_line().encode(
        x=alt.X("sgld_step:Q", title="SGLD step"),
        y=alt.Y("excess:Q", title="minibatch loss − loss at w*"),
        color=alt.Color("step:O", title="checkpoint", scale=alt.Scale(scheme="viridis")),
        tooltip=[alt.Tooltip("step:Q", title="checkpoint"), "sgld_step:Q",
                 alt.Tooltip("excess:Q", format=".4f", title="excess loss")],
    ).properties(width=width, height=height, title="SGLD loss traces (mean over chains)")


def calibration_chart(cal: pd.DataFrame, width: int = 190, height: int = 220) -> alt.HConcatChart:
    """Left: LLC against ``epsilon`` (log scale), one line per ``n_beta``, points off the plateau circled (traces not
    flat, or estimates that still move with ``epsilon``: biased), diverged runs left out. Right: the ``epsilon ×
    n_beta`` grid coloured by the LLC, with a cross where a run diverged, a dot where it was stable (flat and on the
    plateau), a triangle where it was flat but biased, and a star on the recommended ``epsilon``."""
    need = {"epsilon", "n_beta", "llc_mean", "llc_std", "diverged", "stable"}
    if not need <= set(cal.columns):
        raise ValueError(f"the calibration table needs columns {sorted(need)}; got {list(cal.columns)}")
    if "status" not in cal:
        from ..llc import epsilon_plateau
        cal = epsilon_plateau(cal)
    df = cal[list(need) + ["status", "recommended"] + (["drift"] if "drift" in cal else [])].copy()
    eps = df["epsilon"].to_numpy(float)
    decades = [10.0 ** k for k in range(int(np.floor(np.log10(eps.min()))), int(np.ceil(np.log10(eps.max()))) + 1)]
    x = alt.X("epsilon:Q", scale=alt.Scale(type="log"), title="epsilon (step size)",
              axis=alt.Axis(format="~e", values=decades, labelOverlap=True))
    ok = df[~df["diverged"]]
    tips = ["epsilon:Q", "n_beta:Q", alt.Tooltip("llc_mean:Q", format=".3f", title="LLC"),
            alt.Tooltip("llc_std:Q", format=".3f", title="std"), "status:N"]
    lines = alt.Chart(ok).mark_line(point=alt.OverlayMarkDef(filled=True, size=60)).encode(
        x=x, y=alt.Y("llc_mean:Q", title="LLC estimate"),
        color=alt.Color("n_beta:O", title="n_beta", legend=alt.Legend(orient="bottom", direction="horizontal")),
        tooltip=tips)
    hollow = alt.Chart(ok[ok["status"] != "stable"]).mark_point(shape="circle", size=160, color="black").encode(
        x=x, y="llc_mean:Q", tooltip=tips)
    left = alt.layer(lines, hollow).properties(
        width=width, height=height,
        title=alt.TitleParams("LLC against step size", subtitle="circled: not flat, or biased"))
    grid_base = alt.Chart(df).encode(x=alt.X("epsilon:O", title="epsilon", axis=alt.Axis(labelAngle=-45, format="~e")),
                                     y=alt.Y("n_beta:O", title="n_beta"))
    heat = grid_base.mark_rect().encode(color=alt.Color("llc_mean:Q", title="LLC", scale=alt.Scale(scheme="blues"),
                                                        legend=alt.Legend(orient="bottom", direction="horizontal")),
                                        tooltip=tips)
    symbols = grid_base.mark_text(fontSize=16, fontWeight="bold").encode(
        text="symbol:N", color=alt.value("#d62728")).transform_calculate(
        symbol="datum.status == 'diverged' ? '✗' : (datum.recommended ? '★' : (datum.status == 'stable' ? '●' : "
               "(datum.status == 'biased' ? '▲' : '○')))")
    right = alt.layer(heat, symbols).properties(
        width=width + 40, height=height,
        title=alt.TitleParams("The ε × n_beta grid", subtitle="✗ diverged ○ not flat ▲ biased ● stable ★ use"))
    return alt.hconcat(left, right).resolve_scale(color="independent")


def llc_with_scores_chart(table: pd.DataFrame, scores: pd.DataFrame, width: int = 400) -> alt.VConcatChart:
    """The LLC curve above the best previous-token and prefix scores of any head (the induction stage's
    ``scores.parquet``: ``step, head, score, value``), on one shared step axis."""
    heads = scores[(scores["head"] != "model") & scores["score"].isin(["prev_token", "prefix"])]
    best = heads.groupby(["step", "score"])["value"].max().reset_index()
    best["score"] = best["score"].map({"prev_token": "best previous-token score", "prefix": "best prefix score"})
    x = _log_steps(max(table["step"].max(), best["step"].max()))
    llc_line = alt.Chart(table[["step", "mean", "std"]]).mark_line(point=True, color="#333").encode(
        x=x, y=alt.Y("mean:Q", title="LLC"), tooltip=["step", alt.Tooltip("mean:Q", format=".2f"),
                                                       alt.Tooltip("std:Q", format=".2f")])
    score_lines = alt.Chart(best).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="attention score"), color=alt.Color("score:N", title=None),
        tooltip=["step", "score", alt.Tooltip("value:Q", format=".3f")])
    return alt.vconcat(llc_line.properties(width=width, height=160, title="LLC"),
                       score_lines.properties(width=width, height=140, title="induction scores")
                       ).resolve_scale(x="shared")
