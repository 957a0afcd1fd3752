"""The prepared GPU session for the full-scale run: one call under a hard deadline, results back as compact artifacts.

A lent GPU comes with about 15 minutes of device time per session, machine start included, and 10 minutes per
command, so the full run has to fit one call. This driver runs the stages of ``--preset``/``--config`` in order, each
only while time is left, and always ends by exporting what exists:

1. data, then training in a child process limited to ``--train-budget`` seconds (a run cut short keeps its
   checkpoints, is analysed as far as it got, and resumes from its last checkpoint if the call is repeated on a warm
   machine);
2. induction scores at every checkpoint;
3. the LLC, then the susceptibilities, each one checkpoint at a time in coarse-to-fine order (first, last, middle,
   quarters, ...), so a deadline that cuts them short still leaves checkpoints spread over training; the LLC may
   take at most ``--llc-share`` of the time left after induction, the susceptibilities get the rest. Each
   checkpoint's result is kept as soon as it exists, so a repeated call computes only what is missing;
4. ``export_artifacts`` (last checkpoint plus ``--keep-checkpoints``, the stages' PNG charts, no UMAP: the serpent
   stage runs on a CPU from the artifacts; if that would exceed 40 MB, again with the last checkpoint only and smaller
   token samples) packed as ``full.tgz.partNN`` files of at most 15 MiB in ``--export`` (the device tool returns at
   most 8 files of 16 MiB), plus ``session.json`` with the timings of every stage.

A watchdog (SIGALRM) interrupts whatever is running when only ``--reserve`` seconds are left, so a stage slower than
foreseen can never push the export past the command's time limit and lose the session's results. When device time
is left after the first call, a second call right away on the still-warm machine (``--skip train``) fills in the
checkpoints the first had no time for and exports again; on a machine that was handed back in between it stops at
once instead of starting over.

On the device machine (wheels carried in ``.whl``, see BENCHMARKS.md "GPU session")::

    S=$(date +%s) && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD SERPENT_COMMIT=<HEAD>     # <HEAD>: `git rev-parse HEAD` here
    python3 bench/gpu_session.py --config bench/gpu_full.json --out runs/full --started-at $S --deadline 575 --export $OUT

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
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from serpent.cli import parse_overrides
from serpent.config import RunConfig, get_preset
from serpent.outputs import CHECKPOINT, SUSCEPTIBILITY
from serpent.rundir import Run

PART_BYTES = 15 * 2 ** 20


class TimeUp(BaseException):
    """Raised inside whatever stage is running when the deadline's reserve is reached (SIGALRM)."""


def arm_watchdog(seconds: float) -> None:
    """From ``seconds`` from now, interrupt the running stage with :class:`TimeUp` (0: disarm; a deadline already
    passed, ``seconds < 0``, rings at once)."""
    def ring(signum, frame):
        raise TimeUp()
    signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3) if seconds else 0.0)


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
    ap.add_argument("--started-at", type=float, default=None,
                    help="when the device command started (epoch seconds, `date +%%s` before the pip install), so "
                         "that the deadline counts the install and the imports too (default: now)")
    ap.add_argument("--export", default=os.environ.get("OUT", "/tmp/out"), help="folder for the packed artifacts")
    ap.add_argument("--keep-checkpoints", type=int, nargs="*", default=[], help="steps kept in bf16 besides the last")
    ap.add_argument("--reserve", type=float, default=45.0, help="seconds kept for the export")
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "induction", "llc", "susceptibility"],
                    help="stages to leave out (a second seed needs no LLC; a second call on the warm machine "
                         "skips training and fills in checkpoints the first call had no time for)")
    ap.add_argument("--llc-share", type=float, default=0.3,
                    help="most of the time left after training that the LLC may take (susceptibilities get the rest)")
    ap.add_argument("--train-budget", type=float, default=330.0,
                    help="most seconds for training; a cut-short run is analysed at the checkpoints it reached")
    args = ap.parse_args()

    t0 = args.started_at if args.started_at is not None else time.time()
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
        except TimeUp:
            log["stages"][name] = {"error": "cut by the deadline", "seconds": round(time.time() - s, 1)}
            log["skipped"].append(name)
            print(f"[{time.time() - t0:6.0f} s] {name} cut by the deadline", flush=True)
            save_log()
            return None
        except Exception as e:  # noqa: BLE001 - a failed stage must not lose the others' results
            log["stages"][name] = {"error": f"{type(e).__name__}: {e}", "seconds": round(time.time() - s, 1)}
            print(f"  failed: {e}", flush=True)
            save_log()
            return None
        log["stages"][name] = {"seconds": round(time.time() - s, 1), "summary": out}
        print(f"[{time.time() - t0:6.0f} s] {name} done in {time.time() - s:.1f} s", flush=True)
        save_log()
        return out

    from serpent.stages import STAGES
    if "train" in args.skip and not CHECKPOINT.file(args.out, step=0).parent.is_dir():
        print(f"{args.out} has no checkpoints and --skip train was given: this machine is not the one that trained "
              f"(it was handed back); nothing to do", flush=True)
        save_log()
        return 1
    run = Run.create(args.out, cfg)

    def train():  # a child process under a time limit: a cut-short run keeps its (atomically written) checkpoints
        cmd = [sys.executable, "-m", "serpent", "train", str(run.path), "--quiet"]
        try:
            subprocess.run(cmd, check=True, timeout=max(1.0, min(args.train_budget, left())))
        except subprocess.TimeoutExpired:
            log["train_cut_short"] = True
        steps = run.checkpoint_steps()
        return {"checkpoints": len(steps), "last_step": steps[-1] if steps else None, "target": cfg.train.steps}

    from serpent.stages.sweep import select_steps
    from serpent.stages import llc_stage, susceptibility_stage

    def one_at_a_time(name: str, steps: list[int], fn, until: float) -> list[int]:
        """``fn(step)`` for ``steps`` in coarse-to-fine order while the time left stays above ``until``; a step
        that fails is left out, the deadline ends the loop."""
        done, per_step = [], 0.0
        for step in coarse_to_fine(steps):
            if left() - per_step * 1.2 < until:
                log["skipped"].append(f"{name}@{step}")
                continue
            if stage(f"{name}@{step}", lambda: fn(step), None) is not None:     # time checked just above
                done.append(step)
                per_step = max(per_step, log["stages"][f"{name}@{step}"]["seconds"])
            elif log["stages"].get(f"{name}@{step}", {}).get("error") == "cut by the deadline":
                break
        return sorted(done)

    def analyse():
        stage("data", lambda: STAGES["data"](run, progress=False), None)
        if "train" not in args.skip:
            stage("train", train, None)
        if "induction" not in args.skip:
            stage("induction", lambda: STAGES["induction"](run, progress=False), 20)
        if "llc" not in args.skip:   # at most --llc-share of the time left, so the susceptibilities are not starved
            llc_until = left() * (1 - args.llc_share) if "susceptibility" not in args.skip else 0.0
            llc_done = one_at_a_time("llc", select_steps(run.checkpoint_steps(), cfg.llc.sampler.checkpoints),
                                     lambda s: llc_stage(run, steps=[s], charts=False, progress=False), llc_until)
            if llc_done:   # the table and charts over every checkpoint done (reused, not estimated again)
                stage("llc", lambda: llc_stage(run, steps=llc_done, progress=False), None)
        if "susceptibility" not in args.skip:
            one_at_a_time("susceptibility", select_steps(run.checkpoint_steps(), cfg.susceptibility.sampler.checkpoints),
                          lambda s: susceptibility_stage(run, steps=[s], progress=False), 0.0)

    arm_watchdog(left())                     # from here on, the deadline's reserve interrupts whatever is running
    try:
        analyse()
    except TimeUp:
        log["skipped"].append("(deadline reached between stages)")
    finally:
        arm_watchdog(0)                      # the summaries and the export always run
    done = sorted(int(p.stem.split("_")[1]) for p in SUSCEPTIBILITY.files(run))
    if done:
        stage("susceptibility", lambda: susceptibility_stage(run, steps=done, progress=False), None)
    if not run.checkpoint_steps():
        print("no checkpoints: nothing to export", flush=True)
        save_log()
        return 1

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
