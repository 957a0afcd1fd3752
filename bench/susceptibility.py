"""Per-token susceptibilities: serpent's batched estimator against devinterp 2.0.1 ``susceptibilities``, side by side.

Same model (random weights, preset architecture), same minibatches (devinterp with ``shuffle=False`` reads the rows
in order, as our ``batches(i)`` does), same probe sequences (also the sampling task), same ε, γ, nβ, chains, draws;
only the SGLD noise differs. The two run in interleaved rounds (the order rotating), at each thread count of
``--threads``; prints each side's median seconds and range, the median of the per-round ratios, the load average,
GFLOP/s as a share of the matmul limit measured at the unembedding's shapes, peak memory, and how far the two
estimates differ relative to their standard errors (devinterp's from its stored traces).

    python bench/susceptibility.py                       # CPU: tiny model, 4 heads, 2 chains x 10 draws, 8 x 128
    python bench/susceptibility.py --heads all --draws 20
    python bench/susceptibility.py --size full --heads all --chains 4 --draws 200 --batch 32 --probe 96 \
        --device cuda --no-devinterp                     # the anchor's setting (platform.md §6: devinterp 1,760 s)
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import resource
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, count_flops, interleaved, machine, matmul_limit, print_rounds, sync, thread_counts  # noqa: E402

from serpent.config import SamplerConfig, get_preset  # noqa: E402
from serpent.device import default_device  # noqa: E402
from serpent.model import build_model  # noqa: E402
from serpent.susceptibility import SusceptibilityStats, susceptibilities  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--heads", default="4", help="number of heads (the first ones) or 'all'")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--probe", type=int, default=8, help="probe sequences (each of the model's n_ctx tokens)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-devinterp", action="store_true")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds (serpent, devinterp; order rotating)")
    ap.add_argument("--threads", default="1,max", help="thread counts, e.g. 1,max")
    args = ap.parse_args()
    mc = get_preset(args.size).model
    device = default_device(args.device)
    model = build_model(mc)
    heads = [f"{l}:{h}" for l in range(mc.n_layers) for h in range(mc.n_heads)]
    if args.heads != "all":
        heads = heads[:int(args.heads)]
    g = torch.Generator().manual_seed(0)
    n_data = max(4, 2 * args.batch)
    data = torch.randint(0, mc.d_vocab, (n_data, mc.n_ctx), generator=g)
    probe = torch.randint(0, mc.d_vocab, (args.probe, mc.n_ctx), generator=g)
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=args.chains, draws=args.draws,
                        batch_size=args.batch, seed=100, precision=args.precision)
    B = args.batch
    batches = lambda i: data[(B * i) % n_data:(B * i) % n_data + B]
    print(f"# susceptibilities, {args.size} model ({mc.n_layers}x{mc.n_heads}, d_model {mc.d_model}, n_ctx {mc.n_ctx}),"
          f" full + {len(heads)} heads x {args.chains} chains x {args.draws} draws, batch {B} x {mc.n_ctx}, probe "
          f"{args.probe} x {mc.n_ctx}; {machine()}; commit {commit()}; {datetime.date.today()}")
    result = {}

    def ours():
        result["mine"] = susceptibilities(model, probe, batches, cfg, components=heads, device=device, progress=False)

    if args.no_devinterp:
        sync(device)
        t = time.perf_counter()
        ours()
        sync(device)
        print(f"serpent   {time.perf_counter() - t:8.1f} s   peak {rss_mb():.0f} MB RSS")
        return
    from datasets import Dataset
    from devinterp.slt.susceptibilities import susceptibilities as dv_sus
    from devinterp.slt.weight_restrictions import create_param_masks
    import xarray as xr

    wrs = {"full": None}
    for h in heads:
        l, k = h.split(":")
        wrs[f"l{l}h{k}"] = create_param_masks(model, f"l{l}h{k}")
    ds = Dataset.from_dict({"input_ids": data.tolist()}).with_format("torch")
    pds = Dataset.from_dict({"input_ids": probe.tolist()}).with_format("torch")
    def theirs():   # a fresh output folder each time: devinterp reuses samples it finds there
        result["out"] = out = tempfile.mkdtemp() + "/samples.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["tree"] = dv_sus(model, ds, {"probe": (pds, args.probe // B)} if args.probe % B == 0 else
                                    {"probe": pds}, wrs, sampling_task="probe", include_sampling_task=True,
                                    lr=cfg.epsilon, n_beta=cfg.n_beta, localization=cfg.gamma, num_chains=cfg.chains,
                                    num_draws=cfg.draws, batch_size=B, num_init_loss_batches=4, init_seed=cfg.seed,
                                    shuffle=False, output_path=out, device=str(device))

    variants = {"devinterp 2.0.1 (anchor)": theirs, "serpent": ours}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    flops = {name: count_flops(fn) for name, fn in variants.items()}   # also the warm-up round
    R, N, D, V = (len(heads) + 1) * args.chains, B * (mc.n_ctx - 1), mc.d_model, mc.d_vocab
    for threads in ([None] if device.type == "cuda" else thread_counts(args.threads)):
        if threads:
            torch.set_num_threads(threads)
        limit, shape = matmul_limit([(R * N, D, V), (R * N, V, D), (V, R * N, D)], device)
        print(f"## {threads or 'GPU'} threads; matmul limit {limit / 1e9:.1f} GFLOP/s (best of the unembedding's "
              f"shapes, {shape}); GFLOP per run: " + ", ".join(f"{n} {f / 1e9:.0f}" for n, f in flops.items()),
              flush=True)
        times, loads = interleaved(variants, args.pairs, device)
        print_rounds(times, loads, "devinterp 2.0.1 (anchor)", flops, limit)
    print(f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU (the larger of the two)"
          if device.type == "cuda" else f"max RSS {rss_mb():.0f} MB (process, both)")
    mine, tree, out = result["mine"], result["tree"], result["out"]
    # agreement within statistical error
    S, T = probe.shape
    perm = random.Random(1337).sample(range(S), S)
    inv = np.argsort(perm)
    chi_dv = tree["susceptibilities"]["sus"].values.reshape(S, T - 1, -1)[inv].reshape(S * (T - 1), -1)
    names = list(wrs)
    trees = {w: xr.open_datatree(out.replace("samples.zarr", f"samples_{w}.zarr"), engine="zarr",
                                 consolidated=False) for w in names}
    stats = SusceptibilityStats(len(names), cfg.chains, S * (T - 1))
    losses = {w: trees[w]["loss_probe"].values[:, :, inv] for w in names}
    for d in range(cfg.draws):
        pr = torch.tensor(np.stack([losses[w][c, d].reshape(-1) for w in names for c in range(cfg.chains)]),
                          dtype=torch.float64)
        stats.update(pr.mean(1), pr)
    chi_dv2, se_dv = stats.chi(float(trees["full"]["init_loss"].values.mean()))
    diff = mine.chi - chi_dv
    s2 = mine.chi_se ** 2 + se_dv ** 2
    print(f"devinterp traces through our estimator: max |diff| {np.abs(chi_dv2 - chi_dv).max():.2e} "
          f"(scale {np.abs(chi_dv).max():.2e})")
    print(f"agreement: mean (chi_ours - chi_dv)^2 / mean(se_ours^2 + se_dv^2) = {np.mean(diff ** 2) / s2.mean():.2f} "
          f"(1 = agreement within statistical error); corr = {np.corrcoef(mine.chi.ravel(), chi_dv.ravel())[0, 1]:.2f}")


if __name__ == "__main__":
    main()
