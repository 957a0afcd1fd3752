"""Per-token, per-component susceptibilities (science.md §1.5).

Result format first; the estimator and the batched driver follow in this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as _st_load, save as _st_save

from .errors import SerpentError

__all__ = ["SusceptibilityResult", "load_susceptibilities"]

_FORMAT = "serpent.susceptibility/1"


@dataclass
class SusceptibilityResult:
    """Per-token susceptibilities of one checkpoint: an ``(N tokens, C components)`` table plus the probe context.

    Row i is the target token ``y = probe_tokens[seq_index[i], position[i]]`` predicted from its context
    ``x = probe_tokens[seq_index[i], :position[i]]``. ``chi`` is χ^C_xy, ``chi_se`` its standard error from the
    spread across SGLD chains. Saved as safetensors (arrays) with JSON metadata in the header.
    """

    step: int                    # training step of the checkpoint (-1 if not from a run)
    components: list[str]        # ["0:0", ..., "1:7"] (then "mlp:0", ... when MLPs are components)
    chi: np.ndarray              # (N, C) float32
    chi_se: np.ndarray           # (N, C) float32
    probe_tokens: np.ndarray     # (S, L) int64
    seq_index: np.ndarray        # (N,) int64
    position: np.ndarray         # (N,) int64, 1..L-1
    doc_names: list[str]         # (S,)
    settings: dict = field(default_factory=dict)

    @property
    def token_ids(self) -> np.ndarray:
        """``(N,)`` int64 ids of the target tokens y."""
        return self.probe_tokens[self.seq_index, self.position]

    def __len__(self) -> int:
        return int(self.chi.shape[0])

    def save(self, path) -> Path:
        """Write to ``path`` (safetensors; arrays plus JSON metadata), atomically."""
        path = Path(path)
        arrays = {
            "chi": np.ascontiguousarray(self.chi, dtype=np.float32),
            "chi_se": np.ascontiguousarray(self.chi_se, dtype=np.float32),
            "probe_tokens": np.ascontiguousarray(self.probe_tokens, dtype=np.int64),
            "seq_index": np.ascontiguousarray(self.seq_index, dtype=np.int64),
            "position": np.ascontiguousarray(self.position, dtype=np.int64),
        }
        meta = {"format": _FORMAT, "step": str(int(self.step)), "components": json.dumps(list(self.components)),
                "doc_names": json.dumps(list(self.doc_names)), "settings": json.dumps(self.settings, default=str)}
        data = _st_save(arrays, metadata=meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "SusceptibilityResult":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise SerpentError(f"{path}: no such susceptibility file; run `python -m serpent susceptibilities RUN_DIR`")
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise SerpentError(f"{path}: not a serpent susceptibility file (format {meta.get('format')!r}); "
                               "recompute it with `python -m serpent susceptibilities RUN_DIR`")
        a = _st_load(str(path))
        return cls(step=int(meta["step"]), components=json.loads(meta["components"]), chi=a["chi"],
                   chi_se=a["chi_se"], probe_tokens=a["probe_tokens"], seq_index=a["seq_index"],
                   position=a["position"], doc_names=json.loads(meta["doc_names"]),
                   settings=json.loads(meta["settings"]))


def load_susceptibilities(run) -> dict[int, SusceptibilityResult]:
    """All saved results of a run directory, by training step (``susceptibility/step_{step:07d}.safetensors``)."""
    d = Path(run.path) / "susceptibility"
    out = {}
    for p in sorted(d.glob("step_*.safetensors")) if d.is_dir() else []:
        r = SusceptibilityResult.load(p)
        out[r.step] = r
    return out
