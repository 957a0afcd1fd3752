"""Induction heads: detectors, developmental curves over checkpoints, and a hand-built circuit that proves them.

Design
------
Every measurement runs the model on a fixed, seeded probe and reads only what it needs:

* **Probe** (:func:`repeated_random_tokens`): ``[BOS, r_1..r_L, r_1..r_L]``, i.e. ``2L+1`` tokens, where the ``r_i``
  are uniform random token ids, distinct within a sequence when the vocabulary allows (so "the earlier occurrence"
  is unambiguous) and never the BOS id or any id in ``exclude``. ``L`` shrinks to ``(n_ctx-1)//2`` when the context is
  short. Position ``i`` (1..L) holds ``r_i`` and so does position ``L+i``.
* **Previous-token score** of a head: mean attention from query ``t`` to key ``t-1`` over the probe, for ``t`` = 2..2L
  (position 1 is skipped: its previous token is BOS, which many heads use as a resting place).
* **Prefix-matching (induction) score**: mean attention from the second occurrence of ``r_i`` (query ``L+i``) to the
  token after its first occurrence (key ``i+1``), for ``i`` = 1..L.
* Both are read inside a forward hook on ``blocks.{l}.attn.hook_pattern`` (``run_with_hooks`` with a
  ``names_filter``-style predicate), reduced to two numbers per head at once: no attention pattern is kept.
  Under *uniform* causal attention the scores equal ``chance_prev_token`` and ``chance_prefix`` (reported with the
  scores; ~0.018 and ~0.005 at L=128), the natural baseline for "near chance".
* **Induction loss**, from the same forward: mean per-token loss on the first copy (targets 2..L) and on the second
  copy (targets L+2..L+L; the target L+1 cannot be predicted by induction), and their difference
  ``induction_loss_diff = loss_second_half - loss_first_half`` (negative once the model copies).
* **In-context learning score** on held-out text (:func:`icl_windows`: seeded windows of the test stream with BOS at
  column 0, like our training windows): ``icl_score = loss_late - loss_early`` with the paper's positions
  (token 500 minus token 50 of a 1024-token context) scaled to the window length ``T``; each is averaged over the
  positions ``p +- round(10 T / 1024)`` (40..60 and 490..510 at T=1024) and over the windows.

Output is a tidy ``pandas.DataFrame`` with columns ``head, score, value``: rows with head ``"L:H"`` for the per-head
scores (``prev_token``, ``prefix``) and rows with head ``"model"`` for model-level numbers (losses, ICL, chance
levels); :func:`classify_heads` labels heads at one step with thresholds stated in its output. The scores over a
run's checkpoints are the ``induction`` stage (:mod:`serpent.stages.induction`).

:func:`planted_induction_model` builds, by hand, a 2-layer attention-only model whose head 0:A copies the previous
token into the residual stream and whose head 1:B attends to the token after the earlier occurrence of the current
token and copies it: the ground truth the detectors are tested against.

>>> model = planted_induction_model(d_vocab=40, n_ctx=41, n_heads=3, prev_head=1, induction_head=2)
>>> df = induction_scores(model, n_seqs=4, half_len=20, bos_id=0)
>>> classify_heads(df)["induction"], classify_heads(df)["previous_token"]
(['1:2'], ['0:1'])
>>> s = df[df["head"] == "model"].set_index("score").value
>>> bool(s["loss_second_half"] < 0.1 * s["loss_first_half"])
True
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .config import InductionConfig   # re-exported: the induction section of RunConfig
from .errors import ConfigError, CorpusError, SerpentError
from .hooked import HookedConfig, HookedShortformer

__all__ = [
    "InductionConfig", "repeated_random_tokens", "icl_windows", "icl_positions", "chance_scores",
    "induction_scores", "classify_heads", "planted_induction_model",
    "PER_HEAD_SCORES", "MODEL_SCORES",
]

PER_HEAD_SCORES = ("prev_token", "prefix")
MODEL_SCORES = ("loss_first_half", "loss_second_half", "induction_loss_diff", "icl_loss_early", "icl_loss_late",
                "icl_score", "chance_prev_token", "chance_prefix")

# paper positions (Hoogland et al.: loss@500 - loss@50 with n_ctx 1024), as fractions of the context
_ICL_EARLY, _ICL_LATE, _ICL_HALF_WIDTH = 50 / 1024, 500 / 1024, 10 / 1024
_PATTERN_BUDGET = 2 ** 25  # floats of attention pattern per forward chunk (128 MiB per layer)


# ---------------------------------------------------------------------------------------------------------------
# probes
# ---------------------------------------------------------------------------------------------------------------

def repeated_random_tokens(n_seqs: int, half_len: int, vocab_size: int, *, bos_id: int = 0,
                           exclude: Iterable[int] = (), seed: int = 0) -> torch.Tensor:
    """Seeded probe ``(n_seqs, 2*half_len+1)`` int64: BOS, then ``half_len`` random tokens, then the same again.

    Tokens are drawn uniformly from ``range(vocab_size)`` minus ``bos_id`` and ``exclude``, without repetition
    inside a sequence when enough ids are allowed.

    >>> t = repeated_random_tokens(2, 5, 50, bos_id=0, seed=1)
    >>> t.shape, bool((t[:, 1:6] == t[:, 6:]).all()), bool((t[:, 1:] != 0).all()), bool((t[:, 0] == 0).all())
    (torch.Size([2, 11]), True, True, True)
    """
    if half_len < 2:
        raise ConfigError(f"half_len: got {half_len}; need at least 2 random tokens per half")
    if n_seqs < 1:
        raise ConfigError(f"n_seqs: got {n_seqs}; need at least one probe sequence")
    banned = {int(bos_id), *map(int, exclude)}
    allowed = torch.tensor([i for i in range(int(vocab_size)) if i not in banned], dtype=torch.long)
    if len(allowed) < 2:
        raise ConfigError(f"vocab_size={vocab_size} leaves fewer than 2 token ids after excluding {sorted(banned)}; "
                          f"pass the model's real vocabulary size")
    g = torch.Generator().manual_seed(int(seed))
    if len(allowed) >= half_len:
        idx = torch.rand(n_seqs, len(allowed), generator=g).argsort(dim=1)[:, :half_len]
    else:  # tiny vocabularies: repeats inside a half are unavoidable
        idx = torch.randint(0, len(allowed), (n_seqs, half_len), generator=g)
    half = allowed[idx]
    bos = torch.full((n_seqs, 1), int(bos_id), dtype=torch.long)
    return torch.cat([bos, half, half], dim=1)


def icl_windows(stream: np.ndarray | torch.Tensor | Sequence[int], n_windows: int, length: int, *, bos_id: int = 0,
                seed: int = 0) -> torch.Tensor:
    """Seeded windows ``(n_windows, length)`` of a token stream, each BOS followed by ``length-1`` stream tokens.

    >>> w = icl_windows(np.arange(1, 101), 3, 8, bos_id=0, seed=0)
    >>> w.shape, bool((w[:, 0] == 0).all()), bool((w[:, 2:] - w[:, 1:-1] == 1).all())
    (torch.Size([3, 8]), True, True)
    """
    from .tokens import fixed_windows
    stream = np.asarray(stream)
    if length < 3:
        raise ConfigError(f"length: got {length}; ICL windows need at least 3 tokens")
    if len(stream) < length - 1:
        raise CorpusError(f"the held-out token stream has {len(stream)} tokens, fewer than one window of "
                          f"{length - 1}; use a larger corpus or test_fraction")
    return fixed_windows(stream, n_windows, length, seed, bos_id)[0]


def icl_positions(length: int) -> tuple[range, range]:
    """Token positions ``(early, late)`` averaged by the ICL score for windows of ``length`` tokens.

    >>> icl_positions(1024)
    (range(40, 61), range(490, 511))
    >>> icl_positions(128)
    (range(5, 8), range(61, 64))
    """
    w = round(length * _ICL_HALF_WIDTH)
    early, late = round(length * _ICL_EARLY), round(length * _ICL_LATE)
    early = max(early, w + 1)  # position 0 is BOS and has no loss
    return range(early - w, early + w + 1), range(late - w, min(late + w + 1, length))


def chance_scores(half_len: int) -> dict[str, float]:
    """The scores of a head attending uniformly to all earlier positions (itself included), for probes of
    ``half_len``.

    >>> {k: round(v, 4) for k, v in chance_scores(128).items()}
    {'prev_token': 0.0181, 'prefix': 0.0054}
    """
    L = half_len
    prev = np.mean([1.0 / (q + 1) for q in range(2, 2 * L + 1)])
    prefix = np.mean([1.0 / (q + 1) for q in range(L + 1, 2 * L + 1)])
    return {"prev_token": float(prev), "prefix": float(prefix)}


# ---------------------------------------------------------------------------------------------------------------
# scores for one model
# ---------------------------------------------------------------------------------------------------------------

def probe_half_len(probe: torch.Tensor, n_ctx: int) -> int:
    """``L`` of a probe ``(n_seqs, 2L+1)`` from :func:`repeated_random_tokens`, checked against the context."""
    if probe.dim() != 2 or probe.shape[1] % 2 != 1 or probe.shape[1] < 5:
        raise ConfigError(f"probe: expected (n_seqs, 2*half_len+1) tokens, got {tuple(probe.shape)}")
    if probe.shape[1] > n_ctx:
        raise ConfigError(f"probe of {probe.shape[1]} tokens does not fit n_ctx={n_ctx}; build a shorter one")
    return (probe.shape[1] - 1) // 2


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _chunk(n_heads: int, T: int) -> int:
    return max(1, _PATTERN_BUDGET // max(1, n_heads * T * T))


@torch.no_grad()
def _probe_forward(model: torch.nn.Module, tokens: torch.Tensor, half_len: int,
                   batch_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """prev (n_layers, n_heads), prefix (n_layers, n_heads), loss_first_half, loss_second_half."""
    L = half_len
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    prev_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    prefix_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    dev = _model_device(model)

    def hook(pattern, hook):
        # pattern: (batch, head, query, key)
        layer = int(hook.name.split(".")[1])
        p = pattern.float()
        prev = p.diagonal(offset=-1, dim1=-2, dim2=-1)[..., 1:]          # queries 2..2L -> keys 1..2L-1
        pref = p.diagonal(offset=-(L - 1), dim1=-2, dim2=-1)[..., 2:]    # queries L+1..2L -> keys 2..L+1
        prev_sum[layer] += prev.sum(dim=(0, 2)).double().cpu()
        prefix_sum[layer] += pref.sum(dim=(0, 2)).double().cpu()

    B = tokens.shape[0]
    bs = batch_size or _chunk(n_heads, tokens.shape[1])
    first, second = 0.0, 0.0
    for s in range(0, B, bs):
        chunk = tokens[s:s + bs].to(dev)
        loss = model.run_with_hooks(chunk, return_type="loss", loss_per_token=True,
                                    fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), hook)])
        loss = loss.float()  # (b, 2L): loss[t] predicts token t+1
        first += loss[:, 1:L].sum().item()
        second += loss[:, L + 1:2 * L].sum().item()
    prev = (prev_sum / (B * (2 * L - 1))).numpy()
    prefix = (prefix_sum / (B * L)).numpy()
    return prev, prefix, first / (B * (L - 1)), second / (B * (L - 1))


@torch.no_grad()
def _icl_forward(model: torch.nn.Module, windows: torch.Tensor, batch_size: Optional[int] = None
                 ) -> tuple[float, float]:
    """(loss_early, loss_late) on held-out windows ``(n, T)``.

    Only the first ``late.stop`` tokens are run (the loss at p depends on tokens <= p only), through the fused
    functional forward of :mod:`serpent.model` when it reproduces the model, else through the model itself.
    """
    from .model import fast_model_config, model_params, per_token_loss
    T = windows.shape[1]
    early, late = icl_positions(T)
    windows = windows[:, :late.stop]
    dev = _model_device(model)
    fast = fast_model_config(model)
    bs = batch_size or _chunk(model.cfg.n_heads, windows.shape[1])
    e_sum, l_sum = 0.0, 0.0
    for s in range(0, windows.shape[0], bs):
        chunk = windows[s:s + bs].to(dev)
        if fast is not None:
            loss = per_token_loss(model_params(model), chunk, fast).float()
        else:
            loss = model(chunk, return_type="loss", loss_per_token=True).float()
        # loss at token position p is loss[:, p-1]
        e_sum += loss[:, early.start - 1:early.stop - 1].sum().item()
        l_sum += loss[:, late.start - 1:late.stop - 1].sum().item()
    n = windows.shape[0]
    return e_sum / (n * len(early)), l_sum / (n * len(late))


def induction_scores(model: torch.nn.Module, *, n_seqs: int = 32, half_len: int = 128, seed: int = 0,
                     bos_id: int = 0, exclude: Iterable[int] = (), vocab_size: Optional[int] = None,
                     text_tokens: Optional[torch.Tensor] = None, probe: Optional[torch.Tensor] = None,
                     batch_size: Optional[int] = None) -> pd.DataFrame:
    """Previous-token and prefix-matching scores per head, induction losses and (with ``text_tokens``) the ICL
    score of any hooked model (ours, the paper's checkpoints, a TransformerLens 4 ``TransformerBridge``...).

    ``half_len`` shrinks to ``(n_ctx-1)//2`` when ``2*half_len+1`` does not fit the context. ``vocab_size`` defaults
    to ``model.cfg.d_vocab``; with a tokenizer attached, its special tokens are excluded from the probe too.
    ``text_tokens``: held-out windows ``(n, T)`` starting with BOS (see :func:`icl_windows`); without them the ICL
    rows are omitted. ``probe``: a ready probe ``(n, 2L+1)`` from :func:`repeated_random_tokens` (reused across
    checkpoints). Returns a tidy frame with columns ``head`` (``"L:H"`` or ``"model"``), ``score``, ``value``.

    >>> from serpent.config import ModelConfig
    >>> from serpent.model import build_model
    >>> m = build_model(ModelConfig(n_heads=2, d_model=16, d_head=4, n_ctx=32, d_vocab=64))
    >>> df = induction_scores(m, n_seqs=2, half_len=100)     # shrinks to 15 to fit n_ctx=32
    >>> sorted(df[df["head"] != "model"]["head"].unique()), sorted(df.score.unique())[:3]
    (['0:0', '0:1', '1:0', '1:1'], ['chance_prefix', 'chance_prev_token', 'induction_loss_diff'])
    """
    n_ctx = model.cfg.n_ctx
    if probe is None:
        L = min(int(half_len), (n_ctx - 1) // 2)
        if L < 2:
            raise ConfigError(f"n_ctx={n_ctx} is too short for a repeated-token probe (needs at least 5 tokens)")
        if vocab_size is None:
            vocab_size = model.cfg.d_vocab
            tok = getattr(model, "tokenizer", None)
            if tok is not None:
                vocab_size = min(vocab_size, len(tok))
                exclude = set(exclude) | set(getattr(tok, "all_special_ids", []) or [])
        probe = repeated_random_tokens(n_seqs, L, vocab_size, bos_id=bos_id, exclude=exclude, seed=seed)
    else:
        L = probe_half_len(probe, n_ctx)
    if text_tokens is not None and (text_tokens.dim() != 2 or text_tokens.shape[1] > n_ctx):
        raise ConfigError(f"text_tokens: expected (n, T) with T <= n_ctx={n_ctx}, got {tuple(text_tokens.shape)}")

    prev, prefix, first, second = _probe_forward(model, probe, L, batch_size)
    rows = []
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            rows.append((f"{l}:{h}", "prev_token", float(prev[l, h])))
            rows.append((f"{l}:{h}", "prefix", float(prefix[l, h])))
    chance = chance_scores(L)
    rows += [("model", "loss_first_half", first), ("model", "loss_second_half", second),
             ("model", "induction_loss_diff", second - first),
             ("model", "chance_prev_token", chance["prev_token"]), ("model", "chance_prefix", chance["prefix"])]
    if text_tokens is not None:
        early, late = _icl_forward(model, text_tokens, batch_size)
        rows += [("model", "icl_loss_early", early), ("model", "icl_loss_late", late),
                 ("model", "icl_score", late - early)]
    return pd.DataFrame(rows, columns=["head", "score", "value"])


# ---------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------

def classify_heads(scores: pd.DataFrame, *, step: Optional[int] = None, prev_threshold: float = 0.15,
                   prefix_threshold: float = 0.04, chance_factor: float = 5.0) -> dict:
    """Label every head ``induction``, ``previous-token`` or ``other`` at one step (the last if ``step`` is None).

    Rule (first match wins): induction if prefix >= max(``prefix_threshold``, ``chance_factor`` x chance_prefix);
    previous-token if prev_token >= max(``prev_threshold``, ``chance_factor`` x chance_prev_token); else other.
    The chance levels are read from the table's ``model`` rows when present. Returns a JSON-able dict with the
    effective thresholds, the rule, the lists ``induction`` and ``previous_token`` (ordered by score) and per-head
    ``heads[label] = {class, prev_token, prefix}``.

    >>> df = pd.DataFrame({"head": ["0:0", "0:0", "1:0", "1:0"], "score": ["prev_token", "prefix"] * 2,
    ...                    "value": [0.9, 0.01, 0.05, 0.5]})
    >>> c = classify_heads(df); c["previous_token"], c["induction"]
    (['0:0'], ['1:0'])
    """
    df = scores
    if "step" in df.columns:
        steps = sorted(df["step"].unique())
        if not steps:
            raise SerpentError("classify_heads: the score table is empty")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ConfigError(f"step: got {step}; the table has steps {steps}")
        df = df[df["step"] == step]
    missing = set(PER_HEAD_SCORES) - set(df["score"])
    if missing:
        raise SerpentError(f"classify_heads: the table has no {sorted(missing)} rows; compute it with "
                           f"induction_scores or serpent.stages.scores_over_checkpoints")
    model_rows = df[df["head"] == "model"].set_index("score")["value"]
    chance_prev = float(model_rows.get("chance_prev_token", 0.0))
    chance_prefix = float(model_rows.get("chance_prefix", 0.0))
    t_prev = max(prev_threshold, chance_factor * chance_prev)
    t_prefix = max(prefix_threshold, chance_factor * chance_prefix)
    wide = df[df["head"] != "model"].pivot_table(index="head", columns="score", values="value", aggfunc="first")
    wide = wide.loc[sorted(wide.index, key=lambda s: tuple(int(x) for x in s.split(":")))]
    heads, ind, prev = {}, [], []
    for head, r in wide.iterrows():
        if r["prefix"] >= t_prefix:
            cls = "induction"
            ind.append(head)
        elif r["prev_token"] >= t_prev:
            cls = "previous-token"
            prev.append(head)
        else:
            cls = "other"
        heads[head] = {"class": cls, "prev_token": float(r["prev_token"]), "prefix": float(r["prefix"])}
    ind.sort(key=lambda h: -heads[h]["prefix"])
    prev.sort(key=lambda h: -heads[h]["prev_token"])
    return {
        "step": None if step is None else int(step),
        "rule": ("induction if prefix >= prefix_threshold, else previous-token if prev_token >= prev_threshold, "
                 "else other; each threshold = max(stated value, chance_factor * uniform-attention chance)"),
        "thresholds": {"prefix": t_prefix, "prev_token": t_prev, "prefix_stated": prefix_threshold,
                       "prev_token_stated": prev_threshold, "chance_factor": chance_factor,
                       "chance_prefix": chance_prefix, "chance_prev_token": chance_prev},
        "induction": ind, "previous_token": prev, "heads": heads,
    }


# ---------------------------------------------------------------------------------------------------------------
# the planted circuit
# ---------------------------------------------------------------------------------------------------------------

def planted_induction_model(d_vocab: int = 64, n_ctx: int = 64, n_heads: int = 4, prev_head: int = 1,
                            induction_head: int = 2, sharpness: float = 30.0, copy_logit: float = 20.0,
                            decoys: bool = True, seed: int = 0) -> HookedShortformer:
    """A hand-built 2-layer attention-only :class:`~serpent.hooked.HookedShortformer` (no LayerNorm, standard
    positions) that implements the induction circuit exactly.

    Residual stream = four one-hot blocks ``[token | position | previous token | output]`` (``d_model = 3 V + n_ctx``).

    * Head ``0:prev_head`` (previous-token head): the query of position t matches the key of position t-1
      (score ``sharpness``) through the position block; it reads the token block and writes it into the
      *previous token* block.
    * Head ``1:induction_head``: the query (current token v) matches keys whose *previous token* block holds v, i.e.
      the position right after an earlier occurrence of v; it reads that position's token and writes it into the
      *output* block, which the unembedding turns into a logit of ``copy_logit`` for the copied token.
    * Other heads (``decoys=True``) attend but write nothing (``W_O = 0``): in layer 0 one attends to itself, in
      layer 1 one attends to earlier occurrences of the *same* token (a duplicate-token head, off by one from
      induction) and the rest have random query/key weights.

    >>> m = planted_induction_model(d_vocab=20, n_ctx=16, n_heads=2, prev_head=0, induction_head=1)
    >>> m.cfg.d_model, m.cfg.n_layers
    (76, 2)
    """
    V, N, H = d_vocab, n_ctx, n_heads
    if not (0 <= prev_head < H and 0 <= induction_head < H):
        raise ConfigError(f"prev_head={prev_head}, induction_head={induction_head}: must lie in 0..{H - 1}")
    tok, pos, prv, outb = 0, V, V + N, 2 * V + N
    D = 3 * V + N
    dh = max(V, N)
    cfg = HookedConfig(n_layers=2, n_heads=H, d_model=D, d_head=dh, n_ctx=N, d_vocab=V, attn_only=True,
                       normalization_type=None, positional_embedding_type="standard", seed=seed, device="cpu")
    model = HookedShortformer(cfg)
    g = torch.Generator().manual_seed(seed)
    scale = sharpness * math.sqrt(dh)  # TransformerLens divides scores by sqrt(d_head)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
    sd["embed.W_E"][torch.arange(V), tok + torch.arange(V)] = 1.0
    sd["pos_embed.W_pos"][torch.arange(N), pos + torch.arange(N)] = 1.0
    sd["unembed.W_U"][outb + torch.arange(V), torch.arange(V)] = copy_logit

    a0, a1 = "blocks.0.attn.", "blocks.1.attn."
    # layer 0, previous-token head: q(t) = e_t, k(s) = e_{s+1}; value = token; output -> previous-token block
    sd[a0 + "W_Q"][prev_head, pos + torch.arange(N), torch.arange(N)] = scale
    sd[a0 + "W_K"][prev_head, pos + torch.arange(N - 1), torch.arange(1, N)] = 1.0
    sd[a0 + "W_V"][prev_head, tok + torch.arange(V), torch.arange(V)] = 1.0
    sd[a0 + "W_O"][prev_head, torch.arange(V), prv + torch.arange(V)] = 1.0
    # layer 1, induction head: q(t) = current token, k(s) = previous token at s; value = token -> output block
    sd[a1 + "W_Q"][induction_head, tok + torch.arange(V), torch.arange(V)] = scale
    sd[a1 + "W_K"][induction_head, prv + torch.arange(V), torch.arange(V)] = 1.0
    sd[a1 + "W_V"][induction_head, tok + torch.arange(V), torch.arange(V)] = 1.0
    sd[a1 + "W_O"][induction_head, torch.arange(V), outb + torch.arange(V)] = 1.0
    if decoys:
        others0 = [h for h in range(H) if h != prev_head]
        others1 = [h for h in range(H) if h != induction_head]
        for layer, others in ((0, others0), (1, others1)):
            a = f"blocks.{layer}.attn."
            for i, h in enumerate(others):
                if i == 0 and layer == 0:  # attends to itself (position match)
                    sd[a + "W_Q"][h, pos + torch.arange(N), torch.arange(N)] = scale
                    sd[a + "W_K"][h, pos + torch.arange(N), torch.arange(N)] = 1.0
                elif i == 0 and layer == 1:  # duplicate-token head: earlier occurrences of the same token
                    sd[a + "W_Q"][h, tok + torch.arange(V), torch.arange(V)] = scale
                    sd[a + "W_K"][h, tok + torch.arange(V), torch.arange(V)] = 1.0
                else:  # random attention
                    sd[a + "W_Q"][h] = torch.randn(D, dh, generator=g) / math.sqrt(D)
                    sd[a + "W_K"][h] = torch.randn(D, dh, generator=g) / math.sqrt(D)
    model.load_state_dict(sd, strict=False)
    model.eval()
    return model
