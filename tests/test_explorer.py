"""The explorer page and the serpent charts: a real headless browser opens the page from disk.

Needs Debian's ``chromium`` (CI: ``apt-get install -y chromium``); the browser tests are marked ``browser``.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serpent.errors import SerpentError
from serpent.explorer import write_explorer
from serpent.patterns import PALETTE, PATTERNS

COMPS = [f"{l}:{h}" for l in range(2) for h in range(8)]


def synthetic_frame(n=400, steps=(0, 100, 1000, 5000), seed=0):
    """A serpent frame with clusters per pattern that sharpen over the steps."""
    rng = np.random.default_rng(seed)
    pat = rng.choice(PATTERNS, size=n)
    centers = {p: rng.normal(size=2) * 6 for p in PATTERNS}
    frames = []
    for k, s in enumerate(steps):
        a = k / max(1, len(steps) - 1)
        xy = np.array([centers[p] for p in pat]) * a + rng.normal(size=(n, 2))
        df = pd.DataFrame({"step": s, "point": np.arange(n), "x": xy[:, 0], "y": xy[:, 1],
                           "token": [f"␣tok{i % 37}" for i in range(n)],
                           "context": [f"…if x < 1 and \"</script>\" ↵ f(«␣tok{i % 37}») & y" for i in range(n)],
                           "pattern": pat, "n_prev_spaces": rng.integers(0, 8, n)})
        chi = rng.normal(size=(n, 16))
        for j, c in enumerate(COMPS):
            df[c] = chi[:, j]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _payload(html: str) -> dict:
    m = re.search(r'<script id="serpent-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_page_is_self_contained(tmp_path):
    frame = synthetic_frame()
    path = write_explorer(frame, tmp_path / "e.html", max_points=150, separation={0: 0.1, 5000: 0.8})
    html = path.read_text(encoding="utf-8")
    # no network: no external scripts, stylesheets or fetches
    assert not re.search(r'<script[^>]+src=', html)
    assert not re.search(r'<link[^>]+href=', html)
    assert "vegaEmbed" in html and "cdn.jsdelivr" not in html.split("<script>")[0]
    # the page's data survived the escaping of "</script>" inside token contexts
    data = _payload(html)
    assert data["steps"] == [0, 100, 1000, 5000]
    assert len(data["points"]["id"]) == 150 and data["total_points"] == 400
    assert len(data["rows"]["c"]) == 150 * 4
    assert len(data["rows"]["chi"]) == 150 * 4 * 16
    assert data["palette"] == [PALETTE[p] for p in PATTERNS]
    assert any("</script>" in c for c in data["points"]["context"])
    assert data["separation"] == {"0": 0.1, "5000": 0.8}
    # the same tokens are kept at every checkpoint
    for c in range(4):
        rows = [p for cc, p in zip(data["rows"]["c"], data["rows"]["p"]) if cc == c]
        assert sorted(rows) == list(range(150))


def test_explorer_rejects_bad_frames(tmp_path):
    with pytest.raises(SerpentError, match="lacks columns"):
        write_explorer(pd.DataFrame({"step": [0]}), tmp_path / "x.html")
    bad = synthetic_frame(n=20, steps=(0,))
    bad.loc[0, "pattern"] = "nonsense"
    with pytest.raises(SerpentError, match="unknown patterns"):
        write_explorer(bad, tmp_path / "x.html")
    with pytest.raises(SerpentError, match="give a path"):
        write_explorer(synthetic_frame(n=20, steps=(0,)))


def test_explorer_renders_a_run_and_never_computes_it(tmp_path):
    """Issue 19 item 2: the explorer renders the serpent stage's files; a run without them gets the command that
    computes them (it used to run the stage itself, an import circle with serpent.embedding)."""
    import json
    from serpent.config import get_preset
    from serpent.rundir import Run
    run = Run.create(tmp_path / "r", get_preset("tiny"))
    with pytest.raises(SerpentError, match=r"no serpent yet.*--stages serpent"):
        write_explorer(run)
    frame = synthetic_frame(n=20, steps=(0, 5000))
    (run.path / "serpent").mkdir()
    frame.to_parquet(run.path / "serpent" / "embedding.parquet", index=False)
    rows = {"0": {"map": 0.3, "cross_token": 0.1}, "5000": {"map": 0.9, "cross_token": 0.7}}
    (run.path / "serpent" / "separation.json").write_text(json.dumps({"headline": "cross_token", "steps": rows}))
    from serpent.clusters import clusters_over_training
    (run.path / "serpent" / "clusters.json").write_text(json.dumps(clusters_over_training(frame, min_size=3).to_json()))
    path = write_explorer(run)
    assert path == run.path / "explorer.html"
    clusters = _payload(path.read_text(encoding="utf-8"))["clusters"]      # the run's clusters.json, on the page
    assert len(clusters["cards"]) == 2 and len(clusters["labels"][1]) == 20 and clusters["cards"][1]
    assert _payload(path.read_text(encoding="utf-8"))["separation"] == {"0": 0.1, "5000": 0.7}      # the headline named in separation.json


# ---------------------------------------------------------------------------------------------------------------
# headless Chromium
# ---------------------------------------------------------------------------------------------------------------

def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install -y chromium")
    return exe


def _run_chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    prof = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={prof}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=8000", "--window-size=1280,900", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "LANG": "C.UTF-8"})


def _console_errors(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines()
            if "CONSOLE" in l and ("Uncaught" in l or "Error" in l or "error" in l.split('"')[0])]


def _read_png(path: Path) -> np.ndarray:
    """Minimal PNG decoder (8-bit RGB/RGBA, non-interlaced, as Chromium writes them): (H, W, channels) uint8."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    ch = 3 if ctype == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w * ch + 1)
    out = np.zeros((h, w * ch), dtype=np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(w * ch, np.int32)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) % 256
        else:
            cur = np.zeros(w * ch, np.int32)
            for x in range(w * ch):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) % 256
            out[y] = cur
    return out.reshape(h, w, ch)[..., :3].astype(np.uint8)


@pytest.mark.browser
def test_explorer_draws_in_headless_chromium(tmp_path):
    frame = synthetic_frame()
    path = write_explorer(frame, tmp_path / "explorer.html", max_points=300, separation={5000: 0.5})
    url = path.resolve().as_uri()

    # 1. the DOM after the page ran: status flag, drawn marks, the click panel filled for a selected point
    ids = _payload(path.read_text(encoding="utf-8"))["points"]["id"]
    pick = ids[7]
    dom = _run_chromium(url + f"#select={pick}&search=tok1", tmp_path, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-status="ready"' in body, (body, dom.stderr[-2000:])
    marks = int(re.search(r'data-marks="(\d+)"', body).group(1))
    assert marks == 300 + 1                                   # every token of the last checkpoint + the ring
    assert f'data-selected="{pick}"' in body
    assert "<canvas" in dom.stdout
    token7 = frame[(frame.point == pick)]["token"].iloc[0]
    assert f'id="ptoken">{token7}<' in dom.stdout                # the panel shows the clicked token
    svg = re.search(r'<svg id="bars".*?</svg>', dom.stdout, re.S).group(0)
    assert svg.count("<rect") == 16                             # and its 16 susceptibilities
    n_match = sum("tok1" in t for t in frame[frame.step == 0].set_index("point").loc[ids]["token"])
    assert f'data-matches="{n_match}"' in body
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)

    # 2. a screenshot: not blank, and the chart area holds the palette's colours
    shot = tmp_path / "shot.png"
    res = _run_chromium(url + "#ckpt=3", tmp_path, f"--screenshot={shot}")
    assert shot.exists(), res.stderr[-2000:]
    img = _read_png(shot)
    assert img.shape[0] > 500 and img.shape[1] > 1000
    assert img.std() > 10                                      # not a blank page
    chart = img[150:700, 20:700].reshape(-1, 3).astype(int)
    for p in ("induction", "numeric", "word part"):
        rgb = np.array([int(PALETTE[p][i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(chart - rgb).sum(1) < 40).sum() > 5, f"no {p} dots drawn"
    assert not _console_errors(res.stderr), _console_errors(res.stderr)


@pytest.mark.browser
def test_broken_page_is_detected(tmp_path):
    """The harness must be able to fail: a page whose script throws reports it."""
    path = write_explorer(synthetic_frame(n=30, steps=(0,)), tmp_path / "e.html")
    html = path.read_text(encoding="utf-8").replace("const D = JSON.parse", "const D = notDefinedAnywhere() || JSON.parse")
    path.write_text(html, encoding="utf-8")
    dom = _run_chromium(path.resolve().as_uri(), tmp_path, "--dump-dom")
    assert 'data-status="ready"' not in dom.stdout
    assert _console_errors(dom.stderr)


def _values(spec):
    if "datasets" in spec:
        return next(iter(spec["datasets"].values()))
    return spec["data"]["values"]


def test_charts_render_offline(tmp_path):
    from serpent.charts.serpent import (save_png, save_svg, serpent_chart, serpent_snapshot, small_multiples,
                                        token_bars)
    frame = synthetic_frame(n=3000, steps=(0, 100))       # more than Altair's 5,000-row guard in total
    chart = serpent_chart(frame, max_points=500)
    spec = chart.to_dict()
    values = _values(spec)
    assert len(values) == 1000                             # 500 tokens per checkpoint
    names = {p["name"] for p in spec["params"]}
    assert {"checkpoint", "patterns", "pick"} <= names
    assert any(p.get("bind") == "legend" for p in spec["params"])
    s = json.dumps(spec)
    assert "context" in s and '"tooltip"' in s
    png = save_png(serpent_snapshot(frame[frame.step == 100]), tmp_path / "one.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    snap = serpent_snapshot(frame[frame.step == 100]).to_dict()
    assert len(_values(snap)) == 3000    # full resolution for the PNG
    svg = save_svg(small_multiples(frame), tmp_path / "all.svg").read_text()
    assert svg.lstrip().startswith("<svg") and svg.count("<path") + svg.count("<circle") > 100
    bars = token_bars(frame.iloc[[5]])
    vals = _values(bars.to_dict())
    assert [v["component"] for v in vals] == COMPS
    assert all((v["chi"] < 0) == v["sign"].startswith("expresses") for v in vals)
    with pytest.raises(SerpentError):
        serpent_snapshot(frame)
    with pytest.raises(SerpentError):
        serpent_chart(frame.drop(columns=["x"]))


@pytest.mark.browser
def test_cluster_click_shows_its_card_and_keeps_notes(tmp_path):
    """Issue 34: the clusters of each checkpoint are listed; a click shows the card and lights up its tokens; a name
    typed on the card goes into the exported notes, which serpent.clusters.read_notes reads back."""
    from serpent.clusters import clusters_over_training, read_notes
    frame = synthetic_frame(n=300)
    last = frame.step == 5000
    for g in range(4):                         # four groups of 50 tokens, each on four heads, at the last step
        rows = last & np.tile((np.arange(300) // 50) == g, 4)
        for c in COMPS[4 * g:4 * g + 4]:
            frame.loc[rows, c] += 6
    clusters = clusters_over_training(frame).to_json()
    path = write_explorer(frame, tmp_path / "explorer.html", clusters=clusters)
    data = _payload(path.read_text(encoding="utf-8"))
    assert len(data["clusters"]["cards"]) == 4 and len(data["clusters"]["labels"][3]) == 300
    card = clusters["cards"]["5000"][0]
    assert card["size"] >= 45 and card["stands_out"]

    url = path.resolve().as_uri()
    dom = _run_chromium(url + "#cluster=0&name=planted%20six", tmp_path, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-status="ready"' in body and 'data-cluster="0"' in body, (body, dom.stderr[-2000:])
    n_listed = re.search(r'<div id="clist">(.*?)</div></div>\s*<p>', dom.stdout, re.S).group(1).count('class="citem')
    assert n_listed == len(clusters["cards"]["5000"])
    assert 'id="ctitle">cluster 0 at step 5,000<' in dom.stdout
    assert f'<b>{card["size"]}</b> tokens' in dom.stdout and "stands out" in dom.stdout
    assert re.search(r'<svg id="cbars".*?</svg>', dom.stdout, re.S).group(0).count("<rect") == 16
    notes = re.search(r'<pre id="notesjson">(.*?)</pre>', dom.stdout, re.S).group(1)
    assert read_notes(notes.replace("&quot;", '"')) == {(5000, 0): {"name": "planted six", "note": ""}}
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)

    # the cluster's tokens light up, the others fade: far fewer coloured dots in the chart
    def coloured(shot):
        img = _read_png(shot)[150:700, 20:700].reshape(-1, 3).astype(int)
        return int(sum((np.abs(img - [int(PALETTE[p][i:i + 2], 16) for i in (1, 3, 5)]).sum(1) < 40).sum()
                       for p in PATTERNS))
    plain, lit = tmp_path / "plain.png", tmp_path / "lit.png"
    _run_chromium(url, tmp_path, f"--screenshot={plain}")
    _run_chromium(url + "#cluster=0", tmp_path, f"--screenshot={lit}")
    assert 0 < coloured(lit) < 0.5 * coloured(plain)


@pytest.mark.browser
def test_body_axes_view_switches_and_shows_the_induction_stratum(tmp_path):
    """The view switch draws every token in its checkpoint's body axes (PC1 × PC2 of the standardised χ): a
    planted second axis of the induction tokens puts them below the others there."""
    frame = synthetic_frame(n=300, steps=(0, 5000))
    last = frame["step"] == 5000
    ind = (frame["pattern"] == "induction") & last
    body = np.random.default_rng(1).normal(size=last.sum()) * 5
    for j, c in enumerate(COMPS):                          # a long axis shared by all heads, then the stratum
        frame.loc[last, c] = body + 0.3 * frame.loc[last, c]
        frame.loc[ind, c] += (-2.0 if j < 8 else 2.0)
    path = write_explorer(frame, tmp_path / "explorer.html", max_points=300)
    payload = _payload(path.read_text(encoding="utf-8"))
    assert payload["body_axes"] and len(payload["rows"]["bx"]) == len(payload["rows"]["x"])
    rows = pd.DataFrame({k: payload["rows"][k] for k in ("c", "k", "by")})
    at_end = rows[rows.c == 1]
    is_ind = at_end.k == list(PATTERNS).index("induction")
    assert at_end[is_ind]["by"].mean() < at_end[~is_ind]["by"].mean() - 0.2
    dom = _run_chromium(path.resolve().as_uri() + "#axes=body", tmp_path, "--dump-dom")
    tag = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-status="ready"' in tag and 'data-axes="body"' in tag, (tag, dom.stderr[-2000:])
    assert int(re.search(r'data-marks="(\d+)"', tag).group(1)) >= 300
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
