"""The causal story of the induction circuit: which heads *cause* the in-context loss drop, and how they compose.

The scores of :mod:`serpent.induction` say what heads attend to; the three tools here test what they do:

* :func:`ablate_heads` replaces one head's output (``hook_z``) by its mean over the probe and measures the loss on
  the first and the second copy of repeated random tokens. Only heads the circuit needs raise the second copy's
  loss; the first copy (nothing to copy from) barely moves.
* :func:`patch_heads` runs a *corrupted* probe (the first copy replaced by other random tokens, so there is nothing
  to copy) and puts back one head's output from the clean run. ``recovered`` is the share of the clean-vs-corrupted
  loss gap on the second copy that this one head restores: near 1 for an induction head, which carries the copied
  token itself, and near 0 for the previous-token head, whose clean output only helps a layer-1 head find the
  right position (whose token is still the corrupted one).
* :func:`composition_scores` reads the weights: how much of a layer-1 head's query, key or value input a layer-0
  head's output (its OV circuit) can reach (Elhage et al. 2021), against the score of random matrices. The
  induction circuit is **K-composition**: the layer-0 previous-token head writes "my previous token was v", the
  layer-1 head's key reads it.

All three take any 2-layer hooked model (the course's model, the induction toy, the hand-built
:func:`serpent.induction.planted_induction_model`, whose answer is known).

>>> from serpent.induction import planted_induction_model, repeated_random_tokens
>>> m = planted_induction_model(d_vocab=24, n_ctx=32, n_heads=3, prev_head=1, induction_head=2)
>>> probe = repeated_random_tokens(4, 10, 24, seed=0)
>>> abl = ablate_heads(m, probe).set_index("head")
>>> bool(abl.loc["1:2", "loss_second"] > abl.loc["none", "loss_second"] + 1)   # the induction head is needed
True
>>> comp = composition_scores(m).set_index(["kind", "source", "target"])["score"]
>>> round(float(comp.loc[("K", "0:1", "1:2")]), 4), float(comp.loc[("Q", "0:1", "1:2")])   # 1/sqrt(24): see below
(0.2041, 0.0)
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import pandas as pd
import torch

from .errors import ConfigError
from .induction import _model_device, probe_half_len

__all__ = ["ablate_heads", "patch_heads", "corrupted_probe", "composition_scores"]


def _heads(model, heads: Optional[Iterable[str]]) -> list[tuple[int, int]]:
    cfg = model.cfg
    if heads is None:
        return [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    out = []
    for name in heads:
        try:
            layer, h = (int(x) for x in str(name).split(":"))
        except ValueError:
            raise ConfigError(f"head {name!r}: write heads as 'layer:head', e.g. '1:6'") from None
        if not (0 <= layer < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise ConfigError(f"head {name!r} does not exist in a {cfg.n_layers}-layer model with {cfg.n_heads} heads")
        out.append((layer, h))
    return out


def _halves(loss: torch.Tensor, L: int) -> tuple[float, float]:
    """Mean loss on the first copy (targets 2..L) and the second (targets L+2..2L): ``loss[:, t]`` predicts t+1."""
    return float(loss[:, 1:L].mean()), float(loss[:, L + 1:2 * L].mean())


@torch.no_grad()
def ablate_heads(model, probe: torch.Tensor, heads: Optional[Iterable[str]] = None, *,
                 kind: str = "mean", together: bool = False) -> pd.DataFrame:
    """Loss on both copies of ``probe`` with each head's output replaced by its mean (``kind="mean"``) or by zero.

    Returns one row per head plus ``head = "none"`` (the intact model): ``head, loss_first, loss_second,
    in_context_gain`` (first minus second: how much easier the second copy is) and ``delta_second`` (the second
    copy's loss rise when the head is ablated). ``together=True`` ablates all ``heads`` at once instead (one row,
    named ``"0:1+0:2"``): a circuit spread over several heads survives the loss of any one of them.
    """
    if kind not in ("mean", "zero"):
        raise ConfigError(f"kind: got {kind!r}; allowed: 'mean', 'zero'")
    L = probe_half_len(probe, model.cfg.n_ctx)
    probe = probe.to(_model_device(model))
    rows = []
    clean = model(probe, return_type="loss", loss_per_token=True).float()
    base = _halves(clean, L)
    rows.append(("none", *base))
    chosen = _heads(model, heads)
    for group in ([chosen] if together else [[lh] for lh in chosen]):
        hooks = []
        for layer, h in group:
            def hook(z, hook, h=h):                               # z: (batch, pos, head, d_head)
                z[:, :, h] = z[:, :, h].mean(dim=(0, 1)) if kind == "mean" else 0.0
                return z
            hooks.append((f"blocks.{layer}.attn.hook_z", hook))
        loss = model.run_with_hooks(probe, return_type="loss", loss_per_token=True, fwd_hooks=hooks).float()
        rows.append(("+".join(f"{layer}:{h}" for layer, h in group), *_halves(loss, L)))
    df = pd.DataFrame(rows, columns=["head", "loss_first", "loss_second"])
    df["in_context_gain"] = df["loss_first"] - df["loss_second"]
    df["delta_second"] = df["loss_second"] - base[1]
    return df


def corrupted_probe(probe: torch.Tensor, vocab_size: int, *, bos_id: int = 0, seed: int = 1) -> torch.Tensor:
    """``probe`` with its first copy replaced by other random tokens (none of the second copy's), so that the
    second copy has nothing to be copied from; the second copy, the targets scored, is unchanged.

    >>> from serpent.induction import repeated_random_tokens
    >>> p = repeated_random_tokens(2, 5, 40, seed=0)
    >>> c = corrupted_probe(p, 40)
    >>> bool((c[:, 6:] == p[:, 6:]).all()), bool((c[:, 1:6, None] != p[:, None, 6:]).all())
    (True, True)
    """
    L = (probe.shape[1] - 1) // 2
    g = torch.Generator().manual_seed(int(seed))
    out = probe.clone()
    for i in range(probe.shape[0]):
        banned = set(probe[i, L + 1:].tolist()) | {int(bos_id)}
        allowed = torch.tensor([t for t in range(int(vocab_size)) if t not in banned], dtype=torch.long)
        if len(allowed) == 0:
            raise ConfigError(f"vocab_size={vocab_size} leaves no token outside the probe's second copy")
        out[i, 1:L + 1] = allowed[torch.randint(0, len(allowed), (L,), generator=g)]
    return out


@torch.no_grad()
def patch_heads(model, probe: torch.Tensor, corrupted: Optional[torch.Tensor] = None,
                heads: Optional[Iterable[str]] = None, *, seed: int = 1) -> pd.DataFrame:
    """Activation patching: run ``corrupted`` (default :func:`corrupted_probe` of ``probe``) with one head's output
    taken from the clean run, and score the second copy.

    Returns one row per head: ``head, loss_second, recovered`` where ``recovered = (L_corrupted - L_patched) /
    (L_corrupted - L_clean)`` (1: this head alone restores the in-context advantage; 0: it does not help), and the
    frame's ``attrs`` hold ``clean`` and ``corrupted``, the two reference losses.
    """
    L = probe_half_len(probe, model.cfg.n_ctx)
    dev = _model_device(model)
    probe = probe.to(dev)
    corrupted = corrupted_probe(probe.cpu(), model.cfg.d_vocab, seed=seed).to(dev) if corrupted is None \
        else corrupted.to(dev)
    if corrupted.shape != probe.shape:
        raise ConfigError(f"corrupted: expected the probe's shape {tuple(probe.shape)}, got {tuple(corrupted.shape)}")
    clean_loss, cache = model.run_with_cache(probe, return_type="loss", loss_per_token=True,
                                             names_filter=lambda n: n.endswith("attn.hook_z"))
    clean = _halves(clean_loss.float(), L)[1]
    bad = _halves(model(corrupted, return_type="loss", loss_per_token=True).float(), L)[1]
    gap = bad - clean
    rows = []
    for layer, h in _heads(model, heads):
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook, h=h, name=name):
            z[:, :, h] = cache[name][:, :, h]
            return z
        loss = model.run_with_hooks(corrupted, return_type="loss", loss_per_token=True,
                                    fwd_hooks=[(name, hook)]).float()
        patched = _halves(loss, L)[1]
        rows.append((f"{layer}:{h}", patched, (bad - patched) / gap if abs(gap) > 1e-9 else np.nan))
    df = pd.DataFrame(rows, columns=["head", "loss_second", "recovered"])
    df.attrs.update(clean=clean, corrupted=bad)
    return df


@torch.no_grad()
def composition_scores(model) -> pd.DataFrame:
    """Q-, K- and V-composition between every layer-0 head (source) and layer-1 head (target), from the weights.

    With TransformerLens' row-vector convention (``q = x W_Q``), head ``s`` writes ``x W_OV`` (``W_OV = W_V W_O``)
    and head ``t`` scores ``q_in W_QK k_inᵀ`` (``W_QK = W_Q W_Kᵀ``). The scores are Frobenius-norm ratios
    ``‖W_OV^s M‖ / (‖W_OV^s‖ ‖M‖)`` with ``M = W_QK^t`` (Q), ``(W_QK^t)ᵀ`` (K) or ``W_OV^t`` (V). The ratio is at
    most 1 (reached by aligned rank-1 maps); two aligned rank-r identities give ``1/sqrt(r)``; unrelated random
    matrices about ``1/sqrt(d_model)``, the ``baseline`` column; a head that writes nothing 0. Compare a pair with
    the baseline and with the same pair at initialisation. Returns ``kind, source, target, score, baseline``.
    """
    cfg = model.cfg
    if cfg.n_layers < 2:
        raise ConfigError("composition_scores needs a model with at least two layers")
    b0, b1 = model.blocks[0].attn, model.blocks[1].attn
    ov0 = (b0.W_V @ b0.W_O).float()                                        # (H, d_model, d_model)
    qk1 = (b1.W_Q @ b1.W_K.transpose(-1, -2)).float()
    ov1 = (b1.W_V @ b1.W_O).float()
    rows = []
    for kind, reads in (("Q", qk1), ("K", qk1.transpose(-1, -2)), ("V", ov1)):
        for s in range(cfg.n_heads):
            for t in range(cfg.n_heads):
                denom = torch.linalg.norm(ov0[s]) * torch.linalg.norm(reads[t])
                score = float(torch.linalg.norm(ov0[s] @ reads[t]) / denom) if denom > 0 else 0.0
                rows.append((kind, f"0:{s}", f"1:{t}", score))
    df = pd.DataFrame(rows, columns=["kind", "source", "target", "score"])
    df["baseline"] = 1.0 / np.sqrt(cfg.d_model)
    return df
