"""The explorer: one self-contained HTML page to browse a run's serpent, offline, like a small rainbowserpent.dev.

``python -m serpent explore RUN_DIR`` (or :func:`write_explorer`) writes a single file that opens from disk with
no network: the Vega, Vega-Lite and vega-embed libraries are inlined (``vl_convert.javascript_bundle``, wrapped in a
function so that its globals do not collide with the page), the data are inlined as compact JSON, and a small
hand-written script drives the page:

* a checkpoint slider (with a play button) that moves every token to its place at that checkpoint;
* a pattern filter (checkboxes in the rainbow palette, with counts);
* a token search (substring, case-insensitive; matches stay bright, the rest fade; a clickable list of matches);
* click a dot: its context (the token marked), its pattern, the spaces before it and its susceptibilities as bars
  (blue: the head expresses the token, χ < 0; red: suppresses it), at the current checkpoint;
* the separation of patterns per checkpoint when given.

The chart is a hand-written Vega-Lite spec (canvas renderer, fixed axes over all checkpoints so that motion is
motion, not rescaling); the page state lives in Vega signals (``ckpt``, ``search``, ``hidden``, ``selected``).
The URL fragment ``#select=<point>&search=<text>&ckpt=<index>`` opens the page in that state (used by the tests).
``document.body.dataset.status`` becomes ``ready`` once the chart drew, or ``error: …`` if anything threw.
Large runs: at most ``max_points`` tokens per checkpoint (the same seeded subset at every checkpoint) go into the
page; the PNGs of the serpent stage keep every token.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from .errors import SerpentError
from .patterns import PALETTE, PATTERNS

__all__ = ["write_explorer", "explorer_html", "vega_bundle"]


@functools.lru_cache(maxsize=2)
def vega_bundle(vl_version: Optional[str] = None) -> str:
    """The vega + vega-lite + vega-embed bundle (about 0.9 MB of JavaScript), wrapped to keep its globals private."""
    import vl_convert as vlc
    js = vlc.javascript_bundle(vl_version=vl_version) if vl_version else vlc.javascript_bundle()
    return "(function(){\n" + js.replace("</script", "<\\/script") + "\n})();"


def _frame_of(run_or_frame: Any) -> tuple[pd.DataFrame, Optional[dict], str]:
    if isinstance(run_or_frame, pd.DataFrame):
        return run_or_frame, None, "serpent explorer"
    if isinstance(run_or_frame, (str, Path)):
        from .rundir import Run
        run_or_frame = Run.open(run_or_frame)
    if hasattr(run_or_frame, "path") and hasattr(run_or_frame, "config"):
        run = run_or_frame
        pq = Path(run.path) / "serpent" / "embedding.parquet"
        if not pq.exists():   # the explorer renders a frame; computing it is the serpent stage's work
            raise SerpentError(f"{run.path} has no serpent yet ({pq} is missing); compute it with "
                               f"`python -m serpent run --out {run.path} --stages serpent`, then write the explorer")
        frame = pd.read_parquet(pq)
        sep = None
        sj = Path(run.path) / "serpent" / "separation.json"
        if sj.exists():
            js = json.loads(sj.read_text())
            name = js.get("headline", "map")
            sep = {int(k): row.get(name, row.get("map")) for k, row in js["steps"].items()}
        return frame, sep, f"serpent explorer: {Path(run.path).name}"
    raise SerpentError(f"write_explorer needs a run directory, a Run or the serpent frame, got "
                       f"{type(run_or_frame).__name__}")


def _finite(v: Optional[float]) -> Optional[float]:
    """A separation for the page: a float, or None where there is none (missing, NaN or infinite)."""
    return None if v is None or not np.isfinite(v) else float(v)


def _sig(a: np.ndarray, digits: int = 4) -> list:
    return [float(f"{v:.{digits}g}") for v in np.asarray(a, dtype=np.float64).ravel().tolist()]


def _payload(frame: pd.DataFrame, max_points: Optional[int], seed: int, separation: Optional[Mapping]) -> dict:
    from .charts.serpent import component_columns, subsample_points
    need = ["step", "point", "x", "y", "pattern"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise SerpentError(f"explorer frame lacks columns {missing}; pass the serpent stage's embedding.parquet frame")
    if frame.empty:
        raise SerpentError("explorer frame is empty: no tokens to show")
    df = subsample_points(frame, max_points, seed).sort_values(["step", "point"]).reset_index(drop=True)
    steps = sorted(int(s) for s in df["step"].unique())
    comps = component_columns(df)
    pts = df.drop_duplicates("point").set_index("point").sort_index()
    point_ids = pts.index.to_numpy()
    where = {int(p): i for i, p in enumerate(point_ids)}
    pat_index = {p: i for i, p in enumerate(PATTERNS)}
    unknown = sorted(set(df["pattern"].astype(str)) - set(pat_index))
    if unknown:
        raise SerpentError(f"unknown patterns {unknown}; label tokens with serpent.patterns")

    def col(name, default=""):
        return pts[name].astype(str).tolist() if name in pts.columns else [default] * len(pts)

    payload = {
        "steps": steps, "components": comps, "patterns": list(PATTERNS), "palette": [PALETTE[p] for p in PATTERNS],
        "points": {"id": point_ids.astype(int).tolist(), "token": col("token", "?"), "context": col("context"),
                   "spaces": pts["n_prev_spaces"].astype(int).tolist() if "n_prev_spaces" in pts.columns
                   else [0] * len(pts)},
        "rows": {"c": df["step"].map({s: i for i, s in enumerate(steps)}).astype(int).tolist(),
                 "p": df["point"].map(where).astype(int).tolist(),
                 "x": np.round(df["x"].to_numpy(np.float64), 3).tolist(),
                 "y": np.round(df["y"].to_numpy(np.float64), 3).tolist(),
                 "k": df["pattern"].astype(str).map(pat_index).astype(int).tolist(),
                 "chi": _sig(df[comps].to_numpy()) if comps else []},
        "domain": {"x": [float(df["x"].min()), float(df["x"].max())], "y": [float(df["y"].min()), float(df["y"].max())]},
        "total_points": int(frame["point"].nunique()),
        "separation": {str(k): _finite(v) for k, v in (separation or {}).items()},
    }
    return payload


def _spec(payload: dict, width: int, height: int) -> dict:
    pats, pal = payload["patterns"], payload["palette"]
    pad = lambda d: [d[0] - 0.03 * (d[1] - d[0] or 1), d[1] + 0.03 * (d[1] - d[0] or 1)]  # noqa: E731
    x = {"field": "x", "type": "quantitative", "axis": None, "scale": {"domain": pad(payload["domain"]["x"]), "nice": False}}
    y = {"field": "y", "type": "quantitative", "axis": None, "scale": {"domain": pad(payload["domain"]["y"]), "nice": False}}
    match = "(search == '' || indexof(lower(datum.token), lower(search)) >= 0)"
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "width": width, "height": height, "autosize": {"type": "none"}, "padding": 4,
        "data": {"name": "points"},
        "params": [{"name": "ckpt", "value": len(payload["steps"]) - 1}, {"name": "search", "value": ""},
                   {"name": "hidden", "value": []}, {"name": "selected", "value": -1}],
        "transform": [{"filter": "datum.c == ckpt && indexof(hidden, datum.pattern) < 0"}],
        "layer": [
            {"mark": {"type": "circle", "size": 16, "cursor": "pointer"},
             "encoding": {"x": x, "y": y,
                          "color": {"field": "pattern", "type": "nominal", "scale": {"domain": pats, "range": pal},
                                    "legend": None},
                          "opacity": {"condition": {"test": match, "value": 0.8}, "value": 0.05},
                          "tooltip": [{"field": "token", "title": "token"}, {"field": "pattern"},
                                      {"field": "context"}]}},
            {"transform": [{"filter": "datum.pt == selected"}],
             "mark": {"type": "point", "size": 220, "color": "black", "strokeWidth": 2.5, "filled": False},
             "encoding": {"x": x, "y": y}},
        ],
        "config": {"view": {"stroke": "#ddd"}},
    }


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:10px 18px;background:#1f1f2e;color:#fff}header h1{font-size:18px;margin:0}
header .sub{font-size:12px;opacity:.8;margin-top:2px}
#controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;padding:8px 18px;background:#fff;border-bottom:1px solid #ddd}
#controls label{font-size:13px}#steplabel{font-weight:600;min-width:120px;display:inline-block}
#search{width:220px;padding:3px 6px}#nmatch{font-size:12px;color:#555}
#patterns{display:flex;flex-wrap:wrap;gap:8px;font-size:12px}
#patterns label{cursor:pointer;user-select:none;white-space:nowrap}
.sw{display:inline-block;width:11px;height:11px;border-radius:50%;margin:0 3px -1px 2px}
main{display:flex;gap:14px;padding:12px 18px;align-items:flex-start}
#chart{background:#fff;border:1px solid #ddd}
aside{flex:1;min-width:300px;max-width:520px;background:#fff;border:1px solid #ddd;padding:10px 14px;font-size:13px}
aside h2{font-size:15px;margin:4px 0 8px}.tok{font-family:monospace;font-size:20px;background:#f2f2f2;padding:1px 6px}
.ctx{font-family:monospace;white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:6px;border-radius:4px}
.ctx mark{background:#ffe066;padding:0 1px}.muted{color:#777}
#matches{max-height:180px;overflow:auto;font-family:monospace;font-size:12px;margin-top:6px}
#matches div{cursor:pointer;padding:1px 0}#matches div:hover{background:#eef}
button{cursor:pointer}
"""

_JS = r"""
(function(){
'use strict';
const D = JSON.parse(document.getElementById('serpent-data').textContent);
const SPEC = JSON.parse(document.getElementById('serpent-spec').textContent);
const body = document.body;
window.addEventListener('error', function(e){ body.dataset.status = 'error: ' + (e.message || e); });
window.addEventListener('unhandledrejection', function(e){ body.dataset.status = 'error: ' + e.reason; });
const C = D.components.length, K = D.steps.length, R = D.rows.c.length;
const rows = new Array(R);
const byCkptPoint = new Map();
for (let i = 0; i < R; i++) {
  const p = D.rows.p[i];
  rows[i] = {r: i, c: D.rows.c[i], pt: D.points.id[p], x: D.rows.x[i], y: D.rows.y[i],
             pattern: D.patterns[D.rows.k[i]], token: D.points.token[p], context: D.points.context[p]};
  byCkptPoint.set(D.rows.c[i] + ':' + D.points.id[p], i);
}
SPEC.datasets = {points: rows};
const $ = (id) => document.getElementById(id);
let view = null, ckpt = K - 1, selected = -1, hidden = [], playing = null;
function esc(s){ return String(s).replace(/[&<>"]/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function stepText(){
  let t = 'step ' + D.steps[ckpt].toLocaleString('en') + '  (' + (ckpt + 1) + '/' + K + ')';
  const s = D.separation[String(D.steps[ckpt])];
  if (s !== undefined && s !== null) t += '  cross-token separation ' + s.toFixed(3);
  return t;
}
function counts(){
  const n = new Array(D.patterns.length).fill(0);
  for (let i = 0; i < R; i++) if (D.rows.c[i] === ckpt) n[D.rows.k[i]]++;
  return n;
}
function buildFilter(){
  const box = $('patterns');
  box.innerHTML = D.patterns.map((p, j) => '<label><input type="checkbox" data-p="' + esc(p) + '" checked>' +
    '<span class="sw" style="background:' + D.palette[j] + '"></span>' + esc(p) + ' <span class="muted" id="n' + j +
    '"></span></label>').join('') + ' <button id="all">all</button><button id="none">none</button>';
  box.querySelectorAll('input').forEach((el) => el.addEventListener('change', applyFilter));
  $('all').onclick = () => { box.querySelectorAll('input').forEach((el) => el.checked = true); applyFilter(); };
  $('none').onclick = () => { box.querySelectorAll('input').forEach((el) => el.checked = false); applyFilter(); };
}
function updateCounts(){ counts().forEach((v, j) => { $('n' + j).textContent = '(' + v + ')'; }); }
function applyFilter(){
  hidden = [];
  $('patterns').querySelectorAll('input').forEach((el) => { if (!el.checked) hidden.push(el.dataset.p); });
  if (view) view.signal('hidden', hidden).runAsync();
}
function bars(vals){
  const W = 470, H = 190, top = 14, bottom = 34, left = 44;
  let m = 0; vals.forEach((v) => { m = Math.max(m, Math.abs(v)); }); if (m === 0) m = 1;
  const bw = (W - left - 6) / C, y0 = top + (H - top - bottom) / 2, sc = (H - top - bottom) / 2 / m;
  let s = '<svg id="bars" width="' + W + '" height="' + H + '" font-size="10" font-family="monospace">';
  s += '<line x1="' + left + '" x2="' + (W - 4) + '" y1="' + y0 + '" y2="' + y0 + '" stroke="#888"/>';
  s += '<text x="' + (left - 4) + '" y="' + (top + 4) + '" text-anchor="end">' + m.toPrecision(2) + '</text>';
  s += '<text x="' + (left - 4) + '" y="' + (H - bottom + 2) + '" text-anchor="end">' + (-m).toPrecision(2) + '</text>';
  vals.forEach((v, j) => {
    const h = Math.abs(v) * sc, x = left + j * bw + 1, y = v >= 0 ? y0 - h : y0;
    const col = v < 0 ? '#3b6fb6' : '#d1495b';
    s += '<rect class="bar" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + (bw - 2).toFixed(1) +
         '" height="' + Math.max(h, 0.5).toFixed(1) + '" fill="' + col + '"><title>' + esc(D.components[j]) + ': ' +
         v.toPrecision(3) + '</title></rect>';
    s += '<text x="' + (x + bw / 2 - 1).toFixed(1) + '" y="' + (H - bottom + 14) + '" text-anchor="middle" ' +
         'transform="rotate(-45 ' + (x + bw / 2 - 1).toFixed(1) + ' ' + (H - bottom + 14) + ')">' +
         esc(D.components[j]) + '</text>';
  });
  return s + '</svg>';
}
function context(ctx){
  const a = ctx.indexOf('\u00ab'), b = ctx.lastIndexOf('\u00bb');
  if (a < 0 || b < a) return esc(ctx);
  return esc(ctx.slice(0, a)) + '<mark>' + esc(ctx.slice(a + 1, b)) + '</mark>' + esc(ctx.slice(b + 1));
}
function showPanel(){
  const panel = $('panel');
  if (selected < 0) { panel.innerHTML = '<h2>Click a dot</h2><p class="muted">to see the token in its context and ' +
    'its ' + C + ' susceptibilities (one per head). Hover for a quick look; search or filter above.</p>'; return; }
  const p = D.points.id.indexOf(selected);
  if (p < 0) { panel.innerHTML = '<h2>Token ' + esc(selected) + ' is not in this page</h2><p class="muted">The page ' +
    'holds a random subset of the tokens; search for another one.</p>'; return; }
  const i = byCkptPoint.get(ckpt + ':' + selected);
  let h = '<h2>token <span class="tok" id="ptoken">' + esc(D.points.token[p]) + '</span></h2>';
  const pat = i === undefined ? null : D.patterns[D.rows.k[i]];
  h += '<p>pattern: ' + (pat === null ? '<span class="muted">not at this checkpoint</span>' :
       '<span class="sw" style="background:' + D.palette[D.rows.k[i]] + '"></span><b id="ppattern">' + esc(pat) +
       '</b>') + ' &nbsp; spaces before: ' + D.points.spaces[p] + ' &nbsp; point ' + selected + '</p>';
  h += '<div class="ctx" id="pcontext">' + context(D.points.context[p]) + '</div>';
  if (i !== undefined && C > 0) {
    const vals = D.rows.chi.slice(i * C, (i + 1) * C);
    h += '<p>susceptibilities at step ' + D.steps[ckpt].toLocaleString('en') +
         ' <span class="muted">(blue: the head expresses the token, \u03c7&lt;0; red: suppresses it)</span></p>' + bars(vals);
  }
  panel.innerHTML = h;
}
function select(pt){
  selected = pt;
  if (view) view.signal('selected', pt).runAsync();
  showPanel();
  body.dataset.selected = String(pt);
}
function setCkpt(c){
  ckpt = Math.max(0, Math.min(K - 1, c));
  $('ckpt').value = ckpt; $('steplabel').textContent = stepText();
  if (view) view.signal('ckpt', ckpt).runAsync();
  updateCounts(); showPanel();
}
function doSearch(){
  const q = $('search').value.trim();
  if (view) view.signal('search', q).runAsync();
  if (!q) { $('nmatch').textContent = ''; $('matches').innerHTML = ''; return; }
  const ql = q.toLowerCase(), hits = [];
  for (let p = 0; p < D.points.id.length; p++) if (D.points.token[p].toLowerCase().indexOf(ql) >= 0) hits.push(p);
  $('nmatch').textContent = hits.length + ' matching token' + (hits.length === 1 ? '' : 's');
  body.dataset.matches = String(hits.length);
  $('matches').innerHTML = hits.slice(0, 200).map((p) => '<div data-pt="' + D.points.id[p] + '">' +
    context(D.points.context[p]) + '</div>').join('');
  $('matches').querySelectorAll('div').forEach((el) => el.onclick = () => select(Number(el.dataset.pt)));
}
function init(){
  $('ckpt').max = K - 1; $('ckpt').value = K - 1;
  $('ckpt').addEventListener('input', (e) => setCkpt(Number(e.target.value)));
  $('play').onclick = () => {
    if (playing) { clearInterval(playing); playing = null; $('play').textContent = '\u25b6 play'; return; }
    if (ckpt === K - 1) setCkpt(0);
    $('play').textContent = '\u275a\u275a pause';
    playing = setInterval(() => { if (ckpt >= K - 1) { $('play').click(); return; } setCkpt(ckpt + 1); }, 1200);
  };
  $('search').addEventListener('input', doSearch);
  buildFilter();
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  vegaEmbed('#chart', SPEC, {renderer: 'canvas', actions: {export: true, source: false, compiled: false, editor: false}})
    .then((res) => {
      view = res.view;
      view.addEventListener('click', (ev, item) => {
        if (item && item.datum && item.datum.pt !== undefined) select(item.datum.pt);
      });
      if (hash.has('ckpt')) setCkpt(Number(hash.get('ckpt'))); else setCkpt(K - 1);
      if (hash.has('search')) { $('search').value = hash.get('search'); doSearch(); }
      if (hash.has('select')) select(Number(hash.get('select'))); else showPanel();
      return view.runAsync();
    })
    .then(() => {
      const count = (node) => !node ? 0 : node.marktype === 'symbol' ? (node.items || []).length :
        (node.items || []).reduce((a, ch) => a + count(ch), 0);
      body.dataset.marks = String(count(view.scenegraph().root));
      if (!String(body.dataset.status || '').startsWith('error')) body.dataset.status = 'ready';
    })
    .catch((err) => { body.dataset.status = 'error: ' + err; console.error(err); });
}
init();
})();
"""


def explorer_html(payload: dict, *, title: str = "serpent explorer", width: int = 640, height: int = 560) -> str:
    """The page for a payload (see :func:`write_explorer`) as one HTML string."""
    def safe(obj) -> str:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")

    n_tok = len(payload["points"]["id"])
    sub = (f"{n_tok:,} tokens × {len(payload['steps'])} checkpoints"
           + (f" (a random {n_tok:,} of {payload['total_points']:,} tokens)" if n_tok < payload["total_points"] else "")
           + " · each dot is one token in its context, placed by UMAP of its per-head susceptibilities")
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body data-status="loading">
<header><h1>{esc(title)}</h1><div class="sub">{esc(sub)}</div></header>
<div id="controls">
<label>checkpoint <input type="range" id="ckpt" min="0" max="0" step="1" value="0"></label>
<span id="steplabel"></span><button id="play">&#9654; play</button>
<input type="search" id="search" placeholder="search a token, e.g. self" aria-label="search a token">
<span id="nmatch"></span>
<div id="patterns"></div>
</div>
<main><div><div id="chart"></div><div id="matches"></div></div><aside id="panel"></aside></main>
<script id="serpent-data" type="application/json">{safe(payload)}</script>
<script id="serpent-spec" type="application/json">{safe(_spec(payload, width, height))}</script>
<script>{vega_bundle()}</script>
<script>{_JS}</script>
</body></html>
"""


def write_explorer(run_or_frame: Any, path=None, *, max_points: Optional[int] = None,
                   separation: Optional[Mapping] = None, title: Optional[str] = None, seed: int = 0) -> Path:
    """Write the explorer page; returns its path.

    ``run_or_frame``: a run directory (path or :class:`~serpent.rundir.Run`) whose serpent stage has run (the
    explorer only renders; it never computes) or the serpent frame (columns ``step, point, x, y, pattern`` plus
    ``token, context, n_prev_spaces`` and the χ columns). ``path`` defaults to ``RUN_DIR/explorer.html``. ``max_points`` tokens per checkpoint at most
    (default: the run's ``embedding.max_points_page``, else 4,000). ``separation`` maps step → a number (the
    headline separation; a run directory's is read from its ``separation.json``).
    """
    from .io import atomic_write_bytes
    frame, sep, default_title = _frame_of(run_or_frame)
    run_path = getattr(run_or_frame, "path", None) if not isinstance(run_or_frame, (str, Path)) else Path(run_or_frame)
    if path is None:
        if run_path is None:
            raise SerpentError("write_explorer: give a path for the HTML file when passing a frame")
        path = Path(run_path) / "explorer.html"
    if max_points is None:
        cfg = getattr(getattr(run_or_frame, "config", None), "embedding", None)
        max_points = cfg.max_points_page if cfg is not None else 4000
    payload = _payload(frame, max_points, seed, separation if separation is not None else sep)
    html = explorer_html(payload, title=title or default_title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path
