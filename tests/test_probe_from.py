"""Seeds made from different corpora compared token by token: another run's tokenizer (``data.tokenizer=file:...``)
and its probe windows (``susceptibility.probe_from``)."""

import os
import shlex
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from serpent.config import DataConfig, SusceptibilityConfig, get_preset
from serpent.errors import ConfigError, SerpentError
from serpent.stages.susceptibility import ProbeWindows, check_probe, read_probe
from serpent.susceptibility import SusceptibilityResult
from serpent.tokenizer import build_tokenizer, train_bpe

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Token streams cached in the test's folder, not in the user's ~/.cache/serpent."""
    monkeypatch.setenv("SERPENT_CACHE", str(tmp_path / "cache"))


def _micro(cfg, corpus_glob=None, **sections):
    """The micro run config with 2 x 2 heads and a 3 x 16-token probe sampled with 4 draws at 2 checkpoints."""
    from serpent.config import SamplerConfig
    cfg = cfg.with_overrides(
        model={"n_heads": 2},
        susceptibility={"sampler": SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=4,
                                                 batch_size=4, checkpoints=2),
                        "probe_sequences": 3, "probe_length": 16})
    if corpus_glob:
        cfg = cfg.with_overrides(data={"corpus": corpus_glob})
    return cfg.with_overrides(**sections) if sections else cfg


def _subset(cfg) -> str:
    """A smaller corpus than ``cfg``'s (its files doc1*.py): another held-out split, another BPE."""
    return cfg.data.corpus.replace("/*.py", "/doc1*.py")


def test_a_config_takes_a_tokenizer_folder_and_a_probe_source():
    assert DataConfig(tokenizer="file:runs/a/tokenizer").tokenizer == "file:runs/a/tokenizer"
    for bad in ("file:", "file:  ", "hf:", "bpe2", "./tokenizer"):
        with pytest.raises(ConfigError, match=r"data\.tokenizer.*'file:<tokenizer folder>'"):
            DataConfig(tokenizer=bad)
    assert SusceptibilityConfig().probe_from is None
    assert SusceptibilityConfig(probe_from="artifacts/cpu").probe_from == "artifacts/cpu"
    for bad in ("", "  ", 3):
        with pytest.raises(ConfigError, match=r"susceptibility\.probe_from"):
            SusceptibilityConfig(probe_from=bad)


def test_a_run_reads_another_runs_tokenizer_from_a_folder(tmp_path, micro_run_config, monkeypatch):
    """The same token ids for the same text from a smaller corpus (whose own BPE differs); the path is read from the
    current directory and recorded as given; a wrong vocabulary size, a missing or damaged folder are refused."""
    from serpent.rundir import Run
    from serpent.stages import data_stage

    monkeypatch.chdir(tmp_path)
    a = Run.create("a", micro_run_config)
    data_stage(a, progress=False)
    own = Run.create("own", micro_run_config.with_overrides(data={"corpus": _subset(micro_run_config)}))
    data_stage(own, progress=False)
    assert own.tokenizer().fingerprint() != a.tokenizer().fingerprint()       # a smaller corpus: another BPE

    cfg = micro_run_config.with_overrides(data={"corpus": _subset(micro_run_config), "tokenizer": "file:a/tokenizer"})
    b = Run.create("b", cfg)
    data_stage(b, progress=False)
    tok_a, tok_b = a.tokenizer(), Run.open("b").tokenizer()
    assert tok_b.fingerprint() == tok_a.fingerprint()
    text = "    def value(self):\n        return range(3)\n"
    assert tok_b.encode(text) == tok_a.encode(text) != own.tokenizer().encode(text)
    assert Run.open("b").config.data.tokenizer == "file:a/tokenizer"                 # recorded as given
    # its streams are its own corpus in a's ids: the first training document, token by token
    starts, names = b.documents("train")
    first = next(p for p in Path("corpus").glob("doc1*.py") if p.name == Path(names[0]).name).read_text()
    stream = np.asarray(b.tokens("train"))
    assert stream[0] == tok_a.bos_id and stream[1:starts[1]].tolist() == tok_a.encode(first)
    assert stream[1:starts[1]].tolist() != own.tokenizer().encode(first)

    with pytest.raises(ConfigError, match=r"has 300 tokens but model\.d_vocab is 301; set model\.d_vocab=300"):
        data_stage(Run.create("c", cfg.with_overrides(model={"d_vocab": 301})), progress=False)
    with pytest.raises(ConfigError, match=r"no tokenizer\.json in .*nowhere.*current directory"):
        data_stage(Run.create("d", cfg.with_overrides(data={"tokenizer": "file:nowhere"})), progress=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cannot read the tokenizer in .*broken.*copy it again"):
        build_tokenizer("file:broken", vocab_size=300)


def _frame(results, tokenizer):
    """A serpent frame without UMAP: each token's first two χ as its map coordinates."""
    from serpent.embedding import serpent_frame
    from serpent.patterns import label_results
    labels = label_results(results, tokenizer)
    emb = labels[["step", "point"]].copy()
    emb["x"], emb["y"] = labels["0:0"].to_numpy(), labels["0:1"].to_numpy()
    return serpent_frame(emb, labels)


def test_two_seeds_on_different_corpora_probe_the_same_tokens(tmp_path, micro_run_config, monkeypatch, one_thread):
    """Seed 1, made from a smaller corpus with seed 0's tokenizer and ``probe_from`` seed 0, probes seed 0's windows
    (its own held-out split would give others), so compare_serpents and training_seed_agreement take the two token by
    token; the stage is current while the windows are the same, and refuses a probe that does not fit its settings."""
    from serpent.anatomy import training_seed_agreement
    from serpent.embedding import compare_serpents
    from serpent.rundir import Run
    from serpent.stages import data_stage, susceptibility_stage, train_stage
    from serpent.stages.susceptibility import _drawn_probe, _stage_key, load_susceptibilities, step_path

    monkeypatch.chdir(tmp_path)
    cfg_a = _micro(micro_run_config)
    a = Run.create("seed0", cfg_a)
    for stage in (data_stage, train_stage, susceptibility_stage):
        stage(a, progress=False)
    cfg_b = _micro(micro_run_config, _subset(micro_run_config), model={"seed": 1}, train={"seed": 1},
                   data={"tokenizer": "file:seed0/tokenizer"}, susceptibility={"probe_from": "seed0"})
    b = Run.create("seed1", cfg_b)
    data_stage(b, progress=False)
    train_stage(b, progress=False)
    assert not torch.equal(_drawn_probe(b, 16).tokens, read_probe("seed0").tokens)   # its own split: other windows
    summary = susceptibility_stage(b, progress=False)
    ra, rb = load_susceptibilities(a), load_susceptibilities(b)
    assert sorted(rb) == summary["steps"] == sorted(ra)
    for s in ra:
        assert np.array_equal(rb[s].probe_tokens, ra[s].probe_tokens) and rb[s].probe_tokens.shape == (3, 16)
        assert np.array_equal(rb[s].seq_index, ra[s].seq_index) and np.array_equal(rb[s].position, ra[s].position)
        assert rb[s].doc_names == ra[s].doc_names and len(rb[s]) == 45
        assert rb[s].settings["probe_offsets"] == ra[s].settings["probe_offsets"]
        assert rb[s].settings["probe_from"] == "seed0" and "probe_from" not in ra[s].settings
        assert not np.allclose(rb[s].chi, ra[s].chi)                       # another model, sampled
    last = max(ra)
    table = compare_serpents(_frame(ra, a.tokenizer()), _frame(rb, b.tokenizer()))
    assert table["step"].tolist() == sorted(ra) and (table["tokens"] == 45).all()
    assert np.isfinite(table[["procrustes_r", "knn_overlap"]].to_numpy()).all()
    from serpent.patterns import label_result
    agree = training_seed_agreement(ra[last].chi, rb[last].chi, label_result(ra[last], a.tokenizer())["pattern"])
    assert np.isfinite([agree["pc1_corr"], agree["knn_overlap"], agree["head_match_median"]]).all()
    assert sorted(agree["head_match"].values()) == [0, 1, 2, 3]

    # the stage key: probe_from's windows, not its path, so the same windows named another way are current
    assert _stage_key(cfg_b) != _stage_key(cfg_b.with_overrides(susceptibility={"probe_from": None}))
    again = Run.create("seed1", cfg_b.with_overrides(susceptibility={"probe_from": str(step_path(a, last))}))
    mtime = step_path(b, last).stat().st_mtime_ns
    assert _stage_key(again.config) == _stage_key(cfg_b)
    susceptibility_stage(again, progress=False)
    assert step_path(b, last).stat().st_mtime_ns == mtime
    other = SusceptibilityResult.load(step_path(a, last))
    other.probe_tokens = other.probe_tokens[::-1].copy()
    other.save(tmp_path / "reordered.safetensors")
    assert _stage_key(cfg_b.with_overrides(susceptibility={"probe_from": "reordered.safetensors"})) != _stage_key(cfg_b)
    # a probe that does not fit the run's settings is refused before anything is sampled
    wrong = Run.create("seed1", cfg_b.with_overrides(susceptibility={"probe_sequences": 5}))
    with pytest.raises(ConfigError, match=r"probe_from=seed0: its probe has 3 windows of 16 tokens; "
                                          r"set susceptibility\.probe_sequences=3 \(now 5\)"):
        susceptibility_stage(wrong, progress=False)
    assert step_path(b, last).stat().st_mtime_ns == mtime


def _saved(folder: Path, tokens, tokenizer=None) -> Path:
    """A result with these probe windows in ``folder/susceptibility/`` (and ``folder/tokenizer`` if given)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    s, length = tokens.shape
    n = s * (length - 1)
    r = SusceptibilityResult(0, ["0:0"], np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32), tokens,
                             np.repeat(np.arange(s), length - 1), np.tile(np.arange(1, length), s),
                             [f"doc{i}.py" for i in range(s)], {"probe_offsets": list(range(s))})
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer")
    return r.save(folder / "susceptibility" / "step_0000000.safetensors")


def test_a_probe_that_this_run_cannot_read_the_same_way_is_refused(tmp_path, micro_model_cfg):
    with pytest.warns(UserWarning, match="padding"):                     # 300 tokens from a line of text
        tok = train_bpe(["for value in range(3):\n    print(value)\n"] * 30, 300)
        other = train_bpe(["class A:\n    def f(self):\n        return 1\n"] * 30, 300)
    cfg = get_preset("tiny").with_overrides(model=micro_model_cfg.to_dict(),
                                            susceptibility={"probe_sequences": 2, "probe_length": 8})
    ok = np.full((2, 8), 7)
    ok[:, 0] = tok.bos_id
    probe = read_probe(_saved(tmp_path / "a", ok, tok).parent.parent)
    assert probe.source.name == "step_0000000.safetensors" and probe.offsets.tolist() == [0, 1]
    assert probe.doc_names == ["doc0.py", "doc1.py"] and torch.equal(probe.tokens, torch.from_numpy(ok))
    check_probe(probe, cfg, tok)                                                  # fits: no error

    def refused(tokens, match, config=cfg, tokenizer=tok):
        with pytest.raises(ConfigError, match=match):
            check_probe(ProbeWindows(torch.as_tensor(tokens), np.zeros(len(tokens), np.int64), ["d"] * len(tokens),
                                     None), config, tokenizer)

    refused(np.where(np.arange(8) == 3, 300, ok), r"token ids up to 300, outside .* model\.d_vocab = 300")
    refused(np.full((2, 40), tok.bos_id), r"windows have 40 tokens, longer .* model\.n_ctx = 32")
    refused(ok[:1], r"set susceptibility\.probe_sequences=1 \(now 2\)")
    refused(ok[:, :6], r"set susceptibility\.probe_length=6 \(now 8\)")
    refused(ok, r"set susceptibility\.probe_length=8 \(now None: model\.n_ctx = 32\)",
            config=cfg.with_overrides(susceptibility={"probe_length": None}))
    bad_bos = ok.copy()
    bad_bos[:, 0] = 5
    refused(bad_bos, r"do not start with this run's BOS")
    # the source run's tokenizer is another: the same ids would be other text here
    with pytest.raises(ConfigError, match=r"another tokenizer than this run's.*data\.tokenizer=file:.*a/tokenizer"):
        check_probe(probe, cfg, other)

    with pytest.raises(SerpentError, match=r"no such file or folder .*current directory"):
        read_probe(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SerpentError, match="holds no susceptibility result"):
        read_probe(tmp_path / "empty")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SerpentError, match="damaged"):
        read_probe(tmp_path / "junk.safetensors")


def test_the_recommended_seed_command_probes_the_book_runs_tokens(monkeypatch):
    """bench/seeds.py's command for the next seeds parses, and its probe_from and tokenizer, read from the committed
    artifacts, give the book run's 12 x 128 windows (1,524 tokens) and tokenizer; the book run's own settings key is
    unchanged (its committed results stay current)."""
    from serpent.cli import _config_from_args, build_parser
    from serpent.stages.susceptibility import _stage_key

    doc = (ROOT / "bench" / "seeds.py").read_text().split('"""')[1]
    line = doc[doc.index("python -m serpent run"):].split("\n\n")[0].replace("\\\\\n", " ")
    argv = shlex.split(line)[3:]
    assert "--set" in argv and "susceptibility.probe_from=artifacts/cpu" in argv
    args = build_parser().parse_args([a.replace("=S", "=2").replace("seedS", "seed2") for a in argv])
    cfg = _config_from_args(args)
    assert (cfg.model.seed, cfg.train.seed, cfg.data.tokenizer, cfg.susceptibility.probe_from) == (
        2, 2, "file:artifacts/cpu/tokenizer", "artifacts/cpu")
    assert args.stages == ["data", "train", "induction", "susceptibility", "serpent"]

    monkeypatch.chdir(ROOT)
    probe = read_probe(cfg.susceptibility.probe_from)
    book = SusceptibilityResult.load(ROOT / "artifacts" / "cpu" / "susceptibility" / "step_0042000.safetensors")
    assert tuple(probe.tokens.shape) == (12, 128) and len(book) == 12 * 127 == 1524
    assert np.array_equal(probe.tokens.numpy(), book.probe_tokens) and probe.doc_names == book.doc_names
    assert probe.offsets.tolist() == book.settings["probe_offsets"]
    tok = build_tokenizer(cfg.data.tokenizer, vocab_size=cfg.model.d_vocab)
    check_probe(probe, cfg, tok)                                       # the cpu preset's settings fit the probe
    assert tok.fingerprint() == build_tokenizer("file:artifacts/cpu/tokenizer/tokenizer.json").fingerprint()
    assert _stage_key(get_preset("cpu")) == book.settings["key"] != _stage_key(cfg)
