"""Charts of susceptibilities summarised per head: the response matrix (heads × token patterns) and its PCA.

Inputs come from :mod:`serpent.susceptibility`: :func:`~serpent.susceptibility.response_matrix` (a frame, heads as
rows, patterns as columns, mean χ per cell) and :func:`~serpent.susceptibility.response_pca`. Blue means the head
expresses the pattern's tokens (χ < 0), red that it suppresses them.

>>> import pandas as pd
>>> from serpent.susceptibility import response_pca
>>> m = pd.DataFrame([[1., -2.], [2., 0.], [-3., 0.1]], index=["0:0", "0:1", "1:0"], columns=["a", "b"])
>>> type(response_matrix_chart(m)).__name__, type(response_pca_chart(response_pca(m))).__name__
('Chart', 'LayerChart')
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

__all__ = ["response_matrix_chart", "response_pca_chart"]


def response_matrix_chart(matrix: pd.DataFrame, *, width: int = 260, height: int = 320,
                          title: str = "response matrix (blue: expresses, red: suppresses)") -> alt.Chart:
    """Mean χ per head and pattern as a heat map on a symmetric red-blue scale."""
    long = matrix.reset_index(names="head").melt(id_vars="head", var_name="pattern", value_name="chi")
    m = float(np.nanmax(np.abs(long["chi"]))) if long["chi"].notna().any() else 0.0
    return alt.Chart(long).mark_rect().encode(
        x=alt.X("pattern:N", sort=list(matrix.columns)), y=alt.Y("head:N", sort=list(matrix.index)),
        color=alt.Color("chi:Q", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-(m or 1.0), m or 1.0]),
                        title="mean χ"),
        tooltip=["head", "pattern", alt.Tooltip("chi:Q", format=".3g")],
    ).properties(width=width, height=height, title=title)


def _place_labels(x, y, labels, *, width: float, height: float, char_px: float = 7.0, line_px: float = 12.0,
                 gap: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Centres (in data units) for text labels beside the points (x, y) of a ``width`` × ``height`` px chart, chosen
    so that no two labels overlap and no label covers a point, where one of eight places around its point allows it
    (else the least crowded one): what Vega-Lite's text mark cannot do alone.

    >>> lx, ly = _place_labels([0, 0.01, 1], [0, 0, 1], ["0:0", "0:1", "1:0"], width=200, height=200)
    >>> len({(round(a, 3), round(b, 3)) for a, b in zip(lx, ly)})
    3
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sx = (np.ptp(x) or 1.0) / width
    sy = (np.ptp(y) or 1.0) / height
    px, py = (x - x.min()) / sx, (y - y.min()) / sy          # pixels, y upwards
    boxes, out_x, out_y = [], [], []
    points = [(a - 5, b - 5, a + 5, b + 5) for a, b in zip(px, py)]

    def clash(box, others):
        return sum(not (box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1]) for o in others)

    for a, b, text in zip(px, py, labels):
        w, h = char_px * len(str(text)), line_px
        places = [(gap + w / 2, 0), (-gap - w / 2, 0), (0, gap + h / 2), (0, -gap - h / 2),
                  (gap + w / 2, gap + h / 2), (-gap - w / 2, gap + h / 2), (gap + w / 2, -gap - h / 2),
                  (-gap - w / 2, -gap - h / 2)]
        scored = []
        for k, (dx, dy) in enumerate(places):
            box = (a + dx - w / 2, b + dy - h / 2, a + dx + w / 2, b + dy + h / 2)
            scored.append((clash(box, boxes) * 2 + clash(box, points), k, box, dx, dy))
        _, _, box, dx, dy = min(scored)
        boxes.append(box)
        out_x.append(x.min() + (a + dx) * sx)
        out_y.append(y.min() + (b + dy) * sy)
    return np.array(out_x), np.array(out_y)


def response_pca_chart(pca, *, width: int = 280, height: int = 260,
                       title: str = "heads in the response PCA") -> alt.LayerChart:
    """The heads as points on the first two principal components of the response matrix, coloured by layer, each
    labelled where its label overlaps no other (:func:`_place_labels`)."""
    df = pca.scores.reset_index(names="head")
    df["layer"] = df["head"].str.split(":").str[0]
    ev = pca.explained_variance_ratio
    pc2 = "PC2" if "PC2" in df else "PC1"
    df["label_x"], df["label_y"] = _place_labels(df["PC1"], df[pc2], df["head"], width=width, height=height)
    x_dom = [float(min(df["PC1"].min(), df["label_x"].min())), float(max(df["PC1"].max(), df["label_x"].max()))]
    y_dom = [float(min(df[pc2].min(), df["label_y"].min())), float(max(df[pc2].max(), df["label_y"].max()))]
    x_title, y_title = f"PC1 ({ev[0]:.0%})", f"{pc2} ({ev[min(1, len(ev) - 1)]:.0%})"
    x = alt.X("PC1:Q", title=x_title, scale=alt.Scale(domain=x_dom, nice=False))
    y = alt.Y(f"{pc2}:Q", title=y_title, scale=alt.Scale(domain=y_dom, nice=False))
    pts = alt.Chart(df).mark_circle(size=90).encode(
        x=x, y=y, color="layer:N",
        tooltip=["head", alt.Tooltip("PC1:Q", format=".3g"), alt.Tooltip(f"{pc2}:Q", format=".3g")])
    text = alt.Chart(df).mark_text(fontSize=11).encode(
        x=alt.X("label_x:Q", title=x_title), y=alt.Y("label_y:Q", title=y_title), text="head:N", color="layer:N")
    return (pts + text).properties(width=width, height=height, title=title)
