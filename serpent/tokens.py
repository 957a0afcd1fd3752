"""Tokenized data: flat uint16 token streams with document offsets, cached on disk, and batches drawn from them.

A corpus is tokenized once into two flat streams, ``train`` and ``test``, in which every document is preceded by
the tokenizer's BOS (``<|endoftext|>``)::

    [BOS d0 d0 d0 ... BOS d1 d1 ... BOS d2 ...]      starts = [0, 4, 7, ...]  (index of each document's BOS)

Design:

* **Cache by content.** :func:`tokenize_corpus` stores its result under ``cache_dir/<key>/`` where ``key`` hashes
  the corpus fingerprint and the tokenizer fingerprint; the folder is built under a temporary name and moved into
  place with one ``os.replace``, so a second call (or another process) either finds the whole result or none of
  it. Loading is a memory map: instant, whatever the size.
* **Same layout as a run directory** (``{split}.npy``, ``{split}_docs.json`` with ``starts`` and ``names``), so
  :meth:`TokenData.save` writes exactly what :class:`serpent.rundir.Run` reads.
* **Batches are a pure function of (seed, step).** :func:`batch_at` draws random windows with
  ``np.random.default_rng([seed, step])``: an interrupted training run that resumes at step k sees exactly the
  batches it would have seen. Column 0 of every window is BOS, followed by ``n_ctx - 1`` consecutive stream tokens
  (windows may span a document boundary, as in TransformerLens' ``tokenize_and_concatenate``).
* :func:`fixed_windows` gives evaluation/probe windows and their stream offsets (find their documents with
  :func:`document_of`).

>>> stream = np.arange(1, 101, dtype=np.uint16)
>>> b = batch_at(stream, step=7, batch_size=4, n_ctx=8, seed=0, bos_id=0)
>>> b.shape, b.dtype, bool((b[:, 0] == 0).all()), bool((b[:, 2:] - b[:, 1:-1] == 1).all())
(torch.Size([4, 8]), torch.int64, True, True)
>>> bool((batch_at(stream, 7, 4, 8, 0, 0) == b).all())
True
>>> w, offsets = fixed_windows(stream, n=3, length=5, seed=1, bos_id=0)
>>> bool((w[:, 1] == torch.from_numpy(stream[offsets].astype("int64"))).all())
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import ConfigError, CorpusError

__all__ = ["TokenData", "tokenize_corpus", "batch_at", "fixed_windows", "document_of", "token_cache_key"]

_FORMAT = 1
_MAX_VOCAB = 65535
_SPLITS = ("train", "test")


@dataclass
class TokenData:
    """Token streams of both splits and their documents.

    ``train``/``test``: uint16 ``(n_tokens,)``; ``train_docs``/``test_docs``: ``(starts int64 (n_docs,), names)``
    with ``starts[i]`` the index of document i's BOS. ``meta``: fingerprints, counts and timings.
    """

    train: np.ndarray
    test: np.ndarray
    train_docs: tuple[np.ndarray, list[str]]
    test_docs: tuple[np.ndarray, list[str]]
    meta: dict = field(default_factory=dict)
    path: Optional[Path] = None

    def tokens(self, split: str) -> np.ndarray:
        """The stream of ``'train'`` or ``'test'``."""
        _check_split(split)
        return self.train if split == "train" else self.test

    def documents(self, split: str) -> tuple[np.ndarray, list[str]]:
        """``(starts, names)`` of ``'train'`` or ``'test'``."""
        _check_split(split)
        return self.train_docs if split == "train" else self.test_docs

    def save(self, dir: str | os.PathLike) -> Path:
        """Write ``{split}.npy``, ``{split}_docs.json`` and ``meta.json`` into ``dir``, each file atomically."""
        d = Path(dir)
        d.mkdir(parents=True, exist_ok=True)
        for split in _SPLITS:
            _atomic(d / f"{split}.npy", lambda f, s=split: np.save(f, np.ascontiguousarray(self.tokens(s))))
            starts, names = self.documents(split)
            docs = json.dumps({"starts": [int(x) for x in starts], "names": list(names)}).encode()
            _atomic(d / f"{split}_docs.json", lambda f, b=docs: f.write(b))
        meta = json.dumps(self.meta, indent=2, sort_keys=True, default=str).encode()
        _atomic(d / "meta.json", lambda f: f.write(meta))  # written last: its presence means "complete"
        return d

    @classmethod
    def load(cls, dir: str | os.PathLike, mmap: bool = True) -> "TokenData":
        """Load what :meth:`save` wrote (streams memory-mapped unless ``mmap=False``)."""
        d = Path(dir)
        try:
            streams = {s: np.load(d / f"{s}.npy", mmap_mode="r" if mmap else None) for s in _SPLITS}
            docs = {}
            for s in _SPLITS:
                j = json.loads((d / f"{s}_docs.json").read_text())
                docs[s] = (np.asarray(j["starts"], dtype=np.int64), list(j["names"]))
            meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        except (OSError, ValueError, KeyError) as e:
            raise CorpusError(f"token data in {d} is missing or corrupt ({e}); delete the folder and tokenize again") from e
        return cls(streams["train"], streams["test"], docs["train"], docs["test"], meta, d)

    def __repr__(self) -> str:
        return (f"TokenData(train={len(self.train):,} tokens / {len(self.train_docs[1])} docs, "
                f"test={len(self.test):,} tokens / {len(self.test_docs[1])} docs)")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ConfigError(f"split: got {split!r}; allowed: 'train', 'test'")


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def token_cache_key(corpus, tokenizer) -> str:
    """The cache key (16 hex digits) of a (corpus, tokenizer) pair: their fingerprints and the file format."""
    blob = json.dumps({"corpus": corpus.fingerprint(), "tokenizer": tokenizer.fingerprint(), "format": _FORMAT},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tokenize_corpus(corpus, tokenizer, cache_dir: str | os.PathLike, progress: bool = True,
                    chunk_bytes: int = 2_000_000) -> TokenData:
    """Tokenize every usable document of ``corpus`` into BOS-separated uint16 streams, cached under
    ``cache_dir/<key>/`` (a second call with the same corpus and tokenizer loads the cache instantly)."""
    if tokenizer.vocab_size > _MAX_VOCAB:
        raise ConfigError(f"tokenizer has {tokenizer.vocab_size} tokens; token streams are uint16, so at most "
                          f"{_MAX_VOCAB} are supported. Use a smaller vocabulary (model.d_vocab).")
    cache = Path(cache_dir)
    key = token_cache_key(corpus, tokenizer)
    final = cache / key
    if (final / "meta.json").exists():
        return TokenData.load(final)
    cache.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    bos = np.array([tokenizer.bos_id], dtype=np.uint16)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in _SPLITS}
    names: dict[str, list[str]] = {s: [] for s in _SPLITS}
    n_bytes = 0

    from tqdm.auto import tqdm
    bar = tqdm(total=corpus.n_bytes, unit="B", unit_scale=True, desc=f"tokenizing {corpus.spec}",
               disable=not progress)

    def flush(batch):
        nonlocal n_bytes
        if not batch:
            return
        ids_list = tokenizer.encode_batch([d.text for d in batch])
        for doc, ids in zip(batch, ids_list):
            split = corpus.split(doc.name)
            arr = np.asarray(ids, dtype=np.uint16)
            names[split].append(doc.name)
            parts[split].append(bos)
            parts[split].append(arr)
        b = sum(len(d.text.encode("utf-8", "surrogatepass")) for d in batch)
        n_bytes += b
        bar.update(b)

    batch, batch_bytes = [], 0
    try:
        for doc in corpus.documents("all"):
            batch.append(doc)
            batch_bytes += len(doc.text)
            if batch_bytes >= chunk_bytes:
                flush(batch)
                batch, batch_bytes = [], 0
        flush(batch)
    finally:
        bar.close()
    carved = _carve_missing_split(parts, names, corpus.test_fraction, corpus.spec)
    starts = {s: np.cumsum([0] + [len(a) for a in parts[s][:-1]])[::2].tolist() for s in _SPLITS}
    streams = {s: np.concatenate(parts[s]) for s in _SPLITS}
    seconds = time.perf_counter() - t0
    meta = {
        "key": key, "format": _FORMAT, "corpus": corpus.fingerprint(), "tokenizer": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "skipped": dict(corpus.skipped),
        "bytes_read": n_bytes, "seconds": round(seconds, 2),
        "tokens": {s: int(len(streams[s])) for s in _SPLITS},
        "documents": {s: len(names[s]) for s in _SPLITS},
        "carved": carved,
    }
    data = TokenData(streams["train"], streams["test"],
                     (np.asarray(starts["train"], dtype=np.int64), names["train"]),
                     (np.asarray(starts["test"], dtype=np.int64), names["test"]), meta)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{key}.tmp-"))
    try:
        data.save(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: use its copy
            if not (final / "meta.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TokenData.load(final)


#: The smallest share of a document held out when the whole corpus is one usable document (nanoGPT holds out 10 %).
MIN_CARVED_FRACTION = 0.05


def _carve_missing_split(parts: dict, names: dict, test_fraction: float, spec: str) -> Optional[dict]:
    """When every usable document fell into one split (a corpus of one big file, or one file beside empty and
    unreadable ones), split the largest document at a token: its head trains, its tail is held out as
    ``'<name>:tail'``. ``parts[split]`` alternates ``[BOS, tokens, BOS, tokens, ...]``; edited in place.
    Returns what was carved (for the meta), or None when both splits already have documents."""
    empty = [s for s in _SPLITS if not names[s]]
    if not empty:
        return None
    src = "test" if empty == ["train"] else "train"
    if len(empty) == 2:                   # (open_corpus already refuses a corpus with no usable document)
        raise CorpusError(f"corpus {spec!r} gave no usable document; point it at UTF-8 text files")
    sizes = [len(a) for a in parts[src][1::2]]
    i = int(np.argmax(sizes))
    arr, name = parts[src][2 * i + 1], names[src][i]
    fraction = min(max(test_fraction, MIN_CARVED_FRACTION), 0.5)
    n_tail = int(round(len(arr) * fraction))
    if n_tail < 1 or n_tail >= len(arr):
        raise CorpusError(f"corpus {spec!r} has one usable document ({name!r}, {len(arr)} tokens), too short to "
                          f"hold part of it out for testing; add more text")
    head, tail = arr[:-n_tail], arr[-n_tail:]
    bos = parts[src][2 * i]
    if src == "train":
        parts["train"][2 * i + 1] = head
        parts["test"], names["test"] = [bos, tail], [f"{name}:tail"]
    else:
        parts["test"][2 * i + 1] = tail
        names["test"][i] = f"{name}:tail"
        parts["train"], names["train"] = [bos, head], [name]
    return {"document": name, "test_fraction": fraction, "test_tokens": int(n_tail),
            "why": f"every usable document fell in the {src!r} split"}


def _check_stream(tokens: np.ndarray, need: int, what: str) -> None:
    if getattr(tokens, "ndim", 1) != 1:
        raise ConfigError(f"{what}: tokens must be a flat 1-D stream, got shape {tuple(tokens.shape)}")
    if len(tokens) < need:
        raise CorpusError(f"{what}: the token stream has {len(tokens):,} tokens, shorter than one window of {need:,}; "
                          f"use a larger corpus (max_bytes) or a shorter context")


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name}: got {value!r}; must be an integer >= {low}")


def _gather(tokens: np.ndarray, offsets: np.ndarray, width: int, bos_id: int) -> torch.Tensor:
    out = np.empty((len(offsets), width + 1), dtype=np.int64)
    out[:, 0] = bos_id
    for i, o in enumerate(offsets):  # row slices of a (memory-mapped) stream: contiguous reads
        out[i, 1:] = tokens[o:o + width]
    return torch.from_numpy(out)


def batch_at(tokens: np.ndarray, step: int, batch_size: int, n_ctx: int, seed: int, bos_id: int) -> torch.Tensor:
    """The training batch of ``step``: ``(batch_size, n_ctx)`` int64, column 0 = ``bos_id``, then ``n_ctx - 1``
    consecutive tokens from a random offset. A pure function of ``(seed, step)`` (and the stream)."""
    _check_int("step", step, 0)
    _check_int("seed", seed, 0)
    _check_int("batch_size", batch_size, 1)
    _check_int("n_ctx", n_ctx, 2)
    _check_stream(tokens, n_ctx - 1, "batch_at")
    rng = np.random.default_rng([int(seed), int(step)])
    offsets = rng.integers(0, len(tokens) - (n_ctx - 1) + 1, size=batch_size)
    return _gather(tokens, offsets, n_ctx - 1, bos_id)


def fixed_windows(tokens: np.ndarray, n: int, length: int, seed: int, bos_id: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` fixed evaluation/probe windows: ``(n, length)`` int64 (column 0 = ``bos_id``, then ``length - 1``
    stream tokens) and their stream offsets ``(n,)`` int64 (of column 1). Distinct offsets when the stream allows;
    the same ``seed`` gives the same windows."""
    _check_int("n", n, 1)
    _check_int("length", length, 2)
    _check_int("seed", seed, 0)
    _check_stream(tokens, length - 1, "fixed_windows")
    rng = np.random.default_rng([int(seed), 0, 0xF1CED])  # 3 words: never the seed of a batch_at step
    n_pos = len(tokens) - (length - 1) + 1
    offsets = rng.choice(n_pos, size=n, replace=n > n_pos).astype(np.int64)
    return _gather(tokens, offsets, length - 1, bos_id), offsets


def document_of(starts: np.ndarray, offsets) -> np.ndarray:
    """Index of the document each stream offset lies in (``starts`` as in :attr:`TokenData.train_docs`).

    >>> document_of(np.array([0, 4, 7]), [0, 3, 4, 9])
    array([0, 0, 1, 2])
    """
    return np.searchsorted(np.asarray(starts), np.asarray(offsets), side="right") - 1
