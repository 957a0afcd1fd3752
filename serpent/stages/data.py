"""The ``data`` stage: read the corpus, train (or fetch) the tokenizer, tokenize, and store the token streams in
the run (``RUN/tokenizer/``, ``RUN/data/``, ``RUN/corpus.json``); and the notes it prints about the corpus.
"""

from __future__ import annotations

from ..config import RunConfig, config_hash
from ..corpus import cache_dir
from ..io import atomic_write_json
from ..outputs import CORPUS, TOKENIZER
from ..rundir import Run
from .stage import Stage

__all__ = ["data_stage", "training_tokens", "reading_note", "corpus_notes", "MANY_EPOCHS"]


def _data_key(cfg: RunConfig) -> str:
    return config_hash({"data": cfg.data.to_dict(), "d_vocab": cfg.model.d_vocab, "v": 1})


def data_stage(run: Run, *, device=None, progress: bool = True) -> dict:
    """Read the corpus, train (or fetch) the tokenizer, tokenize, and store the token streams in the run."""
    from ..corpus import open_corpus
    from ..tokenizer import build_tokenizer
    from ..tokens import tokenize_corpus
    from ..train import unigram_entropy

    cfg = run.config
    stage = Stage(run, "data")
    key = _data_key(cfg)
    if (done := stage.current(key)) is not None:
        return done
    dc = cfg.data
    corpus = open_corpus(dc.corpus, max_bytes=dc.max_bytes, test_fraction=dc.test_fraction)
    tokenizer = build_tokenizer(dc.tokenizer, corpus, cfg.model.d_vocab, dc.tokenizer_train_bytes, progress=progress)
    data = tokenize_corpus(corpus, tokenizer, cache_dir() / "tokens", progress=progress)
    tokenizer.save(TOKENIZER.file(run))
    data.save(run.path / "data")
    fingerprint = corpus.fingerprint()
    atomic_write_json(CORPUS.file(run), {**fingerprint, "skipped": dict(corpus.skipped)})
    run.forget_cached()        # the tokenizer and token streams were rewritten
    summary = {"corpus": dc.corpus, "bytes": fingerprint.get("bytes"), "documents": fingerprint.get("files"),
               "train_tokens": int(len(data.train)), "test_tokens": int(len(data.test)),
               "vocab_size": tokenizer.vocab_size,
               "unigram_entropy": round(unigram_entropy(data.train, cfg.model.d_vocab), 4)}
    summary["epochs"] = round(training_tokens(cfg) / max(len(data.train), 1), 2)
    summary["skipped"] = {k: v for k, v in corpus.skipped.items() if v}
    if data.meta.get("carved"):
        summary["test_split"] = f"the last {data.meta['carved']['test_tokens']:,} tokens of {data.meta['carved']['document']}"
    stage.done(key, summary=summary)
    return summary


#: More passes over the training tokens than this and a run mostly memorises its sample.
MANY_EPOCHS = 3.0


def training_tokens(cfg: RunConfig) -> int:
    """Tokens one training run reads: steps x batch x context."""
    return cfg.train.steps * cfg.train.batch_size * cfg.model.n_ctx


def reading_note(cfg: RunConfig, train_tokens: int) -> str:
    """One line on how often training will read the corpus sample, with the fix when it is many times.

    >>> from serpent.config import get_preset
    >>> reading_note(get_preset("cpu"), 91_000_000)
    'training reads 86.0 M tokens: 0.95 passes over the 91.0 M training tokens'
    >>> reading_note(get_preset("tiny"), 100_000).startswith("warning: training reads 2.5 M tokens: 24.58 passes")
    True
    """
    budget = training_tokens(cfg)
    epochs = budget / max(train_tokens, 1)
    line = f"training reads {budget / 1e6:.1f} M tokens: {epochs:.2f} passes over the {train_tokens / 1e6:.1f} M training tokens"
    if epochs <= MANY_EPOCHS:
        return line
    need = int(cfg.data.max_bytes * epochs / MANY_EPOCHS) if cfg.data.max_bytes else None
    fix = (f"raise data.max_bytes (now {cfg.data.max_bytes:,}) to about {need:,} if the corpus has that much, "
           if need else "use a larger corpus, ")
    return (f"warning: {line}; the model will memorise much of this sample, and the later checkpoints show "
            f"memorisation rather than the stages of learning text. {fix}or lower train.steps (now "
            f"{cfg.train.steps:,})")


def corpus_notes(summary: dict) -> list[str]:
    """Lines telling the user what the data stage left out and how the test split was made.

    >>> corpus_notes({"documents": 5, "skipped": {"non_utf8": 2}})
    ['skipped 2 of 5 files: 2 not UTF-8: convert them, e.g. iconv -f latin1 -t utf-8 FILE > FILE.txt']
    >>> corpus_notes({"documents": 1, "test_split": "the last 90 tokens of a.txt"})
    ['held out for testing: the last 90 tokens of a.txt (the split is by document, and one split had none)']
    """
    lines = []
    skipped = summary.get("skipped") or {}
    if skipped:
        from ..corpus import SKIP_ADVICE
        parts = "; ".join(f"{n} {SKIP_ADVICE.get(k, k)}" for k, n in skipped.items())
        lines.append(f"skipped {sum(skipped.values())} of {summary.get('documents', '?')} files: {parts}")
    if summary.get("test_split"):
        lines.append(f"held out for testing: {summary['test_split']} (the split is by document, and one split had none)")
    return lines
