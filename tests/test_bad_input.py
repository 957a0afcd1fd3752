"""Issue 37 item 4: bad input that nothing had tried. Each is refused with one line that names what is wrong and what
to do, before a stage spends its compute, or resumes to the numbers an uninterrupted run gives.

* a truncated, renamed (pickle) or foreign checkpoint among those a stage analyses: refused before any is sampled;
* settings out of range that only the run's data can judge (a minibatch or a probe larger than the split);
* two commands writing one run directory at once: the second is refused (a killed holder leaves no lock);
* a kill during the susceptibility stage, then the same command: the numbers of an uninterrupted run, to the bit.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from serpent.checkpoints import save_checkpoint
from serpent.cli import main
from serpent.config import ModelConfig, SamplerConfig
from serpent.errors import CheckpointError, SerpentError
from serpent.rundir import Run
from serpent.stages import (data_stage, induction_stage, llc_stage, load_susceptibilities, susceptibility_stage,
                            train_stage)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained micro run (2 x 2 heads, 30 steps, 6 checkpoints) whose sampling stages take three of them."""
    from corpora import write_code_corpus
    from serpent.config import get_preset

    root = tmp_path_factory.mktemp("bad")
    corpus = write_code_corpus(root / "corpus", docs=40, lines=60, max_indent=3, words=(2, 8))
    sampler = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=4, batch_size=4, checkpoints=3)
    cfg = get_preset("tiny").with_overrides(
        model={"d_model": 32, "d_head": 4, "n_ctx": 32, "d_vocab": 300, "n_heads": 2},
        data={"corpus": f"files:{corpus}/*.py", "max_bytes": None, "tokenizer_train_bytes": 200_000,
              "test_fraction": 0.1},
        train={"steps": 30, "batch_size": 4, "log_checkpoints": 3, "linear_checkpoints": 3, "eval_every": 10,
               "eval_batches": 1, "warmup_steps": 5},
        llc={"sampler.burnin": 0, "sampler.chains": 2, "sampler.draws": 8, "sampler.batch_size": 4,
             "sampler.checkpoints": 3, "sampler.epsilon": 1e-3, "sampler.gamma": 100.0, "sampler.n_beta": 10.0},
        susceptibility={"sampler": sampler, "probe_sequences": 3, "probe_length": 16})
    run = Run.create(root / "run", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    return run


def _copy(run: Run, dest: Path) -> Run:
    shutil.copytree(run.path, dest)
    return Run.open(dest)


@pytest.fixture
def keep_threads():
    """The command line sets torch's thread count for the process; put it back for the tests that follow."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def _damage(path: Path, how: str, params: dict) -> None:
    if how == "truncated":                                   # a copy cut short (a full disk, a broken transfer)
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "pickle":                                    # torch.save's file renamed .safetensors
        torch.save({k: v.clone() for k, v in params.items()}, path)
    elif how == "foreign":                                   # a checkpoint of another model, copied in by mistake
        other = ModelConfig(n_layers=2, n_heads=4, d_model=32, d_head=8, n_ctx=32, d_vocab=300)
        from serpent.model import build_model, model_params
        save_checkpoint(path, model_params(build_model(other)), 30, other)


@pytest.mark.parametrize("how, says", [("truncated", "truncated or corrupt"), ("pickle", "not a safetensors file"),
                                       ("foreign", "different model config")])
def test_a_damaged_or_foreign_checkpoint_is_refused_before_any_is_analysed(trained, tmp_path, monkeypatch, capsys,
                                                                           keep_threads, how, says):
    """Before: `serpent llc` sampled every good checkpoint (a minute each at the full size) before it reached the
    bad one. Now every stage that reads checkpoints checks all of them from their headers first."""
    import serpent.stages.induction as induction
    import serpent.stages.llc as llc
    import serpent.susceptibility as science

    run = _copy(trained, tmp_path / "run")
    last = run.checkpoint_steps()[-1]                         # every stage analyses the last one, and reaches it last
    bad = run.checkpoint_path(last)
    _damage(bad, how, run.load_params(last))
    calls = []
    monkeypatch.setattr(llc, "estimate_llc", lambda *a, **k: calls.append("llc"))
    monkeypatch.setattr(science, "susceptibilities", lambda *a, **k: calls.append("susceptibility"))
    monkeypatch.setattr(induction, "induction_scores", lambda *a, **k: calls.append("induction"))
    for stage in (llc_stage, susceptibility_stage, induction_stage):
        with pytest.raises(CheckpointError, match=says) as e:
            stage(run, progress=False)
        message = str(e.value)
        assert str(bad) in message and "nothing was computed" in message and f"move the file out of" in message
    assert calls == []
    for command in ("llc", "susceptibilities", "induction"):   # the command line: one line, exit status 2
        assert main([command, str(run.path), "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert bad.name in line and says in line
    assert calls == []
    # leaving it out is what the line advises: the stage then runs on the others
    monkeypatch.undo()
    summary = llc_stage(run, steps=run.checkpoint_steps()[:2], charts=False, progress=False)
    assert summary["checkpoints"] == 2


def test_a_damaged_kept_result_is_refused_by_name_and_computed_again(trained, tmp_path):
    """A susceptibility file cut short (a partial copy; a full disk under the older non-atomic write) is refused with
    the file named where it is read (it used to be safetensors' traceback), and the stage computes it again."""
    from serpent.stages.susceptibility import step_path
    from serpent.susceptibility import SusceptibilityResult

    run = _copy(trained, tmp_path / "run")
    first = susceptibility_stage(run, progress=False)["steps"][0]
    f = step_path(run, first)
    reference = SusceptibilityResult.load(f).chi
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(SerpentError, match="is damaged") as e:
        load_susceptibilities(run)                            # what the serpent stage and the explorer read
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    again = susceptibility_stage(run, steps=[first], progress=False)
    assert again["computed"] == [first]
    np.testing.assert_array_equal(SusceptibilityResult.load(f).chi, reference)


@pytest.mark.parametrize("setting, says", [
    ("llc.sampler.batch_size=10000000", "llc.sampler.batch_size: got 10000000; the run's training split holds only"),
    ("susceptibility.sampler.batch_size=10000000", "susceptibility.sampler.batch_size: got 10000000"),
    ("susceptibility.probe_sequences=10000000", "held-out split holds only"),
    ("llc.sampler.epsilon=NaN", "llc.sampler.epsilon: got nan"),
    ("llc.sampler.epsilon=-0.001", "llc.sampler.epsilon: got -0.001"),
    ("susceptibility.sampler.chains=0", "susceptibility.sampler.chains: got 0"),
    ("llc.sampler.checkpoints=1.5", "llc.sampler.checkpoints: got 1.5"),
    ("llc.draws=8", "llc.draws is now llc.sampler.draws"),
])
def test_settings_out_of_range_are_refused_with_one_line(trained, tmp_path, capsys, keep_threads, setting, says):
    """Those the config can judge alone are refused when the command starts; those that need the run's data (a
    minibatch of ten million windows used to allocate gigabytes and sample for minutes) before any sampling."""
    import json
    run = _copy(trained, tmp_path / "run")
    stage = "susceptibility" if setting.startswith("susceptibility") else "llc"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(run.config.to_dict()))
    assert main(["run", "--config", str(config), "--set", setting, "--out", str(run.path), "--stages", stage,
                 "--quiet"]) == 2
    assert says in _one_error_line(capsys)
    assert not (run.path / stage / "steps").exists() and not list((run.path / stage).glob("step_*"))


def test_two_commands_writing_one_run_at_once(trained, tmp_path, capsys, keep_threads):
    """The second command that would write a stage of a run another process is writing is refused with one line that
    names the holder; --partial jobs (each its own checkpoints) share the stage; a killed holder leaves no lock."""
    run = _copy(trained, tmp_path / "run")
    with run.writing("llc"):
        assert main(["llc", str(run.path), "--quiet"]) == 2
        line = _one_error_line(capsys)
        assert f"process {os.getpid()}" in line and "llc stage" in line and "another --out" in line
        assert main(["susceptibilities", str(run.path), "--quiet"]) == 0       # another stage is not held up
        with pytest.raises(SerpentError, match="being written"):
            with run.writing("llc", shared=True):
                pass
    assert not list((run.path / "llc").glob("steps/*"))                     # the refused command wrote nothing
    with run.writing("llc", shared=True):                                    # two --partial jobs at once
        with run.writing("llc", shared=True):
            pass
        with pytest.raises(SerpentError, match="another process"):           # but not a whole stage beside them
            with run.writing("llc"):
                pass
    # across processes: a process holding the train lock, then killed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from serpent.rundir import Run; "
                               "lock = Run.open(sys.argv[1]).writing('train'); lock.__enter__(); "
                               "print('held', flush=True); time.sleep(300)", str(run.path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([sys.executable, "-m", "serpent", "run", "--config", str(run.path / "config.json"),
                                 "--out", str(run.path), "--stages", "data", "train", "--quiet", "--threads", "1"],
                                capture_output=True, text=True, cwd=ROOT, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"process {holder.pid}" in lines[0] and "train stage" in lines[0], lines
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", str(run.path), "--quiet"]) == 0                  # the lock went with the killed process


def _same_results(a: Run, b: Run) -> list[int]:
    ra, rb = load_susceptibilities(a), load_susceptibilities(b)
    assert sorted(ra) == sorted(rb)
    for s in ra:
        np.testing.assert_array_equal(ra[s].chi, rb[s].chi)
        np.testing.assert_array_equal(ra[s].chi_se, rb[s].chi_se)
    return sorted(ra)


def test_a_susceptibility_stage_stopped_after_its_first_checkpoint_resumes_to_the_same_numbers(trained, tmp_path,
                                                                                              monkeypatch):
    """Interrupted during its second checkpoint (Ctrl-C), then run again: the first checkpoint is kept, the others
    computed, and every χ equals an uninterrupted run's to the bit (one process)."""
    import serpent.susceptibility as science

    whole, cut = _copy(trained, tmp_path / "whole"), _copy(trained, tmp_path / "cut")
    chosen = susceptibility_stage(whole, progress=False)["steps"]
    real, calls = science.susceptibilities, []

    def stopped_during_the_second(*a, step, **k):
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, step=step, **k)

    monkeypatch.setattr(science, "susceptibilities", stopped_during_the_second)
    with pytest.raises(KeyboardInterrupt):
        susceptibility_stage(cut, progress=False)
    assert sorted(load_susceptibilities(cut)) == chosen[:1] and cut.stage_summary("susceptibility") == {}
    # what a kill in the middle of a write can leave: a temporary file, never a half-written result
    (cut.path / "susceptibility" / f".step_{chosen[1]:07d}.safetensors.k1ll3d.tmp").write_bytes(b"half a result")
    calls.clear()
    monkeypatch.setattr(science, "susceptibilities", lambda *a, step, **k: calls.append(step) or real(*a, step=step, **k))
    resumed = susceptibility_stage(cut, progress=False)
    assert calls == chosen[1:] and resumed["computed"] == chosen[1:] and resumed["steps"] == chosen
    assert _same_results(whole, cut) == chosen


@pytest.mark.slow
def test_a_killed_susceptibility_command_run_again_gives_the_numbers_of_an_uninterrupted_one(trained, tmp_path):
    """`python -m serpent susceptibilities RUN` killed (SIGKILL) once its first checkpoint is written, then the same
    command: the results of the same command run without interruption, to the bit."""
    whole, cut = _copy(trained, tmp_path / "whole"), _copy(trained, tmp_path / "cut")
    for run in (whole, cut):                                  # longer chains: a few seconds per checkpoint
        Run.create(run.path, run.config.with_overrides(susceptibility={"sampler.draws": 60, "sampler.checkpoints": 4}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "serpent", "susceptibilities", "--quiet", "--threads", "1"]
    done = subprocess.run(command + [str(whole.path)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(command + [str(cut.path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    folder = cut.path / "susceptibility"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(folder.glob("step_*.safetensors")):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = list(folder.glob("step_*.safetensors"))
    assert proc.returncode == -signal.SIGKILL and 1 <= len(kept) < 4, kept
    again = subprocess.run(command + [str(cut.path)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_same_results(whole, cut)) == 4
