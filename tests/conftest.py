"""Shared fixtures: offline hub, a fixed small thread count, tiny configs and a tiny run directory."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from serpent.config import ModelConfig, get_preset  # noqa: E402

# Two threads by default; SERPENT_THREADS (or OMP_NUM_THREADS) sets another count, so the suite can be run at 1 and at
# 2 threads to check that no test depends on it (issue 37).
_threads = os.environ.get("SERPENT_THREADS") or os.environ.get("OMP_NUM_THREADS")
torch.set_num_threads(int(_threads) if _threads else max(1, min(2, os.cpu_count() or 1)))


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
        llc={"sampler.burnin": 0},   # tiny's burn-in of 80 steps would dominate these few-draw tests
    )


@pytest.fixture
def one_thread():
    """For tiny models: one thread avoids OpenMP spin-waiting on a busy 2-core machine (10x slower there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_terminal_summary(terminalreporter):
    """With SERPENT_TOLERANCE_REPORT=1: every float32 comparison's observed difference against its tolerance."""
    import tolerances
    if tolerances.reporting() and tolerances._REPORT:
        terminalreporter.section("float32 tolerances: ratio, observed difference, tolerance (tests/tolerances.py)")
        for line in tolerances.report_lines():
            terminalreporter.write_line(line)


def _chromium_missing() -> bool:
    """Debian's chromium is not on PATH (or SERPENT_NO_BROWSER=1 asks to run as if it were not)."""
    import shutil
    if os.environ.get("SERPENT_NO_BROWSER", "") not in ("", "0"):
        return True
    return not (shutil.which("chromium") or shutil.which("chromium-browser"))


def pytest_collection_modifyitems(config, items):
    """Without chromium the browser tests (marked ``browser``) skip, naming the package to install; the rest run.

    Where the browser is required (CI, which installs it: ``CI=true``, or SERPENT_REQUIRE_BROWSER=1) they run and
    fail instead, so a missing browser there is never a silent skip."""
    required = os.environ.get("CI", "").lower() == "true" or os.environ.get("SERPENT_REQUIRE_BROWSER", "") == "1"
    if required or not _chromium_missing():
        return
    skip = pytest.mark.skip(reason="needs Debian's chromium package for the headless-browser checks: "
                                   "apt-get install -y chromium (other systems: any Chromium on PATH as `chromium`)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)
