"""Widgets: a live token inspector for Jupyter and Colab (ipywidgets 7.7 and 8).

Pick a checkpoint, search for a token, choose one of its occurrences: the panel shows the token, its pattern, its
context (the token marked) and its susceptibilities as bars (blue: the head expresses it, χ < 0; red: suppresses
it). Widgets need a running kernel: a static book page shows nothing, so the book uses the Altair charts of
:mod:`serpent.charts.serpent` and the explorer page instead. ``ipywidgets`` is imported only when an inspector is
built, so the package imports without it.

Input is the serpent frame (``serpent/embedding.parquet`` of a run, or :func:`serpent.patterns.label_result` rows
with any x/y), one row per token and checkpoint.

>>> svg = chi_bars_svg([0.5, -1.0], ["0:0", "0:1"])
>>> svg.count("<rect"), "#3b6fb6" in svg and "#d1495b" in svg
(2, True)
"""

from __future__ import annotations

import html as _html
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import SerpentError
from .patterns import PALETTE

__all__ = ["chi_bars_svg", "token_panel_html", "TokenInspector", "token_inspector"]

_NEG, _POS = "#3b6fb6", "#d1495b"


def chi_bars_svg(values: Sequence[float], components: Sequence[str], *, width: int = 460, height: int = 170) -> str:
    """The susceptibilities of one token as an inline SVG bar chart (symmetric axis around 0)."""
    vals = [float(v) for v in values]
    if len(vals) != len(components):
        raise SerpentError(f"{len(vals)} values but {len(components)} component names")
    top, bottom, left = 12, 32, 44
    m = max((abs(v) for v in vals if np.isfinite(v)), default=0.0) or 1.0
    bw = (width - left - 6) / max(1, len(vals))
    y0 = top + (height - top - bottom) / 2
    sc = (height - top - bottom) / 2 / m
    parts = [f'<svg width="{width}" height="{height}" font-size="10" font-family="monospace" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" x2="{width - 4}" y1="{y0}" y2="{y0}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{m:.2g}</text>',
             f'<text x="{left - 4}" y="{height - bottom + 2}" text-anchor="end">{-m:.2g}</text>']
    for j, (c, v) in enumerate(zip(components, vals)):
        h = abs(v) * sc if np.isfinite(v) else 0.0
        x = left + j * bw + 1
        y = y0 - h if v >= 0 else y0
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{max(h, 0.5):.1f}" '
                     f'fill="{_NEG if v < 0 else _POS}"><title>{_html.escape(str(c))}: {v:.3g}</title></rect>')
        cx, ty = x + bw / 2 - 1, height - bottom + 14
        parts.append(f'<text x="{cx:.1f}" y="{ty}" text-anchor="middle" transform="rotate(-45 {cx:.1f} {ty})">'
                     f'{_html.escape(str(c))}</text>')
    return "".join(parts) + "</svg>"


def _context_html(ctx: str) -> str:
    a, b = ctx.find("«"), ctx.rfind("»")
    if a < 0 or b < a:
        return _html.escape(ctx)
    return (_html.escape(ctx[:a]) + '<mark style="background:#ffe066">' + _html.escape(ctx[a + 1:b]) + "</mark>"
            + _html.escape(ctx[b + 1:]))


def token_panel_html(row: pd.Series, components: Sequence[str]) -> str:
    """HTML for one row of the serpent frame: token, pattern, context and χ bars."""
    pat = str(row.get("pattern", "other"))
    colour = PALETTE.get(pat, "#999")
    ctx = str(row.get("context", ""))
    return (f'<div style="font-family:sans-serif;font-size:13px">'
            f'<div><b>token</b> <code style="font-size:18px">{_html.escape(str(row.get("token", "?")))}</code> '
            f'&nbsp;<span style="display:inline-block;width:10px;height:10px;border-radius:50%;'
            f'background:{colour}"></span> <b>{_html.escape(pat)}</b> &nbsp; step {int(row["step"]):,}'
            f' &nbsp; spaces before: {int(row.get("n_prev_spaces", 0))}</div>'
            f'<pre style="white-space:pre-wrap;background:#f6f6f6;padding:6px">{_context_html(ctx)}</pre>'
            + (chi_bars_svg([row[c] for c in components], components) if components else "")
            + "</div>")


class TokenInspector:
    """The inspector: ``.widget`` is the ipywidgets box; controls ``.step``, ``.search``, ``.choice``, ``.html``."""

    def __init__(self, frame: pd.DataFrame, *, max_options: int = 300):
        import ipywidgets as w
        from .charts.serpent import component_columns

        missing = [c for c in ("step", "point", "pattern") if c not in frame.columns]
        if missing:
            raise SerpentError(f"token_inspector needs the serpent frame; missing columns {missing}")
        if frame.empty:
            raise SerpentError("token_inspector: the frame is empty")
        self.frame = frame
        self.components = component_columns(frame)
        self.max_options = max_options
        self._index = {(int(s), int(p)): i for i, (s, p) in enumerate(zip(frame["step"], frame["point"]))}
        steps = sorted(int(s) for s in frame["step"].unique())
        first = frame[frame["step"] == steps[-1]]
        self._points = first.drop_duplicates("point")[["point"] + [c for c in ("token", "context") if c in frame]]
        self.step = w.SelectionSlider(options=[(f"{s:,}", s) for s in steps], value=steps[-1],
                                      description="checkpoint", continuous_update=False)
        self.search = w.Text(value="", placeholder="search a token", description="token")
        self.choice = w.Dropdown(options=[], description="occurrence", layout=w.Layout(width="640px"))
        self.html = w.HTML()
        self.step.observe(lambda _: self.refresh(), names="value")
        self.search.observe(lambda _: self._update_choices(), names="value")
        self.choice.observe(lambda _: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.step, self.search]), self.choice, self.html])
        self._update_choices()

    def _update_choices(self) -> None:
        q = self.search.value.strip().lower()
        pts = self._points
        if q and "token" in pts:
            pts = pts[pts["token"].str.lower().str.contains(q, regex=False)]
        pts = pts.head(self.max_options)
        label = pts["context"] if "context" in pts else pts["point"].astype(str)
        opts = [(f"{l}  (#{p})", int(p)) for l, p in zip(label, pts["point"])]
        self.choice.options = opts
        self.choice.value = opts[0][1] if opts else None
        self.refresh()

    def refresh(self) -> None:
        """Redraw the panel for the current checkpoint and token."""
        if self.choice.value is None:
            self.html.value = "<i>no token matches</i>"
            return
        i = self._index.get((int(self.step.value), int(self.choice.value)))
        if i is None:
            self.html.value = "<i>this token was not probed at this checkpoint</i>"
            return
        self.html.value = token_panel_html(self.frame.iloc[i], self.components)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


def token_inspector(frame_or_run, *, max_options: int = 300) -> TokenInspector:
    """A :class:`TokenInspector` over the serpent frame, or over a run directory's ``serpent/embedding.parquet``."""
    frame = frame_or_run
    if not isinstance(frame_or_run, pd.DataFrame):
        from .outputs import EMBEDDING
        path = getattr(frame_or_run, "path", frame_or_run)
        pq = EMBEDDING.file(path)
        if not pq.exists():
            raise SerpentError(f"{pq} does not exist; run `python -m serpent run --out {path}` first")
        frame = EMBEDDING.read(path)
    return TokenInspector(frame, max_options=max_options)
