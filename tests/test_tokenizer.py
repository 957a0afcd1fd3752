"""Tests for serpent.tokenizer: byte-level BPE training, exact vocab size, round trips, files and hub formats."""

import json
import time
import warnings

import pytest

from serpent.corpus import open_corpus
from serpent.errors import ConfigError, CorpusError
from serpent.tokenizer import BOS_TOKEN, Tokenizer, build_tokenizer, train_bpe

ROUND_TRIP = [
    "def f(x):\n\treturn x  # tab-indented\n",
    "class A:\r\n    pass\r\n",
    "naïve café Ünïcödé — “quotes” ∑ λ",
    "emoji 🐍🌈 and 中文 and ZWJ 👩‍💻\n",
    "   leading spaces\n\n\n\ttrailing\t \n",
    "a literal <|endoftext|> inside text",
    "",
    "\x01\x7f control bytes \u00a0 nbsp",
]


@pytest.fixture(scope="module")
def texts():
    c = open_corpus("stdlib", max_bytes=400_000)
    return [d.text for d in c.documents("train")]


@pytest.fixture(scope="module")
def tok(texts):
    return train_bpe(texts, 1000)


def test_exact_vocab_size_and_bos(tok):
    assert tok.vocab_size == 1000
    assert tok.token_str(tok.bos_id) == BOS_TOKEN
    strings = tok.vocab()
    assert len(set(strings)) == 1000
    assert not any(s.startswith("<|pad_") for s in strings)  # enough text: nothing padded


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_bos_never_comes_from_text(tok):
    ids = tok.encode("x <|endoftext|> y")
    assert tok.bos_id not in ids
    assert tok.decode([tok.bos_id] + ids) == "<|endoftext|>x <|endoftext|> y"


def test_gpt2_style_token_strings(tok):
    assert [tok.token_str(i) for i in tok.encode("\n")] == ["Ċ"]
    assert [tok.token_str(i) for i in tok.encode("\t")] == ["ĉ"]
    assert tok.token_str(tok.encode(" return")[0]).startswith("Ġ")
    assert "Ġ" * 4 in " ".join(tok.vocab()) or "ĠĠĠ" in tok.vocab()  # indentation runs are learned from code


def test_encode_batch_matches_encode(tok):
    batch = tok.encode_batch(ROUND_TRIP)
    assert batch == [tok.encode(t) for t in ROUND_TRIP]


def test_small_text_pads_with_warning_or_errors():
    with pytest.warns(UserWarning, match="too small"):
        t = train_bpe(["hello world, hello code\n"] * 5, 400)
    assert t.vocab_size == 400
    pads = [s for s in t.vocab() if s.startswith("<|pad_")]
    assert pads and len(pads) == 400 - len([s for s in t.vocab() if not s.startswith("<|pad_")])
    pad_ids = {i for i, s in enumerate(t.vocab()) if s.startswith("<|pad_")}
    assert not pad_ids & set(t.encode("hello <|pad_0|> world"))
    assert t.decode(t.encode("hello <|pad_0|> world")) == "hello <|pad_0|> world"
    with pytest.raises(CorpusError, match="too small"):
        train_bpe(["hello world\n"], 400, pad=False)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="vocab_size"):
        train_bpe(["abc"], 100)
    with pytest.raises(CorpusError, match="no text"):
        train_bpe([], 300)
    t = train_bpe(["some text here\n"] * 50, 260)
    with pytest.raises(ConfigError, match="out of range"):
        t.decode([260])
    with pytest.raises(ConfigError, match="out of range"):
        t.token_str(10_000)


def test_save_load_and_fingerprint(tok, texts, tmp_path):
    path = tok.save(tmp_path / "tk")
    assert path.name == "tokenizer.json" and path.exists()
    assert not [p for p in (tmp_path / "tk").iterdir() if p.name != "tokenizer.json"]
    back = Tokenizer.load(tmp_path / "tk")
    assert back.fingerprint() == tok.fingerprint()
    assert back.bos_id == tok.bos_id and back.vocab_size == tok.vocab_size
    for text in ROUND_TRIP:
        assert back.encode(text) == tok.encode(text)
    other = train_bpe(texts, 999)
    assert other.fingerprint() != tok.fingerprint()
    assert train_bpe(texts[:20], 500).fingerprint() == train_bpe(texts[:20], 500).fingerprint()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CorpusError, match="not a valid"):
        Tokenizer.load(tmp_path / "bad")
    with pytest.raises(CorpusError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing")


def test_from_files_gpt2_format(tok, tmp_path):
    d = tmp_path / "hub"
    d.mkdir()
    tok._tok.model.save(str(d))  # vocab.json + merges.txt, the layout of a GPT-2-style hub tokenizer
    assert sorted(p.name for p in d.iterdir()) == ["merges.txt", "vocab.json"]
    loaded = Tokenizer.from_files(d)
    assert loaded.vocab_size == tok.vocab_size and loaded.bos_id == tok.bos_id
    for text in ROUND_TRIP:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    assert loaded.bos_id not in loaded.encode("<|endoftext|>")
    # save_pretrained-style folder with a tokenizer.json also loads
    tok.save(tmp_path / "tj")
    assert Tokenizer.from_files(tmp_path / "tj").fingerprint() == tok.fingerprint()
    # from_hub on a local folder is from_files
    assert Tokenizer.from_hub(f"hf:{d}").encode("x = 1\n") == tok.encode("x = 1\n")


def test_from_files_without_endoftext_adds_it(tmp_path):
    vocab = {c: i for i, c in enumerate(["a", "b", "Ġ", "ab"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.warns(UserWarning, match="grows by one"):
        t = Tokenizer.from_files(tmp_path)
    assert t.vocab_size == 5 and t.bos_id == 4
    assert t.encode("ab") == [3]


def test_from_files_missing(tmp_path):
    with pytest.raises(CorpusError, match="neither tokenizer.json nor vocab.json"):
        Tokenizer.from_files(tmp_path)


def test_from_hub_offline_fails_fast(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(CorpusError, match="switched off"):
        Tokenizer.from_hub("hf:georgeyw/TinyStories-tokenizer-5k")
    assert time.perf_counter() - t0 < 10


def test_build_tokenizer(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i}.py").write_text("".join(f"def function_{i}_{j}(argument_{j}, other):\n    return "
                                                   f"argument_{j} * {i * j} + other.value{j}\n" for j in range(40)))
    c = open_corpus(f"files:{tmp_path}/*.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = build_tokenizer("bpe", c, 300, train_bytes=5000)
    assert t.vocab_size == 300
    d = tmp_path / "saved"
    t.save(d)
    with pytest.raises(ConfigError, match="d_vocab"):
        build_tokenizer(f"hf:{d}", vocab_size=5000)
    assert build_tokenizer(f"hf:{d}", vocab_size=300).fingerprint() == t.fingerprint()
    with pytest.raises(ConfigError, match="allowed"):
        build_tokenizer("sentencepiece", c, 300)
