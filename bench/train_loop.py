"""What the training loop adds to the bare step (issue 32, item 1): ``serpent.train.train`` on the `cpu` preset's
data and schedule against the same number of bare steps (forward, backward, AdamW) on the same batches, interleaved
in one process. The loop also draws its batches from the memory-mapped stream, evaluates the held-out loss every
``eval_every`` steps and at every checkpoint, writes checkpoints and the optimizer state, and logs.

    python -m serpent run --preset cpu --out runs/cpu --stages data     # once: the data (a minute)
    python bench/train_loop.py runs/cpu --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run directory whose data stage has run (the cpu preset's)")
    ap.add_argument("--steps", type=int, default=400, help="steps per variant per round")
    ap.add_argument("--start", type=int, default=19_800,
                    help="first step of the window (default: one that crosses a linear checkpoint and two evaluations)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from serpent.device import configure_cpu_threads
    from serpent.model import build_model, model_params, per_token_loss
    from serpent.rundir import Run
    from serpent.tokens import batch_at
    from serpent.train import adamw, train

    configure_cpu_threads(args.threads)
    src = Run.open(args.run)
    cfg = src.config
    mc, tc = cfg.model, cfg.train
    tmp = Path(tempfile.mkdtemp(prefix="train_loop_"))
    tokens = src.tokens("train")
    bos = src.tokenizer().bos_id
    print(f"# training loop vs bare step, {cfg.preset} preset, batch {tc.batch_size} x {mc.n_ctx}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps from step {args.start:,}")
    print(f"# {machine()}, commit {commit()}, {datetime.date.today()}")

    def loop() -> float:
        """``train`` over [start, start + steps): a copy of the run (data linked) resumed at ``start``."""
        d = tmp / "loop"
        shutil.rmtree(d, ignore_errors=True)
        run = Run.create(d, cfg.with_overrides(train={"steps": tc.steps}))
        for name in ("data", "tokenizer", "corpus.json"):
            if (src.path / name).exists():
                os.symlink((src.path / name).resolve(), d / name)
        # start from step 0 but time only the window: train up to `start` is not wanted, so fake a resume point
        from serpent.checkpoints import save_checkpoint, save_resume
        torch.manual_seed(tc.seed)
        params = model_params(build_model(mc))
        opt = adamw(params, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2))
        save_checkpoint(run.checkpoint_path(args.start), params, args.start, mc)
        save_resume(run.path / "checkpoints" / "resume.safetensors", opt, args.start, {})
        t = time.perf_counter()
        train(run, progress=False, max_steps_this_call=args.steps)
        return time.perf_counter() - t

    def bare() -> float:
        torch.manual_seed(tc.seed)
        params = model_params(build_model(mc))
        opt = adamw(params, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2))
        t = time.perf_counter()
        for i in range(args.start, args.start + args.steps):
            batch = batch_at(tokens, i, tc.batch_size, mc.n_ctx, tc.seed, bos)
            per_token_loss(params, batch, mc).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    times = {"training loop (serpent.train.train)": [], "bare step": []}
    loads = []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in order:
            times[name].append((loop if name.startswith("training") else bare)() / args.steps)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"  load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")
    for name, ts in times.items():
        print(f"  {name:38s} median {1e3 * statistics.median(ts):7.2f} ms/step (range {1e3 * min(ts):.2f}-"
              f"{1e3 * max(ts):.2f})")
    ratios = sorted(a / b for a, b in zip(*times.values()))
    print(f"  loop / bare: {statistics.median(ratios):.3f} (rounds {len(ratios)}, range {ratios[0]:.3f}-"
          f"{ratios[-1]:.3f})")


if __name__ == "__main__":
    main()
