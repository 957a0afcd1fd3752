"""Helpers shared by the benchmarks: timing with warm-up and medians, machine description."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001 - a copy without .git (the GPU machine): the commit the command names
        return os.environ.get("SERPENT_COMMIT", "unknown")[:7]


def thread_counts(spec: str) -> list[int]:
    """``"1,max"`` -> ``[1, os.cpu_count()]``: the thread counts a benchmark runs at, one after the other."""
    out = []
    for part in spec.split(","):
        n = (os.cpu_count() or 1) if part.strip() == "max" else int(part)
        if n not in out:
            out.append(n)
    return out


def interleaved(variants: dict, pairs: int, device: torch.device) -> tuple[dict, list[float]]:
    """Time each variant once per round, ``pairs`` rounds, the order rotating every round (A B, B A, ...).

    Returns ``({name: [seconds per round]}, [1-minute load average before each round])``. Machines here are shared:
    two variants timed in separate blocks see different loads, interleaved rounds see the same one.
    """
    names = list(variants)
    times = {n: [] for n in names}
    loads = []
    for r in range(pairs):
        loads.append(os.getloadavg()[0])
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            sync(device)
            t = time.perf_counter()
            variants[n]()
            sync(device)
            times[n].append(time.perf_counter() - t)
    return times, loads



def rounds_at_threads(variants: dict, threads: str, pairs: int, reference: str) -> dict:
    """Warm every variant up once, then, at each thread count of ``threads`` (``"1,max"``), time ``pairs``
    interleaved CPU rounds and print them against ``reference``. Returns ``{threads: {name: [seconds]}}``."""
    for fn in variants.values():
        fn()
    out = {}
    for n in thread_counts(threads):
        torch.set_num_threads(n)
        print(f"## {n} threads")
        times, loads = interleaved(variants, pairs, torch.device("cpu"))
        print_rounds(times, loads, reference)
        out[n] = times
    return out

def ratio_line(times: dict, reference: str, ours: str) -> str:
    """``ours`` against ``reference``: the median of the per-round ratios and their range."""
    ratios = sorted(r / o for r, o in zip(times[reference], times[ours]))
    return (f"{statistics.median(ratios):.2f}x (pairs {len(ratios)}, range {ratios[0]:.2f}-{ratios[-1]:.2f})")


def print_rounds(times: dict, loads: list[float], reference: str, flops: dict | None = None,
                 limit: float | None = None, unit: float = 1.0, unit_name: str = "s") -> None:
    """A table: each variant's median and range, its ratio to ``reference``, and, given FLOPs per run and the
    measured matmul limit (FLOP/s), the GFLOP/s it achieves and that as a share of the limit."""
    print(f"  load average over the rounds: {min(loads):.2f}-{max(loads):.2f}")
    for name, ts in times.items():
        med = statistics.median(ts)
        line = f"  {name:38s} median {med / unit:9.2f} {unit_name} (range {min(ts) / unit:.2f}-{max(ts) / unit:.2f})"
        if name != reference:
            line += f"  {ratio_line(times, reference, name)} vs {reference}"
        if flops and name in flops:
            rate = flops[name] / med
            line += f"  {rate / 1e9:6.1f} GFLOP/s"
            if limit:
                line += f" = {100 * rate / limit:4.1f}% of the matmul limit"
        print(line, flush=True)


def count_flops(fn) -> float:
    """FLOPs of one call of ``fn`` (matmuls and convolutions, as torch's FlopCounterMode counts them)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_limit(shapes: list[tuple[int, int, int]], device: torch.device, dtype=torch.float32,
                 repeats: int = 5) -> tuple[float, tuple[int, int, int]]:
    """The machine's measured matmul throughput (FLOP/s) at the benchmark's dominant shapes ``(M, K, N)``: the
    best of the shapes' medians, and that shape. What an implementation could reach if it only multiplied."""
    best = (0.0, shapes[0])
    for M, K, N in shapes:
        a = torch.randn(M, K, device=device, dtype=dtype)
        b = torch.randn(K, N, device=device, dtype=dtype)
        sec = time_it(lambda: a @ b, device, warmup=1, repeats=repeats)
        best = max(best, (2.0 * M * K * N / sec, (M, K, N)))
    return best
