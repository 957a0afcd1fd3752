"""Two torch processes on one machine: training steps per second alone and side by side, for OpenMP's spinning
settings and thread counts.

    python bench/threads.py [--seconds 10]

Each setting runs the `tiny` model's training step (16 x 128 tokens, forward + backward) in a fresh process for a
fixed time, first alone, then two at once; prints steps/s alone, each of the pair, and the pair's total as a share
of one process alone. `serpent` is imported before torch in the workers, so its own default applies unless the
setting overrides GOMP_SPINCOUNT, or imports torch first (then OpenMP keeps its own default: unbounded spinning
in this torch build, judging by the result).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit  # noqa: E402

WORKER = """
import os, sys, time
if os.environ.get("TORCH_FIRST"):
    import torch          # OpenMP starts with its own defaults, before serpent can bound the spinning
import serpent, torch
from serpent.config import get_preset
from serpent.model import build_model, model_params, per_token_loss
cfg = get_preset("tiny").model
params = model_params(build_model(cfg))
tokens = torch.randint(0, cfg.d_vocab, (16, 128))
for _ in range(3):
    per_token_loss(params, tokens, cfg).mean().backward()
start, n = time.time(), 0
while time.time() - start < float(sys.argv[1]):
    per_token_loss(params, tokens, cfg).mean().backward()
    n += 1
print(n / (time.time() - start))
"""

SETTINGS = {
    "torch imported before serpent (OpenMP's own)": {"TORCH_FIRST": "1"},
    "GOMP_SPINCOUNT=300000": {"GOMP_SPINCOUNT": "300000"},
    "serpent's default (GOMP_SPINCOUNT=10000)": {},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "one thread each (--threads 1)": {"SERPENT_THREADS": "1", "OMP_NUM_THREADS": "1"},
}


def _run(env_extra: dict, seconds: float, n: int) -> list[float]:
    env = {**{k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}, **env_extra}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(seconds)], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(n)]
    return [float(p.communicate()[0].strip()) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores, commit {commit()}, load {os.getloadavg()[0]:.2f}; tiny training steps/s")
    for name, env in SETTINGS.items():
        alone = _run(env, args.seconds, 1)[0]
        pair = _run(env, args.seconds, 2)
        print(f"{name:42s} alone {alone:6.2f} | two at once {pair[0]:6.2f} + {pair[1]:6.2f} "
              f"(together {sum(pair) / alone:.0%} of one alone)")


if __name__ == "__main__":
    main()
