"""The extra susceptibilities behind the anatomy's robustness table (issue 31, item 2), computed from the book's run.

Two variations of the committed ``artifacts/cpu`` (its checkpoints, stored in bf16, and its data samples), each in
a run directory of its own beside the unpacked artifacts, resumable checkpoint by checkpoint (run the same command
again after an interruption):

* ``--what seed``: a second SGLD seed (``susceptibility.sampler.seed`` 101 instead of 100) at the given checkpoints
  (default: all eight, the last first). Run beside a recomputation with seed 100 from the same bf16 checkpoints
  (``--what seed100``), so that the two seeds differ in the SGLD noise only, not in the weights' rounding.
* ``--what probe``: a probe four times larger (48 windows of 128 tokens: 6,096 tokens instead of 1,524) at the last
  checkpoint.

Then ``python -m serpent anatomy runs/cpu-artifacts --robustness`` (or :func:`serpent.anatomy.robustness_table`)
reads them. Usage::

    python bench/anatomy_samples.py --what seed --threads 2
    python bench/anatomy_samples.py --what probe --threads 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "seed100": ("cpu-sgld100", {"sampler_seed": 100}),
    "seed": ("cpu-sgld101", {"sampler_seed": 101}),
    "probe": ("cpu-probe48", {"probe_sequences": 48}),
}


def variant_run(base, name: str, change: dict):
    """A run directory ``runs/NAME`` sharing ``base``'s data, tokenizer and checkpoints, with its own config."""
    from serpent.io import atomic_write_json, read_json
    from serpent.rundir import Run

    dst = base.path.parent / name
    if not (dst / "config.json").exists():
        dst.mkdir(parents=True, exist_ok=True)
        for d in ("data", "tokenizer", "checkpoints"):
            if not (dst / d).exists():
                shutil.copytree(base.path / d, dst / d)
        for f in ("corpus.json", "metrics.jsonl"):
            if (base.path / f).exists():
                shutil.copy2(base.path / f, dst / f)
        cfg = read_json(base.path / "config.json")
        if "sampler_seed" in change:
            cfg["susceptibility"]["sampler"]["seed"] = change["sampler_seed"]
        if "probe_sequences" in change:
            cfg["susceptibility"]["probe_sequences"] = change["probe_sequences"]
        atomic_write_json(dst / "config.json", cfg)
    return Run.open(dst)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--steps", nargs="+", type=int, default=None, help="checkpoints (default: see the module doc)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from serpent.artifacts import load_artifacts
    from serpent.device import configure_cpu_threads
    from serpent.stages.susceptibility import susceptibility_stage

    configure_cpu_threads(args.threads)
    base = load_artifacts("cpu")
    name, change = VARIANTS[args.what]
    run = variant_run(base, name, change)
    from serpent.outputs import SUSCEPTIBILITY
    steps = sorted(int(p.stem.split("_")[1]) for p in SUSCEPTIBILITY.files(base))
    if args.steps:
        steps = args.steps
    elif args.what == "probe":
        steps = steps[-1:]
    else:
        steps = steps[::-1]          # the last checkpoint first: the one the anatomy is about
    for s in steps:                  # one at a time, so every finished checkpoint is kept
        susceptibility_stage(run, steps=[s], progress=True, gather=False)
        print(f"{name}: step {s} done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
