"""Issue 18: the sampling stages across processes (torchrun, gloo on this CPU) and as independent jobs.

Two ranks give the numbers of one process (checkpoints split across ranks: to the bit; one checkpoint split within:
to float rounding), a killed rank loses only the checkpoints it had not finished, and two jobs on different
checkpoints share one run directory without clobbering each other.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from serpent.config import SamplerConfig
from serpent.rundir import Run
from serpent.sgld import sgld_steps
from serpent.stages import data_stage, llc_stage, load_susceptibilities, susceptibility_stage, train_stage
from tolerances import assert_separates, assert_within, chi_tolerance, f32_tolerance, forward_terms

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "serpent"]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("SERPENT_THREADS", "OMP_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", SERPENT_DIST_TIMEOUT="120", PYTHONPATH=str(ROOT))
    return env


def _cli(args, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + _per_rank(out.stderr)
    return out


def _per_rank(stderr: str, keep: int = 3000) -> str:
    """The end of what each rank printed (``[rankN]:`` lines), then the end of the rest (torchrun's own): the root
    cause is often on the rank that torchrun does not name first."""
    ranks: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        tag = line.split("]:", 1)[0] + "]" if line.startswith("[rank") and "]:" in line else "torchrun"
        ranks.setdefault(tag, []).append(line)
    return "\n".join(f"--- {tag} ---\n" + "\n".join(lines)[-keep:] for tag, lines in sorted(ranks.items()))


def _trained(tmp_path, micro_run_config, *, draws=4, checkpoints=3) -> Run:
    cfg = micro_run_config.with_overrides(
        model={"n_heads": 2},
        susceptibility={"sampler": SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=draws,
                                                 batch_size=4, checkpoints=checkpoints),
                        "probe_sequences": 3, "probe_length": 16},
        llc={"sampler.chains": 2, "sampler.draws": 8, "sampler.batch_size": 4, "sampler.checkpoints": checkpoints,
             "sampler.epsilon": 1e-3, "sampler.gamma": 100.0, "sampler.n_beta": 10.0})
    run = Run.create(tmp_path / "one", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    return run


def test_two_gloo_ranks_give_the_numbers_of_one_process(tmp_path, micro_run_config):
    one = _trained(tmp_path, micro_run_config)
    shutil.copytree(one.path, tmp_path / "two")
    two = Run.open(tmp_path / "two")
    chosen = susceptibility_stage(one, progress=False)["steps"]
    llc_stage(one, charts=False, progress=False)
    # three checkpoints on two ranks: each checkpoint whole on one rank, the same computation as one process
    out = _cli(TORCHRUN + ["susceptibilities", str(two.path), "--quiet"])
    a, b = load_susceptibilities(one), load_susceptibilities(two)
    assert sorted(b) == chosen
    for s in chosen:
        np.testing.assert_array_equal(a[s].chi, b[s].chi)
        np.testing.assert_array_equal(a[s].chi_se, b[s].chi_se)
    summary = json.loads((two.path / "stages.json").read_text())["susceptibility"]["summary"]
    assert summary["ranks"] == 2 and summary["computed"] == chosen
    assert "error" not in out.stderr.lower()

    # one checkpoint on two ranks: each samples half of the heads beside its own unrestricted chains
    extra = [s for s in one.checkpoint_steps() if s not in chosen][0]
    susceptibility_stage(one, steps=[extra], progress=False)
    _cli(TORCHRUN + ["susceptibilities", str(two.path), "--steps", str(extra), "--quiet"])
    x, y = load_susceptibilities(one)[extra], load_susceptibilities(two)[extra]
    assert x.components == y.components == ["0:0", "0:1", "1:0", "1:1"]
    assert y.settings["drift"].keys() == x.settings["drift"].keys()

    # the LLC: three checkpoints split across the ranks, then one checkpoint's chains split
    _cli(TORCHRUN + ["llc", str(two.path), "--quiet"])
    t1 = pd.read_parquet(one.path / "llc" / "llc.parquet")
    t2 = pd.read_parquet(two.path / "llc" / "llc.parquet")
    cols = ["step", "mean", "std", "init_loss", "chain_0", "chain_1"]
    pd.testing.assert_frame_equal(t1[cols], t2[cols])
    llc_stage(one, steps=[extra], charts=False, progress=False)
    _cli(TORCHRUN + ["llc", str(two.path), "--steps", str(extra), "--quiet"])
    r1 = pd.read_parquet(one.path / "llc" / "llc.parquet").iloc[0]
    r2 = pd.read_parquet(two.path / "llc" / "llc.parquet").iloc[0]
    # per chain n_beta (mean loss over the draws - init loss): losses near L0 summed over a batch's tokens, after the
    # chain's steps (tests/tolerances.py); the mean of 2 chains moves as much, their std at most twice as much. Seen on
    # one machine: 4.8e-6 on chain 1 (one float32 ulp of the loss, times n_beta), against a tolerance of about 1e-3
    lc = one.config.llc.sampler
    loss_terms = forward_terms(one.config.model, tokens=lc.batch_size * (one.config.model.n_ctx - 1))
    tol = f32_tolerance(lc.n_beta * r1["init_loss"], loss_terms, sgld_steps(lc))
    assert r2["step"] == r1["step"]
    for c, t in [("mean", tol), ("std", 2 * tol), ("chain_0", tol), ("chain_1", tol),
                 ("init_loss", f32_tolerance(r1["init_loss"], loss_terms))]:
        assert_within(r2[c], r1[c], t, what=f"LLC {c}: one process vs 2 ranks")
    assert_separates(r1["chain_0"] - r1["chain_1"], tol, what="LLC chain 0 vs chain 1 (a wrong chain or seed)")

    # back to the susceptibilities split within a checkpoint: the ranks' batched products have other shapes, so χ is
    # equal up to float32 rounding of the per-token losses (size up to ~2 L0) after the sampler's steps, times how far
    # the task loss moves over the draws: the range of the LLC chains' minibatch losses at this checkpoint about L0
    # (the same sampler settings and batch size) (tests/tolerances.py). The standard error of 2 chains, |c0 - c1| / 2,
    # moves by at most as much. A rank that sampled the wrong head would be off by the difference between heads
    traces = pd.read_parquet(one.path / "llc" / "traces.parquet").query("step == @extra")
    spread = float((traces["loss"] - r1["init_loss"]).abs().max())
    cfg, sc = one.config.model, one.config.susceptibility.sampler
    tol = chi_tolerance(2 * x.settings["init_loss"], spread, forward_terms(cfg), sgld_steps(sc))
    assert_within(y.chi, x.chi, tol, what="chi: one process vs 2 ranks")
    assert_within(y.chi_se, x.chi_se, tol, what="chi_se: one process vs 2 ranks")
    assert_separates(x.chi[:, 0] - x.chi[:, 1], tol, what="chi of heads 0:0 and 0:1")



def test_a_killed_rank_loses_only_the_checkpoints_it_had_not_finished(tmp_path, micro_run_config):
    run = _trained(tmp_path, micro_run_config, draws=60, checkpoints=0)
    steps = run.checkpoint_steps()
    folder = run.path / "susceptibility"
    proc = subprocess.Popen(TORCHRUN + ["susceptibilities", str(run.path), "--quiet"], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(folder.glob("step_*.safetensors")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)              # one rank dies; torchrun stops the other
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    kept = sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.safetensors"))
    assert 1 <= len(kept) < len(steps), kept
    # the same command again, here in one process: what was kept is reused, the rest computed
    summary = susceptibility_stage(run, progress=False)
    assert summary["steps"] == steps and sorted(set(steps) - set(kept)) == summary["computed"]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (torchrun's workers), oldest first."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def test_independent_jobs_on_different_checkpoints_share_one_run_directory(tmp_path, micro_run_config,
                                                                              monkeypatch):
    run = _trained(tmp_path, micro_run_config)
    a, b = run.checkpoint_steps()[1], run.checkpoint_steps()[-1]
    jobs = [subprocess.Popen([sys.executable, "-m", "serpent", stage, str(run.path), "--steps", str(s), "--partial",
                              "--quiet", "--threads", "1"], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for s in (a, b) for stage in ("llc", "susceptibilities")]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
    assert not (run.path / "llc" / "llc.parquet").exists()         # a partial job writes no table
    assert sorted(load_susceptibilities(run)) == [a, b]
    import serpent.stages.llc as stage_llc
    monkeypatch.setattr(stage_llc, "FLAT_TOLERANCE", float("inf"))
    calls = []
    monkeypatch.setattr(stage_llc, "_llc_at", lambda *x, **k: calls.append(x[1]))
    gathered = llc_stage(run, steps=[a, b], charts=False, progress=False)
    assert calls == [] and gathered["computed"] == 0 and gathered["reused"] == 2
    assert pd.read_parquet(run.path / "llc" / "llc.parquet")["step"].tolist() == [a, b]
    sus = susceptibility_stage(run, steps=[a, b], progress=False)
    assert sus["steps"] == [a, b] and sus["computed"] == []


def test_the_slurm_examples_are_valid_bash_and_call_commands_that_exist():
    import shlex
    from serpent.cli import build_parser
    scripts = sorted((ROOT / "examples").glob("slurm_*.sh"))
    assert len(scripts) == 2
    parser = build_parser()
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        calls = [line.split("-m serpent ", 1)[1].split(" #")[0].rstrip().rstrip(')"\\').rstrip()
                 for line in text.splitlines() if "-m serpent " in line and not line.lstrip().startswith("#")]
        assert len(calls) >= 2, script.name
        for call in calls:
            call = (call.replace("\\$", "$").replace("'$RUN'", "runs/x").replace('"$RUN"', "runs/x")
                    .replace('"$stage"', "llc").replace("$step", "100").replace("$STEPS", "0 100"))
            args = parser.parse_args(shlex.split(call))
            assert args.run_dir == "runs/x" and args.command in ("llc", "susceptibilities", "serpent"), call


PYTHIA_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from serpent.stages.distributed import current_world, susceptibilities_across_ranks
from test_susceptibility import _data, _pythia14m_like, _sampler

model = _pythia14m_like()
data, probe = _data(16, 10, V=256), _data(2, 8, V=256, seed=3)
res = susceptibilities_across_ranks(model, probe, lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4],
                                    _sampler(epsilon=1e-4, draws=3), components={components!r}, progress=False,
                                    device="cpu")
if current_world().is_main:
    res.save({out!r})
"""


def test_a_pythia_architecture_model_with_mlps_across_two_ranks(tmp_path):
    """Models beyond the course's: a Pythia-14m-architecture TransformerBridge (rotary, parallel attention + MLP,
    random weights) through the torch.func path, its heads and MLPs shared between two gloo ranks, equals one
    process. Memory stays O(replicas x probe tokens): the estimator streams its sums and keeps no draws."""
    from serpent.susceptibility import SusceptibilityResult, susceptibilities
    sys.path.insert(0, str(ROOT / "tests"))
    from test_susceptibility import _data, _pythia14m_like, _sampler
    components = ["0:0", "3:1", "5:3", "mlp:2", "mlp:5"]
    script = tmp_path / "pythia.py"
    script.write_text(PYTHIA_SCRIPT.format(tests=str(ROOT / "tests"), components=components,
                                           out=str(tmp_path / "two.safetensors")))
    _cli([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)])
    two = SusceptibilityResult.load(tmp_path / "two.safetensors")
    data, probe = _data(16, 10, V=256), _data(2, 8, V=256, seed=3)
    one = susceptibilities(_pythia14m_like(), probe, lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4],
                           _sampler(epsilon=1e-4, draws=3), components=components, progress=False, device="cpu")
    assert two.components == one.components == components and two.settings["forward"] == "generic"
    assert set(two.settings["drift"]) == {"full", *components}
    # generic forward (the bridge's) batched across ranks: per-token losses of a 6-layer model with MLPs, 3 draws
    # spread: the range of the minibatches' losses about L0 at w* (epsilon 1e-4 and 3 draws barely move the weights;
    # twice that for the chains' own movement)
    model = _pythia14m_like()
    with torch.no_grad():
        batch_losses = torch.stack([model(data[4 * i:4 * i + 4], return_type="loss") for i in range(4)])
    spread = 2 * float((batch_losses - one.settings["init_loss"]).abs().max())
    tol = chi_tolerance(2 * one.settings["init_loss"], spread, forward_terms(model.cfg, n_ctx=10), 3)
    assert_within(two.chi, one.chi, tol, what="pythia chi: one process vs 2 ranks")
    # epsilon 1e-4 and 3 draws: the components' χ differ little (measured: 9 x the tolerance), still well outside it
    assert_separates(one.chi[:, 0] - one.chi[:, 1], tol, factor=5, what="pythia chi of two components")
