"""Shared fixtures: offline hub, a fixed small thread count, tiny configs and a tiny run directory."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from serpent.config import ModelConfig, get_preset  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def micro_model_cfg() -> ModelConfig:
    """A 2-layer, 8-head attention-only model small enough for unit tests."""
    return ModelConfig(n_layers=2, n_heads=8, d_model=32, d_head=4, n_ctx=32, d_vocab=300)


@pytest.fixture
def micro_run_config(tmp_path):
    """A run config that trains in a few seconds on a ``files:`` corpus written to tmp_path."""
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    import random
    rng = random.Random(0)
    words = ["def", "return", "self", "import", "class", "value", "print", "for", "in", "range", "if", "else"]
    for i in range(40):
        lines = []
        for j in range(60):
            indent = "    " * rng.randint(0, 3)
            lines.append(indent + " ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) + f"({j})")
        (corpus_dir / f"doc{i}.py").write_text("\n".join(lines) + "\n")
    return get_preset("tiny").with_overrides(
        model={"d_model": 32, "d_head": 4, "n_ctx": 32, "d_vocab": 300},
        data={"corpus": f"files:{corpus_dir}/*.py", "max_bytes": None, "tokenizer_train_bytes": 200_000,
              "test_fraction": 0.1},
        train={"steps": 30, "batch_size": 4, "log_checkpoints": 3, "linear_checkpoints": 3, "eval_every": 10,
               "eval_batches": 1, "warmup_steps": 5},
        llc={"burnin": 0},   # tiny's burn-in of 80 steps would dominate these few-draw tests
    )


@pytest.fixture
def one_thread():
    """For tiny models: one thread avoids OpenMP spin-waiting on a busy 2-core machine (10x slower there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
