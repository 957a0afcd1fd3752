"""Patterning (serpent.patterning) inverts the linear response exactly where the answer is known, and the toy's
data weights reweight the training loss as documented."""

import numpy as np
import pandas as pd
import pytest
import torch

from serpent import checks
from serpent.errors import ConfigError
from serpent.induction_toy import TOY_MODEL, copyable_tokens, grow_induction_circuit, repeated_segments
from serpent.model import build_model, model_params, per_token_loss
from serpent.patterning import circuit_target, class_weights, patterning_shift, zero_sum_shift


def test_shift_reaches_an_achievable_target_with_the_smallest_zero_sum_shift():
    rng = np.random.default_rng(0)
    chi = rng.normal(size=(5, 3))
    proj = np.eye(3) - 1 / 3
    wanted = rng.normal(size=3)
    wanted -= wanted.mean()                     # a zero-sum shift
    d_mu = chi @ wanted                          # ... and the response it produces: reachable exactly
    shift = zero_sum_shift(chi, d_mu)
    assert shift.sum() == pytest.approx(0.0, abs=1e-12)
    assert chi @ shift == pytest.approx(d_mu, abs=1e-10)
    assert shift == pytest.approx(wanted, abs=1e-10)          # unique here: chi P has rank 2 = zero-sum dims
    # an unreachable target: the least-squares answer, no zero-sum shift does better
    d_mu = rng.normal(size=5)
    best = np.linalg.norm(chi @ zero_sum_shift(chi, d_mu) - d_mu)
    for _ in range(200):
        other = proj @ rng.normal(size=3)
        assert np.linalg.norm(chi @ other - d_mu) >= best - 1e-12


def test_frames_in_and_weights_out():
    chi = pd.DataFrame({"copyable": [-0.04, -0.02], "new": [0.10, 0.05], "empty": [np.nan, np.nan]},
                       index=["1:0", "0:2"])
    shift = patterning_shift(chi, {"1:0": -1.0})        # unnamed components are asked to stay
    assert list(shift.index) == ["copyable", "new"]      # a class without values is left out
    assert shift["copyable"] > 0 > shift["new"]          # more of what the head expresses
    up, down = class_weights(shift, 0.5), class_weights(shift, -0.5)
    assert up == pytest.approx({"copyable": 1.5, "new": 0.5}) and down == pytest.approx({"copyable": 0.5, "new": 1.5})
    assert class_weights(shift, 0.0) == pytest.approx({"copyable": 1.0, "new": 1.0})
    assert min(class_weights(shift, 5.0).values()) > 0    # floored, never negative
    with pytest.raises(ConfigError, match="lacks"):
        patterning_shift(chi, {"9:9": -1.0})
    with pytest.raises(ConfigError, match="all zeros"):
        patterning_shift(chi, {"1:0": 0.0})
    with pytest.raises(ConfigError, match="no previous-token or induction heads"):
        circuit_target({"previous_token": [], "induction": []})
    assert circuit_target({"previous_token": ["0:2"], "induction": ["1:0", "1:3"]}) == \
        {"0:2": -1.0, "1:0": -1.0, "1:3": -1.0}


def test_toy_data_weights_reweight_the_loss():
    cfg = TOY_MODEL
    plain = grow_induction_circuit(cfg, steps=3, eval_every=3, progress=False, seed=3)
    even = grow_induction_circuit(cfg, steps=3, eval_every=3, progress=False, seed=3,
                                  data_weights={"copyable": 2.0, "new": 2.0})
    for (name, a), (_, b) in zip(plain.model.named_parameters(), even.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name     # equal weights: the same training
    # only copyable tokens count: the first step's gradient is that of their mean loss alone
    torch.manual_seed(3)
    model = build_model(cfg)
    params = model_params(model)
    batch = repeated_segments(16, cfg.n_ctx, cfg.d_vocab, seed=3 * 1_000_003 + 1)
    mask = torch.as_tensor(copyable_tokens(batch)[:, 1:])
    assert 0 < mask.float().mean() < 1
    per_token_loss(params, batch, cfg)[mask].mean().backward()
    expected = {k: v.grad.clone() for k, v in params.items()}
    only = grow_induction_circuit(cfg, steps=1, eval_every=1, progress=False, seed=3, keep_every=1,
                                  data_weights={"copyable": 1.0, "new": 0.0})
    plain1 = grow_induction_circuit(cfg, steps=1, eval_every=1, progress=False, seed=3, keep_every=1)
    moved = {k: only.snapshots[1][k] - only.snapshots[0][k] for k in expected}
    moved_plain = {k: plain1.snapshots[1][k] - plain1.snapshots[0][k] for k in expected}
    # AdamW's first step moves each weight by -lr * sign(grad) (plus decay): the signs of the masked gradient
    key = "blocks.1.attn.W_Q"
    agree = (torch.sign(moved[key]) == -torch.sign(expected[key]))[expected[key].abs() > 1e-8].float().mean()
    agree_plain = (torch.sign(moved_plain[key]) == -torch.sign(expected[key]))[expected[key].abs() > 1e-8]
    assert agree > 0.99 and agree_plain.float().mean() < agree
    with pytest.raises(ConfigError, match="data_weights"):
        grow_induction_circuit(cfg, steps=1, progress=False, data_weights={"copyable": -1.0, "new": 1.0})
    with pytest.raises(ConfigError, match="data_weights"):
        grow_induction_circuit(cfg, steps=1, progress=False, data_weights={"induction": 1.0})


def test_patterning_check_accepts_the_solution_and_names_mistakes():
    assert checks.check_patterning_shift(zero_sum_shift)
    cases = {
        "does not sum to zero": lambda c, d: np.linalg.pinv(c) @ d,
        "sign is flipped": lambda c, d: -zero_sum_shift(c, d),
        "pseudo-inverse": lambda c, d: (np.eye(c.shape[1]) - 1 / c.shape[1]) @ c.T @ d,
        "project first": lambda c, d: (np.eye(c.shape[1]) - 1 / c.shape[1]) @ np.linalg.pinv(c) @ d,
        "one per class": lambda c, d: np.zeros(c.shape[0]),
    }
    for needle, fn in cases.items():
        with pytest.raises(checks.CheckFailed, match=needle):
            checks.check_patterning_shift(fn)
