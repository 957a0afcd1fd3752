"""The model: a hooked transformer (:class:`~serpent.hooked.HookedShortformer`, a TransformerLens 4
``HookedRootModule``) plus a fast functional forward over the same tensors.

Two ways to get per-token losses, tested to agree (fp32, tight tolerance):

* :func:`hooked_per_token_loss` runs the hooked model itself, so every TransformerLens tool (hooks,
  ``run_with_cache``, ``blocks.{l}.attn.hook_pattern``) works on our model.
* :func:`per_token_loss` is a pure function of a parameter dictionary keyed by TransformerLens names
  (``blocks.0.attn.W_Q`` ...). It uses fused attention (``scaled_dot_product_attention``) and a memory-lean
  cross-entropy that never keeps the ``(tokens, vocab)`` logits for the backward pass. Every tensor may carry a
  leading *replica* dimension R (stacked parameter sets: SGLD chains x weight restrictions), so R models run as one
  batched computation.

Shapes: ``tokens`` is ``(batch, pos)`` (shared by all replicas) or ``(R, batch, pos)``; the result is
``(batch, pos-1)`` or ``(R, batch, pos-1)``: the loss of predicting token t+1 from tokens <= t.

>>> cfg = ModelConfig(d_model=16, d_head=4, n_heads=2, n_ctx=8, d_vocab=32)
>>> model = build_model(cfg)
>>> tokens = torch.randint(0, 32, (2, 8))
>>> fast = per_token_loss(model_params(model), tokens, cfg)
>>> slow = hooked_per_token_loss(model, tokens)
>>> fast.shape, bool(torch.allclose(fast, slow, atol=1e-5))
(torch.Size([2, 7]), True)
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .errors import ConfigError
from .hooked import HookedConfig, HookedShortformer

__all__ = [
    "build_model", "hooked_config", "model_params", "per_token_loss", "hooked_per_token_loss", "stack_params",
    "linear_cross_entropy", "supports_fast_path", "head_param_names", "model_config_of", "fast_model_config",
    "ReplicaParams", "causal_attention",
]


def hooked_config(cfg: ModelConfig, device: str | torch.device = "cpu") -> HookedConfig:
    """The :class:`~serpent.hooked.HookedConfig` (TransformerLens' vocabulary) for our :class:`ModelConfig`."""
    return HookedConfig(
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head, n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab, attn_only=cfg.attn_only, d_mlp=None if cfg.attn_only else cfg.d_mlp,
        act_fn=cfg.act_fn, positional_embedding_type=cfg.positional_embedding_type,
        normalization_type=cfg.normalization_type, seed=cfg.seed, device=str(device),
    )


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> HookedShortformer:
    """A freshly initialised :class:`~serpent.hooked.HookedShortformer` (seeded by ``cfg.seed``)."""
    return HookedShortformer(hooked_config(cfg, device))


def model_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by TransformerLens name (the tensors themselves, not copies)."""
    return dict(model.named_parameters())


def head_param_names(layer: int) -> list[str]:
    """Names of the per-head parameter tensors of a layer (index ``[h]`` selects head h)."""
    p = f"blocks.{layer}.attn."
    return [p + n for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")]


def supports_fast_path(model: torch.nn.Module) -> bool:
    """Whether :func:`per_token_loss` reproduces this model (our architecture family) exactly."""
    return isinstance(model, HookedShortformer)


def model_config_of(model: torch.nn.Module) -> ModelConfig:
    """The :class:`~serpent.config.ModelConfig` of a model of our architecture family: the one way from a hooked
    model to our config (the LLC, susceptibility and induction code all use it).

    >>> cfg = ModelConfig(d_model=16, d_head=4, n_heads=2, n_ctx=8, d_vocab=32)
    >>> model_config_of(build_model(cfg)) == cfg
    True
    """
    c = model.cfg
    return ModelConfig(n_layers=c.n_layers, n_heads=c.n_heads, d_model=c.d_model, d_head=c.d_head, n_ctx=c.n_ctx,
                       d_vocab=c.d_vocab, positional_embedding_type=c.positional_embedding_type,
                       normalization_type=c.normalization_type, attn_only=c.attn_only,
                       d_mlp=None if c.attn_only else c.d_mlp, act_fn=c.act_fn or "gelu")


def fast_model_config(model: torch.nn.Module) -> Optional[ModelConfig]:
    """:func:`model_config_of` when :func:`per_token_loss` reproduces ``model`` exactly (:func:`supports_fast_path`,
    LayerNorm's eps 1e-5, an unembedding onto the same vocabulary), else None: the caller then uses the model
    itself (its own forward)."""
    if not supports_fast_path(model):
        return None
    c = model.cfg
    try:
        if getattr(c, "eps", 1e-5) != 1e-5 or getattr(c, "d_vocab_out", c.d_vocab) not in (c.d_vocab, -1):
            return None
        return model_config_of(model)
    except (ConfigError, AttributeError):
        return None


def hooked_per_token_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token loss ``(batch, pos-1)`` computed by the hooked model itself (the reference)."""
    return model(tokens, return_type="loss", loss_per_token=True)


class ReplicaParams(dict):
    """Stacked parameters that also say which replicas (rows) of each are free.

    ``free[name] = (a, b)``: rows outside ``[a, b)`` of ``self[name]`` all hold the same value (the sampler's w*,
    frozen by a weight restriction) and need no gradient. :func:`per_token_loss` uses it to compute, once for all
    such rows, what they share (the embedding and layer 0 for restrictions to layer-1 heads) and to skip gradients
    of the unembedding for rows that freeze it. A name missing from ``free`` is free in every row.

    ``heads[layer]`` (optional, with ``w_star``: the unstacked values at w*): one entry per row, ``h >= 0`` when the
    row moves only the weights of head h of that layer (``-1``: none of the layer's; ``-2``: others too). A row
    that reads the shared input of a layer and moves one head of it then computes that head only; the other heads'
    outputs are w*'s, computed once (a head sweep's attention costs about half).

    >>> p = ReplicaParams({"w": torch.zeros(4, 2)}, free={"w": (0, 1)})
    >>> p.free["w"], isinstance(p, dict)
    ((0, 1), True)
    """

    def __init__(self, params: dict[str, torch.Tensor], free: dict[str, tuple[int, int]],
                 heads: dict[int, tuple[int, ...]] | None = None, w_star: dict[str, torch.Tensor] | None = None):
        super().__init__(params)
        self.free = dict(free)
        self.heads = dict(heads) if heads is not None and w_star is not None else None
        self.w_star = w_star if self.heads is not None else None


def stack_params(params: dict[str, torch.Tensor], replicas: int) -> dict[str, torch.Tensor]:
    """Independent copies of ``params`` stacked along a new leading dimension of size ``replicas``."""
    return {k: v.detach().unsqueeze(0).repeat(replicas, *([1] * v.dim())).contiguous() for k, v in params.items()}


def _layer_norm(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    # x: (R, B, T, D); w, b: (R, D). torch's fused layer norm (one pass forward, one backward); the per-replica
    # scale and shift after it when there are several replicas.
    if w is not None and x.shape[0] == 1:
        return F.layer_norm(x, x.shape[-1:], w[0], b[0], eps)
    x = F.layer_norm(x, x.shape[-1:], eps=eps)
    return x if w is None else x * w[:, None, None, :] + b[:, None, None, :]


_KEEP_PROBS_ELEMENTS = 2 ** 26  # 256 MB of fp32 probabilities
#: Logits computed at once (16 MB of fp32): blocks of (replicas x tokens) this size keep the softmax's element-wise
#: work in a buffer that is reused, instead of (replicas x tokens x vocabulary) arrays of hundreds of MB.
_CE_BLOCK_ELEMENTS = 2 ** 22


def _ce_blocks(R: int, N: int, V: int, chunk: int):
    """``(r0, r1, n0, n1)`` blocks covering replicas x tokens, each at most ``chunk`` tokens of one replica or
    several whole replicas, and about ``_CE_BLOCK_ELEMENTS`` logits."""
    per = max(1, min(chunk, _CE_BLOCK_ELEMENTS // max(V, 1)))     # tokens per block
    if N >= per:
        for r in range(R):
            for s in range(0, N, per):
                yield r, r + 1, s, min(N, s + per)
    else:
        step = max(1, per // max(N, 1))
        for r in range(0, R, step):
            yield r, min(R, r + step), 0, N


def _logits_into(buf: torch.Tensor, b, x, W, r0, r1, n0, n1) -> torch.Tensor:
    """``x[r0:r1, n0:n1] @ W[r0:r1] + b[r0:r1]`` as fp32, written into the front of ``buf`` (flat, or already a
    contiguous ``(r1 - r0, n1 - n0, V)`` block)."""
    out = buf.view(-1)[:(r1 - r0) * (n1 - n0) * W.shape[-1]].view(r1 - r0, n1 - n0, W.shape[-1])
    if x.dtype == torch.float32 and W.dtype == torch.float32 and b.dtype == torch.float32:
        torch.baddbmm(b[r0:r1, None, :], x[r0:r1, n0:n1], W[r0:r1], out=out)
    else:                                   # mixed precision: compute in x's dtype, keep the softmax in fp32
        out.copy_(torch.baddbmm(b[r0:r1, None, :].to(x.dtype), x[r0:r1, n0:n1], W[r0:r1].to(x.dtype)))
    return out


class _LinearCrossEntropy(torch.autograd.Function):
    """Fused unembedding + cross-entropy in blocks of replicas x tokens, in place in one reused buffer; recomputes
    the logits in backward unless the probabilities are small enough to keep."""

    @staticmethod
    def forward(ctx, x, W, b, targets, chunk, grad_rows):
        # x: (R, N, D); W: (R, D, V); b: (R, V); targets: (R, N) -> loss (R, N) in fp32
        R, N, _ = x.shape
        V = W.shape[-1]
        loss = torch.empty(R, N, device=x.device, dtype=torch.float32)
        lse_all = torch.empty(R, N, device=x.device, dtype=torch.float32)
        # When they are small, keep exp(logit - max) for the backward pass (the logits are computed straight into
        # it, and the softmax's 1/sum is folded into the backward's one multiplication); else recompute there.
        keep = any(ctx.needs_input_grad[:3]) and R * N * V <= _KEEP_PROBS_ELEMENTS
        exps = torch.empty(R, N, V, device=x.device, dtype=torch.float32) if keep else None
        inv_total = torch.empty(R, N, device=x.device, dtype=torch.float32) if keep else None
        blocks = list(_ce_blocks(R, N, V, chunk))
        buf = None if keep else torch.empty(max((r1 - r0) * (n1 - n0) for r0, r1, n0, n1 in blocks) * V,
                                            device=x.device, dtype=torch.float32)
        for r0, r1, n0, n1 in blocks:
            out = exps[r0:r1, n0:n1] if keep else buf
            logits = _logits_into(out, b, x, W, r0, r1, n0, n1)
            top = logits.amax(-1, keepdim=True)
            tgt = logits.gather(-1, targets[r0:r1, n0:n1, None]).squeeze(-1)
            total = logits.sub_(top).exp_().sum(-1)          # logits now hold exp(logit - top)
            lse = total.log() + top.squeeze(-1)                # (small: one number per token)
            loss[r0:r1, n0:n1] = lse - tgt
            lse_all[r0:r1, n0:n1] = lse
            if keep:
                inv_total[r0:r1, n0:n1] = total.reciprocal()
        ctx.save_for_backward(x, W, b, targets, lse_all)
        ctx.exps, ctx.inv_total = exps, inv_total     # not saved tensors: the backward consumes them in place
        ctx.chunk = chunk
        ctx.grad_rows = grad_rows if grad_rows is not None else (0, R)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        x, W, b, targets, lse_all = ctx.saved_tensors
        exps, inv_total = ctx.exps, ctx.inv_total
        R, N, _ = x.shape
        V = W.shape[-1]
        Wc = W.to(x.dtype)
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gW = torch.zeros(W.shape, device=W.device, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        gb = torch.zeros(b.shape, device=b.device, dtype=torch.float32) if ctx.needs_input_grad[2] else None
        reuse = exps is not None
        blocks = list(_ce_blocks(R, N, V, ctx.chunk))
        buf = None if reuse else torch.empty(max((r1 - r0) * (n1 - n0) for r0, r1, n0, n1 in blocks) * V,
                                             device=x.device, dtype=torch.float32)
        grad_loss = grad_loss.float()
        for r0, r1, n0, n1 in blocks:
            gl = grad_loss[r0:r1, n0:n1, None]
            if reuse:   # softmax x dloss = exp(logit - max) x (dloss / sum), in place: turned into the gradient
                g = exps[r0:r1, n0:n1].mul_(gl * inv_total[r0:r1, n0:n1, None])
            else:
                g = _logits_into(buf, b, x, W, r0, r1, n0, n1).sub_(lse_all[r0:r1, n0:n1, None]).exp_().mul_(gl)
            g.scatter_add_(-1, targets[r0:r1, n0:n1, None], gl.neg())          # minus dloss at the target
            if gx is not None:
                gx[r0:r1, n0:n1] = torch.bmm(g.to(x.dtype), Wc[r0:r1].transpose(1, 2))
            ra, rb = max(r0, ctx.grad_rows[0]), min(r1, ctx.grad_rows[1])   # rows whose W and b are free
            if gW is not None and ra < rb:
                gW[ra:rb] += torch.bmm(x[ra:rb, n0:n1].transpose(1, 2).float(), g[ra - r0:rb - r0])
            if gb is not None and ra < rb:
                gb[ra:rb] += g[ra - r0:rb - r0].sum(1)
        ctx.exps = ctx.inv_total = None  # consumed (and freed): a second backward (retain_graph) recomputes them
        return gx, (gW.to(W.dtype) if gW is not None else None), (gb.to(b.dtype) if gb is not None else None), \
            None, None, None


def linear_cross_entropy(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, targets: torch.Tensor,
                         chunk: int = 4096, grad_rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-token ``-log softmax(x @ W + b)[target]`` without materialising all logits at once.

    ``x`` is ``(R, N, D)``, ``W`` ``(R, D, V)``, ``b`` ``(R, V)``, ``targets`` ``(R, N)``; returns ``(R, N)`` fp32.
    ``grad_rows=(a, b)``: the gradients of ``W`` and ``b`` are computed for replicas ``a..b-1`` only (0 elsewhere).
    """
    return _LinearCrossEntropy.apply(x, W, b, targets, chunk, grad_rows)


_causal_masks: dict = {}
#: Scores kept for the backward pass by :func:`causal_attention`'s CPU path at most (256 MB of fp32); above it,
#: torch's fused attention, which keeps none.
_ATTN_KEEP_ELEMENTS = 2 ** 26
#: Queries per block of :class:`_CausalAttention` (a block reads the keys up to its last query only).
_ATTN_BLOCK_QUERIES = 16


def _causal_mask(lo: int, hi: int, dtype, device) -> torch.Tensor:
    """``(hi - lo, hi)``: 0 where key <= query, -inf after, for queries ``lo..hi-1`` and keys ``0..hi-1``."""
    key = (lo, hi, dtype, device)
    if key not in _causal_masks:
        _causal_masks[key] = torch.full((hi - lo, hi), float("-inf"), dtype=dtype, device=device).triu_(lo + 1)
    return _causal_masks[key]


class _CausalAttention(torch.autograd.Function):
    """Causal softmax attention for small heads on the CPU, in blocks of ``_ATTN_BLOCK_QUERIES`` queries: each
    block's scores by one batched matmul onto the causal mask, over the keys up to its last query only (about half
    the scores of a full square), small enough to stay in cache; the softmax kept for the backward pass, whose four
    batched matmuls take the softmax's correction from the output (``rowsum(P * dP) = rowsum(Z * dZ)``), in place.
    On 2 cores, heads of 8 dimensions and 128 positions, 1.4x (a training step's 16 sequences) to 4x (the
    susceptibility probe's thousands) faster than torch's fused ``scaled_dot_product_attention`` (BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, q, k, v):
        # q, k, v: (N, T, d) -> z (N, T, d)
        N, T, d = q.shape
        scale = d ** -0.5
        edges = list(range(0, T, _ATTN_BLOCK_QUERIES)) + [T]
        probs, z = [], torch.empty_like(q)
        for lo, hi in zip(edges[:-1], edges[1:]):
            scores = torch.baddbmm(_causal_mask(lo, hi, q.dtype, q.device).expand(N, hi - lo, hi), q[:, lo:hi],
                                   k[:, :hi].transpose(1, 2), alpha=scale)
            p = torch.softmax(scores, -1)
            del scores
            z[:, lo:hi] = torch.bmm(p, v[:, :hi])
            probs.append(p)
        ctx.save_for_backward(q, k, v, z, *probs)
        ctx.scale, ctx.edges = scale, edges
        return z

    @staticmethod
    def backward(ctx, dz):
        q, k, v, z, *probs = ctx.saved_tensors
        dz = dz.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for lo, hi, p in zip(ctx.edges[:-1], ctx.edges[1:], probs):
            dzb = dz[:, lo:hi]
            dv[:, :hi] += torch.bmm(p.transpose(1, 2), dzb)
            ds = torch.bmm(dzb, v[:, :hi].transpose(1, 2))                     # dP, turned into dS in place
            ds.sub_((dzb * z[:, lo:hi]).sum(-1, keepdim=True)).mul_(p).mul_(ctx.scale)
            dq[:, lo:hi] = torch.bmm(ds, k[:, :hi])
            dk[:, :hi] += torch.bmm(ds.transpose(1, 2), q[:, lo:hi])
        return dq, dk, dv


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + causal mask) v`` for ``(N, T, d)`` inputs: :class:`_CausalAttention` for fp32 on
    the CPU when its kept scores fit ``_ATTN_KEEP_ELEMENTS``, else torch's fused ``scaled_dot_product_attention``
    (GPUs, mixed precision, long contexts). Both agree to float tolerance.

    >>> q, k, v = torch.randn(3, 3, 5, 4).unbind(0)
    >>> ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> bool(torch.allclose(causal_attention(q, k, v), ref, atol=1e-6))
    True
    """
    N, T, _ = q.shape
    fp32 = q.dtype == k.dtype == v.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    if q.device.type == "cpu" and fp32 and N * T * T <= _ATTN_KEEP_ELEMENTS:
        return _CausalAttention.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _free_end(params: dict, names, R: int) -> int:
    """The first row from which every tensor in ``names`` holds the same frozen value (R: none does)."""
    free = getattr(params, "free", None)
    if free is None:
        return R
    return max([free.get(n, (0, R))[1] for n in names if n in params] + [0])


def _compact(t: torch.Tensor, m: int, R: int) -> torch.Tensor:
    """Rows ``0..m-1`` of ``t`` and one detached copy of row m, the value rows m..R-1 share (all rows if m >= R)."""
    return t if m >= R else torch.cat([t[:m], t[m:m + 1].detach()])


def _widen(x: torch.Tensor, m: int, m2: int, R: int) -> torch.Tensor:
    """From rows ``0..m-1`` + the shared row (m), to rows ``0..m2-1`` + the shared row (all R rows if m2 >= R)."""
    if m >= R or m2 == m:
        return x
    rows = (m2 + 1 if m2 < R else R) - m
    return torch.cat([x[:m], x[m:m + 1].expand(rows, *x.shape[1:])])


def _attention_inputs(x: torch.Tensor, pos: torch.Tensor, lp: dict, cfg: ModelConfig):
    """The inputs of the queries and keys, and of the values, of one attention layer: ``(r, B, T, D)`` each."""
    h = _layer_norm(x, lp.get("ln1.w"), lp.get("ln1.b")) if cfg.normalization_type == "LN" else x
    return (h + pos if cfg.positional_embedding_type == "shortformer" else h), h


def _heads_out(qk_in: torch.Tensor, h: torch.Tensor, lp: dict) -> torch.Tensor:
    """Each head's attention output ``z`` ``(r, B, H, T, d_head)`` from the layer's inputs (``_attention_inputs``,
    ``(r, B, T, D)``) and its stacked weights ``lp`` (``attn.W_Q`` ``(r, H, D, d_head)``..., without ``blocks.L.``)."""
    r, B, T, _ = h.shape
    H, dh = lp["attn.W_Q"].shape[1], lp["attn.W_Q"].shape[-1]
    q = torch.einsum("rbtd,rhde->rbhte", qk_in, lp["attn.W_Q"]) + lp["attn.b_Q"][:, None, :, None, :]
    k = torch.einsum("rbtd,rhde->rbhte", qk_in, lp["attn.W_K"]) + lp["attn.b_K"][:, None, :, None, :]
    v = torch.einsum("rbtd,rhde->rbhte", h, lp["attn.W_V"]) + lp["attn.b_V"][:, None, :, None, :]
    z = causal_attention(q.reshape(r * B * H, T, dh), k.reshape(r * B * H, T, dh), v.reshape(r * B * H, T, dh))
    return z.reshape(r, B, H, T, dh)


def _attention(x: torch.Tensor, pos: torch.Tensor, lp: dict, cfg: ModelConfig) -> torch.Tensor:
    """One attention layer's output, without the residual: ``(r, B, T, D)``."""
    z = _heads_out(*_attention_inputs(x, pos, lp, cfg), lp)
    return torch.einsum("rbhte,rhed->rbtd", z, lp["attn.W_O"]) + lp["attn.b_O"][:, None, None, :]


@functools.lru_cache(maxsize=64)
def _index_cached(values: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def _index(values, device: torch.device) -> torch.Tensor:
    """An index tensor on ``device``, made once per distinct content (no host-to-GPU copy at every forward)."""
    return _index_cached(tuple(values), device)


def _row_heads(m: int, one_head: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows (from ``m``) that move one head, and that head, as index tensors."""
    rows = [i for i, h in enumerate(one_head) if h >= 0]
    return _index((m + i for i in rows), device), _index((one_head[i] for i in rows), device)


def _one_head_rows(x: torch.Tensor, m: int, m2: int, R: int, params: dict, prefix: str, pos_all: torch.Tensor,
                   one_head: tuple, cfg: ModelConfig) -> torch.Tensor:
    """One attention layer (residual included) when rows ``m..m2-1`` read the shared input ``x[m]`` and each moves
    at most one head of the layer (``one_head[i]``: its head, or -1). w*'s heads run once on the shared input; each
    such row runs its own head only and swaps it in. Returns rows ``0..m2-1`` and, when ``m2 < R``, the shared row."""
    names = [n for n in params if n.startswith(prefix)]
    shared_in, pos_s = x[m:m + 1], pos_all[m:m + 1].detach()
    ws = {n[len(prefix):]: params.w_star[n].unsqueeze(0) for n in names}
    qk_s, h_s = _attention_inputs(shared_in, pos_s, ws, cfg)                   # (1, B, T, D): LN at w* here
    z_s = _heads_out(qk_s, h_s, ws)[0]                                          # (B, H, T, dh) at w*
    per_head = torch.einsum("bhte,hed->hbtd", z_s, ws["attn.W_O"][0])           # (H, B, T, D)
    out_s = shared_in[0] + ws["attn.b_O"][0] + per_head.sum(0)                  # (B, T, D): w*'s layer output
    parts = []
    if m > 0:                                                                   # rows with inputs of their own
        lp = {n[len(prefix):]: params[n][:m] for n in names}
        parts.append(x[:m] + _attention(x[:m], pos_all[:m], lp, cfg))
    rows = [i for i, h in enumerate(one_head) if h >= 0]
    if rows:
        n, (B, T, dh) = len(rows), (x.shape[1], x.shape[2], cfg.d_head)
        idx, hid = _row_heads(m, tuple(one_head), x.device)
        own = {k: params[prefix + "attn." + k][idx, hid] for k in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
        qk_in, h = qk_s[0], h_s[0]
        q = torch.einsum("btd,nde->nbte", qk_in, own["W_Q"]) + own["b_Q"][:, None, None, :]
        k = torch.einsum("btd,nde->nbte", qk_in, own["W_K"]) + own["b_K"][:, None, None, :]
        v = torch.einsum("btd,nde->nbte", h, own["W_V"]) + own["b_V"][:, None, None, :]
        z = causal_attention(q.reshape(n * B, T, dh), k.reshape(n * B, T, dh), v.reshape(n * B, T, dh))
        mine = torch.einsum("nbte,ned->nbtd", z.reshape(n, B, T, dh), own["W_O"])
        moved = out_s - per_head[hid] + mine                                    # (n, B, T, D): head swapped in
        if n < m2 - m:                                                          # rows that move no head here
            slot = {i: j for j, i in enumerate(rows)}
            order = _index((slot.get(i, n) for i in range(m2 - m)), x.device)
            moved = torch.cat([moved, out_s.unsqueeze(0)]).index_select(0, order)
        parts.append(moved)
    else:
        parts.append(out_s.unsqueeze(0).expand(m2 - m, *out_s.shape))
    if m2 < R:
        parts.append(out_s.unsqueeze(0))
    return torch.cat(parts)


def per_token_loss(params: dict[str, torch.Tensor], tokens: torch.Tensor, cfg: ModelConfig,
                   ce_chunk: int = 4096) -> torch.Tensor:
    """Per-token next-token loss of our architecture as a pure function of ``params``.

    ``params`` are keyed by TransformerLens names; each tensor either has the plain shape (one model) or a leading
    replica dimension R (R models). ``tokens`` is ``(B, T)`` or ``(R, B, T)``. Returns ``(B, T-1)`` or
    ``(R, B, T-1)`` in fp32. Runs inside whatever autocast context the caller set. With :class:`ReplicaParams`
    and tokens shared by all replicas, rows that share frozen weights share their computation: the embedding and
    each layer run once for all replicas that leave them at w*, and the unembedding's gradient is computed only
    for the rows where it is free (the same numbers as without, to float tolerance).
    """
    W_E = params["embed.W_E"]
    stacked = W_E.dim() == 3
    if not stacked:
        params = {k: v.unsqueeze(0) for k, v in params.items()}
        tokens = tokens.unsqueeze(0) if tokens.dim() == 2 else tokens
    R = params["embed.W_E"].shape[0]
    shared_tokens = tokens.dim() == 2 or tokens.shape[0] == 1
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(R, *tokens.shape)
    if tokens.dim() != 3 or tokens.shape[0] not in (1, R):
        raise ConfigError(f"tokens: expected (batch, pos) or (R={R}, batch, pos), got {tuple(tokens.shape)}")
    tokens = tokens.expand(R, *tokens.shape[1:])
    _, B, T = tokens.shape
    if T > cfg.n_ctx:
        raise ConfigError(f"tokens: sequences of {T} tokens are longer than the model's context n_ctx={cfg.n_ctx}; "
                          f"cut them to at most {cfg.n_ctx} tokens")
    if not shared_tokens:                    # replicas read different tokens: nothing is shared
        params = dict(params)
    # x holds rows 0..m-1 and, when m < R, one more row: the value rows m..R-1 share
    m = _free_end(params, ("embed.W_E", "pos_embed.W_pos"), R)
    W_E = _compact(params["embed.W_E"], m, R)
    r, V = W_E.shape[0], W_E.shape[1]
    flat = (tokens[:r] + torch.arange(r, device=tokens.device)[:, None, None] * V).reshape(-1)
    x = W_E.reshape(r * V, -1).index_select(0, flat).reshape(r, B, T, -1)
    pos_all = params["pos_embed.W_pos"][:, None, :T, :]  # (R, 1, T, D)
    if cfg.positional_embedding_type == "standard":
        x = x + _compact(pos_all, m, R)
    ln = cfg.normalization_type == "LN"
    heads = getattr(params, "heads", None)
    for l in range(cfg.n_layers):
        p = f"blocks.{l}."
        names = [n for n in params if n.startswith(p)]
        m2 = max(m, _free_end(params, names, R))
        one_head = heads[l][m:m2] if heads is not None and l in heads and m < m2 else None
        if one_head is not None and min(one_head) >= -1:
            x = _one_head_rows(x, m, m2, R, params, p, pos_all, one_head, cfg)
            m = m2
            lp = {n[len(p):]: _compact(params[n], m, R) for n in names}
        else:
            x = _widen(x, m, m2, R)
            m = m2
            lp = {n[len(p):]: _compact(params[n], m, R) for n in names}
            x = x + _attention(x, _compact(pos_all, m, R), lp, cfg)
        if not cfg.attn_only:
            h2 = _layer_norm(x, lp.get("ln2.w"), lp.get("ln2.b")) if ln else x
            pre = torch.einsum("rbtd,rdm->rbtm", h2, lp["mlp.W_in"]) + lp["mlp.b_in"][:, None, None, :]
            act = F.relu(pre) if cfg.act_fn == "relu" else F.gelu(pre, approximate="tanh" if cfg.act_fn == "gelu_new" else "none")
            x = x + torch.einsum("rbtm,rmd->rbtd", act, lp["mlp.W_out"]) + lp["mlp.b_out"][:, None, None, :]
    x = _widen(x, m, R, R)                   # every replica has its own loss
    if ln:
        x = _layer_norm(x, params.get("ln_final.w"), params.get("ln_final.b"))
    x = x[:, :, :-1, :].reshape(R, B * (T - 1), -1)
    targets = tokens[:, :, 1:].reshape(R, B * (T - 1))
    free = getattr(params, "free", None)
    grad_rows = None
    if free is not None:
        rows = [free.get(n, (0, R)) for n in ("unembed.W_U", "unembed.b_U")]
        grad_rows = (min(a for a, _ in rows), max(b for _, b in rows))
    loss = linear_cross_entropy(x, params["unembed.W_U"], params["unembed.b_U"], targets, ce_chunk, grad_rows)
    loss = loss.reshape(R, B, T - 1)
    return loss if stacked else loss[0]
