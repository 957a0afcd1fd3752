"""LLC: known answers, agreement with devinterp 2.0.1, the generic module path, checkpoints, stage, calibration."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from serpent.config import ModelConfig, SamplerConfig
from serpent.errors import ConfigError, SerpentError
from serpent.llc import calibrate, crossing_llc_target, estimate_llc
from serpent.stages.sweep import select_steps
from serpent.model import build_model, model_params
from tolerances import assert_f32_close, assert_separates, forward_terms

MC = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=16, d_vocab=48)



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py

def test_full_rank_quadratic_has_llc_d_over_2():
    # L = |w|^2 / 2 in d = 40 dimensions: lambda = d/2 = 20. gamma = 0, eps * n_beta = 0.02 (discretisation bias
    # 1/(1 - 0.005) = +0.5 %). Statistical error ~1 %; tolerance 4 %.
    d, n_beta = 40, 20.0
    cfg = SamplerConfig(epsilon=0.001, gamma=0.0, n_beta=n_beta, chains=4, draws=4000, burnin=300, batch_size=1)
    quad = lambda p, batch: 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)
    res = estimate_llc(quad, {"w": torch.zeros(d)}, [None], cfg, progress=False, max_loss_increase=math.inf)
    assert res.mean == pytest.approx(d / 2, rel=0.04)
    assert res.per_chain.shape == (4,) and res.init_loss == 0.0 and res.std > 0


def _grid_expectation(n_beta, gamma, a, b, half_width=4.0, n=2001):
    """E[n_beta K] under exp(-n_beta K - gamma |w|^2 / 2), K = (w1^a w2^b)^2, on a grid: an independent check of
    ``crossing_llc_target``'s nested quadrature (the grid resolves the posterior at n_beta up to a few hundred)."""
    x = np.linspace(-half_width, half_width, n)
    w1, w2 = np.meshgrid(x, x, indexing="ij")
    K = w1 ** (2 * a) * w2 ** (2 * b)
    logp = -n_beta * K - 0.5 * gamma * (w1 ** 2 + w2 ** 2)
    p = np.exp(logp - logp.max())
    return float((n_beta * K * p).sum() / p.sum())


@pytest.mark.parametrize("a, b", [(1, 2), (1, 1)])
def test_normal_crossing_llc_is_one_over_two_max_a_b(a, b):
    # The model f(w) = w1^a * w2^b with squared loss: K = (w1^a w2^b)^2, lambda = 1/(2 max(a, b)) = 1/4 for
    # (a, b) = (1, 2). At finite n_beta the tempered expectation E[n_beta K] approaches lambda slowly (next pole
    # n^-(1/4)); at n_beta = 100, gamma = 1 it is 0.206 (18 % below 1/4, computed by quadrature). Two checks:
    # the sampler reproduces the exact finite-n_beta value within 4 %, and the estimate is within 20 % of lambda.
    # With a = b the multiplicity is 2 and the target 0.354 lies 29 % below lambda = 1/2: the estimator is right
    # and the gap is the free energy's (m - 1) log log term, which notebook 3 shows beside the estimate.
    n_beta, gamma, N = 100.0, 1.0, 1500
    exact = crossing_llc_target(a, b, n_beta, gamma)
    lam = 1 / (2 * max(a, b))

    def crossing(p, batch):  # N independent copies of the 2-parameter model, summed: estimate / N per copy
        w = p["w"]
        return ((w[..., 0] ** a * w[..., 1] ** b) ** 2).sum(-1, keepdim=True)

    cfg = SamplerConfig(epsilon=2e-4, gamma=gamma, n_beta=n_beta, chains=1, draws=4000, burnin=4000, batch_size=1)
    res = estimate_llc(crossing, {"w": torch.zeros(N, 2)}, [None], cfg, progress=False, max_loss_increase=math.inf,
                       check_every=500)
    est = res.mean / N
    assert est == pytest.approx(exact, rel=0.04)
    if a != b:
        assert est == pytest.approx(lam, rel=0.20)
    else:
        assert lam - est > 0.1
    assert est < 0.5  # far below the regular answer d/2 = 1 of a 2-parameter model


def test_generic_module_path_regular_regression_has_llc_d_over_2():
    # Linear regression is regular: lambda = (number of parameters)/2 = (3 + 1)/2 at the least-squares optimum.
    # eps * n_beta * (Hessian eigenvalues ~1) ~ 0.1: discretisation bias ~ +2.5 %, statistical error ~ 2.5 %.
    torch.manual_seed(0)
    x = torch.randn(256, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.1 * torch.randn(256)
    net = torch.nn.Linear(3, 1)
    X1 = torch.cat([x, torch.ones(256, 1)], 1)
    sol = torch.linalg.lstsq(X1, y[:, None]).solution[:, 0]
    with torch.no_grad():
        net.weight.copy_(sol[:3][None]); net.bias.copy_(sol[3:])
    cfg = SamplerConfig(epsilon=2e-3, gamma=0.0, n_beta=50.0, chains=8, draws=1200, burnin=100, batch_size=256)
    res = estimate_llc(net, None, [(x, y)], cfg, loss=lambda out, b: 0.5 * (out[:, 0] - b[1]) ** 2,
                       init_loss_batches=1, progress=False)
    assert res.mean == pytest.approx(2.0, rel=0.10)


def _devinterp_setup(n_seq=48, seed=0):
    torch.manual_seed(seed)
    model = build_model(MC)
    data = torch.randint(0, MC.d_vocab, (n_seq, MC.n_ctx))
    return model, data


_DV = dict(B=8, C=8, draws=40, k_init=4, eps=1e-3, n_beta=20.0, gamma=10.0)


@pytest.fixture(scope="module")
def devinterp_run():
    """devinterp 2.0.1 `llc` on a tiny TransformerLens model, minibatches in order (shuffle=False)."""
    pytest.importorskip("devinterp")  # in requirements.txt; CI has it
    import warnings

    from datasets import Dataset
    from devinterp.slt.llc import llc as devinterp_llc

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, data = _devinterp_setup()
    ds = Dataset.from_dict({"input_ids": data.tolist()}).with_format("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = devinterp_llc(model, ds, {}, lr=_DV["eps"], n_beta=_DV["n_beta"], localization=_DV["gamma"],
                               num_chains=_DV["C"], num_draws=_DV["draws"], batch_size=_DV["B"],
                               num_init_loss_batches=_DV["k_init"], shuffle=False, device="cpu")
    torch.set_num_threads(n)
    return model, data, theirs


def _ours(model, data, seed):
    B = _DV["B"]
    n_batches = len(data) // B
    batches = lambda i: data[(i % n_batches) * B:((i % n_batches) + 1) * B]
    cfg = SamplerConfig(epsilon=_DV["eps"], gamma=_DV["gamma"], n_beta=_DV["n_beta"], chains=_DV["C"],
                        draws=_DV["draws"], batch_size=B, seed=seed)
    return estimate_llc(model, None, batches, cfg, init_loss_batches=_DV["k_init"], convention="devinterp",
                        record_traces=True, progress=False)


@pytest.mark.slow
def test_agrees_with_devinterp_llc_within_statistical_error(devinterp_run):
    """Independent noise (our seed 1000, devinterp's 100..107), same model, data order and hyperparameters.

    The init loss is deterministic and must agree to float precision. The estimates then differ only by SGLD
    noise: criterion |mean_ours - mean_devinterp| < 4 * sqrt(se_ours^2 + se_devinterp^2), se = std over chains
    / sqrt(chains) (a 4-sigma bound: a false alarm about once in 10^3-10^4 runs).
    """
    model, data, theirs = devinterp_run
    their_chains = np.asarray(theirs["llc_per_chain"].values, dtype=float)
    ours = _ours(model, data, seed=1000)
    init_terms = forward_terms(MC, tokens=_DV["k_init"] * _DV["B"] * (MC.n_ctx - 1))
    assert_f32_close(ours.init_loss, float(theirs["init_loss"].values), terms=init_terms, what="init loss vs devinterp")
    C = _DV["C"]
    se = math.sqrt(ours.per_chain.var(ddof=1) / C + their_chains.var(ddof=1) / C)
    assert abs(ours.mean - their_chains.mean()) < 4 * se, (ours.mean, their_chains.mean(), se)
    # the comparison is not vacuous: both estimates are clearly positive, and the chains are not identical
    assert ours.mean > 4 * se and their_chains.mean() > 4 * se
    assert not np.allclose(ours.per_chain, their_chains, rtol=1e-3)


@pytest.mark.slow
def test_reproduces_devinterp_chains_exactly_on_cpu(devinterp_run):
    """With devinterp's seeds (chain c: seed 100 + c) our chains are devinterp's chains, step for step.

    Holds on the CPU because devinterp draws its noise parameter by parameter from the global generator seeded
    100 + c, in the model's parameter order, and torch's CPU normal stream concatenates (true when every parameter
    size is a multiple of 16, as here and in the 3M model). This pins down the whole update: drift scale,
    localization, noise scale, schedule, minibatch order and init loss.
    """
    model, data, theirs = devinterp_run
    ours = _ours(model, data, seed=100)
    # the same chains through devinterp's per-parameter updates and TransformerLens' forward (tests/tolerances.py)
    terms, steps = forward_terms(MC, tokens=_DV["B"] * (MC.n_ctx - 1)), _DV["draws"]
    _, tol = assert_f32_close(ours.per_chain, theirs["llc_per_chain"].values, terms=terms, steps=steps,
                              scale=_DV["n_beta"] * ours.init_loss, what="LLC per chain vs devinterp's")
    assert_separates(np.diff(ours.per_chain), tol, what="LLC of neighbouring chains")
    assert_f32_close(ours.traces, theirs["loss_trace"].values, terms=terms, steps=steps, what="traces vs devinterp's")


def test_hooked_transformer_and_model_config_paths_agree():
    model, data = _devinterp_setup(n_seq=16)
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=5, batch_size=4)
    batches = [data[i:i + 4] for i in range(0, 16, 4)]
    a = estimate_llc(model, None, batches, cfg, progress=False, record_traces=True)
    b = estimate_llc(MC, model_params(model), batches, cfg, progress=False, record_traces=True)
    assert a.traces.shape == (2, 5)
    np.testing.assert_array_equal(a.per_chain, b.per_chain)   # both take the fast path: the same arithmetic
    with pytest.raises(ConfigError, match="loss"):
        estimate_llc(torch.nn.Linear(2, 2), None, batches, cfg, progress=False)



def test_chains_one_call_at_a_time_or_batched_give_the_same_chains():
    # on the CPU estimate_llc samples one chain per call (faster there); each chain keeps its seed, so any grouping
    # gives the same chains up to float rounding, and the combined result covers every chain in order
    model, data = _devinterp_setup(n_seq=16)
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=3, draws=6, burnin=2, batch_size=4)
    batches = [data[i:i + 4] for i in range(0, 16, 4)]
    runs = {k: estimate_llc(MC, model_params(model), batches, cfg, progress=False, record_traces=True,
                            chains_per_call=k) for k in (None, 2, 3)}
    batched = runs[3]
    n = batched.traces.shape[1]
    terms = forward_terms(MC, tokens=4 * (MC.n_ctx - 1))
    for k in (None, 2):
        r = runs[k]
        assert r.traces.shape == (3, n) and r.per_chain.shape == (3,) and r.init_loss == batched.init_loss
        assert_f32_close(r.traces, batched.traces, terms=terms, steps=n, what=f"traces, chains_per_call={k}")
        _, tol = assert_f32_close(r.per_chain, batched.per_chain, terms=terms * n, steps=n,
                                  scale=cfg.n_beta * np.abs(batched.traces).max(), what=f"per chain, {k}")
        assert r.mean == pytest.approx(float(np.mean(r.per_chain)))
    assert_separates(batched.per_chain[0] - batched.per_chain[1], tol, what="chains 0 and 1")
    with pytest.raises(ConfigError, match="chains_per_call"):
        estimate_llc(MC, model_params(model), batches, cfg, progress=False, chains_per_call=-1)

def test_select_steps():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 100]
    assert select_steps(steps, 0) == steps and select_steps(steps, 20) == steps
    picked = select_steps(steps, 4)
    assert picked[0] == 0 and picked[-1] == 100 and len(picked) == 4 and picked == sorted(set(picked))
    assert select_steps([3, 1, 2], 2) == [1, 3]
    with pytest.raises(ConfigError):
        select_steps(steps, -1)


def test_calibration_flags_divergence_and_the_chart_renders(tmp_path):
    quad = lambda p, batch: 0.5 * (p["w"] ** 2).sum(-1, keepdim=True) / 8
    cfg = SamplerConfig(epsilon=1e-3, gamma=1.0, n_beta=10.0, chains=2, draws=200, burnin=50, batch_size=1)
    cal = calibrate(quad, {"w": torch.zeros(8)}, [None], cfg, epsilons=[0.01, 0.1, 8.0], n_betas=[5.0, 20.0],
                    progress=False)
    assert len(cal) == 6 and set(cal.columns) >= {"epsilon", "n_beta", "llc_mean", "diverged", "stable", "drift"}
    big = cal[cal["epsilon"] == 8.0]
    assert big["diverged"].all() and big["error"].str.contains("smaller epsilon").all()
    small = cal[(cal["epsilon"] == 0.01) & (cal["n_beta"] == 5.0)].iloc[0]
    assert not small["diverged"] and 0 < small["llc_mean"] < 8
    from serpent.charts.llc import calibration_chart, save_chart
    paths = save_chart(calibration_chart(cal), tmp_path / "cal")
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_llc_stage_writes_curve_and_skips_when_current(tmp_path, micro_run_config, monkeypatch):
    from serpent.stages.llc import llc_stage
    from serpent.stages import data_stage, train_stage
    from serpent.rundir import Run

    cfg = micro_run_config.with_overrides(llc={"sampler.chains": 2, "sampler.draws": 8, "sampler.batch_size": 4,
                                               "sampler.checkpoints": 3, "sampler.epsilon": 1e-3,
                                               "sampler.gamma": 100.0, "sampler.n_beta": 10.0})
    run = Run.create(tmp_path / "run", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    import serpent.stages.llc
    monkeypatch.setattr(serpent.stages.llc, "FLAT_TOLERANCE", math.inf)  # caching and resume here; 8 draws always drift
    summary = llc_stage(run, progress=False)
    out = run.stage_dir("llc")
    table = pd.read_parquet(out / "llc.parquet")
    traces = pd.read_parquet(out / "traces.parquet")
    steps = run.checkpoint_steps()
    assert table["step"].tolist() == select_steps(steps, 3) and summary["checkpoints"] == 3
    assert {"mean", "std", "init_loss", "chain_0", "chain_1"} <= set(table.columns)
    assert np.isfinite(table[["mean", "std", "init_loss"]].to_numpy()).all()
    assert len(traces) == 3 * 2 * 8
    # training lowers the loss at w*, so the last checkpoint's init loss is below the first one's
    assert table["init_loss"].iloc[-1] < table["init_loss"].iloc[0]
    for name in ("llc.png", "llc.html", "traces.png", "traces.html"):
        assert (out / name).stat().st_size > 1000
    mtime = (out / "llc.parquet").stat().st_mtime_ns
    again = llc_stage(run, progress=False)
    assert again.get("skipped") and (out / "llc.parquet").stat().st_mtime_ns == mtime
    # each checkpoint's result is kept as soon as it is computed: a subset reuses them, nothing is estimated again
    import serpent.stages.llc
    calls = []
    real = serpent.stages.llc._llc_at
    monkey = lambda *a, **k: calls.append(a[1]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(serpent.stages.llc, "_llc_at", monkey)
    sub = llc_stage(run, steps=[table["step"].iloc[-1], table["step"].iloc[0]], charts=False, progress=False)
    assert calls == [] and sub["reused"] == 2 and sub["computed"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "llc.parquet"),
                                  table.iloc[[0, -1]].reset_index(drop=True))
    # an interrupted stage continues where it stopped: the first checkpoints' results survive the failure
    extra = [s for s in steps if s not in table["step"].tolist()][:2]

    def fail_second(*a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt
        return monkey(*a, **k)
    monkeypatch.setattr(serpent.stages.llc, "_llc_at", fail_second)
    with pytest.raises(KeyboardInterrupt):
        llc_stage(run, steps=extra + table["step"].tolist(), progress=False)
    monkeypatch.setattr(serpent.stages.llc, "_llc_at", monkey)
    resumed = llc_stage(run, steps=extra + table["step"].tolist(), progress=False)
    assert calls == [extra[0], extra[1]] and resumed["computed"] == 1 and resumed["reused"] == 4
    both = pd.read_parquet(out / "llc.parquet").set_index("step")
    pd.testing.assert_frame_equal(both.loc[table["step"]].reset_index(), table)
    assert len(pd.read_parquet(out / "traces.parquet")) == 5 * 2 * 8
    with pytest.raises(SerpentError, match="no checkpoint at step"):
        llc_stage(run, steps=[7777], progress=False)
    # a checkpoint is known by its bytes: a copied (touched) file is reused, one written again (a new training run
    # in the same folder) is estimated again
    import os
    from serpent.checkpoints import save_checkpoint
    f = run.checkpoint_path(steps[1])
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    calls.clear()
    touched = llc_stage(run, steps=extra + table["step"].tolist(), charts=False, progress=False)
    assert calls == [] and touched["reused"] == 5
    params = run.load_params(steps[1])
    save_checkpoint(f, {k: v * 1.001 for k, v in params.items()}, steps[1], run.config.model)
    again = llc_stage(run, steps=[steps[1], table["step"].iloc[0]], charts=False, progress=False)
    assert calls == [steps[1]] and again["computed"] == 1 and again["reused"] == 1
    from serpent.cli import main                                   # the command line takes the same steps
    assert main(["llc", str(run.path), "--steps", str(steps[1]), "--quiet"]) == 0
    assert pd.read_parquet(out / "llc.parquet")["step"].tolist() == [steps[1]]
    # calibration at the last checkpoint: a table over the grid and its chart
    from serpent.stages import calibrate_run
    cal = calibrate_run(run, epsilons=[1e-4, 1e-3], n_betas=[10.0], progress=False)
    assert len(cal) == 2 and (cal["step"] == steps[-1]).all() and not cal["diverged"].any()
    assert (out / "calibration.parquet").exists() and (out / "calibration.png").stat().st_size > 1000


def test_crossing_llc_target_known_cases_and_its_approach_to_lambda():
    """The finite-n_beta target of the estimator: exact where the posterior is Gaussian, below lambda by about
    (m - 1)/log(n_beta) when the multiplicity is 2, and at lambda within 2 % for m = 1."""
    for a, b in ((1, 1), (1, 2), (2, 1)):
        assert crossing_llc_target(a, b, 100.0) == pytest.approx(_grid_expectation(100.0, 1.0, a, b), rel=2e-3)
    for n_beta, gamma in ((100.0, 1.0), (1e4, 3.0)):          # K = w1^2: precision 2 n_beta + gamma
        assert crossing_llc_target(1, 0, n_beta, gamma) == pytest.approx(n_beta / (2 * n_beta + gamma), rel=1e-6)
    targets = [crossing_llc_target(1, 1, nb) for nb in (1e2, 1e4, 1e6, 1e8)]
    assert all(x < y for x, y in zip(targets, targets[1:])) and targets[-1] < 0.5
    for nb, t in zip((1e6, 1e8), targets[2:]):                # lambda - (m - 1)/log(n_beta), lambda 1/2, m 2
        assert t == pytest.approx(0.5 - 1 / math.log(nb), abs=0.012)
    assert crossing_llc_target(1, 2, 1e8) == pytest.approx(0.25, rel=0.02)   # m = 1: reaches lambda
    with pytest.raises(ConfigError, match="gamma"):
        crossing_llc_target(1, 1, 100.0, gamma=0.0)



def test_a_diverging_checkpoint_is_retried_with_a_smaller_step_then_recorded_and_the_stage_goes_on(
        tmp_path, micro_run_config, monkeypatch):
    """Issue 21: divergence at one checkpoint no longer stops the run. The stage retries with epsilon/3, /10, /30
    (largest first, the calibration recipe's test of a flat trace), records what it used, and when every step size
    fails it records the checkpoint as diverged, with the advice, and keeps the others."""
    import serpent.stages.llc as llc
    from serpent.errors import DivergenceError
    from serpent.stages import data_stage, train_stage
    from serpent.io import read_json
    from serpent.rundir import Run

    cfg = micro_run_config.with_overrides(llc={"sampler.chains": 2, "sampler.draws": 8, "sampler.batch_size": 4,
                                               "sampler.checkpoints": 3, "sampler.epsilon": 1e-3,
                                               "sampler.gamma": 100.0, "sampler.n_beta": 10.0})
    run = Run.create(tmp_path / "run", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    steps = select_steps(run.checkpoint_steps(), 3)
    real = llc.estimate_llc
    calls = []

    def fragile(model, params, batches, c, **kw):      # the middle checkpoint diverges above epsilon 2e-4,
                                                        # the last one at every step size
        calls.append((current[0], c.epsilon))
        if current[0] == steps[-1] or (current[0] == steps[1] and c.epsilon > 2e-4):
            raise DivergenceError(f"SGLD diverged at step 3 of 8 in chain 0 (epsilon {c.epsilon})")
        return real(model, params, batches, c, **kw)

    current = [None]
    real_at = llc._llc_at
    monkeypatch.setattr(llc, "_llc_at", lambda r, step, *a, **k: current.__setitem__(0, step) or real_at(r, step, *a, **k))
    monkeypatch.setattr(llc, "estimate_llc", fragile)
    monkeypatch.setattr(llc, "FLAT_TOLERANCE", math.inf)   # 8 draws: too few for the drift test; checked below
    summary = llc.llc_stage(run, progress=False)

    table = pd.read_parquet(run.stage_dir("llc") / "llc.parquet")
    assert table["step"].tolist() == steps[:2]                        # the diverged checkpoint is left out ...
    assert summary["diverged"].keys() == {str(steps[-1])}              # ... and named, with what to do
    assert "calibrate" in summary["diverged"][str(steps[-1])] and "1e-05" not in summary["diverged"][str(steps[-1])]
    eps = dict(zip(table["step"], table["epsilon"]))
    assert eps[steps[0]] == 1e-3 and eps[steps[1]] == pytest.approx(1e-4)   # 3.3e-4 diverged, 1e-4 is the largest left
    assert summary["retried"] == [steps[1]] and "0.0001 did not" in table.set_index("step").loc[steps[1], "note"]
    assert summary["lengthened"] == [] and (table["burnin"] == 0).all()
    assert [e for s, e in calls if s == steps[-1]] == pytest.approx([1e-3, 1e-3 / 3, 1e-4, 1e-3 / 30])
    kept = read_json(llc._step_file(run, steps[-1]))
    assert "diverged" in kept                                         # resumable: not sampled again next time

    calls.clear()
    llc.llc_stage(run, charts=False, progress=False)
    assert calls == []

    others = [s for s in run.checkpoint_steps() if s not in steps]
    monkeypatch.setattr(llc, "FLAT_TOLERANCE", 0.0)       # no trace is flat: far from equilibrium everywhere
    calls.clear()
    drifting = llc.llc_stage(run, steps=[steps[0], others[0]], charts=False, progress=False)
    assert drifting["checkpoints"] == 2 and not drifting["diverged"]      # kept, lengthened once, and flagged
    assert drifting["lengthened"] == drifting["not_at_equilibrium"] == [others[0]]
    row = pd.read_parquet(run.stage_dir("llc") / "llc.parquet").set_index("step").loc[others[0]]
    assert row["burnin"] == 2 * 8 and "not at equilibrium" in row["note"]    # burn-in 0 + 2 x (0 + 8 draws)
    assert [e for s, e in calls if s == others[0]] == [1e-3, 1e-3]         # the same step size, a longer chain

    monkeypatch.setattr(llc, "FLAT_TOLERANCE", 0.1)       # a trace that reaches its plateau once the chain is longer
    def settles(r, step, c, *a, **k):
        row, trace = real_at(r, step, c, *a, **k)
        return {**row, "drift": 0.4 if c.burnin == 0 else 0.02}, trace
    monkeypatch.setattr(llc, "_llc_at", settles)
    settled = llc.llc_stage(run, steps=[others[1]], charts=False, progress=False)
    assert settled["lengthened"] == [others[1]] and settled["not_at_equilibrium"] == []
    row = pd.read_parquet(run.stage_dir("llc") / "llc.parquet").iloc[0]
    assert row["burnin"] == 16 and row["drift"] == 0.02 and "reached the plateau" in row["note"]

    monkeypatch.setattr(llc, "estimate_llc", lambda *a, **k: (_ for _ in ()).throw(DivergenceError("nan")))
    with pytest.raises(DivergenceError, match="every analysed checkpoint"):
        llc.llc_stage(run, steps=others[2:3], progress=False)
