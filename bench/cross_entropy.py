"""The fused unembedding + cross-entropy in blocks of (replicas x tokens), against the previous version that chunked
over tokens only (all replicas at once), interleaved A/B in one process.

    python bench/cross_entropy.py [--threads N] [--pairs 7] [--baseline REV]

Shapes: the susceptibility sweep at the `cpu` preset (68 stacked copies x 4 x 127 tokens x 2,048 vocabulary, d 64),
forward + backward (an SGLD step) and forward only (the probe); and one training step (1 copy, 16 x 127 tokens). The
baseline is serpent/model.py at git revision REV (default: the commit before the blocked version), loaded from git.
Prints the median of each side over the pairs, their ratio and its spread, and the load average.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _module_at(rev: str):
    src = subprocess.check_output(["git", "show", f"{rev}:serpent/model.py"], cwd=ROOT, text=True)
    path = Path(tempfile.mkdtemp()) / "model_baseline.py"
    path.write_text(src.replace("from .", "from serpent."))
    spec = importlib.util.spec_from_file_location("model_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(R: int, N: int, V: int, D: int, grad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(R, N, D, generator=g) / D ** 0.5).requires_grad_(grad)
    W = (torch.randn(R, D, V, generator=g) / D ** 0.5).requires_grad_(grad)
    b = torch.zeros(R, V).requires_grad_(grad)
    t = torch.randint(0, V, (R, N), generator=g)
    return x, W, b, t


def _run(fn, case, grad: bool) -> float:
    x, W, b, t = case
    start = time.perf_counter()
    if grad:
        loss = fn(x, W, b, t, 4096)
        torch.autograd.grad(loss.sum(), [x, W, b])
    else:
        with torch.no_grad():
            fn(x, W, b, t, 4096)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--baseline", default="1fcec8d")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from serpent.model import linear_cross_entropy as ours
    theirs = _module_at(args.baseline).linear_cross_entropy
    cases = {"SGLD step (68 x 508 tokens, fwd+bwd)": (68, 508, 2048, 64, True),
             "probe (68 x 508 tokens, forward)": (68, 508, 2048, 64, False),
             "training step (1 x 2,032 tokens, fwd+bwd)": (1, 2032, 2048, 64, True)}
    print(f"# {machine()}, commit {commit()}, baseline {args.baseline}, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.2f}")
    for name, (R, N, V, D, grad) in cases.items():
        case = _case(R, N, V, D, grad)
        with torch.no_grad():
            a, b_ = ours(*case, 4096), theirs(*case, 4096)
        assert torch.allclose(a, b_, atol=1e-4), "the two versions disagree"
        for _ in range(2):                     # warm-up both
            _run(ours, case, grad), _run(theirs, case, grad)
        pairs = []
        for i in range(args.pairs):            # interleaved, alternating which goes first
            if i % 2:
                t_new, t_old = _run(ours, case, grad), _run(theirs, case, grad)
            else:
                t_old, t_new = _run(theirs, case, grad), _run(ours, case, grad)
            pairs.append((t_new, t_old))
        ratios = sorted(o / n for n, o in pairs)
        print(f"{name:44s} blocked {statistics.median(p[0] for p in pairs) * 1e3:7.1f} ms | "
              f"token-chunked (anchor) {statistics.median(p[1] for p in pairs) * 1e3:7.1f} ms | "
              f"speed-up median {statistics.median(ratios):.2f}x (range {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
