"""Corpora shaped like users' own text, each through ``python -m serpent run`` end to end (issue: "Your own text").

Each case writes a small folder of files, runs every stage with micro settings, and checks that the run reaches an
explorer page and says what it did with the files, or stops before training with one line saying what to do.
The CLI runs in this process (``serpent.cli.main``, what ``python -m serpent`` calls) so the cases share one
import and one UMAP compilation; ``test_cli_subprocess_on_crlf_text`` runs the real command once.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serpent.cli import main

ROOT = Path(__file__).parents[1]

_EN = ("the", "river", "ran", "under", "a", "bridge", "and", "into", "old", "town", "where", "people", "sold", "bread",
       "fish", "every", "morning", "before", "light")
_RU = ("река", "текла", "под", "мостом", "и", "в", "старый", "город", "где", "люди", "продавали", "хлеб", "рыбу",
       "каждое", "утро", "до", "рассвета")


def _prose(words, n_lines, seed, newline="\n"):
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 11)))
        lines.append(sentence[0].upper() + sentence[1:] + (f", {i}." if i % 7 == 0 else "."))
    return newline.join(lines) + newline


def _code(n_lines, seed, newline="\n"):
    rng = random.Random(seed)
    names = ("value", "total", "count", "item", "result")
    lines = []
    for i in range(n_lines):
        a, b = rng.choice(names), rng.choice(names)
        lines.append("    " * rng.randint(0, 2) + rng.choice([f"{a} = {b} + {i}", f"if {a} > {b}:", f"print({a})",
                                                             f"def f_{a}({b}):", f"return [{a}, {b}]"]))
    return newline.join(lines) + newline


def _write(folder: Path, files: dict) -> str:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return f"files:{folder}/*"


def _micro_config(tmp_path, corpus: str) -> Path:
    from serpent.config import get_preset
    cfg = get_preset("tiny").with_overrides(
        model={"d_model": 32, "d_head": 4, "n_ctx": 32, "d_vocab": 300},
        data={"corpus": corpus, "max_bytes": None, "tokenizer_train_bytes": 200_000, "test_fraction": 0.1},
        train={"steps": 30, "batch_size": 8, "log_checkpoints": 3, "linear_checkpoints": 2, "eval_every": 10,
               "eval_batches": 1, "warmup_steps": 5},
        llc={"sampler.checkpoints": 2, "sampler.chains": 1, "sampler.draws": 4, "sampler.burnin": 0,
             "sampler.batch_size": 2},
        susceptibility={"probe_sequences": 2, "probe_length": 32, "sampler.chains": 1, "sampler.draws": 4,
                        "sampler.batch_size": 2, "sampler.checkpoints": 2},
        embedding={"n_neighbors": 5})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def _run(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setenv("SERPENT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = main(["run", "--config", str(_micro_config(tmp_path, corpus)), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, out


def _assert_explorer(out: Path, stdout: str):
    page = out / "explorer.html"
    assert page.is_file() and page.stat().st_size > 10_000, stdout[-2000:]
    assert "explorer page:" in stdout
    frame = pd.read_parquet(out / "serpent" / "embedding.parquet")
    assert len(frame) > 0 and frame["pattern"].notna().all()
    return frame


CASES = {
    # a small corpus: training reads it many times over, and the run says so before training
    "small": lambda: {"a.txt": _prose(_EN, 25, 0), "b.txt": _prose(_EN, 25, 1), "c.txt": _prose(_EN, 25, 2)},
    # one big file and many empty ones: the empties are counted, the big file's tail becomes the test split
    "one_big_file": lambda: {"novel.txt": _prose(_EN, 1500, 3), **{f"empty{i}.txt": "" for i in range(12)},
                             "blank.txt": "  \n\n\t\n"},
    # mixed encodings: Latin-1 files are skipped, counted and named with the fix
    "latin1_mixed": lambda: {**{f"utf8_{i}.txt": _prose(_EN, 60, 10 + i) for i in range(12)},
                             **{f"latin_{i}.txt": ("Caf\xe9 cr\xe8me, na\xefve r\xe9sum\xe9.\n" * 40).encode("latin-1")
                                for i in range(4)}},
    # a language other than English, in Cyrillic: multi-byte UTF-8 through the byte-level tokenizer and the patterns
    "russian": lambda: {f"глава_{i}.txt": _prose(_RU, 80, 20 + i) for i in range(10)},
    # Windows line endings
    "crlf": lambda: {f"module_{i}.py": _code(120, 30 + i, newline="\r\n") for i in range(10)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_shaped_corpus_reaches_the_explorer(case, tmp_path, capsys, monkeypatch, one_thread):
    corpus = _write(tmp_path / "text", CASES[case]())
    rc, stdout, stderr, out = _run(tmp_path, corpus, capsys, monkeypatch)
    assert rc == 0, stderr[-3000:] + stdout[-3000:]
    frame = _assert_explorer(out, stdout)
    data = json.loads((out / "stages.json").read_text())["data"]["summary"]
    if case == "small":
        assert data["epochs"] > 3
        assert "warning: training reads" in stdout and "memorise" in stdout
    if case == "one_big_file":
        assert data["skipped"] == {"empty": 13}
        assert "skipped 13 of 14 files: 13 empty" in stdout
        assert "held out for testing: the last" in stdout and "novel.txt" in stdout
        docs = json.loads((out / "data" / "test_docs.json").read_text())
        assert docs["names"] == ["novel.txt:tail"]
    if case == "latin1_mixed":
        assert data["skipped"] == {"non_utf8": 4}
        assert "skipped 4 of 16 files: 4 not UTF-8" in stdout and "iconv" in stdout
    if case == "russian":
        texts = "".join(frame["token"].astype(str)) if "token" in frame else ""
        assert any("\u0400" <= ch <= "\u04ff" for ch in texts), "no Cyrillic token text reached the serpent frame"
        assert {"word start", "word part"} & set(frame["pattern"])
    if case == "crlf":
        assert "formatting" in set(frame["pattern"])


def test_a_corpus_with_no_utf8_text_stops_before_training(tmp_path, capsys, monkeypatch):
    corpus = _write(tmp_path / "text", {f"latin_{i}.txt": "na\xefve caf\xe9\n".encode("latin-1") * 50
                                        for i in range(3)})
    rc, stdout, stderr, out = _run(tmp_path, corpus, capsys, monkeypatch)
    assert rc == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "non_utf8" in lines[0] and "iconv" in lines[0]
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_cli_subprocess_on_crlf_text(tmp_path):
    """The real command, once: `python -m serpent run --stages data train` on Windows line endings."""
    corpus = _write(tmp_path / "text", {f"m{i}.py": _code(80, i, newline="\r\n") for i in range(6)})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "SERPENT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "serpent", "run", "--config", str(_micro_config(tmp_path, corpus)),
                           "--out", str(tmp_path / "run"), "--quiet", "--stages", "data", "train"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train: 30 steps" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
