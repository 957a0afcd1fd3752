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
* the separation of patterns per checkpoint when given;
* the susceptibility clusters of each checkpoint (:mod:`serpent.clusters`, the serpent stage's ``clusters.json``):
  a list; a click shows the cluster's card (size, patterns, next tokens, χ per head, typical contexts, how far it
  stands from the null) and highlights its tokens on the map; a reader names a cluster and writes a note, kept in
  the browser (``localStorage``) and exported as a small JSON file that :func:`serpent.clusters.read_notes` reads.

The chart is a hand-written Vega-Lite spec (canvas renderer, fixed axes over all checkpoints so that motion is
motion, not rescaling); the page state lives in Vega signals (``ckpt``, ``search``, ``hidden``, ``selected``).
The URL fragment ``#select=<point>&search=<text>&ckpt=<index>&cluster=<id>`` opens the page in that state (the
cluster is clicked in its list; ``name=<text>`` then names it), used by the tests.
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
from .outputs import CLUSTERS, EMBEDDING, EXPLORER, SEPARATION
from .patterns import PALETTE, PATTERNS

__all__ = ["write_explorer", "explorer_html", "vega_bundle"]


@functools.lru_cache(maxsize=2)
def vega_bundle(vl_version: Optional[str] = None) -> str:
    """The vega + vega-lite + vega-embed bundle (about 0.9 MB of JavaScript), wrapped to keep its globals private."""
    import vl_convert as vlc
    js = vlc.javascript_bundle(vl_version=vl_version) if vl_version else vlc.javascript_bundle()
    return "(function(){\n" + js.replace("</script", "<\\/script") + "\n})();"


def _frame_of(run_or_frame: Any) -> tuple[pd.DataFrame, Optional[dict], str, Optional[dict]]:
    if isinstance(run_or_frame, pd.DataFrame):
        return run_or_frame, None, "serpent explorer", None
    if isinstance(run_or_frame, (str, Path)):
        from .rundir import Run
        run_or_frame = Run.open(run_or_frame)
    if hasattr(run_or_frame, "path") and hasattr(run_or_frame, "config"):
        run = run_or_frame
        pq = EMBEDDING.file(run)
        if not pq.exists():   # the explorer renders a frame; computing it is the serpent stage's work
            raise SerpentError(f"{run.path} has no serpent yet ({pq} is missing); compute it with "
                               f"`python -m serpent run --out {run.path} --stages serpent`, then write the explorer")
        frame = EMBEDDING.read(run)
        sep = None
        js = SEPARATION.read(run, missing=None)
        if js is not None:
            name = js.get("headline", "map")
            sep = {int(k): row.get(name, row.get("map")) for k, row in js["steps"].items()}
        clusters = CLUSTERS.read(run, missing=None)
        return frame, sep, f"serpent explorer: {Path(run.path).name}", clusters
    raise SerpentError(f"write_explorer needs a run directory, a Run or the serpent frame, got "
                       f"{type(run_or_frame).__name__}")


def _finite(v: Optional[float]) -> Optional[float]:
    """A separation for the page: a float, or None where there is none (missing, NaN or infinite)."""
    return None if v is None or not np.isfinite(v) else float(v)


def _sig(a: np.ndarray, digits: int = 4) -> list:
    return [float(f"{v:.{digits}g}") for v in np.asarray(a, dtype=np.float64).ravel().tolist()]


_CARD_FIELDS = ("cluster", "size", "share", "conductance", "z", "stands_out", "patterns", "top_pattern",
                "top_pattern_share", "enrichment", "n_next_tokens", "next_tokens", "n_sequences", "level",
                "expresses", "suppresses", "distinctive", "contexts", "name", "note")


def _clusters_payload(clusters: Optional[Mapping], steps: list[int], point_ids: np.ndarray,
                      comps: list[str]) -> Optional[dict]:
    """The clusters of the page's checkpoints: per checkpoint the cards (χ per head as lists in component order)
    and a label per page token (−1: in no cluster), and the birth of the last checkpoint's clusters."""
    if not clusters:
        return None
    if not isinstance(clusters, Mapping) or "cards" not in clusters or "labels" not in clusters:
        raise SerpentError("the clusters for the explorer are the serpent stage's clusters.json (with 'cards' and "
                           "'labels'); run `python -m serpent run --out RUN --stages serpent` again")
    cards, labels = [], []
    for s in steps:
        lab = clusters["labels"].get(str(s))
        if lab is None:
            cards.append([])
            labels.append([-1] * len(point_ids))
            continue
        lab = np.asarray(lab, dtype=np.int64)
        labels.append([int(lab[p]) if 0 <= p < len(lab) else -1 for p in point_ids.tolist()])
        cs = []
        for c in clusters["cards"].get(str(s), []):
            d = {k: c.get(k) for k in _CARD_FIELDS}
            d["chi_mean"] = _sig([c["chi_mean"].get(h, np.nan) for h in comps], 3)
            d["chi_sd"] = _sig([c["chi_sd"].get(h, np.nan) for h in comps], 3)
            d["chi_z"] = _sig([c["chi_z"].get(h, np.nan) for h in comps], 3)
            cs.append(d)
        cards.append(cs)
    births = {}
    for r in clusters.get("births", []):
        births[str(r["cluster"])] = r.get("birth")
    return {"cards": cards, "labels": labels, "births": births,
            "reference": steps.index(max(int(k) for k in clusters["labels"])) if clusters["labels"] and
            max(int(k) for k in clusters["labels"]) in steps else None}


def _unit(v: np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> np.ndarray:
    """``v`` scaled so that [lo, hi] (default: its range) becomes [0, 1]."""
    lo = float(np.min(v)) if lo is None else lo
    hi = float(np.max(v)) if hi is None else hi
    return (v - lo) / (hi - lo) if hi > lo else np.full(len(v), 0.5)


def _body_axes_rows(frame: pd.DataFrame, df: pd.DataFrame, comps: list[str]) -> tuple[list, list]:
    """Every shown row's place in its checkpoint's body axes (:func:`serpent.anatomy.body_axes_frame`, from all of
    the checkpoint's tokens), each axis scaled per checkpoint so that its 1st-99th percentile spans [0, 1] (PC2 is
    10-30 times narrower than PC1: drawn to scale it would be a line). Empty without χ columns."""
    if not comps or len(frame) < 4:
        return [], []
    from .anatomy import ANATOMY_PREPROCESS, body_axes_frame
    axes = body_axes_frame(frame[["step", "point", "pattern", *comps]], ANATOMY_PREPROCESS)
    pos = df[["step", "point"]].merge(axes[["step", "point", "pc1", "pc2"]], on=["step", "point"], how="left")
    bx = np.zeros(len(pos))
    by = np.zeros(len(pos))
    for _, rows in axes.groupby("step"):
        step = rows["step"].iloc[0]
        here = (pos["step"] == step).to_numpy()
        for name, out in (("pc1", bx), ("pc2", by)):
            lo, hi = np.percentile(rows[name].to_numpy(np.float64), [1, 99])
            out[here] = _unit(pos.loc[here, name].to_numpy(np.float64), lo, hi)
    return np.round(bx, 4).tolist(), np.round(by, 4).tolist()


def _payload(frame: pd.DataFrame, max_points: Optional[int], seed: int, separation: Optional[Mapping],
             clusters: Optional[Mapping] = None) -> dict:
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

    bx, by = _body_axes_rows(frame, df, comps)
    payload = {
        "steps": steps, "components": comps, "patterns": list(PATTERNS), "palette": [PALETTE[p] for p in PATTERNS],
        "points": {"id": point_ids.astype(int).tolist(), "token": col("token", "?"), "context": col("context"),
                   "spaces": pts["n_prev_spaces"].astype(int).tolist() if "n_prev_spaces" in pts.columns
                   else [0] * len(pts)},
        "rows": {"c": df["step"].map({s: i for i, s in enumerate(steps)}).astype(int).tolist(),
                 "p": df["point"].map(where).astype(int).tolist(),
                 "x": np.round(_unit(df["x"].to_numpy(np.float64)), 4).tolist(),
                 "y": np.round(_unit(df["y"].to_numpy(np.float64)), 4).tolist(),
                 "bx": bx, "by": by,
                 "k": df["pattern"].astype(str).map(pat_index).astype(int).tolist(),
                 "chi": _sig(df[comps].to_numpy()) if comps else []},
        "domain": {"x": [0.0, 1.0], "y": [0.0, 1.0]},        # both views scaled into the unit square
        "body_axes": bool(bx),
        "total_points": int(frame["point"].nunique()),
        "separation": {str(k): _finite(v) for k, v in (separation or {}).items()},
        "clusters": _clusters_payload(clusters, steps, point_ids, comps),
    }
    return payload


def _spec(payload: dict, width: int, height: int) -> dict:
    pats, pal = payload["patterns"], payload["palette"]
    pad = lambda d: [d[0] - 0.03 * (d[1] - d[0] or 1), d[1] + 0.03 * (d[1] - d[0] or 1)]  # noqa: E731
    x = {"field": "vx", "type": "quantitative", "axis": None,
         "scale": {"domain": pad(payload["domain"]["x"]), "nice": False}}
    y = {"field": "vy", "type": "quantitative", "axis": None,
         "scale": {"domain": pad(payload["domain"]["y"]), "nice": False}}
    match = "(search == '' || indexof(lower(datum.token), lower(search)) >= 0) && (cluster < 0 || datum.cl == cluster)"
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "width": width, "height": height, "autosize": {"type": "none"}, "padding": 4,
        "data": {"name": "points"},
        "params": [{"name": "ckpt", "value": len(payload["steps"]) - 1}, {"name": "search", "value": ""},
                   {"name": "hidden", "value": []}, {"name": "selected", "value": -1},
                   {"name": "cluster", "value": -1}, {"name": "axes", "value": "umap"}],
        "transform": [{"filter": "datum.c == ckpt && indexof(hidden, datum.pattern) < 0"},
                      {"calculate": "axes == 'body' ? datum.bx : datum.x", "as": "vx"},
                      {"calculate": "axes == 'body' ? datum.by : datum.y", "as": "vy"}],
        "layer": [
            {"mark": {"type": "circle", "size": 16, "cursor": "pointer", "clip": True},
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
#clusters{display:flex;gap:14px;padding:0 18px 18px;align-items:flex-start;font-size:13px}
#cside{width:640px}#clusters h2{font-size:15px;margin:4px 0 8px}
#clist{max-height:260px;overflow:auto;background:#fff;border:1px solid #ddd;padding:4px}
.citem{cursor:pointer;padding:2px 4px}.citem:hover{background:#eef}.citem.on{background:#ffe9a8}
.badge{font-size:11px;background:#1f1f2e;color:#fff;border-radius:3px;padding:0 4px}
#ccard{flex:1;min-width:300px;max-width:520px;background:#fff;border:1px solid #ddd;padding:10px 14px}
#ccard:empty{display:none}.pc{white-space:nowrap;margin-right:6px}.tk{font-family:monospace;background:#f2f2f2;padding:0 3px}
#ccontexts div{font-family:monospace;font-size:12px;cursor:pointer;padding:1px 0}#ccontexts div:hover{background:#eef}
#notesjson{font-size:11px;max-height:120px;overflow:auto}
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
             bx: D.body_axes ? D.rows.bx[i] : D.rows.x[i], by: D.body_axes ? D.rows.by[i] : D.rows.y[i],
             pattern: D.patterns[D.rows.k[i]], token: D.points.token[p], context: D.points.context[p],
             cl: D.clusters ? D.clusters.labels[D.rows.c[i]][p] : -1};
  byCkptPoint.set(D.rows.c[i] + ':' + D.points.id[p], i);
}
SPEC.datasets = {points: rows};
const $ = (id) => document.getElementById(id);
let view = null, ckpt = K - 1, selected = -1, hidden = [], playing = null, cluster = -1;
const CL = D.clusters;
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
function bars(vals, id, spread){
  const W = 470, H = 190, top = 14, bottom = 34, left = 44;
  let m = 0; vals.forEach((v) => { m = Math.max(m, Math.abs(v)); }); if (m === 0) m = 1;
  const bw = (W - left - 6) / C, y0 = top + (H - top - bottom) / 2, sc = (H - top - bottom) / 2 / m;
  let s = '<svg id="' + (id || 'bars') + '" width="' + W + '" height="' + H + '" font-size="10" font-family="monospace">';
  s += '<line x1="' + left + '" x2="' + (W - 4) + '" y1="' + y0 + '" y2="' + y0 + '" stroke="#888"/>';
  s += '<text x="' + (left - 4) + '" y="' + (top + 4) + '" text-anchor="end">' + m.toPrecision(2) + '</text>';
  s += '<text x="' + (left - 4) + '" y="' + (H - bottom + 2) + '" text-anchor="end">' + (-m).toPrecision(2) + '</text>';
  vals.forEach((v, j) => {
    const h = Math.abs(v) * sc, x = left + j * bw + 1, y = v >= 0 ? y0 - h : y0;
    const col = v < 0 ? '#3b6fb6' : '#d1495b';
    s += '<rect class="bar" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + (bw - 2).toFixed(1) +
         '" height="' + Math.max(h, 0.5).toFixed(1) + '" fill="' + col + '"><title>' + esc(D.components[j]) + ': ' +
         v.toPrecision(3) + (spread ? ' \u00b1 ' + spread[j].toPrecision(2) : '') + '</title></rect>';
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
const NOTES_KEY = 'serpent-notes|' + document.title;
let notes = {};
try { notes = JSON.parse(window.localStorage.getItem(NOTES_KEY) || '{}') || {}; } catch (e) { notes = {}; }
function noteOf(cd){
  const v = notes[D.steps[ckpt] + ':' + cd.cluster];
  return v ? v : {name: cd.name || '', note: cd.note || ''};
}
function notesJSON(){
  const out = {format: 'serpent-cluster-notes/1', run: document.title, clusters: []};
  Object.keys(notes).sort().forEach((k) => {
    const v = notes[k], sc = k.split(':');
    if (v.name || v.note) out.clusters.push({step: Number(sc[0]), cluster: Number(sc[1]), name: v.name || '', note: v.note || ''});
  });
  return JSON.stringify(out, null, 1);
}
function saveNotes(){
  try { window.localStorage.setItem(NOTES_KEY, JSON.stringify(notes)); } catch (e) { /* private mode: kept for this visit */ }
  $('notesjson').textContent = notesJSON();
}
function exportNotes(){
  const blob = new Blob([notesJSON()], {type: 'application/json'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = 'serpent-cluster-notes.json';
  document.body.appendChild(a); a.click(); a.remove();
}
function cardsHere(){ return CL ? (CL.cards[ckpt] || []) : []; }
function buildClusterList(){
  const box = $('clist');
  if (!CL) { box.innerHTML = '<p class="muted">No clusters in this page: run the serpent stage again to add them.</p>'; return; }
  const cards = cardsHere();
  box.innerHTML = cards.map((cd) => {
    const nm = noteOf(cd).name, j = D.patterns.indexOf(cd.top_pattern);
    return '<div class="citem' + (cd.cluster === cluster ? ' on' : '') + '" data-cl="' + cd.cluster + '">' +
      '<span class="sw" style="background:' + D.palette[j] + '"></span><b>C' + cd.cluster + '</b> ' + cd.size +
      ' tokens \u00b7 ' + esc(cd.top_pattern) + ' ' + Math.round(100 * cd.top_pattern_share) + '%' +
      (cd.stands_out ? ' <span class="badge">stands out</span>' : '') + (nm ? ' \u00b7 <i>' + esc(nm) + '</i>' : '') +
      '</div>';
  }).join('') || '<p class="muted">No cluster at this checkpoint.</p>';
  box.querySelectorAll('.citem').forEach((el) => { el.onclick = () => selectCluster(Number(el.dataset.cl)); });
}
function heads(list, cd){
  return list.length ? list.map((h) => esc(h) + ' ' + (cd.chi_z[D.components.indexOf(h)] >= 0 ? '+' : '') +
    cd.chi_z[D.components.indexOf(h)].toFixed(1)).join(', ') : 'none';
}
function showCard(){
  const box = $('ccard');
  const cd = cardsHere().find((x) => x.cluster === cluster);
  if (!cd) { box.innerHTML = CL ? '<p class="muted">Click a cluster to read its card; its tokens light up on the ' +
    'map.</p>' : ''; return; }
  const nt = noteOf(cd), key = D.steps[ckpt] + ':' + cd.cluster;
  let h = '<h2 id="ctitle">cluster ' + cd.cluster + ' at step ' + D.steps[ckpt].toLocaleString('en') + '</h2>';
  h += '<p id="csize"><b>' + cd.size + '</b> tokens (' + (100 * cd.share).toFixed(1) + '%) from ' + cd.n_sequences +
       ' sequences; conductance ' + cd.conductance.toFixed(3) + ', ' + (cd.z >= 0 ? '+' : '') + cd.z.toFixed(1) +
       ' sd from the null: <b>' + (cd.stands_out ? 'stands out' : 'does not stand out') + '</b>';
  const born = CL.births[String(cd.cluster)];
  if (CL.reference === ckpt && born !== undefined) h += '; ' + (born === null ? 'not yet born' :
       'born at step ' + Number(born).toLocaleString('en'));
  h += '</p><div id="cpatterns">' + D.patterns.map((p, j) => cd.patterns[p] ? '<span class="pc"><span class="sw" ' +
       'style="background:' + D.palette[j] + '"></span>' + esc(p) + ' ' + cd.patterns[p] + '</span>' : '').join(' ') +
       '</div>';
  h += '<p>' + cd.n_next_tokens + ' distinct next tokens; most common: ' + cd.next_tokens.map((t) =>
       '<span class="tk">' + esc(t[0]) + '</span>\u00a0' + t[1]).join(', ') + '</p>';
  h += '<p>mean \u03c7 per head <span class="muted">(hover a bar for its spread)</span>; over all heads ' +
       (cd.level >= 0 ? '+' : '') + cd.level.toFixed(1) + ' sd from the average token. Expressed most by: ' +
       heads(cd.expresses, cd) + '; suppressed most by: ' + heads(cd.suppresses, cd) + '; set apart by: ' +
       heads(cd.distinctive, cd) + '.</p>' + bars(cd.chi_mean, 'cbars', cd.chi_sd);
  h += '<p>typical contexts <span class="muted">(click one to see its token)</span></p><div id="ccontexts">' +
       cd.contexts.map((c) => '<div data-pt="' + c.point + '">' + context(c.context) + '</div>').join('') + '</div>';
  h += '<p><label>name <input id="cname" size="28" value="' + esc(nt.name) + '"></label></p>' +
       '<p><textarea id="cnote" rows="3" cols="52" placeholder="a note: what these tokens share">' + esc(nt.note) +
       '</textarea></p>';
  box.innerHTML = h;
  box.querySelectorAll('#ccontexts div').forEach((el) => { el.onclick = () => select(Number(el.dataset.pt)); });
  const keep = () => { notes[key] = {name: $('cname').value, note: $('cnote').value}; saveNotes(); buildClusterList(); };
  $('cname').addEventListener('input', keep); $('cnote').addEventListener('input', keep);
}
function selectCluster(id){
  cluster = (id === cluster) ? -1 : id;
  if (view) view.signal('cluster', cluster).runAsync();
  body.dataset.cluster = String(cluster);
  buildClusterList(); showCard();
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
  cluster = -1; body.dataset.cluster = '-1';       // cluster numbers belong to one checkpoint
  if (view) view.signal('ckpt', ckpt).signal('cluster', -1).runAsync();
  updateCounts(); showPanel(); buildClusterList(); showCard();
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
  const axesBox = $('axes');
  if (!D.body_axes) axesBox.disabled = true;
  axesBox.addEventListener('change', () => {
    body.dataset.axes = axesBox.value;
    if (view) view.signal('axes', axesBox.value).runAsync();
  });
  $('cexport').onclick = exportNotes;
  $('notesjson').textContent = notesJSON();
  buildFilter();
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  vegaEmbed('#chart', SPEC, {renderer: 'canvas', actions: {export: true, source: false, compiled: false, editor: false}})
    .then((res) => {
      view = res.view;
      view.addEventListener('click', (ev, item) => {
        if (item && item.datum && item.datum.pt !== undefined) select(item.datum.pt);
      });
      if (hash.get('axes') === 'body' && D.body_axes) { axesBox.value = 'body'; body.dataset.axes = 'body';
                                                        view.signal('axes', 'body'); }
      if (hash.has('ckpt')) setCkpt(Number(hash.get('ckpt'))); else setCkpt(K - 1);
      if (hash.has('search')) { $('search').value = hash.get('search'); doSearch(); }
      if (hash.has('select')) select(Number(hash.get('select'))); else showPanel();
      if (hash.has('cluster')) {
        const el = document.querySelector('#clist [data-cl="' + Number(hash.get('cluster')) + '"]');
        if (el) el.click();
        if (el && hash.has('name')) { $('cname').value = hash.get('name'); $('cname').dispatchEvent(new Event('input')); }
      }
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
           + " · each dot is one token in its context, placed by UMAP of its per-head susceptibilities (or in its "
           "checkpoint's body axes: the view switch)")
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body data-status="loading">
<header><h1>{esc(title)}</h1><div class="sub">{esc(sub)}</div></header>
<div id="controls">
<label>checkpoint <input type="range" id="ckpt" min="0" max="0" step="1" value="0"></label>
<span id="steplabel"></span><button id="play">&#9654; play</button>
<label title="UMAP: the serpent's picture. Body axes: PC1 (each token's mean susceptibility: expression vs
suppression) across, PC2 (the short axis that thickens with the induction circuit) up, each scaled to fill the
box">view <select id="axes"><option value="umap">UMAP</option><option value="body">body axes (PC1 &#215; PC2)</option></select></label>
<input type="search" id="search" placeholder="search a token, e.g. self" aria-label="search a token">
<span id="nmatch"></span>
<div id="patterns"></div>
</div>
<main><div><div id="chart"></div><div id="matches"></div></div><aside id="panel"></aside></main>
<section id="clusters"><div id="cside"><h2>susceptibility clusters at this checkpoint</h2><div id="clist"></div>
<p><button id="cexport">export notes</button> <span class="muted">names and notes stay in this browser; the file
reads back with <code>serpent.clusters.read_notes</code> or <code>python -m serpent clusters RUN --notes FILE</code></span></p>
<details><summary class="muted">notes as JSON</summary><pre id="notesjson"></pre></details></div>
<div id="ccard"></div></section>
<script id="serpent-data" type="application/json">{safe(payload)}</script>
<script id="serpent-spec" type="application/json">{safe(_spec(payload, width, height))}</script>
<script>{vega_bundle()}</script>
<script>{_JS}</script>
</body></html>
"""


def write_explorer(run_or_frame: Any, path=None, *, max_points: Optional[int] = None,
                   separation: Optional[Mapping] = None, title: Optional[str] = None, seed: int = 0,
                   clusters: Optional[Mapping] = None) -> Path:
    """Write the explorer page; returns its path.

    ``run_or_frame``: a run directory (path or :class:`~serpent.rundir.Run`) whose serpent stage has run (the
    explorer only renders; it never computes) or the serpent frame (columns ``step, point, x, y, pattern`` plus
    ``token, context, n_prev_spaces`` and the χ columns). ``path`` defaults to ``RUN_DIR/explorer.html``. ``max_points`` tokens per checkpoint at most
    (default: the run's ``embedding.max_points_page``, else 4,000). ``separation`` maps step → a number (the
    headline separation; a run directory's is read from its ``separation.json``). ``clusters``: the serpent stage's
    ``clusters.json`` (:meth:`serpent.clusters.ClusterCatalogue.to_json`; a run directory's is read from it).
    """
    from .io import atomic_write_bytes
    frame, sep, default_title, clusters_of_run = _frame_of(run_or_frame)
    run_path = getattr(run_or_frame, "path", None) if not isinstance(run_or_frame, (str, Path)) else Path(run_or_frame)
    if path is None:
        if run_path is None:
            raise SerpentError("write_explorer: give a path for the HTML file when passing a frame")
        path = EXPLORER.file(run_path)
    if max_points is None:
        cfg = getattr(getattr(run_or_frame, "config", None), "embedding", None)
        max_points = cfg.max_points_page if cfg is not None else 4000
    payload = _payload(frame, max_points, seed, separation if separation is not None else sep,
                       clusters if clusters is not None else clusters_of_run)
    html = explorer_html(payload, title=title or default_title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path
