"""The SGLD engine: stationary law, restrictions, seeding, batching, divergence, restriction specs."""
import math

import pytest
import torch

from serpent.checkpoints import expected_shapes
from serpent.config import ModelConfig, SamplerConfig
from serpent.errors import ConfigError, DivergenceError
from serpent.model import build_model, model_params, stack_params
from serpent.sgld import (DrawState, head_restrictions, make_restriction, module_loss_fn, restriction_size,
                          run_sgld, sgld_steps, transformer_loss_fn)
from tolerances import assert_f32_close, assert_separates, f32_tolerance, forward_terms

MC = ModelConfig(n_layers=2, n_heads=4, d_model=16, d_head=4, n_ctx=16, d_vocab=64)



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def _quadratic(a: float):
    """L(w) = (a/2) * sum_j w_j^2 over independent coordinates (summed, so each is its own 1-D chain)."""
    return lambda p, batch: 0.5 * a * (p["w"] ** 2).sum(-1, keepdim=True)


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_stationary_variance_is_the_discretised_gaussian_one(eps):
    # 1-D Gaussian target with precision p = n_beta * a + gamma; SGLD without MH has variance 1/(p (1 - eps p / 4))
    a, n_beta, gamma, N = 1.0, 10.0, 10.0, 4000
    p = n_beta * a + gamma
    cfg = SamplerConfig(epsilon=eps, gamma=gamma, n_beta=n_beta, chains=2, draws=400, burnin=200, batch_size=1)
    sq_sum = torch.zeros(())
    count = [0]

    def on_draw(s: DrawState):
        sq_sum.add_((s.params["w"].double() ** 2).sum())
        count[0] += s.params["w"].numel()

    # the summed loss of 4000 coordinates is large: lift the runaway bound (the default suits mean losses)
    run_sgld(_quadratic(a), {"w": torch.zeros(N)}, lambda i: None, cfg, on_draw=on_draw, progress=False,
             max_loss_increase=math.inf)
    var = float(sq_sum) / count[0]
    expected = 1.0 / (p * (1.0 - eps * p / 4.0))
    assert var == pytest.approx(expected, rel=0.03)
    # and it is measurably not the continuous-time answer 1/p
    assert abs(var - 1.0 / p) > 0.05 / p


def test_restricted_sampling_leaves_masked_weights_bit_identical():
    model = build_model(MC)
    w0 = {k: v.detach().clone() for k, v in model_params(model).items()}
    half = torch.zeros_like(w0["blocks.0.attn.b_O"])
    half[::2] = 1.0
    from serpent.sgld import Restriction
    restrictions = [make_restriction("1:2", w0), make_restriction("embed.W_E", w0),
                    Restriction("half b_O", {"blocks.0.attn.b_O": half})]
    toks = torch.randint(0, MC.d_vocab, (10, 4, MC.n_ctx))
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=6, batch_size=4)
    last = {}

    def on_draw(s):
        last.update({k: v.clone() for k, v in s.params.items()})

    run_sgld(transformer_loss_fn(MC), w0, lambda i: toks[i % 10], cfg, restrictions, on_draw=on_draw, progress=False)
    heads = {f"blocks.1.attn.{n}" for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
    for r in range(6):                                  # replica r = restriction * chains + chain
        ri = r // 2
        for name, v in w0.items():
            got = last[name][r]
            if ri == 0 and name in heads:
                assert torch.equal(torch.cat([got[:2], got[3:]]), torch.cat([v[:2], v[3:]])), name
                assert not torch.equal(got[2], v[2]), name  # the free head did move
            elif ri == 1 and name == "embed.W_E":
                assert not torch.equal(got, v)
            elif ri == 2 and name == "blocks.0.attn.b_O":
                assert torch.equal(got[1::2], v[1::2]) and not torch.equal(got[::2], v[::2])
            else:
                assert torch.equal(got, v), (r, name)
    # the caller's tensors are untouched
    for name, v in model_params(model).items():
        assert torch.equal(v.detach(), w0[name])


def test_seeded_runs_are_reproducible_and_chain_c_uses_seed_plus_c():
    quad = _quadratic(1.0)
    cfg2 = SamplerConfig(epsilon=0.05, gamma=1.0, n_beta=5.0, chains=2, draws=20, batch_size=1, seed=7)
    w0 = {"w": torch.zeros(5)}
    a = run_sgld(quad, w0, lambda i: None, cfg2, record_traces=True, progress=False)
    b = run_sgld(quad, w0, lambda i: None, cfg2, record_traces=True, progress=False)
    assert torch.equal(a.traces, b.traces) and torch.equal(a.mean_loss, b.mean_loss)
    assert not torch.equal(a.traces[0], a.traces[1])            # chains get different noise
    # chain 1 of seed 7 is chain 0 of seed 8
    cfg1 = SamplerConfig(**{**cfg2.to_dict(), "chains": 1, "seed": 8})
    c = run_sgld(quad, w0, lambda i: None, cfg1, record_traces=True, progress=False)
    # one chain alone against the same chain batched with another: a sum of 5 squares per step, 20 steps
    _, tol = assert_f32_close(c.traces[0], a.traces[1], terms=5, steps=sgld_steps(cfg1), what="chain alone vs batched")
    other = run_sgld(quad, w0, lambda i: None, SamplerConfig(**{**cfg2.to_dict(), "seed": 9}), record_traces=True,
                     progress=False)
    assert_separates(other.traces - a.traces, tol, factor=1e3, what="seed 9 vs seed 7")
    assert_separates(a.traces[0] - a.traces[1], tol, factor=1e3, what="chain 0 vs chain 1")


def test_batched_restrictions_equal_separate_runs_and_share_noise():
    # all restrictions in one batched run == each restriction on its own (same seed), within float tolerance
    model = build_model(MC)
    w0 = {k: v.detach() for k, v in model_params(model).items()}
    toks = torch.randint(0, MC.d_vocab, (10, 3, MC.n_ctx))
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=5, batch_size=3)
    rs = [make_restriction("full", w0), make_restriction("0:1", w0)]
    fn = transformer_loss_fn(MC)
    both = run_sgld(fn, w0, lambda i: toks[i % 10], cfg, rs, record_traces=True, progress=False)
    assert both.restrictions == ["full", "0:1"] and both.traces.shape == (4, sgld_steps(cfg))
    for i, r in enumerate(rs):
        alone = run_sgld(fn, w0, lambda i: toks[i % 10], cfg, [r], record_traces=True, progress=False)
        # the loss of 3 x 15 tokens through the model, over the run's steps (tests/tolerances.py)
        terms = forward_terms(MC, tokens=3 * (MC.n_ctx - 1))
        assert_f32_close(both.by_restriction(both.traces)[i], alone.traces, terms=terms, steps=sgld_steps(cfg),
                         what=f"restriction {r.name}: batched vs alone")
        assert_f32_close(alone.init_loss, both.init_loss, terms=terms, what="init loss: batched vs alone")
    tol = f32_tolerance(both.traces.abs().max(), terms, sgld_steps(cfg))
    assert_separates(both.traces[0] - both.traces[2], tol, what="restriction full vs 0:1, chain 0")


def test_a_head_sweep_shares_frozen_rows_and_gets_the_same_chains():
    # run_sgld hands transformer_loss_fn ReplicaParams: layer 0 once for the layer-1 heads, no unembedding gradient
    # for head rows. A loss function that does not declare it gets plain dicts; both runs agree
    model = build_model(MC)
    w0 = {k: v.detach() for k, v in model_params(model).items()}
    toks = torch.randint(0, MC.d_vocab, (10, 3, MC.n_ctx))
    cfg = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=6, batch_size=3)
    rs = [make_restriction("full", w0), *head_restrictions(w0, MC.n_layers, MC.n_heads)]
    fast = transformer_loss_fn(MC)
    seen = []
    shared = run_sgld(fast, w0, lambda i: toks[i % 10], cfg, rs, record_traces=True, progress=False,
                      on_draw=lambda s: seen.append(type(s.params).__name__))
    plain = run_sgld(lambda p, b: fast(dict(p), b), w0, lambda i: toks[i % 10], cfg, rs, record_traces=True,
                     progress=False)
    assert seen and set(seen) == {"ReplicaParams"}
    # the same chains through another grouping of the batched products: losses of 3 x 15 tokens over the steps; the
    # distance from w* sums the squares of every parameter of the model
    n = sgld_steps(cfg)
    assert_f32_close(shared.traces, plain.traces, terms=forward_terms(MC, tokens=3 * (MC.n_ctx - 1)), steps=n,
                     what="traces: shared rows vs plain")
    n_params = sum(v.numel() for v in w0.values())
    _, tol = assert_f32_close(shared.final_distance, plain.final_distance, terms=n_params, steps=n,
                              what="final distance: shared rows vs plain")
    assert_separates(plain.final_distance[0] - plain.final_distance[1], tol, what="distance of chains 0 and 1")


def test_schedule_draw_count_and_on_draw_state():
    cfg = SamplerConfig(epsilon=0.01, gamma=1.0, n_beta=1.0, chains=3, draws=4, burnin=5, steps_between_draws=3,
                        batch_size=1)
    seen = []

    def on_draw(s):
        seen.append((s.step, s.draw, tuple(s.params["w"].shape), tuple(s.batch_loss.shape)))

    res = run_sgld(_quadratic(1.0), {"w": torch.zeros(2)}, [None], cfg, on_draw=on_draw, record_traces=True,
                   progress=False)
    assert sgld_steps(cfg) == 5 + 4 * 3 == res.steps
    assert [s[0] for s in seen] == [5, 8, 11, 14] and [s[1] for s in seen] == [0, 1, 2, 3]
    assert all(s[2] == (3, 2) and s[3] == (3,) for s in seen)
    # mean_loss is the mean of the trace at the draw steps; mean_loss_all averages every step
    # the same float32 trace values averaged in another order: 4 and 17 terms
    assert_f32_close(res.mean_loss, res.traces[:, [5, 8, 11, 14]].mean(1), terms=4, what="mean loss at draws")
    assert_f32_close(res.mean_loss_all, res.traces.mean(1), terms=res.steps, what="mean loss over all steps")
    assert res.by_restriction(res.mean_loss).shape == (1, 3)


def test_divergence_stops_with_step_chain_restriction_and_advice():
    # eps * p = 0.5 * 100 > 4: the chain explodes geometrically
    cfg = SamplerConfig(epsilon=0.5, gamma=0.0, n_beta=100.0, chains=2, draws=500, batch_size=1)
    with pytest.raises(DivergenceError) as e:
        run_sgld(_quadratic(1.0), {"w": torch.ones(3) * 0.1}, lambda i: None, cfg, progress=False, check_every=5)
    msg = str(e.value)
    assert "step" in msg and "chain" in msg and "'full'" in msg and "smaller epsilon" in msg and "larger gamma" in msg
    step = int(msg.split("at step ")[1].split()[0])
    assert step < 100

    # a NaN loss is never returned silently
    def nan_from_5(p, batch):
        out = 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)
        return out * (float("nan") if batch >= 5 else 1.0)

    cfg = SamplerConfig(epsilon=0.01, gamma=1.0, n_beta=1.0, chains=2, draws=30, batch_size=1)
    with pytest.raises(DivergenceError, match="at step 5 "):
        run_sgld(nan_from_5, {"w": torch.zeros(2)}, lambda i: i, cfg, progress=False, check_every=50)


def test_head_restriction_sizes_match_devinterp_for_the_3m_model():
    shapes = expected_shapes(ModelConfig())
    params = {k: torch.zeros(s) for k, s in shapes.items()}
    r = make_restriction("1:6", params, n_heads=8)
    assert restriction_size(r, params) == 32_864
    assert set(r.masks) == {f"blocks.1.attn.{n}" for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
    assert restriction_size(make_restriction("full", params), params) == sum(v.numel() for v in params.values())
    hs = head_restrictions(params, 2, 8)
    assert [h.name for h in hs[:3]] == ["0:0", "0:1", "0:2"] and hs[-1].name == "1:7" and len(hs) == 16
    assert restriction_size(make_restriction("unembed.W_U", params), params) == 256 * 5000


@pytest.mark.parametrize("spec", ["2:0", "0:8", "mlp:0", "attention", "", "1:x"])
def test_bad_restriction_spec_lists_valid_choices(spec):
    shapes = expected_shapes(ModelConfig())
    params = {k: torch.zeros(s) for k, s in shapes.items()}
    with pytest.raises(ConfigError) as e:
        make_restriction(spec, params)
    assert "'full'" in str(e.value) and "'1:7'" in str(e.value)


def test_bad_inputs_raise_config_errors():
    cfg = SamplerConfig(epsilon=0.01, chains=1, draws=2, batch_size=1)
    with pytest.raises(ConfigError, match="replica dimension"):
        run_sgld(lambda p, b: p["w"].sum(), {"w": torch.zeros(2)}, [None], cfg, progress=False)
    with pytest.raises(ConfigError, match="unknown parameter"):
        from serpent.sgld import Restriction
        run_sgld(_quadratic(1.0), {"w": torch.zeros(2)}, [None], cfg, [Restriction("x", {"v": None})],
                 progress=False)
    with pytest.raises(ConfigError, match="batches"):
        run_sgld(_quadratic(1.0), {"w": torch.zeros(2)}, [], cfg, progress=False)


def test_module_loss_fn_matches_a_hand_written_stacked_loss():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    x, y = torch.randn(7, 3), torch.randn(7, 2)
    fn = module_loss_fn(net, lambda out, b: ((out - b[1]) ** 2).sum(-1))
    p = stack_params(dict(net.named_parameters()), 4)
    p = {k: v + 0.1 * torch.randn_like(v) for k, v in p.items()}
    got = fn(p, (x, y))
    want = ((torch.einsum("bi,roi->rbo", x, p["weight"]) + p["bias"][:, None, :] - y) ** 2).sum(-1)
    assert got.shape == (4, 7)
    # 3 products and a bias, then 2 squares summed; scale: the largest squared residual
    assert_f32_close(got, want, terms=3 + 1 + 2, what="module loss vs hand-written")


def test_fp16_sampling_matches_fp32():
    """GPUs without bf16 (a T4) sample in fp16 with a scaled loss: the same chains as fp32, within fp16's precision."""
    from serpent.config import ModelConfig, SamplerConfig
    from serpent.llc import estimate_llc
    from serpent.model import build_model, model_params
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32, d_head=8, n_ctx=64, d_vocab=300)
    params = model_params(build_model(cfg))
    tokens = torch.randint(0, 300, (4, 64), generator=torch.Generator().manual_seed(0))
    out = {}
    for precision in ("fp32", "fp16"):
        sc = SamplerConfig(epsilon=1e-3, gamma=100.0, n_beta=10.0, chains=2, draws=10, batch_size=4,
                           precision=precision)
        out[precision] = estimate_llc(cfg, params, lambda i: tokens, sc, progress=False)
    a, b = out["fp32"], out["fp16"]
    assert abs(a.init_loss - b.init_loss) < 1e-2 and a.mean > 0.1
    assert abs(a.mean - b.mean) < 0.05 * abs(a.mean)


# --------------------------------------------------------------------------------------- the update as one function

def test_sgld_update_is_the_written_formula_with_mask_and_weight_decay():
    from serpent.sgld import sgld_update
    g = torch.Generator().manual_seed(3)
    w, grad, w_star, xi = (torch.randn(2, 3, 5, generator=g, dtype=torch.float64) for _ in range(4))
    mask = (torch.rand(2, 1, 5, generator=g) > 0.5).double()
    eps, nb, gamma, wd = 0.01, 7.0, 3.0, 0.2
    want = w - (eps / 2) * mask * (nb * grad + gamma * (w - w_star) + wd * w) + math.sqrt(eps) * mask * xi
    w_copy, grad_copy = w.clone(), grad.clone()
    got = sgld_update(w, grad, w_star, xi, epsilon=eps, n_beta=nb, gamma=gamma, weight_decay=wd, mask=mask)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    assert torch.equal(w, w_copy) and torch.equal(grad, grad_copy)      # not in place unless asked
    assert torch.equal(got[mask.expand_as(w) == 0], w[mask.expand_as(w) == 0])   # masked weights bit-identical
    # in place: w is the result, grad is consumed; the same numbers
    out = sgld_update(w, grad, w_star, xi, epsilon=eps, n_beta=nb, gamma=gamma, weight_decay=wd, mask=mask,
                      in_place=True)
    assert out is w and torch.equal(w, got) and not torch.equal(grad, grad_copy)
    # noise broadcast over restrictions, as run_sgld passes it: (chains, P) against (restrictions, chains, P)
    got2 = sgld_update(w_copy, grad_copy, w_star, xi[0], epsilon=eps, n_beta=nb, gamma=0.0)
    assert torch.allclose(got2, w_copy - (eps / 2) * nb * grad_copy + math.sqrt(eps) * xi[0], rtol=1e-12)


# Recorded from run_sgld before the update became sgld_update and run_sgld was split (commit 81e58fe): a quadratic
# loss (elementwise, so the numbers do not depend on a BLAS), three restrictions (full, one parameter, a half mask),
# gamma and weight decay on, two chains, seed 7. The refactored engine must give the same numbers bit for bit.
_GOLDEN_INIT = 2.925976514816284
_GOLDEN_TRACES = [
    [3.0009765625, 2.277327060699463, 2.258042097091675, 2.260658025741577, 2.2110862731933594, 2.1153833866119385,
     1.904568076133728, 2.165327787399292],
    [3.0009765625, 2.7338786125183105, 2.773582696914673, 2.187351703643799, 2.0793352127075195, 1.3825883865356445,
     1.5430915355682373, 1.6534264087677002],
    [3.0009765625, 2.794191837310791, 2.7512025833129883, 2.557136058807373, 2.6415393352508545, 2.642235517501831,
     2.7340006828308105, 3.0578227043151855],
    [3.0009765625, 2.7416253089904785, 2.8391847610473633, 2.494088888168335, 2.465963840484619, 2.4796528816223145,
     2.550065040588379, 2.6901440620422363],
    [3.0009765625, 2.848863124847412, 2.7292237281799316, 2.7520077228546143, 2.745528221130371, 2.6275382041931152,
     2.619640827178955, 2.725846290588379],
    [3.0009765625, 2.866523027420044, 2.7551636695861816, 2.73915696144104, 2.8375096321105957, 2.935054302215576,
     3.057570457458496, 3.173360586166382]]
_GOLDEN_W = [
    [0.30389076471328735, -0.8390191793441772, 0.6910552978515625, 1.688276767730713, 0.5410764813423157],
    [0.4743075966835022, -0.35800862312316895, 0.040208034217357635, 1.7209867238998413, -0.06876900047063828],
    [0.5, -1.0, 0.25, 2.0, 0.0], [0.5, -1.0, 0.25, 2.0, 0.0],
    [0.30389076471328735, -1.0, 0.6910552978515625, 2.0, 0.5410764813423157],
    [0.4743075966835022, -1.0, 0.040208034217357635, 2.0, -0.06876900047063828]]
_GOLDEN_V = [
    [1.1099705696105957, -0.5177242159843445, 0.3586001396179199],
    [0.5715023279190063, -0.3296020030975342, 0.36159995198249817],
    [1.1099705696105957, -0.5177242159843445, 0.3586001396179199],
    [0.5715023279190063, -0.3296020030975342, 0.36159995198249817], [1.0, -0.5, 0.75], [1.0, -0.5, 0.75]]
_GOLDEN_DIST = [1.0673977136611938, 1.0259885787963867, 0.5085921287536621, 0.5869242548942566, 0.7861624956130981,
                0.16479569673538208]


def test_run_sgld_gives_the_recorded_numbers_bit_for_bit():
    from serpent.sgld import Restriction

    def loss(p, b):
        return 0.5 * ((p["w"] - b) ** 2).sum(-1, keepdim=True) + 0.25 * (p["v"] ** 4).sum(-1, keepdim=True)

    w0 = {"w": torch.tensor([0.5, -1.0, 0.25, 2.0, 0.0]), "v": torch.tensor([1.0, -0.5, 0.75])}
    rs = [make_restriction("full", w0), make_restriction("v", w0),
          Restriction("half w", {"w": torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])})]
    cfg = SamplerConfig(epsilon=0.01, gamma=5.0, n_beta=10.0, weight_decay=0.1, chains=2, draws=3, burnin=2,
                        steps_between_draws=2, batch_size=1, seed=7)
    last = {}
    res = run_sgld(loss, w0, lambda i: 0.1 * i, cfg, rs, record_traces=True, progress=False, init_loss_batches=2,
                   on_draw=lambda s: last.update({k: v.clone() for k, v in s.params.items()}))
    assert res.init_loss == _GOLDEN_INIT
    assert torch.equal(res.traces, torch.tensor(_GOLDEN_TRACES))
    assert torch.equal(last["w"], torch.tensor(_GOLDEN_W)) and torch.equal(last["v"], torch.tensor(_GOLDEN_V))
    assert torch.equal(res.final_distance, torch.tensor(_GOLDEN_DIST))
