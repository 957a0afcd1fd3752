"""Exercise checks: compare a student's function with the reference on random inputs and say *what* differs.

Every check has the form ``check_xxx(student_fn) -> bool`` and behaves the same way (ARENA style):

* the student's function is called on seeded random inputs (several sizes and settings, so hard-coded constants are
  caught) and compared with the reference of this package;
* when everything matches it prints ``Correct!`` and returns True;
* when the function still raises ``NotImplementedError`` (the exercise stub) it prints a reminder and returns False,
  so a notebook with unsolved exercises still runs from top to bottom;
* otherwise it raises :class:`CheckFailed` with a diagnosis: the wrong shape, a flipped sign, a factor of 2, a
  missing term, an off-by-one in the positions, the wrong noise scale... Diagnoses come from fitting or matching the
  student's output against the typical mistakes, not from reading the code.

References: the SGLD update :func:`serpent.sgld.sgld_update` (chapter 3 of the book), the previous-token and
prefix-matching scores
of :mod:`serpent.induction`, the K-composition score of :func:`serpent.circuits.composition_scores`, :func:`serpent.susceptibility.susceptibility_from_traces` and
:func:`serpent.patterns.classify_tokens`; :func:`check_cluster_names` checks names given to susceptibility clusters
(:mod:`serpent.clusters`) against the patterns they hold.

>>> check_sgld_step(reference_sgld_step)
Correct! Your SGLD step matches the reference on 3 settings of (epsilon, n_beta, gamma).
True
>>> def stub(*args, **kwargs):
...     raise NotImplementedError
>>> check_prefix_score(stub)
Not implemented yet: write your prefix_score in the cell above, then run this check again.
False
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import SerpentError
from .sgld import sgld_update

__all__ = [
    "CheckFailed", "check_sgld_step", "check_prefix_score", "check_prev_token_score",
    "check_susceptibility_estimator", "check_pattern_classifier", "check_k_composition", "reference_sgld_step",
    "reference_prefix_score", "reference_prev_token_score", "reference_k_composition", "causal_attention_patterns",
    "check_patterning_shift", "reference_patterning_shift", "check_cluster_names",
]


class CheckFailed(SerpentError, AssertionError):
    """The student's function differs from the reference; the message says how."""


class _NotYet(Exception):
    pass


def _call(fn: Callable, what: str, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotYet(what) from None
    except CheckFailed:
        raise
    except Exception as e:  # the student's code crashed: say where, keep the traceback
        raise CheckFailed(f"your {what} raised {type(e).__name__}: {e}") from e


def _runner(what: str):
    """Decorator: turn a stub's NotImplementedError into a reminder (returns False)."""
    def wrap(check):
        def inner(student_fn, *args, **kwargs):
            if not callable(student_fn):
                raise CheckFailed(f"pass your function itself, e.g. check(my_{what}), not {type(student_fn).__name__}")
            try:
                return check(student_fn, *args, **kwargs)
            except _NotYet:
                print(f"Not implemented yet: write your {what} in the cell above, then run this check again.")
                return False
        inner.__name__ = check.__name__
        inner.__doc__ = check.__doc__
        return inner
    return wrap


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        raise CheckFailed(f"your {what} returned {type(x).__name__}; return a tensor (or an array) of numbers") from None


def _as_array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"your {what} returned {type(x).__name__}; return an array of numbers") from None


def _close(a, b, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _near(x: float, target: float, tol: float = 1e-3) -> bool:
    return abs(x - target) <= tol * max(1.0, abs(target))


# ----------------------------------------------------------------------------------------------------------------
# SGLD step
# ----------------------------------------------------------------------------------------------------------------

def reference_sgld_step(w: torch.Tensor, grad: torch.Tensor, w_star: torch.Tensor, noise: torch.Tensor, *,
                        epsilon: float, n_beta: float, gamma: float) -> torch.Tensor:
    """One SGLD step, the engine's own :func:`serpent.sgld.sgld_update` (no weight decay, no mask):
    ``w - (epsilon/2) * (n_beta * grad + gamma * (w - w_star)) + sqrt(epsilon) * noise``; all tensors of one shape,
    ``grad`` = gradient of the mean minibatch loss at ``w``, ``noise`` ~ N(0, I).

    >>> w = torch.tensor([1.0]); reference_sgld_step(w, torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.5]),
    ...                                               epsilon=0.04, n_beta=10.0, gamma=5.0)
    tensor([0.6000])
    """
    return sgld_update(w, grad, w_star, noise, epsilon=epsilon, n_beta=n_beta, gamma=gamma)


_SGLD_SETTINGS = ((0.01, 7.5, 2.5), (0.003, 20.0, 100.0), (0.02, 3.0, 0.7))


def _sgld_diagnosis(coef: dict, eps: float, nb: float, gamma: float) -> list[str]:
    exp_a, exp_b, exp_c = -eps * nb / 2, -eps * gamma / 2, math.sqrt(eps)
    ra, rb, rc = coef["grad"] / exp_a, coef["w - w_star"] / exp_b, coef["noise"] / exp_c
    msgs = []
    if _near(coef["w"], -1.0, 1e-3):
        msgs.append("you returned the change Δw, not the new weights: return w + Δw")
        return msgs
    if not _near(coef["w"], 0.0, 1e-6):
        msgs.append(f"your result contains {coef['w']:+.3g}·w beyond the update: start from w itself")
    if _near(ra, 2.0) and _near(rb, 2.0):
        msgs.append("both drift terms are twice too large: the drift is (ε/2)·force, not ε·force")
    else:
        if _near(ra, -1.0):
            msgs.append("the gradient term has the wrong sign: SGLD moves *down* the loss, −(ε/2)·nβ·∇L")
        elif _near(ra, 0.0, 1e-6):
            msgs.append("the gradient term is missing: −(ε/2)·nβ·∇L")
        elif _near(ra, 1.0 / nb):
            msgs.append("the gradient is not multiplied by nβ: the force is −nβ·∇L (only the product nβ enters)")
        elif _near(ra, 2.0 / nb):
            msgs.append("the gradient term lacks nβ and uses ε instead of ε/2")
        elif _near(ra, 2.0):
            msgs.append("the gradient term is twice too large: (ε/2)·nβ·∇L, not ε·nβ·∇L")
        elif not _near(ra, 1.0):
            msgs.append(f"the coefficient of ∇L is {coef['grad']:.4g}; expected −(ε/2)·nβ = {exp_a:.4g}")
        if _near(rb, -1.0):
            msgs.append("the localization term has the wrong sign: it pulls *towards* w*, −(ε/2)·γ·(w − w*)")
        elif _near(rb, 0.0, 1e-6):
            msgs.append("the localization term −(ε/2)·γ·(w − w*) is missing")
        elif _near(rb, nb):
            msgs.append("nβ multiplies the gradient only, not the localization term γ·(w − w*)")
        elif _near(rb, 2.0):
            msgs.append("the localization term is twice too large: (ε/2)·γ·(w − w*)")
        elif not _near(rb, 1.0):
            msgs.append(f"the coefficient of (w − w*) is {coef['w - w_star']:.4g}; expected −(ε/2)·γ = {exp_b:.4g}")
    if _near(rc, 0.0, 1e-6):
        msgs.append("there is no noise: SGLD adds √ε·ξ (use the noise tensor you are given)")
    elif _near(coef["noise"], eps):
        msgs.append("the noise is scaled by ε; it must be √ε·ξ (variance ε)")
    elif _near(rc, 1.0 / math.sqrt(2.0)):
        msgs.append("the noise is √(ε/2)·ξ; it must be √ε·ξ: with the drift (ε/2)·force the noise variance is ε")
    elif _near(rc, math.sqrt(2.0)):
        msgs.append("the noise is √(2ε)·ξ: that goes with a drift of ε·force; here the drift is (ε/2)·force and "
                    "the noise √ε·ξ")
    elif _near(coef["noise"], 1.0):
        msgs.append("the noise is not scaled: multiply it by √ε")
    elif _near(rc, -1.0):
        msgs.append("you subtract the noise; add it (+√ε·ξ: the check passes ξ explicitly)")
    elif not _near(rc, 1.0):
        msgs.append(f"the noise coefficient is {coef['noise']:.4g}; expected √ε = {exp_c:.4g}")
    return msgs


@_runner("sgld_step")
def check_sgld_step(student_fn: Callable) -> bool:
    """Check ``student_fn(w, grad, w_star, noise, *, epsilon, n_beta, gamma) -> new w`` (one SGLD step).

    The update is fitted as ``w + a·grad + b·(w − w*) + c·noise + d·w`` on random inputs; the coefficients name the
    mistake (sign, missing nβ, ε instead of ε/2, noise √(ε/2) or ε instead of √ε...).
    """
    # An unusual seed: with seed 0, a student's fresh torch.randn_like after torch.manual_seed(0) would reproduce w.
    g = torch.Generator().manual_seed(918_273)
    for eps, nb, gamma in _SGLD_SETTINGS:
        shape = (40, 7)
        w, grad, w_star, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(4))
        w_copy = w.clone()
        out = _call(student_fn, "sgld_step", w, grad, w_star, noise, epsilon=eps, n_beta=nb, gamma=gamma)
        out = _as_tensor(out, "sgld_step")
        if not torch.equal(w, w_copy):
            raise CheckFailed("your sgld_step changed its input w in place (w -= ... or w.add_): return a new tensor "
                              "and leave w untouched")
        if tuple(out.shape) != shape:
            raise CheckFailed(f"your sgld_step returned shape {tuple(out.shape)}; the new weights have w's shape "
                              f"{shape}")
        if not torch.isfinite(out).all():
            raise CheckFailed("your sgld_step returned NaN or inf for finite inputs")
        ref = reference_sgld_step(w, grad, w_star, noise, epsilon=eps, n_beta=nb, gamma=gamma)
        if torch.allclose(out, ref, rtol=1e-6, atol=1e-10):
            continue
        basis = torch.stack([grad, w - w_star, noise, w], -1).reshape(-1, 4)
        sol = torch.linalg.lstsq(basis, (out - w).reshape(-1, 1)).solution.flatten()
        resid = (basis @ sol - (out - w).reshape(-1)).norm() / max(float((out - w).norm()), 1e-12)
        where = f"(with epsilon={eps}, n_beta={nb}, gamma={gamma})"
        if resid > 1e-6:
            raise CheckFailed(f"your update {where} is not of the form w − (ε/2)·(nβ·grad + γ·(w − w*)) + √ε·noise: "
                              "it is not even a fixed combination of grad, w − w*, noise and w. Use the tensors you "
                              "are given elementwise (no sums, norms or fresh random numbers)")
        coef = dict(zip(["grad", "w - w_star", "noise", "w"], sol.tolist()))
        msgs = _sgld_diagnosis(coef, eps, nb, gamma)
        if not msgs:
            msgs = [f"the update differs from the reference by up to {float((out - ref).abs().max()):.3g}"]
        raise CheckFailed(f"your sgld_step {where}: " + "; ".join(msgs) + ". Reference: w ← w − (ε/2)·(nβ·∇L + "
                          "γ·(w − w*)) + √ε·ξ")
    print(f"Correct! Your SGLD step matches the reference on {len(_SGLD_SETTINGS)} settings of (epsilon, n_beta, "
          "gamma).")
    return True


# ----------------------------------------------------------------------------------------------------------------
# K-composition
# ----------------------------------------------------------------------------------------------------------------

def reference_k_composition(W_OV: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor) -> float:
    """``‖W_OV (W_Q W_Kᵀ)ᵀ‖_F / (‖W_OV‖_F ‖W_Q W_Kᵀ‖_F)``: how much of a later head's key input an earlier head's
    output can reach (row-vector convention, as TransformerLens: ``k = x W_K``)."""
    qk = W_Q @ W_K.T
    return float(torch.linalg.norm(W_OV @ qk.T) / (torch.linalg.norm(W_OV) * torch.linalg.norm(qk)))


@_runner("k_composition")
def check_k_composition(student_fn: Callable) -> bool:
    """Check ``student_fn(W_OV, W_Q, W_K) -> float``: the K-composition score of a layer-0 head's OV circuit
    ``W_OV (d_model, d_model)`` with a layer-1 head's ``W_Q, W_K (d_model, d_head)``.

    Tried on random low-rank matrices of several sizes; the usual mistakes are named: composing with the query side
    (Q-composition), a missing normalisation, a missing transpose of W_K.
    """
    g = torch.Generator().manual_seed(424_242)
    for d, dh in ((16, 4), (24, 6), (32, 8)):
        A, B = (torch.randn(d, dh, generator=g, dtype=torch.float64) for _ in range(2))
        W_OV = A @ B.T                                                    # rank d_head, like a real head's OV
        W_Q, W_K = (torch.randn(d, dh, generator=g, dtype=torch.float64) for _ in range(2))
        out = _call(student_fn, "k_composition", W_OV.clone(), W_Q.clone(), W_K.clone())
        try:
            out = float(out)
        except (TypeError, ValueError):
            raise CheckFailed(f"your k_composition returned {type(out).__name__}; return one number "
                              "(use float(...) or .item())") from None
        ref = reference_k_composition(W_OV, W_Q, W_K)
        if _near(out, ref, 1e-6):
            continue
        qk = W_Q @ W_K.T
        n_ov, n_qk = torch.linalg.norm(W_OV), torch.linalg.norm(qk)
        variants = {
            "you composed with the query side (W_OV · W_QK is Q-composition); the key reads the earlier head's "
            "output, so compose with the transpose: W_OV · W_QKᵀ": float(torch.linalg.norm(W_OV @ qk) / (n_ov * n_qk)),
            "the score is not normalised: divide ‖W_OV · W_QKᵀ‖ by ‖W_OV‖·‖W_QK‖":
                float(torch.linalg.norm(W_OV @ qk.T)),
            "you divided by only one of the two norms: divide by ‖W_OV‖·‖W_QK‖":
                float(torch.linalg.norm(W_OV @ qk.T) / n_ov),
            "you squared the Frobenius norms (use torch.linalg.norm, not its square)":
                float(torch.linalg.norm(W_OV @ qk.T) ** 2 / (n_ov ** 2 * n_qk ** 2)),
        }
        for msg, value in variants.items():
            if _near(out, value, 1e-6):
                raise CheckFailed(f"your k_composition (d_model={d}): {msg}")
        raise CheckFailed(f"your k_composition (d_model={d}) returned {out:.6g}; expected {ref:.6g} = "
                          "‖W_OV (W_Q W_Kᵀ)ᵀ‖ / (‖W_OV‖ ‖W_Q W_Kᵀ‖) (Frobenius norms)")
    print("Correct! Your K-composition score matches serpent.circuits.composition_scores on 3 random heads.")
    return True


# ----------------------------------------------------------------------------------------------------------------
# Attention scores on the repeated-random-tokens probe
# ----------------------------------------------------------------------------------------------------------------

def causal_attention_patterns(batch: int, n_heads: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random causal attention patterns ``(batch, n_heads, length, length)`` (rows sum to 1, zero above the diagonal),
    float64: test input for the score exercises.

    >>> p = causal_attention_patterns(2, 3, 5); p.shape, bool(torch.allclose(p.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64)))
    (torch.Size([2, 3, 5, 5]), True)
    """
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(batch, n_heads, length, length, generator=g, dtype=torch.float64)
    mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    return torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1)


def _gather_mean(pattern: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    T = pattern.shape[-1]
    pairs = [(q, k) for q, k in pairs if 0 <= q < T and 0 <= k < T]
    vals = torch.stack([pattern[:, :, q, k] for q, k in pairs], -1)       # (batch, heads, n)
    return vals.mean(dim=(0, 2))


def reference_prefix_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    """Prefix-matching score per head ``(n_heads,)`` from attention patterns ``(batch, n_heads, 2L+1, 2L+1)`` of the
    probe ``[BOS, r_1..r_L, r_1..r_L]``: mean attention from query ``L+i`` (second ``r_i``) to key ``i+1`` (the token
    after the first ``r_i``), i = 1..L, and over the batch (as :mod:`serpent.induction`).

    >>> p = torch.zeros(1, 1, 7, 7); p[0, 0, 4, 2] = p[0, 0, 5, 3] = p[0, 0, 6, 4] = 1.0
    >>> reference_prefix_score(p, 3)
    tensor([1.])
    """
    L = half_len
    return _gather_mean(pattern, [(L + i, i + 1) for i in range(1, L + 1)])


def reference_prev_token_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    """Previous-token score per head ``(n_heads,)``: mean attention from query ``t`` to key ``t-1`` for t = 2..2L (the
    query at position 1 is skipped: its previous token is BOS), and over the batch (as :mod:`serpent.induction`).

    >>> p = torch.eye(5).roll(-1, dims=1).tril().reshape(1, 1, 5, 5); p[0, 0, 0, 0] = 1.0
    >>> reference_prev_token_score(p, 2)
    tensor([1.])
    """
    L = half_len
    return _gather_mean(pattern, [(t, t - 1) for t in range(2, 2 * L + 1)])


def _prefix_variants(L: int) -> dict[str, list[tuple[int, int]]]:
    i = range(1, L + 1)
    return {
        "you read the attention to the *earlier occurrence itself* (key i): that is a duplicate-token score. The "
        "induction head attends to the token *after* it, key i + 1": [(L + q, q) for q in i],
        "you read the key two positions after the first occurrence (i + 2); the induction target is key i + 1":
            [(L + q, q + 2) for q in i],
        "you indexed pattern[..., key, query]: the last two dims are (query, key), and a causal pattern is zero "
        "above the diagonal": [(q + 1, L + q) for q in i],
        "your positions are off by one: position 0 holds BOS, so r_i sits at positions i and L + i (queries L+1..2L, "
        "keys 2..L+1)": [(L + q - 1, q) for q in i],
        "you left out the last repeated token: i runs over 1..L (queries L+1..2L)": [(L + q, q + 1) for q in i[:-1]],
        "your positions are shifted by one: queries are the second occurrences L+i (i = 1..L), keys i+1":
            [(L + q + 1, q + 2) for q in i],
    }


def _prev_variants(L: int) -> dict[str, list[tuple[int, int]]]:
    t = range(2, 2 * L + 1)
    return {
        "you included query 1, whose previous token is BOS (a resting place for many heads): start at t = 2":
            [(q, q - 1) for q in range(1, 2 * L + 1)],
        "you read the diagonal (attention to itself); the previous token is key t − 1": [(q, q) for q in t],
        "you indexed pattern[..., key, query]: the last two dims are (query, key), and a causal pattern is zero "
        "above the diagonal": [(q - 1, q) for q in t],
        "you left out the last position: t runs over 2..2L": [(q, q - 1) for q in range(2, 2 * L)],
        "you read key t − 2; the previous token is key t − 1": [(q, q - 2) for q in t],
    }


def _check_score(student_fn: Callable, what: str, reference: Callable, variants: Callable) -> bool:
    for (B, H, L, seed) in ((3, 4, 6, 0), (2, 5, 9, 1)):
        pattern = causal_attention_patterns(B, H, 2 * L + 1, seed=seed)
        before = pattern.clone()
        out = _as_tensor(_call(student_fn, what, pattern, L), what)
        if not torch.equal(pattern, before):
            raise CheckFailed(f"your {what} changed the attention pattern in place; read it, don't write it")
        ref = reference(pattern, L)
        if tuple(out.shape) != (H,):
            hint = ""
            if tuple(out.shape) == (B, H):
                hint = ": you kept the batch dimension, average over it too"
            elif out.dim() == 0:
                hint = ": one number per head, average over the batch and the positions only"
            elif tuple(out.shape) == (H, B):
                hint = ": average over the batch (dim 0) and the positions"
            raise CheckFailed(f"your {what} returned shape {tuple(out.shape)} for {H} heads; expected ({H},){hint}")
        if _close(out, ref):
            continue
        where = f"(batch {B}, {H} heads, half_len {L})"
        for msg, pairs in variants(L).items():
            if _close(out, _gather_mean(pattern, pairs)):
                raise CheckFailed(f"your {what} {where}: {msg}")
        for factor, name in ((B, "the batch"), (L, "the positions"), (2 * L - 1, "the positions"),
                             (B * L, "the batch and the positions"), (B * (2 * L - 1), "the batch and the positions")):
            if _close(out, ref * factor):
                raise CheckFailed(f"your {what} {where} is {factor} times the reference: you summed over {name}; "
                                  "take the mean")
        raise CheckFailed(f"your {what} {where} differs from the reference: got {np.round(out.numpy(), 4).tolist()}, "
                          f"expected {np.round(ref.numpy(), 4).tolist()}")
    print(f"Correct! Your {what} matches the reference on random causal attention patterns.")
    return True


def reference_patterning_shift(chi: np.ndarray, d_mu: np.ndarray) -> np.ndarray:
    """``P (χ P)⁺ dμ``: the minimum-norm zero-sum shift of the class weights with ``χ · shift`` closest to ``dμ``
    (:func:`serpent.patterning.patterning_shift` on plain arrays)."""
    from .patterning import zero_sum_shift
    return zero_sum_shift(chi, d_mu)


@_runner("patterning_shift")
def check_patterning_shift(student_fn: Callable) -> bool:
    """Check ``student_fn(chi (C, K), d_mu (C,)) -> (K,)``: the smallest shift of K class weights, summing to zero,
    whose first-order response ``chi @ shift`` comes closest to ``d_mu``.

    Tried on random response matrices (more components than classes, as in the course); the usual mistakes are
    named: no zero-sum constraint, the transpose in place of the pseudo-inverse, the sign, projecting after
    inverting.
    """
    rng = np.random.default_rng(20_260_113)
    for c, k in ((6, 2), (8, 3), (16, 4)):
        chi = rng.normal(size=(c, k))
        d_mu = rng.normal(size=c)
        out = _call(student_fn, "patterning_shift", chi.copy(), d_mu.copy())
        try:
            out = np.asarray(out, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise CheckFailed(f"your patterning_shift returned {type(out).__name__}; return an array of {k} "
                              "numbers, one per class") from None
        if out.shape != (k,):
            raise CheckFailed(f"your patterning_shift returned {out.size} numbers for a {c} × {k} response matrix; "
                              f"return one per class ({k})")
        ref = reference_patterning_shift(chi, d_mu)
        if np.allclose(out, ref, atol=1e-8, rtol=1e-6):
            continue
        proj = np.eye(k) - np.full((k, k), 1.0 / k)
        variants = {
            "the shift does not sum to zero: reweighting moves weight between classes (the total stays), so "
            "solve within zero-sum shifts: project with P = I - 11ᵀ/K before inverting, P (χ P)⁺ dμ":
                np.linalg.pinv(chi) @ d_mu,
            "χᵀ dμ points the right way only when χ's columns are orthonormal: invert the response with the "
            "pseudo-inverse (np.linalg.pinv), within zero-sum shifts": proj @ chi.T @ d_mu,
            "the sign is flipped: the shift should move the observables BY dμ (dμ = χ · shift)": -ref,
            "projecting after inverting gives a zero-sum shift but not the best one: project first, "
            "P (χ P)⁺ dμ": proj @ np.linalg.pinv(chi) @ d_mu,
        }
        for msg, value in variants.items():
            if np.allclose(out, value, atol=1e-8, rtol=1e-6):
                raise CheckFailed(f"your patterning_shift ({c} × {k}): {msg}")
        raise CheckFailed(f"your patterning_shift ({c} × {k}) returned {np.round(out, 4).tolist()}; expected "
                          f"{np.round(ref, 4).tolist()} = P (χ P)⁺ dμ with P = I - 11ᵀ/K")
    print("Correct! Your shift matches serpent.patterning.patterning_shift on 3 random response matrices.")
    return True


@_runner("prefix_score")
def check_prefix_score(student_fn: Callable) -> bool:
    """Check ``student_fn(pattern, half_len) -> (n_heads,)``, the prefix-matching (induction) score from attention
    patterns ``(batch, n_heads, 2L+1, 2L+1)`` of ``[BOS, r_1..r_L, r_1..r_L]`` (see :func:`reference_prefix_score`)."""
    return _check_score(student_fn, "prefix_score", reference_prefix_score, _prefix_variants)


@_runner("prev_token_score")
def check_prev_token_score(student_fn: Callable) -> bool:
    """Check ``student_fn(pattern, half_len) -> (n_heads,)``, the previous-token score (see
    :func:`reference_prev_token_score`)."""
    return _check_score(student_fn, "prev_token_score", reference_prev_token_score, _prev_variants)


# ----------------------------------------------------------------------------------------------------------------
# Susceptibility estimator from loss traces
# ----------------------------------------------------------------------------------------------------------------

def _traces(chains: int, draws: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Restricted and full loss traces with correlated per-token losses and different means (so that every usual
    mistake gives a different answer)."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=n) * 1.5
    task = 3.0 + 0.3 * np.abs(rng.normal(size=(chains, draws))) + 0.05 * rng.normal(size=(chains, 1))
    probe = 3.2 + coef * (task[..., None] - 3.0) + 0.2 * rng.normal(size=(chains, draws, n)) + rng.normal(size=n)
    full_task = 3.1 + 0.5 * np.abs(rng.normal(size=(chains, draws)))
    full_probe = 3.0 + 0.8 * coef * (full_task[..., None] - 3.0) + 0.3 * rng.normal(size=(chains, draws, n)) \
        + 0.5 * rng.normal(size=n)
    return task, probe, full_task, full_probe


def _sus_variants(task, probe, full_task, full_probe, baseline) -> dict[str, np.ndarray]:
    phi = task - baseline
    delta = probe - task[..., None]
    full_delta = (full_probe - full_task[..., None]).mean(axis=(0, 1))
    E = lambda x: x.mean(axis=(0, 1))
    n = task.size
    cov_c = E(phi[..., None] * delta) - phi.mean() * E(delta)
    per_chain = []
    for c in range(task.shape[0]):
        fd = (full_probe[c] - full_task[c][:, None]).mean(0)
        per_chain.append(-((phi[c][:, None] * delta[c]).mean(0) - phi[c].mean() * fd))
    return {
        "the sign is flipped: χ = −(E_C[φ·(ℓ − L)] − E_C[φ]·E_full[ℓ − L])":
            (E(phi[..., None] * delta) - phi.mean() * full_delta),
        "the correction term is missing: subtract E_C[φ]·E_full[ℓ − L] inside the bracket":
            -E(phi[..., None] * delta),
        "the second expectation must come from the *full* (unrestricted) run: E_full[ℓ − L], not E_C[ℓ − L]": -cov_c,
        "you used an unbiased (n − 1) covariance of the restricted run; the estimator takes plain means over draws, "
        "and its second factor comes from the full run": -cov_c * n / (n - 1),
        "use the per-token loss relative to the task loss, ℓ − L, not ℓ alone":
            -(E(phi[..., None] * probe) - phi.mean() * full_probe.mean(axis=(0, 1))),
        "φ = L − L₀: subtract the baseline from the task loss":
            -(E(task[..., None] * delta) - task.mean() * full_delta),
        "you averaged per-chain estimates (each chain against its own full chain); the estimator pools all chains and "
        "draws first": np.mean(per_chain, axis=0),
    }


@_runner("susceptibility estimator")
def check_susceptibility_estimator(student_fn: Callable) -> bool:
    """Check ``student_fn(task, probe, full_task, full_probe, baseline) -> chi (N,)`` against
    :func:`serpent.susceptibility.susceptibility_from_traces`.

    ``task`` ``(chains, draws)`` and ``probe`` ``(chains, draws, N)`` are the restricted run's task loss L and
    per-token losses ℓ; ``full_task``/``full_probe`` the same for the full run; φ = L − ``baseline``.
    """
    from .susceptibility import susceptibility_from_traces

    for chains, draws, n, seed in ((3, 40, 6, 0), (2, 25, 9, 1)):
        arrays = _traces(chains, draws, n, seed)
        copies = [a.copy() for a in arrays]
        baseline = float(arrays[0].min() - 0.05)
        out = _as_array(_call(student_fn, "susceptibility estimator", *arrays, baseline), "susceptibility estimator")
        if any(not np.array_equal(a, c) for a, c in zip(arrays, copies)):
            raise CheckFailed("your estimator changed its input arrays in place; work on copies")
        ref = susceptibility_from_traces(*arrays, baseline)
        where = f"({chains} chains × {draws} draws, {n} tokens)"
        if out.shape != (n,):
            hint = ""
            if out.shape == (chains, n):
                hint = ": average over the chains too (one χ per token)"
            elif out.shape == (chains, draws, n):
                hint = ": average over chains and draws (χ is an expectation)"
            elif out.ndim == 0:
                hint = ": one χ per token, do not average over the tokens"
            raise CheckFailed(f"your estimator {where} returned shape {out.shape}; expected ({n},){hint}")
        if _close(out, ref, rtol=1e-6, atol=1e-10):
            continue
        for msg, v in _sus_variants(*arrays, baseline).items():
            if _close(out, v, rtol=1e-6, atol=1e-10):
                raise CheckFailed(f"your estimator {where}: {msg}")
        ratio = out / np.where(ref == 0, np.nan, ref)
        if np.nanstd(ratio) < 1e-6 * max(1.0, abs(np.nanmean(ratio))):
            raise CheckFailed(f"your estimator {where} is {np.nanmean(ratio):.4g} times the reference: a constant "
                              "factor (no nβ, no normalisation; χ is in units of loss²)")
        raise CheckFailed(f"your estimator {where} differs from the reference: got {np.round(out, 5).tolist()}, "
                          f"expected {np.round(ref, 5).tolist()}. Reference: χ = −(E_C[φ·(ℓ − L)] − "
                          "E_C[φ]·E_full[ℓ − L]) with φ = L − baseline")
    print("Correct! Your estimator matches serpent.susceptibility.susceptibility_from_traces.")
    return True


# ----------------------------------------------------------------------------------------------------------------
# Pattern classifier
# ----------------------------------------------------------------------------------------------------------------

_SNIPPETS = [
    ["def", "Ġf", "(", "x", "):", "Ċ", "ĠĠĠ", "Ġreturn", "Ġ42", "Ċ", "def", "Ġf"],
    ["<|endoftext|>", "import", "Ġos", "Ċ", "import", "Ġsys", "Ċ", "Ċ", "class", "ĠFoo", ":", "Ċ", "ĠĠĠ", "Ġdef",
     "Ġ__", "init", "__", "(", "self", "):", "Ċ", "ĠĠĠĠĠĠĠ", "Ġself", ".", "name", "Ġ=", "Ġ\"", "foo", "\"", "Ċ",
     "ĠĠĠ", "Ġdef", "Ġrun", "(", "self", "):", "Ċ", "ĠĠĠĠĠĠĠ", "Ġreturn", "Ġself", ".", "name"],
    ["Ġthe", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", ".", "Ġthe", "Ġcat", "Ġran", "Ċ", "ĉ", "x", "Ġ=", "Ġ[", "1",
     ",", "Ġ2", "]", "Ċ", "ĉ", "x", "Ġ=", "Ġ[", "1", "]"],
    ["a", "a", "a", "a", "Ġ", "Ġ", "Ġ", "ĠĠ", "<|endoftext|>", "a", "a", "Ċ", "Ċ", "Ċ", "print", "('", "hello",
     "Ġworld", "')", "Ċ", "print", "('", "hello", "')"],
]
_VOCAB = ["Ġ", "ĠĠ", "ĠĠĠ", "ĊĠĠĠ", "Ċ", "ĉ", "(", ")", "):", "Ġ\"", "[", "'", "Ġ42", "1", "x2", "def", "Ġf",
          "Ġreturn", "ing", "_name", "Ġ=", ".", ",", "<|endoftext|>", "Ġself", "self", "Ġ__", "init", "Ġthe", "ĠÃ",
          "©", "+", "Ġ+", "value"]

_HINTS = {
    ("spacing", "formatting"): "`spacing` is spaces only ('Ġ', 'ĠĠĠ'); `formatting` is whitespace with a newline, "
                               "tab or carriage return",
    ("formatting", "spacing"): "a whitespace token with a newline or tab ('Ċ', 'ĊĠĠĠ', 'ĉ') is `formatting`; only "
                               "pure spaces are `spacing`",
    ("word part", "word start"): "a token continues a word (`word part`) when it has no leading whitespace and the "
                                 "text before it ends in a letter, digit or '_'",
    ("word start", "word part"): "a letter token starts a word when it has leading whitespace, is the first token, "
                                 "or the text before it does not end in a letter, digit or '_' (e.g. after '(' or '.')",
}


def _pattern_hint(expected: str, got: str, tokens: Sequence[str], t: int) -> str:
    from .patterns import token_text

    tok = tokens[t]
    special = lambda s: s.startswith("<|") and s.endswith("|>")
    text = token_text(tok)
    if expected == "induction":
        return ("the bigram (previous token, this token) already occurred earlier in the context, so the token is "
                "`induction`: test the induction rule first (the first matching rule wins)")
    if got == "induction":
        if text.strip() == "" and text != "":
            return "whitespace-only tokens are never `induction` (otherwise the spacing fin disappears)"
        if t > 0 and special(tokens[t - 1]):
            return "a bigram that starts with a special token such as <|endoftext|> does not count as induction"
        earlier = {(tokens[j], tokens[j + 1]) for j in range(max(t - 1, 0))}
        if t > 0 and (tokens[t - 1], tok) not in earlier:
            if tok in tokens[:t]:
                return ("only a repeated *bigram* (previous token, this token) counts as induction, not a repeated "
                        "token")
            return ("this bigram has not occurred *earlier*: add the bigram ending at t to the set of seen bigrams "
                    "only after classifying t")
        return "this is not an induction token"
    if special(tok):
        return "special tokens such as <|endoftext|> are `other`"
    if (expected, got) in _HINTS:
        return _HINTS[(expected, got)]
    if expected == "numeric":
        return "a digit anywhere in the token makes it `numeric` (numbers are tested before words)"
    if expected == "delimiter":
        return "brackets and quotes without letters or digits ('(', '):', 'Ġ\"') are `delimiter`"
    if got == "delimiter":
        return "a bracket or quote *with* a letter or digit is not a delimiter; only pure punctuation is"
    if expected == "other":
        return "punctuation and operators without brackets ('.', 'Ġ=') and special tokens are `other`"
    return f"expected `{expected}`"


def _decoded(tok: str, token_text: Callable) -> str:
    """``", text 'é'"`` when a byte-level BPE string reads differently as text (non-ASCII bytes show as ``Ã©``)."""
    text = token_text(tok)
    if "\ufffd" in text:
        return f", text {text!r}: part of a multi-byte character, which counts as a letter"
    return "" if text == tok else f", text {text!r}"


@_runner("classify")
def check_pattern_classifier(student_fn: Callable, *, n_random: int = 40, seed: int = 0) -> bool:
    """Check ``student_fn(tokens: list[str]) -> list[str]`` (one pattern per position, for raw byte-level BPE token
    strings) against :func:`serpent.patterns.classify_tokens` on code-like snippets and ``n_random`` random
    sequences; the message lists the most frequent confusion with an example in context and the rule it breaks."""
    from .patterns import PATTERNS, classify_tokens, context_snippet, token_text

    rng = np.random.default_rng(seed)
    seqs = [list(s) for s in _SNIPPETS]
    for _ in range(n_random):
        k = int(rng.integers(4, 12))
        vocab = [_VOCAB[i] for i in rng.choice(len(_VOCAB), size=k, replace=False)]
        seqs.append([vocab[i] for i in rng.integers(0, k, size=int(rng.integers(5, 30)))])
    confusions: dict[tuple[str, str], list[tuple[int, int]]] = {}
    total = 0
    for si, toks in enumerate(seqs):
        got = _call(student_fn, "classify", list(toks))
        if not isinstance(got, (list, tuple, np.ndarray)):
            raise CheckFailed(f"your classifier returned {type(got).__name__}; return a list with one pattern name "
                              "per token")
        got = [str(g) for g in got]
        if len(got) != len(toks):
            raise CheckFailed(f"your classifier returned {len(got)} labels for {len(toks)} tokens; return one per token "
                              f"(position t is the token tokens[t] after the context tokens[:t]), e.g. for {toks[:6]}")
        unknown = sorted(set(got) - set(PATTERNS))
        if unknown:
            raise CheckFailed(f"unknown pattern name(s) {unknown}; use exactly {list(PATTERNS)}")
        exp = classify_tokens(toks)
        total += len(toks)
        for t, (e, g) in enumerate(zip(exp, got)):
            if e != g:
                confusions.setdefault((e, g), []).append((si, t))
    if confusions:
        ranked = sorted(confusions.items(), key=lambda kv: -len(kv[1]))
        n_wrong = sum(len(v) for v in confusions.values())
        lines = [f"{n_wrong} of {total} tokens differ from the reference."]
        for (e, g), where in ranked[:3]:
            si, t = where[0]
            toks = seqs[si]
            lines.append(f"- expected `{e}` but got `{g}` ({len(where)}×), e.g. {context_snippet(toks, t, 6, 2)!r} "
                         f"(token {toks[t]!r}{_decoded(toks[t], token_text)}): {_pattern_hint(e, g, toks, t)}")
        raise CheckFailed("\n".join(lines))
    print(f"Correct! Your classifier agrees with serpent.patterns.classify_tokens on all {total} tokens of "
          f"{len(seqs)} sequences.")
    return True


def _card_get(card: Any, key: str):
    return card[key] if isinstance(card, dict) else getattr(card, key)


def check_cluster_names(names: Any, cards: Sequence[Any], *, at_least: float = 1.25) -> bool:
    """Check clusters named from their cards: ``names`` (or a function of the cards that returns it) maps a cluster
    number to ``(name, pattern)``: a name of your own and the pattern (one of :data:`serpent.patterns.PATTERNS`)
    you expect its tokens to share. ``cards`` are the cards of one checkpoint (:class:`serpent.clusters.ClusterCard`
    or their dicts).

    Three clusters are asked for (all of them when the checkpoint has fewer). A guess counts when the pattern is the
    cluster's most common one, or when the cluster holds it at least ``at_least`` times as often as all clustered
    tokens do. The check prints each cluster's real pattern mix beside your guess. A miss fails the check only for
    a cluster that stands out from the null (cards without ``stands_out`` count as standing out): the others mix
    their patterns much as the whole does, and no name fits them well.

    >>> from types import SimpleNamespace as C
    >>> cards = [C(cluster=0, size=10, patterns={"induction": 8, "spacing": 2}),
    ...          C(cluster=1, size=10, patterns={"induction": 1, "spacing": 9})]
    >>> check_cluster_names({0: ("copies", "induction"), 1: ("runs of spaces", "spacing")}, cards)  # doctest: +ELLIPSIS
    C0 'copies': you said induction; induction 80% (1.8x all clustered tokens) ✓
    ...
    True
    """
    from .patterns import PATTERNS
    if callable(names):                           # a function of the cards that returns the names
        try:
            names = _call(names, "name_clusters", list(cards))
        except _NotYet:
            names = None
    if names is None or names is Ellipsis or (isinstance(names, dict) and not names):
        print("Not named yet: fill in the names above (cluster number -> (name, pattern)), then run this check again.")
        return False
    if not isinstance(names, dict):
        raise CheckFailed(f"pass a dict {{cluster number: (name, pattern)}}, not {type(names).__name__}")
    by_id = {int(_card_get(c, "cluster")): c for c in cards}
    want = min(3, len(by_id))
    if len(names) != want:
        raise CheckFailed(f"name {want} clusters, you named {len(names)}")
    total = {p: 0 for p in PATTERNS}
    n_all = 0
    for c in by_id.values():
        for p, k in _card_get(c, "patterns").items():
            total[p] = total.get(p, 0) + int(k)
        n_all += int(_card_get(c, "size"))
    misses, mixed = [], []
    for cid, value in names.items():
        if cid not in by_id:
            raise CheckFailed(f"there is no cluster {cid!r} at this checkpoint; the clusters are {sorted(by_id)}")
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise CheckFailed(f"cluster {cid}: give (name, pattern), e.g. ('copies of earlier text', 'induction')")
        name, pat = value
        if not str(name).strip():
            raise CheckFailed(f"cluster {cid}: give it a name of your own (a few words)")
        if pat not in PATTERNS:
            raise CheckFailed(f"cluster {cid}: {pat!r} is not a pattern; choose one of {list(PATTERNS)}")
        card = by_id[cid]
        counts, size = _card_get(card, "patterns"), int(_card_get(card, "size"))
        top = max(counts, key=lambda p: counts[p])
        share = counts.get(pat, 0) / size
        ratio = share / (total[pat] / n_all) if total.get(pat) else 0.0
        ok = pat == top or ratio >= at_least
        print(f"C{cid} {str(name)!r}: you said {pat}; {pat} {share:.0%} ({ratio:.1f}x all clustered tokens) "
              f"{'✓' if ok else '✗'}" + ("" if pat == top else f"; most common: {top} {counts[top] / size:.0%}"))
        standing = bool(_card_get(card, "stands_out")) if (isinstance(card, dict) and "stands_out" in card) or \
            hasattr(card, "stands_out") else True
        if not ok and not standing:
            mixed.append(f"C{cid}")
        elif not ok:
            misses.append(f"C{cid}: {pat} is {share:.0%} of it, no more than elsewhere; its most common pattern is "
                          f"{top} ({counts[top] / size:.0%})")
    if misses:
        raise CheckFailed("; ".join(misses) + ". Read the card again: its most common next tokens and its typical "
                                              "contexts (what comes before the marked token?) say more than its size")
    if mixed:
        print(f"Your guesses match where the clusters stand out; {_and(mixed)} do{'es' if len(mixed) == 1 else ''} "
              "not stand out from the null and mix{} patterns much as all tokens do: name clusters that stand out "
              "for names that hold.".format("es its" if len(mixed) == 1 else " their"))
        return True
    print(f"Correct! Your {len(names)} guesses match the patterns the clusters hold.")
    return True


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
