"""Charts of the rainbow serpent: the UMAP map of token susceptibilities, coloured by token pattern.

Input is the tidy frame of the serpent stage (``serpent/embedding.parquet``): one row per token and checkpoint with
columns ``step, point, x, y, pattern, token, context, n_prev_spaces`` and one column per component (``"0:0"`` …
``"1:7"``, the susceptibilities χ).

* :func:`serpent_chart` the interactive serpent for notebooks, Colab and static pages: a checkpoint slider (an
  Altair parameter, so it works without a kernel), a legend that filters patterns (click; shift-click for several),
  tooltips with the token in its context, and, below, the χ bars of the token clicked.
* :func:`serpent_snapshot` one checkpoint, every token (for PNGs); :func:`small_multiples` all checkpoints side by side;
  :func:`token_bars` the χ of one token as bars.
* :func:`save_png` / :func:`save_svg` export offline through vl-convert, atomically.

Large inputs, deliberately: data are embedded as plain values (``alt.Data``), which bypasses Altair's 5,000-row
guard; the interactive chart keeps at most ``max_points`` tokens *per checkpoint* (a seeded random subset of tokens,
the same tokens at every checkpoint so they can be followed), while the static exports draw every token.
Colours come from :data:`serpent.patterns.PALETTE` (fixed across checkpoints). Works with Altair 5.5 and 6.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"step": np.repeat([0, 100], 50), "point": np.tile(np.arange(50), 2),
...     "x": rng.normal(size=100), "y": rng.normal(size=100), "pattern": "numeric", "token": "Ġ1",
...     "context": "«1»", "n_prev_spaces": 0, "0:0": rng.normal(size=100), "0:1": rng.normal(size=100)})
>>> sorted(p["name"] for p in serpent_chart(df).to_dict()["params"])
['checkpoint', 'patterns', 'pick']
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..errors import SerpentError
from ..patterns import PALETTE, PATTERNS
from .export import chart_bytes

__all__ = ["component_columns", "subsample_points", "serpent_chart", "serpent_snapshot", "small_multiples",
           "body_axes_chart", "thickening_chart",
           "spacing_fin_chart", "token_bars", "save_png", "save_svg", "SIGN_COLORS"]

#: Bar colours by sign (:data:`serpent.susceptibility.SIGN_CONVENTION`: χ < 0 the head expresses the token).
SIGN_COLORS = {"expresses (χ<0)": "#3b6fb6", "suppresses (χ>0)": "#d1495b"}
_COMPONENT = re.compile(r"^(\d+:\d+|mlp:\d+)$")
_REQUIRED = ("step", "point", "x", "y", "pattern")


def component_columns(frame: pd.DataFrame) -> list[str]:
    """Names of the χ columns (``"L:H"`` or ``"mlp:L"``) in frame order.

    >>> component_columns(pd.DataFrame(columns=["step", "0:0", "1:7", "token", "mlp:0"]))
    ['0:0', '1:7', 'mlp:0']
    """
    return [c for c in frame.columns if isinstance(c, str) and _COMPONENT.match(c)]


def _check(frame: pd.DataFrame) -> None:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise SerpentError(f"serpent frame lacks columns {missing}; pass the frame of the serpent stage "
                           "(serpent/embedding.parquet) or merge embed_checkpoints() with label_result()")
    if frame.empty:
        raise SerpentError("serpent frame is empty: no tokens to draw")


def subsample_points(frame: pd.DataFrame, max_points: Optional[int], seed: int = 0) -> pd.DataFrame:
    """Keep at most ``max_points`` tokens per checkpoint: the same seeded random ``point`` ids at every step.

    >>> df = pd.DataFrame({"step": np.repeat([0, 1], 10), "point": np.tile(np.arange(10), 2)})
    >>> sub = subsample_points(df, 4)
    >>> len(sub), sorted(sub[sub.step == 0].point) == sorted(sub[sub.step == 1].point)
    (8, True)
    """
    if max_points is None:
        return frame
    ids = np.unique(frame["point"].to_numpy())
    if len(ids) <= max_points:
        return frame
    keep = np.random.default_rng(seed).choice(ids, size=max_points, replace=False)
    return frame[frame["point"].isin(keep)]


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    df = frame[list(columns)].copy()
    for c in df.columns:
        if c in ("x", "y"):
            df[c] = df[c].astype(np.float64).round(3)
        elif _COMPONENT.match(str(c)):
            v = df[c].astype(np.float64).to_numpy()
            df[c] = [float(f"{a:.4g}") for a in v]
        elif not (pd.api.types.is_numeric_dtype(df[c].dtype) or pd.api.types.is_bool_dtype(df[c].dtype)):
            # Altair's HTML output inlines the spec in a <script>: "</" in a token's context would end it early
            df[c] = df[c].astype(str).str.replace("</", "<\u200b/", regex=False)
    return df.to_dict(orient="records")


def _color(legend_title: str = "pattern", orient: str = "right") -> alt.Color:
    columns = {"columns": 4} if orient == "bottom" else {}
    return alt.Color("pattern:N", scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                     legend=alt.Legend(title=legend_title, symbolOpacity=1, orient=orient, **columns))


def _tooltip(frame: pd.DataFrame) -> list:
    tips = [alt.Tooltip("token:N", title="token"), alt.Tooltip("pattern:N"), alt.Tooltip("context:N"),
            alt.Tooltip("step:Q")]
    if "n_prev_spaces" in frame.columns:
        tips.append(alt.Tooltip("n_prev_spaces:Q", title="spaces before"))
    return [t for t in tips if t.shorthand.split(":")[0] in frame.columns]


def _axis(name: str, domain=None):
    scale = alt.Scale(domain=list(domain), nice=False, zero=False) if domain is not None else alt.Scale(zero=False)
    return alt.X(f"{name}:Q", axis=None, scale=scale) if name == "x" else alt.Y(f"{name}:Q", axis=None, scale=scale)


def serpent_chart(frame: pd.DataFrame, *, max_points: Optional[int] = 4000, bars: bool = True, width: int = 460,
                  height: int = 420, point_size: float = 14, seed: int = 0) -> alt.TopLevelMixin:
    """The interactive serpent: checkpoint slider, legend filter, tooltips, and χ bars of the clicked token."""
    _check(frame)
    df = subsample_points(frame, max_points, seed).copy()
    steps = sorted(int(s) for s in df["step"].unique())
    df["ckpt"] = df["step"].map({s: i for i, s in enumerate(steps)})
    comps = component_columns(df)
    cols = [c for c in ["step", "ckpt", "point", "x", "y", "pattern", "token", "context", "n_prev_spaces"]
            if c in df.columns] + (comps if bars else [])
    data = alt.Data(values=_records(df, cols))

    ckpt = alt.param(name="checkpoint", value=len(steps) - 1,
                     bind=alt.binding_range(min=0, max=max(1, len(steps) - 1), step=1, name="checkpoint "))
    legend = alt.selection_point(fields=["pattern"], bind="legend", name="patterns")
    pick = alt.selection_point(fields=["point"], on="click", name="pick", empty=False, clear="dblclick")
    xdom = (float(df["x"].min()), float(df["x"].max()))
    ydom = (float(df["y"].min()), float(df["y"].max()))

    dots = alt.Chart().mark_circle(size=point_size).encode(
        x=_axis("x", xdom), y=_axis("y", ydom),
        color=_color("pattern (click to filter)"),
        opacity=alt.condition(legend, alt.value(0.75), alt.value(0.03)),
        tooltip=_tooltip(df),
    ).transform_filter(alt.datum.ckpt == ckpt).add_params(legend, pick)
    ring = alt.Chart().mark_point(size=120, color="black", strokeWidth=2).encode(
        x=_axis("x", xdom), y=_axis("y", ydom)).transform_filter(alt.datum.ckpt == ckpt).transform_filter(pick)
    label = alt.Chart(alt.Data(values=[{"ckpt": i, "label": f"step {s:,}"} for i, s in enumerate(steps)])).mark_text(
        align="left", baseline="top", fontSize=14, fontWeight="bold", dx=4, dy=4).encode(
        x=alt.value(0), y=alt.value(0), text="label:N").transform_filter(alt.datum.ckpt == ckpt)
    serp = alt.layer(dots, ring, label, data=data if not (bars and comps) else alt.Undefined).properties(width=width, height=height,
                                                   title="The rainbow serpent (UMAP of per-token susceptibilities)")
    if not bars or not comps:
        return serp.add_params(ckpt)
    bar = alt.Chart().transform_filter(alt.datum.ckpt == ckpt).transform_filter(pick).transform_fold(
        comps, as_=["component", "chi"]).transform_calculate(
        sign=f"datum.chi < 0 ? '{list(SIGN_COLORS)[0]}' : '{list(SIGN_COLORS)[1]}'").mark_bar().encode(
        x=alt.X("component:N", sort=comps, title="component (layer:head)"),
        y=alt.Y("chi:Q", title="susceptibility χ"),
        color=alt.Color("sign:N", scale=alt.Scale(domain=list(SIGN_COLORS), range=list(SIGN_COLORS.values())),
                        legend=alt.Legend(title="sign")),
        tooltip=["component:N", alt.Tooltip("chi:Q", format=".3g"), "token:N", "context:N"],
    ).properties(width=width, height=160, title="χ of the clicked token (double-click the map to clear)")
    return alt.vconcat(serp, bar, data=data).add_params(ckpt).resolve_scale(color="independent")


def serpent_snapshot(frame: pd.DataFrame, *, domain: Optional[tuple] = None, width: int = 480, height: int = 420,
                     point_size: float = 8, title: Optional[str] = None) -> alt.Chart:
    """Static map of one checkpoint with every token (full resolution, for PNG/SVG).

    ``domain`` = ((xmin, xmax), (ymin, ymax)) fixes the frame, e.g. to the range over all checkpoints.
    """
    _check(frame)
    steps = frame["step"].unique()
    if len(steps) != 1:
        raise SerpentError(f"serpent_snapshot draws one checkpoint; got steps {sorted(steps)[:5]}; select one step "
                           "(frame[frame.step == s]) or use small_multiples")
    xd, yd = domain if domain is not None else (None, None)
    return alt.Chart(alt.Data(values=_records(frame, ["x", "y", "pattern"]))).mark_circle(
        size=point_size, opacity=0.65).encode(x=_axis("x", xd), y=_axis("y", yd), color=_color()).properties(
        width=width, height=height, title=title or f"step {int(steps[0]):,}: {len(frame):,} tokens")


def small_multiples(frame: pd.DataFrame, *, columns: int = 3, size: int = 160, point_size: float = 4,
                    max_points: Optional[int] = None, seed: int = 0) -> alt.FacetChart:
    """All checkpoints side by side (facets by step), every token unless ``max_points`` is given."""
    _check(frame)
    df = subsample_points(frame, max_points, seed)
    return alt.Chart(alt.Data(values=_records(df, ["step", "x", "y", "pattern"]))).mark_circle(
        size=point_size, opacity=0.6).encode(
        x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)), color=_color(orient="bottom"),
    ).properties(width=size, height=size).facet(
        facet=alt.Facet("step:O", title="training step"), columns=columns,
    ).resolve_scale(x="independent", y="independent")


def spacing_fin_chart(frame: pd.DataFrame, *, max_points: Optional[int] = 4000, seed: int = 0, width: int = 420,
                      height: int = 340) -> alt.LayerChart:
    """The last checkpoint's whitespace tokens coloured by the width of the indentation they carry (spaces in the
    token plus ``n_prev_spaces``, the spaces just before it), over the other tokens in grey."""
    _check(frame)
    last = frame[frame["step"] == frame["step"].max()].copy()
    last["spaces"] = last["n_prev_spaces"] + last["token"].astype(str).str.count("[ ␣Ġ]")
    white = last["pattern"].isin(["spacing", "formatting"]) & (last["spaces"] > 0)
    space, rest = last[white], last[~white]
    if max_points is not None and len(rest) > max_points:
        rest = rest.sample(max_points, random_state=seed)
    return alt.layer(
        alt.Chart(alt.Data(values=_records(rest, ["x", "y"]))).mark_circle(size=6, color="#d0d0d0"),
        alt.Chart(alt.Data(values=_records(space, ["x", "y", "spaces", "pattern", "context"]))).mark_circle(
            size=18).encode(color=alt.Color("spaces:Q", scale=alt.Scale(scheme="viridis"), title="spaces"),
                            tooltip=["spaces:Q", "pattern:N", "context:N"]),
    ).encode(x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None)).properties(
        width=width, height=height, title=f"whitespace tokens at step {int(last['step'].iloc[0]):,} ({len(space)} tokens)")


def body_axes_chart(frame: pd.DataFrame, steps: Optional[Sequence[int]] = None, *, size: int = 250,
                    point_size: float = 12, max_points: Optional[int] = None, seed: int = 0,
                    numbers: Optional[dict] = None) -> alt.FacetChart:
    """The serpent in its body axes: PC1 (the long axis: each token's mean χ, expression ↔ suppression) across,
    PC2 (the short axis, on which the induction tokens hang below the body once the circuit exists) up, one panel
    per checkpoint in ``steps`` (default: the first and the last). ``frame`` needs ``pc1``/``pc2``
    (:func:`serpent.anatomy.body_axes_frame`). Each panel has its own scales (PC2 is 10-30× narrower than PC1);
    ``numbers`` (step → text) titles the panels, e.g. with PC2's share and the induction tokens' AUC."""
    if not {"pc1", "pc2"} <= set(frame.columns):
        raise SerpentError("body_axes_chart needs pc1 and pc2 columns: pass serpent.anatomy.body_axes_frame(frame)")
    all_steps = sorted(int(s) for s in frame["step"].unique())
    steps = [all_steps[0], all_steps[-1]] if steps is None else [int(s) for s in steps]
    df = subsample_points(frame[frame["step"].isin(steps)], max_points, seed).copy()
    df["panel"] = df["step"].map(lambda s: (numbers or {}).get(int(s), f"step {int(s):,}"))
    df["layer"] = (df["pattern"].astype(str) == "induction").astype(int)     # induction drawn on top
    order = [(numbers or {}).get(s, f"step {s:,}") for s in steps]
    return alt.Chart(alt.Data(values=_records(df.sort_values("layer"), ["panel", "pc1", "pc2", "pattern", "token",
                                                                      "context"]))).mark_circle(
        size=point_size, opacity=0.7).encode(
        x=alt.X("pc1:Q", title="PC1: mean χ (expression ← → suppression)", scale=alt.Scale(zero=False),
                axis=alt.Axis(tickCount=5, labelOverlap=True)),
        y=alt.Y("pc2:Q", title="PC2", scale=alt.Scale(zero=False), axis=alt.Axis(tickCount=5, labelOverlap=True)),
        color=alt.Color("pattern:N", scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                        legend=alt.Legend(title="pattern", orient="bottom", columns=4, symbolOpacity=1)),
        tooltip=[alt.Tooltip("token:N"), alt.Tooltip("pattern:N"), alt.Tooltip("context:N")],
    ).properties(width=size, height=size).facet(
        facet=alt.Facet("panel:N", sort=order, title=None, header=alt.Header(labelLimit=size + 40)),
        columns=len(steps),
    ).resolve_scale(x="independent", y="independent")


def thickening_chart(table: pd.DataFrame, prefix: Optional[pd.DataFrame] = None, *, width: int = 250,
                     height: int = 170) -> alt.HConcatChart:
    """Over training: the induction tokens' separation along PC2 (AUC, with its random-pick null) and the body's
    thickness ``sd(PC2)/sd(PC1)`` (from :func:`serpent.anatomy.anatomy_table`), beside the best prefix-matching
    score of the induction heads (``prefix``: columns ``step``, ``value``), all against the training step."""
    t = table.copy()
    lines = []
    for col, name in (("induction_auc_pc2", "induction tokens along PC2 (AUC)"),
                      ("induction_auc_null", "random tokens along PC2 (null)"),
                      ("thickness", "thickness sd(PC2)/sd(PC1)")):
        if col in t:
            lines += [{"step": int(r.step), "value": float(getattr(r, col)), "series": name}
                      for r in t.itertuples() if pd.notna(getattr(r, col))]
    x = alt.X("step:Q", title="training step", axis=alt.Axis(format="~s", tickCount=5, labelOverlap=True))
    series = [l["series"] for l in lines]
    names = list(dict.fromkeys(series))
    body = alt.Chart(alt.Data(values=lines)).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="AUC / thickness", scale=alt.Scale(zero=False)),
        color=alt.Color("series:N", scale=alt.Scale(domain=names, range=["#d55e00", "#999999", "#0072b2"][:len(names)]),
                        legend=alt.Legend(title=None, orient="bottom", direction="vertical")),
        strokeDash=alt.condition(alt.datum.series == "random tokens along PC2 (null)", alt.value([4, 3]),
                                 alt.value([1, 0])),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=width, height=height, title="the short axis thickens")
    if prefix is None or not len(prefix):
        return alt.hconcat(body)
    heads = alt.Chart(alt.Data(values=[{"step": int(a), "value": float(b)} for a, b in
                                       zip(prefix["step"], prefix["value"])])).mark_line(
        point=True, color="#cc79a7").encode(
        x=x, y=alt.Y("value:Q", title="best prefix-matching score"),
        tooltip=["step:Q", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=width, height=height, title="… as the induction heads form")
    return alt.hconcat(body, heads).resolve_scale(color="independent")


def token_bars(values, components: Optional[Sequence[str]] = None, *, title: str = "", width: int = 420,
               height: int = 180) -> alt.Chart:
    """The susceptibilities of one token as bars (blue: the head expresses it, χ < 0; red: suppresses it).

    ``values`` is a row of the serpent frame (Series or 1-row DataFrame) or a sequence of C numbers with
    ``components`` their names.

    >>> token_bars([0.5, -1.0], ["0:0", "0:1"]).to_dict()["mark"]["type"]
    'bar'
    """
    if isinstance(values, pd.DataFrame):
        if len(values) != 1:
            raise SerpentError(f"token_bars draws one token; got {len(values)} rows")
        values = values.iloc[0]
    if isinstance(values, pd.Series):
        comps = list(components) if components is not None else component_columns(values.to_frame().T)
        vals = [float(values[c]) for c in comps]
    else:
        vals = [float(v) for v in values]
        comps = list(components) if components is not None else [str(i) for i in range(len(vals))]
    if len(comps) != len(vals):
        raise SerpentError(f"{len(vals)} values but {len(comps)} component names")
    neg, pos = list(SIGN_COLORS)
    rows = [{"component": c, "chi": v, "sign": neg if v < 0 else pos} for c, v in zip(comps, vals)]
    return alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("component:N", sort=comps, title="component (layer:head)"),
        y=alt.Y("chi:Q", title="susceptibility χ"),
        color=alt.Color("sign:N", scale=alt.Scale(domain=[neg, pos], range=list(SIGN_COLORS.values())),
                        legend=alt.Legend(title="sign")),
        tooltip=["component:N", alt.Tooltip("chi:Q", format=".3g")],
    ).properties(width=width, height=height, title=title)


def save_png(chart: alt.TopLevelMixin, path, scale: float = 2.0) -> Path:
    """Render ``chart`` to a PNG file offline (vl-convert), atomically; returns the path."""
    from ..io import atomic_write_bytes
    path = Path(path)
    atomic_write_bytes(path, chart_bytes(chart, "png", scale))
    return path


def save_svg(chart: alt.TopLevelMixin, path) -> Path:
    """Render ``chart`` to an SVG file offline (vl-convert), atomically; returns the path."""
    from ..io import atomic_write_bytes
    path = Path(path)
    atomic_write_bytes(path, chart_bytes(chart, "svg"))
    return path
