"""The ``serpent`` stage: the token patterns, the aligned UMAP of every checkpoint's susceptibilities, the
separation of the patterns, a PNG per checkpoint and the offline explorer page (:mod:`serpent.embedding` computes,
:mod:`serpent.charts.serpent` and :mod:`serpent.explorer` draw).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Mapping

import numpy as np

from ..anatomy import ANATOMY_PREPROCESS, PAPERS_BODY_PLAN, checkpoint_anatomy, spacing_fin
from ..config import EmbeddingConfig, config_hash
from ..embedding import (HEADLINE, MEASURES, _as_chi, embed_checkpoints, preprocess, separation_table,
                         serpent_frame)
from ..errors import SerpentError
from ..io import atomic_write_json, write_parquet
from ..outputs import ANATOMY, CLUSTERS, EMBEDDING, EXPLORER, SEPARATION, load_susceptibilities
from ..outputs import load_anatomy as _load_anatomy
from ..patterns import label_results, pattern_counts
from .stage import Stage

__all__ = ["serpent_stage", "anatomy_over_checkpoints", "load_anatomy"]

STAGE = "serpent"


def _clusters_key() -> dict:
    """The cluster settings and the clusters file's format: a change of either recomputes the stage."""
    from dataclasses import asdict
    from ..clusters import CLUSTERS_FORMAT, ClusterSettings
    return {"settings": asdict(ClusterSettings()), "format": CLUSTERS_FORMAT}


def _fingerprint(results: Mapping[int, Any]) -> str:
    h = hashlib.sha256()
    for s in sorted(results):
        r = results[s]
        h.update(str(int(s)).encode())
        h.update(np.ascontiguousarray(_as_chi(r), dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(getattr(r, "probe_tokens", np.zeros(0))).tobytes())
    return h.hexdigest()[:16]


def anatomy_over_checkpoints(results: Mapping[int, Any], labels, *, method: str = ANATOMY_PREPROCESS, seed: int = 0,
                             progress: bool = True) -> dict[int, dict]:
    """:func:`serpent.anatomy.checkpoint_anatomy` at every checkpoint, from the susceptibility results and their
    token labels (:func:`serpent.patterns.label_results`). The fin is measured on spacing tokens by the spaces
    before them (the papers' definition), and on every whitespace token (spacing and formatting: in code the
    indentation after a newline is one token) by the length of the whitespace run it ends (``fin_whitespace``);
    both read out across tokens (folds grouped by token id)."""
    from tqdm.auto import tqdm

    out = {}
    for s in tqdm(sorted(results), desc="anatomy", unit="ckpt", disable=not progress):
        d = labels[labels["step"] == s]
        r = results[s]
        pats = d["pattern"].astype(str).to_numpy()
        a = checkpoint_anatomy(r.chi, pats, components=r.components, token_ids=d["token_id"].to_numpy(),
                               n_prev_spaces=d["n_prev_spaces"].to_numpy(), method=method, seed=seed)
        ws = np.isin(pats, ["spacing", "formatting"])
        run_length = d["n_prev_spaces"].to_numpy() + d["token"].astype(str).str.count("␣").to_numpy()
        a["fin_whitespace"] = spacing_fin(r.chi, np.where(ws, "spacing", "other"), run_length,
                                          token_ids=d["token_id"].to_numpy(), method=method, seed=seed)
        out[int(s)] = a
    return out


def load_anatomy(run) -> dict[int, dict]:
    """The body plan per checkpoint that the serpent stage wrote (``serpent/anatomy.json``), by step; empty if the
    stage has not run (or ran before the anatomy existed: run ``python -m serpent run --out RUN`` again)."""
    return _load_anatomy(run, missing={})


def serpent_stage(run, *, device=None, progress: bool = True, force: bool = False) -> dict:
    """The serpent of a run: labels, aligned UMAP, separation, a PNG per checkpoint and the explorer page.

    Reads ``susceptibility/step_*.safetensors``; writes ``serpent/embedding.parquet`` (one row per token and
    checkpoint: x, y, pattern, token, context, χ), ``serpent/separation.json``, ``serpent/anatomy.json`` (the
    body plan per checkpoint: :mod:`serpent.anatomy`), ``serpent/step_XXXXXXX.png``, a
    small-multiples ``serpent/serpent.png`` and ``explorer.html`` at the top of the run directory. ``device`` is
    unused (CPU work). Returns a summary with the separation at the first and last checkpoint.
    """
    from tqdm.auto import tqdm

    cfg: EmbeddingConfig = run.config.embedding
    results = load_susceptibilities(run)
    if not results:
        raise SerpentError(f"{run.path}: no susceptibilities yet; run `python -m serpent run --out {run.path}` "
                           "(or the susceptibility stage) first")
    stage = Stage(run, STAGE)
    key = config_hash({"embedding": cfg.to_dict(), "results": _fingerprint(results), "version": 5,
                       "clusters": _clusters_key()})
    out_dir = stage.dir
    explorer_path = EXPLORER.file(run)
    if not force and (done := stage.current(key, [explorer_path])) is not None:
        return done

    phase: dict[str, float] = {}
    tick = time.time()
    tok = run.tokenizer()
    labels = label_results(results, tok)
    phase["labels"], tick = time.time() - tick, time.time()
    emb = embed_checkpoints(results, cfg, progress=progress)
    phase["umap"], tick = time.time() - tick, time.time()
    # the 16-D measures describe χ, not the picture: always on the standardised χ, whatever the view's pre-processing
    feats = {s: preprocess(r.chi, ANATOMY_PREPROCESS) for s, r in results.items()}
    sep = separation_table(emb, labels, feats, seed=cfg.seed, progress=progress)
    phase["separation"], tick = time.time() - tick, time.time()
    frame = serpent_frame(emb, labels)
    anatomy = anatomy_over_checkpoints(results, labels, seed=cfg.seed, progress=progress)
    phase["anatomy"], tick = time.time() - tick, time.time()

    write_parquet(frame, EMBEDDING.file(run))
    atomic_write_json(SEPARATION.file(run), {"measure": MEASURES, "headline": HEADLINE,
                                                     "steps": {str(s): v for s, v in sep.items()}})
    atomic_write_json(ANATOMY.file(run), {"preprocess": ANATOMY_PREPROCESS, "papers": PAPERS_BODY_PLAN,
                                                  "steps": {str(s): v for s, v in anatomy.items()}})

    # -- clusters (issue 34): serpent/clusters.json, the cards of every checkpoint's susceptibility clusters ----
    from ..clusters import clusters_over_training
    clusters = clusters_over_training(frame, progress=progress).to_json()
    atomic_write_json(CLUSTERS.file(run), clusters)
    phase["clusters"], tick = time.time() - tick, time.time()
    # -- end of clusters ------------------------------------------------------------------------------------------

    from ..charts.serpent import save_png, serpent_snapshot, small_multiples
    from ..explorer import write_explorer
    pngs = []
    domain = ((float(frame["x"].min()), float(frame["x"].max())), (float(frame["y"].min()), float(frame["y"].max())))
    by_step = frame.groupby("step", sort=True)
    for s, g in tqdm(by_step, total=by_step.ngroups, desc="serpent PNGs", unit="ckpt", disable=not progress):
        p = out_dir / f"step_{int(s):07d}.png"
        save_png(serpent_snapshot(g, domain=domain), p)
        pngs.append(p.name)
    save_png(small_multiples(frame), out_dir / "serpent.png")
    phase["pngs"], tick = time.time() - tick, time.time()
    missing = run.stage_summary("susceptibility").get("summary", {}).get("diverged", {}) or {}
    title = f"serpent explorer: {run.path.name}"
    if missing:   # checkpoints whose susceptibilities could not be sampled: said on the page itself
        title += f" (no susceptibilities at step {', '.join(sorted(missing, key=int))}: SGLD diverged)"
    write_explorer(frame, explorer_path, max_points=cfg.max_points_page,
                   separation={s: v[HEADLINE] for s, v in sep.items()}, title=title, clusters=clusters)
    phase["explorer"] = time.time() - tick

    steps = sorted(sep)
    summary = {
        "steps": steps, "tokens_per_step": int(len(frame) // max(1, len(steps))),
        "separation_first": sep[steps[0]][HEADLINE], "separation_last": sep[steps[-1]][HEADLINE],
        "separation_null_last": [sep[steps[-1]].get("cross_token_null_mean"),
                                 sep[steps[-1]].get("cross_token_null_sd")],
        "separation_map_first": sep[steps[0]]["map"], "separation_map_last": sep[steps[-1]]["map"],
        "thickness_first": anatomy[steps[0]].get("thickness"), "thickness_last": anatomy[steps[-1]].get("thickness"),
        "pattern_readout_last": (anatomy[steps[-1]].get("pattern") or {}).get("accuracy"),
        "pattern_counts": pattern_counts(labels[labels["step"] == steps[-1]]["pattern"].astype(str)),
        "clusters_last": [sum(c["stands_out"] for c in clusters["cards"][str(steps[-1])]),
                          len(clusters["cards"][str(steps[-1])])],
        "explorer": str(explorer_path), "pngs": len(pngs), "missing_steps": sorted(int(k) for k in missing),
        "seconds": {k: round(v, 2) for k, v in phase.items()},
    }
    stage.done(key, summary=summary)
    if progress:
        m, sd = summary["separation_null_last"]
        print(f"serpent: cross-token separation {summary['separation_first']:.3f} (step {steps[0]}) -> "
              f"{summary['separation_last']:.3f} (step {steps[-1]}; no-pattern null {m:.3f} ± {sd:.3f}); "
              f"explorer page: {explorer_path}")
    return summary
