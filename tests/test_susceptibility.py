"""Tests of serpent.susceptibility: format, estimator (devinterp equivalence, Gaussian known answer), driver, stage."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from serpent.errors import ConfigError, DivergenceError, SerpentError
from serpent.susceptibility import (SusceptibilityResult, SusceptibilityStats, response_matrix, response_pca,
                                    susceptibility_from_traces)
from tolerances import assert_f32_close, assert_separates, assert_within, chi_tolerance, forward_terms


def _random_traces(rng, wrs, chains=3, draws=7, n_task=2, n_probe=3, T=5, coef_seed=0):
    """Loss arrays shaped like devinterp's (chain, draw, batch, token_pos), correlated through a shared factor.

    The per-token levels and couplings are fixed by ``coef_seed``; the draws come from ``rng``."""
    out = {}
    coef = np.random.default_rng(coef_seed)
    for name in wrs:
        level, slope = coef.normal(size=(1, 1, n_probe, T)), coef.normal(size=(1, 1, n_probe, T))
        z = rng.normal(size=(chains, draws, 1, 1))
        task = 3.0 + 0.1 * z + 0.05 * rng.normal(size=(chains, draws, n_task, T))
        probe = 2.5 + level + 0.1 * z * slope + 0.05 * rng.normal(size=(chains, draws, n_probe, T))
        out[name] = (task.astype(np.float32), probe.astype(np.float32))
    return out


def _feed(traces, wrs, task_ref, probe_ref):
    chains, draws = traces[wrs[0]][0].shape[:2]
    stats = SusceptibilityStats(len(wrs), chains, traces[wrs[0]][1][0, 0].size, task_ref=task_ref,
                                probe_ref=torch.as_tensor(probe_ref))
    for d in range(draws):
        task = torch.stack([torch.as_tensor(traces[w][0][c, d]).double().mean() for w in wrs for c in range(chains)])
        probe = torch.stack([torch.as_tensor(traces[w][1][c, d]).double().reshape(-1) for w in wrs
                             for c in range(chains)])
        stats.update(task, probe)
    return stats


def test_equals_devinterp_compute_susceptibilities():
    xr = pytest.importorskip("xarray")
    from devinterp.slt.susceptibilities import compute_susceptibilities

    rng = np.random.default_rng(1)
    wrs = ["full", "l0h0", "l0h1", "l1h0"]
    traces = _random_traces(rng, wrs)
    chains, draws, n_probe, T = traces["full"][1].shape
    init_loss = (3.0 + 0.01 * rng.normal(size=(chains, T))).astype(np.float32)
    ids = rng.integers(0, 50, size=(n_probe, T + 1))
    wr_map = {}
    for w in wrs:
        task, probe = traces[w]
        ds = xr.Dataset({
            "init_loss": (("chain", "token_pos"), init_loss),
            "loss_task": (("chain", "draw", "batch_task", "token_pos"), task),
            "loss_probe": (("chain", "draw", "batch_probe", "token_pos"), probe),
            "input_ids_probe": (("batch_probe", "token"), ids),
        })
        wr_map[w] = xr.DataTree(dataset=ds)
    ref = compute_susceptibilities(wr_map, "task")["susceptibilities"]["sus"]
    assert list(ref.coords["wr"].values) == wrs[1:]
    ref = ref.values                                             # (n_probe * T, 3), batch-major like ours
    # our streaming estimator, with two different shifts (the result must not depend on them)
    baseline = float(init_loss.mean())
    # devinterp averages the float32 losses in float32 (chains x draws, and the task batch's tokens), we in float64;
    # spread: how far φ = L - L0 and δ = ℓ - L move over the draws (tests/tolerances.py)
    phis = [t.mean(axis=(2, 3)) - baseline for t, _ in traces.values()]
    deltas = [p.reshape(chains, draws, -1) - t.mean(axis=(2, 3))[..., None] for t, p in traces.values()]
    spread = max(max(np.abs(f).max() for f in phis), max(np.abs(d - d.mean(axis=(0, 1))).max() for d in deltas))
    tol = chi_tolerance(np.abs(traces["full"][1]).max(), spread, terms=chains * draws + traces["full"][0][0, 0].size)
    assert_separates(ref[:, 0] - ref[:, 1], tol, what="devinterp's chi of two components")
    for task_ref, probe_ref in [(0.0, np.zeros(n_probe * T)), (3.1, traces["full"][1][0, 0].reshape(-1))]:
        stats = _feed(traces, wrs, task_ref, probe_ref)
        chi, se = stats.chi(baseline)
        assert chi.shape == ref.shape == se.shape
        assert_within(chi, ref, tol, what=f"streaming chi vs devinterp (shift {task_ref})")
        assert np.all(se > 0)
    # the readable trace formula agrees too
    for k, w in enumerate(wrs[1:]):
        t, p = traces[w]
        ft, fp = traces["full"]
        mine = susceptibility_from_traces(t.mean(axis=(2, 3)), p.reshape(chains, draws, -1), ft.mean(axis=(2, 3)),
                                          fp.reshape(chains, draws, -1), baseline)
        assert_within(mine, ref[:, k], tol, what=f"trace formula vs devinterp ({w})")


def test_standard_error_matches_spread_of_independent_repeats():
    """SE from the chain spread should match the actual spread of χ over independent repeats (within a factor)."""
    rng = np.random.default_rng(2)
    wrs = ["full", "c"]
    chis, ses = [], []
    for _ in range(60):
        stats = _feed(_random_traces(rng, wrs, chains=4, draws=30, n_probe=1, T=2), wrs, 3.0, np.zeros(2))
        chi, se = stats.chi(3.0)
        chis.append(chi[:, 0]); ses.append(se[:, 0])
    spread = np.std(chis, axis=0, ddof=1)
    ratio = np.sqrt(np.mean(np.square(ses), axis=0)) / spread
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_stats_bad_shapes_and_empty():
    stats = SusceptibilityStats(2, 2, 3)
    with pytest.raises(SerpentError):
        stats.chi(0.0)
    with pytest.raises(ConfigError):
        stats.update(torch.zeros(3), torch.zeros(4, 3))


def _gauss_moments(S, A, B):
    """E[½xᵀAx], E[½xᵀBx], E[(½xᵀAx)(½xᵀBx)] for x ~ N(0, S)."""
    return 0.5 * np.trace(A @ S), 0.5 * np.trace(B @ S), 0.25 * (np.trace(A @ S) * np.trace(B @ S)
                                                                  + 2 * np.trace(A @ S @ B @ S))


def test_gaussian_known_answer_and_sign():
    """Quadratic losses ⇒ Gaussian posteriors: χ in closed form (the covariance of two Gaussian coordinates), including SGLD's ε-bias.

    w = (u, v) ∈ R² × R², w* = 0, L = ½wᵀAw, token losses ℓ_j = ½wᵀB_jw + c_j. Component "u" (v frozen at 0).
    Token 0 depends on u only (the component fits it: χ < 0, expresses); token 1 on v only (χ > 0, suppresses);
    token 2 on both. Tolerance: within 4 standard errors; the two large ones also within 10 %.
    (Measured: est -0.01530, 0.01078, -0.00078 ± 0.0006/0.0006/0.0003; exact -0.01539, 0.01112, -0.00068.)
    """
    from serpent.config import SamplerConfig
    from serpent.susceptibility import sample_susceptibilities

    A = np.array([[1.0, 0.3, 0.2, 0.0], [0.3, 0.8, 0.0, 0.1], [0.2, 0.0, 1.2, 0.2], [0.0, 0.1, 0.2, 0.9]])
    Bs = [np.diag([2.0, 1.0, 0.0, 0.0]), np.diag([0.0, 0.0, 1.5, 1.0]), np.full((4, 4), 0.25)]
    cs = [0.5, 1.0, 2.0]
    cfg = SamplerConfig(epsilon=0.02, gamma=1.0, n_beta=10.0, chains=8, draws=1500, burnin=100,
                        steps_between_draws=2, batch_size=1, seed=3)
    At = torch.tensor(A, dtype=torch.float32)
    Bt = torch.tensor(np.stack(Bs), dtype=torch.float32)

    def w_of(p):
        return torch.cat([p["u"], p["v"]], dim=-1)                        # (R, 4)

    def quad(w, M):
        return 0.5 * torch.einsum("ri,ij,rj->r", w, M, w)

    loss_fn = lambda p, batch: quad(w_of(p), At)[:, None]                   # (R, 1): no data noise
    observe = lambda p: (quad(w_of(p), At), torch.stack([quad(w_of(p), B) + c for B, c in zip(Bt, cs)], 1))
    params = {"u": torch.zeros(2), "v": torch.zeros(2)}
    chi, se, info = sample_susceptibilities(loss_fn, params, lambda i: None, cfg, ["u"], observe,
                                            baseline="task", progress=False, device="cpu")

    def sgld_cov(P):        # stationary covariance of the discretised chain: (P − εP²/4)⁻¹
        return np.linalg.inv(P - cfg.epsilon * P @ P / 4)

    P_full = cfg.n_beta * A + cfg.gamma * np.eye(4)
    S_full = sgld_cov(P_full)
    S_u = np.zeros((4, 4))
    S_u[:2, :2] = sgld_cov(P_full[:2, :2])
    EL, _, ELL = _gauss_moments(S_u, A, A)
    ELf = 0.5 * np.trace(A @ S_full)
    exact = []
    for B, c in zip(Bs, cs):
        _, _, ELB = _gauss_moments(S_u, A, B)
        El_f = 0.5 * np.trace(B @ S_full) + c
        El_u = 0.5 * np.trace(B @ S_u) + c
        exact.append(-((ELB + c * EL) - ELL - EL * (El_f - ELf)))
    exact = np.array(exact)
    est, err = chi[:, 0].astype(np.float64), se[:, 0].astype(np.float64)
    assert exact[0] < 0 < exact[1]
    assert np.sign(est[0]) == -1 and np.sign(est[1]) == 1
    assert np.all(np.abs(est - exact) < 4 * err + 1e-9), (est, exact, err)
    assert np.all(np.abs(est - exact)[:2] < 0.1 * np.abs(exact[:2])), (est, exact)
    assert info["phi_mean"]["u"] > 0


# ---------------------------------------------------------------------------------------------------------------
# transformers: fast and generic paths, a TransformerBridge, bad input


def _tiny_lm(n_ctx=24, d_vocab=64, seed=0):
    from serpent.config import ModelConfig
    from serpent.model import build_model
    return build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=n_ctx, d_vocab=d_vocab,
                                   seed=seed))


def _data(n=32, T=24, V=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, T), generator=g)


def _sampler(**kw):
    from serpent.config import SamplerConfig
    base = dict(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=6, batch_size=4, seed=7)
    base.update(kw)
    return SamplerConfig(**base)


def test_fast_and_generic_forward_give_the_same_susceptibilities(tmp_path):
    from serpent.susceptibility import susceptibilities
    model, data = _tiny_lm(), _data()
    probe = _data(3, 12, seed=2)
    batches = lambda i: data[(4 * i) % 32:(4 * i) % 32 + 4]
    out = {f: susceptibilities(model, probe, batches, _sampler(), components=["0:1", "1:0"], progress=False,
                               device="cpu", forward=f) for f in ("fast", "generic")}
    fast, gen = out["fast"], out["generic"]
    assert fast.settings["forward"] == "fast" and gen.settings["forward"] == "generic"
    assert fast.chi.shape == (3 * 11, 2) and np.isfinite(fast.chi).all() and np.isfinite(fast.chi_se).all()
    scale = np.abs(fast.chi).max()
    assert scale > 0
    # TransformerLens against the fused forward: per-token losses of the same chains, 6 steps (tests/tolerances.py)
    # spread: the range of the 8 minibatches' losses about L0 at w*, twice that for the chains' own movement
    with torch.no_grad():
        batch_losses = torch.stack([model(batches(i), return_type="loss") for i in range(8)])
    spread = 2 * float((batch_losses - fast.settings["init_loss"]).abs().max())
    tol = chi_tolerance(2 * fast.settings["init_loss"], spread, forward_terms(model.cfg), 6)
    assert_within(gen.chi, fast.chi, tol, what="chi: generic vs fast forward")
    assert_separates(fast.chi[:, 0] - fast.chi[:, 1], tol, what="chi of heads 0:1 and 1:0")
    # the result records what it needs to show each token in context, and survives a save/load round trip
    np.testing.assert_array_equal(fast.token_ids, probe.numpy()[fast.seq_index, fast.position])
    assert fast.position.min() == 1 and fast.position.max() == 11
    back = SusceptibilityResult.load(fast.save(tmp_path / "r.safetensors"))
    np.testing.assert_array_equal(back.chi, fast.chi)
    np.testing.assert_array_equal(back.probe_tokens, fast.probe_tokens)
    assert back.components == ["0:1", "1:0"] and back.settings["sampler"]["draws"] == 6
    assert back.settings["sign_convention"].startswith("chi < 0")


def _pythia14m_like(d_vocab=256):
    """The Pythia-14m architecture (6 layers × 4 heads, d_model 128, MLP 512, rotary on 8 dims, parallel
    attention + MLP, GPT-NeoX), randomly initialised from a ``transformers`` config and wrapped in a TransformerLens 4
    ``TransformerBridge``; vocabulary shrunk for speed."""
    from bridges import tiny_pythia
    return tiny_pythia(d_vocab=d_vocab)


def test_a_transformer_bridge_pythia14m_architecture_with_mlp_components():
    from serpent.susceptibility import component_specs, susceptibilities
    model = _pythia14m_like()
    specs = component_specs(model, "heads+mlp")
    assert len(specs) == 6 * 4 + 6 and specs[-1] == "mlp:5"
    data = _data(16, 10, V=256)
    probe = _data(2, 8, V=256, seed=3)
    res = susceptibilities(model, probe, lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4],
                           _sampler(epsilon=1e-4, draws=3), components=["0:0", "5:3", "mlp:2"], progress=False,
                           device="cpu")
    assert res.settings["forward"] == "generic"
    assert res.chi.shape == (2 * 7, 3) and np.isfinite(res.chi).all()
    assert np.abs(res.chi).max() > 0


def test_bad_input_gives_clear_errors():
    from serpent.susceptibility import susceptibilities
    model, data = _tiny_lm(n_ctx=16), _data(8, 16)
    batches = lambda i: data[:4]
    with pytest.raises(ConfigError, match="longer than the model's context"):
        susceptibilities(model, _data(2, 17), batches, _sampler(), progress=False, device="cpu")
    with pytest.raises(ConfigError, match="valid choices"):
        susceptibilities(model, _data(2, 8), batches, _sampler(), components=["0:1", "3:0"], progress=False,
                         device="cpu")
    with pytest.raises(ConfigError, match="token ids"):
        susceptibilities(model, _data(2, 8, V=100), batches, _sampler(), progress=False, device="cpu")
    with pytest.raises(ConfigError, match="attention-only"):
        susceptibilities(model, _data(2, 8), batches, _sampler(), components="heads+mlp", progress=False,
                         device="cpu")
    with pytest.raises(DivergenceError, match="epsilon"):
        susceptibilities(model, _data(2, 8), batches, _sampler(epsilon=50.0, gamma=0.0, n_beta=1e4, draws=30),
                         components=["0:0"], progress=False, device="cpu")


# ---------------------------------------------------------------------------------------------------------------
# the stage on a run directory, and the response matrix with the pattern classifier


def _trained_micro_run(tmp_path, micro_run_config, checkpoints):
    """A trained 2-layer x 2-head micro run whose susceptibility stage samples ``checkpoints`` checkpoints."""
    from serpent.stages import data_stage, train_stage
    from serpent.rundir import Run

    cfg = micro_run_config.with_overrides(
        model={"n_heads": 2},
        susceptibility={"sampler": _sampler(draws=4, batch_size=4, checkpoints=checkpoints), "probe_sequences": 3,
                        "probe_length": 16})
    run = Run.create(tmp_path / "run", cfg)
    data_stage(run, progress=False)
    train_stage(run, progress=False)
    return run, cfg


def test_stage_writes_each_step_skips_when_current_and_feeds_the_response_matrix(tmp_path, micro_run_config):
    from serpent.stages.susceptibility import load_susceptibilities, step_path, susceptibility_stage

    run, cfg = _trained_micro_run(tmp_path, micro_run_config, 2)
    steps = run.checkpoint_steps()
    summary = susceptibility_stage(run, progress=False)
    assert summary["steps"] == [steps[0], steps[-1]] and summary["computed"] == summary["steps"]
    results = load_susceptibilities(run)
    assert sorted(results) == summary["steps"]
    r = results[steps[-1]]
    assert r.chi.shape == (3 * 15, 4) and r.components == ["0:0", "0:1", "1:0", "1:1"]
    assert np.isfinite(r.chi).all() and np.all(r.chi_se > 0)
    _, names = run.documents("test")
    assert len(r.doc_names) == 3 and set(r.doc_names) <= set(names)
    assert np.all(r.probe_tokens[:, 0] == run.tokenizer().bos_id)
    # current: nothing recomputed; an explicit step list computes only what is missing
    mtime = step_path(run, steps[-1]).stat().st_mtime_ns
    assert susceptibility_stage(run, progress=False)["steps"] == summary["steps"]
    assert step_path(run, steps[-1]).stat().st_mtime_ns == mtime
    mid = steps[len(steps) // 2]
    again = susceptibility_stage(run, steps=[mid, steps[-1]], progress=False)
    assert again["computed"] == [mid]
    # a checkpoint written again (another training run in the same folder) is sampled again, the others are kept
    from serpent.checkpoints import save_checkpoint
    params = run.load_params(steps[-1])
    save_checkpoint(run.checkpoint_path(steps[-1]), {k: v * 1.001 for k, v in params.items()}, steps[-1],
                    run.config.model)
    assert susceptibility_stage(run, steps=[mid, steps[-1]], progress=False)["computed"] == [steps[-1]]
    from serpent.errors import CheckpointError
    with pytest.raises(CheckpointError, match="available"):
        susceptibility_stage(run, steps=[10 ** 6], progress=False)
    # response matrix from the pattern classifier's labels, and its principal components
    from serpent.patterns import label_result
    labels = label_result(r, run.tokenizer())["pattern"].to_numpy()
    m = response_matrix(r, labels)
    assert m.shape[0] == 4 and m.shape[1] == len(set(labels))
    for cat in m.columns:                                      # column = mean χ over that pattern's tokens
        assert_f32_close(m[cat].to_numpy(), r.chi[labels == cat].mean(0), terms=len(r), scale=np.abs(r.chi).max(),
                         what=f"response matrix column {cat}")
    assert sum(m.attrs["counts"].values()) == len(r)
    p = response_pca(m)
    assert p.scores.shape[0] == 4 and np.isclose(p.explained_variance_ratio.sum(), 1.0)
    assert np.all(np.diff(p.explained_variance_ratio) <= 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# end to end against devinterp 2.0.1 `susceptibilities` (bench/susceptibility.py runs the same at a larger size)


def devinterp_side_by_side(chains, draws, B=4, bpd=2, T=16, out_dir=None):
    """Our ``susceptibilities`` and devinterp's on the same model, minibatches, probes and settings.

    Returns χ (ours, devinterp's), their per-chain standard errors (devinterp's from its stored traces through
    our estimator), devinterp's χ recomputed from its traces by our estimator, init losses, and seconds."""
    import random
    import tempfile
    import time
    import warnings
    import xarray as xr
    from datasets import Dataset
    from devinterp.slt.susceptibilities import susceptibilities as dv_sus
    from devinterp.slt.weight_restrictions import create_param_masks
    from serpent.sgld import make_restriction
    from serpent.susceptibility import susceptibilities

    model, data = _tiny_lm(), _data(32, T)
    probe = _data(B * bpd, T, seed=2)
    cfg = _sampler(chains=chains, draws=draws, batch_size=B)
    comps = {"0:0": "l0h0", "1:1": "l1h1"}
    params = dict(model.named_parameters())
    masks = {}
    for ours, theirs in comps.items():                   # the same weights are free in both
        m, r = create_param_masks(model, theirs), make_restriction(ours, params)
        assert set(m) == set(r.masks) and all(torch.equal(m[k], r.masks[k]) for k in m)
        masks[theirs] = m
    t = time.perf_counter()
    mine = susceptibilities(model, probe, lambda i: data[(B * i) % 32:(B * i) % 32 + B], cfg,
                            components=list(comps), progress=False, device="cpu")
    t_ours = time.perf_counter() - t
    ds = Dataset.from_dict({"input_ids": data.tolist()}).with_format("torch")
    pds = Dataset.from_dict({"input_ids": probe.tolist()}).with_format("torch")
    out = str(out_dir or tempfile.mkdtemp()) + "/samples.zarr"
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = dv_sus(model, ds, {"probe": (pds, bpd)}, {"full": None, **masks}, sampling_task="probe",
                      include_sampling_task=True, lr=cfg.epsilon, n_beta=cfg.n_beta, localization=cfg.gamma,
                      num_chains=chains, num_draws=draws, batch_size=B, num_init_loss_batches=4, init_seed=cfg.seed,
                      shuffle=False, output_path=out, device="cpu")
    t_dv = time.perf_counter() - t
    perm = random.Random(1337).sample(range(B * bpd), B * bpd)    # devinterp's DeterministicShuffledSampler order
    assert np.array_equal(tree["context"]["input_ids"].values.reshape(B * bpd, T), probe.numpy()[perm])
    inv = np.argsort(perm)
    chi_dv = tree["susceptibilities"]["sus"].values.reshape(B * bpd, T - 1, 2)[inv].reshape(-1, 2)
    trees = {w: xr.open_datatree(out.replace("samples.zarr", f"samples_{w}.zarr"), engine="zarr",
                                 consolidated=False) for w in ["full", *masks]}
    init_dv = float(trees["full"]["init_loss"].values.mean())
    stats = SusceptibilityStats(3, chains, B * bpd * (T - 1))
    losses = {w: trees[w]["loss_probe"].values[:, :, inv] for w in trees}
    for d in range(draws):
        pr = torch.tensor(np.stack([losses[w][c, d].reshape(-1) for w in trees for c in range(chains)]),
                          dtype=torch.float64)
        stats.update(pr.mean(1), pr)
    chi_dv_ours, se_dv = stats.chi(init_dv)
    return dict(chi=mine.chi, se=mine.chi_se, chi_dv=chi_dv, se_dv=se_dv, chi_dv_ours=chi_dv_ours,
                init=mine.settings["init_loss"], init_dv=init_dv, seconds=t_ours, seconds_dv=t_dv)


@pytest.mark.slow
def test_end_to_end_agrees_with_devinterp_within_statistical_error(tmp_path):
    """Same model, minibatch order, probes (= sampling task), ε, γ, nβ, chains, draws; only the SGLD noise differs.

    Checks: (1) devinterp's own traces through our estimator reproduce its χ (float tolerance); (2) the init-loss
    baselines agree; (3) the two independent estimates differ by what their standard errors allow: the mean of
    (χ_ours − χ_dv)² over all tokens × heads is within [0.3, 3] × the mean of se_ours² + se_dv².
    (At 4 chains × 100 draws: ratio 0.74, z mean 0.04, z sd 1.07, correlation of the two estimates 0.68.)"""
    r = devinterp_side_by_side(chains=3, draws=10, out_dir=tmp_path)
    scale = np.abs(r["chi_dv"]).max()
    np.testing.assert_allclose(r["chi_dv_ours"], r["chi_dv"], atol=1e-5 * scale)
    assert abs(r["init"] - r["init_dv"]) < 1e-5
    ratio = np.mean((r["chi"] - r["chi_dv"]) ** 2) / np.mean(r["se"] ** 2 + r["se_dv"] ** 2)
    assert 0.3 < ratio < 3.0, ratio


def test_stage_retries_a_diverged_checkpoint_records_it_and_goes_on(tmp_path, micro_run_config, monkeypatch):
    """Issue 21: a checkpoint whose SGLD diverges is retried with smaller steps; one that still diverges is
    recorded with the advice (not sampled again on resume), the others are kept, and the explorer says so."""
    import serpent.stages.susceptibility as sus
    from serpent.stages import serpent_stage
    from serpent.errors import DivergenceError

    run, cfg = _trained_micro_run(tmp_path, micro_run_config, 3)
    from serpent.stages.sweep import select_steps
    chosen = select_steps(run.checkpoint_steps(), 3)
    eps0 = cfg.susceptibility.sampler.epsilon
    import serpent.susceptibility as science
    real, calls = science.susceptibilities, []

    def fragile(model, probe, batches, c, *, step, **kw):
        calls.append((step, c.epsilon))
        if step == chosen[-1] or (step == chosen[1] and c.epsilon > eps0 / 5):
            raise DivergenceError(f"SGLD diverged at step 2 of 4 in chain 0; use a smaller epsilon")
        return real(model, probe, batches, c, step=step, **kw)

    monkeypatch.setattr(science, "susceptibilities", fragile)      # what the stage samples with
    summary = sus.susceptibility_stage(run, progress=False)
    assert summary["steps"] == chosen[:2] and summary["retried"] == [chosen[1]]
    assert list(summary["diverged"]) == [str(chosen[-1])] and "calibrate" in summary["diverged"][str(chosen[-1])]
    assert [e for s, e in calls if s == chosen[1]] == pytest.approx([eps0, eps0 / 3, eps0 / 10])
    assert sus.load_susceptibilities(run)[chosen[1]].settings["epsilon"] == pytest.approx(eps0 / 10)
    assert sorted(sus.load_susceptibilities(run)) == chosen[:2]
    calls.clear()
    assert sus.susceptibility_stage(run, progress=False)["diverged"] == summary["diverged"] and calls == []
    page = serpent_stage(run, progress=False)
    assert page["missing_steps"] == [chosen[-1]]
    assert f"no susceptibilities at step {chosen[-1]}" in (run.path / "explorer.html").read_text()


def test_a_bridge_restriction_is_a_head_in_transformer_lens_layout_pulled_back():
    """A head of a TransformerBridge (Hugging Face parameters: q, k, v and dense weights of shape (d_model, d_model))
    frees exactly that head's rows and columns: W_Q, W_K, W_V, W_O and the Q, K, V biases of one head."""
    from serpent.sgld import pulled_back_restriction, restriction_size
    from bridges import tiny_pythia
    model = tiny_pythia(n_layers=2, n_heads=4, d_model=32, d_mlp=64, d_vocab=64, n_ctx=32)
    own = {k: v.detach() for k, v in model.named_parameters()}
    head = pulled_back_restriction(model, "1:2")
    assert restriction_size(head, own) == 4 * 32 * 8 + 3 * 8
    assert all(".layers.1." in n for n in head.masks)
    mlp = pulled_back_restriction(model, "mlp:0")
    assert restriction_size(mlp, own) == 32 * 64 + 64 + 64 * 32 + 32


def test_llc_of_a_transformer_bridge_with_a_head_restriction():
    from serpent.llc import estimate_llc
    from bridges import tiny_pythia
    model = tiny_pythia(n_layers=2, n_heads=2, d_model=16, d_mlp=32, d_vocab=64, n_ctx=32)
    data = _data(16, 12, V=64)
    res = estimate_llc(model, None, lambda i: data[(4 * i) % 16:(4 * i) % 16 + 4], _sampler(draws=4),
                       restriction="1:0", progress=False, device="cpu")
    assert np.isfinite(res.mean) and np.isfinite(res.per_chain).all()
