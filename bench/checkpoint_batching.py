"""Would the samplers gain from running several checkpoints' chains at once? (issue 32, item 2)

The LLC stage samples each checkpoint on its own: ``chains`` SGLD chains as the replicas of one batched
computation (:func:`serpent.sgld.run_sgld`). Batching ``K`` checkpoints would make that ``K x chains`` replicas in one
call. This script times the best such a change could do, before building it: ``K`` calls of ``chains`` chains
against one call of ``K x chains`` chains, the same number of replica-steps on the same minibatches (the one call
starts every replica from the same weights, so it is an upper bound: a real batched version also keeps a ``w*`` per
checkpoint). Interleaved rounds, at each thread count of ``--threads``.

    python bench/checkpoint_batching.py                        # the tiny preset's LLC (2 chains x 16 x 128), K = 8
    python bench/checkpoint_batching.py --chains 4 --checkpoints 4    # the cpu preset's 4 chains, 4 of its 16 checkpoints
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine, rounds_at_threads  # noqa: E402

from serpent.config import SamplerConfig, get_preset  # noqa: E402
from serpent.model import build_model, model_params  # noqa: E402
from serpent.sgld import run_sgld, transformer_loss_fn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=8, help="K: checkpoints batched together")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="SGLD steps per call")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", default="1,max")
    args = ap.parse_args()

    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    models = [{k: v.detach() for k, v in model_params(build_model(cfg)).items()} for _ in range(args.checkpoints)]
    batches = [torch.randint(0, cfg.d_vocab, (args.batch, cfg.n_ctx)) for _ in range(4)]
    loss_fn = transformer_loss_fn(cfg)

    def sampler(chains: int) -> SamplerConfig:
        return SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=chains, draws=args.steps,
                             batch_size=args.batch)

    def one_at_a_time():
        for w in models:
            run_sgld(loss_fn, w, batches, sampler(args.chains), progress=False, init_loss_batches=1)

    def all_at_once():
        run_sgld(loss_fn, models[0], batches, sampler(args.chains * args.checkpoints), progress=False,
                 init_loss_batches=1)

    K, C = args.checkpoints, args.chains
    names = (f"{K} checkpoints one at a time ({C} chains)", f"one call of {K * C} chains (upper bound)")
    variants = {names[0]: one_at_a_time, names[1]: all_at_once}
    print(f"# SGLD over {K} checkpoints, tiny model, batch {args.batch} x {cfg.n_ctx}, {args.steps} steps a call; "
          f"{args.pairs} interleaved rounds")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")
    for threads, times in rounds_at_threads(variants, args.threads, args.pairs, names[0]).items():
        per_step = statistics.median(times[names[0]]) / (K * args.steps)
        print(f"  one checkpoint's SGLD step ({C} chains, {threads} threads): {per_step * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
