"""Writing charts to disk offline: PNG/SVG through vl-convert, self-contained HTML with the Vega bundle inlined.

>>> import altair as alt, pandas as pd, tempfile, pathlib
>>> chart = alt.Chart(pd.DataFrame({"x": [1, 2], "y": [3, 4]})).mark_line().encode(x="x", y="y")
>>> paths = save_chart(chart, pathlib.Path(tempfile.mkdtemp()) / "demo")
>>> [p.suffix for p in paths], all(p.stat().st_size > 0 for p in paths)
(['.png', '.html'], True)
"""
from __future__ import annotations

import io
from pathlib import Path

import altair as alt

__all__ = ["save_chart", "chart_bytes"]


def chart_bytes(chart: alt.TopLevelMixin, fmt: str, scale: float = 2.0) -> bytes:
    """The chart rendered offline as ``png``, ``svg`` or self-contained ``html``."""
    buf = io.BytesIO() if fmt == "png" else io.StringIO()
    with alt.data_transformers.disable_max_rows():  # files get every point; pages subsample before charting
        if fmt == "html":
            chart.save(buf, format="html", inline=True)
        else:
            chart.save(buf, format=fmt, **({"scale_factor": scale} if fmt == "png" else {}))
    val = buf.getvalue()
    return val if isinstance(val, bytes) else val.encode()


def save_chart(chart: alt.TopLevelMixin, base: str | Path, png_scale: float = 2.0,
               formats: tuple[str, ...] = ("png", "html")) -> list[Path]:
    """Write ``base.png`` and ``base.html`` (self-contained, works offline) atomically; returns the paths."""
    from ..io import atomic_write_bytes
    base = Path(base)
    paths = []
    for fmt in formats:
        path = base.with_suffix("." + fmt)
        atomic_write_bytes(path, chart_bytes(chart, fmt, png_scale))
        paths.append(path)
    return paths
