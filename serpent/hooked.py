"""The course's transformer as a TransformerLens 4 ``HookedRootModule``: the papers' architecture with every hook.

TransformerLens 4 removed ``HookedTransformer``; its model source for small random models has no *shortformer*
positions (the position embedding added to the queries' and keys' input only, never to the residual stream), and
the papers' model uses them. TransformerLens 4 keeps ``HookedRootModule`` and ``HookPoint``, "the supported way to
hook arbitrary nn.Modules", so the model is written here, module by module, with TransformerLens 3's parameter
names, shapes, initialisation and hook names (``hook_embed``, ``blocks.{l}.attn.hook_pattern``, ...):
``run_with_hooks``, ``run_with_cache`` (an ``ActivationCache``: ``cache["pattern", 0]``), ablation and patching
work as before, and checkpoints written under TransformerLens 3 load unchanged (``tests/test_tl3_reference.py``
checks losses, activations and the seeded initialisation against numbers recorded with TransformerLens 3.9).

One difference: TransformerLens 3 ran ``ln1`` three times (for queries, keys and values), so a hook on
``blocks.{l}.ln1.hook_normalized`` fired three times per forward; here it fires once and its output feeds all three.

>>> cfg = HookedConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=8, d_vocab=32)
>>> model = HookedShortformer(cfg)
>>> logits, cache = model.run_with_cache(torch.randint(0, 32, (1, 8)))
>>> logits.shape, cache["pattern", 1].shape
(torch.Size([1, 8, 32]), torch.Size([1, 2, 8, 8]))
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from .errors import ConfigError

__all__ = ["HookedConfig", "HookedShortformer"]


@dataclass
class HookedConfig:
    """The model's shape in TransformerLens' vocabulary (the fields TransformerLens tools and our code read).

    ``initializer_range`` defaults to TransformerLens' ``0.8 / sqrt(d_model)``; ``eps`` is LayerNorm's.
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    n_ctx: int
    d_vocab: int
    positional_embedding_type: str = "shortformer"
    normalization_type: Optional[str] = "LN"
    attn_only: bool = True
    d_mlp: Optional[int] = None
    act_fn: Optional[str] = "gelu"
    seed: Optional[int] = None
    eps: float = 1e-5
    initializer_range: float = -1.0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    d_vocab_out: int = -1
    n_key_value_heads: Optional[int] = None
    original_architecture: Optional[str] = None
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.initializer_range < 0:
            self.initializer_range = 0.8 / math.sqrt(self.d_model)
        if self.d_vocab_out < 0:
            self.d_vocab_out = self.d_vocab
        if self.positional_embedding_type not in ("shortformer", "standard"):
            raise ConfigError(f"positional_embedding_type: got {self.positional_embedding_type!r}; allowed: "
                              "'shortformer', 'standard'")
        if self.normalization_type not in ("LN", None):
            raise ConfigError(f"normalization_type: got {self.normalization_type!r}; allowed: 'LN', None")
        if not self.attn_only and (self.d_mlp is None or self.act_fn not in ("gelu", "gelu_new", "relu")):
            raise ConfigError("a model with MLPs needs d_mlp and act_fn 'gelu', 'gelu_new' or 'relu'")

    @property
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}


class Output(NamedTuple):
    """``return_type="both"``: the logits and the loss."""
    logits: torch.Tensor
    loss: torch.Tensor


def _empty(*shape, cfg: HookedConfig) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=cfg.dtype, device=cfg.device))


def _zeros(*shape, cfg: HookedConfig) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=cfg.dtype, device=cfg.device))


class Embed(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.W_E = _empty(cfg.d_vocab, cfg.d_model, cfg=cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_E[tokens, :]


class PosEmbed(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.W_pos = _empty(cfg.n_ctx, cfg.d_model, cfg=cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_pos[:tokens.shape[-1]].unsqueeze(0).repeat(tokens.shape[0], 1, 1)


class LayerNorm(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype, device=cfg.device))
        self.b = _zeros(cfg.d_model, cfg=cfg)
        self.hook_scale = HookPoint()        # (batch, pos, 1)
        self.hook_normalized = HookPoint()   # (batch, pos, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        H, D, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        # registered in TransformerLens 3's order, so the seeded initialisation draws the same numbers
        self.W_Q = _empty(H, D, dh, cfg=cfg)
        self.W_O = _empty(H, dh, D, cfg=cfg)
        self.b_Q = _zeros(H, dh, cfg=cfg)
        self.b_O = _zeros(D, cfg=cfg)
        self.W_K = _empty(H, D, dh, cfg=cfg)
        self.W_V = _empty(H, D, dh, cfg=cfg)
        self.b_K = _zeros(H, dh, cfg=cfg)
        self.b_V = _zeros(H, dh, cfg=cfg)
        self.hook_q = HookPoint()             # (batch, pos, head, d_head)
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()   # (batch, head, query, key), masked with -inf
        self.hook_pattern = HookPoint()       # (batch, head, query, key)
        self.hook_z = HookPoint()             # (batch, pos, head, d_head)

    @staticmethod
    def _project(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        H, D, dh = W.shape
        w = W.permute(0, 2, 1).reshape(H * dh, D)
        return F.linear(x, w, b.reshape(H * dh)).reshape(x.shape[0], x.shape[1], H, dh)

    def forward(self, qk_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        q = self.hook_q(self._project(qk_in, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(qk_in, self.W_K, self.b_K))
        v = self.hook_v(self._project(v_in, self.W_V, self.b_V))
        scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / self.cfg.attn_scale
        T = scores.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
        scores = self.hook_attn_scores(torch.where(causal, scores, torch.tensor(-math.inf, device=scores.device,
                                                                                 dtype=scores.dtype)))
        pattern = F.softmax(scores, dim=-1)
        pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
        z = self.hook_z((pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))
        H, dh, D = self.W_O.shape
        w = self.W_O.reshape(H * dh, D).T.contiguous()
        return F.linear(z.reshape(z.shape[0], z.shape[1], H * dh), w, self.b_O)


class MLP(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.act_fn = cfg.act_fn
        self.W_in = _empty(cfg.d_model, cfg.d_mlp, cfg=cfg)
        self.b_in = _zeros(cfg.d_mlp, cfg=cfg)
        self.W_out = _empty(cfg.d_mlp, cfg.d_model, cfg=cfg)
        self.b_out = _zeros(cfg.d_model, cfg=cfg)
        self.hook_pre = HookPoint()    # (batch, pos, d_mlp)
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(torch.addmm(self.b_in, x.reshape(-1, x.shape[-1]), self.W_in).reshape(
            *x.shape[:-1], -1))
        if self.act_fn == "relu":
            act = F.relu(pre)
        elif self.act_fn == "gelu_new":
            act = 0.5 * pre * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (pre + 0.044715 * torch.pow(pre, 3.0))))
        else:
            act = F.gelu(pre)
        post = self.hook_post(act)
        return torch.addmm(self.b_out, post.reshape(-1, post.shape[-1]), self.W_out).reshape(*x.shape[:-1], -1)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.cfg = cfg
        ln = LayerNorm if cfg.normalization_type == "LN" else None
        self.ln1 = ln(cfg) if ln else nn.Identity()
        if not cfg.attn_only:
            self.ln2 = ln(cfg) if ln else nn.Identity()
        self.attn = Attention(cfg)
        if not cfg.attn_only:
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_out = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_pre = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: torch.Tensor, shortformer_pos_embed: Optional[torch.Tensor] = None) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        normed = self.ln1(resid_pre)
        qk_in = normed if shortformer_pos_embed is None else normed + shortformer_pos_embed
        attn_out = self.hook_attn_out(self.attn(qk_in, normed))
        if self.cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class Unembed(nn.Module):
    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.W_U = _empty(cfg.d_model, cfg.d_vocab_out, cfg=cfg)
        self.b_U = _zeros(cfg.d_vocab_out, cfg=cfg)
        self.hook_in = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_out(F.linear(self.hook_in(x), self.W_U.T.contiguous(), self.b_U))


class HookedShortformer(HookedRootModule):
    """A 2-layer (``cfg.n_layers``) transformer with shortformer or standard positions, LayerNorm or none,
    attention-only or with MLPs, under TransformerLens 3's names; ``forward(tokens, return_type=...)`` as
    ``HookedTransformer``'s: ``"logits"`` ``(batch, pos, d_vocab)``, ``"loss"`` (the mean next-token loss, or
    ``(batch, pos-1)`` with ``loss_per_token=True``), ``"both"`` or None.

    ``cfg.seed`` seeds torch, numpy and ``random`` before the weights are drawn (as TransformerLens 3 did); matrices
    ``W_*`` are normal with standard deviation ``cfg.initializer_range``, biases 0 and LayerNorm scales 1.
    """

    def __init__(self, cfg: HookedConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = None
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()        # (batch, pos, d_model)
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        if cfg.normalization_type == "LN":
            self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.init_weights()
        self.setup()

    def init_weights(self) -> None:
        """TransformerLens' ``gpt2`` initialisation, seeded by ``cfg.seed``."""
        if self.cfg.seed is not None:
            torch.manual_seed(self.cfg.seed)
        for name, p in self.named_parameters():
            if "W_" in name:
                nn.init.normal_(p, std=self.cfg.initializer_range)

    def forward(self, tokens: torch.Tensor, return_type: Optional[str] = "logits", loss_per_token: bool = False):
        if return_type not in ("logits", "loss", "both", None):
            raise ConfigError(f"return_type: got {return_type!r}; allowed: 'logits', 'loss', 'both', None")
        if tokens.shape[-1] > self.cfg.n_ctx:
            raise ConfigError(f"sequences of {tokens.shape[-1]} tokens are longer than the model's context "
                              f"n_ctx={self.cfg.n_ctx}")
        tokens = tokens.to(self.embed.W_E.device)
        embed = self.hook_embed(self.embed(tokens))
        pos = self.hook_pos_embed(self.pos_embed(tokens))
        if self.cfg.positional_embedding_type == "shortformer":
            residual, short = embed, pos
        else:
            residual, short = embed + pos, None
        for block in self.blocks:
            residual = block(residual, short)
        if self.cfg.normalization_type == "LN":
            residual = self.ln_final(residual)
        logits = self.unembed(residual)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        log_probs = F.log_softmax(logits, dim=-1)
        loss = -log_probs[..., :-1, :].gather(dim=-1, index=tokens[..., 1:, None])[..., 0]
        loss = loss if loss_per_token else loss.sum() / loss.numel()
        return loss if return_type == "loss" else Output(logits, loss)

    def run_with_cache(self, *args, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs):
        """``(output, cache)``: an ``ActivationCache`` (``cache["pattern", 0]``, ``cache["blocks.0.hook_resid_post"]``)
        unless ``return_cache_object=False`` (a plain dict)."""
        out, cache = super().run_with_cache(*args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            cache = ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    def to(self, *args, print_details: bool = False, **kwargs):
        """``nn.Module.to``; ``print_details`` is accepted and ignored, as by ``HookedTransformer.to`` (devinterp
        passes it to any TransformerLens model)."""
        return super().to(*args, **kwargs)

    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> torch.Tensor:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    def _stacked(self, name: str) -> torch.Tensor:
        return torch.stack([getattr(b.attn, name) for b in self.blocks], dim=0)

    @property
    def W_Q(self) -> torch.Tensor:
        """``(n_layers, n_heads, d_model, d_head)``, as ``HookedTransformer.W_Q``."""
        return self._stacked("W_Q")

    @property
    def W_K(self) -> torch.Tensor:
        return self._stacked("W_K")

    @property
    def W_V(self) -> torch.Tensor:
        return self._stacked("W_V")

    @property
    def W_O(self) -> torch.Tensor:
        return self._stacked("W_O")
