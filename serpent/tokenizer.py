"""Tokenizer: a GPT-2-style byte-level BPE (Hugging Face ``tokenizers``) with ``<|endoftext|>`` as BOS.

Token strings are the raw byte-level BPE strings: ``'Ġ'`` is a leading space, ``'Ċ'`` a newline, ``'ĉ'`` a tab, so
token patterns (spacing runs, word starts, word parts) can be read off :meth:`Tokenizer.token_str`. Every byte
sequence round-trips exactly: ``decode(encode(s)) == s`` for any text (tabs, CRLF, unicode, emoji).

Design decisions:

* **BOS only by id.** ``<|endoftext|>`` separates documents in the token streams. Text that happens to *contain* the
  string ``<|endoftext|>`` (tokenizer code in site-packages does) is encoded as ordinary bytes, so a document can
  never inject a separator.
* **Exact vocabulary size.** :func:`train_bpe` returns exactly ``vocab_size`` tokens (the model's ``d_vocab``): 256
  byte tokens, ``<|endoftext|>`` and the learned merges. If the text is too small to learn that many merges, the
  vocabulary is **padded** with never-produced special tokens ``<|pad_k|>`` and a :class:`UserWarning` names how
  many were learned (``pad=False`` raises :class:`~serpent.errors.CorpusError` instead).
* **Hub tokenizers are files.** :meth:`Tokenizer.from_hub` downloads ``vocab.json`` + ``merges.txt`` (or a
  ``tokenizer.json``) and hands them to :meth:`Tokenizer.from_files`, which is what the offline tests exercise.
* :meth:`Tokenizer.fingerprint` hashes the canonical JSON of the whole tokenizer, for cache keys.

>>> tok = train_bpe(["def f(x):\\n\\treturn x + 1\\n"] * 20 + ["print('hello world')\\n"] * 20, vocab_size=280)
>>> tok.vocab_size, tok.token_str(tok.bos_id)
(280, '<|endoftext|>')
>>> ids = tok.encode("def g(y):\\n\\treturn y\\n")
>>> tok.decode(ids)
'def g(y):\\n\\treturn y\\n'
>>> [tok.token_str(i) for i in tok.encode(" x\\n\\t")]
['Ġx', 'Ċ', 'ĉ']
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

from .errors import ConfigError, CorpusError

__all__ = ["Tokenizer", "train_bpe", "build_tokenizer", "BOS_TOKEN"]

BOS_TOKEN = "<|endoftext|>"


def _tokenizers():
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    return tokenizers, decoders, models, pre_tokenizers, trainers


class Tokenizer:
    """A byte-level BPE tokenizer with a BOS/document-separator token (wraps a ``tokenizers.Tokenizer``)."""

    def __init__(self, tok, bos_token: str = BOS_TOKEN):
        self._tok = tok
        self._tok.encode_special_tokens = True  # text containing "<|endoftext|>" stays text
        bos = tok.token_to_id(bos_token)
        if bos is None:
            raise CorpusError(f"the tokenizer has no {bos_token!r} token; train one with serpent.tokenizer.train_bpe "
                              f"or add the token to its vocabulary")
        self.bos_token = bos_token
        self.bos_id = int(bos)
        self._fingerprint: Optional[str] = None

    # -- encoding -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids (including ``<|endoftext|>`` and any padding tokens)."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS added)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts at once (parallel in Rust)."""
        texts = list(texts)
        fast = getattr(self._tok, "encode_batch_fast", None)
        encs = (fast or self._tok.encode_batch)(texts, add_special_tokens=False)
        return [e.ids for e in encs]

    def decode(self, ids) -> str:
        """The text of token ids (BOS decodes to ``<|endoftext|>``)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ConfigError(f"decode: token id(s) {bad[:5]} out of range [0, {self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_str(self, id: int) -> str:
        """The raw byte-level BPE string of one token (``'Ġ'`` = leading space, ``'Ċ'`` = newline, ``'ĉ'`` = tab)."""
        s = self._tok.id_to_token(int(id))
        if s is None:
            raise ConfigError(f"token_str: id {id} out of range [0, {self.vocab_size})")
        return s

    def vocab(self) -> list[str]:
        """All raw token strings, indexed by id."""
        return [self.token_str(i) for i in range(self.vocab_size)]

    # -- identity and files ----------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A content hash (16 hex digits) of the whole tokenizer: vocabulary, merges, special tokens, pipeline."""
        if self._fingerprint is None:
            blob = json.dumps(json.loads(self._tok.to_str()), sort_keys=True, ensure_ascii=False)
            self._fingerprint = hashlib.sha256((self.bos_token + "\0" + blob).encode()).hexdigest()[:16]
        return self._fingerprint

    def save(self, dir: str | os.PathLike) -> Path:
        """Write ``dir/tokenizer.json`` (atomically); return its path."""
        d = Path(dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "tokenizer.json"
        tmp = d / f".tokenizer.json.{os.getpid()}.tmp"
        tmp.write_text(self._tok.to_str(pretty=True), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, dir: str | os.PathLike) -> "Tokenizer":
        """Load a tokenizer written by :meth:`save` (``dir/tokenizer.json``; a path to the file also works)."""
        p = Path(dir)
        path = p if p.is_file() else p / "tokenizer.json"
        if not path.exists():
            raise CorpusError(f"no tokenizer at {path}; train one (serpent.tokenizer.train_bpe) or run the data stage")
        tokenizers = _tokenizers()[0]
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001  (the Rust side raises a bare Exception)
            raise CorpusError(f"{path} is not a valid tokenizer.json ({e}); delete it and train a new tokenizer") from e
        return cls(tok, _bos_of(tok))

    @classmethod
    def from_files(cls, dir: str | os.PathLike) -> "Tokenizer":
        """Load a tokenizer saved in the hub's format: ``tokenizer.json``, or GPT-2-style ``vocab.json`` +
        ``merges.txt`` (byte-level BPE; the BOS is ``<|endoftext|>``, or the ``bos_token`` of
        ``special_tokens_map.json``; a missing ``<|endoftext|>`` is added as one extra token, with a warning)."""
        d = Path(dir)
        if (d / "tokenizer.json").exists():
            return cls.load(d)
        vocab, merges = d / "vocab.json", d / "merges.txt"
        if not (vocab.exists() and merges.exists()):
            raise CorpusError(f"{d} holds neither tokenizer.json nor vocab.json + merges.txt; save the tokenizer there "
                              f"(e.g. `AutoTokenizer.save_pretrained(dir)` or Tokenizer.save)")
        tokenizers, decoders, models, pre_tokenizers, _ = _tokenizers()
        try:
            tok = tokenizers.Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as e:  # noqa: BLE001
            raise CorpusError(f"could not read {vocab} / {merges} as a byte-level BPE: {e}") from e
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        bos = BOS_TOKEN
        for meta in ("special_tokens_map.json", "tokenizer_config.json"):
            if (d / meta).exists():
                b = json.loads((d / meta).read_text(encoding="utf-8")).get("bos_token")
                if isinstance(b, dict):
                    b = b.get("content")
                if isinstance(b, str) and tok.token_to_id(b) is not None:
                    bos = b
                    break
        if tok.token_to_id(bos) is None:
            warnings.warn(f"{d}: vocabulary has no {BOS_TOKEN!r}; adding it as token {tok.get_vocab_size()} "
                          f"(vocabulary size grows by one)", UserWarning, stacklevel=2)
        tok.add_special_tokens([bos])  # marks an existing token special, or appends it
        return cls(tok, bos)

    @classmethod
    def from_hub(cls, repo: str) -> "Tokenizer":
        """Download a GPT-2-style tokenizer from the Hugging Face hub (e.g. ``hf:georgeyw/TinyStories-tokenizer-5k``,
        the paper's) and load it with :meth:`from_files`. Fails at once when the hub is switched off."""
        repo = repo[len("hf:"):] if repo.startswith("hf:") else repo
        if os.path.isdir(os.path.expanduser(repo)):
            return cls.from_files(os.path.expanduser(repo))
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise CorpusError("Tokenizer.from_hub needs the huggingface_hub package: pip install huggingface_hub") from e
        patterns = ["tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]
        try:
            d = snapshot_download(repo, allow_patterns=patterns)
        except Exception as e:  # noqa: BLE001  (offline, not found, network)
            from .corpus import _hub_offline
            why = ("the hub is switched off here (HF_HUB_OFFLINE is set) and the tokenizer is not in the local cache"
                   if _hub_offline() else f"{type(e).__name__}: {e}")
            raise CorpusError(f"could not get tokenizer {repo!r} from the Hugging Face hub: {why}. Use it where "
                              f"the hub is reachable, load a saved copy with Tokenizer.from_files(dir), or use "
                              f"data.tokenizer='bpe'.") from e
        return cls.from_files(d)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, fingerprint={self.fingerprint()!r})"


def _bos_of(tok) -> str:
    """The BOS of a loaded tokenizer.json: ``<|endoftext|>`` if present, else its first special token."""
    if tok.token_to_id(BOS_TOKEN) is not None:
        return BOS_TOKEN
    added = json.loads(tok.to_str()).get("added_tokens", [])
    special = [a["content"] for a in sorted(added, key=lambda a: a["id"]) if a.get("special")]
    if not special:
        raise CorpusError(f"the tokenizer has no {BOS_TOKEN!r} and no special token to use as BOS")
    return special[0]


def train_bpe(texts: Iterable[str], vocab_size: int, *, pad: bool = True) -> Tokenizer:
    """Train a byte-level BPE of exactly ``vocab_size`` tokens (256 bytes + ``<|endoftext|>`` + merges).

    If the texts hold too few distinct pairs to learn ``vocab_size - 257`` merges, the vocabulary is padded with
    unused special tokens and a UserWarning says so; with ``pad=False`` a CorpusError is raised instead.
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 258:
        raise ConfigError(f"vocab_size: got {vocab_size!r}; must be an integer >= 258 (256 bytes, "
                          f"{BOS_TOKEN} and at least one merge)")
    tokenizers, decoders, models, pre_tokenizers, trainers = _tokenizers()
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    n_texts = 0

    def counted():
        nonlocal n_texts
        for t in texts:
            n_texts += 1
            yield t

    tok.train_from_iterator(counted(), trainer)
    if n_texts == 0:
        raise CorpusError("train_bpe got no text; check the corpus")
    learned = tok.get_vocab_size(with_added_tokens=True)
    if learned < vocab_size:
        msg = (f"the training text was too small to learn {vocab_size} tokens: it gave {learned} "
               f"({learned - 257} merges)")
        if not pad:
            raise CorpusError(msg + "; use more text (max_bytes / tokenizer_train_bytes) or a smaller vocabulary")
        warnings.warn(msg + f"; padding with {vocab_size - learned} unused tokens <|pad_k|> so the vocabulary "
                      f"matches the model", UserWarning, stacklevel=2)
        tok.add_special_tokens([f"<|pad_{k}|>" for k in range(vocab_size - learned)])
    if tok.get_vocab_size(with_added_tokens=True) != vocab_size:  # pragma: no cover (tokenizers contract)
        raise CorpusError(f"BPE training gave {tok.get_vocab_size(with_added_tokens=True)} tokens, not {vocab_size}")
    return Tokenizer(tok)


def build_tokenizer(spec: str, corpus=None, vocab_size: Optional[int] = None,
                    train_bytes: Optional[int] = None, progress: bool = True) -> Tokenizer:
    """The tokenizer a ``DataConfig.tokenizer`` spec asks for.

    ``'bpe'``: train a byte-level BPE of ``vocab_size`` tokens on the corpus' *train* documents, in sample order,
    up to ``train_bytes`` bytes of text (all of them if None). ``'hf:<repo>'``: :meth:`Tokenizer.from_hub`;
    ``'file:<path>'``: :meth:`Tokenizer.load` of a folder written by :meth:`Tokenizer.save` (a relative path from the
    current directory), e.g. another run's ``RUN/tokenizer``. A loaded tokenizer's vocabulary size must equal
    ``vocab_size`` (if given).

    >>> import tempfile
    >>> tok = train_bpe(["def f(x):\\n\\treturn x + 1\\n"] * 20, vocab_size=268, pad=False)
    >>> folder = tok.save(tempfile.mkdtemp()).parent
    >>> build_tokenizer(f"file:{folder}", vocab_size=268).encode("return x") == tok.encode("return x")
    True
    >>> try:
    ...     build_tokenizer(f"file:{folder}", vocab_size=300)
    ... except ConfigError as e:
    ...     print(str(e).split("; ")[1])
    set model.d_vocab=268
    """
    if spec == "bpe":
        if corpus is None or vocab_size is None:
            raise ConfigError("build_tokenizer('bpe') needs a corpus and a vocab_size")

        def texts():
            used = 0
            for doc in corpus.documents("train"):
                yield doc.text
                used += len(doc.text.encode("utf-8", "surrogatepass"))
                if train_bytes is not None and used >= train_bytes:
                    break

        return train_bpe(texts(), vocab_size)
    if isinstance(spec, str) and spec.startswith(("hf:", "file:")):
        tok = Tokenizer.from_hub(spec) if spec.startswith("hf:") else _from_folder(spec)
        if vocab_size is not None and tok.vocab_size != vocab_size:
            raise ConfigError(f"tokenizer {spec} has {tok.vocab_size} tokens but model.d_vocab is {vocab_size}; "
                              f"set model.d_vocab={tok.vocab_size}")
        return tok
    raise ConfigError(f"tokenizer: got {spec!r}; allowed: 'bpe', 'hf:<repo>' or 'file:<tokenizer folder>'")


def _from_folder(spec: str) -> Tokenizer:
    """The tokenizer of a ``file:<path>`` spec (a folder written by :meth:`Tokenizer.save`, or its tokenizer.json)."""
    given = spec[len("file:"):]
    path = Path(given).expanduser()
    where = path.resolve()
    if not (path / "tokenizer.json").is_file() and not (path.is_file() and path.name == "tokenizer.json"):
        raise ConfigError(f"data.tokenizer={spec}: no tokenizer.json in {where} (a relative path is read from the "
                          f"current directory, {Path.cwd()}); point it to a folder written by Tokenizer.save, such "
                          f"as another run's RUN/tokenizer (e.g. file:artifacts/cpu/tokenizer), or use "
                          f"data.tokenizer=bpe")
    try:
        return Tokenizer.load(path)
    except CorpusError as e:
        raise ConfigError(f"data.tokenizer={spec}: cannot read the tokenizer in {where} ({str(e).split(';')[0]}); "
                          f"copy it again from the run it came from, or use data.tokenizer=bpe") from None
