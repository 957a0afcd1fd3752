"""Artifacts: a compact, checked copy of a run's results, small enough to commit, that readers load instead of
recomputing.

A GPU run directory holds gigabytes (every checkpoint in fp32, the whole token stream, HTML charts). An artifact
folder keeps what the book and the notebooks read, in the run directory's own layout, plus a ``manifest.json``::

    ART/manifest.json        format, name, preset, settings hash, corpus fingerprint, package versions, hardware,
                             stage timings, and every file with its bytes, sha256 and (arrays) dtype and shape
    ART/config.json, stages.json, corpus.json, metrics.jsonl, tokenizer/
    ART/data/{train,test}.npy           the first whole documents of each token stream (samples, for demos)
    ART/checkpoints/step_*.safetensors  a few checkpoints in bf16 (the last one always)
    ART/induction/, llc/                the tables (parquet, json) and the PNG charts
    ART/susceptibility/step_*.safetensors   χ and its standard error in float16
    ART/serpent/                        separation.json, anatomy.json, the PNGs, map.parquet (the 2-D
                                        coordinates and the token labels the stage computed) and clusters.json
                                        (the clusters' cards, when under 2 MB)

Which files go, and how each is made smaller, is declared with the outputs themselves
(:attr:`serpent.outputs.Output.export`): this module applies those rules and adds the manifest.

Data flows one way: :func:`export_artifacts` (run directory → artifact folder, refused above ``max_mb``),
:func:`verify_artifacts` (every file present with its declared size, hash, dtype and shape) and
:func:`load_artifacts` (artifact folder → an ordinary run directory under ``runs/``, float32 again, which every
module, chart and notebook reads unchanged). A folder that fails the check is never unpacked: the error names the
file and says what to do. Where the folder is not on disk (Colab installs the package, not the repository),
:func:`fetch_artifacts` downloads a published one file by file from a URL, checking each against the manifest.

>>> import tempfile
>>> from serpent.config import get_preset
>>> from serpent.rundir import Run
>>> run = Run.create(tempfile.mkdtemp() + "/r", get_preset("tiny"))
>>> export_artifacts(run, tempfile.mkdtemp() + "/a")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
serpent.artifacts.ArtifactError: ... has no checkpoints yet; train the run before exporting its artifacts
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .config import config_hash
from .errors import SerpentError
from .io import atomic_write_bytes, atomic_write_json, find_root, read_json, write_parquet
from .outputs import (ARTIFACT_STAMP, CHECKPOINT, CONFIG, CORPUS, DOCUMENTS, EMBEDDING, MAP, MAP_COLUMNS, OUTPUTS,
                      STAGES_RECORD, TOKENS, load_susceptibilities)
from .rundir import Run

__all__ = ["ArtifactError", "export_artifacts", "verify_artifacts", "load_artifacts", "fetch_artifacts",
           "artifacts_dir", "FORMAT"]

FORMAT = "serpent-artifacts/1"
MAX_MB = 40.0

#: the export rules :func:`export_artifacts` knows (:attr:`serpent.outputs.Output.export`); ``None``: not kept
EXPORT_RULES = ("copy", "small", "tree", "sample", "bf16", "compact", "chart", "columns")


class ArtifactError(SerpentError):
    """An artifact folder is missing, incomplete, corrupt or too large."""


def artifacts_dir(root: Optional[str | os.PathLike] = None) -> Path:
    """``ROOT/artifacts``, where committed artifact folders live (ROOT: :func:`serpent.io.find_root`)."""
    return Path(root if root is not None else find_root()) / "artifacts"


# ---------------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _array_info(path: Path) -> dict:
    """dtype and shape of every array a file holds (npy, safetensors, parquet rows), for the manifest."""
    if path.suffix == ".npy":
        a = np.load(path, mmap_mode="r")
        return {"dtype": str(a.dtype), "shape": list(a.shape)}
    if path.suffix == ".safetensors":
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        return {"tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(header.items())
                            if k != "__metadata__"}}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        meta = pq.read_metadata(path)
        return {"rows": meta.num_rows, "columns": meta.num_columns}
    return {}


def _document_cut(starts: np.ndarray, n_tokens: int, limit: int) -> int:
    """Length of the longest prefix of the stream that ends at a document boundary and has at most ``limit``
    tokens (at least the first document)."""
    ends = np.append(np.asarray(starts, dtype=np.int64)[1:], n_tokens)
    fits = ends[ends <= limit]
    return int(fits[-1]) if len(fits) else int(ends[0])


def _export_tokens(run: Run, out: Path, limits: dict[str, int]) -> None:
    for split, limit in limits.items():
        stream = run.tokens(split)
        starts, names = run.documents(split)
        cut = _document_cut(starts, len(stream), limit)
        keep = starts < cut
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(stream[:cut]))
        atomic_write_bytes(TOKENS.file(out, split=split), buf.getvalue())
        atomic_write_json(DOCUMENTS.file(out, split=split),
                          {"starts": starts[keep].tolist(), "names": [n for n, k in zip(names, keep) if k],
                           "sample_of_tokens": int(len(stream))})


def _export_columns(src: Path, dst: Path, columns: Sequence[str]) -> None:
    """Only ``columns`` of a table (the serpent frame: the 2-D coordinates and the labels the stage computed; its
    token text and χ columns are rebuilt on unpacking from the susceptibility files and the tokenizer)."""
    import pandas as pd
    frame = pd.read_parquet(src, columns=list(columns))
    write_parquet(frame, dst, compression="zstd")


def _versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("serpent", "torch", "transformer-lens", "umap-learn", "numpy", "altair"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _device() -> str:
    from .device import default_device, describe_device
    return describe_device(default_device())


def _git_commit() -> Optional[str]:
    """The package's git commit, or ``$SERPENT_COMMIT`` where the code is a copy without ``.git`` (a GPU machine)."""
    import subprocess
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=Path(__file__).resolve().parent)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("SERPENT_COMMIT") or None


def export_artifacts(run: Run | str | os.PathLike, out: str | os.PathLike, *, name: Optional[str] = None,
                     checkpoints: Optional[Sequence[int]] = None, train_tokens: int = 1_000_000,
                     test_tokens: int = 500_000, max_mb: float = MAX_MB, charts: bool = True) -> dict:
    """Write the compact artifacts of ``run`` into the folder ``out`` (replaced if it exists); returns the manifest.

    ``checkpoints``: training steps to keep (bf16); default the last one. ``train_tokens`` / ``test_tokens``: how
    many tokens of each stream to keep (whole documents). ``charts``: keep the PNG charts. Refused, with the largest
    files named, when the folder would exceed ``max_mb`` megabytes (10^6 bytes).
    """
    run = run if isinstance(run, Run) else Run.open(run)
    out = Path(out)
    steps = run.checkpoint_steps()
    if not steps:
        raise ArtifactError(f"{run.path} has no checkpoints yet; train the run before exporting its artifacts")
    keep = [steps[-1]] if checkpoints is None else sorted({int(s) for s in checkpoints})
    missing = [s for s in keep if s not in steps]
    if missing:
        raise ArtifactError(f"{run.path} has no checkpoint at steps {missing}; available: {steps}")
    if out.resolve() == run.path.resolve():
        raise ArtifactError(f"{out}: export into a new folder, not into the run directory itself")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        return _export_into(run, tmp, out, steps, keep, name, train_tokens, test_tokens, max_mb, charts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)                  # whatever happened, no half-written folder stays


def _export_output(o, run: Run, tmp: Path, keep: list[int], token_limits: dict[str, int], charts: bool,
                   susceptibility_steps: list[int]) -> None:
    """Keep the output ``o`` of ``run`` in the folder ``tmp`` by its export rule (:mod:`serpent.outputs`)."""
    src = run.path
    if o.export not in EXPORT_RULES:
        raise ArtifactError(f"output {o.name}: unknown export rule {o.export!r}; known: {EXPORT_RULES}")
    if o.export in ("copy", "small"):
        f = o.file(src)
        if f.is_file() and (o.export == "copy" or f.stat().st_size <= o.keep_bytes):
            o.file(tmp).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, o.file(tmp))
    elif o.export == "tree":
        shutil.copytree(o.file(src), o.file(tmp))
    elif o.export == "sample":
        if o is TOKENS:                                  # with their documents (DOCUMENTS shares the rule)
            _export_tokens(run, tmp, token_limits)
    elif o.export == "bf16":
        import torch
        from .checkpoints import load_checkpoint, save_checkpoint
        for s in keep:
            params, _ = load_checkpoint(run.checkpoint_path(s), run.config.model)
            save_checkpoint(CHECKPOINT.file(tmp, step=s), params, s, run.config.model, dtype=torch.bfloat16)
    elif o.export == "compact":
        for step, result in load_susceptibilities(run).items():
            result.save(o.file(tmp, step=step), compact=True)
            susceptibility_steps.append(step)
    elif o.export == "chart":
        if charts:
            for png in o.files(src):
                dst = tmp / png.relative_to(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(png, dst)
    elif o.export == "columns":
        if o.exists(src):
            _export_columns(o.file(src), OUTPUTS[o.into].file(tmp), _present(o.file(src), o.columns))


def _present(path: Path, columns: Sequence[str]) -> list[str]:
    """The ``columns`` a parquet file has (a serpent frame of an older stage may lack a label column)."""
    import pyarrow.parquet as pq
    names = set(pq.read_schema(path).names)
    return [c for c in columns if c in names]


def _export_into(run: Run, tmp: Path, out: Path, steps: list[int], keep: list[int], name: Optional[str],
                 train_tokens: int, test_tokens: int, max_mb: float, charts: bool) -> dict:
    src = run.path
    susceptibility_steps: list[int] = []
    for o in OUTPUTS.values():
        if o.export is not None:
            _export_output(o, run, tmp, keep, {"train": int(train_tokens), "test": int(test_tokens)}, charts,
                           susceptibility_steps)

    files = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            rel = p.relative_to(tmp).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": _sha256(p), **_array_info(p)}
    total = sum(f["bytes"] for f in files.values())
    if total > max_mb * 1e6:
        largest = sorted(files.items(), key=lambda kv: -kv[1]["bytes"])[:5]
        listing = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in largest)
        raise ArtifactError(f"the artifacts would take {total / 1e6:.1f} MB, over the {max_mb:g} MB limit "
                            f"(largest: {listing}); keep fewer checkpoints or fewer tokens (train_tokens, "
                            f"test_tokens), or drop the charts")
    stages = STAGES_RECORD.read(src, missing={})
    # an unpacked artifact folder exported again: the manifest names the original run as its origin
    origin = ARTIFACT_STAMP.read(src, missing={}).get("origin") or None
    train_summary = stages.get("train", {}).get("summary", {})
    manifest = {
        "format": FORMAT,
        "name": name or out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_run": str(run.path),
        "commit": _git_commit(),
        "preset": run.config.preset,
        "config_hash": config_hash(run.config.to_dict()),
        "corpus": CORPUS.read(src, missing=None),
        "versions": _versions(),
        "hardware": {"train_device": train_summary.get("device"), "precision": train_summary.get("precision"),
                     "exported_on": f"{platform.system()} {platform.machine()}, {_device()}"},
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "checkpoints": keep,
        "all_checkpoints": (origin.get("all_checkpoints") or steps) if origin else steps,
        "susceptibility_steps": sorted(susceptibility_steps),
        "total_bytes": total,
        "files": files,
    }
    if origin:
        manifest["origin"] = origin
    atomic_write_json(tmp / "manifest.json", manifest)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# verify and load
# ---------------------------------------------------------------------------------------------------------------

def _resolve(path_or_name: str | os.PathLike, root: Optional[str | os.PathLike]) -> Path:
    p = Path(path_or_name)
    if (p / "manifest.json").is_file() or p.is_absolute() or len(p.parts) > 1:
        return p
    return artifacts_dir(root) / str(path_or_name)


def _check_manifest(manifest: object, where: object) -> dict:
    """The ``files`` of a manifest of this format, or :class:`ArtifactError` saying what is wrong with it."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{where}: format {got!r} is not {FORMAT!r}; re-export the artifacts with this version "
                            f"(or upgrade serpent)")
    files = manifest.get("files")
    if not isinstance(files, dict) or CONFIG.path not in files:
        raise ArtifactError(f"{where} lists no files (or no config.json); the manifest is damaged: re-export")
    return files


def verify_artifacts(path: str | os.PathLike) -> dict:
    """Check an artifact folder against its manifest (format, every file's size, sha256, dtypes and shapes);
    returns the manifest or raises :class:`ArtifactError` naming what is wrong."""
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise ArtifactError(f"{path} is not an artifact folder (no manifest.json); export one with "
                            f"`python -m serpent export RUN_DIR --out {path}`")
    try:
        manifest = read_json(mf)
    except SerpentError as e:
        raise ArtifactError(str(e)) from None
    for rel, info in _check_manifest(manifest, mf).items():
        p = path / _safe_relpath(rel, "read")
        if not isinstance(info, dict):
            raise ArtifactError(f"{mf}: the entry of {rel} is not a file's description; the manifest is damaged: "
                                f"re-export")
        if not p.is_file():
            raise ArtifactError(f"{path}: {rel} is missing; restore it (git checkout -- {p}) or re-export")
        if p.stat().st_size != info.get("bytes"):
            raise ArtifactError(f"{path}: {rel} has {p.stat().st_size} bytes, the manifest says {info.get('bytes')}; "
                                f"the file is damaged or was replaced: restore it or re-export")
        if _sha256(p) != info.get("sha256"):
            raise ArtifactError(f"{path}: {rel} does not match its sha256 in the manifest; restore it or re-export")
        declared = {k: v for k, v in info.items() if k not in ("bytes", "sha256")}
        try:
            actual = _array_info(p)
        except Exception as e:  # noqa: BLE001 - numpy, json and pyarrow raise many kinds on a foreign file
            raise ArtifactError(f"{path}: {rel} cannot be read as a {p.suffix} file ({type(e).__name__}); it is "
                                f"foreign or damaged: restore it or re-export") from None
        if declared != actual:
            raise ArtifactError(f"{path}: {rel} holds {actual}, the manifest declares {declared}; re-export")
    return manifest


def _origin_of(manifest: dict, manifest_sha: str) -> dict:
    """Where an artifact folder came from, kept by its unpacked copy so that exporting that copy again (e.g. after
    a newer serpent stage) still names the original run and its whole checkpoint schedule."""
    first = manifest.get("origin") or {}
    return {"source_run": first.get("source_run", manifest.get("source_run")),
            "commit": first.get("commit", manifest.get("commit")),
            "all_checkpoints": first.get("all_checkpoints", manifest.get("all_checkpoints")),
            "manifest_sha256": first.get("manifest_sha256", manifest_sha)}


def _labels(run: Run, maps):
    """The token labels of an unpacked run: the token text, context and χ columns rebuilt from its tokenizer and
    susceptibility files, and the labels its serpent stage computed (``pattern``, ``n_prev_spaces``) as the export
    kept them, so a changed classifier never relabels a committed run. An older folder whose map lacks them gets
    them from :func:`serpent.patterns.label_results` with this version's classifier."""
    import pandas as pd
    from .patterns import label_results
    labels = label_results(load_susceptibilities(run), run.tokenizer())
    stored = [c for c in MAP_COLUMNS if c in maps.columns and c not in ("step", "point", "x", "y")]
    if stored:
        kept = maps.set_index(["step", "point"])[stored]
        where = pd.MultiIndex.from_frame(labels[["step", "point"]])
        for c in stored:
            labels[c] = kept[c].reindex(where).values
    return labels


def _unpack(src: Path, dst: Path, manifest: dict, manifest_sha: str) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in manifest["files"]:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, tmp / rel)
    if MAP.exists(tmp):
        from .embedding import serpent_frame
        run = Run.open(tmp)
        maps = MAP.read(tmp)
        write_parquet(serpent_frame(maps, _labels(run, maps)), EMBEDDING.file(tmp))
    atomic_write_json(ARTIFACT_STAMP.file(tmp), {"sha256": manifest_sha, "source": str(src),
                                                 "origin": _origin_of(manifest, manifest_sha)})
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def load_artifacts(path_or_name: str | os.PathLike, *, into: Optional[str | os.PathLike] = None,
                   root: Optional[str | os.PathLike] = None) -> Run:
    """The run directory of an artifact folder: verify it, unpack it (once) and open it.

    ``path_or_name``: a folder, or the name of one in :func:`artifacts_dir` (e.g. ``"full"``). ``into``: where to
    unpack (default ``ROOT/runs/<name>-artifacts``); an up-to-date unpacked copy is reused. The unpacked run is an
    ordinary :class:`~serpent.rundir.Run` whose checkpoints are the kept ones (bf16 values, loaded as fp32) and whose
    token streams are samples.
    """
    src = _resolve(path_or_name, root)
    manifest = verify_artifacts(src)
    if into is None:
            into = Path(root if root is not None else find_root()) / "runs" / f"{manifest.get('name', src.name)}-artifacts"
    into = Path(into)
    want = _sha256(src / "manifest.json")
    if ARTIFACT_STAMP.read(into, missing={}).get("sha256") != want:
        _unpack(src, into, manifest, want)
    return Run.open(into)


# ---------------------------------------------------------------------------------------------------------------
# fetch (Colab: the package is installed, the repository's artifacts/ folder is not)
# ---------------------------------------------------------------------------------------------------------------

ARTIFACTS_URL_ENV = "SERPENT_ARTIFACTS_URL"


def _safe_relpath(rel: object, verb: str = "download") -> str:
    """A manifest path that stays inside its folder (no absolute path, no ``..``), or ArtifactError."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or ":" in rel \
            or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ArtifactError(f"the manifest lists the file {rel!r}, which is not a plain relative path inside the "
                            f"artifact folder; refusing to {verb} it (a foreign or tampered manifest)")
    return rel


def _download(url: str, dest: Path, *, limit: int, timeout: float, bar=None) -> str:
    """Stream ``url`` into ``dest`` (at most ``limit`` bytes); returns the sha256 of what was written."""
    import urllib.error
    import urllib.request
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ArtifactError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ArtifactError(f"{url}: {getattr(e, 'reason', e)}") from None
    h, n = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with response, open(dest, "wb") as f:
        for block in iter(lambda: response.read(1 << 20), b""):
            n += len(block)
            if n > limit:
                raise ArtifactError(f"{url} is larger than the {limit} bytes its manifest declares; the published "
                                    f"folder is inconsistent (re-export and publish it again)")
            h.update(block)
            f.write(block)
            if bar is not None:
                bar.update(len(block))
    return h.hexdigest()


def fetch_artifacts(url: str, name: Optional[str] = None, *, root: Optional[str | os.PathLike] = None,
                    progress: bool = True, timeout: float = 60.0) -> Path:
    """Download the artifact folder published at ``url`` into ``ROOT/artifacts/NAME`` and return its path.

    ``url``: the folder's address, whose ``manifest.json`` and files lie under it: on GitHub
    ``https://raw.githubusercontent.com/OWNER/REPO/BRANCH/artifacts/full``, on the Hugging Face hub
    ``https://huggingface.co/datasets/OWNER/REPO/resolve/main/full``, or ``file:///path/to/artifacts/full``.
    ``name``: default the manifest's name. Every file is checked against the manifest (size, sha256, then dtypes and
    shapes with :func:`verify_artifacts`) before the folder appears; a failed download leaves nothing behind. A local
    copy with the same manifest is reused; a different local folder of that name is never replaced (remove it first).

    >>> import tempfile
    >>> fetch_artifacts("file:///nonexistent/artifacts/full", root=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    serpent.artifacts.ArtifactError: no artifact folder at file:///nonexistent/artifacts/full (...): ...
    """
    base = url.rstrip("/")
    staging = artifacts_dir(root) / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    tmp_manifest, tmp = staging / f"manifest-{os.getpid()}.json", None
    try:
        try:
            _download(f"{base}/manifest.json", tmp_manifest, limit=1 << 24, timeout=timeout)
        except ArtifactError as e:
            raise ArtifactError(f"no artifact folder at {base} ({e}): check the address and your connection; "
                                f"without artifacts, use a preset you can compute (course_run('tiny'))") from None
        try:
            manifest = json.loads(tmp_manifest.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"{base}/manifest.json is not a JSON manifest; is {base} an artifact folder?") from None
        files = {_safe_relpath(rel): info for rel, info in _check_manifest(manifest, f"{base}/manifest.json").items()}
        name = _safe_relpath(name or str(manifest.get("name") or base.rsplit("/", 1)[-1]))
        dest = staging.parent / name
        if (dest / "manifest.json").is_file():
            if (dest / "manifest.json").read_bytes() != tmp_manifest.read_bytes():
                raise ArtifactError(f"{dest} already holds other artifacts than {base}; remove or rename it to "
                                    f"fetch these")
            verify_artifacts(dest)
            return dest
        total = sum(int(info.get("bytes", 0)) for info in files.values())
        tmp = staging / name
        shutil.rmtree(tmp, ignore_errors=True)
        from tqdm.auto import tqdm
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"fetching {name}", disable=not progress) as bar:
            for rel, info in files.items():
                size = int(info.get("bytes", -1))
                digest = _download(f"{base}/{rel}", tmp / rel, limit=size, timeout=timeout, bar=bar)
                if (tmp / rel).stat().st_size != size or digest != info.get("sha256"):
                    raise ArtifactError(f"{base}/{rel} does not match its size and sha256 in the manifest; the "
                                        f"published folder is damaged or changed while downloading: try again")
        os.replace(tmp_manifest, tmp / "manifest.json")
        verify_artifacts(tmp)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp_manifest.unlink(missing_ok=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()

