"""Training: AdamW on random context windows, with checkpoints on a log-plus-linear schedule, and resume.

The loss is computed by the fast functional forward (:func:`serpent.model.per_token_loss`) over the parameters of the
hooked model (:class:`~serpent.hooked.HookedShortformer`), so checkpoints are plain state dicts under TransformerLens'
names. Precision follows the hardware (bf16 autocast on recent GPUs, fp16 with loss scaling on GPUs without bf16,
fp32 on the CPU) and ``torch.compile`` is used on GPUs.

The minibatch of step ``i`` is a pure function of ``(seed, i)`` (:func:`serpent.tokens.batch_at`), and at every
checkpoint the optimizer state is saved next to the weights, so an interrupted run resumes from its last checkpoint
with the data stream in the right place and reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoints import checkpoint_schedule, load_checkpoint, load_resume, save_checkpoint, save_resume
from .config import config_hash
from .device import autocast, autocast_dtype, default_device, describe_device
from .errors import DivergenceError
from .model import build_model, model_params, per_token_loss
from .outputs import METRICS, RESUME
from .rundir import Run

__all__ = ["train", "evaluate_loss", "train_key", "adamw"]


def train_key(run: Run) -> str:
    """Settings key of the training stage (steps excluded: more steps continue the same run)."""
    c = run.config
    return config_hash({"model": c.model.to_dict(), "data": c.data.to_dict(), "train": c.train.to_dict()})


def _eval_windows(run: Run, n: int, device) -> torch.Tensor:
    from .tokens import fixed_windows
    tok = run.tokenizer()
    windows, _ = fixed_windows(run.tokens("test"), n, run.config.model.n_ctx, seed=12345, bos_id=tok.bos_id)
    return windows.to(device)


@torch.no_grad()
def evaluate_loss(params: dict[str, torch.Tensor], windows: torch.Tensor, cfg, batch_size: int = 16,
                  dtype: torch.dtype = torch.float32) -> float:
    """Mean per-token loss of ``params`` on ``windows`` (B, T)."""
    total, count = 0.0, 0
    for s in range(0, len(windows), batch_size):
        with autocast(windows.device, dtype):
            loss = per_token_loss(params, windows[s:s + batch_size], cfg)
        total += float(loss.sum())
        count += loss.numel()
    return total / max(count, 1)


def _forward_backward(step_fn, params, batch, device, dtype, scaler) -> torch.Tensor:
    """One step's loss and gradients (scaled when training in float16)."""
    with autocast(device, dtype):
        loss = step_fn(params, batch)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss


def adamw(params: dict[str, torch.Tensor], lr: float, weight_decay: float,
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (embeddings, attention weights), none on biases and LayerNorm.

    >>> opt = adamw({"W": torch.zeros(2, 2, requires_grad=True), "b": torch.zeros(2, requires_grad=True)}, 1e-3, 0.05)
    >>> [g["weight_decay"] for g in opt.param_groups]
    [0.05, 0.0]
    """
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def train(run: Run, *, device=None, progress: bool = True, max_steps_this_call: int | None = None) -> dict:
    """Train (or resume training) the run's model; returns a summary dict.

    ``max_steps_this_call`` stops early after that many optimizer steps (used to test interruption and resume).
    """
    from .tokens import batch_at

    cfg = run.config
    tc, mc = cfg.train, cfg.model
    device = default_device(device)
    dtype = autocast_dtype(device, tc.precision)
    torch.manual_seed(tc.seed)
    model = build_model(mc, device=device)
    params = model_params(model)
    opt = adamw(params, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    schedule = checkpoint_schedule(tc.steps, tc.log_checkpoints, tc.linear_checkpoints)
    done = [s for s in run.checkpoint_steps() if s <= tc.steps]
    resume_file = RESUME.file(run)
    start = 0
    if done and resume_file.exists():
        step, extra = load_resume(resume_file, opt)
        if step in done:
            loaded, _ = load_checkpoint(run.checkpoint_path(step), mc, device=device)
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(loaded[k])
            start = step
            if scaler is not None and "scale" in extra:
                scaler.update(extra["scale"])
    if start == 0:
        save_checkpoint(run.checkpoint_path(0), params, 0, mc)
    if start >= tc.steps:
        return {"steps": tc.steps, "resumed_from": start, "note": "already trained"}

    train_tokens = run.tokens("train")
    bos = run.tokenizer().bos_id
    eval_windows = _eval_windows(run, tc.eval_batches * tc.batch_size, device)

    def loss_fn(p, batch):
        return per_token_loss(p, batch, mc).mean()

    step_fn = loss_fn
    use_compile = tc.compile == "yes" or (tc.compile == "auto" and device.type == "cuda")
    compile_error = None
    if use_compile:
        step_fn = torch.compile(loss_fn)

    def lr_at(step: int) -> float:
        return tc.lr * min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else tc.lr

    metrics_file = METRICS.file(run)
    if metrics_file.exists():  # drop what an interrupted call logged past the checkpoint we resume from
        kept = [json.dumps(m) for m in run.metrics() if m.get("step", 0) <= start]
        metrics_file.write_text("".join(line + "\n" for line in kept))
    t0 = time.time()
    last_train = float("nan")
    running = []
    stop = tc.steps if max_steps_this_call is None else min(tc.steps, start + max_steps_this_call)
    bar = tqdm(range(start, stop), desc="train", disable=not progress, initial=start, total=tc.steps)
    first_test = last_test = None
    for step in bar:
        batch = batch_at(train_tokens, step, tc.batch_size, mc.n_ctx, tc.seed, bos).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        try:
            loss = _forward_backward(step_fn, params, batch, device, dtype, scaler)
        except Exception as e:  # noqa: BLE001 - a compiler failure (e.g. no working triton) must not end the run
            if step_fn is loss_fn:
                raise
            compile_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            warnings.warn(f"torch.compile failed at step {step} ({compile_error}); training goes on uncompiled "
                          f"(set train.compile='no' to skip the attempt)")
            opt.zero_grad(set_to_none=True)
            step_fn, use_compile = loss_fn, False
            loss = _forward_backward(step_fn, params, batch, device, dtype, scaler)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        running.append(loss.detach())
        done_steps = step + 1
        log_now = done_steps % tc.eval_every == 0 or done_steps == stop or done_steps in schedule
        if log_now:
            last_train = float(torch.stack(running).mean())
            running = []
            if not math.isfinite(last_train):
                raise DivergenceError(f"training loss became {last_train} at step {done_steps}; lower train.lr "
                                      f"(now {tc.lr}) or use precision='fp32'")
            test = evaluate_loss(params, eval_windows, mc, tc.batch_size, dtype)
            first_test = test if first_test is None else first_test
            last_test = test
            rec = {"step": done_steps, "train_loss": round(last_train, 5), "test_loss": round(test, 5),
                   "tokens": done_steps * tc.batch_size * mc.n_ctx, "seconds": round(time.time() - t0, 2),
                   "lr": lr_at(step)}
            with open(metrics_file, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(train=f"{last_train:.3f}", test=f"{test:.3f}")
        if done_steps in schedule:
            save_checkpoint(run.checkpoint_path(done_steps), params, done_steps, mc)
            extra = {"scale": float(scaler.get_scale())} if scaler is not None else {}
            save_resume(resume_file, opt, done_steps, extra)
    bar.close()
    seconds = time.time() - t0
    steps_run = stop - start
    return {"steps": stop, "resumed_from": start, "seconds": round(seconds, 2),
            "tokens_per_second": round(steps_run * tc.batch_size * mc.n_ctx / max(seconds, 1e-9)),
            "final_train_loss": round(last_train, 4), "final_test_loss": None if last_test is None else round(last_test, 4),
            "checkpoints": len(run.checkpoint_steps()), "device": describe_device(device),
            "precision": str(dtype).replace("torch.", ""), "compiled": use_compile,
            **({"compile_error": compile_error} if compile_error else {})}


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies: the loss of the best model that ignores context."""
    return _entropy(np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size))


def bigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Conditional entropy H(next | current) (nats) of the stream, measured in-sample: the loss of the best model
    that sees only the previous token (slightly optimistic, since it is fitted to the same tokens).

    >>> round(bigram_entropy(np.array([0, 1, 0, 1, 0, 1]), 2), 6)   # each token fixes the next
    0.0
    """
    t = np.asarray(tokens, dtype=np.int64)
    _, pairs = np.unique(t[:-1] * vocab_size + t[1:], return_counts=True)
    return _entropy(pairs) - _entropy(np.bincount(t[:-1], minlength=vocab_size))


def _entropy(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
