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


def response_pca_chart(pca, *, width: int = 280, height: int = 260,
                       title: str = "heads in the response PCA") -> alt.LayerChart:
    """The heads as points on the first two principal components of the response matrix, coloured by layer."""
    df = pca.scores.reset_index(names="head")
    df["layer"] = df["head"].str.split(":").str[0]
    ev = pca.explained_variance_ratio
    pc2 = "PC2" if "PC2" in df else "PC1"
    pts = alt.Chart(df).mark_circle(size=90).encode(
        x=alt.X("PC1:Q", title=f"PC1 ({ev[0]:.0%})"),
        y=alt.Y(f"{pc2}:Q", title=f"{pc2} ({ev[min(1, len(ev) - 1)]:.0%})"), color="layer:N",
        tooltip=["head", alt.Tooltip("PC1:Q", format=".3g"), alt.Tooltip(f"{pc2}:Q", format=".3g")])
    return (pts + pts.mark_text(dx=12).encode(text="head:N")).properties(width=width, height=height, title=title)
