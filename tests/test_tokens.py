"""Tests for serpent.tokens: cached tokenization, stream layout, deterministic batches and fixed windows."""

import json
import time

import numpy as np
import pytest
import torch

from serpent.corpus import open_corpus
from serpent.errors import ConfigError, CorpusError
from serpent.tokenizer import train_bpe
from serpent.tokens import TokenData, batch_at, document_of, fixed_windows, token_cache_key, tokenize_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "return", "self", "value", "(", ")", ":", "\n", "    ", "\t", "é", "🐍"]
    for i in range(40):
        text = " ".join(rng.choice(words, size=20 + 7 * i)) + f"\n# file {i}\r\n"
        (d / f"m{i:02d}.py").write_text(text)
    return open_corpus(f"files:{d}/*.py", test_fraction=0.2)


@pytest.fixture(scope="module")
def tok(corpus):
    with pytest.warns(UserWarning):  # a small corpus: the 400-token vocabulary is padded
        return train_bpe([d.text for d in corpus.documents("train")], 400)


@pytest.fixture(scope="module")
def data(corpus, tok, tmp_path_factory):
    return tokenize_corpus(corpus, tok, tmp_path_factory.mktemp("cache"), progress=False)


def test_stream_layout_and_round_trip(corpus, tok, data):
    by_name = {d.name: d.text for d in corpus.documents("all")}
    for split in ("train", "test"):
        stream = data.tokens(split)
        starts, names = data.documents(split)
        assert stream.dtype == np.uint16 and stream.ndim == 1 and starts.dtype == np.int64
        assert len(starts) == len(names) > 0
        assert starts[0] == 0 and np.all(np.diff(starts) > 1)
        assert np.all(stream[starts] == tok.bos_id)
        assert int((stream == tok.bos_id).sum()) == len(starts)  # BOS only as a separator
        ends = list(starts[1:]) + [len(stream)]
        for s, e, name in zip(starts, ends, names):
            assert tok.decode(stream[s + 1:e].tolist()) == by_name[name]
            assert corpus.split(name) == split
    assert sorted(data.train_docs[1] + data.test_docs[1]) == sorted(by_name)
    assert data.meta["tokens"]["train"] == len(data.train) and data.meta["documents"]["test"] == len(data.test_docs[1])


def test_cache_is_reused_and_keyed(corpus, tok, data, tmp_path, monkeypatch):
    first = tokenize_corpus(corpus, tok, tmp_path, progress=False)
    entries = [p.name for p in tmp_path.iterdir()]
    assert entries == [token_cache_key(corpus, tok)]  # one folder, no temporary leftovers
    assert first.path == tmp_path / entries[0]
    np.testing.assert_array_equal(first.train, data.train)

    def boom(*a, **k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(type(tok), "encode_batch", boom)
    t0 = time.perf_counter()
    second = tokenize_corpus(corpus, tok, tmp_path, progress=False)
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_array_equal(second.test, first.test)
    assert second.test_docs[1] == first.test_docs[1]
    monkeypatch.undo()
    other_tok = train_bpe([d.text for d in corpus.documents("train")], 300)
    assert token_cache_key(corpus, other_tok) != token_cache_key(corpus, tok)
    tokenize_corpus(corpus, other_tok, tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2


def test_save_load_matches_run_layout(data, tmp_path):
    data.save(tmp_path / "data")
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == ["meta.json", "test.npy", "test_docs.json", "train.npy", "train_docs.json"]
    docs = json.loads((tmp_path / "data" / "train_docs.json").read_text())
    assert docs["starts"] == data.train_docs[0].tolist() and docs["names"] == data.train_docs[1]
    back = TokenData.load(tmp_path / "data", mmap=False)
    np.testing.assert_array_equal(back.train, data.train)
    assert back.train.dtype == np.uint16
    (tmp_path / "data" / "test_docs.json").write_text("{")
    with pytest.raises(CorpusError, match="corrupt"):
        TokenData.load(tmp_path / "data")


def test_refuses_vocab_over_uint16(corpus, tmp_path):
    class Huge:
        vocab_size = 70_000
        bos_id = 0

    with pytest.raises(ConfigError, match="uint16"):
        tokenize_corpus(corpus, Huge(), tmp_path)


def test_single_document_corpus_holds_out_its_tail(tok, tmp_path):
    """One big file (as nanoGPT's input.txt): its head trains, its last 5 % (at least) is the test split."""
    text = "".join(f"line {i} of the only document\n" for i in range(400))
    (tmp_path / "one.txt").write_text(text)
    (tmp_path / "empty.txt").write_text("")
    c = open_corpus(f"files:{tmp_path}/*.txt", test_fraction=0.02)
    data = tokenize_corpus(c, tok, tmp_path / "cache", progress=False)
    assert data.train_docs[1] == ["one.txt"] and data.test_docs[1] == ["one.txt:tail"]
    whole = np.asarray(tok.encode(text), dtype=np.uint16)
    np.testing.assert_array_equal(np.concatenate([data.train[1:], data.test[1:]]), whole)  # nothing lost or doubled
    assert data.train[0] == data.test[0] == tok.bos_id
    assert 0.04 < (len(data.test) - 1) / len(whole) < 0.06
    assert data.meta["carved"]["document"] == "one.txt" and c.skipped["empty"] == 1
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "a.txt").write_text("hi")
    with pytest.raises(CorpusError, match="too short"):
        tokenize_corpus(open_corpus(f"files:{tmp_path}/short/*.txt"), tok, tmp_path / "cache", progress=False)


def test_batch_at_is_a_pure_function_of_seed_and_step():
    stream = np.arange(10, 5010, dtype=np.uint16)
    b = batch_at(stream, step=3, batch_size=16, n_ctx=32, seed=7, bos_id=1)
    assert b.shape == (16, 32) and b.dtype == torch.int64
    assert torch.all(b[:, 0] == 1)
    assert torch.all(b[:, 2:] - b[:, 1:-1] == 1)  # consecutive stream tokens
    assert torch.equal(b, batch_at(stream, 3, 16, 32, 7, 1))
    assert not torch.equal(b, batch_at(stream, 4, 16, 32, 7, 1))
    assert not torch.equal(b, batch_at(stream, 3, 16, 32, 8, 1))
    # every offset is reachable, including the very last window
    firsts = torch.cat([batch_at(stream[:40], s, 64, 32, 0, 1)[:, 1] for s in range(20)])
    assert set(firsts.tolist()) == set(range(10, 10 + 40 - 31 + 1))


def test_batch_at_edges():
    stream = np.arange(100, 131, dtype=np.uint16)  # exactly n_ctx - 1 tokens
    b = batch_at(stream, 0, 2, 32, 0, 0)
    assert torch.equal(b[0, 1:], torch.arange(100, 131))
    with pytest.raises(CorpusError, match="shorter than one window"):
        batch_at(stream[:-1], 0, 2, 32, 0, 0)
    with pytest.raises(ConfigError, match="step"):
        batch_at(stream, -1, 2, 32, 0, 0)
    with pytest.raises(ConfigError, match="n_ctx"):
        batch_at(stream, 0, 2, 1, 0, 0)


def test_batches_on_a_memory_mapped_stream(data, tok):
    assert isinstance(data.train, np.memmap)
    b = batch_at(data.train, 0, 4, 16, 0, tok.bos_id)
    assert b.shape == (4, 16) and int(b[:, 1:].max()) < tok.vocab_size


def test_fixed_windows_and_document_lookup(data, tok):
    stream = data.test
    starts, names = data.test_docs
    w, off = fixed_windows(stream, n=20, length=8, seed=3, bos_id=tok.bos_id)
    assert w.shape == (20, 8) and off.dtype == np.int64 and off.shape == (20,)
    assert len(set(off.tolist())) == 20  # distinct windows
    for row, o in zip(w, off):
        assert row[0] == tok.bos_id
        assert row[1:].tolist() == stream[o:o + 7].tolist()
    w2, off2 = fixed_windows(stream, n=20, length=8, seed=3, bos_id=tok.bos_id)
    assert torch.equal(w, w2) and np.array_equal(off, off2)
    assert not np.array_equal(off, fixed_windows(stream, n=20, length=8, seed=4, bos_id=tok.bos_id)[1])
    docs = document_of(starts, off)
    ends = np.append(starts[1:], len(stream))
    assert np.all((starts[docs] <= off) & (off < ends[docs]))
    with pytest.raises(CorpusError, match="shorter than one window"):
        fixed_windows(stream[:5], n=2, length=8, seed=0, bos_id=0)


def test_stdlib_end_to_end(tmp_path):
    c = open_corpus("stdlib", max_bytes=300_000)
    tok = train_bpe((d.text for d in c.documents("train")), 512)
    data = tokenize_corpus(c, tok, tmp_path, progress=False)
    total = len(data.train) + len(data.test)
    assert 300_000 / 6 < total < 300_000  # code compresses to roughly 3-4 bytes a token
    b = batch_at(data.train, 0, 8, 64, 0, tok.bos_id)
    assert b.shape == (8, 64) and int(b.max()) < 512
