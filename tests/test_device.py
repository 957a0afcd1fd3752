"""CPU threads: serpent bounds OpenMP's spinning on import, the thread count follows --threads / SERPENT_THREADS,
and a busy machine is named (two torch processes sharing 2 cores slowed each other down thirtyfold, measured)."""

import os
import subprocess
import sys

import pytest
import torch

from serpent.cli import build_parser
from serpent.device import busy_machine, configure_cpu_threads
from serpent.errors import ConfigError


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_thread_count_from_argument_or_environment(restore_threads, monkeypatch):
    notes = []
    assert configure_cpu_threads(1, echo=notes.append) == 1 == torch.get_num_threads()
    monkeypatch.setenv("SERPENT_THREADS", "2")
    assert configure_cpu_threads(echo=notes.append) == 2
    for bad in ("two", "0"):
        monkeypatch.setenv("SERPENT_THREADS", bad)
        with pytest.raises(ConfigError, match="thread"):
            configure_cpu_threads(echo=notes.append)
    assert build_parser().parse_args(["run", "--preset", "tiny", "--threads", "1"]).threads == 1


def test_a_busy_machine_is_named_with_the_fix():
    assert busy_machine(cores=2, load=0.4) is None
    msg = busy_machine(cores=2, load=1.8)
    assert "load 1.8 on 2 cores" in msg and "--threads 1" in msg and "SERPENT_THREADS=1" in msg
    assert busy_machine(cores=16, load=8.0) is None


@pytest.mark.parametrize("preset, expected", [(None, "10000"), ("250", "250")])
def test_importing_serpent_bounds_openmp_spinning(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset          # the user's own setting wins
    out = subprocess.run([sys.executable, "-c", "import serpent, os; print(os.environ['GOMP_SPINCOUNT'])"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == expected
