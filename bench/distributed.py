"""Two processes against one: the susceptibility and LLC stages under torchrun (2 gloo ranks, 1 thread each) and in
one process (all cores), on the same trained run, interleaved.

    python -m serpent run --preset tiny --out runs/tiny --stages data train     # once
    python bench/distributed.py [--run runs/tiny] [--pairs 2]

Each trial runs the command line in a fresh copy of the run without any kept result (so nothing is reused), and is
timed from the start of the command to its end (the startup of Python, torch and, for torchrun, the rendezvous
included). Settings: `--checkpoints` checkpoints (split across the ranks) and one checkpoint (split within: heads for
the susceptibilities, chains for the LLC). Prints the median seconds of each variant and the median ratio of the
pairs, with the load average.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("config.json", "stages.json", "corpus.json", "tokenizer", "data", "checkpoints")


def _fresh_copy(run: Path, into: Path) -> Path:
    dst = into / f"run{time.perf_counter_ns()}"
    dst.mkdir()
    for name in KEEP:
        src = run / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/tiny", help="a trained run directory (data and train stages done)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--checkpoints", type=int, default=2, help="checkpoints of the across-ranks setting")
    args = ap.parse_args()
    run = Path(args.run)
    if not (run / "checkpoints").is_dir():
        raise SystemExit(f"{run} has no checkpoints: python -m serpent run --preset tiny --out {run} "
                         "--stages data train")
    from serpent.outputs import CHECKPOINT
    steps = sorted(int(p.stem.split("_")[1]) for p in CHECKPOINT.files(run))
    across = [str(s) for s in steps[-args.checkpoints:]]
    within = [str(steps[-1])]
    env = {k: v for k, v in os.environ.items() if k not in ("SERPENT_THREADS", "OMP_NUM_THREADS")}
    env["HF_HUB_OFFLINE"] = "1"
    one = [sys.executable, "-m", "serpent"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "serpent"]
    print(f"# commit {commit()}, {os.cpu_count()} cores, run {run}: across = steps {across}, within = step {within}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("susceptibilities", "llc"):
            for name, chosen in (("across", across), ("within", within)):
                times: dict[str, list[float]] = {"1 process": [], "2 ranks": []}
                ratios, loads = [], []
                for i in range(args.pairs):
                    order = [("1 process", one), ("2 ranks", two)]
                    if i % 2:
                        order.reverse()
                    pair = {}
                    for label, prefix in order:
                        loads.append(os.getloadavg()[0])
                        path = _fresh_copy(run, Path(tmp))
                        pair[label] = _timed(prefix + [stage, str(path), "--steps", *chosen, "--quiet"], env)
                        times[label].append(pair[label])
                        shutil.rmtree(path)
                    ratios.append(pair["1 process"] / pair["2 ranks"])
                m1, m2 = statistics.median(times["1 process"]), statistics.median(times["2 ranks"])
                line = (f"{stage:16s} {name:6s} 1 process {m1:6.1f} s   2 ranks {m2:6.1f} s   speed-up "
                        f"{statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f}), "
                        f"load {min(loads):.1f}-{max(loads):.1f}")
                print(line, flush=True)
                rows.append(line)


if __name__ == "__main__":
    main()
