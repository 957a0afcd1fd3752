"""Training throughput: our fast path against the hooked reference model (eager, and compiled).

The reference is :class:`serpent.hooked.HookedShortformer`, a TransformerLens 4 ``HookedRootModule`` (TransformerLens 4
removed ``HookedTransformer``; up to commit 81e58fe the reference rows timed TransformerLens 3.9's ``HookedTransformer``,
whose forward this module reproduces operation for operation, with ``ln1`` run once instead of three times).

Same model, same batch, same AdamW step, in one process and interleaved: each round times every variant once
(``--steps`` steps), the order rotating, so a load that comes and goes hits both alike. Runs at each thread count of
``--threads`` (default 1 and all cores); prints each variant's median ms per step with its range, the median of the
per-round ratios to the hooked reference (eager), the achieved GFLOP/s and that as a share of the machine's matmul
throughput measured at the step's dominant shapes.

    python bench/train.py                      # CPU: the tiny model (the cpu preset's), batch 16 x 128
    python bench/train.py --size full --batch 100 --device cuda   # the anchor's setting (H100: TL+bf16+compile 23.3 ms)
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, count_flops, interleaved, machine, matmul_limit, print_rounds, thread_counts  # noqa: E402

from serpent.config import get_preset  # noqa: E402
from serpent.device import autocast, autocast_dtype, default_device  # noqa: E402
import serpent.model as model_module  # noqa: E402
from serpent.model import build_model, hooked_per_token_loss, model_params, per_token_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--pairs", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    ap.add_argument("--threads", default="1,max", help="thread counts, e.g. 1,max")
    ap.add_argument("--compile", default="auto", choices=["auto", "yes", "no"],
                    help="also time torch.compile variants (auto: on GPU only)")
    args = ap.parse_args()
    cfg = get_preset(args.size).model
    device = default_device(args.device)
    dtype = autocast_dtype(device, "auto")
    batch = args.batch or (16 if args.size == "tiny" else 100)
    tokens = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx), device=device)
    model = build_model(cfg, device=device)
    params = model_params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(loss_fn):
        def run():
            with autocast(device, dtype):
                loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    fast = lambda: per_token_loss(params, tokens, cfg).mean()  # noqa: E731
    hooked = lambda: hooked_per_token_loss(model, tokens).mean()  # noqa: E731
    def with_fused_attention():   # the fast path as it was before serpent.model.causal_attention (issue 32)
        keep, model_module._ATTN_KEEP_ELEMENTS = model_module._ATTN_KEEP_ELEMENTS, 0
        try:
            return per_token_loss(params, tokens, cfg).mean()
        finally:
            model_module._ATTN_KEEP_ELEMENTS = keep

    def with_one_block():   # the fast path before causal_attention's blocks of queries (up to commit 12826d6)
        keep, model_module._ATTN_BLOCK_QUERIES = model_module._ATTN_BLOCK_QUERIES, cfg.n_ctx
        try:
            return per_token_loss(params, tokens, cfg).mean()
        finally:
            model_module._ATTN_BLOCK_QUERIES = keep

    rows = [("hooked reference eager (TL4 HookedRootModule)", step(hooked)), ("serpent fast path eager", step(fast)),
            ("fast path, attention in one block", step(with_one_block)),
            ("fast path, torch's fused attention", step(with_fused_attention))]
    use_compile = args.compile == "yes" or (args.compile == "auto" and device.type == "cuda")
    if use_compile:
        cmodel = torch.compile(model)
        rows.append(("hooked reference + torch.compile (anchor)",
                     step(lambda: cmodel(tokens, return_type="loss", loss_per_token=True).mean())))
        cfast = torch.compile(lambda p, t: per_token_loss(p, t, cfg).mean())
        rows.append(("serpent fast path + torch.compile", step(lambda: cfast(params, tokens))))
    print(f"# training step, {args.size} model, batch {batch} x {cfg.n_ctx}, {str(dtype)[6:]}, AdamW; "
          f"{args.pairs} interleaved rounds of {args.steps} steps")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")
    variants = dict(rows)
    for fn in variants.values():   # warm-up (and compilation)
        fn(), fn()
    flops = {name: count_flops(fn) for name, fn in variants.items()}
    D, V, N = cfg.d_model, cfg.d_vocab, batch * cfg.n_ctx
    for threads in ([None] if device.type == "cuda" else thread_counts(args.threads)):
        if threads:
            torch.set_num_threads(threads)
        limit, shape = matmul_limit([(N, D, V), (N, V, D), (V, N, D)], device, dtype if device.type == "cuda"
                                    else torch.float32)
        print(f"## {threads or 'GPU'} threads; matmul limit {limit / 1e9:.1f} GFLOP/s (best of the unembedding's "
              f"shapes, {shape}); {flops[rows[1][0]] / 1e9:.2f} GFLOP per step (ours)")
        steps = args.steps
        runs = {name: (lambda fn=fn: [fn() for _ in range(steps)]) for name, fn in variants.items()}
        times, loads = interleaved(runs, args.pairs, device)
        times = {n: [t / steps for t in ts] for n, ts in times.items()}
        print_rounds(times, loads, rows[0][0], flops, limit, unit=1e-3, unit_name="ms/step")
    if args.size == "full" and device.type == "cuda":
        print("anchor (platform.md §6, one H100, batch 100 x 1024): TL eager fp32 126 ms, TL bf16 eager 107 ms, "
              "TL bf16 + compile 23.3 ms; goal <= 8 ms")


if __name__ == "__main__":
    main()
