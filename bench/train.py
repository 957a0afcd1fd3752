"""Training throughput: our fast path against TransformerLens ``HookedTransformer`` (eager, and compiled).

Same model, same batch, same AdamW step, side by side in one process; prints the median time per step and ratios.

    python bench/train.py                      # CPU: the tiny model, batch 16 x 128
    python bench/train.py --size full --batch 100 --device cuda   # the anchor's setting (H100: TL+bf16+compile 23.3 ms)
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine, time_it  # noqa: E402

from serpent.config import get_preset  # noqa: E402
from serpent.device import autocast, autocast_dtype, default_device  # noqa: E402
from serpent.model import build_model, hooked_per_token_loss, model_params, per_token_loss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=5)
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
    rows = [("TransformerLens eager (reference)", step(hooked)), ("serpent fast path eager", step(fast))]
    use_compile = args.compile == "yes" or (args.compile == "auto" and device.type == "cuda")
    if use_compile:
        cmodel = torch.compile(model)
        rows.append(("TransformerLens + torch.compile (anchor)",
                     step(lambda: cmodel(tokens, return_type="loss", loss_per_token=True).mean())))
        cfast = torch.compile(lambda p, t: per_token_loss(p, t, cfg).mean())
        rows.append(("serpent fast path + torch.compile", step(lambda: cfast(params, tokens))))
    print(f"# training step, {args.size} model, batch {batch} x {cfg.n_ctx}, {str(dtype)[6:]}, AdamW")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")
    base = None
    print(f"{'variant':45s} {'ms/step':>9s} {'tokens/s':>12s} {'vs TL eager':>12s}")
    for name, fn in rows:
        t = time_it(fn, device, warmup=2, repeats=args.repeats)
        base = base or t
        print(f"{name:45s} {t * 1e3:9.1f} {batch * cfg.n_ctx / t:12,.0f} {base / t:11.2f}x")
    if args.size == "full" and device.type == "cuda":
        print("anchor (platform.md §6, one H100, batch 100 x 1024): TL eager fp32 126 ms, TL bf16 eager 107 ms, "
              "TL bf16 + compile 23.3 ms; goal <= 8 ms")


if __name__ == "__main__":
    main()
