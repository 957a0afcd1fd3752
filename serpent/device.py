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

__all__ = ["default_device", "autocast_dtype", "autocast", "describe_device"]


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
