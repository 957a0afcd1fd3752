"""The pipeline: corpus -> tokens -> checkpoints -> induction -> LLC -> susceptibilities -> serpent.

Each stage reads the run directory, writes its outputs there, and records the settings it ran with, so running the
pipeline again skips what is already current and continues what was interrupted. ``run_pipeline`` is what
``python -m serpent run`` calls; notebooks call the same stage functions.
"""

from __future__ import annotations

import time
from typing import Callable

from .config import RunConfig, config_hash
from .corpus import cache_dir
from .io import atomic_write_json
from .rundir import Run

__all__ = ["STAGES", "run_pipeline", "data_stage", "train_stage", "available_stages", "corpus_notes", "reading_note"]


def _data_key(cfg: RunConfig) -> str:
    return config_hash({"data": cfg.data.to_dict(), "d_vocab": cfg.model.d_vocab, "v": 1})


def data_stage(run: Run, *, device=None, progress: bool = True) -> dict:
    """Read the corpus, train (or fetch) the tokenizer, tokenize, and store the token streams in the run."""
    from .corpus import open_corpus
    from .tokenizer import build_tokenizer
    from .tokens import tokenize_corpus
    from .train import unigram_entropy

    cfg = run.config
    key = _data_key(cfg)
    if run.stage_is_current("data", key):
        return run.stage_summary("data")["summary"]
    t0 = time.time()
    dc = cfg.data
    corpus = open_corpus(dc.corpus, max_bytes=dc.max_bytes, test_fraction=dc.test_fraction)
    tokenizer = build_tokenizer(dc.tokenizer, corpus, cfg.model.d_vocab, dc.tokenizer_train_bytes, progress=progress)
    data = tokenize_corpus(corpus, tokenizer, cache_dir() / "tokens", progress=progress)
    tokenizer.save(run.path / "tokenizer")
    data.save(run.path / "data")
    fingerprint = corpus.fingerprint()
    atomic_write_json(run.path / "corpus.json", {**fingerprint, "skipped": dict(corpus.skipped)})
    run._cache.clear()
    summary = {"corpus": dc.corpus, "bytes": fingerprint.get("bytes"), "documents": fingerprint.get("files"),
               "train_tokens": int(len(data.train)), "test_tokens": int(len(data.test)),
               "vocab_size": tokenizer.vocab_size,
               "unigram_entropy": round(unigram_entropy(data.train, cfg.model.d_vocab), 4)}
    summary["epochs"] = round(training_tokens(cfg) / max(len(data.train), 1), 2)
    summary["skipped"] = {k: v for k, v in corpus.skipped.items() if v}
    if data.meta.get("carved"):
        summary["test_split"] = f"the last {data.meta['carved']['test_tokens']:,} tokens of {data.meta['carved']['document']}"
    run.mark_stage("data", key, time.time() - t0, summary)
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
        from .corpus import SKIP_ADVICE
        parts = "; ".join(f"{n} {SKIP_ADVICE.get(k, k)}" for k, n in skipped.items())
        lines.append(f"skipped {sum(skipped.values())} of {summary.get('documents', '?')} files: {parts}")
    if summary.get("test_split"):
        lines.append(f"held out for testing: {summary['test_split']} (the split is by document, and one split had none)")
    return lines


def train_stage(run: Run, *, device=None, progress: bool = True) -> dict:
    """Train the model (resuming when interrupted); skipped when the run already reached ``train.steps``."""
    from .train import train, train_key
    key = train_key(run)
    if run.stage_is_current("train", key) and run.config.train.steps in run.checkpoint_steps():
        return run.stage_summary("train")["summary"]
    t0 = time.time()
    summary = train(run, device=device, progress=progress)
    if summary["steps"] >= run.config.train.steps:
        run.mark_stage("train", key, time.time() - t0, summary)
    return summary


def _lazy(module: str, name: str) -> Callable:
    def call(run, **kw):
        import importlib
        return getattr(importlib.import_module(f"serpent.{module}"), name)(run, **kw)
    call.__name__ = name
    return call


STAGES: dict[str, Callable] = {
    "data": data_stage,
    "train": train_stage,
    "induction": _lazy("induction", "induction_stage"),
    "llc": _lazy("llc", "llc_stage"),
    "susceptibility": _lazy("susceptibility", "susceptibility_stage"),
    "serpent": _lazy("embedding", "serpent_stage"),
}


def available_stages() -> list[str]:
    """Stages whose module exists in this installation (in pipeline order)."""
    import importlib.util
    mods = {"induction": "induction", "llc": "llc", "susceptibility": "susceptibility", "serpent": "embedding"}
    return [s for s in STAGES if s not in mods or importlib.util.find_spec(f"serpent.{mods[s]}") is not None]


def run_pipeline(run: Run, stages: list[str] | None = None, *, device=None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Run ``stages`` (default: every available stage) in order; returns each stage's summary."""
    stages = stages or available_stages()
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from .errors import ConfigError
        raise ConfigError(f"stages: unknown {unknown}; allowed: {list(STAGES)}")
    out = {}
    for name in STAGES:
        if name not in stages:
            continue
        t0 = time.time()
        echo(f"[{name}] ...")
        out[name] = STAGES[name](run, device=device, progress=progress)
        echo(f"[{name}] done in {time.time() - t0:.1f} s")
        if name == "data":
            for line in corpus_notes(out[name]):
                echo(line)
            echo(reading_note(run.config, out[name]["train_tokens"]))
    return out
