"""Measure how long every course notebook takes to run, in fast mode and in full mode, and record it for the
workshop page: ``python bench/notebook_times.py --mode fast [--mode full] [--threads 1] [names...]``.

Each notebook (``notebooks/NN_name.ipynb``, as learners open it) runs top to bottom in a fresh kernel, with
``SERPENT_FAST=1`` for the fast mode and without it for the full mode, from the notebooks folder, as a workshop
machine would run it (the committed ``cpu`` run is loaded; the toy is trained once, then read from ``runs/toy``). The wall-clock seconds are merged into
``bench/notebook_times.json``, with the host (CPU cores, load when measuring, threads) and the date, so a rerun of
one mode or one notebook keeps the others. ``book/workshop.md`` reads that file; nothing there is typed by hand.

Cells tagged ``skip-execution`` (the live widgets) are skipped, as in the book. A notebook that raises is recorded as
failed, with its error, and the script exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "notebook_times.json"
MODES = {"fast": {"SERPENT_FAST": "1"}, "full": {"SERPENT_FAST": "0"}}


def notebooks(names: list[str]) -> list[Path]:
    every = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    found = [p for p in every if not names or any(p.stem.startswith(n) for n in names)]
    if not found:
        sys.exit(f"no notebook matches {names}; the notebooks are {[p.stem for p in every]}")
    return found


def run_notebook(path: Path, env: dict, timeout: int) -> tuple[float, str | None]:
    """Execute ``path`` in a fresh kernel whose environment is ``env``: (wall seconds, error or None)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "skip-execution" not in c.get("metadata", {}).get("tags", [])]
    saved = dict(os.environ)
    os.environ.update(env)   # the kernel inherits this process's environment
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            client.execute()
            error = None
        except Exception as e:   # a failing notebook is recorded, the others still run
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
        return time.perf_counter() - start, error
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="notebooks to time (a prefix such as 06); default: all")
    ap.add_argument("--mode", action="append", choices=list(MODES), help="fast, full or both (repeat); default fast")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (SERPENT_THREADS, OMP_NUM_THREADS)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell before a notebook counts as failed")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    failed = []
    for mode in args.mode or ["fast"]:
        env = dict(MODES[mode], HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        if args.threads:
            env.update(SERPENT_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
        entry = record.setdefault(mode, {"notebooks": {}})
        for path in notebooks(args.names):
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            seconds, error = run_notebook(path, env, args.timeout)
            entry["notebooks"][path.stem] = {"seconds": round(seconds, 1), "error": error, "load_before": load,
                                             "threads": args.threads or os.cpu_count()}
            print(f"{mode:>4} {path.stem:<22} {seconds:7.1f} s" + (f"  FAILED {error}" if error else ""), flush=True)
            if error:
                failed.append(f"{mode} {path.stem}")
        entry["host"] = {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                         "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
