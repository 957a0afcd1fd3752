"""Benchmark: LLC estimation with serpent's batched SGLD engine against devinterp 2.0.1 `llc`, side by side.

Same model (random-init 3M tetrahedron architecture, or a tiny one), same random-token data in the same order
(devinterp with ``shuffle=False``), same hyperparameters (epsilon, gamma, n_beta, chains, draws, batch, init-loss
batches), both in this process on the same device, in interleaved rounds (the order rotating) at each thread count of
``--threads``. Prints each side's median seconds and range, the median of the per-round ratios, the load average,
our GFLOP/s as a share of the matmul limit measured at the unembedding's shapes, and both LLC estimates.

    python bench/llc.py                          # CPU default: 3M model, batch 8 x 256, 2 chains x 20 draws
    python bench/llc.py --size tiny --chains 4 --draws 50   # a quick one (context 128, the tiny model's)
    python bench/llc.py --device cuda --batch 32 --ctx 1024 --chains 4 --draws 200   # the platform.md anchor

Anchor (platform.md §6, one H100): devinterp takes ~63 ms per SGLD step on the 3M model at batch 32 x 1024, so
4 chains x 200 draws take ~53 s. FLOPs are counted analytically (forward x 3 for forward + backward; causal
attention counted at half the T^2 terms).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import math
import os
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, interleaved, machine, matmul_limit, print_rounds, thread_counts  # noqa: E402

from serpent.config import ModelConfig, SamplerConfig  # noqa: E402
from serpent.device import autocast_dtype, default_device  # noqa: E402
from serpent.llc import estimate_llc  # noqa: E402
from serpent.model import build_model  # noqa: E402

SIZES = {
    "3m": ModelConfig(),
    "tiny": ModelConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=128, d_vocab=2048),
}


def step_flops(mc: ModelConfig, batch: int, ctx: int, replicas: int) -> float:
    """FLOPs of one SGLD step (forward + backward, ~3x forward) for all replicas."""
    D, H, dh, V = mc.d_model, mc.n_heads, mc.d_head, mc.d_vocab
    per_token = mc.n_layers * (2 * D * 3 * H * dh + 2 * H * dh * D + 2 * 2 * H * dh * ctx / 2)
    if not mc.attn_only:
        per_token += mc.n_layers * 2 * 2 * D * mc.d_mlp
    per_token += 2 * D * V
    return 3.0 * per_token * batch * ctx * replicas


def run_devinterp(model, data, args, device) -> dict:
    from datasets import Dataset
    from devinterp.slt.llc import llc as devinterp_llc
    ds = Dataset.from_dict({"input_ids": data.tolist()}).with_format("torch")
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):   # quiet: its per-chain bars
        warnings.simplefilter("ignore")
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = devinterp_llc(model, ds, {}, lr=args.epsilon, n_beta=args.n_beta, localization=args.gamma,
                            num_chains=args.chains, num_draws=args.draws, batch_size=args.batch,
                            num_init_loss_batches=args.init_batches, shuffle=False, device=str(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t
    chains = out["llc_per_chain"].values
    return {"seconds": sec, "mean": float(chains.mean()), "std": float(chains.std(ddof=1)) if len(chains) > 1 else 0.0,
            "init_loss": float(out["init_loss"].values)}


def run_ours(model, data, args, device) -> dict:
    n_batches = len(data) // args.batch
    data_dev = data.to(device)
    batches = lambda i: data_dev[(i % n_batches) * args.batch:((i % n_batches) + 1) * args.batch]
    cfg = SamplerConfig(epsilon=args.epsilon, gamma=args.gamma, n_beta=args.n_beta, chains=args.chains,
                        draws=args.draws, batch_size=args.batch, precision=args.precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    r = estimate_llc(model, None, batches, cfg, init_loss_batches=args.init_batches, convention="devinterp",
                     device=device, progress=False, check_every=args.check_every)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t
    return {"seconds": sec, "mean": r.mean, "std": r.std, "init_loss": r.init_loss}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="3m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=None, help="sequence length (default: 256, at most the model's n_ctx)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=3e-3)
    ap.add_argument("--gamma", type=float, default=300.0)
    ap.add_argument("--n-beta", type=float, default=21.71)
    ap.add_argument("--init-batches", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--threads", default="1,max", help="CPU thread counts, run one after the other, e.g. 1,max")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds (serpent, devinterp; order rotating)")
    ap.add_argument("--check-every", type=int, default=50, help="host sync for divergence checks every k steps")
    ap.add_argument("--skip-devinterp", action="store_true")
    args = ap.parse_args(argv)
    device = default_device(args.device)
    mc = SIZES[args.size]
    args.ctx = args.ctx or min(256, mc.n_ctx)
    if args.ctx > mc.n_ctx:
        ap.error(f"--ctx {args.ctx} exceeds the model's n_ctx {mc.n_ctx}")
    torch.manual_seed(0)
    model = build_model(mc, device=device)
    n_seq = args.batch * max(args.init_batches, 8)
    data = torch.randint(0, mc.d_vocab, (n_seq, args.ctx))
    steps, R = args.draws, args.chains
    dtype = autocast_dtype(device, args.precision)
    print(f"# LLC, model {args.size} ({sum(p.numel() for p in model.parameters()):,} params); batch {args.batch} x "
          f"{args.ctx}; {R} chains x {steps} draws; eps {args.epsilon}, gamma {args.gamma}, n_beta {args.n_beta}; "
          f"our compute dtype {str(dtype).replace('torch.', '')}; {machine()}; commit {commit()}; "
          f"{datetime.date.today()}", flush=True)

    result = {}
    variants = {"serpent (batched)": lambda: result.__setitem__("ours", run_ours(model, data, args, device))}
    if not args.skip_devinterp:
        variants = {"devinterp 2.0.1 (anchor)": lambda: result.__setitem__("theirs", run_devinterp(
            model, data, args, device)), **variants}
    reference = next(iter(variants))
    flops = {"serpent (batched)": step_flops(mc, args.batch, args.ctx, R) * steps}
    for name, fn in variants.items():   # the warm-up round
        fn()
    N, D, V = R * args.batch * args.ctx, mc.d_model, mc.d_vocab
    limit_dtype = dtype if device.type == "cuda" else torch.float32
    for threads in ([None] if device.type == "cuda" else thread_counts(args.threads)):
        if threads:
            torch.set_num_threads(threads)
        limit, shape = matmul_limit([(N, D, V), (N, V, D), (V, N, D)], device, limit_dtype)
        print(f"## {threads or 'GPU'} threads; matmul limit {limit / 1e9:.1f} GFLOP/s (best of the unembedding's "
              f"shapes, {shape}); our run {flops['serpent (batched)'] / 1e9:.0f} GFLOP (counted analytically)",
              flush=True)
        times, loads = interleaved(variants, args.pairs, device)
        print_rounds(times, loads, reference, flops, limit)
    ours, theirs = result["ours"], result.get("theirs")
    print(f"LLC (last round): serpent {ours['mean']:.2f} ± {ours['std']:.2f} (init loss {ours['init_loss']:.4f})"
          + (f"; devinterp {theirs['mean']:.2f} ± {theirs['std']:.2f} (init loss {theirs['init_loss']:.4f})"
             if theirs else ""))
    if theirs:
        se = math.sqrt(ours["std"] ** 2 / R + theirs["std"] ** 2 / R)
        same = abs(ours["mean"] - theirs["mean"]) <= 1e-4 * max(1.0, abs(theirs["mean"]))
        print(f"estimate difference: {ours['mean'] - theirs['mean']:+.4f} (combined standard error {se:.2f})"
              + ("; the chains coincide: same seeds give devinterp's noise streams on this device" if same else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
