"""Checkpoints: safetensors files of TransformerLens-named parameters, their schedule, resume state, and the
published Timaeus checkpoints.

* :func:`save_checkpoint` / :func:`load_checkpoint`: one ``.safetensors`` file per step, with the step and the model
  config in its header; loading checks the format, every name and every shape against the expected model, so a
  foreign or corrupt file gives a :class:`~serpent.errors.CheckpointError` that says what is wrong.
* :func:`check_checkpoint`: the same checks from the header alone (format, model config, names, shapes, dtypes, and
  whether the file holds every byte its header promises), without reading a tensor: the stages check every
  checkpoint they will analyse this way before they sample any.
* :func:`checkpoint_schedule`: log-spaced steps (dense early, where development is fast) plus linear ones, like the
  paper's schedule.
* :func:`save_resume` / :func:`load_resume`: the optimizer state at the last checkpoint, pickle-free.
* :func:`load_timaeus_checkpoint`: the ``.pth`` files of ``timaeus/tetrahedron-3m-og`` (plain TransformerLens state
  dicts), read with ``torch.load(weights_only=True)``: never unpickles arbitrary objects.

>>> checkpoint_schedule(1000, n_log=5, n_linear=4)
[0, 1, 6, 32, 178, 250, 500, 750, 1000]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .config import ModelConfig
from .errors import CheckpointError
from .io import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "check_checkpoint", "checkpoint_schedule", "save_resume",
           "load_resume", "expected_shapes", "load_timaeus_checkpoint", "download_timaeus_checkpoint"]

FORMAT = "serpent-checkpoint-v1"
#: Bytes per element of the dtypes a checkpoint may hold (fp32; bf16 and fp16 in compact artifacts).
_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}
_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def checkpoint_schedule(steps: int, n_log: int, n_linear: int) -> list[int]:
    """Sorted unique steps: 0, ``steps``, ``n_log`` log-spaced steps and ``n_linear`` evenly spaced ones."""
    out = {0, steps}
    if n_log > 0 and steps > 1:
        out.update(int(round(x)) for x in np.logspace(0, np.log10(steps), n_log))
    if n_linear > 0:
        out.update(int(round(x)) for x in np.linspace(0, steps, n_linear + 1)[1:])
    return sorted(s for s in out if 0 <= s <= steps)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of the model described by ``cfg`` (worked out once per config)."""
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _SHAPES:
        from .model import build_model
        with torch.device("meta"):
            model = build_model(cfg, device="meta")
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.named_parameters()}
    return dict(_SHAPES[key])


def _check_shapes(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, source: str) -> None:
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{source} does not hold this model's parameters (missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}); is it a checkpoint of another model or config?")
    for k, shape in want.items():
        if tuple(shapes[k]) != shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(shapes[k])} but this model needs {shape}; "
                                  f"the checkpoint belongs to a model with a different config")


def _check_params(params: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> None:
    _check_shapes({k: tuple(v.shape) for k, v in params.items()}, cfg, source)
    for k, v in params.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: {k} contains NaN or inf; the checkpoint is corrupt")


def save_checkpoint(path: str | Path, params: dict[str, torch.Tensor], step: int, cfg: ModelConfig,
                    dtype: torch.dtype | None = None) -> None:
    """Atomically save ``params`` (optionally cast to ``dtype``, e.g. bf16 for compact artifacts)."""
    tensors = {k: (v.detach().to(dtype) if dtype else v.detach()).contiguous().cpu() for k, v in params.items()}
    meta = {"format": FORMAT, "step": str(step), "model_config": json.dumps(cfg.to_dict(), sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _read_header(path: Path, whole: bool = False) -> dict:
    """The JSON header of a safetensors file: its ``__metadata__`` (``whole``: every entry). Reads the header only;
    a file that is not safetensors (a pickle, a zip, text) is refused from its first bytes, never unpickled."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9:
            raise CheckpointError(f"{path} is truncated (not a safetensors file); delete it and re-run")
        n = int.from_bytes(head[:8], "little")
        if head[8:9] != b"{" or n <= 1 or n > 100_000_000:   # a safetensors header is JSON from byte 8 on
            pickled = head[:4] == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5)
            what = "a torch .pth or pickle" if pickled else "something else"
            raise CheckpointError(f"{path} is not a safetensors file (it looks like {what}, which is never "
                                  f"unpickled here); for published .pth checkpoints use load_timaeus_checkpoint")
        if n > size - 8:
            raise CheckpointError(f"{path} is truncated or corrupt (its header alone needs {n + 8} bytes, the file "
                                  f"has {size}); delete it and re-run")
        try:
            header = json.loads(head[8:] + f.read(n - 1))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} has a corrupt header; delete it and re-run") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header; delete it and re-run")
    if whole:
        return header
    meta = header.get("__metadata__", {}) or {}
    return meta if isinstance(meta, dict) else {}


def check_checkpoint(path: str | Path, cfg: ModelConfig | None = None) -> dict:
    """Check a checkpoint from its header alone, without reading or unpickling a tensor; returns its metadata
    (``step``, ``model_config``) or raises :class:`~serpent.errors.CheckpointError` saying what is wrong.

    Checked: a safetensors file of this format; every tensor of a dtype a checkpoint holds (F32, BF16, F16), its bytes
    where the header says and the file as long as the header promises (a truncated copy is caught here); with
    ``cfg``: the model config it was saved for, and every name and shape of that model. Not checked: the values (NaN
    or inf), which :func:`load_checkpoint` checks.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    header = _read_header(path, whole=True)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not a serpent checkpoint (format {got!r}); for published "
                              f"Timaeus .pth files use load_timaeus_checkpoint")
    shapes, end = {}, 0
    for name, info in header.items():
        try:
            shape = tuple(int(d) for d in info["shape"])
            start, stop = (int(o) for o in info["data_offsets"])
            dtype = info["dtype"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{path} has a corrupt header (entry {name!r}); delete it and re-run") from None
        if dtype not in _DTYPE_BYTES:
            raise CheckpointError(f"{path}: {name} is stored as {dtype!r}, not as a checkpoint's "
                                  f"{'/'.join(_DTYPE_BYTES)}; it was not written by serpent")
        if stop - start != _DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64)):
            raise CheckpointError(f"{path} has a corrupt header ({name}'s bytes do not match its shape); delete it "
                                  f"and re-run")
        shapes[name] = shape
        end = max(end, stop)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    if path.stat().st_size != 8 + n + end:
        raise CheckpointError(f"{path} is truncated or corrupt (its header promises {8 + n + end} bytes, the file "
                              f"has {path.stat().st_size}); delete it and re-run")
    try:
        saved = json.loads(meta.get("model_config") or "{}")
        step = int(meta.get("step", -1))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has a corrupt header (its metadata); delete it and re-run") from None
    if cfg is not None:
        if saved and saved != cfg.to_dict():
            diff = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
            raise CheckpointError(f"{path} was saved for a different model config (fields {diff} differ)")
        _check_shapes(shapes, cfg, str(path))
    return {"step": step, "model_config": saved}


def load_checkpoint(path: str | Path, cfg: ModelConfig | None = None,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(params, metadata)`` (params in fp32).

    With ``cfg`` given, names and shapes are checked against that model.
    """
    path = Path(path)
    meta = check_checkpoint(path, cfg)
    try:
        params = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); delete it and re-run the training stage") from None
    params = {k: v.float() for k, v in params.items()}
    if cfg is not None:
        _check_params(params, cfg, str(path))
    return params, meta


def save_resume(path: str | Path, optimizer: torch.optim.Optimizer, step: int, extra: dict | None = None) -> None:
    """Atomically save the optimizer state (tensors in safetensors, the rest as JSON in the header)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    meta = {"format": FORMAT + "-resume", "step": str(step), "param_groups": json.dumps(sd["param_groups"]),
            "scalars": json.dumps(scalars), "extra": json.dumps(extra or {})}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_resume(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore the optimizer state saved by :func:`save_resume`; returns ``(step, extra)``."""
    path = Path(path)
    meta = _read_header(path)
    if meta.get("format") != FORMAT + "-resume":
        raise CheckpointError(f"{path} is not a serpent resume file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); delete it to restart training from scratch") from None
    state: dict = {}
    for name, t in tensors.items():
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = t
    for name, v in json.loads(meta["scalars"]).items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    sd = {"state": state, "param_groups": json.loads(meta["param_groups"])}
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not match this optimizer ({e}); delete it to restart training") from None
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


def load_timaeus_checkpoint(path: str | Path, cfg: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """Parameters from a published ``timaeus/tetrahedron-3m-og`` ``.pth`` file, mapped onto our names.

    The file is read with ``torch.load(weights_only=True)`` (no arbitrary unpickling). Accepted layouts: a plain
    TransformerLens ``state_dict``, or a dict holding one under ``model``, ``state_dict`` or ``model_state_dict``;
    ``torch.compile``'s ``_orig_mod.`` prefix is stripped; buffers (``mask``, ``IGNORE``) are dropped.
    """
    cfg = cfg or ModelConfig()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        raise CheckpointError(f"{path} could not be read as a weights-only torch file ({type(e).__name__}: "
                              f"{str(e)[:200]}); it is corrupt or holds more than tensors, which we refuse to unpickle") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    params = {}
    for k, v in obj.items():
        k = k.removeprefix("_orig_mod.").removeprefix("module.")
        if k.endswith((".mask", ".IGNORE")) or k.endswith("attn.mask"):
            continue
        params[k] = v.float()
    _check_params(params, cfg, str(path))
    return params


def download_timaeus_checkpoint(step: int, repo: str = "timaeus/tetrahedron-3m-og") -> Path:
    """Fetch ``checkpoints/checkpoint_{step:07d}.pth`` from the Hugging Face hub (Colab; needs network)."""
    import os
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise CheckpointError("the Hugging Face hub is switched off (HF_HUB_OFFLINE=1); download the file elsewhere "
                              "and pass its path to load_timaeus_checkpoint")
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(repo, f"checkpoints/checkpoint_{step:07d}.pth"))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"could not download step {step} from {repo}: {e}") from None
