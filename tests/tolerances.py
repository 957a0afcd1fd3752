"""Tolerances derived from float32 arithmetic, for tests that compare two computations of the same number.

Two computations of one quantity are either the **same arithmetic** (same operations, same shapes, same order: the
same process resumed, a checkpoint computed whole on one rank, a cached result) and then equal bit for bit
(``np.testing.assert_array_equal``, ``torch.equal``), or the **same mathematics in another order** (a batched matrix
product of another shape, a reduction split across ranks, a fused forward against TransformerLens, a blocked cross
entropy) and then differ by rounding only. For the second kind this module gives the tolerance, from:

* ``u = 2**-24``, float32's unit roundoff: one rounded operation is within ``u`` (relative) of the exact result.
* ``scale``: the size of the values being summed (for a loss, the loss; for a difference of losses such as the LLC's
  ``n_beta (E[L] - L0)``, the losses themselves times ``n_beta``, not the small difference).
* ``terms``: how many terms the longest chain of reductions behind the number adds up (a dot product over
  ``d_model``, a softmax over the context, a log-sum-exp over the vocabulary, a mean over the batch's tokens).
  Summed in float32, the error of a sum of ``n`` terms is at most ``n u`` of the terms' scale in the worst case, and
  at most ``lam sqrt(n) u`` with probability at least ``1 - 2 exp(-lam**2 / 2)`` when the roundings are independent
  (Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019). Two orders
  of the same sum each carry such an error, so they differ by at most twice that.
* ``steps``: an SGLD chain (or a training run) carries every step's rounding into the next step's weights. With the
  same noise, two chains that round differently drift apart by the sum of the per-step differences; the
  localisation term ``gamma`` contracts them at the course's settings (``eps gamma / 2 = 0.05`` per step), so they
  add up at most like independent errors over ``1 + steps`` evaluations, i.e. a factor ``sqrt(1 + steps)``.

The tolerance is ``SAFETY * u * scale * sqrt(terms * (1 + steps))`` with ``SAFETY = 2 * 4``: two computations,
each within ``lam = 4`` of the probabilistic bound (exceeded with probability below 7e-4 per compared number, and far
less in practice, since the bound holds for the worst arrangement of signs). It depends on neither the machine nor
the thread count: only on the arithmetic.

The tolerance must still catch a real error (a wrong seed, a wrong chain, a wrong head): tests that compare chains
check that the difference between two chains that *should* differ is far above it, and say by how much
(:func:`assert_separates`). With ``SERPENT_TOLERANCE_REPORT=1`` every comparison prints its observed difference and
tolerance at the end of the session (tests/conftest.py), which is how the margins quoted in the tests were measured.

Example, the distributed LLC test: per-chain LLC ``= n_beta (mean loss over draws - init loss)`` with
``n_beta = 10`` and losses near 7.6 (the issue's machine). One token's loss goes through about 600 rounded additions
(:func:`forward_terms`), and the mean over a batch of 4 x 31 tokens averages those errors down and adds its own sum:
128 terms in all; with 8 SGLD steps the tolerance is ``8 u * 76 * sqrt(128 * 9) = 1.2e-3``. Observed: 4.8e-6 between
one process and two ranks on the issue's machine (one float32 ulp of the loss, times ``n_beta``), 0 here; a real
error, the other chain's value, is 1.8 (1,800 times the tolerance). Across the numerical tests the largest observed
difference is 0.12 of its tolerance and the smallest separation from a real error 9 times it (tests/test_distributed.py,
the Pythia-shaped model, whose components barely differ at epsilon 1e-4); see each test's ``assert_separates``.
"""
from __future__ import annotations

import math
import os

import numpy as np

U = 2.0 ** -24            # float32 unit roundoff (half the spacing of floats at 1)
SAFETY = 8.0              # 2 computations x lam = 4 (see the module docstring)

_REPORT: list[tuple[str, float, float]] = []


def f32_tolerance(scale: float, terms: int = 1, steps: int = 0) -> float:
    """Absolute tolerance between two float32 computations of a number whose inputs have size ``scale``, reached
    through ``terms`` rounded additions, after ``steps`` steps of a chain (0 for a plain evaluation).

    >>> round(f32_tolerance(1.0, terms=100) / U)
    80
    >>> round(f32_tolerance(76.0, terms=128, steps=8), 4)
    0.0012
    """
    if terms < 1 or steps < 0:
        raise ValueError(f"terms >= 1 and steps >= 0, got {terms}, {steps}")
    return SAFETY * U * abs(float(scale)) * math.sqrt(terms * (1 + steps))


def forward_terms(cfg, tokens: int = 1, n_ctx: int | None = None) -> int:
    """Rounded additions behind one mean per-token loss of an attention-only (or MLP) transformer ``cfg``
    (a ``ModelConfig`` or a TransformerLens config; ``n_ctx`` the length of the sequences when shorter than the
    model's context): per layer a layer norm and an output projection over ``d_model``, a query-key dot product
    over ``d_head``, a softmax and a weighted sum over the context, an MLP's two products; then the unembedding
    over ``d_model``, a log-sum-exp over the vocabulary, and a mean over ``tokens`` tokens.

    >>> from serpent.config import ModelConfig
    >>> forward_terms(ModelConfig(n_layers=2, n_heads=8, d_model=32, d_head=4, n_ctx=32, d_vocab=300))
    596
    >>> forward_terms(ModelConfig(n_layers=2, n_heads=8, d_model=32, d_head=4, n_ctx=32, d_vocab=300), tokens=124)
    128
    """
    d_mlp = getattr(cfg, "d_mlp", None) or 0
    attn_only = getattr(cfg, "attn_only", True)
    per_layer = 2 * cfg.d_model + cfg.d_head + 2 * (n_ctx or cfg.n_ctx) + (0 if attn_only else cfg.d_model + d_mlp)
    per_token = cfg.n_layers * per_layer + cfg.d_model + cfg.d_vocab
    # a mean over N tokens averages their independent errors down (variance / N) and adds its own N-term sum
    return math.ceil(per_token / max(1, tokens)) + max(1, tokens) - 1


def chi_tolerance(loss_scale: float, spread: float, terms: int, steps: int = 0) -> float:
    """Tolerance for susceptibilities χ = −(E[φ δ] − E[φ] E_full[δ]) with φ = L − L0 (the task loss over the draws
    against the loss at w*) and δ = ℓ − L (each probe token's loss against the task loss).

    Each loss carries ``e = f32_tolerance(loss_scale, terms, steps)``. χ is a covariance over the draws, so a constant
    error cancels and a varying one is multiplied by how far the *other* factor moves: ``spread``, a bound on |φ|
    and on δ's variation over the draws (the task loss's range over the draws' minibatches about L0, measured by the
    caller). The two products E[φ δ] and E[φ] E_full[δ] each take an error in either factor: 4 terms of at most
    ``e * spread``. (Bounding the factors by the losses themselves instead would be ~100 times looser than needed
    and no longer tell one head's χ from another's.) The estimator itself accumulates in float64.

    >>> chi_tolerance(5.0, 0.5, terms=100, steps=3) == 4 * 0.5 * f32_tolerance(5.0, 100, 3)
    True
    """
    return 4.0 * abs(float(spread)) * f32_tolerance(loss_scale, terms, steps)


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_f32_close(actual, expected, *, terms: int, steps: int = 0, scale: float | None = None,
                     what: str = "") -> tuple[float, float]:
    """Assert ``max |actual - expected| <= f32_tolerance(scale, terms, steps)``; ``scale`` defaults to
    ``max |expected|`` (rounding errors scale with the largest values summed, so small entries get the same absolute
    tolerance as large ones). Returns ``(observed difference, tolerance)``."""
    e = _as_array(expected)
    if scale is None:
        scale = float(np.abs(e).max()) if e.size else 0.0
    tol = f32_tolerance(scale, terms, steps)
    return assert_within(actual, e, tol, what=f"{what} (scale {scale:.3g}, {terms} terms, {steps} steps)"), tol


def assert_within(actual, expected, tol: float, *, what: str = "") -> float:
    """Assert ``max |actual - expected| <= tol`` for a tolerance worked out by the caller from :func:`f32_tolerance`;
    returns the observed difference (and records it for the report)."""
    a, e = _as_array(actual), _as_array(expected)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    assert np.isfinite(a).all() and np.isfinite(e).all(), f"{what}: non-finite values"
    diff = float(np.abs(a - e).max()) if a.size else 0.0
    _REPORT.append((what or "comparison", diff, tol))
    assert diff <= tol, (f"{what}: max |difference| {diff:.3g} > float32 tolerance {tol:.3g} "
                         f"({diff / max(tol, 1e-300):.1f} x the tolerance)")
    return diff


def assert_separates(real_error, tolerance: float, *, factor: float = 10.0, what: str = "") -> float:
    """Assert that a difference that *should* be there (another seed, another chain, another head) is at least
    ``factor`` times ``tolerance``, so the tolerance would catch that mistake. Returns the ratio."""
    d = float(np.abs(_as_array(real_error)).max())
    ratio = d / tolerance
    _REPORT.append((f"{what or 'real error'} [separation]", d, tolerance))
    assert ratio >= factor, f"{what}: a real error ({d:.3g}) is only {ratio:.1f} x the tolerance {tolerance:.3g}"
    return ratio


def report_lines() -> list[str]:
    """One line per comparison made in this session: observed difference, tolerance, their ratio."""
    return [f"{d / t if t else 0:10.3g}  diff {d:.3g}  tol {t:.3g}  {w}" for w, d, t in _REPORT]


def reporting() -> bool:
    return os.environ.get("SERPENT_TOLERANCE_REPORT", "") not in ("", "0")
