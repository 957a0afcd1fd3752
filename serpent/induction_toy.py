"""Grow an induction circuit in about a minute on a CPU: the course's architecture trained on repeated random tokens.

On natural text the induction circuit needs tens of millions of tokens (the ``cpu`` preset trains on 86 M, about
half an hour on 2 CPU cores; its induction heads formed after 55-72 M in four seeds); on data where copying is the
*only* thing worth learning it forms in about a thousand steps, with the same abrupt drop in loss after a plateau.

* **Data** (:func:`repeated_segments`): every sequence is ``BOS`` then a random segment of ``p`` distinct tokens
  repeated until the context is full, with a *random period* ``p`` per sequence. The first ``p`` tokens cannot be
  predicted; every later one can, by finding the earlier occurrence of the current token and copying the token
  after it. Varying ``p`` matters: with one fixed period a model learns to "look ``p - 1`` positions back" instead,
  which the prefix-matching score on a probe of that same length cannot tell from induction (measured: 0.82 at
  the trained length, 0.00 at another; check a trained model with two probe lengths).
* **Model**: :data:`TOY_MODEL`, the course's 2-layer, 16-head attention-only architecture made small (d_model 128,
  context 64, 512 tokens).
* **Record** (:func:`grow_induction_circuit`): every ``eval_every`` steps, :func:`serpent.induction.induction_scores`
  on one fixed probe plus the mean training loss, in the tidy ``step, head, score, value`` table the induction
  charts draw (``train_loss`` rows have head ``"model"``).

>>> x = repeated_segments(3, 20, 50, seed=0)
>>> x.shape, bool((x[:, 0] == 0).all()), bool((x[:, 1:] != 0).all())
(torch.Size([3, 20]), True, True)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, NamedTuple, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ModelConfig, config_hash
from .errors import ConfigError, DivergenceError
from .induction import induction_scores, repeated_random_tokens
from .patterns import repeated_bigrams

__all__ = ["TOY_MODEL", "repeated_segments", "copyable_tokens", "sgld_minibatches", "grow_induction_circuit",
           "GrownCircuit"]

TOY_MODEL = ModelConfig(n_layers=2, n_heads=8, d_model=128, d_head=32, n_ctx=64, d_vocab=512)
_SGLD_SEED = 5_000_000  # sampling minibatches' seeds start here; training uses seed * 1_000_003 + step


class GrownCircuit(NamedTuple):
    """What :func:`grow_induction_circuit` returns."""

    model: "torch.nn.Module"  #: the trained hooked model (eval mode)
    history: pd.DataFrame  #: ``step, head, score, value``: induction scores and ``train_loss`` over training
    snapshots: dict  #: ``{step: {name: tensor}}``, copies of the parameters every ``keep_every`` steps (and step 0)


def repeated_segments(n_seqs: int, length: int, vocab_size: int, *, min_period: int = 4,
                      max_period: Optional[int] = None, bos_id: int = 0, seed: int = 0) -> torch.Tensor:
    """``(n_seqs, length)`` int64: ``bos_id``, then a segment of ``p`` distinct random tokens repeated to fill the row,
    ``p`` drawn uniformly from ``min_period .. max_period`` (default ``(length - 1) // 2``) for each row.

    >>> x = repeated_segments(1, 12, 30, min_period=3, max_period=3, seed=1)
    >>> bool((x[0, 1:4] == x[0, 4:7]).all()), bool((x[0, 1:4] == x[0, 7:10]).all())
    (True, True)
    """
    max_period = (length - 1) // 2 if max_period is None else max_period
    if not 1 <= min_period <= max_period:
        raise ConfigError(f"periods: got min_period={min_period}, max_period={max_period}; need "
                          f"1 <= min_period <= max_period (a context of {length} tokens repeats periods up to "
                          f"{(length - 1) // 2} at least twice)")
    if n_seqs < 1 or length < 2:
        raise ConfigError(f"n_seqs={n_seqs}, length={length}: need at least one sequence of 2 or more tokens")
    allowed = torch.tensor([i for i in range(int(vocab_size)) if i != bos_id], dtype=torch.long)
    if len(allowed) < max_period:
        raise ConfigError(f"vocab_size={vocab_size} has fewer than max_period={max_period} tokens besides BOS; "
                          f"lower max_period or raise vocab_size")
    g = torch.Generator().manual_seed(int(seed))
    periods = torch.randint(min_period, max_period + 1, (n_seqs, 1), generator=g)
    segments = allowed[torch.rand(n_seqs, len(allowed), generator=g).argsort(dim=1)[:, :max_period]]
    body = segments.gather(1, torch.arange(length - 1).expand(n_seqs, -1) % periods)
    return torch.cat([torch.full((n_seqs, 1), int(bos_id), dtype=torch.long), body], dim=1)


def copyable_tokens(tokens) -> np.ndarray:
    """``(S, L)`` bool: True where token ``t`` can be copied by induction, i.e. the bigram ``(tokens[t-1], tokens[t])``
    occurred earlier in its row (:func:`serpent.patterns.repeated_bigrams`, the induction pattern's rule, on ids).
    On :func:`repeated_segments` these are the positions after the first period and its first repeat.

    >>> copyable_tokens([[0, 5, 6, 7, 5, 6, 7, 5], [0, 3, 3, 3, 3, 4, 3, 4]]).astype(int).tolist()
    [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 1]]
    """
    return np.array([repeated_bigrams(row) for row in np.asarray(tokens).tolist()], dtype=bool)


def sgld_minibatches(n: int, batch_size: int = 16, model_cfg: ModelConfig = TOY_MODEL) -> list[torch.Tensor]:
    """``n`` fixed minibatches of :func:`repeated_segments` for sampling at the toy's snapshots (LLC,
    susceptibilities), from seeds that :func:`grow_induction_circuit`'s training batches do not use.

    >>> [tuple(b.shape) for b in sgld_minibatches(2, batch_size=3)]
    [(3, 64), (3, 64)]
    """
    return [repeated_segments(batch_size, model_cfg.n_ctx, model_cfg.d_vocab, seed=_SGLD_SEED + i) for i in range(n)]


def loss_levels(model_cfg: ModelConfig = TOY_MODEL, periods: tuple = (4, None)) -> dict[str, float]:
    """The toy's two reference losses (nats per token): guessing uniformly among the non-BOS ids, and an ideal
    copier that guesses only the first period of each row (periods uniform in ``periods``) and copies the rest.

    >>> {k: round(v, 2) for k, v in loss_levels().items()}
    {'uniform guess': 6.24, 'ideal copier (≈)': 1.83}
    """
    n, v = model_cfg.n_ctx, model_cfg.d_vocab
    guess = math.log(v - 1)
    hi = (n - 1) // 2 if periods[1] is None else periods[1]
    p = np.arange(periods[0], hi + 1)
    return {"uniform guess": guess, "ideal copier (≈)": guess * float(np.mean((p + 1) / (n - 1)))}


def grow_induction_circuit(model_cfg: ModelConfig = TOY_MODEL, *, steps: int = 1200, batch_size: int = 16,
                           lr: float = 3e-3, weight_decay: float = 0.05, eval_every: int = 50,
                           periods: tuple = (4, None), probe_half_len: Optional[int] = None, seed: int = 0,
                           keep_every: Optional[int] = None, data_weights: Optional[Mapping[str, float]] = None,
                           device=None, progress: bool = True,
                           cache: Optional[str | os.PathLike] = None) -> GrownCircuit:
    """Train a fresh model of ``model_cfg`` on :func:`repeated_segments` with AdamW; return a :class:`GrownCircuit`.

    ``periods``: the ``(min_period, max_period)`` of the data (``(31, 31)``: one fixed period, the trap described
    in the module docstring). ``history``: the tidy ``step, head, score, value`` table of
    :func:`serpent.induction.induction_scores` on one probe of ``probe_half_len`` (default: the longest that fits)
    at step 0 and every ``eval_every`` steps, plus ``train_loss`` rows (head ``"model"``: mean training loss since
    the previous record). Draw it with :func:`serpent.charts.induction.induction_scores_chart`; label heads with
    :func:`serpent.induction.classify_heads`. ``keep_every``: keep a copy of the parameters at step 0 and every
    that many steps (and the last), e.g. to estimate the learning coefficient across the transition.
    ``cache``: a folder (e.g. :func:`serpent.course.toy_cache_dir`) where the result is stored (safetensors and
    parquet) under a hash of the arguments and loaded on the next call with the same arguments, so notebooks that
    grow the same circuit share one minute of training; a damaged entry is recomputed.
    ``data_weights``: ``{"copyable": a, "new": b}`` reweights the training data by token class
    (:func:`copyable_tokens`: whether induction can predict the token): each token's loss counts ``a`` or ``b``
    times, normalised per batch (a weighted mean), e.g. from :func:`serpent.patterning.class_weights`.

    >>> grown = grow_induction_circuit(steps=4, eval_every=2, keep_every=4, progress=False)
    >>> sorted(grown.history["step"].unique().tolist()), sorted(grown.snapshots)
    ([0, 2, 4], [0, 4])
    """
    from .device import default_device
    from .model import build_model, model_params, per_token_loss
    from .train import adamw

    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                        ("keep_every", keep_every or 1)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: got {value!r}; must be an integer >= 1")
    repeated_segments(1, model_cfg.n_ctx, model_cfg.d_vocab, min_period=periods[0], max_period=periods[1])  # checks
    if data_weights is not None:
        data_weights = {k: float(v) for k, v in dict(data_weights).items()}
        if set(data_weights) != {"copyable", "new"} or not all(math.isfinite(v) and v >= 0
                                                               for v in data_weights.values()) \
                or sum(data_weights.values()) <= 0:
            raise ConfigError(f"data_weights: got {data_weights}; give {{'copyable': a, 'new': b}} with a, b >= 0, "
                              "not both 0")
    dev = default_device(device)
    if cache is not None:
        args = {"model": model_cfg.to_dict(), "steps": steps, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "eval_every": eval_every, "periods": list(periods),
                "probe_half_len": probe_half_len, "seed": seed, "keep_every": keep_every}
        if data_weights is not None:       # (absent otherwise, so caches of unweighted runs stay valid)
            args["data_weights"] = data_weights
        entry = Path(cache) / f"grow-{config_hash(args)}"
        found = _load_grown(entry, model_cfg, dev)
        if found is not None:
            return found
        grown = grow_induction_circuit(model_cfg, steps=steps, batch_size=batch_size, lr=lr,
                                       weight_decay=weight_decay, eval_every=eval_every, periods=periods,
                                       probe_half_len=probe_half_len, seed=seed, keep_every=keep_every,
                                       data_weights=data_weights, device=device, progress=progress)
        _save_grown(entry, grown, args)
        return grown
    torch.manual_seed(seed)
    model = build_model(model_cfg, device=dev)
    params = model_params(model)
    opt = adamw(params, lr, weight_decay)
    half_len = min(probe_half_len or model_cfg.n_ctx, (model_cfg.n_ctx - 1) // 2)   # the longest that fits
    probe = repeated_random_tokens(16, half_len, model_cfg.d_vocab, bos_id=0, seed=10_000 + seed)  # one, reused
    frames, running, snapshots = [], [], {}

    def keep(step: int) -> None:
        if keep_every and (step % keep_every == 0 or step == steps):
            snapshots[step] = {k: v.detach().clone() for k, v in params.items()}

    def record(step: int) -> None:
        df = induction_scores(model, probe=probe, bos_id=0)
        if running:
            df = pd.concat([df, pd.DataFrame([{"head": "model", "score": "train_loss",
                                               "value": sum(running) / len(running)}])], ignore_index=True)
            running.clear()
        df.insert(0, "step", step)
        frames.append(df)

    record(0)
    keep(0)
    bar = tqdm(range(1, steps + 1), desc="grow induction", disable=not progress)
    for step in bar:
        batch = repeated_segments(batch_size, model_cfg.n_ctx, model_cfg.d_vocab, min_period=periods[0],
                                  max_period=periods[1], seed=seed * 1_000_003 + step)
        losses = per_token_loss(params, batch.to(dev), model_cfg)
        if data_weights is None:
            loss = losses.mean()
        else:
            w = torch.where(torch.as_tensor(copyable_tokens(batch)[:, 1:], device=dev),
                            data_weights["copyable"], data_weights["new"]).to(losses.dtype)
            loss = (losses * w).sum() / w.sum().clamp_min(1e-12)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = losses.mean().item()     # the plain mean, comparable between weightings
        if not math.isfinite(value):
            raise DivergenceError(f"training loss became {value} at step {step}; lower lr (now {lr})")
        running.append(value)
        keep(step)
        if step % eval_every == 0 or step == steps:
            bar.set_postfix(loss=f"{sum(running) / len(running):.3f}")
            record(step)
    history = pd.concat(frames, ignore_index=True)
    history.attrs.update(half_len=half_len, model=model_cfg.to_dict())
    return GrownCircuit(model.eval(), history, snapshots)


def _save_grown(entry: Path, grown: GrownCircuit, args: dict) -> None:
    """Write a cache entry atomically: a temporary folder renamed into place."""
    from safetensors.torch import save_file

    tensors = {f"final/{k}": v.detach().cpu().contiguous() for k, v in grown.model.state_dict().items()
               if torch.is_floating_point(v)}
    for step, params in grown.snapshots.items():
        tensors.update({f"{step}/{k}": v.detach().cpu().contiguous() for k, v in params.items()})
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".", dir=entry.parent))
    save_file(tensors, str(tmp / "params.safetensors"))
    grown.history.to_parquet(tmp / "history.parquet", index=False)
    (tmp / "meta.json").write_text(json.dumps({"args": args, "attrs": grown.history.attrs}, default=str))
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(tmp, entry)


def _load_grown(entry: Path, model_cfg: ModelConfig, dev) -> Optional[GrownCircuit]:
    """The cached :class:`GrownCircuit` in ``entry``, or None if absent; a damaged entry is removed (with a warning)."""
    from safetensors.torch import load_file

    from .model import build_model

    if not entry.is_dir():
        return None
    try:
        tensors = load_file(str(entry / "params.safetensors"))
        history = pd.read_parquet(entry / "history.parquet")
        history.attrs.update(json.loads((entry / "meta.json").read_text())["attrs"])
        snapshots: dict = {}
        final = {}
        for key, value in tensors.items():
            step, name = key.split("/", 1)
            (final if step == "final" else snapshots.setdefault(int(step), {}))[name] = value.to(dev)
        model = build_model(model_cfg, device=dev)
        model.load_state_dict(final, strict=False)
    except Exception as exc:            # a damaged or foreign entry: recompute rather than fail
        warnings.warn(f"ignoring the damaged toy cache entry {entry} ({type(exc).__name__}: {exc}); recomputing")
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return GrownCircuit(model.eval(), history, dict(sorted(snapshots.items())))
