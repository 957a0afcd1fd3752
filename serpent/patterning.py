"""Patterning: from susceptibilities to the data that make chosen structure form sooner or later.

Susceptibilities say how the posterior expectation μ_C = E[φ_C] of each component's observable moves when the data
distribution shifts. For a shift ``dh`` of the weights of a few data classes k (token patterns, say), to first order

    dμ_C = Σ_k χ_Ck dh_k,

with χ the response matrix (components × classes: the mean susceptibility of each class's tokens,
:func:`serpent.susceptibility.response_matrix`). Patterning (Wang and Murfet, arXiv 2601.13548) inverts this linear
response: the smallest shift that moves the observables by a chosen ``dμ`` is ``dh = χ⁺ dμ`` (the Moore–Penrose
pseudo-inverse), here within shifts that redistribute weight between the classes (Σ_k dh_k = 0: the data's
proportions change, not their total, which would only rescale the loss). A lower μ_C means the posterior is more tightly held in C's weights, i.e. more structure there;
so asking for ``dμ_C < 0`` on the circuit's heads asks for data that grow the circuit, ``dμ_C > 0`` for data that
hold it back. :func:`class_weights` turns the shift into training weights per class.

>>> import pandas as pd
>>> chi = pd.DataFrame({"copyable": [-2.0, -1.0], "new": [0.5, 0.0]}, index=["1:0", "1:1"])
>>> shift = patterning_shift(chi, {"1:0": -1.0, "1:1": -1.0})
>>> bool(shift["copyable"] > 0 > shift["new"]), abs(round(float(shift.sum()), 12))
(True, 0.0)
>>> {k: round(v, 2) for k, v in class_weights(shift, 0.5).items()}
{'copyable': 1.5, 'new': 0.5}
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = ["patterning_shift", "zero_sum_shift", "class_weights", "circuit_target"]


def patterning_shift(matrix: pd.DataFrame, target: Mapping[str, float]) -> pd.Series:
    """The minimum-norm shift of the class weights that moves each component's observable by ``target[component]``
    (components not named: 0, i.e. left where they are) to first order, in the least-squares sense: ``P (χ P)⁺ dμ``
    with ``P`` the projection onto shifts that sum to zero.

    ``matrix``: components × classes (rows as in ``target``; classes with missing values are dropped). Returns a
    Series over the classes.
    """
    m = matrix.dropna(axis=1, how="any")
    unknown = sorted(set(target) - set(m.index))
    if unknown:
        raise ConfigError(f"patterning target names components {unknown} that the response matrix lacks; "
                          f"it has {list(m.index)}")
    if m.shape[1] == 0:
        raise ConfigError("the response matrix has no class with a value for every component")
    d_mu = np.array([float(target.get(c, 0.0)) for c in m.index])
    if not np.any(d_mu):
        raise ConfigError("the patterning target is all zeros: ask at least one component to move")
    if m.shape[1] < 2:
        raise ConfigError("patterning redistributes weight between classes: the response matrix needs two or more")
    return pd.Series(zero_sum_shift(m.to_numpy(dtype=np.float64), d_mu), index=m.columns, name="shift")


def zero_sum_shift(chi: np.ndarray, d_mu: np.ndarray) -> np.ndarray:
    """``P (χ P)⁺ dμ`` on arrays (``chi`` (C, K), ``d_mu`` (C,)), ``P = I - 11ᵀ/K``: the minimum-norm shift among
    those summing to zero whose response ``χ · shift`` is closest to ``dμ``.

    >>> zero_sum_shift(np.array([[1.0, -1.0]]), np.array([2.0])).round(12).tolist()
    [1.0, -1.0]
    """
    chi = np.asarray(chi, dtype=np.float64)
    k = chi.shape[1]
    proj = np.eye(k) - np.full((k, k), 1.0 / k)
    return proj @ np.linalg.pinv(chi @ proj) @ np.asarray(d_mu, dtype=np.float64)


def class_weights(shift: pd.Series, strength: float, floor: float = 0.05) -> dict[str, float]:
    """Training weights per class, ``1 + strength * shift / max|shift|``, at least ``floor``, then scaled so that
    their mean over the classes is 1. ``strength`` 0 gives the unweighted data; its sign is the direction (the
    first-order prediction holds for small strengths; larger ones are an extrapolation to test)."""
    top = float(np.abs(shift).max())
    if not np.isfinite(top) or top == 0:
        raise ConfigError("the shift is zero or not finite: nothing to reweight along")
    w = np.maximum(1.0 + float(strength) * shift.to_numpy(dtype=np.float64) / top, floor)
    w = w / w.mean()
    return {str(k): float(v) for k, v in zip(shift.index, w)}


def circuit_target(heads: Mapping[str, list], size: float = -1.0) -> dict[str, float]:
    """A target that moves the observables of the classified circuit's heads (``previous_token`` and
    ``induction`` of :func:`serpent.induction.classify_heads`) by ``size`` each (negative: more structure)."""
    names = sorted(set(heads.get("previous_token", [])) | set(heads.get("induction", [])))
    if not names:
        raise ConfigError("no previous-token or induction heads to target: classify the heads of a checkpoint where "
                          "the circuit has begun to form")
    return {h: float(size) for h in names}
