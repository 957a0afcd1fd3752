"""What a run directory holds, declared once: every stage output's path, format, reader, what stamps it current and
how an artifact folder keeps it.

The stages write these files (``serpent/stages/``), and everything that reads a run reads them through the
declarations here: the figures, the explorer, the milestones, the widgets, the command line, the artifacts' export
(its file list and compaction rules come from :attr:`Output.export`) and the bench scripts. A new output is one
:class:`Output` in :data:`OUTPUTS`; its path is then written nowhere else.

A path may hold fields, filled by keyword (``step``, ``split``): ``CHECKPOINT.file(run, step=1000)``; a path with
``*`` names a family of files (``INDUCTION_CHARTS``). Readers take the file's path; :meth:`Output.read` finds the file
in a run (a :class:`~serpent.rundir.Run` or its folder) and, when it is missing, raises a :class:`SerpentError`
naming the stage that writes it, or returns ``missing=`` when given.

How an artifact folder keeps each output (``export``): ``"copy"`` the file as it is; ``"small"`` the same when at
most ``keep_bytes``; ``"tree"`` the folder; ``"sample"`` the first whole documents of a token stream; ``"bf16"`` the
chosen checkpoints in bf16; ``"compact"`` the susceptibility results in float16; ``"chart"`` the PNGs (unless
``charts=False``); ``"columns"`` the ``columns`` of a table into the output named by ``into``; ``None`` not kept.

This module knows paths and readers; it imports no stage and no run directory (a run is anything with ``.path``).

>>> SUSCEPTIBILITY.file("RUN", step=1000).as_posix()
'RUN/susceptibility/step_0001000.safetensors'
>>> [o.name for o in OUTPUTS.values() if o.stage == "induction"]
['induction_scores', 'induction_heads', 'induction_charts']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import SerpentError
from .io import read_json

__all__ = ["Output", "OUTPUTS", "output", "read_jsonl", "load_susceptibilities", "load_separation",
           "load_anatomy", "load_clusters", "load_embedding", "load_map", "load_heads", "load_scores",
           "load_llc_table", "load_llc_traces", "CONFIG", "STAGES_RECORD", "CORPUS", "DATA_META", "TOKENIZER",
           "TOKENS", "DOCUMENTS", "METRICS", "CHECKPOINT", "RESUME", "INDUCTION_SCORES", "INDUCTION_HEADS",
           "INDUCTION_CHARTS", "LLC_TABLE", "LLC_TRACES", "LLC_STEP", "LLC_CALIBRATION", "LLC_CHARTS",
           "SUSCEPTIBILITY", "SUSCEPTIBILITY_DIVERGED", "EMBEDDING", "MAP", "SEPARATION", "ANATOMY", "CLUSTERS",
           "SERPENT_CHARTS", "EXPLORER", "ARTIFACT_STAMP", "MAP_COLUMNS"]

_RAISE = object()


# ----------------------------------------------------------------------------------------------------------------
# readers (each takes the file's path)


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object a line; a line cut by an interruption is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _parquet(path):
    import pandas as pd
    return pd.read_parquet(path)


def _npy(path):
    import numpy as np
    return np.load(path, mmap_mode="r")


def _susceptibility_result(path):
    from .susceptibility import SusceptibilityResult
    return SusceptibilityResult.load(path)


def _tokenizer(path):
    from .tokenizer import Tokenizer
    return Tokenizer.load(path)


def _bytes(path):
    return Path(path).read_bytes()


def _by_step(path) -> dict[int, Any]:
    """A JSON file whose ``steps`` maps a training step (as text) to a value: by int step, in order."""
    return dict(sorted((int(k), v) for k, v in read_json(path)["steps"].items()))


# ----------------------------------------------------------------------------------------------------------------
# the declaration


@dataclass(frozen=True)
class Output:
    """One output of a stage: ``path`` relative to the run directory (fields such as ``{step:07d}``, or ``*`` for a
    family of files), its ``format``, its ``reader`` (path -> value), ``current`` (what stamps it current), and
    ``export`` / ``keep_bytes`` / ``columns`` / ``into`` (how an artifact folder keeps it: see the module)."""

    name: str
    stage: str
    path: str
    format: str
    reader: Optional[Callable[[Path], Any]]
    current: str
    export: Optional[str] = None
    keep_bytes: Optional[int] = None
    columns: tuple[str, ...] = ()
    into: Optional[str] = None
    description: str = field(default="", compare=False)

    def file(self, run: Any, **fields) -> Path:
        """The file in ``run`` (a Run or a folder), its fields filled."""
        return _root(run) / self.path.format(**fields)

    def pattern(self) -> str:
        """The path as a glob pattern (every field a ``*``)."""
        return re.sub(r"\{[^}]*\}", "*", self.path)

    def files(self, run: Any) -> list[Path]:
        """Every file of this output that ``run`` holds, sorted."""
        return sorted(p for p in _root(run).glob(self.pattern()) if p.is_file())

    def exists(self, run: Any, **fields) -> bool:
        return self.file(run, **fields).exists()

    def read(self, run: Any, *, missing: Any = _RAISE, **fields) -> Any:
        """The output read from ``run`` with its reader; when the file is missing, ``missing`` if given, else a
        :class:`SerpentError` that names the stage that writes it."""
        f = self.file(run, **fields)
        if not f.exists():
            if missing is not _RAISE:
                return missing
            raise SerpentError(f"{_root(run)} has no {self.path.format(**fields)} (the {self.stage} stage writes it); "
                               f"compute it with `python -m serpent run --out {_root(run)} --stages {self.stage}`")
        if self.reader is None:
            raise SerpentError(f"{self.name}: no reader is declared for {self.format} files; open {f} yourself")
        return self.reader(f)


def _root(run: Any) -> Path:
    return Path(getattr(run, "path", run))


_KEY = "the stage's settings key in stages.json"
_STAMP = "the settings and checkpoint stamp inside the file"

CONFIG = Output("config", "run", "config.json", "json", read_json, "written when the run is created", "copy")
STAGES_RECORD = Output("stages", "run", "stages.json", "json", read_json, "each stage's record", "copy")
ARTIFACT_STAMP = Output("artifact", "run", "artifact.json", "json", read_json,
                        "the manifest's sha256 of the artifact folder it was unpacked from")
CORPUS = Output("corpus", "data", "corpus.json", "json", read_json, _KEY, "copy")
DATA_META = Output("data_meta", "data", "data/meta.json", "json", read_json, _KEY, "copy")
TOKENIZER = Output("tokenizer", "data", "tokenizer", "folder", _tokenizer, _KEY, "tree")
TOKENS = Output("tokens", "data", "data/{split}.npy", "npy", _npy, _KEY, "sample")
DOCUMENTS = Output("documents", "data", "data/{split}_docs.json", "json", read_json, _KEY, "sample")
METRICS = Output("metrics", "train", "metrics.jsonl", "jsonl", read_jsonl, "one line per logged training step",
                 "copy")
CHECKPOINT = Output("checkpoint", "train", "checkpoints/step_{step:07d}.safetensors", "safetensors", None,
                    "the checkpoint's own bytes (its hash stamps every result computed from it)", "bf16")
RESUME = Output("resume", "train", "checkpoints/resume.safetensors", "safetensors", None,
                "the optimizer state of the last checkpoint")
INDUCTION_SCORES = Output("induction_scores", "induction", "induction/scores.parquet", "parquet", _parquet, _KEY,
                          "copy")
INDUCTION_HEADS = Output("induction_heads", "induction", "induction/heads.json", "json", read_json, _KEY, "copy")
INDUCTION_CHARTS = Output("induction_charts", "induction", "induction/*.png", "png", _bytes, _KEY, "chart")
LLC_TABLE = Output("llc_table", "llc", "llc/llc.parquet", "parquet", _parquet, _KEY, "copy")
LLC_TRACES = Output("llc_traces", "llc", "llc/traces.parquet", "parquet", _parquet, _KEY, "copy")
LLC_STEP = Output("llc_step", "llc", "llc/steps/step_{step:07d}.json", "json", read_json, _STAMP,
                  description="a checkpoint's row and traces, or its divergence record (serpent.stages.sweep)")
LLC_CALIBRATION = Output("llc_calibration", "llc", "llc/calibration{suffix}.parquet", "parquet", _parquet,
                         "written by calibrate_run (suffix: '' for the LLC's sampler, '_susceptibility')")
LLC_CHARTS = Output("llc_charts", "llc", "llc/*.png", "png", _bytes, _KEY, "chart")
SUSCEPTIBILITY = Output("susceptibility", "susceptibility", "susceptibility/step_{step:07d}.safetensors",
                        "safetensors", _susceptibility_result, _STAMP, "compact")
SUSCEPTIBILITY_DIVERGED = Output("susceptibility_diverged", "susceptibility",
                                 "susceptibility/step_{step:07d}.diverged.json", "json", read_json, _STAMP,
                                 description="the divergence record of a checkpoint that diverged at every step "
                                             "size (serpent.stages.sweep)")
#: what an artifact folder keeps of the serpent frame: the map and the labels the stage computed (the token text
#: and the χ columns are rebuilt on unpacking from the tokenizer and the susceptibility files)
MAP_COLUMNS = ("step", "point", "x", "y", "pattern", "n_prev_spaces")
EMBEDDING = Output("embedding", "serpent", "serpent/embedding.parquet", "parquet", _parquet, _KEY, "columns",
                   columns=MAP_COLUMNS, into="map")
MAP = Output("map", "serpent", "serpent/map.parquet", "parquet", _parquet,
             "the manifest of the artifact folder (written by the export from the serpent frame)")
SEPARATION = Output("separation", "serpent", "serpent/separation.json", "json", read_json, _KEY, "copy")
ANATOMY = Output("anatomy", "serpent", "serpent/anatomy.json", "json", read_json, _KEY, "copy")
CLUSTERS = Output("clusters", "serpent", "serpent/clusters.json", "json", read_json, _KEY, "small",
                  keep_bytes=2_000_000)
SERPENT_CHARTS = Output("serpent_charts", "serpent", "serpent/*.png", "png", _bytes, _KEY, "chart")
EXPLORER = Output("explorer", "serpent", "explorer.html", "html", None, _KEY)

#: Every output, by name, in pipeline order.
OUTPUTS: dict[str, Output] = {o.name: o for o in (
    CONFIG, STAGES_RECORD, ARTIFACT_STAMP, CORPUS, DATA_META, TOKENIZER, TOKENS, DOCUMENTS, METRICS, CHECKPOINT,
    RESUME, INDUCTION_SCORES, INDUCTION_HEADS, INDUCTION_CHARTS, LLC_TABLE, LLC_TRACES, LLC_STEP, LLC_CALIBRATION,
    LLC_CHARTS, SUSCEPTIBILITY, SUSCEPTIBILITY_DIVERGED, EMBEDDING, MAP, SEPARATION, ANATOMY, CLUSTERS,
    SERPENT_CHARTS, EXPLORER)}


def output(name: str) -> Output:
    """The declaration called ``name``."""
    if name not in OUTPUTS:
        raise SerpentError(f"no run output called {name!r}; known: {list(OUTPUTS)}")
    return OUTPUTS[name]


# ----------------------------------------------------------------------------------------------------------------
# the readers most callers want


def load_susceptibilities(run: Any) -> dict:
    """All saved susceptibility results of a run, by training step (``susceptibility/step_*.safetensors``)."""
    out = {}
    for p in SUSCEPTIBILITY.files(run):
        if p.name.endswith(".safetensors"):
            r = SUSCEPTIBILITY.reader(p)
            out[r.step] = r
    return out


def load_separation(run: Any, *, missing: Any = _RAISE) -> dict[int, dict]:
    """The serpent stage's separation per checkpoint, by int step."""
    return _by_step(SEPARATION.file(run)) if SEPARATION.exists(run) else SEPARATION.read(run, missing=missing)


def load_anatomy(run: Any, *, missing: Any = _RAISE) -> dict[int, dict]:
    """The serpent stage's body plan per checkpoint (``serpent/anatomy.json``), by int step."""
    return _by_step(ANATOMY.file(run)) if ANATOMY.exists(run) else ANATOMY.read(run, missing=missing)


def load_clusters(run: Any, *, missing: Any = _RAISE) -> dict:
    return CLUSTERS.read(run, missing=missing)


def load_embedding(run: Any, *, missing: Any = _RAISE):
    """The serpent frame (one row per token and checkpoint)."""
    return EMBEDDING.read(run, missing=missing)


def load_map(run: Any, *, missing: Any = _RAISE):
    return MAP.read(run, missing=missing)


def load_heads(run: Any, *, missing: Any = _RAISE) -> dict:
    return INDUCTION_HEADS.read(run, missing=missing)


def load_scores(run: Any, *, missing: Any = _RAISE):
    return INDUCTION_SCORES.read(run, missing=missing)


def load_llc_table(run: Any, *, missing: Any = _RAISE):
    return LLC_TABLE.read(run, missing=missing)


def load_llc_traces(run: Any, *, missing: Any = _RAISE):
    return LLC_TRACES.read(run, missing=missing)
