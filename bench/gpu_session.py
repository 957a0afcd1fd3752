"""The prepared GPU session for the full-scale run: one call under a hard deadline, results back as compact artifacts.

A lent GPU comes with about 15 minutes of device time per session, machine start included, and 10 minutes per
command, so the full run has to fit one call. This driver runs the stages of ``--preset``/``--config`` in order, each
only while time is left, and always ends by exporting what exists:

1. data, then training in a child process limited to ``--train-budget`` seconds (a run cut short keeps its
   checkpoints, is analysed as far as it got, and resumes from its last checkpoint if the call is repeated on a warm
   machine);
2. induction scores at every checkpoint, then the LLC;
3. susceptibilities one checkpoint at a time in coarse-to-fine order (first, last, middle, quarters, ...), so a
   deadline that cuts the stage short still leaves checkpoints spread over training;
4. ``export_artifacts`` (last checkpoint plus ``--keep-checkpoints``, the stages' PNG charts, no UMAP: the serpent
   stage runs on a CPU from the artifacts; if that would exceed 40 MB, again with the last checkpoint only and smaller
   token samples) packed as ``full.tgz.partNN`` files of at most 15 MiB in ``--export`` (the device tool returns at
   most 8 files of 16 MiB), plus ``session.json`` with the timings of every stage.

On the device machine (wheels carried in ``.whl``, see BENCHMARKS.md "GPU session")::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 bench/gpu_session.py --config bench/gpu_full.json --out runs/full --deadline 540 --export $OUT

Back here: ``cat full.tgz.part* | tar xz -C artifacts`` then ``python -m serpent serpent runs/full-artifacts`` after
``load_artifacts("full")``. A second seed, in a later session: the same command with ``--set model.seed=1 --set
train.seed=1 --skip llc --out runs/seed1 --name full-seed1``; back here, unpack it outside ``artifacts/`` (the 40 MB
are for the main run), run its serpent stage and ``python -m serpent compare runs/full-artifacts
runs/full-seed1-artifacts``. A CPU rehearsal of the whole flow (about two minutes)::

    python bench/gpu_session.py --preset tiny --set train.steps=60 --deadline 150 --export /tmp/out --out /tmp/r
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from serpent.cli import parse_overrides
from serpent.config import RunConfig, get_preset
from serpent.rundir import Run

PART_BYTES = 15 * 2 ** 20


def coarse_to_fine(steps: list[int]) -> list[int]:
    """``steps`` reordered so that every prefix spreads over the whole range: first, last, then midpoints.

    >>> coarse_to_fine([0, 1, 2, 3, 4, 5, 6, 7, 8])
    [0, 8, 4, 2, 6, 1, 3, 5, 7]
    """
    steps = sorted(steps)
    if len(steps) <= 2:
        return steps
    order, seen = [0, len(steps) - 1], {0, len(steps) - 1}
    spans = [(0, len(steps) - 1)]
    while spans:
        nxt = []
        for lo, hi in spans:
            mid = (lo + hi) // 2
            if mid not in seen:
                order.append(mid)
                seen.add(mid)
            if mid - lo > 1:
                nxt.append((lo, mid))
            if hi - mid > 1:
                nxt.append((mid, hi))
        spans = nxt
    return [steps[i] for i in order]


def pack(folder: Path, dest: Path, name: str) -> list[str]:
    """``folder`` as a gzipped tar cut into parts of at most 15 MiB: ``dest/name.tgz.part00`` ..."""
    dest.mkdir(parents=True, exist_ok=True)
    blob = dest / f"{name}.tgz"
    with tarfile.open(blob, "w:gz") as tar:
        tar.add(folder, arcname=name)
    data = blob.read_bytes()
    blob.unlink()
    parts = []
    for i in range(0, len(data), PART_BYTES):
        p = dest / f"{name}.tgz.part{i // PART_BYTES:02d}"
        p.write_bytes(data[i:i + PART_BYTES])
        parts.append(p.name)
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--config", default=None, help="a JSON RunConfig (instead of --preset)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--out", default="runs/full", help="run directory")
    ap.add_argument("--name", default="full", help="artifact name")
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds from start to the end of the export")
    ap.add_argument("--export", default=os.environ.get("OUT", "/tmp/out"), help="folder for the packed artifacts")
    ap.add_argument("--keep-checkpoints", type=int, nargs="*", default=[], help="steps kept in bf16 besides the last")
    ap.add_argument("--reserve", type=float, default=45.0, help="seconds kept for the export")
    ap.add_argument("--skip", nargs="*", default=[], choices=["induction", "llc", "susceptibility"],
                    help="stages to leave out (a second seed needs training and susceptibilities only)")
    ap.add_argument("--train-budget", type=float, default=330.0,
                    help="most seconds for training; a cut-short run is analysed at the checkpoints it reached")
    args = ap.parse_args()

    t0 = time.time()
    left = lambda: args.deadline - args.reserve - (time.time() - t0)  # noqa: E731
    cfg = RunConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config else get_preset(args.preset)
    if args.set:
        cfg = cfg.with_overrides(**parse_overrides(args.set))
    export = Path(args.export)
    export.mkdir(parents=True, exist_ok=True)
    log = {"config": cfg.to_dict(), "stages": {}, "skipped": []}
    try:
        log["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                                    capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        log["gpu"] = None

    def save_log():
        log["elapsed"] = round(time.time() - t0, 1)
        (export / "session.json").write_text(json.dumps(log, indent=2, default=str))

    def stage(name, fn, need: float | None):
        """Run ``fn`` as stage ``name`` if ``need`` seconds are left before the reserve (None: always)."""
        if need is not None and left() < need:
            log["skipped"].append(name)
            print(f"[{time.time() - t0:6.0f} s] skip {name}: {left():.0f} s left, needs about {need:.0f} s", flush=True)
            return None
        s = time.time()
        print(f"[{s - t0:6.0f} s] {name} ...", flush=True)
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - a failed stage must not lose the others' results
            log["stages"][name] = {"error": f"{type(e).__name__}: {e}", "seconds": round(time.time() - s, 1)}
            print(f"  failed: {e}", flush=True)
            save_log()
            return None
        log["stages"][name] = {"seconds": round(time.time() - s, 1), "summary": out}
        print(f"[{time.time() - t0:6.0f} s] {name} done in {time.time() - s:.1f} s", flush=True)
        save_log()
        return out

    from serpent.pipeline import STAGES
    run = Run.create(args.out, cfg)
    stage("data", lambda: STAGES["data"](run, progress=False), None)

    def train():  # a child process under a time limit: a cut-short run keeps its (atomically written) checkpoints
        cmd = [sys.executable, "-m", "serpent", "train", str(run.path), "--quiet"]
        try:
            subprocess.run(cmd, check=True, timeout=max(1.0, min(args.train_budget, left())))
        except subprocess.TimeoutExpired:
            log["train_cut_short"] = True
        steps = run.checkpoint_steps()
        return {"checkpoints": len(steps), "last_step": steps[-1] if steps else None, "target": cfg.train.steps}

    stage("train", train, None)
    if "induction" not in args.skip:
        stage("induction", lambda: STAGES["induction"](run, progress=False), 20)
    if "llc" not in args.skip:
        stage("llc", lambda: STAGES["llc"](run, progress=False), 30)

    from serpent.llc import select_steps
    from serpent.susceptibility import susceptibility_stage
    wanted = [] if "susceptibility" in args.skip else \
        coarse_to_fine(select_steps(run.checkpoint_steps(), cfg.susceptibility_checkpoints))
    per_step = 0.0
    for step in wanted:
        out = stage(f"susceptibility@{step}", lambda: susceptibility_stage(run, steps=[step], progress=False),
                    per_step * 1.2)
        if out is None:
            break
        per_step = max(per_step, log["stages"][f"susceptibility@{step}"]["seconds"])
    done = sorted(int(p.stem.split("_")[1]) for p in (run.path / "susceptibility").glob("step_*.safetensors"))
    if done:
        stage("susceptibility", lambda: susceptibility_stage(run, steps=done, progress=False), None)

    from serpent.artifacts import export_artifacts
    art = Path("/tmp/serpent-artifacts") / args.name
    keep = sorted({*args.keep_checkpoints, run.checkpoint_steps()[-1]} & set(run.checkpoint_steps()))
    from serpent.artifacts import ArtifactError

    def export_compact():
        try:
            m = export_artifacts(run, art, name=args.name, checkpoints=keep)
        except ArtifactError as e:  # over the size limit: the last checkpoint only, smaller samples
            print(f"  {e}; exporting less", flush=True)
            m = export_artifacts(run, art, name=args.name, train_tokens=300_000, test_tokens=200_000)
        return {k: v for k, v in m.items() if k != "files"}

    manifest = stage("export", export_compact, None)
    if manifest is not None:
        log["parts"] = pack(art, export, args.name)
    save_log()
    print(json.dumps({k: v.get("seconds") for k, v in log["stages"].items()}, indent=1))
    print(f"total {time.time() - t0:.0f} s; parts: {log.get('parts')}; skipped: {log['skipped']}")
    return 0 if manifest is not None else 1


if __name__ == "__main__":
    sys.exit(main())
