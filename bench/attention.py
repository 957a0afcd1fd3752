"""Causal attention on the CPU: :func:`serpent.model.causal_attention` (blocks of 16 queries) against the same code
in one block (the whole square of scores, as before 2026-12-07's second change) and torch's fused
``scaled_dot_product_attention`` (what the fast path used first, and still uses on GPUs), at the shapes the `cpu`
preset runs (8 heads of 8 dimensions, 128 positions): a training step (16 sequences), an LLC step (4 chains x 16),
a susceptibility SGLD step (17 restrictions x 4 chains x 4 sequences) and the susceptibility probe's forward
(no gradient). Interleaved rounds in one process; prints medians and the median per-round ratio.

    python bench/attention.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine  # noqa: E402

SHAPES = [("training step (16 x 8 heads)", 16 * 8, True), ("LLC step (4 chains x 16 x 8 heads)", 4 * 16 * 8, True),
          ("susceptibility SGLD step (68 replicas x 4 x 8 heads)", 68 * 4 * 8, True),
          ("susceptibility probe forward (68 replicas x 2 x 8 heads, no grad)", 68 * 2 * 8, False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from serpent.device import configure_cpu_threads
    import serpent.model
    from serpent.model import causal_attention

    def one_block(q, k, v):
        saved, serpent.model._ATTN_BLOCK_QUERIES = serpent.model._ATTN_BLOCK_QUERIES, T
        try:
            return causal_attention(q, k, v)
        finally:
            serpent.model._ATTN_BLOCK_QUERIES = saved
    configure_cpu_threads(args.threads)
    T, d = 128, 8
    print(f"# causal attention, T={T}, d_head={d}, fp32; {args.rounds} interleaved rounds of {args.reps} calls")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}, load {os.getloadavg()[0]:.2f}")
    fused = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    for name, n, grad in SHAPES:
        q0, k0, v0 = (torch.randn(n, T, d) for _ in range(3))
        g = torch.randn(n, T, d)
        fns = {"blocks": causal_attention, "one block": one_block, "fused": fused}
        times = {v: [] for v in fns}
        for r in range(args.rounds):
            order = list(times)[r % 3:] + list(times)[:r % 3]
            for variant in order:
                fn = fns[variant]
                q, k, v = (t.clone().requires_grad_(grad) for t in (q0, k0, v0))
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    if grad:
                        fn(q, k, v).backward(g)
                    else:
                        with torch.no_grad():
                            fn(q, k, v)
                times[variant].append((time.perf_counter() - t0) / args.reps)
        a = times["blocks"]
        line = f"  {name} ({'forward + backward' if grad else 'forward'}): blocks {1e3 * statistics.median(a):.2f} ms"
        for other in ("one block", "fused"):
            ratios = sorted(y / x for x, y in zip(a, times[other]))
            line += (f"; {other} {1e3 * statistics.median(times[other]):.2f} ms, {statistics.median(ratios):.2f}x "
                     f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
