"""Benchmark: LLC estimation with serpent's batched SGLD engine against devinterp 2.0.1 `llc`, side by side.

Same model (random-init 3M tetrahedron architecture, or a tiny one), same random-token data in the same order
(devinterp with ``shuffle=False``), same hyperparameters (epsilon, gamma, n_beta, chains, draws, batch, init-loss
batches), both in this process on the same device. Prints a table: seconds, ms per SGLD step (all chains),
LLC estimate ± std over chains, speed ratio, and the fraction of the device's matmul ceiling our run reaches.

    python bench/llc.py                          # CPU default: 3M model, batch 8 x 256, 2 chains x 20 draws
    python bench/llc.py --size tiny --draws 100  # a quick one
    python bench/llc.py --device cuda --batch 32 --ctx 1024 --chains 4 --draws 200   # the platform.md anchor

Anchor (platform.md §6, one H100): devinterp takes ~63 ms per SGLD step on the 3M model at batch 32 x 1024, so
4 chains x 200 draws take ~53 s. FLOPs are counted analytically (forward x 3 for forward + backward; causal
attention counted at half the T^2 terms).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import matmul_limit  # noqa: E402

from serpent.config import ModelConfig, SamplerConfig  # noqa: E402
from serpent.device import autocast_dtype, default_device, describe_device  # noqa: E402
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


def matmul_ceiling(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput (FLOP/s) of the device in ``dtype`` (square matrices)."""
    n = 8192 if device.type == "cuda" else 1024
    return matmul_limit([(n, n, n)], device, dtype, repeats=20 if device.type == "cuda" else 5)[0]


def run_devinterp(model, data, args, device) -> dict:
    from datasets import Dataset
    from devinterp.slt.llc import llc as devinterp_llc
    ds = Dataset.from_dict({"input_ids": data.tolist()}).with_format("torch")
    with warnings.catch_warnings():
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
    return {"seconds": sec, "loop_seconds": r.seconds, "mean": r.mean, "std": r.std, "init_loss": r.init_loss}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="3m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=256, help="sequence length (at most the model's n_ctx)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=3e-3)
    ap.add_argument("--gamma", type=float, default=300.0)
    ap.add_argument("--n-beta", type=float, default=21.71)
    ap.add_argument("--init-batches", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--check-every", type=int, default=50, help="host sync for divergence checks every k steps")
    ap.add_argument("--skip-devinterp", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="time our run this many times, report the best")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    mc = SIZES[args.size]
    if args.ctx > mc.n_ctx:
        ap.error(f"--ctx {args.ctx} exceeds the model's n_ctx {mc.n_ctx}")
    torch.manual_seed(0)
    model = build_model(mc, device=device)
    n_seq = args.batch * max(args.init_batches, 8)
    data = torch.randint(0, mc.d_vocab, (n_seq, args.ctx))
    steps = args.draws
    R = args.chains
    dtype = autocast_dtype(device, args.precision)
    print(f"device: {describe_device(device)}; model {args.size} ({sum(p.numel() for p in model.parameters()):,} "
          f"params); batch {args.batch} x {args.ctx}; {args.chains} chains x {args.draws} draws; eps {args.epsilon}, "
          f"gamma {args.gamma}, n_beta {args.n_beta}; our compute dtype {str(dtype).replace('torch.', '')}",
          flush=True)

    ours = None
    for _ in range(args.repeat):
        o = run_ours(model, data, args, device)
        ours = o if ours is None or o["seconds"] < ours["seconds"] else ours
    theirs = None if args.skip_devinterp else run_devinterp(model, data, args, device)

    flops = step_flops(mc, args.batch, args.ctx, R)
    ceiling = matmul_ceiling(device, dtype if device.type == "cuda" else torch.float32)
    achieved = flops / (ours["loop_seconds"] / steps)
    rows = [("serpent (batched)", ours)] + ([("devinterp 2.0.1", theirs)] if theirs else [])
    print()
    print("| implementation | seconds (total) | ms per SGLD step per chain | LLC mean ± std | init loss |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        ms = 1000 * r.get("loop_seconds", r["seconds"]) / (steps * R)
        print(f"| {name} | {r['seconds']:.2f} | {ms:.1f} | {r['mean']:.2f} ± {r['std']:.2f} | {r['init_loss']:.4f} |")
    if theirs:
        print(f"\nspeed-up (total seconds, devinterp / serpent): {theirs['seconds'] / ours['seconds']:.1f}x")
        se = math.sqrt(ours["std"] ** 2 / R + theirs["std"] ** 2 / R)
        same = abs(ours["mean"] - theirs["mean"]) <= 1e-4 * max(1.0, abs(theirs["mean"]))
        print(f"estimate difference: {ours['mean'] - theirs['mean']:+.4f} (combined standard error {se:.2f})"
              + ("; the chains coincide: same seeds give devinterp's noise streams on this device" if same else ""))
    print(f"our SGLD step: {flops / 1e9:.1f} GFLOP, {achieved / 1e12:.3f} TFLOP/s = "
          f"{100 * achieved / ceiling:.1f}% of the measured {('bf16' if dtype == torch.bfloat16 else str(dtype))} "
          f"matmul ceiling ({ceiling / 1e12:.3f} TFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
