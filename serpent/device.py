"""Device and precision: one explicit place that decides where and in which number format work runs.

* ``default_device()``: CUDA if present, else CPU (override with ``SERPENT_DEVICE``).
* ``autocast_dtype(device, precision)``: ``auto`` gives bf16 on GPUs that support it natively (compute capability
  8.0 and later, and ROCm), fp16 (with loss scaling in training and SGLD) on older GPUs such as Colab's T4, and fp32
  on the CPU. (``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated, e.g. on a T4, where it
  runs slowly, so it is not asked.)

>>> autocast_dtype(torch.device("cpu"), "auto")
torch.float32
>>> autocast_dtype(torch.device("cpu"), "bf16")
torch.bfloat16
"""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import ConfigError

__all__ = ["default_device", "autocast_dtype", "autocast", "describe_device", "configure_cpu_threads", "busy_machine"]

#: Environment variable with the torch CPU thread count for serpent's commands (the command line's ``--threads``).
THREADS_ENV = "SERPENT_THREADS"


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the argument if given, else ``$SERPENT_DEVICE``, else CUDA when available, else CPU."""
    if device is None:
        device = os.environ.get("SERPENT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: got {device!r} but no CUDA GPU is visible; use 'cpu'")
    return dev


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The compute dtype for ``precision`` in ``{'auto', 'fp32', 'bf16', 'fp16'}`` on ``device``."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in table:
        return table[precision]
    if precision != "auto":
        raise ConfigError(f"precision: got {precision!r}; allowed: 'auto', 'fp32', 'bf16', 'fp16'")
    if device.type == "cuda":
        return native_half_dtype(torch.cuda.get_device_capability(device), bool(torch.version.hip))
    return torch.float32


def native_half_dtype(capability: tuple[int, int], rocm: bool = False) -> torch.dtype:
    """bf16 where the GPU computes it natively (compute capability 8.0+, or ROCm), else fp16.

    >>> native_half_dtype((9, 0)), native_half_dtype((7, 5)), native_half_dtype((7, 5), rocm=True)
    (torch.bfloat16, torch.float16, torch.bfloat16)
    """
    return torch.bfloat16 if rocm or capability[0] >= 8 else torch.float16


def autocast(device: torch.device, dtype: torch.dtype):
    """A context manager running matrix work in ``dtype`` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_device(device: torch.device) -> str:
    """A one-line human description, e.g. ``'cuda (NVIDIA H100 80GB HBM3)'`` or ``'cpu (2 threads)'``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def busy_machine(cores: int | None = None, load: float | None = None) -> str | None:
    """A warning when other processes already keep the CPU busy (1-minute load average within half a core of the
    core count), else None: two torch processes that share the cores slow each other down severalfold.

    >>> busy_machine(cores=2, load=0.3) is None, busy_machine(cores=2, load=1.7) is not None
    (True, True)
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):     # not available on this platform
            return None
    if load < cores - 0.5:
        return None
    return (f"the machine is busy (load {load:.1f} on {cores} cores): another heavy process is running, and two "
            f"torch processes sharing the cores slow each other down severalfold. Wait for it to finish, or give "
            f"this one a single thread: --threads 1 (or {THREADS_ENV}=1)")


def configure_cpu_threads(threads: int | None = None, *, echo=print) -> int:
    """Set torch's CPU thread count from ``threads`` (else ``$SERPENT_THREADS``, else under ``torchrun`` the cores
    divided among the machine's ranks, else torch's default: every core)
    and say when the machine is already busy (:func:`busy_machine`); returns the count in use.

    Measured on 2 cores (BENCHMARKS.md, "Two processes on 2 cores"): the tiny model's training step runs at 30 steps/s
    alone; two such processes at once ran at about 1 step/s each with OpenMP's own spinning, 9.7 each with the
    bounded spinning serpent sets on import (``GOMP_SPINCOUNT=10000``; 28.5 alone), 17 each with one thread each.
    """
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if raw:
            try:
                threads = int(raw)
            except ValueError:
                raise ConfigError(f"{THREADS_ENV}: got {raw!r}; give a whole number of threads, e.g. 1") from None
    if threads is None and int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) > 1:
        # torchrun's ranks on one machine share its cores (torchrun itself would leave each rank one thread)
        threads = max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"]))
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads: got {threads}; give at least 1")
        torch.set_num_threads(int(threads))
    warning = busy_machine()
    if warning and echo is not None and (threads is None or threads > 1):
        echo(f"note: {warning}")
    return torch.get_num_threads()
