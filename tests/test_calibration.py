"""Issue 37 item 5: a step size that is too large but does not diverge is caught.

SGLD's finite step inflates the estimate without making the trace move: on linear regression with 10 weights
(lambda = 5) the calibration used to mark epsilon = 0.015, 0.019 and 0.03 "stable" (flat traces) while their LLCs
were 8, 10 and 20. The calibration now also asks whether the estimate still moves with epsilon (the plateau of the
LLC against epsilon), and the llc and susceptibility stages say when their epsilon sits past it. Checked on models
whose answer is known exactly, at every epsilon: a full-batch Gaussian (SGLD samples variance 1/(a (1 - eps a/4))
instead of 1/a in a direction of precision a) and minibatch regression with localisation.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from serpent.config import SamplerConfig, get_preset
from serpent.errors import ConfigError
from serpent.llc import calibrate, calibration_advice, epsilon_note, epsilon_plateau, localisation_bias

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py


def _regression(n: int, curvatures: torch.Tensor, noise: float, seed: int):
    """Least-squares regression whose Hessian X^T X / n is exactly diag(curvatures), at its optimum w*."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, len(curvatures), generator=g, dtype=torch.float64))
    x = (q * (n * curvatures.double()).sqrt()).float()
    y = x @ torch.randn(len(curvatures), generator=g) + noise * torch.randn(n, generator=g)
    w = torch.linalg.lstsq(x.double(), y.double()[:, None]).solution[:, 0].float()

    def loss(p, batch):                                       # (R, B) per-sample losses
        xb, yb = batch
        return 0.5 * (p["w"] @ xb.T - yb) ** 2
    return loss, w, x, y


def test_linear_regression_lambda_5_the_biased_step_sizes_are_not_stable():
    """The issue's case: 10 weights, full batch, n_beta = 100, no localisation. Every epsilon gives a flat trace, and
    the estimate is exactly what SGLD's stationary law says, 5 / (1 - eps n_beta / 4): 5.13 at 0.001, 8 at 0.015, 20
    at 0.03. The flat rows whose estimate still moves with epsilon are biased; the advice is on the plateau, at 5."""
    loss, w, x, y = _regression(200, torch.ones(10), noise=0.5, seed=0)
    n_beta, eps = 100.0, [3e-4, 1e-3, 3e-3, 0.015, 0.019, 0.03]
    cfg = SamplerConfig(epsilon=1e-3, gamma=0.0, n_beta=n_beta, chains=4, draws=1000, burnin=300, batch_size=200)
    cal = calibrate(loss, {"w": w}, [(x, y)], cfg, eps, [n_beta], init_loss_batches=1, progress=False)
    exact = np.array([5 / (1 - e * n_beta / 4) for e in eps])
    # the estimator is right at every epsilon: the bias is the sampler's, not noise
    assert np.all(np.abs(cal["llc_mean"] - exact) < 4 * cal["llc_se"] + 0.02 * exact), cal[["llc_mean", "llc_se"]]
    assert cal["flat"].all() and not cal["diverged"].any()          # the old test called every one of them stable
    big = cal[cal["epsilon"] >= 0.015]
    assert (big["status"] == "biased").all() and not big["stable"].any()
    assert cal.loc[cal["epsilon"] <= 1e-3, "stable"].all()
    rec = cal[cal["recommended"]]
    assert len(rec) == 1 and rec["epsilon"].iloc[0] <= 3e-3
    assert abs(rec["llc_mean"].iloc[0] - 5) < 0.1 * 5 + 3 * rec["llc_se"].iloc[0]
    [advice] = calibration_advice(cal)
    assert f"use epsilon {rec['epsilon'].iloc[0]:g}" in advice and "0.015 (" in advice and "still moves" in advice
    # a sampler set to one of the biased step sizes is told so, with the step size to use
    at = SamplerConfig(epsilon=0.015, gamma=0.0, n_beta=n_beta, batch_size=200)
    note = epsilon_note(at, cal.assign(step=7))
    assert note.startswith("llc.sampler.epsilon = 0.015 sits past the plateau") and "at step 7" in note
    assert note.endswith(f"set --set llc.sampler.epsilon={rec['epsilon'].iloc[0]:g}") and "\n" not in note
    assert epsilon_note(SamplerConfig(epsilon=1e-3, gamma=0.0, n_beta=n_beta, batch_size=200), cal) is None
    # another n_beta or batch size is another plateau: this table says nothing about it
    assert epsilon_note(SamplerConfig(epsilon=0.015, gamma=0.0, n_beta=30.0, batch_size=200), cal) is None
    assert epsilon_note(SamplerConfig(epsilon=0.015, gamma=0.0, n_beta=n_beta, batch_size=20), cal) is None


def test_minibatch_regression_with_localisation_known_target():
    """The second case: 20 weights with curvatures 0.5 to 2, minibatches of 100 (SGLD's gradient noise adds its own
    bias), gamma = 20. The target at epsilon -> 0 is known exactly: sum n_beta h / (2 (n_beta h + gamma)) = 8.45. The
    plateau holds the small step sizes, whose estimates agree with it; 3e-3 and 1e-2 (9.7 and 15) are biased."""
    h = torch.linspace(0.5, 2.0, 20)
    loss, w, x, y = _regression(400, h, noise=0.0, seed=1)   # noise-free: L = 0 at w* on every minibatch
    batches = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)]
    n_beta, gamma = 100.0, 20.0
    target = float((n_beta * h / (2 * (n_beta * h + gamma))).sum())
    cfg = SamplerConfig(epsilon=1e-3, gamma=gamma, n_beta=n_beta, chains=8, draws=1000, burnin=400, batch_size=100)
    cal = calibrate(loss, {"w": w}, batches, cfg, [3e-4, 1e-3, 3e-3, 1e-2], [n_beta], init_loss_batches=4,
                    progress=False)
    assert cal["flat"].all()
    assert cal["status"].tolist() == ["stable", "stable", "biased", "biased"]
    on = cal[cal["stable"]]
    assert np.all(np.abs(on["llc_mean"] - target) < 3 * on["llc_se"] + 0.02 * target), (on, target)
    assert cal.loc[cal["recommended"], "epsilon"].tolist() == [1e-3]
    assert cal.loc[cal["epsilon"] == 1e-2, "llc_mean"].iloc[0] > 1.5 * target


def test_the_plateau_rule_on_tables():
    """Row by row: flat rows from the smallest epsilon agree within sigmas standard errors (never below the group's
    median error) until one does not; a lone first row is a plateau nobody confirmed; unflat and diverged rows are
    neither; older tables (no flat column, stable = flat) are read; one chain cannot be calibrated."""
    def table(means, se=0.1, flat=True, diverged=False):
        return pd.DataFrame({"epsilon": [1e-4 * 3 ** k for k in range(len(means))], "n_beta": 10.0,
                             "llc_mean": means, "llc_se": se, "flat": flat, "diverged": diverged})
    status = lambda t: epsilon_plateau(t)["status"].tolist()  # noqa: E731
    assert status(table([5.0, 5.2, 5.1, 5.3])) == ["stable"] * 4
    assert status(table([5.0, 5.2, 5.6, 5.3])) == ["stable", "stable", "biased", "biased"]    # past it: all biased
    # a creep: 5.6 agrees with its neighbour 5.4 but not with 5.0 (3 x 0.14): every smaller one on the plateau counts
    assert status(table([5.0, 5.2, 5.4, 5.6, 5.8])) == ["stable", "stable", "stable", "biased", "biased"]
    assert status(table([5.0, 7.0, 9.0])) == ["stable", "biased", "biased"]
    assert "no smaller step confirms it" in calibration_advice(epsilon_plateau(table([5.0, 7.0, 9.0])))[0]
    tiny_se = table([5.0, 5.2, 5.1], se=[0.1, 0.001, 0.1])   # a chain pair that agreed by chance is no error bar
    assert status(tiny_se) == ["stable"] * 3
    mixed = table([4.0, 5.0, 5.1, np.nan], flat=[False, True, True, False], diverged=[False, False, False, True])
    assert status(mixed) == ["not flat", "stable", "stable", "diverged"]
    old = table([5.0, 5.1, 9.0]).drop(columns=["flat", "llc_se"]).assign(stable=True, llc_std=0.2, chains=4)
    assert status(old) == ["stable", "stable", "biased"]
    two = pd.concat([table([5.0, 9.0]), table([2.0, 2.1]).assign(n_beta=3.0)], ignore_index=True)
    assert status(two) == ["stable", "biased", "stable", "stable"]                # one plateau per n_beta
    with pytest.raises(ConfigError, match="at least 2 chains"):
        calibrate(lambda p, b: (p["w"] ** 2).sum(-1, keepdim=True), {"w": torch.zeros(3)}, [None],
                  SamplerConfig(chains=1, draws=5), [1e-3], [10.0], progress=False)


def test_the_localisation_alone_bounds_the_bias_and_the_cheap_check_uses_it():
    """Without a calibration the stages still know a least bias: the localising pull alone inflates every direction's
    variance by 1/(1 - eps gamma / 4). Checked on a pure localisation (a flat loss plus a quadratic of known
    curvature): the estimate is n_beta h / (2 a (1 - eps a / 4)), a = n_beta h + gamma, to within its error."""
    d, n_beta, gamma = 8, 10.0, 300.0
    quad = lambda p, batch: 0.5 * 0.1 * (p["w"] ** 2).sum(-1, keepdim=True)   # curvature h = 0.1: a = 301  # noqa: E731
    a = n_beta * 0.1 + gamma
    for eps in (1e-4, 3e-3):
        cfg = SamplerConfig(epsilon=eps, gamma=gamma, n_beta=n_beta, chains=4, draws=2000, burnin=200, batch_size=1)
        from serpent.llc import estimate_llc
        r = estimate_llc(quad, {"w": torch.zeros(d)}, [None], cfg, progress=False, max_loss_increase=math.inf)
        exact = d * n_beta * 0.1 / (2 * a * (1 - eps * a / 4))
        assert r.mean == pytest.approx(exact, rel=0.06)
    assert exact / (d * n_beta * 0.1 / (2 * a)) - 1 >= localisation_bias(3e-3, gamma) > 0.25
    # the presets: the tiny and cpu samplers are well inside; the full preset's LLC step (the paper's epsilon 3e-3 at
    # gamma 300) inflates the estimate by at least 29 %, which its stage now says
    for name in ("tiny", "cpu"):
        c = get_preset(name)
        assert epsilon_note(c.llc.sampler) is None and epsilon_note(c.susceptibility.sampler) is None
    note = epsilon_note(get_preset("full").llc.sampler)
    assert note.startswith("llc.sampler.epsilon = 0.003 with gamma = 300 sits past the plateau") and "29 %" in note
    assert "--set llc.sampler.epsilon=0.0012" in note
    assert "every chain diverges" in epsilon_note(SamplerConfig(epsilon=0.05, gamma=100.0), name="susceptibility.sampler")
    assert epsilon_note(SamplerConfig(epsilon=1.0, gamma=0.0)) is None               # nothing to say without gamma


def test_the_stages_say_when_their_epsilon_sits_past_the_measured_plateau(tmp_path, micro_run_config, monkeypatch,
                                                                          capsys):
    """calibrate_run keeps its table in RUN/llc/; the llc and susceptibility stages read it (no sampling of their
    own) and say in one line, on standard error and in their summary, when their epsilon is past the plateau it
    measured at their n_beta, gamma and batch size."""
    import serpent.stages.llc as llc
    from serpent.rundir import Run
    from serpent.stages import calibrate_run, data_stage, llc_stage, susceptibility_stage, train_stage
    from serpent.stages.llc import epsilon_check

    sampler = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=4, batch_size=4, checkpoints=2)
    cfg = micro_run_config.with_overrides(
        model={"n_heads": 2}, llc={"sampler.chains": 2, "sampler.draws": 8, "sampler.batch_size": 4,
                                   "sampler.checkpoints": 2, "sampler.epsilon": 1e-3, "sampler.gamma": 100.0,
                                   "sampler.n_beta": 10.0},
        susceptibility={"sampler": sampler, "probe_sequences": 3, "probe_length": 16})
    run = Run.create(tmp_path / "run", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    assert epsilon_check(run) is None and epsilon_check(run, "susceptibility") is None   # nothing measured yet
    # the calibration: the measured table of a model whose estimate still moves above epsilon 1e-3
    measured = pd.DataFrame({"epsilon": [3e-4, 1e-3, 3e-3], "n_beta": 10.0, "gamma": 100.0, "batch_size": 4,
                             "chains": 2, "llc_mean": [3.0, 3.1, 4.5], "llc_std": 0.1, "llc_se": 0.07,
                             "diverged": False, "drift": 0.0, "flat": True, "error": ""})
    monkeypatch.setattr(llc, "calibrate", lambda *a, **k: epsilon_plateau(measured))
    cal = calibrate_run(run, progress=False)
    assert (run.path / "llc" / "calibration.parquet").is_file() and cal["status"].tolist()[-1] == "biased"
    assert epsilon_check(run) is None                              # the configured 1e-3 is on the plateau
    monkeypatch.setattr(llc, "FLAT_TOLERANCE", math.inf)          # 8 draws: the drift test is not the point here
    fast = Run.create(run.path, cfg.with_overrides(llc={"sampler.epsilon": 3e-3},
                                                   susceptibility={"sampler.epsilon": 3e-3}))
    capsys.readouterr()
    summary = llc_stage(fast, charts=False, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: llc.sampler.epsilon = 0.003 sits past the plateau"), err
    assert "set --set llc.sampler.epsilon=0.001" in err[0] and summary["epsilon_note"] == err[0][len("warning: "):]
    # the susceptibility sampler has the same n_beta, gamma and batch size here: the same measurement speaks to it
    sus = susceptibility_stage(fast, progress=False)
    assert sus["epsilon_note"].startswith("susceptibility.sampler.epsilon = 0.003 sits past the plateau")
    assert "--set susceptibility.sampler.epsilon=0.001" in sus["epsilon_note"]
    assert llc_stage(fast, charts=False, progress=False)["epsilon_note"] == summary["epsilon_note"]  # and when skipped
    # a calibration around the susceptibility sampler is kept beside it, and read the same way
    monkeypatch.setattr(llc, "calibrate", lambda *a, **k: epsilon_plateau(measured.assign(n_beta=30.0)))
    other = Run.create(run.path, cfg.with_overrides(susceptibility={"sampler.epsilon": 3e-3, "sampler.n_beta": 30.0}))
    calibrate_run(other, sampler="susceptibility", progress=False)
    assert (run.path / "llc" / "calibration_susceptibility.parquet").is_file()
    assert epsilon_check(other, "susceptibility", echo=lambda line: None).startswith(
        "susceptibility.sampler.epsilon = 0.003 sits past")
