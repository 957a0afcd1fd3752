"""How the samplers lay out their replicas (issue 32): this session's two changes against the previous layout.

* ``--what llc``: the LLC's chains sampled one per :func:`serpent.sgld.run_sgld` call (``estimate_llc``'s default
  on the CPU) against all chains as the replicas of one call (the previous default; ``chains_per_call=chains``).
  The same chains (each keeps its seed); only the grouping differs.
* ``--what susceptibility``: the head sweep's one-head rows (each replica that moves one head of a layer runs that
  head only, the other heads' outputs computed once at w*) against the dense layout (every replica runs every head
  of the layers it reaches), at the ``tiny``/``cpu`` presets' sweep: full + 16 heads x 4 chains, probe 12 x 128,
  SGLD batch 4 x 128. Both give the same χ to float tolerance (printed).

Interleaved rounds, at each thread count of ``--threads``, on a freshly initialised model of the presets' shape
(the cost does not depend on the weights).

    python bench/sampler_layout.py --what llc                   # the cpu preset's LLC: 4 chains x 16 x 128
    python bench/sampler_layout.py --what llc --chains 2        # the tiny preset's
    python bench/sampler_layout.py --what susceptibility
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import sys
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine, rounds_at_threads  # noqa: E402

import serpent.sgld  # noqa: E402
from serpent.config import get_preset  # noqa: E402
from serpent.llc import estimate_llc  # noqa: E402
from serpent.model import build_model, model_params  # noqa: E402
from serpent.susceptibility import susceptibilities  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=["llc", "susceptibility"], default="llc")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="SGLD steps (llc) or draws (susceptibility) per call")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", default="1,max")
    args = ap.parse_args()

    preset = get_preset("cpu")
    cfg = preset.model
    torch.manual_seed(0)
    model = build_model(cfg)
    params = {k: v.detach() for k, v in model_params(model).items()}
    if args.what == "llc":
        sampler = dataclasses.replace(preset.llc.sampler, chains=args.chains, draws=args.steps, burnin=0)
        batches = [torch.randint(0, cfg.d_vocab, (sampler.batch_size, cfg.n_ctx)) for _ in range(4)]

        def run(per_call):
            return estimate_llc(cfg, params, batches, sampler, progress=False, init_loss_batches=1,
                                chains_per_call=per_call)
        names = (f"{args.chains} chains in one call", "one chain per call")
        variants = {names[0]: lambda: run(args.chains), names[1]: lambda: run(1)}
        what = f"LLC, {args.chains} chains x {sampler.batch_size} x {cfg.n_ctx} tokens, {args.steps} steps"
    else:
        sampler = dataclasses.replace(preset.susceptibility.sampler, chains=args.chains, draws=args.steps)
        probe = torch.randint(0, cfg.d_vocab, (preset.susceptibility.probe_sequences, cfg.n_ctx))
        data = torch.randint(0, cfg.d_vocab, (64, cfg.n_ctx))

        def batches(i):
            j = (i * sampler.batch_size) % 64
            return data[j:j + sampler.batch_size]

        def run(dense):
            with mock.patch.object(serpent.sgld, "_moved_head", lambda r, l: -2) if dense else contextlib.nullcontext():
                return susceptibilities(model, probe, batches, sampler, progress=False)
        names = ("dense rows (every head)", "one-head rows")
        variants = {names[0]: lambda: run(True), names[1]: lambda: run(False)}
        what = (f"susceptibilities, full + 16 heads x {args.chains} chains, probe {probe.shape[0]} x {cfg.n_ctx}, "
                f"batch {sampler.batch_size} x {cfg.n_ctx}, {args.steps} draws")
        a, b = run(True), run(False)
        diff = float((a.chi - b.chi).__abs__().max())
        print(f"# χ, one-head rows against dense: max |difference| {diff:.2e} (χ's scale "
              f"{float(abs(a.chi).max()):.2e}; its standard error {float(a.chi_se.mean()):.2e} on average)")
    print(f"# {what}; {args.pairs} interleaved rounds")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")
    rounds_at_threads(variants, args.threads, args.pairs, names[0])


if __name__ == "__main__":
    main()
