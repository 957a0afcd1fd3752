"""How many SGLD draws do per-token susceptibilities need? Accuracy against cost at one checkpoint of a run.

For each number of draws, two estimates with independent sampling seeds (different SGLD noise *and* minibatches),
same probe tokens; prints, per number of draws: the seconds one estimate takes, the correlation of the two
estimates over all tokens x heads (their reliability: 1 = the sampling noise is gone), the median over heads of the
per-head correlation, the overlap of every token's 15 nearest neighbours in the two estimates' standardised
χ spaces (what the serpent's UMAP sees) against chance, and the median of SE / |χ| (the per-chain standard error
the stage stores). Used to size the GPU run's draws (bench/gpu_full.json) and for the "signal or noise" section of
notebook 5.

    python bench/susceptibility_draws.py runs/tiny                      # draws 10 30 90 270, last checkpoint
    python bench/susceptibility_draws.py runs/tiny --draws 10 40 --step 436
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine  # noqa: E402

from serpent.embedding import _knn_overlap  # noqa: E402
from serpent.rundir import Run  # noqa: E402
from serpent.susceptibility import susceptibilities  # noqa: E402
from serpent.tokens import batch_at, fixed_windows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--step", type=int, default=None, help="checkpoint (default: the last)")
    ap.add_argument("--draws", type=int, nargs="+", default=[10, 30, 90, 270])
    ap.add_argument("--seeds", type=int, nargs=2, default=[100, 101])
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    run = Run.open(args.run)
    cfg, mc = run.config, run.config.model
    sc = cfg.susceptibility
    step = args.step if args.step is not None else run.checkpoint_steps()[-1]
    tok = run.tokenizer()
    test, train = run.tokens("test"), run.tokens("train")
    probe, _ = fixed_windows(test, sc.probe_sequences, sc.probe_length or mc.n_ctx, sc.probe_seed, tok.bos_id)
    model = run.load_model(step, device="cpu")
    print(f"# susceptibilities against draws: {run.path} step {step}, {probe.shape[0]} x {probe.shape[1]} probe "
          f"tokens, {sc.sampler.chains} chains, batch {sc.sampler.batch_size}, eps {sc.sampler.epsilon:g}, "
          f"gamma {sc.sampler.gamma:g}, n_beta {sc.sampler.n_beta:g}")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")
    n_tokens = probe.shape[0] * (probe.shape[1] - 1)
    print(f"chance 15-NN overlap: {15 / (n_tokens - 1):.4f}")
    print("| draws | seconds per estimate | r (all) | median per-head r | 15-NN overlap | median SE/abs(chi) |")
    print("|---|---|---|---|---|---|")
    for draws in args.draws:
        chis, ses, secs = [], [], []
        for seed in args.seeds:
            s_cfg = sc.sampler.__class__(**{**sc.sampler.to_dict(), "draws": draws, "seed": seed})
            batches = lambda i, s_cfg=s_cfg: batch_at(train, i, s_cfg.batch_size, mc.n_ctx, s_cfg.seed, tok.bos_id)
            t = time.time()
            res = susceptibilities(model, probe, batches, s_cfg, components=sc.components, baseline=sc.baseline,
                                   device=args.device, progress=False)
            secs.append(time.time() - t)
            chis.append(res.chi)
            ses.append(res.chi_se)
        a, b = chis
        r_all = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        r_head = float(np.median([np.corrcoef(a[:, h], b[:, h])[0, 1] for h in range(a.shape[1])]))
        rel = np.median(np.concatenate([s / np.maximum(np.abs(c), 1e-12) for s, c in zip(ses, chis)]))
        overlap = _knn_overlap(a, b, 15)
        print(f"| {draws} | {np.mean(secs):.1f} | {r_all:.3f} | {r_head:.3f} | {overlap:.3f} | {rel:.2f} |", flush=True)


if __name__ == "__main__":
    main()
