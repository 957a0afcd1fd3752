"""The SGLD engine: many chains and weight restrictions sampled as one batched computation.

Design
------
* **Update** (Welling and Teh's SGLD with the localising term of Lau et al.; the same as devinterp's ``SGLD``), one
  named function, :func:`sgld_update`, which the exercise check of :mod:`serpent.checks` holds learners' code to::

      g  = n_beta * grad L_B(w) + gamma * (w - w*) + weight_decay * w
      w <- w - (epsilon / 2) * M * g + sqrt(epsilon) * M * xi,      xi ~ N(0, I)

  with ``L_B`` the mean loss of minibatch B, ``w*`` the starting point (a checkpoint) and ``M`` the 0/1 mask of the
  replica's weight restriction. Step ``i`` records a *draw* when ``i >= burnin`` and ``(i - burnin) %
  steps_between_draws == 0``; there are ``burnin + draws * steps_between_draws`` steps. :func:`run_sgld` is the
  inputs checked (``_checked_restrictions``), the buffer and masks (``_Layout``), the starting loss
  (``_initial_loss``), the noise (``_Noise``), the divergence watch (``_DivergenceWatch``) and the loop.
* **Replicas.** Every (restriction, chain) pair is one *replica*; replica ``r = restriction_index * chains + chain``.
  All replicas live in one flat ``(R, P)`` fp32 buffer holding every parameter that some restriction frees (the
  ``P`` weights); the loss function sees ``(R, ...)`` views of it (``torch.split``, so the gradient arrives as one
  ``(R, P)`` tensor) plus read-only broadcast views of the parameters no restriction frees. One forward and one
  backward per step serve all replicas; the update is a handful of whole-buffer operations.
* **Masks and bit-identity.** A weight whose mask is 0 receives ``w + 0`` exactly, so weights outside a restriction
  stay bit-identical to ``w*`` (tested). A loss function that declares ``shares_frozen_rows`` (our transformer's) is
  told so (:class:`~serpent.model.ReplicaParams`: the rows where each parameter is free, the one head each row moves
  per layer, and ``w*``) and computes what frozen rows share once: a head sweep's replica runs only its own head.
* **Noise.** Chain ``c`` of *every* restriction uses the same noise stream, seeded ``cfg.seed + c`` (one generator per
  chain, one ``randn`` over all parameters per chain per step): the noise a weight gets depends only on the seed,
  the chain and the weight, so a restriction gives the same chains whether it runs alone or batched with others,
  and a head-restricted run shares its noise with the full run (common random numbers). Minibatch ``i`` is the same for all replicas (devinterp's
  ``match_sampling_input_ids_across_chains=True``). Seeded runs are reproducible on the same device.
* **Statistics** are running sums on the device (mean minibatch loss over draws and over all steps); a full
  ``(R, steps)`` loss trace only with ``record_traces=True``. ``on_draw`` gives callers (the susceptibility
  estimator) the stacked parameters at every draw.
* **Divergence.** Every step marks replicas whose loss is NaN/inf or above ``init_loss + max_loss_increase`` (on the
  device, no sync); every ``check_every`` steps (and at the end) the host looks, also checks the parameters for
  NaN/inf, and raises :class:`~serpent.errors.DivergenceError` naming the step, chain and restriction and what to
  change. A run never returns a silent NaN.
* **Devices.** Device-agnostic; the forward runs under ``serpent.device.autocast`` with the dtype for
  ``cfg.precision`` (bf16 on recent GPUs; fp16 on older ones such as a T4, with the loss scaled by
  ``FP16_LOSS_SCALE`` for the backward; fp32 on the CPU); parameters, updates and statistics stay fp32.

>>> import torch
>>> from serpent.config import SamplerConfig
>>> cfg = SamplerConfig(epsilon=0.01, gamma=0.0, n_beta=10.0, chains=2, draws=50, batch_size=1)
>>> loss = lambda p, batch: 0.5 * (p["w"] ** 2).sum(-1, keepdim=True)       # (R, 1): a quadratic, no data
>>> res = run_sgld(loss, {"w": torch.zeros(3)}, lambda i: None, cfg, progress=False)
>>> res.mean_loss.shape, res.init_loss
(torch.Size([2]), 0.0)
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .config import ModelConfig, SamplerConfig
from .device import autocast, autocast_dtype, default_device
from .errors import ConfigError, DivergenceError

FP16_LOSS_SCALE = 1024.0

__all__ = [
    "Restriction", "make_restriction", "head_restrictions", "restriction_size", "DrawState", "SGLDResult",
    "run_sgld", "sgld_update", "transformer_loss_fn", "module_loss_fn", "sgld_steps", "draw_drift",
    "pulled_back_restriction",
]

LossFn = Callable[[dict, Any], torch.Tensor]
_HEAD_PARAMS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


# ----------------------------------------------------------------------------------------------------------------
# Weight restrictions


@dataclass(frozen=True)
class Restriction:
    """Which weights a replica may move.

    ``masks`` maps a parameter name to a 0/1 float mask of that parameter's shape, or to ``None`` (the whole tensor
    is free). Parameters absent from the dict stay frozen at ``w*``, bit-identical.
    """

    name: str
    masks: dict[str, Optional[torch.Tensor]] = field(repr=False)


def restriction_size(restriction: Restriction, params: dict[str, torch.Tensor]) -> int:
    """Number of free weights of ``restriction`` on ``params``.

    >>> p = {"blocks.0.attn.W_Q": torch.zeros(2, 4, 3), "blocks.0.attn.b_Q": torch.zeros(2, 3)}
    >>> restriction_size(make_restriction("0:1", p), p), restriction_size(make_restriction("full", p), p)
    (15, 30)
    """
    n = 0
    for name, m in restriction.masks.items():
        n += params[name].numel() if m is None else int(m.sum().item())
    return n


def make_restriction(spec: str, params: dict[str, torch.Tensor], n_heads: int | None = None) -> Restriction:
    """A :class:`Restriction` from a spec string.

    * ``"full"``: every parameter;
    * ``"L:H"``: head H of layer L, the slices ``[H]`` of ``blocks.L.attn.{W_Q,W_K,W_V,W_O,b_Q,b_K,b_V}`` (``b_O``
      and LayerNorms excluded, as in devinterp; 32,864 weights per head of the 3M model);
    * ``"mlp:L"``: all of ``blocks.L.mlp.*``;
    * an exact parameter name.

    >>> p = {"blocks.0.attn.W_Q": torch.zeros(2, 4, 3), "blocks.0.attn.b_Q": torch.zeros(2, 3)}
    >>> r = make_restriction("0:1", p)
    >>> r.masks["blocks.0.attn.W_Q"][:, 0, 0].tolist()
    [0.0, 1.0]
    """
    if not isinstance(spec, str):
        raise ConfigError(f"restriction: got {spec!r}; expected a string such as 'full', '1:6', 'mlp:0' or a "
                          "parameter name")
    if spec == "full":
        return Restriction("full", {name: None for name in params})
    m = re.fullmatch(r"(\d+):(\d+)", spec)
    if m:
        layer, head = int(m.group(1)), int(m.group(2))
        names = [f"blocks.{layer}.attn.{n}" for n in _HEAD_PARAMS]
        present = [n for n in names if n in params]
        if not present or f"blocks.{layer}.attn.W_Q" not in params:
            raise ConfigError(f"restriction {spec!r}: the model has no layer {layer} with attention heads; "
                              f"valid choices: {_valid_choices(params)}")
        h_count = params[f"blocks.{layer}.attn.W_Q"].shape[0]
        if n_heads is not None and n_heads != h_count:
            raise ConfigError(f"restriction {spec!r}: n_heads={n_heads} but blocks.{layer}.attn.W_Q has {h_count} "
                              "heads; pass the model's n_heads")
        if head >= h_count:
            raise ConfigError(f"restriction {spec!r}: layer {layer} has heads 0..{h_count - 1}; "
                              f"valid choices: {_valid_choices(params)}")
        masks = {}
        for n in present:
            mask = torch.zeros(params[n].shape, dtype=torch.float32, device=params[n].device)
            mask[head] = 1.0
            masks[n] = mask
        return Restriction(spec, masks)
    m = re.fullmatch(r"mlp:(\d+)", spec)
    if m:
        prefix = f"blocks.{m.group(1)}.mlp."
        names = [n for n in params if n.startswith(prefix)]
        if not names:
            raise ConfigError(f"restriction {spec!r}: the model has no parameters {prefix}* (attention-only model, "
                              f"or no such layer); valid choices: {_valid_choices(params)}")
        return Restriction(spec, {n: None for n in names})
    if spec in params:
        return Restriction(spec, {spec: None})
    raise ConfigError(f"restriction: got {spec!r}; valid choices: {_valid_choices(params)}")


def pulled_back_restriction(model: torch.nn.Module, spec: str) -> Restriction:
    """:func:`make_restriction` for a model whose parameters are stored under other names than TransformerLens'
    (a TransformerLens 4 ``TransformerBridge`` keeps the Hugging Face model's) but which shows them in TransformerLens'
    layout through ``model.tl_parameters()`` (views: reshapes, transposes, slices of its own parameters).

    The spec (``"1:6"``, ``"mlp:0"``, a TransformerLens name) is read in that layout, and each mask is pulled back onto
    the model's own parameters: an entry of a stored parameter is free when some free entry of the view depends on
    it (the gradient of ``sum(mask * view)``). The result is keyed by ``model.named_parameters()`` names.
    """
    views = model.tl_parameters()
    n_heads = getattr(getattr(model, "cfg", None), "n_heads", None)
    tl = make_restriction(spec, {k: v.detach() for k, v in views.items()}, n_heads)
    own = dict(model.named_parameters())
    with torch.enable_grad():
        picked = sum(((views[n] * (1.0 if m is None else m.to(views[n].dtype))).sum() for n, m in tl.masks.items()))
        grads = torch.autograd.grad(picked, list(own.values()), allow_unused=True)
    masks = {}
    for (name, p), g in zip(own.items(), grads):
        if g is None or not bool((g != 0).any()):
            continue
        hit = (g != 0).float()
        masks[name] = None if bool(hit.all()) else hit
    if not masks:
        raise ConfigError(f"restriction {spec!r}: it selects no stored parameter of this model")
    return Restriction(spec, masks)


def _valid_choices(params: dict[str, torch.Tensor]) -> str:
    layers = sorted({int(n.split(".")[1]) for n in params if re.match(r"blocks\.\d+\.attn\.W_Q$", n)})
    heads = {l: params[f"blocks.{l}.attn.W_Q"].shape[0] for l in layers}
    mlps = sorted({int(n.split(".")[1]) for n in params if re.match(r"blocks\.\d+\.mlp\.", n)})
    parts = ["'full'"]
    if layers:
        parts.append("heads " + ", ".join(f"'{l}:0'..'{l}:{heads[l] - 1}'" for l in layers))
    if mlps:
        parts.append(", ".join(f"'mlp:{l}'" for l in mlps))
    parts.append("or a parameter name (" + ", ".join(list(params)[:40]) + (", ..." if len(params) > 40 else "") + ")")
    return "; ".join(parts)


def head_restrictions(params: dict[str, torch.Tensor], n_layers: int, n_heads: int) -> list[Restriction]:
    """One restriction per attention head, in ``"L:H"`` order (``0:0, 0:1, ..., 1:0, ...``)."""
    return [make_restriction(f"{l}:{h}", params, n_heads) for l in range(n_layers) for h in range(n_heads)]


# ----------------------------------------------------------------------------------------------------------------
# Loss functions


def transformer_loss_fn(model_cfg: ModelConfig) -> LossFn:
    """Fast path for our transformer: ``(stacked params, tokens (B, T)) -> per-token losses (R, B, T-1)``."""
    from .model import per_token_loss

    def loss_fn(params: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        return per_token_loss(params, tokens, model_cfg)

    loss_fn.shares_frozen_rows = True    # run_sgld may pass ReplicaParams: per_token_loss shares frozen rows' work
    return loss_fn


def module_loss_fn(model: torch.nn.Module, loss: Callable[[Any, Any], torch.Tensor], vmapped: bool = True) -> LossFn:
    """Generic path for any ``nn.Module``: ``torch.func.functional_call`` vmapped over the replica dimension
    (``vmapped=False``: one call per replica, for modules that keep state between calls, such as a TransformerLens 4
    ``TransformerBridge``, whose cached tensors would escape ``vmap``).

    The module is called on ``batch[0]`` when the batch is a tuple or list, else on ``batch``; then
    ``loss(output, batch)`` must return per-sample losses ``(B, ...)``. Buffers are shared by all replicas.

    >>> net = torch.nn.Linear(3, 1)
    >>> fn = module_loss_fn(net, lambda out, b: ((out[:, 0] - b[1]) ** 2))
    >>> from serpent.model import stack_params
    >>> fn(stack_params(dict(net.named_parameters()), 4), (torch.randn(5, 3), torch.randn(5))).shape
    torch.Size([4, 5])
    """
    from torch.func import functional_call, vmap

    buffers = {k: v for k, v in model.named_buffers()}

    def loss_fn(params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch

        def one(p):
            return loss(functional_call(model, (p, buffers), (inputs,)), batch)

        if not vmapped:
            R = next(iter(params.values())).shape[0]
            return torch.stack([one({k: v[r] for k, v in params.items()}) for r in range(R)])
        return vmap(one, randomness="different")(params)

    return loss_fn


# ----------------------------------------------------------------------------------------------------------------
# The sampler


@dataclass
class DrawState:
    """What ``on_draw`` receives at every draw.

    ``params`` are the stacked ``(R, ...)`` parameters of all replicas *after* the update of step ``step`` (read-only
    views: copy what you keep); ``batch_loss`` ``(R,)`` is the minibatch loss of that step, evaluated at the
    parameters *before* the update (devinterp's callbacks see the same pair).
    """

    step: int
    draw: int
    params: dict[str, torch.Tensor]
    batch_loss: torch.Tensor


@dataclass
class SGLDResult:
    """Summary statistics of a run. Tensors are on the CPU; ``R = len(restrictions) * chains``."""

    init_loss: float
    mean_loss: torch.Tensor                    # (R,) mean minibatch loss over draws
    traces: Optional[torch.Tensor]             # (R, steps) minibatch loss at every step, or None
    chains: int
    restrictions: list[str]
    cfg: SamplerConfig
    mean_loss_all: Optional[torch.Tensor] = None   # (R,) mean over all steps incl. burn-in (devinterp 2.0.1)
    final_distance: Optional[torch.Tensor] = None  # (R,) ||w - w*|| at the end
    seconds: float = 0.0
    steps: int = 0

    def by_restriction(self, x: torch.Tensor) -> torch.Tensor:
        """Reshape an ``(R, ...)`` tensor to ``(n_restrictions, chains, ...)``."""
        return x.reshape(len(self.restrictions), self.chains, *x.shape[1:])


def sgld_steps(cfg: SamplerConfig) -> int:
    """Total SGLD steps of a run: ``burnin + draws * steps_between_draws``.

    >>> sgld_steps(SamplerConfig(draws=10, burnin=5, steps_between_draws=2))
    25
    """
    return cfg.burnin + cfg.draws * cfg.steps_between_draws


def draw_drift(traces: torch.Tensor, init_loss: float, cfg: SamplerConfig) -> float:
    """How far the draws' loss still moves: (mean of the second half - mean of the first) / (rise above L(w*)).

    ``traces`` ``(..., steps)`` (a tensor or an array) are minibatch losses at every step (``run_sgld(..., record_traces=True)``), pooled
    over the leading dimensions (chains). Near 0 when the chains sit on a plateau.

    >>> cfg = SamplerConfig(draws=4, burnin=0)
    >>> draw_drift(torch.tensor([[1.0, 1.0, 2.0, 2.0]]), init_loss=0.5, cfg=cfg)   # still rising: (2-1)/(1.5-0.5)
    1.0
    """
    draws = torch.as_tensor(traces)[..., cfg.burnin::cfg.steps_between_draws][..., :cfg.draws].double()
    n = draws.shape[-1]
    half = max(n // 2, 1)
    first = draws[..., :half].mean()
    second = draws[..., half:].mean() if n > 1 else draws.mean()
    rise = max(abs(float(draws.mean()) - init_loss), 1e-12)
    return float(second - first) / rise


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_fn(batches) -> Callable[[int], Any]:
    if callable(batches):
        return batches
    if isinstance(batches, Sequence) and len(batches) > 0:
        return lambda i: batches[i % len(batches)]
    raise ConfigError("batches: expected a function i -> i-th minibatch, or a non-empty list of minibatches")


def _mean_per_replica(losses: torch.Tensor, R: int, what: str) -> torch.Tensor:
    if losses.dim() == 0 or losses.shape[0] != R:
        raise ConfigError(f"loss_fn returned shape {tuple(losses.shape)} for {R} replicas; it must return "
                          f"per-sample losses with the replica dimension first, shape ({R}, batch, ...) ({what})")
    return losses.float().reshape(R, -1).mean(1)


def sgld_update(w: torch.Tensor, grad: torch.Tensor, w_star: torch.Tensor, noise: torch.Tensor, *, epsilon: float,
                n_beta: float, gamma: float, weight_decay: float = 0.0, mask: torch.Tensor | None = None,
                in_place: bool = False) -> torch.Tensor:
    """One SGLD step (Welling and Teh, localised as in Lau et al.; devinterp's ``SGLD``)::

        w_new = w - (epsilon / 2) * M * (n_beta * grad + gamma * (w - w*) + weight_decay * w)
                  + sqrt(epsilon) * M * noise

    ``grad`` is the gradient of the mean minibatch loss at ``w``, ``noise`` ~ N(0, I), ``M`` the 0/1 ``mask`` of the
    weights that may move (``None``: all). ``noise``, ``w_star`` and ``mask`` broadcast against ``w`` (the engine
    passes ``w`` as ``(restrictions, chains, P)``, the noise as ``(chains, P)`` and the masks as
    ``(restrictions, 1, P)``). Returns the new weights; with ``in_place=True`` ``grad`` is overwritten (it becomes
    the step) and ``w`` is updated in place and returned, which is what :func:`run_sgld` does at every step. A
    weight whose mask is 0 receives ``w + 0``: it stays bit-identical.

    >>> w = torch.tensor([1.0]); sgld_update(w, torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.5]),
    ...                                      epsilon=0.04, n_beta=10.0, gamma=5.0)
    tensor([0.6000])
    """
    half = epsilon / 2
    step = grad.mul_(-half * n_beta) if in_place else grad * (-half * n_beta)
    if gamma:
        step.add_(w - w_star, alpha=-half * gamma)
    if weight_decay:
        step.add_(w, alpha=-half * weight_decay)
    step.add_(noise, alpha=math.sqrt(epsilon))
    if mask is not None:
        step.mul_(mask)
    return w.add_(step) if in_place else w + step


def _checked_restrictions(cfg: SamplerConfig, init_params: dict[str, torch.Tensor],
                          restrictions: list[Restriction] | None, init_loss_batches: int,
                          check_every: int) -> list[Restriction]:
    """The inputs of :func:`run_sgld` checked; the restrictions (default ``[full]``)."""
    if not isinstance(cfg, SamplerConfig):
        raise ConfigError(f"cfg: expected a SamplerConfig, got {type(cfg).__name__}")
    if not init_params:
        raise ConfigError("init_params: empty; pass the model's parameters by name, e.g. model_params(model)")
    if init_loss_batches < 1:
        raise ConfigError(f"init_loss_batches: got {init_loss_batches}; must be >= 1")
    if check_every < 1:
        raise ConfigError(f"check_every: got {check_every}; must be >= 1")
    restrictions = restrictions if restrictions is not None else [make_restriction("full", init_params)]
    if not restrictions:
        raise ConfigError("restrictions: empty list; pass None for the full model or at least one Restriction")
    for r in restrictions:
        if not isinstance(r, Restriction):
            raise ConfigError(f"restrictions: got {type(r).__name__}; build them with make_restriction(spec, params)")
        bad = [n for n in r.masks if n not in init_params]
        if bad:
            raise ConfigError(f"restriction {r.name!r}: unknown parameter(s) {bad}; names must match init_params")
        for n, m in r.masks.items():
            if m is not None and tuple(m.shape) != tuple(init_params[n].shape):
                raise ConfigError(f"restriction {r.name!r}: mask of {n} has shape {tuple(m.shape)}, the parameter "
                                  f"{tuple(init_params[n].shape)}")
    return restrictions


class _Layout:
    """The replicas' buffer: the parameters some restriction frees in one flat ``(R, P)`` fp32 buffer, the rest
    broadcast; the ``(NR, 1, P)`` masks (``None`` when every restriction frees every active weight); and, for a
    loss function that declares ``shares_frozen_rows``, the rows where each parameter is free."""

    def __init__(self, init_params: dict[str, torch.Tensor], restrictions: list[Restriction], chains: int,
                 device: torch.device, loss_fn: LossFn):
        NR, C = len(restrictions), chains
        R = NR * C
        self.R, self.names = R, list(init_params)
        self.w0 = {k: v.detach().to(device=device, dtype=torch.float32) for k, v in init_params.items()}
        w0 = self.w0
        self.active = [n for n in init_params if any(n in r.masks for r in restrictions)]
        self.frozen = {n: w0[n].unsqueeze(0).expand(R, *w0[n].shape) for n in init_params if n not in self.active}
        self.shapes = [w0[n].shape for n in self.active]
        self.sizes = [w0[n].numel() for n in self.active]
        self.P = sum(self.sizes)
        self.w0_flat = torch.cat([w0[n].reshape(-1) for n in self.active])                 # (P,)
        need_mask = any(n not in r.masks or r.masks[n] is not None for r in restrictions for n in self.active)
        self.mask = None
        if need_mask:
            self.mask = torch.zeros(NR, 1, self.P, device=device)
            for i, r in enumerate(restrictions):
                parts = []
                for n, s in zip(self.active, self.sizes):
                    if n not in r.masks:
                        parts.append(torch.zeros(s, device=device))
                    elif r.masks[n] is None:
                        parts.append(torch.ones(s, device=device))
                    else:
                        parts.append(r.masks[n].to(device=device, dtype=torch.float32).reshape(-1))
                self.mask[i, 0] = torch.cat(parts)
        # rows (replicas) where each parameter is free: the smallest range covering them; outside it, every row
        # holds w* (masked steps never move it). A loss function that declares `shares_frozen_rows` gets
        # ReplicaParams and computes what those rows share once (serpent.model.per_token_loss)
        self.free_rows = self.heads = None
        if getattr(loss_fn, "shares_frozen_rows", False):
            self.free_rows = {}
            for n in init_params:
                rows = [i for i, r in enumerate(restrictions)
                        if n in r.masks and (r.masks[n] is None or bool(r.masks[n].any()))]
                self.free_rows[n] = (rows[0] * C, (rows[-1] + 1) * C) if rows else (0, 0)
            # and, per layer, the one head each row moves (a head sweep): per_token_loss runs only that head
            layers = sorted(int(n.split(".")[1]) for n in init_params if re.fullmatch(r"blocks\.\d+\.attn\.W_Q", n))
            self.heads = {l: tuple(h for r in restrictions for h in [_moved_head(r, l)] * C) for l in layers}
        # where the free weights sit among all parameters (the noise is drawn for all of them)
        self.P_all = sum(v.numel() for v in init_params.values())
        self.keep = None
        if self.P < self.P_all:
            offsets, o = {}, 0
            for n, v in init_params.items():
                offsets[n] = o
                o += v.numel()
            self.keep = torch.cat([torch.arange(offsets[n], offsets[n] + s, device=device)
                                   for n, s in zip(self.active, self.sizes)])

    def start(self) -> torch.Tensor:
        """The ``(R, P)`` buffer, every replica at ``w*``."""
        return self.w0_flat.unsqueeze(0).repeat(self.R, 1)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(R, ...)`` views of the buffer by parameter name, in ``init_params``' order."""
        out = {n: t.view(self.R, *s) for n, t, s in zip(self.active, buf.split(self.sizes, dim=1), self.shapes)}
        out.update(self.frozen)
        ordered = {n: out[n] for n in self.names}
        if self.free_rows is None:
            return ordered
        from .model import ReplicaParams
        return ReplicaParams(ordered, self.free_rows, heads=self.heads, w_star=self.w0)


def _moved_head(restriction: Restriction, layer: int) -> int:
    """The one head of ``layer`` whose weights ``restriction`` moves: its index, ``-1`` when it moves none of the
    layer's weights, ``-2`` when it moves more (several heads, a whole tensor, ``b_O``, a LayerNorm, an MLP).

    >>> p = {"blocks.0.attn.W_Q": torch.zeros(2, 4, 3), "blocks.0.attn.b_O": torch.zeros(4)}
    >>> [_moved_head(make_restriction(s, p), 0) for s in ("0:1", "full", "blocks.0.attn.b_O")]
    [1, -2, -2]
    """
    prefix, heads = f"blocks.{layer}.", set()
    for name, mask in restriction.masks.items():
        if not name.startswith(prefix):
            continue
        if name[len(prefix):] not in {"attn." + n for n in _HEAD_PARAMS} or mask is None:
            return -2
        hit = mask.reshape(mask.shape[0], -1).ne(0).any(1)
        heads.update(torch.nonzero(hit).flatten().tolist())
    return -1 if not heads else heads.pop() if len(heads) == 1 else -2


def _initial_loss(loss_fn: LossFn, w0: dict[str, torch.Tensor], get_batch: Callable[[int], Any], n_batches: int,
                  device: torch.device, dtype) -> float:
    """The mean loss at ``w*`` over the first ``n_batches`` minibatches; a non-finite one raises."""
    one = {k: v.unsqueeze(0) for k, v in w0.items()}
    with torch.no_grad(), autocast(device, dtype):
        init = torch.stack([_mean_per_replica(loss_fn(one, _to_device(get_batch(j), device)), 1, "initial loss")[0]
                            for j in range(n_batches)]).mean()
    init_loss = float(init)
    if not math.isfinite(init_loss):
        raise DivergenceError(f"the loss at the starting point w* is {init_loss}; check the checkpoint and the data "
                              "(SGLD cannot start from a non-finite loss)")
    return init_loss


class _Noise:
    """Chain ``c``'s noise stream, seeded ``seed + c``: one ``randn`` over all parameters per chain per step, the
    free weights kept (so a weight's noise depends only on the seed, the chain and the weight)."""

    def __init__(self, seed: int, chains: int, layout: _Layout, device: torch.device):
        self.gens = []
        for c in range(chains):
            g = torch.Generator(device=device)
            g.manual_seed(seed + c)
            self.gens.append(g)
        self.buf = torch.empty(chains, layout.P_all, device=device)
        self.keep, self.device = layout.keep, device

    def draw(self) -> torch.Tensor:
        """``(chains, P)`` standard normal noise for the free weights."""
        for c, g in enumerate(self.gens):
            torch.randn(self.buf.shape[1], generator=g, device=self.device, out=self.buf[c])
        return self.buf if self.keep is None else self.buf.index_select(1, self.keep)


class _DivergenceWatch:
    """Marks replicas whose loss is NaN/inf or above ``bound`` (on the device, no sync); :meth:`check` looks on the
    host and raises :class:`DivergenceError` naming the step, chain and restriction and what to change."""

    def __init__(self, R: int, chains: int, names: list[str], init_loss: float, bound: float, steps: int,
                 cfg: SamplerConfig, device: torch.device):
        self.first_bad = torch.full((R,), -1, dtype=torch.long, device=device)
        self.first_val = torch.zeros(R, device=device)
        self.R, self.C, self.names, self.init_loss, self.bound = R, chains, names, init_loss, bound
        self.steps, self.cfg = steps, cfg

    def mark(self, i: int, bl: torch.Tensor) -> None:
        bad = ~torch.isfinite(bl) | (bl > self.bound)
        newly = bad & (self.first_bad < 0)
        self.first_bad.masked_fill_(newly, i)
        self.first_val.copy_(torch.where(newly, bl, self.first_val))

    def check(self, i: int, flat: torch.Tensor) -> None:
        finite = torch.isfinite(flat).all(1)
        bad = self.first_bad.clone()
        bad[(bad < 0) & ~finite] = i
        idx = torch.nonzero(bad >= 0).flatten()
        if idx.numel() == 0:
            return
        r = int(idx[torch.argmin(bad[idx])])
        s = int(bad[r])
        val = float(self.first_val[r]) if int(self.first_bad[r]) >= 0 else float("nan")
        what = (f"the minibatch loss was {val:.4g} (initial loss {self.init_loss:.4g}, limit {self.bound:.4g})"
                if int(self.first_bad[r]) >= 0 else "a parameter became NaN/inf")
        cfg = self.cfg
        raise DivergenceError(
            f"SGLD diverged at step {s} of {self.steps} in chain {r % self.C} of restriction "
            f"{self.names[r // self.C]!r} ({int(idx.numel())} of {self.R} replicas diverged): {what}. Use a smaller "
            f"epsilon (now {cfg.epsilon:g}) or a larger gamma (now {cfg.gamma:g}); a smaller n_beta (now "
            f"{cfg.n_beta:g}) also helps.")


def run_sgld(loss_fn: LossFn, init_params: dict[str, torch.Tensor], batches, cfg: SamplerConfig,
             restrictions: list[Restriction] | None = None, *, on_draw: Callable[[DrawState], None] | None = None,
             init_loss_batches: int = 4, record_traces: bool = False, device=None, progress: bool = True,
             check_every: int = 20, max_loss_increase: float | None = None) -> SGLDResult:
    """Run ``cfg.chains`` SGLD chains for every restriction, all replicas in one batched computation.

    ``loss_fn(stacked_params, batch)`` returns per-sample losses ``(R, B, ...)`` (the engine averages everything but
    R); ``init_params`` is ``w*`` (plain shapes, TransformerLens names for the transformer); ``batches(i)`` is the
    i-th minibatch, shared by all replicas (a list is cycled). ``restrictions`` defaults to ``[full]``.
    ``init_loss`` is the mean loss at ``w*`` over ``batches(0..init_loss_batches-1)`` (the first sampling
    minibatches, as devinterp does). A replica diverges when its loss is NaN/inf or exceeds
    ``init_loss + max_loss_increase`` (default ``max(10, 10 * |init_loss|)``): then :class:`DivergenceError`.
    Every step is one :func:`sgld_update` of all replicas. Returns an :class:`SGLDResult`; replica
    ``r = restriction_index * chains + chain``.
    """
    restrictions = _checked_restrictions(cfg, init_params, restrictions, init_loss_batches, check_every)
    device = default_device(device)
    dtype = autocast_dtype(device, cfg.precision)
    # fp16 (GPUs without bf16): gradients of a mean over thousands of tokens fall below fp16's normal range in the
    # backward; a fixed scale keeps them there (a mean loss's gradients are far from overflowing 65504)
    loss_scale = FP16_LOSS_SCALE if dtype == torch.float16 else 1.0
    get_batch = _batch_fn(batches)
    NR, C = len(restrictions), cfg.chains
    R = NR * C
    layout = _Layout(init_params, restrictions, C, device, loss_fn)
    flat = layout.start()                                                         # (R, P)
    init_loss = _initial_loss(loss_fn, layout.w0, get_batch, init_loss_batches, device, dtype)
    bound = init_loss + (max_loss_increase if max_loss_increase is not None else max(10.0, 10.0 * abs(init_loss)))

    steps = sgld_steps(cfg)
    noise = _Noise(cfg.seed, C, layout, device)
    names = [r.name for r in restrictions]
    watch = _DivergenceWatch(R, C, names, init_loss, bound, steps, cfg, device)
    loss_sum = torch.zeros(R, device=device, dtype=torch.float64)
    loss_sum_all = torch.zeros(R, device=device, dtype=torch.float64)
    traces = torch.empty(R, steps, device=device) if record_traces else None

    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=f"SGLD {NR}x{C} replicas", disable=not progress, leave=False)
    for i in range(steps):
        batch = _to_device(get_batch(i), device)
        flat.requires_grad_(True)
        with autocast(device, dtype):
            bl = _mean_per_replica(loss_fn(layout.views(flat), batch), R, "sampling")
        (grad,) = torch.autograd.grad(bl.sum() * loss_scale, flat, allow_unused=True, materialize_grads=True)
        if loss_scale != 1.0:
            grad.div_(loss_scale)
        flat.requires_grad_(False)
        with torch.no_grad():
            bl = bl.detach()
            sgld_update(flat.view(NR, C, layout.P), grad.view(NR, C, layout.P), layout.w0_flat, noise.draw(),
                        epsilon=cfg.epsilon, n_beta=cfg.n_beta, gamma=cfg.gamma, weight_decay=cfg.weight_decay,
                        mask=layout.mask, in_place=True)
            # statistics and divergence flags, all on the device
            loss_sum_all += bl
            if traces is not None:
                traces[:, i] = bl
            watch.mark(i, bl)
            d, rem = divmod(i - cfg.burnin, cfg.steps_between_draws)
            is_draw = i >= cfg.burnin and rem == 0
            if is_draw:
                loss_sum += bl
        if (i + 1) % check_every == 0 or i == steps - 1:
            watch.check(i, flat)
        if is_draw and on_draw is not None:
            on_draw(DrawState(step=i, draw=d, params=layout.views(flat), batch_loss=bl))
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    dist = (flat - layout.w0_flat).norm(dim=1)
    return SGLDResult(
        init_loss=init_loss, mean_loss=(loss_sum / cfg.draws).float().cpu(),
        traces=traces.cpu() if traces is not None else None, chains=C, restrictions=names, cfg=cfg,
        mean_loss_all=(loss_sum_all / steps).float().cpu(), final_distance=dist.cpu(), seconds=seconds, steps=steps)
