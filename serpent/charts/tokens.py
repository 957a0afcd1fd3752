"""Charts of token sequences: each token drawn as a box in reading order, coloured by its pattern or by a value.

Used by the notebooks to show a tokenized snippet (coloured by :data:`serpent.patterns.PALETTE`) and a probe sequence
coloured by the susceptibility of one head (diverging scale centred on 0, blue = χ < 0 = the head expresses the
token, red = χ > 0 = suppresses it, the colours of :mod:`serpent.charts.serpent`).

Layout: tokens are placed left to right, one character = ``char_px`` pixels; a token whose text holds a newline ends
the line, and lines wrap at ``width`` pixels. Leading spaces are drawn as ``␣``, newlines as ``↵``, tabs as ``→``, so
whitespace tokens stay visible. Plain Altair (works with 5.5 and 6), data embedded as values.

>>> chart = token_strip(["def", "Ġf", "(", "x", "):", "Ċ", "ĠĠĠ", "Ġreturn", "Ġx"])
>>> [layer["mark"]["type"] for layer in chart.to_dict()["layer"]]
['rect', 'text']
>>> rows = token_layout(["a", "Ċ", "b"]); [(r["line"], r["x0"]) for r in rows]
[(0, 0), (0, 12), (1, 0)]
"""

from __future__ import annotations

from typing import Optional, Sequence

import altair as alt
import numpy as np

from ..errors import SerpentError
from ..patterns import PALETTE, PATTERNS, classify_tokens, token_text

__all__ = ["token_layout", "token_strip"]


def _label(tok: str) -> str:
    text = token_text(tok)
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "⏎") or tok


def token_layout(tokens: Sequence[str], *, width: int = 520, char_px: int = 8) -> list[dict]:
    """Boxes for raw byte-level BPE token strings: one dict per token with ``i, label, line, x0, x1`` (pixels)."""
    rows, x, line = [], 0, 0
    for i, tok in enumerate(tokens):
        label = _label(tok)
        w = char_px * max(1, len(label)) + 4
        if x > 0 and x + w > width:
            x, line = 0, line + 1
        rows.append({"i": i, "label": label, "line": line, "x0": x, "x1": x + w - 2})
        x += w
        if "\n" in token_text(tok):
            x, line = 0, line + 1
    return rows


def token_strip(tokens: Sequence[str], values: Optional[Sequence[float]] = None, *, title: str = "",
                value_title: str = "χ", width: int = 480, line_px: int = 22, char_px: int = 8) -> alt.LayerChart:
    """Tokens as boxes: coloured by pattern (``values`` None) or by ``values`` on a diverging scale centred on 0."""
    tokens = list(tokens)
    if not tokens:
        raise SerpentError("token_strip: no tokens to draw")
    rows = token_layout(tokens, width=width, char_px=char_px)
    if values is None:
        pats = classify_tokens(tokens)
        for r, p in zip(rows, pats):
            r["pattern"] = p
        color = alt.Color("pattern:N", scale=alt.Scale(domain=list(PATTERNS), range=[PALETTE[p] for p in PATTERNS]),
                          legend=alt.Legend(title="pattern"))
        tips = ["label:N", "pattern:N"]
    else:
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != (len(tokens),):
            raise SerpentError(f"token_strip: {vals.shape[0] if vals.ndim else 0} values for {len(tokens)} tokens")
        m = float(np.nanmax(np.abs(vals))) or 1.0
        for r, v in zip(rows, vals):
            r["value"] = None if not np.isfinite(v) else float(v)
        color = alt.Color("value:Q", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-m, m], domainMid=0),
                          legend=alt.Legend(title=value_title))
        tips = ["label:N", alt.Tooltip("value:Q", format=".3g", title=value_title)]
    n_lines = rows[-1]["line"] + 1
    data = alt.Data(values=rows)
    x = alt.X("x0:Q", axis=None, scale=alt.Scale(domain=[0, width]))
    y = alt.Y("line:O", axis=None)
    boxes = alt.Chart(data).mark_rect(cornerRadius=3, opacity=0.85, height=line_px - 4).encode(
        x=x, x2="x1:Q", y=y, color=color, tooltip=tips)
    text = alt.Chart(data).mark_text(align="left", dx=2, fontSize=12, font="monospace").encode(
        x=x, y=y, text="label:N", tooltip=tips)
    return alt.layer(boxes, text).properties(width=width, height=line_px * n_lines, title=title)
