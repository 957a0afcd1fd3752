"""Four training seeds of the `cpu` preset: does the body plan reproduce? (issue 31, item 4)

The book's run (``artifacts/cpu``: ``model.seed = train.seed = 0``) beside runs of the same preset with other
initialisations *and* data orders. The next seed runs, from the repository's root:

    python -m serpent run --preset cpu --set model.seed=S --set train.seed=S \\
        --set data.tokenizer=file:artifacts/cpu/tokenizer --set susceptibility.probe_from=artifacts/cpu \\
        --out runs/cpu-seedS --stages data train induction susceptibility serpent

(the LLC stage is not needed here). The ``python`` corpus is read from the installed packages, so a run made on
another machine or in another environment has a slightly different corpus: with its own BPE and held-out split it
would probe other tokens, and seed 0 could be compared with it only through the body-plan numbers. The book run's
tokenizer (``data.tokenizer=file:...``) and its probe windows (``susceptibility.probe_from``) make its χ comparable
token by token (``same_probe`` below). The seed-1 run already kept was made before these settings existed, with its
own tokenizer and probe (``same_probe`` false).

For every seed found as ``runs/cpu-seedS`` this script first keeps what the comparison needs compactly in
``bench/results/seeds/seedS/`` (χ in float16 at the susceptibility checkpoints, the induction scores, the metrics,
the serpent stage's anatomy.json, the LLC curve where the run has one, and the tokenizer unless it is the book run's:
about 1 MB a seed), so the numbers can be recomputed after ``runs/`` is gone.
Then, per seed and checkpoint: the body-plan numbers (:mod:`serpent.anatomy`), the circuit's onsets, and the
agreement with seed 0 in head-order-free measures (:func:`serpent.anatomy.training_seed_agreement`; seeds on the
same probe tokens only) beside the ceiling that sampling noise alone sets: one model (seed 0) sampled twice with
independent SGLD seeds (``bench/results/anatomy/sgld100`` and ``sgld101``, steps 0 and 42,000). Writes
``bench/results/seeds.json`` (read by the book's chapter 6, the computed page and BENCHMARKS.md).

    python bench/seeds.py                     # a minute or two on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
KEPT = RESULTS / "seeds"
SAMPLES = RESULTS / "anatomy"
HEADLINE = ("pc1_share", "pc1_mean_corr", "pc2_share", "thickness", "induction_auc_pc2", "induction_auc_null_mean",
            "induction_auc_null_sd")


def keep_run(run_dir: Path, dest: Path) -> None:
    """Copy what the comparison needs from a finished run directory into ``dest`` (χ compacted to float16)."""
    from serpent.susceptibility import SusceptibilityResult
    dest.mkdir(parents=True, exist_ok=True)
    book_tokenizer = ROOT / "artifacts" / "cpu" / "tokenizer" / "tokenizer.json"
    for name in ("config.json", "corpus.json", "metrics.jsonl", "induction/scores.parquet", "serpent/anatomy.json",
                 "tokenizer/tokenizer.json", "llc/llc.parquet"):       # the LLC only where the run computed it
        src = run_dir / name
        if name.startswith("tokenizer/") and src.is_file() and src.read_bytes() == book_tokenizer.read_bytes():
            (dest / src.name).unlink(missing_ok=True)      # the book run's own (data.tokenizer=file:...): not kept twice
        elif src.is_file():
            shutil.copyfile(src, dest / Path(name).name)
    (dest / "susceptibility").mkdir(exist_ok=True)
    for p in sorted((run_dir / "susceptibility").glob("step_*.safetensors")):
        out = dest / "susceptibility" / p.name
        if out.is_file() and out.stat().st_mtime >= p.stat().st_mtime:
            continue        # kept already (saving again reorders the safetensors header: the same χ, other bytes)
        SusceptibilityResult.load(p).save(out, compact=True)


def onsets(scores_file: Path) -> dict:
    """The circuit's onsets and final scores from an induction-score table (as ``serpent milestones`` reads them)."""
    import pandas as pd
    from serpent.milestones import circuit_onsets
    df = pd.read_parquet(scores_file)
    c = circuit_onsets(df)
    heads = df[df["head"] != "model"]
    final = heads[heads["step"] == heads["step"].max()]
    pre = final[(final["score"] == "prefix") & final["head"].str.startswith("1:")].sort_values("value")
    prev = final[(final["score"] == "prev_token") & final["head"].str.startswith("0:")].sort_values("value")
    icl = df[(df["head"] == "model") & (df["score"] == "icl_score")].sort_values("step")
    return {"prev_token_onset": c["prev_token"], "induction_onset": c["induction"],
            "best_prefix_head": str(pre["head"].iloc[-1]), "best_prefix": float(pre["value"].iloc[-1]),
            "best_prev_head": str(prev["head"].iloc[-1]), "best_prev": float(prev["value"].iloc[-1]),
            "icl_score": float(icl["value"].iloc[-1]) if len(icl) else None}


def _headline(a: dict) -> dict:
    p = a.get("pattern", {}) or {}
    fin = a.get("fin_whitespace") or {}
    return {k: a.get(k) for k in HEADLINE} | {
        "pc2_top_head": (a.get("pc2_top_heads") or [None])[0], "readout": p.get("accuracy"),
        "readout_cross_token": p.get("cross_token_accuracy"), "readout_majority": p.get("majority"),
        "fin_whitespace_rho": fin.get("rho"), "fin_whitespace_null_sd": fin.get("null_sd")}


def _spread(values: list) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="where to look for cpu-seedS run directories")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS / "seeds.json"))
    args = ap.parse_args(argv)

    from serpent.anatomy import checkpoint_anatomy, training_seed_agreement
    from serpent.artifacts import load_artifacts
    from serpent.device import configure_cpu_threads
    from serpent.patterns import label_results
    from serpent.stages.serpent import anatomy_over_checkpoints, load_anatomy
    from serpent.stages.susceptibility import load_susceptibilities
    from serpent.susceptibility import SusceptibilityResult

    configure_cpu_threads(args.threads)
    t0 = time.time()
    for d in sorted(Path(args.runs).glob("cpu-seed*")):
        done = d / "serpent" / "anatomy.json"
        if d.is_dir() and done.is_file():       # only finished runs: the serpent stage ran after the susceptibilities
            keep_run(d, KEPT / d.name.replace("cpu-", ""))
            print(f"kept {d} -> {KEPT / d.name.replace('cpu-', '')}", flush=True)

    run = load_artifacts("cpu")
    tok = run.tokenizer()
    ref = load_susceptibilities(run)
    seeds = {0: {"results": ref, "anatomy": load_anatomy(run), "onsets": onsets(run.path / "induction" /
                                                                              "scores.parquet"),
                 "config": run.config.to_dict()}}
    for d in sorted(KEPT.glob("seed*")):
        s = int(d.name[4:])
        res = {r.step: r for r in (SusceptibilityResult.load(p) for p in sorted((d / "susceptibility")
                                                                                 .glob("step_*.safetensors")))}
        anat = {int(k): v for k, v in json.loads((d / "anatomy.json").read_text())["steps"].items()} \
            if (d / "anatomy.json").is_file() else {}
        if not anat:
            anat = anatomy_over_checkpoints(res, label_results(res, tok), progress=False)
        seeds[s] = {"results": res, "anatomy": anat, "onsets": onsets(d / "scores.parquet"),
                    "config": json.loads((d / "config.json").read_text())}
    steps = sorted(set.intersection(*(set(v["results"]) for v in seeds.values())))
    labels = label_results({s: ref[s] for s in steps}, tok)
    out: dict = {"steps": steps, "tokens": len(ref[steps[-1]]), "seeds": {}, "agreement": {}, "spread": {},
                 "ceiling": {}}
    for s, v in seeds.items():
        out["seeds"][str(s)] = {"model_seed": v["config"]["model"]["seed"], "train_seed": v["config"]["train"]["seed"],
                                "onsets": v["onsets"],
                                "anatomy": {str(t): _headline(v["anatomy"][t]) for t in steps if t in v["anatomy"]}}
    corpus0 = json.loads((run.path / "corpus.json").read_text()).get("files_sha256")
    for s, v in seeds.items():
        if s == 0:
            continue
        corpus = json.loads((KEPT / f"seed{s}" / "corpus.json").read_text()).get("files_sha256") \
            if (KEPT / f"seed{s}" / "corpus.json").is_file() else None
        same = all(len(v["results"][t]) == len(ref[t]) and (v["results"][t].token_ids == ref[t].token_ids).all()
                   for t in steps)
        out["seeds"][str(s)]["same_corpus"] = corpus == corpus0
        out["seeds"][str(s)]["same_probe"] = bool(same)
        if not same:    # token by token only on the same probe tokens (the Python corpus follows the installed packages)
            continue
        for t in steps:
            pats = labels[labels["step"] == t]["pattern"].astype(str).to_numpy()
            out["agreement"].setdefault(str(s), {})[str(t)] = training_seed_agreement(ref[t].chi, v["results"][t].chi,
                                                                                     pats)
    for t in steps:
        out["spread"][str(t)] = {k: _spread([out["seeds"][str(s)]["anatomy"].get(str(t), {}).get(k)
                                             for s in seeds]) for k in
                                 ("pc1_share", "thickness", "induction_auc_pc2", "readout", "readout_cross_token",
                                  "fin_whitespace_rho")}
    # the ceiling: one model (seed 0) sampled twice, at the checkpoints both samples have
    a, b = ({SusceptibilityResult.load(p).step: SusceptibilityResult.load(p)
             for p in sorted((SAMPLES / name).glob("step_*.safetensors"))} for name in ("sgld100", "sgld101"))
    for t in sorted(set(a) & set(b) & set(steps)):
        pats = labels[labels["step"] == t]["pattern"].astype(str).to_numpy()
        out["ceiling"][str(t)] = training_seed_agreement(a[t].chi, b[t].chi, pats)
        # and the body plan's own spread between those two samples (what SGLD noise alone moves)
        out["ceiling"][str(t)]["anatomy"] = {
            name: _headline(checkpoint_anatomy(r[t].chi, pats, components=r[t].components, bootstrap=0, null=50,
                                               seed=0)) for name, r in (("sgld100", a), ("sgld101", b))}
    out["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    _print(out)
    print(f"-> {args.out} ({out['seconds']:.0f} s)")
    return 0


def _print(out: dict) -> None:
    seeds = sorted(out["seeds"], key=int)
    print("seed  model/train  prev-token onset  induction onset  best prefix (head)")
    for s in seeds:
        v = out["seeds"][s]
        o = v["onsets"]
        print(f"{s:>4}  {v['model_seed']}/{v['train_seed']:<9}  {o['prev_token_onset']!s:>16}  "
              f"{o['induction_onset']!s:>15}  {o['best_prefix']:.3f} ({o['best_prefix_head']})"
              + ("" if s == "0" else f"  same corpus: {v.get('same_corpus')}, same probe tokens: {v.get('same_probe')}"))
    for t in out["steps"]:
        row = " ".join(f"{s}: thick {out['seeds'][s]['anatomy'][str(t)]['thickness']:.3f} "
                       f"AUC {out['seeds'][s]['anatomy'][str(t)]['induction_auc_pc2']:.2f} "
                       f"read {out['seeds'][s]['anatomy'][str(t)]['readout']:.2f}"
                       for s in seeds if str(t) in out["seeds"][s]["anatomy"])
        agree = " ".join(f"[{s} vs 0: pc1 r {a[str(t)]['pc1_corr']:.2f}, pc2 r {a[str(t)]['pc2_corr']:.2f}, "
                         f"knn {a[str(t)]['knn_overlap']:.3f}, heads {a[str(t)]['head_match_median']:.2f}]"
                         for s, a in out["agreement"].items())
        ceil = out["ceiling"].get(str(t))
        c = (f" ceiling: pc1 r {ceil['pc1_corr']:.2f}, pc2 r {ceil['pc2_corr']:.2f}, knn {ceil['knn_overlap']:.3f}, "
             f"heads {ceil['head_match_median']:.2f}") if ceil else ""
        print(f"step {t:>6,}: {row} {agree}{c}")


if __name__ == "__main__":
    raise SystemExit(main())
