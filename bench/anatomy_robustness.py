"""What of the serpent's anatomy holds, and what does not: the body-plan numbers of the book's run under the choices
the papers did not publish (issue 31, item 2). Writes ``bench/results/anatomy_robustness.json`` (read by the
computed page and BENCHMARKS.md) and prints a table.

Variations, each at the first and the last checkpoint of ``artifacts/cpu``:

* **pre-processing** of χ (raw, centred as in the papers, z-scored per head: our default, whitened, unit rows): the
  PCA numbers (PC1 and PC2 shares, the induction tokens' AUC along PC2) and the pattern read-out;
* **projection**: how well the patterns separate in the 2-D picture (chance-corrected kNN purity across tokens, and
  the induction pattern's alone) in UMAP of each pre-processing, the body axes (PCA) and t-SNE (scikit-learn);
  the default serpent view is the one with the highest cross-token purity at the last checkpoint;
* **UMAP's own settings** (n_neighbors 5 / 15 / 50 × min_dist 0.0 / 0.1 / 0.5) for that view;
* **a second SGLD seed** and **a probe four times larger** (``bench/anatomy_samples.py`` computes them; their χ are
  kept compactly in ``bench/results/anatomy/``): per-token agreement, split R-hat, and the anatomy numbers again.

``--only samples`` recomputes the last part alone (seconds), keeping the rest of an existing JSON.

    python bench/anatomy_robustness.py            # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SAMPLES = RESULTS / "anatomy"
VIEWS = ("umap:standardize", "umap:center", "umap:whiten", "umap:normalize", "pca:standardize", "tsne:standardize")


def _headline(a: dict) -> dict:
    p = a.get("pattern", {}) or {}
    return {k: a.get(k) for k in ("pc1_share", "pc1_mean_corr", "pc2_share", "thickness", "induction_auc_pc2",
                                  "induction_auc_null_mean", "induction_auc_null_sd", "pc2_top_heads")} | {
        "readout": p.get("accuracy"), "readout_cross_token": p.get("cross_token_accuracy"),
        "readout_null": p.get("null_mean"), "readout_majority": p.get("majority"),
        "fin_spacing": {k: (a.get("fin") or {}).get(k) for k in ("n", "rho", "null_mean", "null_sd", "present")},
        "fin_whitespace": {k: (a.get("fin_whitespace") or {}).get(k) for k in ("n", "rho", "null_mean", "null_sd",
                                                                              "present")}}


def project(view: str, chi: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0):
    """2-D coordinates of one checkpoint's χ in ``view`` (``"umap:standardize"``, ``"pca:standardize"``, ...)."""
    from serpent.config import EmbeddingConfig
    from serpent.embedding import preprocess, umap_2d

    kind, method = view.split(":")
    X = preprocess(chi, method)
    if kind == "umap":
        return umap_2d(X, EmbeddingConfig(preprocess=method, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed))
    if kind == "pca":
        Xc = X - X.mean(0)
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        return Xc @ vt[:2].T
    if kind == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(2, random_state=seed, init="pca", perplexity=30).fit_transform(X)
    raise ValueError(view)


def picture_numbers(points: np.ndarray, labels: np.ndarray, token_ids: np.ndarray) -> dict:
    from serpent.embedding import pattern_separation, separation
    by = pattern_separation(points, labels, groups=token_ids)
    return {"cross_token_map": separation(points, labels, groups=token_ids), "map": separation(points, labels),
            "induction_cross_token_map": by.get("induction")}


def _pictures(out: dict, results: dict, labels: dict, ends: list, t0: float) -> None:
    """The pre-processing, projection and UMAP-settings parts of the table (module docstring)."""
    from serpent.anatomy import checkpoint_anatomy

    out["preprocess"] = {}
    for method in ("raw", "center", "standardize", "whiten", "normalize"):
        out["preprocess"][method] = {}
        for s in ends:
            d = labels[s]
            a = checkpoint_anatomy(results[s].chi, d["pattern"].astype(str).to_numpy(),
                                   components=results[s].components, token_ids=d["token_id"].to_numpy(),
                                   method=method, bootstrap=0, null=100)
            out["preprocess"][method][str(s)] = _headline(a)
        print(f"preprocess {method}: {time.time() - t0:.0f} s", flush=True)

    out["views"] = {}
    for view in VIEWS:
        out["views"][view] = {}
        for s in ends:
            d = labels[s]
            pts = project(view, results[s].chi)
            out["views"][view][str(s)] = picture_numbers(pts, d["pattern"].astype(str).to_numpy(),
                                                         d["token_id"].to_numpy())
        print(f"view {view}: {time.time() - t0:.0f} s", flush=True)
    last = str(ends[-1])
    best = max(VIEWS, key=lambda v: out["views"][v][last]["cross_token_map"])
    out["chosen_view"] = {"view": best, "rule": "the highest cross-token kNN purity of the patterns in the 2-D "
                                                "picture at the last checkpoint"}

    kind, method = best.split(":")
    out["umap_settings"] = {"preprocess": method if kind == "umap" else "standardize", "grid": {}}
    for nn in (5, 15, 50):
        for md in (0.0, 0.1, 0.5):
            d = labels[ends[-1]]
            pts = project(f"umap:{out['umap_settings']['preprocess']}", results[ends[-1]].chi, n_neighbors=nn,
                          min_dist=md)
            out["umap_settings"]["grid"][f"{nn}/{md}"] = picture_numbers(pts, d["pattern"].astype(str).to_numpy(),
                                                                         d["token_id"].to_numpy())
    print(f"UMAP grid: {time.time() - t0:.0f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS / "anatomy_robustness.json"))
    ap.add_argument("--only", choices=["samples"], default=None,
                    help="recompute the second seed and the larger probe only, keeping the rest of --out")
    args = ap.parse_args(argv)

    from serpent.anatomy import seed_agreement
    from serpent.artifacts import load_artifacts
    from serpent.device import configure_cpu_threads
    from serpent.patterns import label_result
    from serpent.stages.serpent import anatomy_over_checkpoints
    from serpent.stages.susceptibility import load_susceptibilities
    from serpent.susceptibility import SusceptibilityResult

    configure_cpu_threads(args.threads)
    t0 = time.time()
    run = load_artifacts("cpu")
    tok = run.tokenizer()
    results = load_susceptibilities(run)
    steps = sorted(results)
    ends = [steps[0], steps[-1]]
    labels = {s: label_result(results[s], tok) for s in ends}
    out: dict = {"run": "artifacts/cpu", "steps": ends, "tokens": len(results[ends[-1]])}
    if args.only == "samples":
        out = json.loads(Path(args.out).read_text())
    else:
        _pictures(out, results, labels, ends, t0)

    def sampled(name: str) -> dict[int, SusceptibilityResult]:
        """The variant's χ: first kept compactly (float16) from ``runs/cpu-NAME`` when that run is here."""
        from serpent.outputs import SUSCEPTIBILITY
        for p in SUSCEPTIBILITY.files(run.path.parent / f"cpu-{name}"):
            SusceptibilityResult.load(p).save(SAMPLES / name / p.name, compact=True)
        d = SAMPLES / name
        return {SusceptibilityResult.load(p).step: SusceptibilityResult.load(p)
                for p in sorted(d.glob("step_*.safetensors"))} if d.is_dir() else {}

    a100, a101 = sampled("sgld100"), sampled("sgld101")
    both = sorted(set(a100) & set(a101))
    if both:
        out["seeds"] = {"steps": both, "agreement": {}, "anatomy": {}, "committed_vs_bf16": {}}
        labs = None
        for s in both:
            out["seeds"]["agreement"][str(s)] = seed_agreement(a100[s].chi, a101[s].chi, a100[s].chi_se,
                                                               a101[s].chi_se, chains=run.config.susceptibility.sampler.chains)
            if s in results:
                out["seeds"]["committed_vs_bf16"][str(s)] = seed_agreement(results[s].chi, a100[s].chi)
        for name, res in (("sgld100", a100), ("sgld101", a101)):
            sub = {s: res[s] for s in both}
            from serpent.patterns import label_results
            labs = label_results(sub, tok)
            anat = anatomy_over_checkpoints(sub, labs, progress=False)
            out["seeds"]["anatomy"][name] = {str(s): _headline(a) for s, a in anat.items()}
        print(f"seeds: {time.time() - t0:.0f} s", flush=True)
    big = sampled("probe48")
    if big:
        from serpent.patterns import label_results
        anat = anatomy_over_checkpoints(big, label_results(big, tok), progress=False)
        out["probe48"] = {"steps": sorted(big), "tokens": len(big[max(big)]),
                          "anatomy": {str(s): _headline(a) for s, a in anat.items()}}
        print(f"probe48: {time.time() - t0:.0f} s", flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps(out["chosen_view"]), "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
